#!/usr/bin/env python3
"""Backpressure: output `stdout` into a pipe that nobody reads, memory_budget
16MiB, ~200 MB of input on /dev/shm.

While the pipe is blocked (several seconds):
  - lugger's VmRSS (sampled from /proc/<pid>/status) stays under a bound
    (96 MiB for the release build; more for the ASan build, whose shadow
    memory and allocator inflate RSS) -- far below the input size;
  - lugger has read (rchar in /proc/<pid>/io) about the budget plus what it
    delivered, not the whole input: reading paused;
  - no checkpoint passes what was delivered: the pipe holds exactly what
    lugger delivered, so the complete lines in its first FIONREAD bytes are
    the delivered ones, and each file's checkpoint must not be beyond them.
Then the test reads the pipe: every line arrives exactly once, in order
per file; SIGTERM -> exit 0.
"""

import fcntl
import os
import signal
import struct
import termios
import threading
import time

import lugger_it as it

NFILES = 4
LINE_LEN = 250
PER_FILE = 200_000          # 4 * 200,000 * 250 B = 200 MB
BUDGET = 16 * it.MiB
BLOCKED_SECONDS = 6.0


def fionread(fd):
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD,
                                          b"\0\0\0\0"))[0]


def write_inputs(paths):
    for fid, p in enumerate(paths):
        with open(p, "wb") as f:
            for s0 in range(0, PER_FILE, 10_000):
                f.write(b"".join(it.make_line(fid, s, LINE_LEN)
                                 for s in range(s0, min(PER_FILE,
                                                        s0 + 10_000))))


def run():
    it.require_binary()
    rss_bound = it.rss_limit(96, 128)
    with it.WorkDir("backpressure") as wd:
        paths = [os.path.join(wd.logs, "app-%d.log" % i)
                 for i in range(NFILES)]
        t = time.monotonic()
        write_inputs(paths)
        input_bytes = sum(os.path.getsize(p) for p in paths)
        it.log("wrote %d MB of input in %.1f s" % (input_bytes // 10**6,
                                                   time.monotonic() - t))
        conf = it.simple_config(
            wd, [os.path.join(wd.logs, "*.log")],
            settings={"memory_budget": "16MiB"},
            output={"type": "stdout"})
        import subprocess
        lug = it.Lugger(conf, stdout=subprocess.PIPE)
        rfd = lug.proc.stdout.fileno()
        sampler = it.RssSampler(lug.pid)
        tracker = it.SeqTracker(expected_len=LINE_LEN)
        reader_err = []
        reader_done = threading.Event()
        try:
            sampler.start()
            # Phase 1: nobody reads. Wait for the pipe to fill, then watch.
            it.wait_for(lambda: fionread(rfd) > 0, 30, "output in the pipe",
                        proc=lug)
            t_block = time.monotonic()
            time.sleep(BLOCKED_SECONDS)
            lug.check_running()
            # Snapshot: the pipe content is everything delivered so far.
            for _ in range(50):
                n1 = fionread(rfd)
                cps = it.checkpoint_offsets(wd.state)
                n2 = fionread(rfd)
                if n1 == n2:
                    break
                time.sleep(0.1)
            else:
                it.fail("the pipe content kept changing while nobody read it")
            io = lug.io()
            blocked = [r for (ts, r) in sampler.samples if ts >= t_block]
            max_blocked = max(blocked) if blocked else 0
            max_before = sampler.max_kib
            it.log("blocked %.0f s: pipe holds %d bytes, rchar %d MiB, RSS "
                   "max %d MiB, checkpoints %s" % (
                       BLOCKED_SECONDS, n1, io.get("rchar", 0) // it.MiB,
                       max_blocked // 1024, cps))

            # Phase 2: read the pipe to the end.
            first = bytearray()

            def reader():
                try:
                    buf = b""
                    while True:
                        chunk = os.read(rfd, 4 * it.MiB)
                        if not chunk:
                            break
                        if len(first) < n1:
                            first.extend(chunk[:n1 - len(first)])
                        data = buf + chunk
                        lines = data.split(b"\n")
                        buf = lines.pop()
                        for raw in lines:
                            tracker.add(it.parse_json_line(raw, "stdout"))
                    if buf:
                        reader_err.append(it.TestFailure(
                            "stdout ended with a partial line: %r" %
                            buf[:200]))
                except BaseException as e:
                    reader_err.append(e)
                finally:
                    reader_done.set()

            rt = threading.Thread(target=reader, daemon=True)
            t_read = time.monotonic()
            rt.start()
            expected = {i: PER_FILE for i in range(NFILES)}

            def all_in():
                if reader_err:
                    raise reader_err[0]
                return all(tracker.delivered(i) >= PER_FILE
                           for i in range(NFILES))
            it.wait_for(all_in, 180, "every line through the pipe", proc=lug,
                        interval=0.2, detail=lambda: "%d lines so far" %
                        tracker.total)
            t_all = time.monotonic()
            time.sleep(1.0)
            lug.stop(signal.SIGTERM)
            reader_done.wait(30)
            if reader_err:
                raise reader_err[0]
        finally:
            sampler.stop()
            lug.kill9()

        # What was delivered at the snapshot: the complete lines in the
        # first n1 bytes of the stream.
        snap = it.SeqTracker(expected_len=LINE_LEN)
        for raw in bytes(first).split(b"\n")[:-1]:
            snap.add(it.parse_json_line(raw, "stdout (snapshot)"))
        for fid, p in enumerate(paths):
            off = cps.get(p, 0)
            delivered_end = snap.delivered(fid) * LINE_LEN
            it.check(off <= delivered_end,
                     "checkpoint of %s at byte %d while blocked, but only "
                     "%d bytes of it were delivered (in the pipe)" % (
                         p, off, delivered_end))
        lost, dups, missing, extra = tracker.summary(expected)
        it.check(lost == 0, "%d lines lost (first %s)" % (lost, missing))
        it.check(dups == 0, "%d lines duplicated" % dups)
        it.check(extra == 0 and not tracker.foreign and not tracker.bad_body,
                 "unexpected records: %r %r" % (tracker.foreign[:3],
                                               tracker.bad_body[:3]))
        it.check(not tracker.order_errors, "out of order: %s" %
                 tracker.order_errors[:5])
        rchar = io.get("rchar", 0)
        read_bound = BUDGET + n1 * 4 + 8 * it.MiB
        it.check(rchar <= read_bound,
                 "lugger read %d MiB while its output was blocked (budget "
                 "16 MiB, %d bytes delivered): reading did not pause" % (
                     rchar // it.MiB, n1))
        it.check(max_before <= rss_bound,
                 "VmRSS reached %d MiB while the output was blocked (bound "
                 "%d MiB%s)" % (max_before // 1024, rss_bound // 1024,
                                ", ASan build" if it.sanitized() else ""))
        total = NFILES * PER_FILE
        rate = total / max(t_all - t_read, 1e-9)
        return ("%d MB input, output blocked %.0f s: max RSS %d MiB (bound "
                "%d%s), read %d MiB (budget 16), checkpoints within the %d "
                "bytes delivered; then %d lines exactly once, in order, "
                "%.0f lines/s through the pipe; max RSS overall %d MiB" % (
                    input_bytes // 10**6, BLOCKED_SECONDS,
                    max_blocked // 1024, rss_bound // 1024,
                    ", ASan" if it.sanitized() else "", rchar // it.MiB, n1,
                    total, rate, sampler.max_kib // 1024))


if __name__ == "__main__":
    it.main("backpressure", run)
