#!/usr/bin/env python3
"""A stand-in for an OpenTelemetry collector's OTLP/HTTP logs receiver
(JSON encoding), with fault injection.

No OpenTelemetry collector can be installed here. Written from the OTLP
specification (opentelemetry-proto docs/specification.md, "OTLP/HTTP":
POST /v1/logs, Content-Type application/json with the proto3 JSON mapping
(lowerCamelCase field names, 64-bit integers as strings, trace/span ids in
hex), gzip request bodies, the ExportLogsServiceResponse with
`partialSuccess` {rejectedLogRecords, errorMessage}, "retryable" statuses
429, 502, 503, 504 honouring Retry-After, other 4xx not retryable, error
bodies as google.rpc.Status, 415 for an unsupported Content-Type):

- Records are stored flattened: resource attributes, scope, and the record
  (timeUnixNano, severityNumber/Text, body, attributes).
- `reject_when(record) -> bool`: records it accepts are rejected, answered
  200 with partialSuccess (count and message), as a collector's
  exporter-side validation would.
- Malformed JSON or a record with a bad field type is 400 (not retryable).
- Faults: statuses with Retry-After, resets, delays (fake_http.Faults).
"""

import json

from fake_http import FakeServer, run_standalone


def attrs(kvs):
    out = {}
    for kv in kvs or []:
        v = kv["value"]
        (t, x), = v.items()
        if t == "intValue":
            x = int(x)
        out[kv["key"]] = x
    return out


class OtlpServer(FakeServer):
    name = "otlp"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.records = []
        self.reject_when = None
        self.reject_containing = None  # bodies holding it are rejected
        self.rejected = 0
        self.exports = 0

    def error_body(self, status, reason):
        code = {400: 3, 401: 16, 403: 7, 404: 5, 413: 8, 429: 8, 502: 14,
                503: 14, 504: 4}.get(status, 2)
        return json.dumps({"code": code, "message": reason}).encode()

    def records_jsonl(self):
        return b"".join(json.dumps(dict(r["attributes"], body=r["body"].get("stringValue"),
                                        **r["resource"]), separators=(",", ":")).encode() + b"\n"
                        for r in self.records)

    def stats(self):
        s = super().stats()
        s.update({"records": len(self.records), "rejected": self.rejected,
                  "exports": self.exports})
        return s

    def handle(self, req):
        hj = [("Content-Type", "application/json")]
        if req.path != "/v1/logs" or req.method != "POST":
            return 404, hj, self.error_body(404, "not found")
        ctype = req.headers.get("content-type", "").split(";")[0].strip()
        if ctype != "application/json":
            return 415, hj, self.error_body(415, "unsupported content type %r" % ctype)
        try:
            body = json.loads(req.body)
            got = []
            for rl in body.get("resourceLogs", []):
                res = attrs(rl.get("resource", {}).get("attributes"))
                for sl in rl.get("scopeLogs", []):
                    scope = sl.get("scope", {})
                    for r in sl.get("logRecords", []):
                        rec = {"resource": res, "scope": scope.get("name"),
                               "timeUnixNano": int(r.get("timeUnixNano", "0")),
                               "observedTimeUnixNano": int(r.get("observedTimeUnixNano", "0")),
                               "severityNumber": int(r.get("severityNumber", 0)),
                               "severityText": r.get("severityText", ""),
                               "body": r.get("body", {}),
                               "attributes": attrs(r.get("attributes"))}
                        if not isinstance(rec["severityText"], str):
                            raise ValueError("severityText must be a string")
                        got.append(rec)
        except Exception as e:
            return 400, hj, self.error_body(400, "unable to decode the request: %s" % e)
        rejected = 0
        with self.lock:
            self.exports += 1
            for rec in got:
                body = rec["body"].get("stringValue", "")
                if (self.reject_when is not None and self.reject_when(rec)) or \
                        (self.reject_containing and self.reject_containing in body):
                    rejected += 1
                else:
                    self.records.append(rec)
            self.rejected += rejected
        if rejected:
            return 200, hj, json.dumps({"partialSuccess": {
                "rejectedLogRecords": str(rejected),
                "errorMessage": "%d log records rejected: body too long" % rejected}}).encode()
        return 200, hj, b"{}"


if __name__ == "__main__":
    run_standalone(OtlpServer())
