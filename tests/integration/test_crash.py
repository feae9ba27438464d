#!/usr/bin/env python3
"""Crash: while writers append to several files, `kill -9` lugger at random
moments and restart it, 5 times; then let it finish and stop it with
SIGTERM -> every line at least once, no broken output line, and the
duplicates bounded by what was in flight at the kills.

Lines are fixed-length (100 bytes), so line n of a file starts at byte
n * 100 and a checkpoint offset names a line exactly. After each kill
(lugger is dead, so nothing moves) the test reads checkpoints.json and the
output:
  - every checkpoint offset is at a line boundary and every line before it
    is in the output (a checkpoint past an undelivered line loses it);
  - the lines in the output at or after the checkpoint are "in flight":
    delivered but not yet checkpointed. A restart reads them again, so
    their number bounds the duplicates this kill may cause.
At the end every output line must end in LF and parse as JSON (the file
output cuts a partial last line when it opens), every line written must be
there, and the duplicates must not exceed the sum of the in-flight counts.
"""

import os
import random
import signal
import time

import lugger_it as it

NFILES = 4
LINE_LEN = 100
RATE = 20_000          # lines/s over all files
WRITE_SECONDS = 14.0   # the writers run this long
KILLS = 5


def output_state(out):
    """Per file id: the sorted set of sequences in the output so far (only
    complete lines: a kill can leave a partial last line)."""
    tr = it.SeqTracker(expected_len=LINE_LEN)
    if os.path.exists(out):
        for r in it.read_jsonl(out, allow_partial_tail=True):
            tr.add(r)
    return tr


def run():
    it.require_binary()
    seed = int(os.environ.get("LUGGER_IT_SEED", time.time()))
    it.log("seed %d (set LUGGER_IT_SEED to repeat)" % seed)
    rng = random.Random(seed)
    with it.WorkDir("crash") as wd:
        paths = [os.path.join(wd.logs, "app-%d.log" % i)
                 for i in range(NFILES)]
        out = wd.p("out.jsonl")
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")], out)
        writer = it.PacedWriter(paths, RATE, LINE_LEN,
                                lines_per_file=int(RATE * WRITE_SECONDS /
                                                   NFILES))
        for p in paths:
            open(p, "wb").close()
        in_flight_total = 0
        kills = []
        lug = None
        try:
            writer.start()
            for k in range(KILLS):
                lug = it.Lugger(conf)
                delay = rng.uniform(0.2, 2.5)
                time.sleep(delay)
                lug.check_running()
                lug.kill9()
                lug.check_sanitizers()
                # lugger is dead: checkpoint and output are stable now.
                cps = it.checkpoint_offsets(wd.state)
                tr = output_state(out)
                in_flight = 0
                for fid, p in enumerate(paths):
                    off = cps.get(p, 0)
                    it.check(off % LINE_LEN == 0,
                             "kill %d: checkpoint of %s at %d is not a line "
                             "boundary (lines are %d bytes)" % (
                                 k + 1, p, off, LINE_LEN))
                    cp_line = off // LINE_LEN
                    have = tr.delivered(fid)
                    it.check(cp_line <= have,
                             "kill %d: checkpoint of %s is at line %d but "
                             "the output only has lines 0..%d of it: a "
                             "restart would skip undelivered lines" % (
                                 k + 1, p, cp_line, have - 1))
                    last = tr.last.get(fid, -1)
                    in_flight += max(0, last + 1 - cp_line)
                in_flight_total += in_flight
                kills.append((delay, tr.total, in_flight))
                it.log("kill -9 #%d after %.2f s: %d lines in output, %d in "
                       "flight (delivered, not checkpointed)" % (
                           k + 1, delay, tr.total, in_flight))
            # Last run: let the writers finish, wait until every file is
            # checkpointed to its end, then stop cleanly.
            lug = it.Lugger(conf)
            writer.join(timeout=WRITE_SECONDS * 3)
            it.check(not writer.is_alive(), "writer did not finish")
            writer.stop()
            sizes = {p: os.path.getsize(p) for p in paths}
            it.wait_for(
                lambda: all(it.checkpoint_offsets(wd.state).get(p, 0) ==
                            sizes[p] for p in paths),
                90, "checkpoints at the end of every file", interval=0.2,
                proc=lug, detail=lambda: "checkpoints %s, sizes %s" % (
                    it.checkpoint_offsets(wd.state), sizes))
            lug.stop(signal.SIGTERM)
        finally:
            writer.halt()
            if lug is not None:
                lug.kill9()

        written = writer.written
        total = sum(written.values())
        final = it.SeqTracker(expected_len=LINE_LEN)
        recs = it.read_jsonl(out)  # every line complete and valid JSON
        for r in recs:
            final.add(r)
        lost, dups, missing, extra = final.summary(written)
        it.check(not final.foreign, "%d records that are not test lines "
                 "(broken lines?): %r" % (len(final.foreign),
                                          final.foreign[:3]))
        it.check(not final.bad_body, "bodies of the wrong length (partial "
                 "lines?): %r" % final.bad_body[:3])
        it.check(lost == 0, "%d of %d lines lost after %d kill -9 restarts "
                 "(first: %s, seed %d)" % (lost, total, KILLS, missing, seed))
        it.check(extra == 0, "%d unexpected sequence numbers" % extra)
        if it.parallel_pipelines():
            # One file's batches ran on both workers: still in file order.
            errs = [e for e in final.order_errors if e is not None]
            it.check(not final.order_errors, "%d lines out of order with a "
                     "stateless pipeline (first %r, seed %d)" % (
                         len(final.order_errors), errs[:5], seed))
        it.check(dups <= in_flight_total,
                 "%d duplicates, more than the %d lines in flight at the "
                 "kills (seed %d)" % (dups, in_flight_total, seed))
        return ("%d lines, %d files, %d kill -9 restarts, 0 lost, %d "
                "duplicated (bound: %d in flight at the kills), %d output "
                "lines all valid JSON, seed %d" % (
                    total, NFILES, KILLS, dups, in_flight_total, len(recs),
                    seed))


if __name__ == "__main__":
    it.main("crash", run)
