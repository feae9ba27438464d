"""The otlp and http outputs end to end, against the OTLP/HTTP stand-in
(otlp_server.py; no OpenTelemetry collector can be installed here) and a
generic HTTP receiver (http_sink.py).

otlp:  resource attributes from k8s.*/container.* fields, body, time,
       severity from a field, attributes; a partial success
       (rejectedLogRecords) sends that request's records to the dead-letter
       output with the collector's message; 503 + Retry-After retried
http:  NDJSON and JSON array bodies with the record id; 429/503 retried no
       sooner than Retry-After; 500 retried; a 4xx other than 408/429
       rejected with the answer's first bytes
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import lugger_it as it  # noqa: E402
from otlp_server import OtlpServer  # noqa: E402
from http_sink import HttpSink  # noqa: E402

LINE = 100


def bseq(rec):
    """The sequence number of a test line, from the record's body (a
    dead-letter record carries the body whatever its fields)."""
    return it.parse_line(rec["body"])[1]
SCRIPT = r"""
function process(rec)
  local seq = rec.body:match("^f%d+ s(%d+) ")
  if not seq then return end
  rec.seq = tonumber(seq)
  rec.level = rec.seq % 10 == 0 and "ERROR" or "info"
  rec["k8s.pod.name"] = "web-1"
  rec["container.id"] = "c0ffee"
  if rec.seq % 250 == 7 then rec.bad = true end
end
"""


def write_lines(path, n, start=0):
    with open(path, "ab") as f:
        f.write(b"".join(it.make_line(0, s, LINE) for s in range(start, start + n)))


def config(wd, out):
    s = {"state_dir": wd.state, "memory_budget": "16MiB", "workers": 2,
         "checkpoint_interval": "200ms", "rescan_interval": "1s", "dead_letter": "dl"}
    return it.write_config(
        wd.p("lugger.lua"), s,
        {"app": {"type": "file", "paths": [os.path.join(wd.logs, "*.log")],
                 "read_from": "head", "format": "line"}},
        {"main": {"sources": ["app"], "outputs": ["o"], "scripts": ["s.lua"]}},
        {"o": out, "dl": {"type": "file", "path": wd.p("dl.jsonl"), "fsync": "never"}},
        scripts={"s.lua": SCRIPT})


def dl(wd):
    p = wd.p("dl.jsonl")
    return it.read_jsonl(p, allow_partial_tail=True) if os.path.exists(p) else []


def otlp():
    with it.WorkDir("otlp") as wd:
        srv = OtlpServer().start()
        try:
            srv.faults.statuses = [503]
            srv.faults.retry_after = 1
            srv.reject_when = lambda r: r["attributes"].get("bad") is True
            write_lines(wd.p("logs", "a.log"), 1000)
            conf = config(wd, {"type": "otlp", "hosts": [srv.url], "max_batch_size": 100,
                               "max_coalescing_delay": "50ms"})
            with it.Lugger(conf) as lug:
                it.wait_for(lambda: len({x["attributes"]["seq"] for x in srv.records} |
                                        {bseq(x) for x in dl(wd)}) >= 1000, 60,
                            "records settled", proc=lug,
                            detail=lambda: "%d stored %d dead-lettered" % (len(srv.records), len(dl(wd))))
                lug.stop()
            recs = srv.records
            r = next(x for x in recs if x["attributes"].get("seq") == 10)
            it.check(r["resource"].get("k8s.pod.name") == "web-1" and
                     r["resource"].get("container.id") == "c0ffee", "resource: %s" % r["resource"])
            it.check(r["severityText"] == "ERROR" and r["severityNumber"] == 17, "severity: %s" % r)
            it.check(r["body"]["stringValue"] == it.make_line(0, 10, LINE).decode().rstrip("\n"),
                     "body: %s" % r["body"])
            it.check(abs(r["timeUnixNano"] / 1e9 - time.time()) < 300, "time: %s" % r["timeUnixNano"])
            it.check(r["attributes"].get("log.file.path") == wd.p("logs", "a.log"),
                     "attributes: %s" % r["attributes"])
            rej = dl(wd)
            # 4 requests each had one bad record: all their records are in
            # the dead-letter output with the collector's message.
            stored = {x["attributes"]["seq"] for x in recs}
            rseq = {bseq(x) for x in rej}
            # (The collector stored the others of those requests: they are
            # in both places, which is what "the answer does not say which"
            # costs.)
            it.check(stored | rseq == set(range(1000)) and not (stored & {7, 257, 507, 757}) and
                     {7, 257, 507, 757} <= rseq and len(rej) <= 400 and
                     all("rejected" in x["lugger.error"] for x in rej),
                     "partial success -> dead-letter: %d, %s" % (len(rej), rej[0].get("lugger.error")))
            it.check(srv.injected == 1, "503 retried")
        finally:
            srv.stop()
    return "otlp ok (%d stored, %d dead-lettered after partial success)" % (len(recs), len(rej))


def http():
    res = []
    for fmt in ("ndjson", "json_array"):
        with it.WorkDir("http") as wd:
            srv = HttpSink().start()
            try:
                srv.faults.statuses = [429, 503, 500]
                srv.faults.retry_after = 2
                srv.reject_when = lambda r: (422, b"unprocessable: field bad") if r.get("bad") else None
                write_lines(wd.p("logs", "a.log"), 1000)
                conf = config(wd, {"type": "http", "hosts": [srv.url], "path": "/ingest",
                                   "format": fmt, "max_batch_size": 50, "max_in_flight": 1,
                                   "max_coalescing_delay": "50ms"})
                t0 = time.monotonic()
                with it.Lugger(conf) as lug:
                    it.wait_for(lambda: len(srv.records) + len(dl(wd)) >= 1000, 60,
                                "records settled", proc=lug)
                    lug.stop()
                gaps = [b - a for a, b in zip(srv.times, srv.times[1:])]
                it.check(gaps[0] >= 1.9 and gaps[1] >= 1.9 and gaps[2] >= 1.9,
                         "Retry-After: 2 honoured: %s" % [round(g, 2) for g in gaps[:3]])
                rej = dl(wd)
                rseq = {bseq(r) for r in rej}
                it.check({7, 257, 507, 757} <= rseq and len(rej) <= 200 and
                         all("HTTP 422" in r["lugger.error"] and
                             "unprocessable" in r["lugger.error"] for r in rej),
                         "4 batches rejected with the answer: %d %s" %
                         (len(rej), rej[0].get("lugger.error") if rej else ""))
                seqs = sorted(r["seq"] for r in srv.records)
                it.check(len(seqs) + len(rej) == 1000 and len(set(seqs)) == len(seqs) and
                         not (set(seqs) & rseq), "delivered once: %d" % len(seqs))
                it.check(all(":" in r["lugger.id"] for r in srv.records), "record ids")
                res.append("%s %.1fs" % (fmt, time.monotonic() - t0))
            finally:
                srv.stop()
    return "http ok (%s)" % ", ".join(res)


def run():
    it.require_binary()
    which = sys.argv[1:] or ["otlp", "http"]
    return "; ".join(globals()[w]() for w in which)


if __name__ == "__main__":
    it.main("test_out_otlp_http", run)
