#!/usr/bin/env python3
"""Script safety in an ordered parallel (stateless) pipeline: one busy
file whose batches run on both workers at once, with misbehaving records
in it; every other line is delivered once and in the file's order.

hot.log holds LINES sequenced lines (make_line) with marker lines at fixed
places; settings.script_timeout = 500ms, script_memory = 32MiB, two
workers, `stateless = true`.

Run 1:
- LOOP_INTERP (an interpreted loop: interrupted), ALLOC (200 MiB > the cap)
  and RECURSE (unbounded recursion) fail their record: each is in the
  dead-letter file with its reason, while the batches behind it, processed
  by the other worker meanwhile, wait in the reorder stage and then go out
  in order.
- LOOP_JIT (a compiled loop the interrupt cannot reach) makes its worker
  stuck: /healthz turns 503 naming hot.log and the marker's offset. What
  the output has then is exactly the file's lines before the stuck batch,
  in order, each once: nothing after the stuck batch overtook it. SIGTERM
  exits 0 promptly.
Run 2 (same config): the LOOP_JIT record goes to the dead-letter output
with "poison:" and the rest of the file follows. At the end every line was
delivered exactly once, in the file's order across both runs, and the four
markers are each once in the dead-letter file.
"""

import os
import time

import lugger_it as it
import test_watchdog
from test_watchdog import records

LINES = 120_000
LINE_LEN = 100
# seq -> marker placed before that line.
MARKERS = {15_000: "LOOP_INTERP", 40_000: "ALLOC", 60_000: "RECURSE",
           90_000: "LOOP_JIT"}

# test_watchdog's script: interrupted, out-of-memory, overflowing and
# JIT-stuck records by their body.
SCRIPT = test_watchdog.SCRIPT


def write_log(path):
    """Writes hot.log; returns the byte offset of each marker."""
    offsets = {}
    off = 0
    with open(path, "wb") as f:
        for seq in range(LINES):
            m = MARKERS.get(seq)
            if m is not None:
                offsets[m] = off
                f.write(m.encode() + b"\n")
                off += len(m) + 1
            line = it.make_line(0, seq, LINE_LEN)
            f.write(line)
            off += len(line)
    return offsets


def main():
    it.require_binary()
    with it.WorkDir("watchdog-parallel") as wd:
        port = it.free_port()
        out = wd.p("out.jsonl")
        dead = os.path.join(wd.state, "dead-letter.jsonl")
        hot = os.path.join(wd.logs, "hot.log")
        offsets = write_log(hot)
        conf = it.simple_config(
            wd, [hot], out,
            settings={"http": "127.0.0.1:%d" % port, "script_timeout": "500ms",
                      "script_memory": "32MiB", "workers": 2},
            scripts=["bad.lua"], script_files={"bad.lua": SCRIPT},
            pipeline={"stateless": True})

        def dead_bodies():
            return [r.get("body") for r in records(dead)]

        def dead_error(body):
            for r in records(dead):
                if r.get("body") == body:
                    return r.get("lugger.error", "")
            return None

        # Run 1. The stuck worker's thread keeps its Lua state and batch
        # until the process exits, on purpose: no leak check for this run.
        lg = it.Lugger(conf, env={
            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1"})
        it.wait_for(lambda: it.http_get(port, "/healthz")[0] == 503, 60,
                    "/healthz 503 for the stuck script", proc=lg)
        st, text = it.http_get(port, "/healthz")
        want = "hot.log offset %d" % offsets["LOOP_JIT"]
        it.check(want in text and "bad.lua" in text,
                 "/healthz does not name the script and %r: %r" % (want, text))
        for body, needle in (("LOOP_INTERP", "script_timeout"),
                             ("ALLOC", "not enough memory"),
                             ("RECURSE", "stack overflow")):
            it.wait_for(lambda: dead_error(body) is not None, 20,
                        "%s in the dead-letter file" % body, proc=lg)
            err = dead_error(body)
            it.check(needle in err, "%s: dead-letter error %r lacks %r" % (
                body, err, needle))
        it.check(("hot.log offset %d" % offsets["LOOP_INTERP"])
                 in dead_error("LOOP_INTERP"),
                 "LOOP_INTERP error names no file offset: %r"
                 % dead_error("LOOP_INTERP"))
        # The batches before the stuck one arrive (a batch is at most
        # ~1.25 MiB, ~13,000 lines); then the other worker has a while to
        # finish whatever it was given after it: none of that may pass the
        # stuck batch.
        def prefix():
            t = it.SeqTracker(expected_len=LINE_LEN)
            for r in records(out):
                t.add(r)
            return t
        it.wait_for(lambda: prefix().delivered(0) >= 75_000, 60,
                    "the lines before the stuck batch", proc=lg,
                    detail=lambda: "%d delivered" % prefix().delivered(0))
        time.sleep(1.0)
        run1 = prefix()
        got1 = run1.delivered(0)
        it.check(run1.total == got1 and run1.dups == 0 and
                 not run1.order_errors and not run1.foreign,
                 "run 1: not an in-order prefix of the file: %d records, "
                 "first %d contiguous, %d duplicates, %d out of order, "
                 "foreign %r" % (run1.total, got1, run1.dups,
                                 len(run1.order_errors), run1.foreign[:3]))
        it.check(got1 <= 90_000,
                 "run 1 delivered lines 0..%d; the stuck batch is at line "
                 "90,000" % got1)
        took = lg.stop(timeout=15)
        it.check(took < 8, "SIGTERM with a stuck script took %.1f s" % took)

        # Run 2: the poison record is dead-lettered, the rest follows.
        lg = it.Lugger(conf)
        tracker = it.SeqTracker(expected_len=LINE_LEN)
        it.wait_for(lambda: dead_error("LOOP_JIT") is not None, 30,
                    "LOOP_JIT in the dead-letter file", proc=lg)
        err = dead_error("LOOP_JIT")
        it.check("poison:" in err and
                 ("hot.log offset %d" % offsets["LOOP_JIT"]) in err,
                 "poison error text: %r" % err)

        def all_in():
            n = 0
            for r in records(out):
                n += 1
            return n >= LINES
        it.wait_for(all_in, 60, "every line of hot.log", proc=lg)
        lg.stop(timeout=15)
        lg.check_sanitizers()
        for r in records(out):
            tracker.add(r)
        lost, dups, missing, extra = tracker.summary({0: LINES})
        it.check(lost == 0 and dups == 0 and extra == 0 and
                 not tracker.foreign,
                 "%d lost, %d duplicated, %d extra, foreign %r (first missing "
                 "%s)" % (lost, dups, extra, tracker.foreign[:3], missing))
        it.check(not tracker.order_errors, "%d lines out of order: %r" % (
            len(tracker.order_errors), tracker.order_errors[:5]))
        it.check(all(r.get("seen") for r in records(out)),
                 "a record skipped the script")
        dl = sorted(dead_bodies())
        it.check(dl == sorted(MARKERS.values()),
                 "dead-letter records: %r" % dl)
        return ("run 1 delivered lines 0..%d in order before the stuck batch "
                "(stop in %.2f s); run 2: poison dead-lettered, %d lines once "
                "and in order" % (got1, took, LINES))


if __name__ == "__main__":
    it.main("test_watchdog_parallel", main)
