"""The protocol stand-ins (es_server, loki_server, otlp_server, http_sink)
answer as their documentation says: this checks the documented examples and
rules they emulate, so the output tests built on them test something real.
No lugger process here; plain HTTP from urllib."""

import gzip
import json
import os
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from lugger_it import check, main  # noqa: E402
from es_server import EsServer  # noqa: E402
from loki_server import LokiServer  # noqa: E402
from otlp_server import OtlpServer  # noqa: E402
from http_sink import HttpSink  # noqa: E402


def call(url, body=None, headers=None, method="POST"):
    r = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(r, timeout=10) as f:
            return f.status, f.read(), dict(f.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def ndjson(*objs):
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def es():
    s = EsServer(max_content_length=4096, users={"elastic": "pw"},
                 api_keys={"aWQ6a2V5"}, data_stream_prefixes=("logs-ds-",)).start()
    try:
        auth = {"Authorization": "ApiKey aWQ6a2V5"}
        st, _, h = call(s.url + "/_bulk", ndjson({"create": {"_index": "a"}}, {}))
        check(st == 401 and "WWW-Authenticate" in h, "no credentials: %s" % st)
        st, _, _ = call(s.url + "/_bulk", ndjson({"create": {"_index": "a", "_id": "0"}}, {"x": 1}),
                        {"Authorization": "Basic ZWxhc3RpYzpwdw=="})
        check(st == 200, "basic auth: %s" % st)
        # The bulk API docs' example of filter_path=items.*.error: only the
        # failed item is left, so positions no longer line up.
        body = ndjson({"create": {"_index": "a", "_id": "1"}}, {"k8s.pod.label.app": "web"},
                      {"create": {"_index": "a", "_id": "1"}}, {"k8s.pod.label.app": "web"},
                      {"create": {"_index": "a", "_id": "2"}},
                      {"k8s.pod.label.app.kubernetes.io/name": "web"},
                      {"index": {"_index": "logs-ds-x", "_id": "3"}}, {"@timestamp": "2024-01-01"},
                      {"create": {"_index": "logs-ds-x", "_id": "4"}}, {"m": 1},
                      {"create": {"_index": "Bad", "_id": "5"}}, {})
        st, out, _ = call(s.url + "/_bulk?filter_path=items.*.error", body, auth)
        items = json.loads(out)["items"]
        check(st == 200 and len(items) == 5, "filter_path=items.*.error: %s" % out)
        st, out, _ = call(s.url + "/_bulk?filter_path=errors,items.*.status,items.*.error.type",
                          body.replace(b'"_id": "1"', b'"_id": "9"'), auth)
        r = json.loads(out)
        got = [list(i.values())[0] for i in r["items"]]
        check(r["errors"] is True and [g["status"] for g in got] == [201, 409, 400, 400, 400, 400],
              "statuses in request order: %s" % out)
        check(got[2]["error"]["type"] == "document_parsing_exception", "dotted conflict: %s" % got[2])
        check(got[5]["error"]["type"] == "invalid_index_name_exception", "index name: %s" % got[5])
        st, out, _ = call(s.url + "/_bulk", body[:-1], auth)
        check(st == 400 and b"terminated by a newline" in out, "no final newline: %s" % out)
        st, out, _ = call(s.url + "/_bulk", ndjson({"create": {"_index": "a", "_type": "_doc"}}, {}),
                          auth)
        check(st == 400 and b"_type" in out, "_type: %s" % out)
        big = ndjson({"create": {"_index": "a", "_id": "big"}}, {"b": "x" * 5000})
        st, _, _ = call(s.url + "/_bulk", gzip.compress(big),
                        dict(auth, **{"Content-Encoding": "gzip"}))
        check(st == 413, "413 on the decompressed size: %s" % st)
        s.item_429_ids = {"r": 1}
        one = ndjson({"create": {"_index": "a", "_id": "r"}}, {"x": 2})
        st, out, _ = call(s.url + "/_bulk", one, auth)
        check(json.loads(out)["items"][0]["create"]["status"] == 429, "item 429: %s" % out)
        st, out, _ = call(s.url + "/_bulk", one, auth)
        check(json.loads(out)["items"][0]["create"]["status"] == 201, "retried item: %s" % out)
        s.faults.statuses = [503]
        st, out, _ = call(s.url + "/_bulk", one, auth)
        check(st == 503 and json.loads(out)["status"] == 503, "whole 503: %s" % out)
        st, out, _ = call(s.url + "/a/_count", None, auth, "GET")
        check(json.loads(out)["count"] == 4, "count: %s" % out)
    finally:
        s.stop()
    os_ = EsServer(distribution="opensearch", api_keys={"k"}).start()
    try:
        st, out, _ = call(os_.url + "/", None, {"Authorization": "ApiKey k"}, "GET")
        check(st == 401, "OpenSearch has no ApiKey scheme: %s" % st)
    finally:
        os_.stop()


def loki():
    s = LokiServer(auth_enabled=True).start()
    try:
        now = time.time_ns()
        h = {"Content-Type": "application/json", "X-Scope-OrgID": "t1"}
        push = s.url + "/loki/api/v1/push"
        st, out, _ = call(push, json.dumps({"streams": []}).encode(),
                          {"Content-Type": "application/json"})
        check(st == 401 and out == b"no org id\n", "no tenant: %s %s" % (st, out))
        good = {"stream": {"namespace": "a"}, "values": [[str(now), "l1"], [str(now + 1), "l2", {"k": "v"}]]}
        st, _, _ = call(push, gzip.compress(json.dumps({"streams": [good]}).encode()),
                        dict(h, **{"Content-Encoding": "gzip"}))
        check(st == 204, "push: %s" % st)
        st, _, _ = call(push, json.dumps({"streams": [good]}).encode(), h)
        check(st == 204 and s.stats()["entries"] == 2 and s.duplicates == 2, "dedup: %s" % s.stats())
        mixed = {"streams": [{"stream": {"namespace": "a"}, "values": [
            [str(now + 2), "ok"], [str(now - 2 * 3600 * 10**9), "behind"]]},
            {"stream": {"bad.name": "x"}, "values": [[str(now), "x"]]}]}
        st, out, _ = call(push, json.dumps(mixed).encode(), h)
        check(st == 400 and b"entry too far behind" in out and b"invalid label name" in out,
              "partial 400: %s" % out)
        check(s.stats()["entries"] == 3, "valid entry of a 400 stored: %s" % s.stats())
        st, _, _ = call(push, b"{}", dict(h, **{"Content-Encoding": "br"}))
        check(st == 400, "unsupported encoding: %s" % st)
        s.block_ingestion = True
        st, _, _ = call(push, json.dumps({"streams": [good]}).encode(), h)
        check(st == 260, "blocked: %s" % st)
    finally:
        s.stop()


def otlp():
    s = OtlpServer().start()
    try:
        s.reject_when = lambda r: r["body"].get("stringValue") == "bad"
        rec = lambda b: {"timeUnixNano": "1714564800000000000", "severityNumber": 9,
                         "body": {"stringValue": b}}
        body = {"resourceLogs": [{"resource": {"attributes": [
            {"key": "k8s.pod.name", "value": {"stringValue": "web-1"}}]},
            "scopeLogs": [{"logRecords": [rec("ok"), rec("bad")]}]}]}
        st, out, _ = call(s.url + "/v1/logs", json.dumps(body).encode(),
                          {"Content-Type": "application/json"})
        r = json.loads(out)
        check(st == 200 and r["partialSuccess"]["rejectedLogRecords"] == "1", "partial: %s" % out)
        check(s.records[0]["resource"]["k8s.pod.name"] == "web-1", "stored: %s" % s.records)
        st, _, _ = call(s.url + "/v1/logs", b"\x0a", {"Content-Type": "application/x-protobuf"})
        check(st == 415, "protobuf: %s" % st)
        s.faults.statuses = [503]
        s.faults.retry_after = 2
        st, _, hd = call(s.url + "/v1/logs", b"{}", {"Content-Type": "application/json"})
        check(st == 503 and hd.get("Retry-After") == "2", "503 + Retry-After: %s %s" % (st, hd))
    finally:
        s.stop()
    h = HttpSink().start()
    try:
        st, _, _ = call(h.url + "/ingest", b'{"a":1}\n{"a":2}\n', {"Content-Type": "application/x-ndjson"})
        check(st == 200 and len(h.records) == 2, "ndjson: %s" % h.records)
    finally:
        h.stop()


def run():
    es()
    loki()
    otlp()
    return "stand-ins answer as documented (ES bulk, Loki push, OTLP/HTTP, http sink)"


if __name__ == "__main__":
    main("test_standins", run)
