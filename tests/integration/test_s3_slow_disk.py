#!/usr/bin/env python3
"""A slow disk under the state directory does not stall the data path
while the s3 output journals its requests.

The s3 output writes a request journal entry (file write, fsync, rename,
directory fsync) before each object is uploaded (lg_req_journal.h). On a
node whose disk is busy an fsync takes seconds; if the write ran on the
loop thread, every other pipeline would stop that long at every object.
Here strace (Debian's, attached to the running lugger) delays every fsync
by 1.5 s while two pipelines run side by side:

  s3:    file source `objs` -> s3 output to npm s3rver (behind the aws4
         SigV4 verifier, as in test_s3.py), 30 lines/s cut into small
         objects (max_coalescing_delay 200ms): a journal write after the
         other;
  plain: file source `app` -> file output, 40 lines/s.

Checked: no fsync runs on the loop thread (lugger's main thread), and
each line of the plain pipeline reaches its output within 1 s (with the
journal written on the loop thread, 8 fsyncs ran there and lines waited
up to 3.0 s, median 1.7 s: two delayed fsyncs per object, back to back;
now 0.01-0.03 s); fsyncs were delayed; objects that come while a
journal write is in flight share the next one (fewer journal writes than
objects); every s3 line is in exactly one object and every plain line
arrived once.
"""
import os
import signal
import threading
import time

import lugger_it as it
from test_s3 import Peers, check_exactly_once, object_lines, output

RATE = 40      # plain lines/s
S3_RATE = 30   # s3 lines/s
SECONDS = 8
DELAY_US = 1_500_000


def main():
    it.require_binary()
    with it.WorkDir("s3-slow-disk") as wd:
        peers = Peers(wd)
        try:
            return run(wd, peers)
        finally:
            peers.close()


def run(wd, peers):
    plain_log = wd.p("logs/app.log")
    s3_log = wd.p("logs/objs.log")
    for p in (plain_log, s3_log):
        open(p, "wb").close()
    out = wd.p("out.jsonl")
    # The s3 records wait seconds for their journal writes, and their
    # batches (one or two lines each at this pace) are charged by their
    # buffers' capacity, far more than the lines, against the memory
    # budget: at 16MiB, and still at 256MiB, the budget is reached and
    # every source pauses (plain lines then took 1.5-2.8 s), which is
    # backpressure, not a stalled loop. A budget that is not reached keeps
    # this test about the loop thread.
    settings = {"state_dir": wd.state, "memory_budget": "2GiB",
                "workers": 2, "checkpoint_interval": "1s",
                "rescan_interval": "1s"}
    src = {"type": "file", "read_from": "head", "format": "line"}
    conf = it.write_config(
        wd.p("lugger.lua"), settings,
        {"app": dict(src, paths=[plain_log]),
         "objs": dict(src, paths=[s3_log])},
        {"plain": {"sources": ["app"], "outputs": ["file"]},
         "s3": {"sources": ["objs"], "outputs": ["s3"]}},
        {"file": {"type": "file", "path": out, "fsync": "never"},
         "s3": output(peers, key="slow/{id}.json.gz", max_bytes="64KiB",
                      max_coalescing_delay="200ms", max_in_flight=4)})
    lg = it.Lugger(conf)
    lg.wait_started()
    trace = wd.p("strace.txt")
    st = it.delay_fsyncs(lg.pid, trace, DELAY_US, fd_paths=True)

    sent, arrived = {}, {}
    stop = threading.Event()

    def follow():
        f = it.JsonlFollower(out, on_record=lambda r: arrived.setdefault(
            it.parse_line(r["body"])[1], time.monotonic()))
        while not stop.is_set():
            f.poll()
            time.sleep(0.005)
        f.poll()
        f.close()

    def write_s3():
        with open(s3_log, "ab") as f:
            t0 = time.monotonic()
            for seq in range(S3_RATE * SECONDS):
                wait = t0 + seq / S3_RATE - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                f.write(it.make_line(1, seq))
                f.flush()

    th = threading.Thread(target=follow)
    th.start()
    ws = threading.Thread(target=write_s3)
    ws.start()
    n = RATE * SECONDS
    with open(plain_log, "ab") as f:
        t0 = time.monotonic()
        for seq in range(n):
            wait = t0 + seq / RATE - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            f.write(it.make_line(0, seq))
            f.flush()
            sent[seq] = time.monotonic()
    ws.join()
    it.wait_for(lambda: len(arrived) >= n, 60, "every plain line delivered",
                proc=lg, detail=lambda: "%d of %d" % (len(arrived), n))
    want = [it.make_line(1, s)[:-1].decode()
            for s in range(S3_RATE * SECONDS)]

    counted = {}

    def s3_lines():  # records in the objects listed so far
        for key, size in peers.list():
            if counted.get(key, (None,))[0] != size:
                counted[key] = (size, len(object_lines(peers.get(key)[0],
                                                       True)))
        return sum(c for _, c in counted.values())
    it.wait_for(lambda: s3_lines() >= len(want), 90,
                "every s3 line in an object", proc=lg, interval=0.5,
                detail=lambda: "%d of %d" % (s3_lines(), len(want)))
    st.send_signal(signal.SIGINT)  # detaches; lugger runs on
    st.wait(10)
    stop.set()
    th.join()
    # With -f, an fsync that overlaps another thread's is logged as
    # "fsync(... <unfinished ...>" then "<... fsync resumed>) = 0 (DELAYED)".
    # -y names each fsync's file: the journal's temp file is fsync'd once
    # per journal write.
    delayed = on_loop = writes = 0
    with open(trace) as f:
        for line in f:
            if "fsync" in line and "DELAYED" in line:
                delayed += 1
                on_loop += line.split()[0] == str(lg.pid)
            if "fsync(" in line and "requests-s3.json.tmp>" in line:
                writes += 1
    objects = len(peers.list())
    it.check(delayed >= 4, "only %d fsyncs were delayed: the test did not "
             "slow the journal down" % delayed)
    it.check(on_loop == 0, "%d fsyncs on the loop thread" % on_loop)
    # An object waits for its journal write (3 s here): those coming
    # meanwhile share the next write instead of one write each.
    it.check(0 < writes < objects, "%d journal writes for %d objects" % (
        writes, objects))
    late = sorted(((arrived[s] - sent[s], s) for s in sent), reverse=True)
    summary = ("%d fsyncs delayed %.1f s each (%d on the loop thread); %d "
               "objects, %d journal writes; plain lines: slowest %.3f s, "
               "median %.3f s" % (
                   delayed, DELAY_US / 1e6, on_loop, objects, writes,
                   late[0][0],
                   late[len(late) // 2][0]))
    it.log(summary)
    it.check(late[0][0] < 1.0,
             "line %d took %.2f s to arrive while fsync took %.1f s "
             "(the 5 slowest: %s)" % (
                 late[0][1], late[0][0], DELAY_US / 1e6,
                 ", ".join("%.2f" % d for d, _ in late[:5])))
    lg.stop(timeout=30)
    lg.check_sanitizers()
    check_exactly_once(peers, want, True)
    tracker = it.SeqTracker()
    for r in it.read_jsonl(out):
        tracker.add(r)
    lost, dups, missing, extra = tracker.summary({0: n})
    it.check(lost == 0 and dups == 0 and extra == 0,
             "plain: %d lost, %d duplicated, %d extra (first missing %s)" % (
                 lost, dups, extra, missing))
    return summary


if __name__ == "__main__":
    it.main("test_s3_slow_disk", main)
