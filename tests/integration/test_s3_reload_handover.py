#!/usr/bin/env python3
"""The failure paths of the hand-over of an s3 output's requests of the
last run at a reload that re-creates it (lg_output_hand_over; the paths
that work are it.test_s3_crash_reload's "changed" and "changed-held").
Every part starts from a kill -9 set up as test_s3_crash_rotated's steps
(checked there): the journal of output `out` holds R0 (b.log's first 50
lines) and R1 (100 lines of a.log and b.log's next 100).

Part "rejected": R0 held unanswered at the kill, R1 answered (a.log acked
to its end, then rotated to a.log.1). The restart has `out` with a source
`rot` (a.log*) only: R0 and R1 wait for b.log's records. A reload changes
`out`, adds a source `b` for b.log and a file output `zz` whose path is a
directory: `out` (first by name) is created, then `zz` fails and
the reload is rejected. Before: the new `out` had taken R0 and R1 over at
its creation and, unused, was closed, giving them up (their entries
dropped): the next reload's `out` sent b.log's records as new objects, R1's
100 lines a second time. Checked: the rejection logged with the output's
name and reason, nothing taken over by it; a second reload without `zz`
takes R0 and R1 over, b.log acked within 20 s, R1 made again from its 100
records (nothing given up), every line in exactly one object.

Part "state-dir": as "rejected" without `zz`, the reload also changing
settings.state_dir (which takes effect after a restart). Before: the new
`out` kept its request journal in the new directory, not the one the old
`out` shares, so it took nothing over; the old one gave R0 and R1 up at
its close, and b.log's records went out as new objects, R1's 100 lines a
second time. Checked: the change warned about, R0 and R1 taken over,
nothing written to the new directory, b.log acked within 20 s, every line
in exactly one object.

Part "key-changed": as "state-dir", the reload changing `key` (one
object per request then and now). Before: the note of R1's object, found
by its key template, was not found: R1's 100 b.log lines, made again
partly, were uploaded under a new key, a second copy of the object R1
wrote before the crash. Checked: R0 and R1 taken over, R1 made again from
its 100 records, R0's object under its old key, b.log acked within 20 s,
every line in exactly one object.

Part "sigterm-sending": as "rejected" without `zz`; the stand-in passes
R0's PutObject, made again by the new `out`, on to s3rver at once but
holds the answer for 60 s; the SIGTERM goes once s3rver has written the
object (counted by the stand-in), so lugger stops while that request is
in flight, the hand-over done. The stop gives up what is in flight after
shutdown_timeout (2 s), unacked. The next start makes R0 again (its entry
kept) and its PUT overwrites its key. Checked: exactly one PUT of R0's
key answered before the stop, b.log at 0 after it, then every line in
exactly one object and b.log acked after the restart.

Part "sigterm-waiting": R0 and R1 both held unanswered at the kill (R1:
a.log's 100 lines and b.log's next 100). The restart has `out` with `b`
only: R0 is made again, R1 holds b.log's 100 records and waits for
a.log's. A reload changes `out` only: the new `out` takes R1 over with
the 100 records (the old one acks them once the new one has). SIGTERM
then: R1 waits for records not read in this process; they stay unacked
and R1 journaled, and the drain does not wait for them (no shutdown
timeout). The restart with a source for a.log too
makes R1 again whole. Checked: the hand-over logged, the stop
without a shutdown timeout, R1 kept, after the restart R1 made again from 200
records, nothing given up, every line in exactly one object.

Part "second-reload": as "sigterm-waiting", but instead of the SIGTERM a
second reload re-creates `out` again while the first new one holds R1's
records, and adds `rot` (a.log): the newest takes R1 and the 100 records
over from the one that took them, and gets a.log's. Checked: two
hand-overs of R1 with its 100 records logged, b.log acked within 20 s
of the second reload, R1 made again whole, nothing given up, every line
in exactly one object.

Part "removed": as "sigterm-waiting", but instead of the SIGTERM a reload
removes `out` (b.log into a file output) while the new one holds R1's
records: it gives R1 up at its close (R1 wrote nothing before the crash)
and sends the 100 records as new ones; the old one acks them once it has.
Checked: the give-up logged with its reason and the 100 records, b.log
acked within 20 s, every line of b.log in exactly one object.
"""

import os
import time

import lugger_it as it
from test_s3_crash_reload import (changed_configs, check_r1_whole, held_case,
                                  restart_config)
from test_s3_crash_rotated import (LINE_LEN, Crash, S3Case,
                                   check_after, check_once, entry, journal,
                                   lines, logged, s3_output)

# The restarts' stop: what is in flight is given up after this.
SHUTDOWN = {"shutdown_timeout": "2s"}


def wait_logged(lug, text, timeout, what):
    it.wait_for(lambda: logged(lug, text), timeout, what, proc=lug,
                detail=lug.stderr_tail)


def start_rotated(k):
    """The kill -9 of part "rejected" (Crash "rotated", no new a.log), then
    lugger on `out` with `rot` only, a.log.1 opened at its checkpoint.
    Returns the Crash."""
    wd, peers = k.wd, k.peers
    conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log*")],
                            output=s3_output(peers))
    c = Crash(wd, peers, conf, "rotated", refill=False)
    k.lug = lug = it.Lugger(changed_configs(wd, peers, False))
    lug.wait_started()
    wait_logged(lug, "a.log.1: following it at its checkpoint", 30,
                "a.log.1 opened at its checkpoint")
    return c


def part_rejected():
    with S3Case("s3ho-rejected") as k:
        wd, peers = k.wd, k.peers
        c = start_rotated(k)
        lug = k.lug
        # `out` changed, `b` added, and `zz`: a file output whose path is a
        # directory (its open fails when the reload creates it; outputs
        # are created in name order, `out` first).
        srcs = {"rot": "a.log*", "b": "b.log"}
        it.write_config(
            wd.p("rejected.lua"),
            {"state_dir": wd.state, "memory_budget": "16MiB", "workers": 2,
             "checkpoint_interval": "200ms", "rescan_interval": "1s"},
            {n: {"type": "file", "read_from": "head", "format": "line",
                 "paths": [os.path.join(wd.logs, pat)]}
             for n, pat in srcs.items()},
            {"to_s3": {"sources": list(srcs), "outputs": ["out", "zz"]}},
            {"out": s3_output(peers, max_in_flight=3),
             "zz": {"type": "file", "path": wd.mk("zz.jsonl")}})
        os.rename(wd.p("rejected.lua"), lug.config)
        wait_logged(lug, "reload failed", 30, "the reload to be rejected")
        why = logged(lug, "reload failed")
        it.check(len(why) == 1 and "outputs.zz" in why[0] and
                 "Is a directory" in why[0],
                 "the rejection does not name output zz and why: %r"
                 % (why,))
        took = logged(lug, "took over")
        it.check(not took, "a rejected reload took requests over: %r"
                 % (took,))
        time.sleep(0.5)
        it.check(not c.b_acked(), "b.log read by a rejected reload")
        it.check(len(journal(wd.state)) == 2, "the journal after the "
                 "rejected reload: %r" % (journal(wd.state),))
        t0 = time.monotonic()
        changed_configs(wd, peers, True)
        it.wait_for(lambda: len(logged(lug, "output out: added by a "
                                       "reload")) == 2, 30,
                    "the second reload to re-create output out",
                    proc=lug, detail=lug.stderr_tail)
        it.wait_for(c.b_acked, 20, "b.log's checkpoint at its end after "
                    "the second reload", proc=lug, detail=lug.stderr_tail)
        took = time.monotonic() - t0
        it.check(logged(lug, "took over 2 request(s) of the last run"),
                 "the second reload's output did not take R0 and R1 over")
        lug.stop()
        n = check_after(lug, peers, c.want)
        return ("rejected: the rejection named output zz; b.log acked "
                "%.1f s after the next reload, %d lines each in one object"
                % (took, n))


def part_state_dir():
    with S3Case("s3ho-state-dir") as k:
        wd, peers = k.wd, k.peers
        c = start_rotated(k)
        lug = k.lug
        # `out` changed, `b` added, and another state_dir.
        srcs = {"rot": "a.log*", "b": "b.log"}
        restart_config(wd, peers, srcs, {"to_s3": (list(srcs), ["out"])},
                       {"max_in_flight": 3}, state_dir=wd.mk("state2"))
        t0 = time.monotonic()
        wait_logged(lug, "output out: added by a reload", 30,
                    "the reload to re-create output out")
        it.wait_for(c.b_acked, 20, "b.log's checkpoint at its end after "
                    "the reload", proc=lug, detail=lug.stderr_tail)
        took = time.monotonic() - t0
        it.check(logged(lug, "settings.state_dir changed: it takes effect "
                        "after a restart"), "the state_dir change not "
                 "warned about")
        it.check(logged(lug, "took over 2 request(s) of the last run"),
                 "the new output did not take R0 and R1 over")
        it.check(not os.listdir(wd.p("state2")), "written to the new "
                 "state_dir before a restart: %r"
                 % (os.listdir(wd.p("state2")),))
        lug.stop()
        n = check_after(lug, peers, c.want)
        return ("state-dir: b.log acked %.1f s after the reload, %d lines "
                "each in one object" % (took, n))


def part_key_changed():
    with S3Case("s3ho-key") as k:
        wd, peers = k.wd, k.peers
        c = start_rotated(k)
        lug = k.lug
        before = {key for key, _ in peers.list()}
        srcs = {"rot": "a.log*", "b": "b.log"}
        restart_config(wd, peers, srcs, {"to_s3": (list(srcs), ["out"])},
                       {"max_in_flight": 3, "key": "new/{id}.json.gz"})
        t0 = time.monotonic()
        wait_logged(lug, "output out: added by a reload", 30,
                    "the reload to re-create output out")
        it.wait_for(c.b_acked, 20, "b.log's checkpoint at its end after "
                    "the reload", proc=lug, detail=lug.stderr_tail)
        took = time.monotonic() - t0
        it.check(logged(lug, "took over 2 request(s) of the last run"),
                 "the new output did not take R0 and R1 over")
        lug.stop()
        n = check_after(lug, peers, c.want)
        made = sorted({key for key, _ in peers.list()} - before)
        it.check(len(made) == 1 and made[0].startswith("rot/"),
                 "R0 not made again under its old key: %r" % (made,))
        return ("key-changed: b.log acked %.1f s after the reload, R0 "
                "under its old key, %d lines each in one object" % (took, n))


def part_sigterm_sending():
    with S3Case("s3ho-sending") as k:
        wd, peers = k.wd, k.peers
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log*")],
                                output=s3_output(peers))
        c = Crash(wd, peers, conf, "rotated", refill=False)
        k.lug = lug = it.Lugger(restart_config(
            wd, peers, {"rot": "a.log*"}, {"to_s3": (["rot"], ["out"])},
            {"max_in_flight": 4}, **SHUTDOWN))
        lug.wait_started()
        wait_logged(lug, "a.log.1: following it at its checkpoint", 30,
                    "a.log.1 opened at its checkpoint")
        before = {key for key, _ in peers.list()}
        peers.delay(1, 60000)
        srcs = {"rot": "a.log*", "b": "b.log"}
        restart_config(wd, peers, srcs, {"to_s3": (list(srcs), ["out"])},
                       {"max_in_flight": 3}, **SHUTDOWN)
        wait_logged(lug, "took over 2 request(s) of the last run", 30,
                    "the new output to take R0 and R1 over")
        # R0's object written by s3rver, its answer not given yet.
        it.wait_for(lambda: peers.counts()["delayed"] == 1, 20,
                    "R0's PutObject written, its answer held", proc=lug,
                    detail=lug.stderr_tail)
        written = {key for key, _ in peers.list()} - before
        it.check(len(written) == 1, "objects written while R0's answer is "
                 "held: %r" % (written,))
        it.check(not c.b_acked(), "b.log acked before R0's answer")
        took = lug.stop()
        ent = entry(wd.state, c.idb)
        it.check(ent is not None and ent["offset"] == 0,
                 "b.log's checkpoint moved past R0, never answered: %r"
                 % (ent,))
        kept = journal(wd.state)
        it.check(len(kept) == 2, "R0 and R1 not kept journaled at the "
                 "stop: %r" % (kept,))
        k.lug = lug = it.Lugger(lug.config)
        lug.wait_started()
        it.wait_for(c.b_acked, 20, "b.log's checkpoint at its end after "
                    "the restart", proc=lug, detail=lug.stderr_tail)
        lug.stop()
        after = {key for key, _ in peers.list()} - before
        it.check(after == written, "R0 made again under another key: %r, "
                 "was %r" % (after, written))
        n = check_after(lug, peers, c.want)
        return ("sigterm-sending: stopped in %.1f s with R0's object "
                "written and unanswered; made again under its key after "
                "the restart, %d lines each in one object" % (took, n))


def held_configs(wd, peers, version, with_a):
    """`b` (b.log), with_a: also `rot` (a.log), into the s3 output `out`,
    its config `version` (max_in_flight 4 - version)."""
    srcs = {"b": "b.log", "rot": "a.log"} if with_a else {"b": "b.log"}
    return restart_config(wd, peers, srcs, {"to_s3": (list(srcs), ["out"])},
                          {"max_in_flight": 4 - version}, **SHUTDOWN)


HANDED = ("took over 1 request(s) of the last run that the output it "
          "replaces waited for, and the 100 record(s)")


def part_sigterm_waiting():
    with S3Case("s3ho-waiting") as k:
        wd, peers = k.wd, k.peers
        want, b, b_at, idb = held_case(
            k, lambda: held_configs(k.wd, k.peers, 0, False))
        lug = k.lug
        held_configs(wd, peers, 1, False)
        wait_logged(lug, HANDED, 30, "the new output to take R1 over with "
                    "its 100 records")
        took = lug.stop()
        it.check(logged(lug, "drained but for") and
                 not logged(lug, "shutdown timeout"),
                 "the stop waited for R1's records until shutdown_timeout")
        kept = logged(lug, "kept unacked")
        it.check(kept and "100 record(s)" in kept[0],
                 "R1's 100 records not kept for the next start: %r"
                 % (kept,))
        ent = entry(wd.state, idb)
        it.check(ent is not None and ent["offset"] <= 50 * LINE_LEN,
                 "b.log's checkpoint moved past R1's records: %r" % (ent,))
        it.check(any(sum(r[3] for r in q["runs"]) == 200
                     for q in journal(wd.state)),
                 "R1 not kept journaled: %r" % (journal(wd.state),))
        k.lug = lug = it.Lugger(held_configs(wd, peers, 1, True))
        lug.wait_started()
        it.wait_for(lambda: b_at(os.path.getsize(b)), 20, "b.log's "
                    "checkpoint at its end after the restart", proc=lug,
                    detail=lug.stderr_tail)
        lug.stop()
        check_r1_whole(lug)
        n = check_once(peers, want)
        return ("sigterm-waiting: stopped in %.1f s with R1 taken over and "
                "waiting; made again whole after the restart, %d lines "
                "each in one object" % (took, n))


def part_second_reload():
    with S3Case("s3ho-second") as k:
        wd, peers = k.wd, k.peers
        want, b, b_at, idb = held_case(
            k, lambda: held_configs(k.wd, k.peers, 0, False))
        lug = k.lug
        held_configs(wd, peers, 1, False)
        wait_logged(lug, HANDED, 30, "the first new output to take R1 "
                    "over with its 100 records")
        t0 = time.monotonic()
        held_configs(wd, peers, 2, True)
        it.wait_for(lambda: len(logged(lug, HANDED)) == 2, 30,
                    "the second new output to take R1 over with its 100 "
                    "records", proc=lug, detail=lug.stderr_tail)
        it.wait_for(lambda: b_at(os.path.getsize(b)), 20, "b.log's "
                    "checkpoint at its end after the second reload",
                    proc=lug, detail=lug.stderr_tail)
        took = time.monotonic() - t0
        lug.stop()
        check_r1_whole(lug)
        n = check_once(peers, want)
        return ("second-reload: b.log acked %.1f s after the second reload, "
                "%d lines each in one object" % (took, n))


def part_removed():
    with S3Case("s3ho-removed") as k:
        wd, peers = k.wd, k.peers
        _, b, b_at, _ = held_case(
            k, lambda: held_configs(k.wd, k.peers, 0, False))
        lug = k.lug
        held_configs(wd, peers, 1, False)
        wait_logged(lug, HANDED, 30, "the new output to take R1 over with "
                    "its 100 records")
        # `out` removed: `b` into a file output.
        restart_config(wd, peers, {"b": "b.log"},
                       {"main": (["b"], ["file"])}, **SHUTDOWN)
        wait_logged(lug, "output out: removed by a reload", 30,
                    "the reload to remove output out")
        it.wait_for(lambda: b_at(os.path.getsize(b)), 20, "b.log's "
                    "checkpoint at its end after the reload", proc=lug,
                    detail=lug.stderr_tail)
        lug.stop()
        gave_up = logged(lug, "could not rebuild")
        it.check(len(gave_up) == 1 and "(closing)" in gave_up[0] and
                 "100 record(s)" in gave_up[0],
                 "R1 not given up with its 100 records at the close: %r"
                 % (gave_up,))
        # a.log was not read again: R1's a.log lines are nowhere, b.log's
        # each in one object.
        want = {it.make_line(1, q, LINE_LEN)[:-1].decode()
                for q in range(150)}
        n = check_once(peers, want)
        return ("removed: R1 given up at the close of the output that took "
                "it over, %d lines each in one object" % n)


def main():
    it.require_binary()
    return "; ".join((part_rejected(), part_state_dir(), part_key_changed(),
                      part_sigterm_sending(),
                      part_sigterm_waiting(), part_second_reload(),
                      part_removed()))


if __name__ == "__main__":
    it.main("test_s3_reload_handover", main)
