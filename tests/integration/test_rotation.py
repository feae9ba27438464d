#!/usr/bin/env python3
"""Rotation: 500,000 lines across 20 files appended while lugger runs, with
rename rotation and copytruncate every few thousand lines per file ->
every line exactly once, in order per file; SIGTERM -> exit 0.

- Rename rotation: app-N.log -> app-N.log.K, then a new app-N.log. The glob
  is *.log, so the rotated name does not match: lugger must drain the old
  file through the descriptor it holds.
- copytruncate: copy to app-N.log.cK, then truncate to 0. Lines written
  between logrotate's copy and its truncate are lost with any collector,
  so the writer writes nothing in that window and, before truncating,
  waits until lugger has delivered every line of the file written so far;
  after truncating it waits 300 ms before writing again.
The output file is followed while the test runs, so the writer can wait
for deliveries and the final check reads it whole.
"""

import os
import shutil
import signal
import threading
import time

import lugger_it as it

NFILES = 20
LINES_PER_FILE = 25_000          # 500,000 in all
LINE_LEN = 100
ROTATE_EVERY = 4_000             # lines per file between rotations
BURST = 250                      # lines written to a file at a time


class OutputFollower(threading.Thread):
    """Feeds every complete line appended to the output file to a tracker."""

    def __init__(self, path, tracker):
        super().__init__(daemon=True)
        self.path, self.tracker = path, tracker
        self.halted = False

    def run(self):
        import json
        buf = b""
        f = None
        while not self.halted:
            if f is None:
                if not os.path.exists(self.path):
                    time.sleep(0.05)
                    continue
                f = open(self.path, "rb")
            chunk = f.read(1 << 20)
            if not chunk:
                time.sleep(0.02)
                continue
            buf += chunk
            lines = buf.split(b"\n")
            buf = lines.pop()
            for raw in lines:
                self.tracker.add(json.loads(raw))
        if f is not None:
            f.close()


def run():
    it.require_binary()
    with it.WorkDir("rotation") as wd:
        out = wd.p("out.jsonl")
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")], out,
                                settings={"memory_budget": "32MiB"})
        paths = [os.path.join(wd.logs, "app-%02d.log" % i)
                 for i in range(NFILES)]
        for p in paths:
            open(p, "wb").close()
        tracker = it.SeqTracker(expected_len=LINE_LEN)
        follower = OutputFollower(out, tracker)
        follower.start()
        lug = it.Lugger(conf)
        renames = copytruncates = 0
        try:
            files = {fid: open(p, "ab") for fid, p in enumerate(paths)}
            written = {fid: 0 for fid in range(NFILES)}
            since_rotate = {fid: 0 for fid in range(NFILES)}
            rotations = {fid: 0 for fid in range(NFILES)}
            t0 = time.monotonic()
            while any(n < LINES_PER_FILE for n in written.values()):
                for fid in range(NFILES):
                    n = written[fid]
                    if n >= LINES_PER_FILE:
                        continue
                    k = min(BURST, LINES_PER_FILE - n)
                    files[fid].write(b"".join(
                        it.make_line(fid, s, LINE_LEN) for s in range(n, n + k)))
                    files[fid].flush()
                    written[fid] = n + k
                    since_rotate[fid] += k
                    if since_rotate[fid] < ROTATE_EVERY or \
                            written[fid] >= LINES_PER_FILE:
                        continue
                    since_rotate[fid] = 0
                    rotations[fid] += 1
                    p = paths[fid]
                    files[fid].close()
                    if (fid + rotations[fid]) % 2 == 0:
                        os.rename(p, "%s.%d" % (p, rotations[fid]))
                        renames += 1
                    else:
                        ok = tracker.wait_delivered(fid, written[fid], 120,
                                                    abort=lambda: not lug.alive())
                        lug.check_running()
                        it.check(ok, "file %d: lugger did not deliver its "
                                 "%d lines before copytruncate" % (fid, written[fid]))
                        shutil.copyfile(p, "%s.c%d" % (p, rotations[fid]))
                        os.truncate(p, 0)
                        copytruncates += 1
                        time.sleep(0.3)
                    files[fid] = open(p, "ab")
                lug.check_running()
            for f in files.values():
                f.close()
            write_s = time.monotonic() - t0
            total = NFILES * LINES_PER_FILE
            it.wait_for(lambda: tracker.total >= total, 240,
                        "all %d lines in the output" % total, interval=0.2,
                        proc=lug, detail=lambda: "%d delivered" % tracker.total)
            deliver_s = time.monotonic() - t0
            time.sleep(0.5)  # anything extra (a duplicate) would show now
            lug.stop(signal.SIGTERM)
        finally:
            follower.halted = True
            lug.kill9()
        follower.join(timeout=10)

        final = it.SeqTracker(expected_len=LINE_LEN)
        for r in it.read_jsonl(out):
            final.add(r)
        lost, dups, missing, extra = final.summary(
            {fid: LINES_PER_FILE for fid in range(NFILES)})
        it.check(not final.foreign, "records that are not test lines: %r"
                 % final.foreign[:3])
        it.check(not final.bad_body, "bodies of the wrong length: %r"
                 % final.bad_body[:3])
        it.check(lost == 0, "%d lines lost (first: %s)" % (lost, missing))
        it.check(dups == 0, "%d lines delivered more than once" % dups)
        it.check(extra == 0, "%d unexpected sequence numbers" % extra)
        it.check(not final.order_errors, "%d lines out of order per file "
                 "(first: %r)" % (len(final.order_errors),
                                  final.order_errors[:3]))
        return ("%d lines, %d files, %d rename rotations, %d copytruncates: "
                "0 lost, 0 duplicated, order OK per file; written in %.1f s, "
                "all delivered after %.1f s (%.0f lines/s)" % (
                    total, NFILES, renames, copytruncates, write_s, deliver_s,
                    total / deliver_s))


if __name__ == "__main__":
    it.main("rotation", run)
