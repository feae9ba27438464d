#!/usr/bin/env python3
"""A slow disk under the state directory at the stop: the last checkpoint
save runs on libuv's threadpool (not on the loop thread), and the stop
still waits for it.

strace (Debian's, attached to the running lugger) delays every fsync by
1.5 s; no periodic save runs (checkpoint_interval 1h), so the stop's save
is the only one. Checked: lugger exits 0 only after that save's two
delayed fsyncs (at least 3 s after SIGTERM), the store then holds the
file's end, and every line is in the output once. (That the save leaves
the loop thread free is shown by unit.test_source, with the threadpool
held busy: this test guards the other half, the wait.)
"""
import os
import signal
import time

import lugger_it as it

DELAY_US = 1_500_000
LINES = 200


def fsyncs(trace):
    try:
        with open(trace) as f:
            return sum(1 for line in f if "fsync(" in line and
                       "DELAYED" in line)
    except FileNotFoundError:
        return 0


def main():
    it.require_binary()
    with it.WorkDir("slow-disk-stop") as wd:
        log = wd.p("logs/app.log")
        with open(log, "wb") as f:
            for seq in range(LINES):
                f.write(it.make_line(0, seq))
        out = wd.p("out.jsonl")
        # No periodic save during the test: the stop's is the only one.
        conf = it.simple_config(wd, [log], out,
                                settings={"checkpoint_interval": "1h"})
        # LeakSanitizer cannot run under ptrace, and strace stays attached
        # until lugger has exited (its last fsyncs are at the exit); the
        # other sanitizer checks stay on.
        lg = it.Lugger(conf, env={
            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1"})
        lg.wait_started()
        size = os.path.getsize(log)

        def delivered():
            return os.path.exists(out) and \
                len(it.read_jsonl(out, allow_partial_tail=True)) == LINES

        it.wait_for(delivered, 30, "every line delivered", proc=lg)
        trace = wd.p("strace.txt")
        st = it.delay_fsyncs(lg.pid, trace, DELAY_US)
        t0 = time.monotonic()
        lg.proc.send_signal(signal.SIGTERM)
        rc = lg.wait(30)
        took = time.monotonic() - t0
        it.check(rc == 0, "exit %r\n%s" % (rc, lg.stderr_tail()))
        st.send_signal(signal.SIGINT)
        st.wait(10)
        lg.check_sanitizers()
        n = fsyncs(trace)
        it.check(n >= 2, "only %d fsyncs delayed after SIGTERM" % n)
        it.check(took >= 2 * DELAY_US / 1e6,
                 "lugger exited %.1f s after SIGTERM, before its save's two "
                 "delayed fsyncs" % took)
        offsets = it.checkpoint_offsets(wd.state)
        it.check(list(offsets.values()) == [size],
                 "checkpoint after SIGTERM: %r, file size %d" % (offsets,
                                                                 size))
        tracker = it.SeqTracker()
        for r in it.read_jsonl(out):
            tracker.add(r)
        lost, dups, missing, extra = tracker.summary({0: LINES})
        it.check(lost == 0 and dups == 0 and extra == 0,
                 "%d lost, %d duplicated, %d extra" % (lost, dups, extra))
        return ("%d fsyncs delayed %.1f s; exit %.1f s after SIGTERM, the "
                "store at the file's end" % (n, DELAY_US / 1e6, took))


if __name__ == "__main__":
    it.main("test_slow_disk_stop", main)
