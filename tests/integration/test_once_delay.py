#!/usr/bin/env python3
"""`lugger run --once` does not wait for an output's max_coalescing_delay
once every file is read: what waits to fill a request goes at once (the
s3 output's default delay is 60 s, so a first try of `--once` used to sit
a minute). Still every line exactly once, in order."""

import json
import os
import time

import lugger_it as it

LINES = 20000


def run():
    it.require_binary()
    with it.WorkDir("once_delay") as wd:
        logs = wd.mk("logs")
        want = ["line %06d" % i for i in range(LINES)]
        with open(os.path.join(logs, "a.log"), "w") as o:
            o.write("".join(w + "\n" for w in want))
        out = wd.p("out.jsonl")
        conf = it.simple_config(
            wd, [os.path.join(logs, "*.log")],
            output={"type": "file", "path": out, "fsync": "never",
                    "max_coalescing_delay": "10m"})
        t0 = time.monotonic()
        with it.Lugger(conf, once=True) as lg:
            rc = lg.wait(120)
            it.check(rc == 0, "lugger --once exited %r: %s" % (
                rc, lg.stderr_tail()))
        took = time.monotonic() - t0
        # 10 minutes of delay: only the early send ends the run in time.
        it.check(took < 60, "--once took %.1f s with a 10 minute "
                 "max_coalescing_delay" % took)
        with open(out) as f:
            got = [json.loads(line)["body"] for line in f]
        it.check(got == want, "%d lines out, want %d in order" % (
            len(got), len(want)))
        return "%d lines, max_coalescing_delay 10m: --once done in %.1f s" % (
            LINES, took)


if __name__ == "__main__":
    it.main("test_once_delay", run)
