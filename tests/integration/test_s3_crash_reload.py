#!/usr/bin/env python3
"""The s3 output added by a reload after a kill -9: its requests of the
last run are made again as promptly as those of an output there from the
start (test_s3_crash_rotated's case, with the output created later).

1. test_s3_crash_rotated's steps 1-3, part "rotated" (no new a.log): at
   the kill the journal of output `out` holds R0 (b.log's first 50 lines,
   never answered) and R1 (a.log's 100 lines, acked to a.log's end, and
   b.log's next 100, not acked); a.log was renamed to a.log.1.
2. Restart with a config without `out`: source `rot` reads a.log* (so
   a.log.1 is opened at its checkpoint, its end) into a file output.
3. A reload adds `out` back (the journal of the last run is its) and a
   source `b` for b.log routed to it. b.log's records come again; a.log.1
   resumed before `out` existed, and no record of it comes.
Checked: b.log's checkpoint reaches its end within 20 s of the reload
(an output created by the reload that is not told where a.log.1 resumed
waits REBUILD_WAIT_MS, 30 s, for R1's a.log records, then gives R1 up and
sends b.log's records again: a second copy), R1 made again from the 100
records that came, nothing given up, and every line of a.log and b.log in
exactly one object.

Part "changed": a reload changes an output whose requests of the last
run wait. At the restart `out` is there with a source `rot` (a.log*)
only: a.log.1 resumes at its end, R0 and R1 wait for b.log's records. A
reload changes `out` (max_in_flight; the keys stay) and adds a source `b`
for b.log routed to it. The new `out` takes R0 and R1 over (before: the
old one, closing, gave them up, and b.log's records went out as new ones,
R1's a second copy). Checked: the take-over logged, b.log's checkpoint at
its end within 20 s of the reload, R1 made again from b.log's records
(nothing given up), every line in exactly one object.

Part "changed-held": the records a waiting request holds at such a
reload. Both requests of the kill are held unanswered: R0 (b.log's 50)
and R1 (a.log's 100, new, and b.log's next 100). The restart has `out`
with a source `b` only: R0 is made again, R1 holds b.log's 100 and waits
for a.log's. A reload changes `out` and adds `rot` (a.log) routed to it.
The new `out` takes R1 over with the 100 records the old one holds
(encoded again by it; the old one acks them once it acked them) and gets
a.log's: R1 is made again whole (before: given up at the old one's
close, its 100 records sent anew). Checked: the take-over of R1 and its
100 records logged, b.log's checkpoint at its end within 20 s of the
reload, R1 made again whole from 200 records, nothing given up, every
line in exactly one object.

Part "short": as part "added", with a.log under 1 KiB when R1 took its 5
lines (journaled under the fingerprint of those 500 bytes) and grown to
2,500 bytes while lugger was down; it is not rotated. At the restart `rot`
opens a.log at its checkpoint (500) under its 1 KiB fingerprint, and
closes it as idle (close_inactive 1s) before the reload. The `out` the
reload adds is told the hashes of a.log's prefixes now, read again
(before: only outputs there when a file was opened were, so R1 waited
30 s for a.log's records under the short fingerprint, then gave up and
sent b.log's records again: a second copy), then where a.log resumed: R1
is made again at once. Checked as part "added". Part "short-grown-after":
the same with a.log grown after the restart instead (opened at 500 bytes
under the short fingerprint, its fingerprint now the 1 KiB one).

Part "read-before": a reload adds an output one of whose requests of the
last run holds records read before the reload. At the kill -9 the journal
of `out` holds R (c.log's and d.log's 50 lines each, held unanswered by
the stand-in). The restart has no `out`: a source `c` reads c.log into a
file output. A reload adds `out` and a source `d` for d.log routed to it.
R can never get c.log's records (read before `out` existed): it is given
up at once, and d.log's records go out as new ones (R wrote nothing).
Checked: d.log's checkpoint at its end within 15 s of the reload (before:
R held d.log's records until its 30 s limit), the log says why R was not
made again, nothing given up with records, and every line of d.log in
exactly one object (c.log's in none).
"""

import os
import time

import lugger_it as it
from test_s3_crash_rotated import (LINE_LEN, Crash, S3Case, append,
                                   check_after, check_once, entry, journal,
                                   lines, logged, s3_output)


def restart_config(wd, peers, sources, pipes, out=None, **settings):
    """Writes the restart's config (replaced whole: the reload watcher sees
    one change) and returns its path: `sources` {name: file pattern in
    wd.logs}, each read from its head as lines; `pipes` {name: (sources,
    outputs)}; the file output `file` when a pipe uses it; with `out`
    (s3_output options) the s3 output `out`; `settings` added to the
    test's."""
    s = {"state_dir": wd.state, "memory_budget": "16MiB", "workers": 2,
         "checkpoint_interval": "200ms", "rescan_interval": "1s"}
    s.update(settings)
    src = {n: {"type": "file", "read_from": "head", "format": "line",
               "paths": [os.path.join(wd.logs, pat)]}
           for n, pat in sources.items()}
    pl = {n: {"sources": list(si), "outputs": list(so)}
          for n, (si, so) in pipes.items()}
    outs = {}
    if any("file" in so for _, so in pipes.values()):
        outs["file"] = {"type": "file", "path": wd.p("file.jsonl"),
                        "fsync": "never"}
    if out is not None:
        outs["out"] = s3_output(peers, **out)
    tmp = wd.p("restart.lua.tmp")
    it.write_config(tmp, s, src, pl, outs)
    os.rename(tmp, wd.p("restart.lua"))
    return wd.p("restart.lua")


def configs(wd, peers, with_out, **settings):
    """The restart's config: `rot` (a.log*) into a file output; with_out:
    also `b` (b.log) into the s3 output `out`."""
    if not with_out:
        return restart_config(wd, peers, {"rot": "a.log*"},
                              {"main": (["rot"], ["file"])}, **settings)
    return restart_config(wd, peers, {"rot": "a.log*", "b": "b.log"},
                          {"main": (["rot"], ["file"]),
                           "to_s3": (["b"], ["out"])}, {}, **settings)


def changed_configs(wd, peers, changed):
    """Part "changed": `rot` (a.log*) into the s3 output `out`; `changed`:
    `out` with another max_in_flight, and `b` (b.log) into it too."""
    srcs = {"rot": "a.log*", "b": "b.log"} if changed else {"rot": "a.log*"}
    return restart_config(wd, peers, srcs, {"to_s3": (list(srcs), ["out"])},
                          {"max_in_flight": 3 if changed else 4})


def part_changed():
    with S3Case("s3rot-changed") as k:
        wd, peers = k.wd, k.peers
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log*")],
                                output=s3_output(peers))
        c = Crash(wd, peers, conf, "rotated", refill=False)
        k.lug = lug = it.Lugger(changed_configs(wd, peers, False))
        lug.wait_started()
        it.wait_for(lambda: logged(lug, "a.log.1: following it at its "
                                   "checkpoint"), 30,
                    "a.log.1 opened at its checkpoint", proc=lug,
                    detail=lug.stderr_tail)
        time.sleep(0.5)
        it.check(not logged(lug, "rebuilt a request"),
                 "a request made again without b.log's records")
        t0 = time.monotonic()
        changed_configs(wd, peers, True)
        it.wait_for(lambda: logged(lug, "output out: added by a reload"), 30,
                    "the reload to re-create output out", proc=lug,
                    detail=lug.stderr_tail)
        it.wait_for(c.b_acked, 20, "b.log's checkpoint at its end after "
                    "the reload", proc=lug, detail=lug.stderr_tail)
        took = time.monotonic() - t0
        it.check(logged(lug, "took over 2 request(s) of the last run"),
                 "the new output did not take over R0 and R1")
        lug.stop()
        n = check_after(lug, peers, c.want)
        return ("changed: b.log acked %.1f s after the reload re-created "
                "the output, %d lines each in one object" % (took, n))


def before_configs(wd, peers, with_out):
    """Part "read-before": `c` (c.log) into a file output; with_out: also
    `d` (d.log) into the s3 output `out`."""
    if not with_out:
        return restart_config(wd, peers, {"c": "c.log"},
                              {"main": (["c"], ["file"])})
    return restart_config(wd, peers, {"c": "c.log", "d": "d.log"},
                          {"main": (["c"], ["file"]),
                           "to_s3": (["d"], ["out"])}, {})


def part_read_before():
    with S3Case("s3rot-before") as k:
        wd, peers = k.wd, k.peers
        c, d = (os.path.join(wd.logs, n) for n in ("c.log", "d.log"))
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")],
                                output=s3_output(peers))
        peers.hold(1)
        lug = it.Lugger(conf)
        try:
            lug.wait_started()
            with open(c, "ab") as f:
                f.write(lines(3, 0, 50))
            with open(d, "ab") as f:
                f.write(lines(4, 0, 50))
            it.wait_for(lambda: peers.counts()["held"] == 1, 30,
                        "the stand-in to hold the request", proc=lug)
        finally:
            lug.kill9()
        reqs = journal(wd.state)
        it.check(len(reqs) == 1 and len({r[0] for r in reqs[0]["runs"]}) == 2
                 and sum(r[3] for r in reqs[0]["runs"]) == 100,
                 "the journal at the kill does not hold one request of "
                 "c.log's and d.log's 50 lines: %r" % (reqs,))
        idc, idd = ((os.stat(x).st_dev, os.stat(x).st_ino) for x in (c, d))

        def at_end(dev_ino, path):
            e = entry(wd.state, dev_ino)
            return e is not None and e["offset"] == os.path.getsize(path)

        k.lug = lug = it.Lugger(before_configs(wd, peers, False))
        lug.wait_started()
        it.wait_for(lambda: at_end(idc, c), 20, "c.log's checkpoint at its "
                    "end", proc=lug, detail=lug.stderr_tail)
        t0 = time.monotonic()
        before_configs(wd, peers, True)
        it.wait_for(lambda: logged(lug, "output out: added by a reload"), 30,
                    "the reload to add output out", proc=lug,
                    detail=lug.stderr_tail)
        it.wait_for(lambda: at_end(idd, d), 15, "d.log's checkpoint at its "
                    "end after the reload (the request of the last run "
                    "holds its records, waiting for c.log's?)", proc=lug,
                    detail=lug.stderr_tail)
        took = time.monotonic() - t0
        lug.stop()
        why = logged(lug, "some of its records were read before a reload")
        it.check(len(why) == 1, "R not given up for c.log's records read "
                 "before the reload: %r" % (why,))
        gave_up = logged(lug, "could not rebuild")
        it.check(not gave_up, "records given up: %r" % (gave_up,))
        want = {it.make_line(4, q, LINE_LEN)[:-1].decode()
                for q in range(50)}
        n = check_once(peers, want)
        return ("read-before: d.log acked %.1f s after the reload added the "
                "output, %d lines each in one object" % (took, n))


def held_configs(wd, peers, changed):
    """Part "changed-held": `b` (b.log) into the s3 output `out`;
    `changed`: `out` with another max_in_flight, and `rot` (a.log) into
    it too."""
    srcs = {"b": "b.log", "rot": "a.log"} if changed else {"b": "b.log"}
    return restart_config(wd, peers, srcs, {"to_s3": (list(srcs), ["out"])},
                          {"max_in_flight": 3 if changed else 4})


def held_case(k, restart):
    """The kill -9 with R0 (b.log's first 50 lines) and R1 (100 lines of
    a.log and 100 of b.log) journaled, and the restart with the config
    `restart()` writes (`b` only, into `out`): R0 made again and R1
    waiting, holding b.log's 100 records. Sets k.lug; returns (want,
    b.log's path, b_at(offset): b.log's checkpoint is at offset, b.log's
    (dev, ino))."""
    wd, peers = k.wd, k.peers
    a, b = (os.path.join(wd.logs, n) for n in ("a.log", "b.log"))
    conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")],
                            output=s3_output(peers))
    want = set()

    def add(path, fid, first, n):
        append(path, lines(fid, first, n))
        want.update(it.make_line(fid, q, LINE_LEN)[:-1].decode()
                    for q in range(first, first + n))

    add(b, 1, 0, 50)
    peers.hold(2)
    lug = it.Lugger(conf)
    try:
        lug.wait_started()
        it.wait_for(lambda: peers.counts()["held"] == 1, 30,
                    "the stand-in to hold R0", proc=lug)
        add(a + ".new", 0, 0, 100)
        os.rename(a + ".new", a)
        add(b, 1, 50, 100)
        it.wait_for(lambda: peers.counts()["held"] == 2, 30,
                    "the stand-in to hold R1", proc=lug)
    finally:
        lug.kill9()
    reqs = journal(wd.state)
    it.check(len(reqs) == 2 and sorted(sum(r[3] for r in q["runs"])
                                       for q in reqs) == [50, 200],
             "the journal at the kill does not hold R0 and R1: %r" % (reqs,))
    idb = (os.stat(b).st_dev, os.stat(b).st_ino)

    def b_at(off):
        e = entry(wd.state, idb)
        return e is not None and e["offset"] == off

    k.lug = lug = it.Lugger(restart())
    lug.wait_started()
    it.wait_for(lambda: logged(lug, "rebuilt a request"), 20,
                "R0 made again", proc=lug, detail=lug.stderr_tail)
    time.sleep(0.5)
    it.check(not b_at(os.path.getsize(b)) and
             len(logged(lug, "rebuilt a request")) == 1,
             "R1 did not wait holding b.log's records")
    return want, b, b_at, idb


def check_r1_whole(lug):
    """No request given up, and R1 made again whole (its 200 records)."""
    gave_up = logged(lug, "could not rebuild")
    it.check(not gave_up, "requests given up: %r" % (gave_up,))
    whole = [m for m in logged(lug, "rebuilt a request")
             if " 200 record(s)" in m and "answered" not in m]
    it.check(len(whole) == 1, "R1 not made again whole: %r"
             % (logged(lug, "rebuilt a request"),))


def part_changed_held():
    with S3Case("s3rot-held") as k:
        wd, peers = k.wd, k.peers
        want, b, b_at, _ = held_case(
            k, lambda: held_configs(wd, peers, False))
        lug = k.lug
        t0 = time.monotonic()
        held_configs(wd, peers, True)
        it.wait_for(lambda: logged(lug, "output out: added by a reload"), 30,
                    "the reload to re-create output out", proc=lug,
                    detail=lug.stderr_tail)
        it.wait_for(lambda: b_at(os.path.getsize(b)), 20, "b.log's "
                    "checkpoint at its end after the reload", proc=lug,
                    detail=lug.stderr_tail)
        took = time.monotonic() - t0
        it.check(logged(lug, "took over 1 request(s) of the last run that "
                        "the output it replaces waited for, and the 100 "
                        "record(s)"),
                 "the new output did not take over R1 with its 100 records")
        lug.stop()
        check_r1_whole(lug)
        n = check_once(peers, want)
        return ("changed-held: b.log acked %.1f s after the reload "
                "re-created the output, %d lines each in one object"
                % (took, n))


def open_in(pid, path):
    """True if process `pid` holds `path` open."""
    fds = "/proc/%d/fd" % pid
    for fd in os.listdir(fds):
        try:
            if os.readlink(os.path.join(fds, fd)) == path:
                return True
        except OSError:
            pass
    return False


def part_added(short, grown_after=False):
    """Part "added" (short False) or "short" (`grown_after`: "short-grown-
    after")."""
    name = "short-grown-after" if grown_after else "short" if short else (
        "added")
    with S3Case("s3rot-" + name) as k:
        wd, peers = k.wd, k.peers
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log*")],
                                output=s3_output(peers))
        if short:
            c = Crash(wd, peers, conf, "short")
            # a.log grows while lugger is down, or after the restart
            # (lines the s3 output does not get).
            if not grown_after:
                append(c.a, lines(0, 5, 20))
            opened = "a.log: following it at its checkpoint (offset %d)" % (
                c.size_a)
        else:
            c = Crash(wd, peers, conf, "rotated", refill=False)
            opened = "a.log.1: following it at its checkpoint"
        # "short": a.log is closed as idle before the reload (a quiet
        # file: the short ones often are).
        idle = {"close_inactive": "1s"} if short else {}
        k.lug = lug = it.Lugger(configs(wd, peers, False, **idle))
        lug.wait_started()
        it.wait_for(lambda: logged(lug, opened), 30, "a.log opened at its "
                    "checkpoint", proc=lug, detail=lug.stderr_tail)
        if grown_after:
            append(c.a, lines(0, 5, 20))
            it.wait_for(lambda: entry(wd.state, c.ida)["offset"] ==
                        os.path.getsize(c.a), 20, "a.log read to its end",
                        proc=lug)
        if short:
            it.wait_for(lambda: not open_in(lug.pid, c.a), 20,
                        "a.log closed as idle", proc=lug)
        it.check(not c.b_acked(), "b.log read without a source for it")
        t0 = time.monotonic()
        configs(wd, peers, True, **idle)
        it.wait_for(lambda: logged(lug, "output out: added by a reload"), 30,
                    "the reload to add output out", proc=lug,
                    detail=lug.stderr_tail)
        it.wait_for(c.b_acked, 20, "b.log's checkpoint at its end after "
                    "the reload (R1 waits for a.log's records, which "
                    "never come?)", proc=lug, detail=lug.stderr_tail)
        took = time.monotonic() - t0
        lug.stop()
        n = check_after(lug, peers, c.want)
        return ("%s: b.log acked %.1f s after the reload added the "
                "output, %d lines each in one object" % (name, took, n))


def main():
    it.require_binary()
    return "; ".join((part_added(False), part_added(True),
                      part_added(True, grown_after=True), part_changed(),
                      part_changed_held(), part_read_before()))


if __name__ == "__main__":
    it.main("test_s3_crash_reload", main)
