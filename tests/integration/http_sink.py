#!/usr/bin/env python3
"""A generic HTTP receiver for the `http` output's tests: records the
batches POSTed to it (NDJSON or a JSON array, gzip decoded) and answers
2xx, or what fake_http.Faults injects (statuses with Retry-After, resets,
delays). `reject_when(record) -> (status, body) or None` answers a whole
batch with a 4xx when one of its records matches."""

import json

from fake_http import FakeServer, run_standalone


class HttpSink(FakeServer):
    name = "http"

    def __init__(self, path="/ingest", status=200, **kw):
        super().__init__(**kw)
        self.path = path
        self.status = status
        self.records = []
        self.batches = 0
        self.reject_when = None
        self.reject_containing = None  # a batch holding it: 422

    def records_jsonl(self):
        return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in self.records)

    def stats(self):
        s = super().stats()
        s.update({"records": len(self.records), "batches": self.batches})
        return s

    def handle(self, req):
        if req.path != self.path or req.method not in ("POST", "PUT"):
            return 404, [], b"not found"
        ctype = req.headers.get("content-type", "").split(";")[0].strip()
        try:
            if ctype == "application/json":
                recs = json.loads(req.body)
                assert isinstance(recs, list)
            else:
                recs = [json.loads(l) for l in req.body.split(b"\n") if l.strip()]
        except Exception as e:
            return 400, [], ("bad body: %s" % e).encode()
        if self.reject_containing and self.reject_containing.encode() in req.body:
            return 422, [], ("unprocessable entity: a record holds %s" %
                             self.reject_containing).encode()
        if self.reject_when is not None:
            for r in recs:
                ans = self.reject_when(r)
                if ans:
                    return ans[0], [], ans[1]
        with self.lock:
            self.batches += 1
            self.records.extend(recs)
        return self.status, [], b""


if __name__ == "__main__":
    run_standalone(HttpSink())
