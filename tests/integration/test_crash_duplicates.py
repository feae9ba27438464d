#!/usr/bin/env python3
"""Duplicates per crash: 5 files written at ~12,500 lines/s in total,
lugger killed with SIGKILL 5 times at random moments and restarted.

After each kill the test restarts lugger, waits until every line written
before the kill is in the output, and counts the lines that arrived twice
since the kill: the duplicates that crash caused. The bound is what
lugger delivered after the last time it said so: right before each kill
the test reads lugger_records_delivered_total (D), and the restart must
resume at least D records past where the killed process resumed, so the
duplicates are at most the lines the output got after that reading (an
acknowledgement journaled as it comes in). Not a time: on a quiet machine
that is a few hundred lines, but a lugger starved by a loaded machine
reads the backlog in large batches (up to 1 MiB of a file, ~10,000 of
these lines) and the output's request in flight at the kill holds one of
them, which 0.1 s of input (the bound before) did not allow for. A
journal that lags behind the acknowledgements (or none) fails this at
once. At the end: no line lost, every output line complete JSON, and
lugger's start-up log reports what it resumed from (the fsync'd
checkpoints plus the acknowledgements journaled after them).

lugger's own count of the duplicates: after each restart it logs, per
file, the records it read again that it had sent to an output before the
crash, and counts them in lugger_records_reread_total. The test checks
that count against the duplicates it saw itself. The count is an upper
bound, not an exact number: the journal marks records as sent right
before the output's write, so a kill between the mark and the write (or
in the middle of the write, whose cut line the file output removes at its
next start) counts records that never reached the output. An exact count
would need the output's write and the journal's to be one atomic step.
"""

import os
import random
import re
import signal
import time

import lugger_it as it

NFILES = 5
LINE_LEN = 100
RATE = 12_500            # lines/s over all files
KILLS = 5
REREAD_RE = re.compile(r"(\d+) records read again after the restart")


def reported_rereads(lug):
    """lugger's log lines about records read again since its start: the
    sum of their counts, and how many files they name."""
    n = files = 0
    for r in lug.log_records():
        m = REREAD_RE.search(str(r.get("msg", "")))
        if m:
            n += int(m.group(1))
            files += 1
    return n, files


def main():
    it.require_binary()
    seed = int(os.environ.get("LUGGER_IT_SEED", time.time()))
    it.log("seed %d (set LUGGER_IT_SEED to repeat)" % seed)
    rng = random.Random(seed)
    with it.WorkDir("crash-dups") as wd:
        paths = [os.path.join(wd.logs, "app-%d.log" % i)
                 for i in range(NFILES)]
        for p in paths:
            open(p, "wb").close()
        out = wd.p("out.jsonl")
        # The default checkpoint settings (simple_config sets 200 ms).
        port = it.free_port()
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")], out,
                                settings={"checkpoint_interval": None,
                                          "http": "127.0.0.1:%d" % port})
        writer = it.PacedWriter(paths, RATE, LINE_LEN)

        tr = it.SeqTracker(expected_len=LINE_LEN)
        fol = it.JsonlFollower(out, on_record=tr.add)

        def after_restart(lug):
            # A kill can leave a partial last line, which the file output
            # cuts when it opens: read again from where that line began.
            lug.wait_started()
            if fol.f is not None and fol.buf:
                fol.bytes -= len(fol.buf)
                fol.f.seek(fol.bytes)
                fol.buf = b""

        def caught_up(upto):
            fol.poll()
            return all(tr.delivered(fid) >= n for fid, n in upto.items())

        def unique():
            """Distinct lines in the output (each file's are in order)."""
            return sum(tr.delivered(fid) for fid in list(tr.contig))

        per_crash = []
        allowed = []  # lines the output got after lugger's last report
        resumed_at = 0  # lines before where the running lugger began
        reported = []
        resumed = []  # the journal lines of each restart's start-up log
        lug = None
        try:
            writer.start()
            lug = it.Lugger(conf)
            after_restart(lug)
            for k in range(KILLS):
                time.sleep(rng.uniform(0.5, 1.5))
                lug.check_running()
                # Records lugger counts as delivered: acknowledged, so
                # journaled (read again from its start, resumed_at on).
                delivered = int(it.metric_sum(
                    port, "lugger_records_delivered_total"))
                lug.kill9()
                lug.check_sanitizers()
                upto = dict(writer.written)
                fol.poll()
                held = unique()
                before = tr.dups
                lug = it.Lugger(conf)
                after_restart(lug)
                it.wait_for(lambda: caught_up(upto), 60,
                            "lines written before kill %d delivered" % (k + 1),
                            interval=0.2, proc=lug)
                dups = tr.dups - before
                per_crash.append(dups)
                allowed.append(held - resumed_at - delivered)
                resumed_at = held - dups
                resumed += [r for r in lug.log_records()
                            if "journal" in str(r.get("msg", ""))]
                # Every record read again is before the kill's position:
                # all are counted by now.
                metric = int(it.metric_sum(port, "lugger_records_reread_total"))
                logged, files = reported_rereads(lug)
                reported.append(metric)
                it.log("kill -9 #%d: %d duplicates (%.3f s of input), %d "
                       "lines delivered after lugger's last report of %d; "
                       "lugger reports %d records read again (%d in its "
                       "log, %d files)" % (
                           k + 1, dups, dups / float(RATE), allowed[-1],
                           delivered, metric, logged, files))
                it.check(logged == metric,
                         "kill -9 #%d: the log says %d records were read "
                         "again, lugger_records_reread_total %d" % (
                             k + 1, logged, metric))
                it.check(dups <= metric,
                         "kill -9 #%d: %d duplicates at the output, but "
                         "lugger reports only %d records read again that "
                         "it had sent before (seed %d)" % (
                             k + 1, dups, metric, seed))
            writer.stop()
            final = dict(writer.written)
            it.wait_for(lambda: caught_up(final), 60, "every line delivered",
                        interval=0.2, proc=lug)
            lug.stop(signal.SIGTERM)
        finally:
            writer.halt()
            if lug is not None:
                lug.kill9()
        tr = it.SeqTracker(expected_len=LINE_LEN)
        for r in it.read_jsonl(out):
            tr.add(r)
        lost, dups, missing, extra = tr.summary(final)
        total = sum(final.values())
        it.check(lost == 0, "%d of %d lines lost (first %s, seed %d)" % (
            lost, total, missing, seed))
        it.check(not tr.foreign and not tr.bad_body, "broken output lines")
        over = [(k + 1, d, a) for k, (d, a) in
                enumerate(zip(per_crash, allowed)) if d > a]
        it.check(not over,
                 "kill -9 (#, duplicates, lines delivered after lugger's "
                 "last report before the kill) %s: records lugger had "
                 "reported delivered were read again, seed %d" % (over, seed))
        # A kill right after a save, before the next ack, leaves nothing
        # in the journal: one restart of five may have nothing to say.
        it.check(resumed, "no restart's start-up log says what it resumed "
                 "from the checkpoint journal")
        return ("%d lines, %d kill -9: duplicates per crash %s (bounds %s), "
                "%d in all, 0 lost; lugger's reported re-reads %s, seed %d" % (
                    total, KILLS, per_crash, allowed, dups, reported, seed))


if __name__ == "__main__":
    it.main("test_crash_duplicates", main)
