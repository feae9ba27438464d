#!/usr/bin/env python3
"""`lugger run --once` with a memory budget smaller than the input: reading
pauses again and again at the budget, and every line must still come out
whole and exactly once. (A regression test: --once used to flush the line
held by the framer whenever nothing was in flight, cutting the line that
straddled a paused read in two.)"""

import json
import os

import lugger_it as it

FILES, LINES = 4, 50000
PAD = "x" * 70


def run():
    it.require_binary()
    with it.WorkDir("once_budget") as wd:
        logs = wd.mk("logs")
        for f in range(FILES):
            with open(os.path.join(logs, "f%d.log" % f), "w") as o:
                for i in range(LINES):
                    o.write("file %d line %06d %s\n" % (f, i, PAD))
        out = wd.p("out.jsonl")
        conf = it.simple_config(wd, [os.path.join(logs, "*.log")], out,
                                settings={"memory_budget": "1MiB"})
        with it.Lugger(conf, once=True) as lg:
            rc = lg.wait(240)
            it.check(rc == 0, "lugger --once exited %r: %s" % (
                rc, lg.stderr_tail()))
        seen = {}
        pieces = []
        with open(out) as o:
            for line in o:
                body = json.loads(line)["body"]
                parts = body.split(" ")
                if len(parts) != 5 or parts[4] != PAD:
                    pieces.append(body)
                    continue
                key = (int(parts[1]), int(parts[3]))
                seen[key] = seen.get(key, 0) + 1
        it.check(not pieces, "%d records are pieces of lines, e.g. %r" % (
            len(pieces), pieces[:3]))
        missing = FILES * LINES - len(seen)
        dups = sum(n - 1 for n in seen.values())
        it.check(missing == 0 and dups == 0,
                 "%d lines missing, %d duplicated" % (missing, dups))
        return "%d lines through a 1 MiB budget, all whole, each once" % (
            FILES * LINES)


if __name__ == "__main__":
    it.main("test_once_budget", run)
