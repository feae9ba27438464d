#!/usr/bin/env python3
"""The s3 output: a request answered before a kill -9 whose records of a
rotated file were acked to that file's end, made again after the restart
without waiting (the case it.test_s3_crash_parallel hit now and then).

Set up step by step, each step checked in lugger's state_dir:
1. b.log gets 50 lines; their request (R0) is held by the S3 stand-in
   (the SigV4 verifier in front of s3rver neither passes it on nor answers
   it), so b.log's checkpoint cannot pass them.
2. a.log and b.log get 100 more lines each at once: one request (R1) with
   a run of each file, answered; a.log's records are acked (its checkpoint
   reaches its end), b.log's wait behind R0 (one lane per file).
3. Part "rotated": a.log is rotated by rename to a.log.1 and a new a.log
   gets 50 lines; lugger is killed with SIGKILL 0.1 s later. The request
   journal holds R0 and R1, R1 without a mark of its a.log run as acked
   (nothing was journaled after R1's answer). Part "deleted": c.log's
   request takes that mark to the journal (checked), a.log is deleted and
   its checkpoint entry forgotten, then the kill. Part "deleted-unmarked":
   the same without c.log, so R1's mark is not written before the kill.
4. Restart (nothing held): R0 is made again whole; R1 cannot get its a.log
   records again (a.log.1 resumes at its end and no later record of it
   ever comes; or the file is gone), only b.log's. It must be made again
   at once from those (they are in the object R1 wrote), not wait 30 s for
   records that never come while holding b.log's checkpoint back, then
   give up and send them again as a second copy. "rotated" is told by
   a.log.1 resuming at its checkpoint, "deleted" by the journal's mark,
   "deleted-unmarked" by the checkpoint store's note of where the
   forgotten a.log ended. "deleted-unmarked-aged": the same after a
   downtime of two hours (the store's notes dated so while lugger is
   down, with a second note, of another file, after a.log's): notes count
   their hour from the start that finds them (before: those older than an
   hour were dropped at the load but the last, and R1 waited 30 s).
Checked: b.log's checkpoint reaches its end within 20 s of the restart
(REBUILD_WAIT_MS is 30 s), the log says R1 was made again from the records
that came, nothing was given up, lugger stops on SIGTERM, and every line is
in exactly one object.
"""

import json
import os
import time

import lugger_it as it
from test_s3 import Peers, output
from test_s3_crash import object_bodies

LINE_LEN = 100


def lines(fid, first, n):
    return b"".join(it.make_line(fid, s, LINE_LEN)
                    for s in range(first, first + n))


def append(path, data):
    with open(path, "ab") as f:
        f.write(data)


def journal(state):
    p = os.path.join(state, "requests-out.json")
    if not os.path.exists(p):
        return []
    with open(p) as f:
        return json.load(f)["requests"]


def entry(state, dev_ino):
    for e in it.read_checkpoints(state)["files"]:
        if (e["dev"], e["ino"]) == dev_ino:
            return e
    return None


class Crash:
    """Steps 1-3 of the module's case against `peers`: lugger on `conf`
    (one source reading wd.logs/*.log*, the s3 output `out`) until the
    kill -9, the journal checked at the kill. `variant` "rotated" (a.log
    renamed to a.log.1; `refill`: a new a.log gets 50 lines), "deleted"
    (a.log deleted and forgotten) or "deleted-unmarked" (the same, with no
    journal write after R1's answer). Leaves: a, b (paths), ida, idb (dev,
    ino), fpa, fpb (fingerprints), size_a, want (the lines written).
    Variant "short" (for it.test_s3_crash_reload): a.log gets 5 lines,
    under 1 KiB (its fingerprint is the hash of those 500 bytes), and
    stays; the kill follows its ack."""

    def __init__(self, wd, peers, conf, variant, refill=True):
        self.wd = wd
        self.a = a = os.path.join(wd.logs, "a.log")
        self.b = b = os.path.join(wd.logs, "b.log")
        self.want = set()
        self.add(b, 1, 0, 50)
        self.idb = idb = (os.stat(b).st_dev, os.stat(b).st_ino)
        peers.hold(1)
        lug = it.Lugger(conf)
        try:
            lug.wait_started()
            # 1. R0: b.log's first 50 lines, held.
            it.wait_for(lambda: peers.counts()["held"] == 1, 30,
                        "the stand-in to hold b.log's first request",
                        proc=lug)
            # 2. R1: a run of each file, answered; a.log acked to its end.
            # (a.log is new, renamed in whole: its first bytes, its
            # fingerprint, are all there when lugger opens it.)
            self.add(a + ".new", 0, 0, 5 if variant == "short" else 100)
            os.rename(a + ".new", a)
            self.add(b, 1, 50, 100)
            self.ida = ida = (os.stat(a).st_dev, os.stat(a).st_ino)
            self.size_a = size_a = os.path.getsize(a)

            def a_acked():
                e = entry(wd.state, ida)
                return e is not None and e["offset"] == size_a

            it.wait_for(a_acked, 30, "a.log's checkpoint at its end",
                        proc=lug)
            ent = entry(wd.state, idb)
            it.check(ent is not None and ent["offset"] == 0,
                     "b.log's checkpoint moved past its held request: %r"
                     % (ent,))
            self.fpa = fpa = entry(wd.state, ida)["fingerprint"]
            self.fpb = fpb = ent["fingerprint"]
            if variant == "short":
                pass
            elif variant == "rotated":
                # 3. Rotation, kill -9 right after it.
                os.rename(a, a + ".1")
                if refill:
                    self.add(a, 2, 0, 50)
                time.sleep(0.1)
            else:
                # 3. c.log's request takes R1's mark (a.log's run acked)
                # to the journal ("deleted-unmarked": no request after R1,
                # the mark stays unwritten); a.log is deleted, drained and
                # forgotten (its checkpoint entry goes), then the kill.
                if variant == "deleted":
                    self.add(os.path.join(wd.logs, "c.log"), 3, 0, 50)
                    it.wait_for(lambda: (self.r1() or {}).get("acked"), 30,
                                "a.log's run of R1 marked acked in the "
                                "journal", proc=lug)
                os.remove(a)
                it.wait_for(lambda: entry(wd.state, ida) is None, 30,
                            "a.log's checkpoint entry forgotten", proc=lug)
                if variant.endswith("-aged"):
                    it.wait_for(lambda: any(
                        d[0] == fpa for d in
                        it.read_checkpoints(wd.state).get("done", [])), 30,
                        "a.log's end noted in the checkpoint store",
                        proc=lug)
        finally:
            lug.kill9()
        reqs = journal(wd.state)
        runs = [sorted(r[0] for r in q["runs"]) for q in reqs]
        it.check([fpb] in runs and self.r1() is not None,
                 "the request journal at the kill has not R0 (b.log) "
                 "and R1 (a.log, b.log): %r (a.log %s, b.log %s)"
                 % (reqs, fpa, fpb))
        # Rotated: nothing was journaled after R1 was answered, so only
        # a.log.1 resuming at its checkpoint can tell its run is done.
        marked = self.r1().get("acked")
        it.check(bool(marked) == (variant == "deleted"),
                 "R1's acked runs at the kill: %r" % (marked,))
        it.log("%s: at the kill %d requests journaled, a.log acked to its "
               "end (%d bytes), b.log at 0" % (variant, len(reqs), size_a))

    def add(self, path, fid, first, n):
        append(path, lines(fid, first, n))
        self.want.update(it.make_line(fid, s, LINE_LEN)[:-1].decode()
                         for s in range(first, first + n))

    def r1(self):
        # (a file's records may be in more than one run: read in two
        # batches)
        for q in journal(self.wd.state):
            if {r[0] for r in q["runs"]} == {self.fpa, self.fpb}:
                return q
        return None

    def b_acked(self):
        e = entry(self.wd.state, self.idb)
        return e is not None and e["offset"] == os.path.getsize(self.b)


def logged(lug, text):
    """lugger's log messages that contain `text`."""
    return [str(r.get("msg", "")) for r in lug.log_records()
            if text in str(r.get("msg", ""))]


def check_once(peers, want):
    """Every line of `want` is in exactly one object, and no other line
    is; the verifier saw no bad signature. Returns the number of lines."""
    seen = {}
    for key, _ in peers.list():
        for body in object_bodies(peers.get(key)[0]):
            seen[body] = seen.get(body, 0) + 1
    dups = sum(c - 1 for c in seen.values())
    missing = want - set(seen)
    it.check(not missing, "%d lines in no object, e.g. %r" % (
        len(missing), sorted(missing)[:3]))
    it.check(dups == 0, "%d lines in more than one object" % dups)
    it.check(set(seen) == want, "objects hold lines not written")
    c = peers.counts()
    it.check(c["bad"] == 0, "verifier: %r" % c)
    return len(seen)


def check_rebuilt(lug, n, partly):
    """Nothing given up, and of the requests made again one `partly` (its
    other records acked before the crash) or whole, from `n` records."""
    gave_up = logged(lug, "could not rebuild")
    it.check(not gave_up, "requests given up: %r" % gave_up)
    rebuilt = logged(lug, "rebuilt a request")
    these = [m for m in rebuilt if ("it was answered" in m) == partly]
    it.check(len(these) == 1 and " %d record(s)" % n in these[0],
             "not one request made again %s from %d records: %r"
             % ("partly" if partly else "whole", n, rebuilt))


def check_after(lug, peers, want):
    """After the restart and lugger's stop: R1 made again from b.log's 100
    records at once (nothing given up), and every line of `want` in
    exactly one object. Returns the number of lines."""
    check_rebuilt(lug, 100, True)
    return check_once(peers, want)


class S3Case:
    """A work directory named `name` and the S3 peers in it; `lug` (set by
    the case) is killed and the peers closed at the end."""

    def __init__(self, name):
        self.name = name
        self.lug = None

    def __enter__(self):
        self._wd = it.WorkDir(self.name)
        self.wd = self._wd.__enter__()
        self.peers = Peers(self.wd)
        return self

    def __exit__(self, *a):
        try:
            if self.lug is not None:
                self.lug.kill9()
            self.peers.close()
        finally:
            self._wd.__exit__(*a)


def s3_output(peers, **kw):
    o = dict(key="rot/{id}.json.gz", max_bytes="1MiB",
             max_coalescing_delay="4s", max_in_flight=4)
    o.update(kw)
    return output(peers, **o)


def part(variant):
    """One restart of the case; `variant` "rotated" (a.log renamed to
    a.log.1), "deleted" (a.log deleted and forgotten) or "deleted-unmarked"
    (the same, R1's mark not written)."""
    with S3Case("s3rot-" + variant) as k:
        conf = it.simple_config(k.wd, [os.path.join(k.wd.logs, "*.log*")],
                                output=s3_output(k.peers))
        c = Crash(k.wd, k.peers, conf, variant)
        if variant.endswith("-aged"):
            # Two hours down: the notes are that old at the restart.
            p = os.path.join(k.wd.state, "checkpoints.json")
            with open(p) as f:
                cp = json.load(f)
            old = int(time.time()) - 7200
            cp["done"] = [[d[0], d[1], old] for d in cp["done"]] + [
                ["00000000000000aa", 100, old]]
            with open(p + ".edit", "w") as f:
                json.dump(cp, f)
            os.replace(p + ".edit", p)
        # 4. Restart.
        t0 = time.monotonic()
        k.lug = lug = it.Lugger(conf)
        lug.wait_started()
        it.wait_for(c.b_acked, 20, "b.log's checkpoint at its end after "
                    "the restart (a request of the last run waits for "
                    "records that never come?)", proc=lug,
                    detail=lug.stderr_tail)
        took = time.monotonic() - t0
        lug.stop()
        n = check_after(lug, k.peers, c.want)
        return ("%s: b.log acked %.1f s after the restart, %d lines "
                "each in one object" % (variant, took, n))


def main():
    it.require_binary()
    return "; ".join(part(v) for v in ("rotated", "deleted",
                                       "deleted-unmarked",
                                       "deleted-unmarked-aged"))


if __name__ == "__main__":
    it.main("test_s3_crash_rotated", main)
