#!/usr/bin/env python3
"""Order of one log stream across rotations with several workers, and how
soon a fast-rotating stream is delivered.

Each of NSTREAMS files s-N.log is written by one writer in generations:
plain lines "sN <seq>", then a Java stack trace whose first line holds the
marker SLOW ("sN <seq> SLOW java.lang.IllegalStateException: boom" and
"\\tat" frames), then the file is renamed to s-N.log.1 (not matched by the
glob) and a new s-N.log is written. The source has multiline = java with a
long group timeout, so each trace is an open group when its file is
rotated: it is emitted when lugger finishes the renamed file, as the last
record of that file. The pipeline's script spends SLOW_S seconds on every
record with the marker. With workers = 2, a successor pinned to another
worker than its predecessor (the engine used to pin files, not streams, to
workers) is processed while the slow trace still runs, and its lines are
delivered before the trace: the test requires every stream's records in
sequence order across all its files.

Part 2 (latency): the same streams without the slow script, rotated every
ROT_EVERY_S seconds (faster than lugger's 1 s rotate wait), each once
lugger has found the file (wait_opened): every record
must be delivered within LATENCY_BOUND_S of the writers' last write. The
successor of a renamed file is read as soon as the writer has switched to
it (its first bytes), not after the renamed file has been idle for the
rotate wait; a stream that rotates several times a second used to fall
further behind at every rotation.
"""

import os
import re
import time

import lugger_it as it

NSTREAMS = 3           # odd: file keys of a stream alternate in parity
GENERATIONS = 3
LINES = 40            # plain lines per generation
SLOW_S = 0.3          # script CPU time on a SLOW record
ROT_EVERY_S = 0.15    # part 2: rotation interval per stream
ROT_COUNT = 12        # part 2: rotations per stream
LATENCY_BOUND_S = 3.0

SCRIPT = """
function process(rec)
  if rec.body:find("SLOW", 1, true) then
    local t = os.clock()
    while os.clock() - t < %.3f do end
  end
end
""" % SLOW_S

SEQ = re.compile(r"^s(\d+) (\d+)")


def trace(sid, seq):
    return ("s%d %d SLOW java.lang.IllegalStateException: boom\n"
            "\tat com.example.A.b(A.java:%d)\n"
            "\tat com.example.A.main(A.java:1)\n" % (sid, seq, seq))


def write_stream(wd, sid, gens, slow, state):
    """Writes generation `gens` of stream `sid`; returns the next seq."""
    path = os.path.join(wd.logs, "s-%d.log" % sid)
    seq = state.get(sid, 0)
    with open(path, "ab") as f:
        f.write(b"".join(b"s%d %d plain line\n" % (sid, seq + k)
                         for k in range(LINES)))
        seq += LINES
        if slow:
            f.write(trace(sid, seq).encode())
            seq += 1
    state[sid] = seq
    return path


def progress(recs):
    """Per stream: records delivered and the last one's sequence number."""
    last = {}
    for r in recs:
        m = SEQ.match(r["body"])
        if m:
            sid = int(m.group(1))
            n, _ = last.get(sid, (0, None))
            last[sid] = (n + 1, int(m.group(2)))
    return ", ".join("s%d: %d (last %s)" % (k, v[0], v[1])
                     for k, v in sorted(last.items()))


def check_order(recs, want):
    """Every stream's records in sequence order, each exactly once."""
    got = {}
    for r in recs:
        m = SEQ.match(r["body"])
        it.check(m is not None, "unexpected record %r" % r["body"][:80])
        sid, seq = int(m.group(1)), int(m.group(2))
        nxt = got.get(sid, 0)
        it.check(seq == nxt, "stream %d: record %d arrived when %d was "
                 "expected (out of order across a rotation?): %r" % (
                     sid, seq, nxt, r["body"][:60]))
        got[sid] = nxt + 1
    for sid, n in want.items():
        it.check(got.get(sid, 0) == n, "stream %d: %d records, want %d" % (
            sid, got.get(sid, 0), n))


def wait_opened(lug, wd):
    """Waits until lugger holds every stream's current s-N.log open. A
    file renamed out of the glob (s-N.log.1) before lugger found it cannot
    be read by anyone, and the next rotation replaces it: the test rotates
    only files lugger has, however slowly a loaded machine lets it find
    them (a fixed sleep lost a whole generation when lugger's start-up
    scan came after the first rotation)."""
    paths = [os.path.join(wd.logs, "s-%d.log" % sid)
             for sid in range(NSTREAMS)]

    def held():
        fds = "/proc/%d/fd" % lug.pid
        want = set()
        for p in paths:
            st = os.stat(p)
            want.add((st.st_dev, st.st_ino))
        for fd in os.listdir(fds):
            try:
                st = os.stat(os.path.join(fds, fd))
            except OSError:
                continue
            want.discard((st.st_dev, st.st_ino))
        return not want

    it.wait_for(held, 60, "lugger to open every s-N.log", proc=lug,
                interval=0.01)


def part_order():
    with it.WorkDir("rotation_lanes") as wd:
        out = wd.p("out.jsonl")
        conf = it.simple_config(
            wd, [os.path.join(wd.logs, "*.log")], out,
            settings={"workers": 2, "script_timeout": "30s"},
            source={"multiline": {"continue": "^\\s", "timeout": "3s"}},
            scripts=["slow.lua"], script_files={"slow.lua": SCRIPT})
        state = {}
        for sid in range(NSTREAMS):
            write_stream(wd, sid, 0, True, state)
        recs = []
        follower = it.JsonlFollower(out, on_record=recs.append)
        with it.Lugger(conf) as lug:
            lug.wait_started()
            for g in range(1, GENERATIONS + 1):
                # Let lugger read this generation (each trace stays an open
                # group), then rotate every stream.
                time.sleep(0.3)
                wait_opened(lug, wd)
                for sid in range(NSTREAMS):
                    p = os.path.join(wd.logs, "s-%d.log" % sid)
                    os.replace(p, p + ".1")
                    write_stream(wd, sid, g, g < GENERATIONS, state)
            total = sum(state.values())
            it.wait_for(lambda: follower.poll() >= 0 and len(recs) >= total,
                        60, "%d records" % total, proc=lug,
                        detail=lambda: "%d delivered; %s" % (len(recs),
                                                         progress(recs)))
            time.sleep(0.5)
            follower.poll()
            lug.stop()
        check_order(recs, state)
        it.log("order: %d streams x %d rotations, %d records in order per "
               "stream with workers = 2" % (NSTREAMS, GENERATIONS, len(recs)))
        return len(recs)


def part_latency():
    with it.WorkDir("rotation_latency") as wd:
        out = wd.p("out.jsonl")
        conf = it.simple_config(
            wd, [os.path.join(wd.logs, "*.log")], out,
            settings={"workers": 2},
            source={"multiline": "java"})
        state = {}
        for sid in range(NSTREAMS):
            write_stream(wd, sid, 0, True, state)
        recs = []
        follower = it.JsonlFollower(out, on_record=recs.append)
        with it.Lugger(conf) as lug:
            lug.wait_started()
            time.sleep(0.5)
            for g in range(1, ROT_COUNT + 1):
                wait_opened(lug, wd)
                for sid in range(NSTREAMS):
                    p = os.path.join(wd.logs, "s-%d.log" % sid)
                    os.replace(p, p + ".1")
                    write_stream(wd, sid, g, True, state)
                time.sleep(ROT_EVERY_S)
            t_last = time.monotonic()
            total = sum(state.values())
            it.wait_for(lambda: follower.poll() >= 0 and len(recs) >= total,
                        30, "%d records" % total, proc=lug, interval=0.01,
                        detail=lambda: "%d delivered; %s" % (len(recs),
                                                         progress(recs)))
            delay = time.monotonic() - t_last
            time.sleep(0.3)
            follower.poll()
            lug.stop()
        check_order(recs, state)
        it.log("latency: %d streams rotated %d times every %.2f s: all %d "
               "records delivered %.2f s after the last write (bound %.1f s)"
               % (NSTREAMS, ROT_COUNT, ROT_EVERY_S, len(recs), delay,
                  LATENCY_BOUND_S))
        it.check(delay <= LATENCY_BOUND_S,
                 "delivered %.2f s after the last write (bound %.1f s): "
                 "rotation makes the stream fall behind" % (
                     delay, LATENCY_BOUND_S))
        return delay


def run():
    it.require_binary()
    n = part_order()
    delay = part_latency()
    return ("%d records of %d streams in order across rotations with "
            "workers = 2; fast rotation delivered %.2f s after the last "
            "write" % (n, NSTREAMS, delay))


if __name__ == "__main__":
    it.main("rotation_lanes", run)
