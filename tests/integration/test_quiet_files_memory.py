#!/usr/bin/env python3
"""Memory of quiet files: most files of a node are pods that log a line now
and then, and each read of such a file hands on a batch of one line. 200
files each append one 100-byte line every 200 ms for ~10 s (1,000 lines/s
in all) into the elasticsearch output (the stand-in es_server.py, written
from the bulk API documentation), which coalesces records for 3 s before a
request, with the default memory budget (32 MiB).

A batch must be charged (and hold) memory in proportion to what it
carries: a regression test for batches of one line that kept the 1.25 MiB
data buffer every batch starts with (and the payload buffers of a pooled
batch), so ~25 of them waiting for the coalescing delay filled the budget:
the sources paused and the output, under budget pressure, sent small
requests early. Checked: lugger_memory_used_bytes on /metrics stays a
small fraction of the budget, bulk requests carry what the coalescing
delay collected, and every line is indexed exactly once (one action per
line, one document per line). Max RSS is logged, not checked: it holds
the 3 s of records the requests now wait for (release build: 22.9 MiB;
15.6 MiB before the fix, whose small requests held fewer)."""

import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import lugger_it as it  # noqa: E402
from es_server import EsServer  # noqa: E402

FILES = 200
PERIOD = 0.2  # s between two lines of one file
SECONDS = 10
LINE = 100
BUDGET = 32 * it.MiB  # settings.memory_budget's default
DELAY = 3.0  # s, the output's max_coalescing_delay
# Memory used may reach this fraction of the budget. One line per batch
# takes a few KiB (recs, the line, its JSON); 200 files x 3 s of lines
# waiting for the delay are a few MiB (3.2 MiB measured). Before the fix:
# the whole budget (33.0 MiB measured).
MAX_USED = BUDGET // 4
# Requests must carry at least this many lines on average: ~3,000 lines
# come in during one coalescing delay, and the output's max records per
# request is 1,000 by default. Before the fix the budget pressure cut them
# to ~22 (459 requests for 10,200 lines; this fix: 11 requests).
MIN_MEAN_ITEMS = 500


class CountingEs(EsServer):
    """The stand-in, also recording each bulk request's action count."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sizes = []

    def bulk(self, req, path_index):
        n = sum(1 for ln in req.body.split(b"\n") if ln.strip()) // 2
        with self.lock:
            self.sizes.append(n)
        return super().bulk(req, path_index)


def run():
    it.require_binary()
    with it.WorkDir("quiet_files_memory") as wd:
        es = CountingEs().start()
        port = it.free_port()
        paths = [wd.p("logs", "q%03d.log" % f) for f in range(FILES)]
        for p in paths:
            open(p, "w").close()
        settings = {"state_dir": wd.state, "http": "127.0.0.1:%d" % port,
                    "checkpoint_interval": "200ms", "rescan_interval": "1s"}
        out = {"type": "elasticsearch", "hosts": [es.url], "index": "logs",
               "max_coalescing_delay": "%ds" % DELAY, "max_retry_time": "0"}
        conf = it.write_config(
            wd.p("lugger.lua"), settings,
            {"app": {"type": "file", "paths": [wd.p("logs", "*.log")],
                     "read_from": "head", "format": "line"}},
            {"main": {"sources": ["app"], "outputs": ["es"]}}, {"es": out})
        used = []
        halt = threading.Event()

        def sample():
            while not halt.is_set():
                st, _ = it.http_get(port, "/metrics", timeout=2)
                if st == 200:
                    used.append(it.metric_sum(port, "lugger_memory_used_bytes"))
                halt.wait(0.1)

        try:
            with it.Lugger(conf) as lg:
                it.wait_for(lambda: it.http_get(port, "/metrics", 2)[0] == 200,
                            30, "/metrics", proc=lg)
                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                rss = it.RssSampler(lg.pid, interval=0.1)
                rss.start()
                w = it.PacedWriter(paths, rate=FILES / PERIOD, line_len=LINE,
                                   burst=1)
                w.start()
                time.sleep(SECONDS)
                w.stop()
                total = sum(w.written.values())
                it.wait_for(lambda: es.items >= total, 60,
                            "%d lines indexed" % total, proc=lg,
                            detail=lambda: "%d items" % es.items)
                halt.set()
                sampler.join()
                rss.stop()
                time.sleep(DELAY + 1)  # nothing more may come
                lg.stop()
            peak = max(used, default=0)
            sizes = list(es.sizes)
            mean = statistics.mean(sizes) if sizes else 0
            it.log("%d lines from %d files: peak memory used %.1f MiB of %d "
                   "MiB (%d samples), max RSS %.1f MiB, %d bulk requests, "
                   "items per request mean %.0f median %.0f" % (
                       total, FILES, peak / it.MiB, BUDGET // it.MiB,
                       len(used), rss.max_kib / 1024.0, len(sizes), mean,
                       statistics.median(sizes) if sizes else 0))
            docs = es.all_docs()
            it.check(es.items == total,
                     "%d bulk actions for %d lines (each exactly once)" % (
                         es.items, total))
            it.check(len(docs) == total,
                     "%d documents for %d lines" % (len(docs), total))
            want = {it.make_line(f, s, LINE).decode().rstrip("\n")
                    for f in range(FILES) for s in range(w.written[f])}
            got = {d["body"] for d in docs.values()}
            it.check(got == want, "documents differ from the lines: %d "
                     "missing, %d unexpected" % (len(want - got),
                                                 len(got - want)))
            it.check(len(used) >= SECONDS * 3,
                     "only %d samples of /metrics" % len(used))
            it.check(peak < MAX_USED,
                     "memory used peaked at %.1f MiB for %d quiet files (one "
                     "line per batch): more than %d MiB of the %d MiB budget" % (
                         peak / it.MiB, FILES, MAX_USED // it.MiB,
                         BUDGET // it.MiB))
            it.check(mean >= MIN_MEAN_ITEMS,
                     "bulk requests carried %.0f lines on average (%d "
                     "requests for %d lines): cut early, not after the %g s "
                     "coalescing delay" % (mean, len(sizes), total, DELAY))
        finally:
            halt.set()
            es.stop()


if __name__ == "__main__":
    it.main("quiet_files_memory", run)
