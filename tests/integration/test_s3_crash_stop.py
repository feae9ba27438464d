#!/usr/bin/env python3
"""The s3 output: a SIGTERM soon after a kill -9 and restart, while
requests of the last run still wait for records that are not read again
yet. The stop keeps them for the next start (their journal entries stay,
the records they hold stay unacked); it neither gives them up (their
records sent in other objects: a second copy of what they wrote before the
crash) nor waits the shutdown timeout for records that reading, paused for
the stop, cannot bring.

Part "waiting": test_s3_crash_rotated's steps 1-3, part "rotated" (no new
a.log): R0 (b.log's first 50 lines, never answered) and R1 (a.log's 100
lines, acked, and b.log's next 100, written in R1's object) are journaled
at the kill. b.log is moved out of the source's directory, lugger restarted
(a.log.1 resumes at its end; R0 and R1 wait for b.log) and stopped with
SIGTERM. Checked: both entries still journaled after the stop, nothing
given up; b.log moved back, a third start makes R0 again whole and R1
partly, and every line is in exactly one object (giving R1 up at the stop
dropped its entry, and b.log's 100 lines went into a second object).

Part "held": one request R of a.log's 100 lines and b.log's 50 is held by
the stand-in (never answered), then the kill; b.log is moved away and
lugger restarted: R holds a.log's records read again, waiting for b.log's.
Checked: SIGTERM ends lugger (exit 0) well within the shutdown timeout
(10 s: it waited for R's records, then gave R up), R still journaled, and
after b.log is back the next start makes R again whole (150 records) and
every line is in exactly one object.

Part "pending" (no crash): 100 lines wait in the output to fill an object
(max_coalescing_delay 60 s, beyond the 10 s shutdown timeout); SIGTERM
sends them: lugger exits within 5 s (it waited the shutdown timeout and
sent nothing, the lines read again at the next start), the lines are in
one object, the checkpoint at the file's end.
"""

import os
import signal
import time

import lugger_it as it
from test_s3_crash_rotated import (Crash, S3Case, append, check_after,
                                   check_once, check_rebuilt, entry, journal,
                                   lines, logged, s3_output, LINE_LEN)

SHUTDOWN_TIMEOUT_S = 10  # settings.shutdown_timeout's default


def wait_logged(lug, text, what):
    it.wait_for(lambda: logged(lug, text), 30, what, proc=lug,
                detail=lug.stderr_tail)


def check_stop(lug, what):
    """SIGTERM: lugger exits 0 well within the shutdown timeout, having
    given nothing up. Returns the seconds it took."""
    took = lug.stop(sig=signal.SIGTERM, timeout=30)
    it.check(took < SHUTDOWN_TIMEOUT_S / 2,
             "the stop took %.1f s (%s)" % (took, what))
    it.check(not logged(lug, "could not rebuild"),
             "requests given up at the stop: %r"
             % logged(lug, "could not rebuild"))
    return took


def part_waiting():
    with S3Case("s3stop-waiting") as k:
        wd, peers = k.wd, k.peers
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log*")],
                                output=s3_output(peers))
        c = Crash(wd, peers, conf, "rotated", refill=False)
        before = journal(wd.state)
        away = wd.p("b.log.away")
        os.rename(c.b, away)
        k.lug = lug = it.Lugger(conf)
        lug.wait_started()
        wait_logged(lug, "request(s) were in flight",
                    "the journal's requests found")
        wait_logged(lug, "a.log.1: following it at its checkpoint",
                    "a.log.1 resumed")
        took = check_stop(lug, "waited for records the stop keeps from "
                          "being read?")
        after = journal(wd.state)
        it.check(sorted(q["id"] for q in after) ==
                 sorted(q["id"] for q in before),
                 "the stop changed the journal: %r -> %r" % (before, after))
        os.rename(away, c.b)
        k.lug = lug = it.Lugger(conf)
        lug.wait_started()
        it.wait_for(c.b_acked, 20, "b.log's checkpoint at its end",
                    proc=lug, detail=lug.stderr_tail)
        lug.stop()
        n = check_after(lug, peers, c.want)
        return ("waiting: stopped in %.1f s keeping %d requests; then "
                "%d lines each in one object" % (took, len(after), n))


def part_held():
    with S3Case("s3stop-held") as k:
        wd, peers = k.wd, k.peers
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")],
                                output=s3_output(peers))
        a = os.path.join(wd.logs, "a.log")
        b = os.path.join(wd.logs, "b.log")
        want = set()
        for fid, n in ((0, 100), (1, 50)):
            want.update(it.make_line(fid, s, LINE_LEN)[:-1].decode()
                        for s in range(n))
        peers.hold(1)
        k.lug = lug = it.Lugger(conf)
        lug.wait_started()
        # R: both files' lines in one request (4 s coalescing), held.
        append(a + ".new", lines(0, 0, 100))
        append(b + ".new", lines(1, 0, 50))
        os.rename(a + ".new", a)
        os.rename(b + ".new", b)
        it.wait_for(lambda: peers.counts()["held"] == 1, 30,
                    "the stand-in to hold the request", proc=lug)
        reqs = journal(wd.state)
        it.check(len(reqs) == 1 and len(reqs[0]["runs"]) == 2,
                 "not one request of both files journaled: %r" % reqs)
        lug.kill9()
        ida = (os.stat(a).st_dev, os.stat(a).st_ino)
        away = wd.p("b.log.away")
        os.rename(b, away)
        k.lug = lug = it.Lugger(conf)
        lug.wait_started()
        wait_logged(lug, "request(s) were in flight",
                    "the journal's request found")
        wait_logged(lug, "a.log: 100 records read again", "a.log read again")
        time.sleep(0.5)  # its records reach the output and are held
        took = check_stop(lug, "waited for records that the stop keeps "
                          "from being read?")
        it.check(logged(lug, "kept for the next start"),
                 "the stop did not say it kept R's records")
        it.check([q["id"] for q in journal(wd.state)] == [reqs[0]["id"]],
                 "R not kept in the journal: %r" % journal(wd.state))
        e = entry(wd.state, ida)
        it.check(e is None or e["offset"] == 0,
                 "a.log's checkpoint past R's held records: %r" % (e,))
        os.rename(away, b)
        k.lug = lug = it.Lugger(conf)
        lug.wait_started()

        def both_acked():
            return all(
                (entry(wd.state, (os.stat(p).st_dev, os.stat(p).st_ino))
                 or {}).get("offset") == os.path.getsize(p)
                for p in (a, b))

        it.wait_for(both_acked, 20, "both files acked", proc=lug,
                    detail=lug.stderr_tail)
        lug.stop()
        check_rebuilt(lug, 150, False)
        n = check_once(peers, want)
        return ("held: stopped in %.1f s keeping R's records; then %d "
                "lines each in one object" % (took, n))


def part_pending():
    with S3Case("s3stop-pending") as k:
        wd, peers = k.wd, k.peers
        conf = it.simple_config(
            wd, [os.path.join(wd.logs, "*.log")],
            output=s3_output(peers, max_coalescing_delay="60s"))
        a = os.path.join(wd.logs, "a.log")
        append(a, lines(0, 0, 100))
        k.lug = lug = it.Lugger(conf)
        lug.wait_started()
        wait_logged(lug, "a.log: following it", "a.log opened")
        time.sleep(1.0)  # read, waiting in the output to fill an object
        it.check(not peers.list(), "an object before the delay")
        took = check_stop(lug, "records waiting for the 60 s coalescing "
                          "delay not sent by the drain?")
        check_once(peers, set(it.make_line(0, s, LINE_LEN)[:-1].decode()
                              for s in range(100)))
        e = it.checkpoint_offsets(wd.state)
        it.check(list(e.values()) == [os.path.getsize(a)],
                 "checkpoint after the stop: %r" % e)
        return ("pending: stopped in %.1f s with the object waiting for "
                "its 60 s delay written" % took)


def main():
    it.require_binary()
    return "; ".join((part_waiting(), part_held(), part_pending()))


if __name__ == "__main__":
    it.main("test_s3_crash_stop", main)
