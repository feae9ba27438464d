#!/usr/bin/env python3
"""A copytruncate while lugger is down (a restart, an upgrade, a node
reboot): every line once, in order, after the restart.

A file source reads a.log, read_from head. lugger delivers its first 2000
lines (and checkpoints them), then stops; while it is down 500 more lines
are written, logrotate's copytruncate is done by hand (a.log copied to
a.log.1, a.log truncated to 0) and 100 new lines are written. After the
restart the 500 lines lugger had not read are read from the copy, then
the 100 new ones from a.log: the copy is the file the checkpoint was
about (same first bytes, a.log's name plus a suffix). Scenarios:
- term: SIGTERM, paths a.log* (the copy is matched too: it must not be
  read again from 0 as a new file);
- kill9: kill -9 once the checkpoint is at a.log's end, paths a.log*;
- unmatched: SIGTERM, paths *.log (the copy is found by its first bytes
  only; before, its 500 lines were lost);
- copied: SIGTERM, a.log* and the copy made while lugger is down but the
  truncation done after the restart (lugger caught up by then: the copy
  has nothing unread and must not be read as a new file either).
Before the fix: term, kill9 and copied delivered the copy's lines twice
(the first 2000 again, out of order), unmatched lost 500 lines.
"""

import os
import shutil
import signal
import time

import lugger_it as it

OLD, UNREAD, NEW = 2000, 500, 100


def bodies(out):
    if not os.path.exists(out):
        return []
    return [r["body"] for r in it.read_jsonl(out, allow_partial_tail=True)]


def write(path, prefix, a, b):
    with open(path, "a") as f:
        for i in range(a, b):
            f.write("%s-%05d %s\n" % (prefix, i, "x" * 40))


def want():
    return (["old-%05d %s" % (i, "x" * 40) for i in range(OLD + UNREAD)] +
            ["new-%05d %s" % (i, "x" * 40) for i in range(NEW)])


def scenario(name, glob, how, truncate_after=False):
    with it.WorkDir("copytruncate-restart-" + name) as wd:
        logs = wd.mk("logs")
        a = os.path.join(logs, "a.log")
        out = wd.p("out.jsonl")
        conf = it.simple_config(wd, [os.path.join(logs, glob)], out_path=out)
        write(a, "old", 0, OLD)
        lg = it.Lugger(conf)
        lg.wait_started()
        it.wait_for(lambda: len(bodies(out)) >= OLD, 60,
                    "the first %d lines delivered" % OLD, proc=lg)
        if how == "kill9":
            size = os.path.getsize(a)
            it.wait_for(lambda: it.checkpoint_offsets(wd.state).get(a) == size,
                        30, "the checkpoint at a.log's end", proc=lg,
                        detail=lambda: repr(it.checkpoint_offsets(wd.state)))
            lg.kill9()
        else:
            lg.stop(sig=signal.SIGTERM)
        write(a, "old", OLD, OLD + UNREAD)
        shutil.copyfile(a, a + ".1")
        if not truncate_after:
            os.truncate(a, 0)
            write(a, "new", 0, NEW)
        lg = it.Lugger(conf)
        lg.wait_started()
        if truncate_after:
            it.wait_for(lambda: len(bodies(out)) >= OLD + UNREAD, 60,
                        "the lines after the checkpoint", proc=lg)
            time.sleep(2.5)  # rescans see the copy before the truncation
            os.truncate(a, 0)
            write(a, "new", 0, NEW)
        w = want()
        it.wait_for(lambda: len(bodies(out)) >= len(w), 60,
                    "every line delivered", proc=lg,
                    detail=lambda: "%d of %d" % (len(bodies(out)), len(w)))
        time.sleep(3)  # rescans after the copy was drained and closed
        lg.stop()
        got = bodies(out)
        dups = len(got) - len(set(got))
        it.check(got == w,
                 "%s: %d records for %d lines (%d repeated, %d missing); "
                 "first difference at %s" % (
                     name, len(got), len(w), dups, len(set(w) - set(got)),
                     next((i for i, (x, y) in enumerate(zip(got, w))
                           if x != y), min(len(got), len(w)))))
        err = lg.stderr_text()
        if not truncate_after:
            it.check("copytruncated while lugger was stopped" in err,
                     "%s: the copy was not taken as a.log's" % name)
        return len(got)


def main():
    it.require_binary()
    n = [scenario("term", "a.log*", "term"),
         scenario("kill9", "a.log*", "kill9"),
         scenario("unmatched", "*.log", "term"),
         scenario("copied", "a.log*", "term", truncate_after=True)]
    return ("copytruncate while lugger was down (SIGTERM, kill -9, copy "
            "unmatched by the paths, truncation after the restart): %s "
            "records, each line once and in order" % "/".join(map(str, n)))


if __name__ == "__main__":
    it.main("test_copytruncate_restart", main)
