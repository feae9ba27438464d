#!/usr/bin/env python3
"""podman + runc write CRI logs (k8s-file log driver); lugger reads them.

Two containers run the workload of runtime/rt.py at the same time from a
busybox-static root filesystem while lugger tails their log files with a
`file` source, format "cri". conmon writes each line as
`<time> <stream> <P|F> <message>`, cutting lines longer than 8 KiB into P
chunks, and leaves output without a trailing newline as a last P chunk.

Checked record by record, per container and per stream: the body is
exactly what the container printed (P chunks joined, CR and UTF-8 kept,
empty line kept), in the order printed; log.iostream is the stream; the
time is the timestamp of the CRI line the record starts at (read by an
independent parser) and lies within the container's run; nothing else
comes out. The last words without a newline arrive after flush_timeout.
"""

import os
import signal
import time

import lugger_it as it
from runtime import rt


def run():
    it.require_binary()
    with it.WorkDir("runtime-podman") as wd:
        podman = rt.Podman()
        names = ("web", "api")
        loads = {n: rt.Workload(n, plain=300) for n in names}
        logs = {n: os.path.join(wd.logs, "%s.log" % n) for n in names}
        out = wd.p("out.jsonl")
        conf = it.simple_config(
            wd, [os.path.join(wd.logs, "*.log")], out,
            source={"format": "cri", "flush_timeout": "300ms"})
        lug = it.Lugger(conf)
        try:
            rootfs = {n: rt.make_rootfs(wd.p("rootfs-" + n)) for n in names}
            t_min = rt.now_ns()
            t0 = time.monotonic()
            procs = {n: podman.start(rootfs[n], logs[n], loads[n].script,
                                     "lugger-it-" + n) for n in names}
            for n in names:
                podman.wait(procs[n])
            run_s = time.monotonic() - t0
            t_max = rt.now_ns()
            it.log("containers done in %.2f s" % run_s)
            want = sum(w.total() for w in loads.values())
            it.wait_for(lambda: rt.count_lines(out) >= want, 30,
                        "%d records from the podman logs" % want, proc=lug,
                        detail=lambda: "%d so far" % rt.count_lines(out))
            deliver_s = time.monotonic() - t0
            time.sleep(0.5)  # a duplicate or a stray record would show now
            lug.stop(signal.SIGTERM)
        finally:
            lug.kill9()
            podman.stop()
        by = rt.records_by_path(out)
        it.check(set(by) == set(logs.values()), "records for files %r, "
                 "expected %r" % (sorted(by), sorted(logs.values())))
        checked = chunks = cri_lines = 0
        for n in names:
            counts = {}
            ref = rt.read_cri_file(logs[n], counts)
            it.check(counts.get("partial", 0) >= 30, "%s: only %d P chunks "
                     "in %s; conmon should cut the long lines" % (
                         n, counts.get("partial", 0), logs[n]))
            chunks += counts["partial"]
            cri_lines += counts["lines"]
            checked += rt.check_file_records("podman " + n, by[logs[n]],
                                             loads[n].expected, ref, t_min,
                                             t_max)
        rt.check_nothing_left(wd.path)
        nbytes = sum(os.path.getsize(p) for p in logs.values())
        return ("%d records from %d CRI lines (%d P chunks, %d bytes) of 2 "
                "podman containers exact (body, stream, time, order); "
                "containers ran %.2f s, all delivered after %.2f s" % (
                    checked, cri_lines, chunks, nbytes, run_s, deliver_s))


if __name__ == "__main__":
    rt.main("runtime_podman", run)
