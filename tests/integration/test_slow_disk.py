#!/usr/bin/env python3
"""A slow disk under the state directory does not stall the data path.

A checkpoint save is two fsyncs (the new store file, then its directory),
every checkpoint_interval. On a node whose disk is busy, an fsync can take
seconds; if it ran on the loop thread, reading and acking would stop that
long at every save. Here strace (Debian's, attached to the running
lugger) delays every fsync by 1.5 s while lines are written at 40 a second:
each line must still reach the output within 1 s (when the saves ran on
the loop thread, lines waited up to ~3 s: two delayed fsyncs back to
back), the saves must still happen (the store moves on), and after SIGTERM
every line was delivered exactly once and the store holds the file's end.
"""
import os
import signal
import threading
import time

import lugger_it as it

RATE = 40
SECONDS = 8
DELAY_US = 1_500_000


def main():
    it.require_binary()
    with it.WorkDir("slow-disk") as wd:
        log = wd.p("logs/app.log")
        open(log, "wb").close()
        out = wd.p("out.jsonl")
        conf = it.simple_config(wd, [log], out,
                                settings={"checkpoint_interval": "1s"})
        lg = it.Lugger(conf)
        it.wait_for(lambda: os.path.exists(os.path.join(
            wd.state, "checkpoints.journal")), 20, "lugger started", proc=lg)
        trace = wd.p("strace.txt")
        st = it.delay_fsyncs(lg.pid, trace, DELAY_US)

        sent = {}
        arrived = {}
        stop = threading.Event()

        def follow():
            f = it.JsonlFollower(out, on_record=lambda r: arrived.setdefault(
                it.parse_line(r["body"])[1], time.monotonic()))
            while not stop.is_set():
                f.poll()
                time.sleep(0.005)
            f.poll()
            f.close()
        th = threading.Thread(target=follow)
        th.start()
        n = RATE * SECONDS
        with open(log, "ab") as f:
            t0 = time.monotonic()
            for seq in range(n):
                wait = t0 + seq / RATE - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                f.write(it.make_line(0, seq))
                f.flush()
                sent[seq] = time.monotonic()
        it.wait_for(lambda: len(arrived) >= n, 30, "every line delivered",
                    proc=lg, detail=lambda: "%d of %d" % (len(arrived), n))
        st.send_signal(signal.SIGINT)  # detaches; lugger runs on
        st.wait(10)
        stop.set()
        th.join()
        with open(trace) as f:
            delayed = sum(1 for line in f if "fsync(" in line and
                          "DELAYED" in line)
        it.check(delayed >= 4, "only %d fsyncs were delayed: the test did "
                 "not slow the saves down" % delayed)
        late = sorted(((arrived[s] - sent[s], s) for s in sent), reverse=True)
        it.check(late[0][0] < 1.0,
                 "line %d took %.2f s to arrive while fsync took %.1f s "
                 "(the 5 slowest: %s)" % (
                     late[0][1], late[0][0], DELAY_US / 1e6,
                     ", ".join("%.2f" % d for d, _ in late[:5])))
        took = lg.stop(timeout=30)
        lg.check_sanitizers()
        tracker = it.SeqTracker()
        for r in it.read_jsonl(out):
            tracker.add(r)
        lost, dups, missing, extra = tracker.summary({0: n})
        it.check(lost == 0 and dups == 0 and extra == 0,
                 "%d lost, %d duplicated, %d extra (first missing %s)" % (
                     lost, dups, extra, missing))
        offsets = it.checkpoint_offsets(wd.state)
        size = os.path.getsize(log)
        it.check(list(offsets.values()) == [size],
                 "checkpoint after SIGTERM: %r, file size %d" % (offsets, size))
        return ("%d fsyncs delayed %.1f s each; slowest line %.3f s, median "
                "%.3f s; SIGTERM took %.1f s" % (
                    delayed, DELAY_US / 1e6, late[0][0],
                    late[len(late) // 2][0], took))


if __name__ == "__main__":
    it.main("test_slow_disk", main)
