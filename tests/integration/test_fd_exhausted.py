#!/usr/bin/env python3
"""Descriptors used up while lugger runs: its soft RLIMIT_NOFILE lowered to
3 (prlimit(2) on the running process, as `prlimit --pid` does), so that no
open(2) succeeds (EMFILE), then raised again.

test_fd_limit.py covers a limit known at start (lugger keeps its open log
files under it); here the limit is met after lugger sized itself, as when
something else in the process (connections of an output, a burst of
clients) takes the descriptors lugger counted on.

While no descriptor can be had, 30 files that lugger had open (read to
their end) get 10 more lines each and 20 new files appear with 10 lines
each:
- lugger keeps running; it logs an error that names a new file it cannot
  open, with "Too many open files", once per file, not per attempt (at
  most 3 lines per file name in the log);
- it does not busy-loop: under 25% of a core over 4 s;
- a checkpoint save that fails meanwhile is logged once ("Too many open
  files"); /readyz cannot answer (accepting a connection takes a
  descriptor).
Then the limit is raised back: every line of every file is delivered
exactly once and in order per file (the files that could not be opened
or reopened were retried, not forgotten), and /readyz is 200 again.
"""

import os
import resource
import time

import lugger_it as it

OLD, NEW = 30, 20
ROTATED = 5
LINES = 10
LINE_LEN = 70


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def append(path, fid, first, n):
    with open(path, "ab") as f:
        for s in range(first, first + n):
            f.write(it.make_line(fid, s, LINE_LEN))


def part_exhausted():
    with it.WorkDir("fd-exhausted") as wd:
        port = it.free_port()
        out = wd.p("out.jsonl")
        paths = [os.path.join(wd.logs, "f%03d.log" % i)
                 for i in range(OLD + NEW)]
        written = {}
        for fid in range(OLD):
            append(paths[fid], fid, 0, LINES)
            written[fid] = LINES
        conf = it.simple_config(
            wd, [os.path.join(wd.logs, "*.log")], out,
            settings={"rescan_interval": "500ms",
                      "http": "127.0.0.1:%d" % port})

        def delivered_all():
            return it.delivered_all(out, written, LINE_LEN)

        lg = it.Lugger(conf)
        try:
            lg.wait_started()
            it.wait_for(delivered_all, 60, "the first lines delivered",
                        interval=0.2, proc=lg)
            time.sleep(1.0)  # every file at its end (idle)
            soft, hard = resource.prlimit(lg.pid, resource.RLIMIT_NOFILE)
            resource.prlimit(lg.pid, resource.RLIMIT_NOFILE, (3, hard))
            try:
                # New files: they cannot be opened, and trying closes the
                # idle files to make room (which does not help here).
                for fid in range(OLD, OLD + NEW):
                    append(paths[fid], fid, 0, LINES)
                    written[fid] = LINES
                time.sleep(1.5)
                # Appends to the files closed meanwhile, then some of them
                # rotated (renamed to a name the source does not match, a
                # new file at the old name) before lugger could reopen them.
                for fid in range(OLD):
                    append(paths[fid], fid, LINES, LINES)
                    written[fid] = 2 * LINES
                time.sleep(0.5)
                for fid in range(ROTATED):
                    os.rename(paths[fid], paths[fid] + ".1")
                    append(paths[fid], 100 + fid, 0, LINES)
                    written[100 + fid] = LINES
                time.sleep(1.5)  # seen by inotify and a rescan
                t0, c0 = time.monotonic(), cpu_ticks(lg.pid)
                time.sleep(4.0)
                cpu = (cpu_ticks(lg.pid) - c0) / float(
                    os.sysconf("SC_CLK_TCK")) / (time.monotonic() - t0)
                lg.check_running()
            finally:
                resource.prlimit(lg.pid, resource.RLIMIT_NOFILE, (soft, hard))
            it.log("at EMFILE: %.0f%% of a core" % (100 * cpu))
            it.check(cpu < 0.25, "lugger used %.0f%% of a core while no "
                     "descriptor could be opened (a busy loop?)" % (100 * cpu))
            newp = paths[OLD]
            recs = lg.log_records()
            named = [r for r in recs if newp in str(r.get("msg")) and
                     "Too many open files" in str(r.get("msg")) and
                     "RLIMIT_NOFILE 3" in str(r.get("msg"))]
            it.check(named, "no log line names %s with \"Too many open "
                     "files\" and the limit\n%s" % (newp, lg.stderr_tail()))
            worst = max(sum(1 for r in recs if p in str(r.get("msg")) and
                            "Too many open files" in str(r.get("msg")))
                        for p in paths)
            it.check(worst <= 3, "a file is named %d times in the log while "
                     "it could not be opened (one line per attempt?)\n%s" % (
                         worst, lg.stderr_tail()))
            cperr = [r for r in recs if r.get("component") == "checkpoint"
                     and "Too many open files" in str(r.get("msg"))]
            it.check(len(cperr) <= 1, "%d checkpoint errors with \"Too "
                     "many open files\" in the log (want at most 1: once per "
                     "episode)\n%s" % (len(cperr), lg.stderr_tail()))
            it.wait_for(delivered_all, 60, "every line delivered once "
                        "descriptors are available again", interval=0.3,
                        proc=lg)
            it.wait_for(lambda: it.http_get(port, "/readyz")[0] == 200, 20,
                        "/readyz 200 again", proc=lg)
            lg.stop()
        finally:
            lg.kill9()
        tr = it.SeqTracker(expected_len=LINE_LEN)
        for r in it.read_jsonl(out):
            tr.add(r)
        lost, dups, missing, extra = tr.summary(written)
        it.check(lost == 0 and dups == 0 and extra == 0 and
                 not tr.order_errors,
                 "%d lost (first %s), %d duplicated, %d unexpected, order "
                 "errors %s" % (lost, missing, dups, extra,
                                tr.order_errors[:5]))
        return ("soft RLIMIT_NOFILE 3 on the running process: %.0f%% of a "
                "core meanwhile; raised again: %d lines of %d files once, "
                "in order" % (100 * cpu, sum(written.values()),
                              len(written)))


def part_lowered():
    """300 files open, the soft limit of the running lugger lowered to 150
    (below the descriptors it holds), three rounds of one line to every
    file, then the limit put back."""
    nfiles, low = 300, 150
    with it.WorkDir("fd-lowered") as wd:
        port = it.free_port()
        out = wd.p("out.jsonl")
        paths = [os.path.join(wd.logs, "r%03d.log" % i)
                 for i in range(nfiles)]
        written = {}
        for fid in range(nfiles):
            append(paths[fid], fid, 0, 1)
            written[fid] = 1
        conf = it.simple_config(
            wd, [os.path.join(wd.logs, "*.log")], out,
            settings={"rescan_interval": "500ms",
                      "http": "127.0.0.1:%d" % port})

        def delivered_all():
            return it.delivered_all(out, written, LINE_LEN)

        lg = it.Lugger(conf)
        try:
            lg.wait_started()
            it.wait_for(delivered_all, 60, "the first lines delivered",
                        interval=0.2, proc=lg)
            soft, hard = resource.prlimit(lg.pid, resource.RLIMIT_NOFILE)
            resource.prlimit(lg.pid, resource.RLIMIT_NOFILE, (low, hard))
            try:
                time.sleep(1.5)  # a rescan sees the new limit
                # A save between the lowering and that rescan may still
                # fail (EMFILE): what counts is what comes after it.
                n0 = len(lg.log_records())
                ready = []
                for rnd in range(3):
                    for fid in range(nfiles):
                        append(paths[fid], fid, written[fid], 1)
                        written[fid] += 1
                    it.wait_for(delivered_all, 60, "round %d delivered under "
                                "the lowered limit" % (rnd + 1), interval=0.3,
                                proc=lg)
                    time.sleep(0.5)
                    ready.append(it.http_get(port, "/readyz", timeout=3))
                fds = len(os.listdir("/proc/%d/fd" % lg.pid))
            finally:
                resource.prlimit(lg.pid, resource.RLIMIT_NOFILE, (soft, hard))
            during = lg.log_records()[n0:]
            cperr = [r for r in during if r.get("component") == "checkpoint"
                     and r.get("level") == "error"]
            it.check(not cperr and all(st == 200 for st, _ in ready),
                     "with RLIMIT_NOFILE %d the log files took every "
                     "descriptor: checkpoint errors %r, /readyz %r" % (
                         low, [r["msg"][:160] for r in cperr[:2]],
                         [(st, (t or "")[:120]) for st, t in ready]))
            it.check(fds < low, "%d descriptors open under a limit of %d"
                     % (fds, low))
            for fid in range(nfiles):
                append(paths[fid], fid, written[fid], 1)
                written[fid] += 1
            it.wait_for(delivered_all, 60, "every line delivered",
                        interval=0.3, proc=lg)
            lg.stop()
        finally:
            lg.kill9()
        tr = it.SeqTracker(expected_len=LINE_LEN)
        for r in it.read_jsonl(out):
            tr.add(r)
        lost, dups, missing, extra = tr.summary(written)
        it.check(lost == 0 and dups == 0 and extra == 0 and
                 not tr.order_errors,
                 "%d lost (first %s), %d duplicated, %d unexpected, order "
                 "errors %s" % (lost, missing, dups, extra,
                                tr.order_errors[:5]))
        return ("soft limit lowered to %d with %d files open: %d descriptors "
                "used after 3 rounds, /readyz 200, checkpoints saved; every "
                "line once" % (low, nfiles, fds))


def main():
    it.require_binary()
    it.check(hasattr(resource, "prlimit"), "python has no resource.prlimit")
    a = part_lowered()
    b = part_exhausted()
    return a + "; " + b


if __name__ == "__main__":
    it.main("test_fd_exhausted", main)
