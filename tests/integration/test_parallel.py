#!/usr/bin/env python3
"""Ordered parallel pipelines: one busy file, workers = 2.

With `stateless = true` the file's batches take turns over both workers
(each worker's Lua state tags the records it processed, so the output
shows both at work) and reach the output exactly in the file's order,
each line once. Without the flag the file stays pinned to one worker (one
tag), as scripts that keep state across records need.
"""
import os

import lugger_it as it

LINES = 200_000
LINE_LEN = 100

# Each worker has its own Lua state: a table's address tells them apart.
TAG = """
local ME = tostring({})
function process(rec) rec.worker = ME end
"""


def one_run(wd, name, stateless):
    out = wd.p(name + ".jsonl")
    conf = it.simple_config(
        wd, [wd.p("logs/hot.log")], out, name=name + ".lua",
        settings={"workers": 2, "memory_budget": "32MiB",
                  "state_dir": wd.p("state-" + name)},
        scripts=["tag.lua"], script_files={"tag.lua": TAG},
        pipeline={"stateless": stateless})
    lug = it.Lugger(conf, once=True)
    rc = lug.wait(300)
    it.check(rc == 0, "%s: lugger run --once exited %r" % (name, rc))
    lug.check_sanitizers()
    tracker = it.SeqTracker(expected_len=LINE_LEN)
    workers = {}
    for r in it.read_jsonl(out):
        tracker.add(r)
        workers[r.get("worker")] = workers.get(r.get("worker"), 0) + 1
    lost, dups, missing, extra = tracker.summary({0: LINES})
    it.check(lost == 0 and dups == 0 and extra == 0 and not tracker.foreign,
             "%s: %d lost, %d duplicated, %d extra, %d foreign (first missing %s)"
             % (name, lost, dups, extra, len(tracker.foreign), missing))
    errs = [e for e in tracker.order_errors if e is not None]
    it.check(not tracker.order_errors, "%s: %d lines out of order: %r" % (
        name, len(tracker.order_errors), errs[:5]))
    return workers


def run():
    it.require_binary()
    with it.WorkDir("parallel") as wd:
        with open(wd.p("logs/hot.log"), "wb") as f:
            f.write(b"".join(it.make_line(0, s, LINE_LEN) for s in range(LINES)))
        par = one_run(wd, "stateless", True)
        it.check(len(par) == 2 and min(par.values()) > 0,
                 "stateless: records by worker %r: both workers should "
                 "process the busy file" % par)
        pinned = one_run(wd, "pinned", False)
        it.check(len(pinned) == 1, "pinned: records by worker %r: a "
                 "stateful pipeline's file must stay on one worker" % pinned)
        return ("%d lines of one file in order, once: stateless over both "
                "workers (%s), pinned to one without the flag" % (
                    LINES, "/".join(str(v) for v in sorted(par.values()))))


if __name__ == "__main__":
    it.main("parallel", run)
