#!/usr/bin/env python3
"""Backpressure: output `stdout` into a pipe that nobody reads, memory_budget
16MiB, ~200 MB of input on /dev/shm.

While the pipe is blocked (several seconds):
  - lugger's VmRSS (sampled from /proc/<pid>/status) stays under a bound
    (96 MiB for the release build; more for the ASan build, whose shadow
    memory and allocator inflate RSS) -- far below the input size;
  - lugger has read (rchar in /proc/<pid>/io) about the budget plus what it
    delivered, not the whole input: reading paused;
  - no checkpoint passes what was delivered. The test first reads 40,000
    records (so checkpoints move), then stops reading: what it read plus
    the pipe content (FIONREAD) is exactly what lugger delivered, and each
    file's checkpoint must not be beyond it (and some must be above 0).
Then the test reads the pipe again: every line arrives exactly once, in
order per file; SIGTERM -> exit 0.
"""

import fcntl
import os
import signal
import struct
import subprocess
import termios
import threading
import time

import lugger_it as it

NFILES = 4
LINE_LEN = 250
PER_FILE = 200_000          # 4 * 200,000 * 250 B = 200 MB
BUDGET = 16 * it.MiB
BLOCKED_SECONDS = 6.0
PRE_LINES = 40_000          # read before the output blocks


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
        lug = it.Lugger(conf, stdout=subprocess.PIPE)
        rfd = lug.proc.stdout.fileno()
        sampler = it.RssSampler(lug.pid)
        tracker = it.SeqTracker(expected_len=LINE_LEN)
        reader_err = []
        reader_done = threading.Event()
        paused, resume = threading.Event(), threading.Event()
        snap = {"n1": 0, "pre": None, "pre_buf": b"", "first": bytearray()}

        def reader():
            try:
                buf = b""
                while True:
                    chunk = os.read(rfd, 4 * it.MiB)
                    if not chunk:
                        break
                    first = snap["first"]
                    if resume.is_set() and len(first) < snap["n1"]:
                        first.extend(chunk[:snap["n1"] - len(first)])
                    data = buf + chunk
                    lines = data.split(b"\n")
                    buf = lines.pop()
                    for raw in lines:
                        tracker.add(it.parse_json_line(raw, "stdout"))
                    if not paused.is_set() and tracker.total >= PRE_LINES:
                        # Phase 1: stop reading; lugger fills the pipe and
                        # blocks.
                        snap["pre"] = {i: tracker.delivered(i)
                                       for i in range(NFILES)}
                        snap["pre_buf"] = buf
                        paused.set()
                        resume.wait()
                if buf:
                    reader_err.append(it.TestFailure(
                        "stdout ended with a partial line: %r" % buf[:200]))
            except BaseException as e:
                reader_err.append(e)
            finally:
                reader_done.set()

        rt = threading.Thread(target=reader, daemon=True)
        try:
            sampler.start()
            rt.start()
            # Phase 0: read PRE_LINES records, so checkpoints move.
            it.wait_for(lambda: paused.is_set() or reader_err, 60,
                        "%d records through the pipe" % PRE_LINES, proc=lug)
            if reader_err:
                raise reader_err[0]
            it.wait_for(lambda: fionread(rfd) > 0, 30,
                        "output in the pipe again", proc=lug)
            t_block = time.monotonic()
            time.sleep(BLOCKED_SECONDS)
            lug.check_running()
            # Snapshot: what was read plus the pipe content is everything
            # delivered so far; a blocked lugger adds nothing meanwhile.
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
            snap["n1"] = n1
            t_read = time.monotonic()
            resume.set()
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
            resume.set()
            sampler.stop()
            lug.kill9()

        # What was delivered at the snapshot: the records read before the
        # pause, and the complete lines in the pipe then.
        after = it.SeqTracker(expected_len=LINE_LEN)
        for raw in (snap["pre_buf"] + bytes(snap["first"])).split(b"\n")[:-1]:
            after.add(it.parse_json_line(raw, "stdout (snapshot)"))
        delivered_bytes = 0
        for fid, p in enumerate(paths):
            off = cps.get(p, 0)
            end = max(snap["pre"][fid], after.last.get(fid, -1) + 1) * LINE_LEN
            delivered_bytes += end
            it.check(off <= end,
                     "checkpoint of %s at byte %d while blocked, but only "
                     "%d bytes of it were delivered" % (p, off, end))
        it.check(sum(cps.values()) > 0,
                 "no checkpoint moved although %d records were delivered "
                 "before the output blocked: %s" % (PRE_LINES, cps))

        lost, dups, missing, extra = tracker.summary(expected)
        it.check(lost == 0, "%d lines lost (first %s)" % (lost, missing))
        it.check(dups == 0, "%d lines duplicated" % dups)
        it.check(extra == 0 and not tracker.foreign and not tracker.bad_body,
                 "unexpected records: %r %r" % (tracker.foreign[:3],
                                               tracker.bad_body[:3]))
        it.check(not tracker.order_errors, "out of order: %s" %
                 tracker.order_errors[:5])
        rchar = io.get("rchar", 0)
        read_bound = BUDGET + delivered_bytes + 8 * it.MiB
        it.check(rchar <= read_bound,
                 "lugger had read %d MiB while its output was blocked "
                 "(budget 16 MiB, %d MiB of input delivered): reading did "
                 "not pause" % (rchar // it.MiB, delivered_bytes // it.MiB))
        it.check(max_before <= rss_bound,
                 "VmRSS reached %d MiB while the output was blocked (bound "
                 "%d MiB%s)" % (max_before // 1024, rss_bound // 1024,
                                ", ASan build" if it.sanitized() else ""))
        total = NFILES * PER_FILE
        rate = total / max(t_all - t_read, 1e-9)
        return ("%d MB input, output blocked %.0f s: max RSS %d MiB (bound "
                "%d%s), read %d MiB (budget 16, %d MiB delivered), checkpoints "
                "at %d MiB, within the delivered; then %d lines exactly once, in order, "
                "%.0f lines/s through the pipe; max RSS overall %d MiB" % (
                    input_bytes // 10**6, BLOCKED_SECONDS,
                    max_blocked // 1024, rss_bound // 1024,
                    ", ASan" if it.sanitized() else "", rchar // it.MiB,
                    delivered_bytes // it.MiB, sum(cps.values()) // it.MiB,
                    total, rate, sampler.max_kib // 1024))


if __name__ == "__main__":
    it.main("backpressure", run)
