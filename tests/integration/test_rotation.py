#!/usr/bin/env python3
"""Rotation: 500,000 lines across 20 files, appended by writer threads while
lugger runs, with rename-rotation and copytruncate every few thousand lines
-> every line exactly once, in order per file.

Each file app-NN.log has its own writer thread. Lines are "fNNN sSSSSSSSSS
<padding>" (file id and sequence number, 100 bytes). Every 2,000-5,000
lines the writer rotates its file, alternating (from a random start):

  rename       app-NN.log -> app-NN.log.1 (replacing any older .1), then a
               few more lines to the old fd (as an app does before it
               reopens), then a new app-NN.log. The glob is *.log, so the
               rotated name does not match: lugger must drain the old file
               by the fd it holds, then follow the new one.
  copytruncate copy app-NN.log to app-NN.log.1, then truncate it to 0. Lines
               written between the copy and the truncate would be lost by
               any collector, so the writer writes nothing in that window
               and first waits until lugger's output has every line of the
               file written so far; after the truncate it waits 300 ms
               before writing again (lugger must see the file shrink).

Before a rename the writer also waits until lugger has delivered the first
line of the current file: a file renamed to a non-matching name before the
collector ever opened it cannot be read by anyone.

At the end: SIGTERM, exit 0, and the whole output is checked: every line
exactly once, per file id in increasing sequence order, every output line
valid JSON.
"""

import os
import random
import shutil
import signal
import threading
import time

import lugger_it as it

NFILES = 20
PER_FILE = 25_000
LINE_LEN = 100
BURST = 50
BURST_SLEEP = 0.025     # s between bursts of one writer
WAIT_TIMEOUT = 60.0     # s a writer waits for lugger before giving up
FINAL_TIMEOUT = 120.0   # s for the last lines to arrive after the writers
SLOW_EVERY = 2500       # parallel mode: one line in this many is slow...
SLOW_SECONDS = 0.06     # ...by this much worker CPU time
SLOW_SCRIPT = """
function process(rec)
  local seq = tonumber(rec.body:sub(7, 15))
  if seq and seq %% %d == %d then
    local t = os.clock() + %g
    while os.clock() < t do end
  end
end
""" % (SLOW_EVERY, SLOW_EVERY // 2, SLOW_SECONDS)


class Writer(threading.Thread):
    def __init__(self, fid, path, tracker, rng, abort):
        super().__init__(daemon=True)
        self.fid, self.path, self.tracker = fid, path, tracker
        self.rng, self.abort = rng, abort
        self.renames = self.copytruncates = 0
        self.late = []  # (first, end) sequences written to a renamed file
        self.wait_timeouts = []
        self.error = None

    def wait(self, n, why):
        # After one timeout (lines already lost) wait briefly, so a broken
        # collector fails the test in bounded time.
        timeout = 5.0 if self.wait_timeouts else WAIT_TIMEOUT
        ok = self.tracker.wait_delivered(self.fid, n, timeout,
                                         abort=self.abort.is_set)
        if not ok and not self.abort.is_set():
            self.wait_timeouts.append(
                "file %d: lines 0..%d not all delivered after %.0f s (%s); "
                "delivered up to %d" % (self.fid, n - 1, timeout, why,
                                        self.tracker.delivered(self.fid)))

    def open(self):
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                       0o644)

    def write(self, fd, seq, k):
        os.write(fd, b"".join(it.make_line(self.fid, s, LINE_LEN)
                              for s in range(seq, seq + k)))
        return seq + k

    def run(self):
        try:
            self._run()
        except BaseException as e:
            self.error = e
            self.abort.set()

    def _run(self):
        rng = self.rng
        fd = self.open()
        seq = 0
        gen_start = 0  # first sequence in the current file
        since = 0      # lines since the last rotation
        every = rng.randint(2000, 5000)
        kind = rng.choice(("rename", "copytruncate"))
        rotated = self.path + ".1"
        while seq < PER_FILE and not self.abort.is_set():
            k = min(BURST, PER_FILE - seq, every - since)
            seq = self.write(fd, seq, k)
            since += k
            time.sleep(BURST_SLEEP * rng.uniform(0.5, 1.5))
            if since < every or seq >= PER_FILE:
                continue
            if kind == "rename":
                self.wait(gen_start + 1, "first line of the file before "
                          "rename")
                os.rename(self.path, rotated)
                late = min(rng.randint(0, 20), PER_FILE - seq)
                if late:
                    self.late.append((seq, seq + late))
                    seq = self.write(fd, seq, late)
                os.close(fd)
                fd = self.open()
                self.renames += 1
            else:
                self.wait(seq, "every line before copytruncate")
                if os.path.exists(rotated):
                    # A renamed .1 may still be drained through lugger's
                    # fd: copy to a new inode instead of truncating it.
                    os.unlink(rotated)
                shutil.copyfile(self.path, rotated)
                os.ftruncate(fd, 0)
                time.sleep(0.3)
                self.copytruncates += 1
            gen_start = seq
            since = 0
            every = rng.randint(2000, 5000)
            kind = "copytruncate" if kind == "rename" else "rename"
        os.close(fd)


def run():
    it.require_binary()
    seed = int(os.environ.get("LUGGER_IT_SEED", time.time()))
    it.log("seed %d (set LUGGER_IT_SEED to repeat)" % seed)
    rng = random.Random(seed)
    with it.WorkDir("rotation") as wd:
        paths = [os.path.join(wd.logs, "app-%02d.log" % i)
                 for i in range(NFILES)]
        for p in paths:  # present at the first scan: read_from head applies
            open(p, "wb").close()
        out = wd.p("out.jsonl")
        scripts = {}
        if it.parallel_pipelines():
            # At this pace a file's batches are small and far apart, so
            # they would rarely overlap on the workers and the order check
            # would not need the reorder stage: one line in SLOW_EVERY of
            # each file keeps its worker busy long enough for the file's
            # next batches to finish first on the other one.
            scripts = {"slow.lua": SLOW_SCRIPT}
        conf = it.simple_config(
            wd, [os.path.join(wd.logs, "*.log")], out,
            settings={"memory_budget": "64MiB"},
            scripts=list(scripts), script_files=scripts)
        tracker = it.SeqTracker(expected_len=LINE_LEN)
        follower = it.JsonlFollower(out, on_record=tracker.add)
        abort = threading.Event()
        writers = [Writer(i, p, tracker, random.Random(rng.random()), abort)
                   for i, p in enumerate(paths)]
        lug = it.Lugger(conf)
        follow_err = []

        def follow():
            try:
                while not abort.is_set():
                    if follower.poll() == 0:
                        time.sleep(0.02)
            except BaseException as e:
                follow_err.append(e)
                abort.set()

        ft = threading.Thread(target=follow, daemon=True)
        try:
            ft.start()
            time.sleep(0.5)
            lug.check_running()
            t0 = time.monotonic()
            for w in writers:
                w.start()
            while any(w.is_alive() for w in writers):
                lug.check_running()
                time.sleep(0.2)
            t_written = time.monotonic()
            for w in writers:
                if w.error:
                    raise w.error
            if follow_err:
                raise follow_err[0]
            it.log("writers done in %.1f s: %d renames, %d copytruncates" % (
                t_written - t0, sum(w.renames for w in writers),
                sum(w.copytruncates for w in writers)))
            expected = {i: PER_FILE for i in range(NFILES)}
            deadline = time.monotonic() + FINAL_TIMEOUT
            while time.monotonic() < deadline and not abort.is_set():
                if all(tracker.delivered(i) >= PER_FILE
                       for i in range(NFILES)):
                    break
                lug.check_running()
                time.sleep(0.1)
            t_done = time.monotonic()
            if follow_err:
                raise follow_err[0]
            # Give duplicates (re-reads) a chance to show up before stopping.
            time.sleep(1.5)
            lug.check_running()
            lug.stop(signal.SIGTERM)
        finally:
            abort.set()
            lug.kill9()
            ft.join(timeout=10)
            follower.close()

        # The authoritative count: the whole output, read again.
        final = it.SeqTracker(expected_len=LINE_LEN)
        recs = it.read_jsonl(out)
        for r in recs:
            final.add(r)
        lost, dups, missing, extra = final.summary(expected)
        problems = []
        for w in writers:
            problems += w.wait_timeouts
        if lost:
            by_file = {}
            for i in range(NFILES):
                n = sum(1 for s in range(PER_FILE)
                        if s >= len(final.seen.get(i, b"")) or
                        not final.seen[i][s])
                if n:
                    by_file[i] = n
            problems.append("%d lines lost (per file id: %s; first: %s)" % (
                lost, by_file, missing))
        if dups:
            problems.append("%d lines duplicated" % dups)
        if final.order_errors:
            errs = [e for e in final.order_errors if e is not None]
            late = sum(1 for (fid, _, sq) in errs
                       if any(a <= sq < b for a, b in writers[fid].late))
            problems.append(
                "%d lines out of order (file id, seen after, sequence): %s;"
                " %d of the first %d were written to a renamed file after "
                "the rename (and before the new file was created) yet came "
                "after lines of the new file" % (
                    len(final.order_errors), errs[:10], late, len(errs)))
        if final.foreign:
            problems.append("%d records that are not test lines: %r" % (
                len(final.foreign), final.foreign[:3]))
        if final.bad_body:
            problems.append("bodies of the wrong length (partial lines?): "
                            "%r" % final.bad_body[:3])
        if extra:
            problems.append("%d unexpected sequence numbers" % extra)
        nren = sum(w.renames for w in writers)
        nct = sum(w.copytruncates for w in writers)
        total = NFILES * PER_FILE
        if problems:
            it.fail("; ".join(problems) + " (seed %d, %d renames, %d "
                    "copytruncates)" % (seed, nren, nct))
        rate = total / max(t_done - t0, 1e-9)
        return ("%d lines, %d files, %d rotations (%d rename, %d "
                "copytruncate), 0 lost, 0 duplicated, order OK; all "
                "delivered %.1f s after the last write, %.0f lines/s "
                "end to end (writer-paced), seed %d" % (
                    total, NFILES, nren + nct, nren, nct, t_done - t_written,
                    rate, seed))


if __name__ == "__main__":
    it.main("rotation", run)
