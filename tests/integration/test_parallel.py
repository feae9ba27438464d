#!/usr/bin/env python3
"""Ordered parallel pipelines: one busy file, workers = 2.

With `stateless = true` the file's batches take turns over both workers
(each worker's Lua state tags the records it processed, so the output
shows both at work) and reach the output exactly in the file's order,
each line once. Without the flag the file stays pinned to one worker (one
tag), as scripts that keep state across records need.

A stateless pipeline's workers also frame the file's lines (deferred
framing: the loop thread reads into batches cut at clean line ends): a
CRI file with partial (P) records on both streams, interleaved, some
longer than max_record_bytes, lines that are not CRI, a CR before an LF
and a last line without LF gives exactly the records that framing on the
loop thread gives (a pinned pipeline), in the same order.
"""
import os
import random

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


def cri_file(path, n=60_000):
    """CRI lines of both streams; about 3% of records are split into P
    chunks, which the other stream's lines may interleave."""
    rnd = random.Random(17)
    out = []
    open_p = {}
    for i in range(n):
        stream = "stderr" if rnd.random() < 0.3 else "stdout"
        t = "2026-11-21T10:%02d:%02d.%09dZ" % (i // 3600 % 60, i // 60 % 60, i)
        r = rnd.random()
        if r < 0.005:
            out.append("not a CRI line %d\n" % i)
        elif r < 0.035 or stream in open_p:
            # a partial chunk (sometimes long), then the record goes on
            body = "p%d-" % i + "x" * (rnd.choice([10, 100, 3000]))
            if open_p.get(stream, 0) >= rnd.randint(1, 6):
                out.append("%s %s F %s\n" % (t, stream, body))
                del open_p[stream]
            else:
                out.append("%s %s P %s\n" % (t, stream, body))
                open_p[stream] = open_p.get(stream, 0) + 1
        else:
            cr = "\r" if rnd.random() < 0.01 else ""
            out.append("%s %s F line %d %s%s\n" % (t, stream, i, "y" * rnd.randint(0, 300), cr))
    out.append("2026-11-21T11:00:00.000000001Z stdout F no newline at the end")
    with open(path, "w") as f:
        f.write("".join(out))


def cri_run(wd, name, stateless):
    out = wd.p(name + ".jsonl")
    conf = it.simple_config(
        wd, [wd.p("logs/cri.log")], out, name=name + ".lua",
        settings={"workers": 2, "memory_budget": "32MiB",
                  "state_dir": wd.p("state-" + name)},
        source={"format": "cri", "max_record_bytes": 2048,
                "flush_timeout": "200ms"},
        pipeline={"stateless": stateless})
    lug = it.Lugger(conf, once=True)
    rc = lug.wait(300)
    it.check(rc == 0, "%s: lugger run --once exited %r" % (name, rc))
    lug.check_sanitizers()
    recs = []
    for r in it.read_jsonl(out):
        if "lugger.parse_error" in r:
            r.pop("time", None)  # the time such a line was read
        recs.append(r)
    return recs


def run():
    it.require_binary()
    with it.WorkDir("parallel") as wd:
        cri_file(wd.p("logs/cri.log"))
        loop = cri_run(wd, "cri-loop", False)
        workers = cri_run(wd, "cri-workers", True)
        it.check(len(loop) > 60_000 * 0.9, "cri: only %d records" % len(loop))
        it.check(any(r.get("lugger.truncated") or "lugger.parse_error" in r
                     for r in loop), "cri: no truncated or malformed record")
        diff = next((i for i, (a, b) in enumerate(zip(loop, workers)) if a != b),
                    None)
        it.check(len(loop) == len(workers) and diff is None,
                 "cri: framed on the workers: %d records, on the loop: %d; "
                 "first difference at %r: %r vs %r" % (
                     len(workers), len(loop), diff,
                     workers[diff] if diff is not None else None,
                     loop[diff] if diff is not None else None))
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
                "workers (%s), pinned to one without the flag; a CRI file "
                "framed on the workers gives the loop's %d records" % (
                    LINES, "/".join(str(v) for v in sorted(par.values())),
                    len(loop)))


if __name__ == "__main__":
    it.main("parallel", run)
