#!/usr/bin/env python3
"""The s3 output across kill -9: every line in exactly one object.

100,000 lines are written to 4 files at ~10,000 lines/s (one file is
rotated by rename half-way, and the new file takes its place), while lugger
ships them to npm s3rver (every request's SigV4 checked by the aws4
verifier in front of it) as small gzip objects (64 KiB of records, several
objects in flight). lugger is killed with SIGKILL 3 times at random moments
while the lines flow and restarted each time; once the writer is done, a
last `lugger run --once` delivers the rest and exits.

Objects that were in flight at a kill are rebuilt after the restart from
the records read again, with the boundaries lugger wrote to its state_dir
before uploading them, so the retried PUT overwrites its own key. Checked:
no line in two objects (duplicates counted: 0), none missing, and every
object that could be listed while lugger ran was complete (it gunzips whole
into complete test lines; s3rver overwrites an object in place, so a read
during a rebuilt object's PUT is tried again). The lines that would have been duplicated
without the rebuild (re-read records cut at other boundaries) are counted
from lugger's log ("rebuilt ... object(s)") and reported.
"""

import gzip
import json
import os
import random
import threading
import time

import lugger_it as it
from test_s3 import Peers, output

NFILES = 4
TOTAL = 100_000
RATE = 10_000
LINE_LEN = 100
KILLS = 3


class Writer(threading.Thread):
    """Writes TOTAL lines round-robin over the files at about RATE lines/s;
    renames file 0 to app-0.log.1 (and starts a new app-0.log) when half
    of its lines are written. The last HOLD_BACK of the lines wait for
    `release` (set once every kill is done): on a loaded machine restarts
    can take longer than the writing, and the last kill must still come
    while lines are left to write."""

    HOLD_BACK = 0.05

    def __init__(self, logs):
        super().__init__(daemon=True)
        self.logs = logs
        self.written = 0
        self.rotated = False
        self.error = None
        self.release = threading.Event()
        self.held = 0.0  # seconds the writer waited for `release`

    def path(self, fid):
        return os.path.join(self.logs, "app-%d.log" % fid)

    def run(self):
        try:
            fds = [os.open(self.path(f), os.O_WRONLY | os.O_APPEND |
                           os.O_CREAT, 0o644) for f in range(NFILES)]
            per = TOTAL // NFILES
            burst = 50
            nxt = time.monotonic()
            for start in range(0, per, burst):
                if (start >= per * (1 - self.HOLD_BACK) and
                        not self.release.is_set()):
                    t0 = time.monotonic()
                    self.release.wait(300)
                    self.held += time.monotonic() - t0
                    nxt = time.monotonic()
                if start >= per // 2 and not self.rotated:
                    os.rename(self.path(0), self.path(0) + ".1")
                    os.close(fds[0])
                    fds[0] = os.open(self.path(0), os.O_WRONLY | os.O_APPEND |
                                     os.O_CREAT, 0o644)
                    self.rotated = True
                for f in range(NFILES):
                    os.write(fds[f], b"".join(
                        it.make_line(f, s, LINE_LEN)
                        for s in range(start, min(per, start + burst))))
                self.written += NFILES * min(burst, per - start)
                nxt += burst * NFILES / float(RATE)
                d = nxt - time.monotonic()
                if d > 0:
                    time.sleep(d)
            for fd in fds:
                os.close(fd)
        except BaseException as e:  # noqa: BLE001
            self.error = e


def object_bodies(data):
    text = gzip.decompress(data).decode()
    if not text.endswith("\n"):
        raise ValueError("does not end with a newline")
    out = []
    for line in text.split("\n")[:-1]:
        body = json.loads(line)["body"]
        if it.parse_line(body) is None or len(body) != LINE_LEN - 1:
            raise ValueError("not a whole test line: %r" % body[:40])
        out.append(body)
    return out


def main():
    it.require_binary()
    seed = int(os.environ.get("LUGGER_IT_SEED", time.time()))
    it.log("seed %d (set LUGGER_IT_SEED to repeat)" % seed)
    rng = random.Random(seed)
    with it.WorkDir("s3crash") as wd:
        peers = Peers(wd)
        stop = threading.Event()
        partial, checked, torn = [], set(), [0]

        def watch():  # every object that can be listed is whole
            while not stop.is_set():
                try:
                    keys = peers.list()
                except OSError:
                    continue
                for key, size in keys:
                    if (key, size) in checked:
                        continue
                    # s3rver writes an object in place: a GET during an
                    # overwrite (a rebuilt object PUT again) can read it
                    # half-written, which S3 never shows. Such a read is
                    # tried again; an object that stays broken fails.
                    for attempt in range(5):
                        try:
                            object_bodies(peers.get(key)[0])
                            checked.add((key, size))
                            break
                        except Exception as e:  # noqa: BLE001
                            if attempt == 4:
                                partial.append("%s: %s" % (key, e))
                            else:
                                torn[0] += 1
                                time.sleep(0.3)
                stop.wait(0.2)

        w = threading.Thread(target=watch, daemon=True)
        lug = None
        try:
            conf = it.simple_config(
                wd, [os.path.join(wd.logs, "*.log*")],
                output=output(peers, key="crash/%Y/%m/%d/%H/{id}.json.gz",
                              max_bytes="64KiB",
                              max_coalescing_delay="300ms",
                              max_in_flight=4))
            writer = Writer(wd.logs)
            for f in range(NFILES):
                open(writer.path(f), "wb").close()
            w.start()
            writer.start()
            lug = it.Lugger(conf)
            lug.wait_started()
            logs = []
            for k in range(KILLS):
                # At a random point of each third of the writing (by lines
                # written, not time: a slow start on a loaded machine does
                # not move the kills past the end of the input).
                at = int(TOTAL * (k + rng.uniform(0.3, 0.9)) / (KILLS + 0.5))
                it.wait_for(lambda: writer.written >= at or writer.error,
                            120, "%d lines written" % at)
                lug.check_running()
                lug.kill9()
                written = writer.written
                it.log("kill -9 #%d after %d lines written" % (k + 1, written))
                it.check(written < TOTAL, "kill -9 #%d after the last line "
                         "was written" % (k + 1))
                logs.append(lug.log_records())
                lug = it.Lugger(conf)
                lug.wait_started()
            writer.release.set()
            writer.join(120)
            if writer.held > 0:
                it.log("the writer waited %.1f s for the last kill before "
                       "its last lines" % writer.held)
            if writer.error:
                raise writer.error
            lug.stop()
            logs.append(lug.log_records())
            lug = it.Lugger(conf, once=True)
            rc = lug.wait(300)
            it.check(rc == 0, "lugger --once exited %r: %s" % (
                rc, lug.stderr_tail()))
            logs.append(lug.log_records())
            stop.set()
            w.join()
            it.check(not partial, "incomplete objects seen: %r" % partial[:3])
            seen = {}
            keys = peers.list()
            for key, _ in keys:
                for b in object_bodies(peers.get(key)[0]):
                    seen[b] = seen.get(b, 0) + 1
            dups = sum(c - 1 for c in seen.values())
            want = set(it.make_line(f, s, LINE_LEN)[:-1].decode()
                       for f in range(NFILES)
                       for s in range(TOTAL // NFILES))
            missing = want - set(seen)
            rebuilt = sum(1 for recs in logs for r in recs
                          if "rebuilt" in str(r.get("msg", "")))
            gave_up = [r.get("msg") for recs in logs for r in recs
                       if "could not rebuild" in str(r.get("msg", ""))]
            it.log("%d objects, %d lines, %d duplicate lines, %d missing, "
                   "%d requests rebuilt, %d reads during an s3rver "
                   "overwrite, gave up: %r" % (
                       len(keys), len(seen), dups, len(missing), rebuilt,
                       torn[0], gave_up))
            it.check(not missing, "%d lines in no object, e.g. %r" % (
                len(missing), sorted(missing)[:3]))
            it.check(dups == 0, "%d lines in more than one object (seed %d)"
                     % (dups, seed))
            it.check(set(seen) == want, "objects hold lines not written")
            c = peers.counts()
            it.check(c["bad"] == 0, "verifier: %r" % c)
            return ("%d lines, %d kill -9 while they flowed: %d objects, 0 "
                    "duplicates, 0 missing, no partial object seen (%d "
                    "checked while running); %d requests in flight at a kill "
                    "rebuilt; seed %d" % (TOTAL, KILLS, len(keys),
                                          len(checked), rebuilt, seed))
        finally:
            stop.set()
            if lug is not None:
                lug.kill9()
            peers.close()


if __name__ == "__main__":
    it.main("test_s3_crash", main)
