#!/usr/bin/env python3
"""lugger counts the duplicates a crash causes: records it reads again after
a restart that it had sent to an output before the crash.

An `http` output sends to a receiver (http_sink.py, a stand-in written for
these tests) that stores every request's records and then, while the test
holds it, does not answer: the records have reached the backend but are
not acked, so lugger's checkpoint stays before them. Two files:

1. 1,000 lines of a.log are delivered and acked (answers on).
2. Answers held; 1,500 more lines to a.log and 1,500 to b.log. lugger sends
   max_in_flight (2) requests of max_batch_size (400) records, which the
   receiver stores without answering; the other lines are read but wait.
3. kill -9; answers on again; restart. lugger reads from the checkpoints:
   the 800 records of the two held requests reach the receiver a second
   time. Its log names each file with the count of records it read again
   that had been sent before the crash, and lugger_records_reread_total
   has the sum. Both must equal the duplicates the receiver got, per file:
   here every record that was sent reached the receiver, so the count is
   exact (in general it is an upper bound: test_crash_duplicates.py says
   why). Lines read but never sent before the crash are not counted.
4. A file lugger opened while shorter than its fingerprint's 1 KiB (a new
   container's log starts empty) whose records were sent but never acked
   before kill -9: its fingerprint has grown since the checkpoint entry
   was written, and the 400 records read again are counted all the same
   (they were not, before lugger moved the entry to the grown
   fingerprint with the sent mark).
"""

import json
import os
import re
import threading

import lugger_it as it
from http_sink import HttpSink

BATCH = 400
IN_FLIGHT = 2
REREAD_RE = re.compile(
    r"^(.*): (\d+) records read again after the restart had been sent")


class HoldingSink(HttpSink):
    """Stores each request's records, then answers only once `release` is
    set (at most 120 s later)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.release = threading.Event()
        self.release.set()

    def handle(self, req):
        ans = super().handle(req)
        self.release.wait(120)
        return ans


def write(path, name, first, n):
    with open(path, "a") as f:
        for i in range(first, first + n):
            f.write("%s %06d %s\n" % (name, i, "x" * 40))


def counts(sink):
    """{(file name, line number): times received}."""
    with sink.lock:
        recs = list(sink.records)
    c = {}
    for r in recs:
        name, num = r["body"].split(" ")[:2]
        c[(name, int(num))] = c.get((name, int(num)), 0) + 1
    return c


def short_at_open(sink):
    """Part 4: c.log is empty when lugger opens it; 400 lines are then
    sent in one request the receiver holds; kill -9, restart."""
    with it.WorkDir("reread-short") as wd:
        c = os.path.join(wd.logs, "c.log")
        open(c, "w").close()
        port = it.free_port()
        conf = it.simple_config(
            wd, [c], settings={"http": "127.0.0.1:%d" % port, "workers": 1},
            output={"type": "http", "hosts": [sink.url], "path": "/ingest",
                    "max_batch_size": BATCH, "max_in_flight": 1,
                    "max_coalescing_delay": "200ms"})
        sink.release.clear()
        lug = it.Lugger(conf)
        try:
            lug.wait_started()
            it.wait_for(lambda: any("c.log: empty file" in str(r.get("msg"))
                                    for r in lug.log_records()), 10,
                        "c.log opened while empty", proc=lug)
            write(c, "c", 0, BATCH)
            it.wait_for(lambda: len(sink.records) >= BATCH, 30,
                        "the request held by the receiver", proc=lug)
            lug.kill9()
            lug.check_sanitizers()
        finally:
            sink.release.set()
        lug = it.Lugger(conf)
        with lug:
            lug.wait_started()
            it.wait_for(lambda: len(sink.records) >= 2 * BATCH, 60,
                        "the records sent again", proc=lug)
            metric = int(it.metric_sum(port, "lugger_records_reread_total"))
            logged = [r["msg"] for r in lug.log_records()
                      if REREAD_RE.match(str(r.get("msg", "")))]
            lug.stop()
        got = counts(sink)
        it.check(len(got) == BATCH and all(v == 2 for v in got.values()),
                 "receiver: %d distinct lines, counts %s" % (
                     len(got), sorted(set(got.values()))))
        it.check(metric == BATCH and len(logged) == 1 and
                 REREAD_RE.match(logged[0]).group(2) == str(BATCH),
                 "lugger_records_reread_total %d, logged %r; %d records "
                 "were sent twice" % (metric, logged, BATCH))
        return metric


def main():
    it.require_binary()
    sink = HoldingSink().start()
    try:
        with it.WorkDir("reread") as wd:
            a, b = os.path.join(wd.logs, "a.log"), os.path.join(wd.logs,
                                                                 "b.log")
            write(a, "a", 0, 1000)
            open(b, "w").close()
            port = it.free_port()
            conf = it.simple_config(
                wd, [os.path.join(wd.logs, "*.log")],
                settings={"http": "127.0.0.1:%d" % port, "workers": 1},
                output={"type": "http", "hosts": [sink.url],
                        "path": "/ingest", "max_batch_size": BATCH,
                        "max_in_flight": IN_FLIGHT,
                        "max_coalescing_delay": "200ms"})
            lug = it.Lugger(conf)
            try:
                lug.wait_started()
                it.wait_for(lambda: len(counts(sink)) == 1000, 30,
                            "the first 1,000 lines delivered", proc=lug)
                it.wait_for(lambda: it.metric_sum(
                    port, "lugger_output_requests_in_flight") == 0, 10,
                    "their acks", proc=lug)
                sink.release.clear()
                write(a, "a", 1000, 1500)
                write(b, "b", 0, 1500)
                held = 1000 + IN_FLIGHT * BATCH
                it.wait_for(lambda: len(sink.records) >= held, 30,
                            "%d requests held by the receiver" % IN_FLIGHT,
                            proc=lug)
                it.wait_for(lambda: it.metric_sum(
                    port, "lugger_records_read_total") == 4000, 30,
                    "every line read", proc=lug)
                it.check(len(sink.records) == held,
                         "the receiver got %d records, expected %d" % (
                             len(sink.records), held))
                it.check(it.metric_sum(port, "lugger_records_reread_total")
                         == 0, "re-reads counted before any restart")
                lug.kill9()
                lug.check_sanitizers()
            finally:
                sink.release.set()
            lug = it.Lugger(conf)
            with lug:
                lug.wait_started()
                it.wait_for(lambda: len(counts(sink)) == 4000, 60,
                            "every line delivered", proc=lug)
                got = counts(sink)
                dups = {}
                for (name, _), k in got.items():
                    dups[name] = dups.get(name, 0) + k - 1
                metric = int(it.metric_sum(port,
                                           "lugger_records_reread_total"))
                logged = {}
                for r in lug.log_records():
                    m = REREAD_RE.match(str(r.get("msg", "")))
                    if m:
                        name = os.path.basename(m.group(1))[0]
                        logged[name] = logged.get(name, 0) + int(m.group(2))
                lug.stop()
            total = sum(dups.values())
            it.check(total == IN_FLIGHT * BATCH,
                     "the receiver got %d duplicates, expected the %d records "
                     "of the held requests" % (total, IN_FLIGHT * BATCH))
            it.check(metric == total,
                     "lugger_records_reread_total %d, duplicates %d" % (
                         metric, total))
            want = {k: v for k, v in dups.items() if v > 0}
            it.check(logged == want,
                     "logged re-reads per file %s, duplicates per file %s" % (
                         json.dumps(logged, sort_keys=True),
                         json.dumps(want, sort_keys=True)))
    finally:
        sink.stop()
    sink = HoldingSink().start()
    try:
        short = short_at_open(sink)
    finally:
        sink.stop()
    return ("%d duplicates after kill -9 (per file %s); lugger reported %d "
            "(log %s); a file first seen empty: %d of %d counted" % (
                total, want, metric, logged, short, BATCH))


if __name__ == "__main__":
    it.main("test_reread_count", main)
