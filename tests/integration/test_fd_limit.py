#!/usr/bin/env python3
"""Files beyond the descriptor limit: `ulimit -n 256` and 2,000 log files.

1. `lugger run --once` over 2,000 files of 10 lines each: every one of the
   20,000 lines is delivered and lugger exits 0 (idle files are closed to
   make room for the others, their checkpoints kept).
2. `lugger run` on the same files (resuming from those checkpoints): one
   new line appended to each of 300 files picked at random, then to 300
   others: every new line is delivered, exactly once (closed files are
   reopened by identity when they change), and the log says files were
   closed for lack of descriptors.
3. `lugger run --once` with 10 files that cannot be opened (mode 000, lugger
   running as "nobody"): exits non-zero and says how many files it could
   not read.
"""

import os
import random
import resource
import subprocess
import time

import lugger_it as it

NFILES = 2000
LINES = 10
LINE_LEN = 60
LIMIT = 256


def main():
    it.require_binary()
    # lugger inherits the limit, as from `ulimit -n 256` in a shell.
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))
    with it.WorkDir("fd-limit") as wd:
        paths = [os.path.join(wd.logs, "f%04d.log" % i) for i in range(NFILES)]
        for fid, p in enumerate(paths):
            with open(p, "wb") as f:
                for s in range(LINES):
                    f.write(it.make_line(fid, s, LINE_LEN))
        out = wd.p("out.jsonl")
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")], out,
                                settings={"rescan_interval": "500ms"})

        # 1. --once reads every file.
        t0 = time.monotonic()
        lg = it.Lugger(conf, once=True)
        rc = lg.wait(300)
        took = time.monotonic() - t0
        it.check(rc == 0, "--once exited %r\n%s" % (rc, lg.stderr_tail()))
        tr = it.SeqTracker(expected_len=LINE_LEN)
        for r in it.read_jsonl(out):
            tr.add(r)
        lost, dups, missing, _ = tr.summary({i: LINES for i in range(NFILES)})
        it.check(lost == 0 and dups == 0,
                 "--once with ulimit -n %d: %d of %d lines lost (first %s), "
                 "%d duplicated" % (LIMIT, lost, NFILES * LINES, missing,
                                    dups))
        it.log("--once: %d lines from %d files in %.1f s" % (
            NFILES * LINES, NFILES, took))

        # 2. run: appends to files that were closed are read.
        lg = it.Lugger(conf)
        lg.wait_started()
        rng = random.Random(7)
        written = {i: LINES for i in range(NFILES)}
        for rnd in range(2):
            for fid in rng.sample(range(NFILES), 300):
                with open(paths[fid], "ab") as f:
                    f.write(it.make_line(fid, written[fid], LINE_LEN))
                written[fid] += 1

            def all_in():
                t2 = it.SeqTracker(expected_len=LINE_LEN)
                for r in it.read_jsonl(out, allow_partial_tail=True):
                    t2.add(r)
                return all(t2.delivered(fid) >= n
                           for fid, n in written.items())
            it.wait_for(all_in, 60, "round %d of appends delivered" % (rnd + 1),
                        interval=0.3, proc=lg)
        msgs = " ".join(str(r.get("msg")) for r in lg.log_records())
        it.check("descriptor" in msgs,
                 "the log does not say idle files were closed for lack of "
                 "descriptors")
        lg.stop()
        tr = it.SeqTracker(expected_len=LINE_LEN)
        for r in it.read_jsonl(out):
            tr.add(r)
        lost, dups, missing, _ = tr.summary(written)
        it.check(lost == 0 and dups == 0, "run: %d lost (first %s), %d "
                 "duplicated" % (lost, missing, dups))

        # 3. --once fails when it could not read everything.
        with it.WorkDir("fd-limit-unreadable") as wd2:
            for i in range(30):
                p = os.path.join(wd2.logs, "u%02d.log" % i)
                with open(p, "wb") as f:
                    f.write(it.make_line(i, 0, LINE_LEN))
            wd2.chown_tree(it.NOBODY, it.NOBODY)
            for i in range(10):
                os.chmod(os.path.join(wd2.logs, "u%02d.log" % i), 0)
            conf2 = it.simple_config(wd2, [os.path.join(wd2.logs, "*.log")])
            lg = it.Lugger(conf2, once=True, user=it.NOBODY)
            rc = lg.wait(60)
            it.check(rc not in (0, None), "--once exited %r with 10 unreadable "
                     "files" % rc)
            text = lg.stderr_text()
            it.check("10 files" in text, "--once does not say how many files "
                     "it could not read:\n%s" % lg.stderr_tail())
        return ("ulimit -n %d: --once read %d lines of %d files in %.1f s; "
                "run delivered 600 appends to closed files; --once with 10 "
                "unreadable files exits %d" % (LIMIT, NFILES * LINES, NFILES,
                                                took, rc))


if __name__ == "__main__":
    it.main("test_fd_limit", main)
