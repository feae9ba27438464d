#!/usr/bin/env python3
"""A stand-in for Grafana Loki's push API (JSON), with fault injection.

No real Loki can be installed here (Debian's `loki` package is a genetics
tool). Written from the Loki HTTP API reference
(grafana/loki docs/sources/reference/loki-http-api.md, "Ingest logs") and
the validation rules and messages of pkg/validation and pkg/distributor as
summarised in shared/notes/outputs-http.md §2:

- POST /loki/api/v1/push, Content-Type application/json,
  Content-Encoding "", gzip or deflate (others: 400). Body
  {"streams":[{"stream":{label:value},"values":[["<ns>","<line>"(,{meta})]]}]}.
  Protobuf+snappy is not emulated (answered 415 by this stand-in).
- 204 No Content on success.
- Validation per stream/entry with Loki's messages: at least one label,
  valid label names ([a-zA-Z_][a-zA-Z0-9_]*), at most 15 label names,
  max_line_size (256 KB), timestamps older than 7 days or more than 10 min
  ahead, structured metadata only as strings; entries older than the
  stream's newest minus 1 h ("entry too far behind"). A request with some
  invalid entries is a partial success: the valid ones are stored and the
  answer is 400 listing the rejected ones (never retry a 400).
- Identical entries (timestamp, line, metadata) in a stream are stored
  once (the ingester's dedup), so a retried request does not duplicate.
- Tenants: X-Scope-OrgID (auth_enabled: a missing one is 401 "no org id").
- Faults: whole-request 429 "Ingestion rate limit exceeded ..." when
  `rate_limited` is set, 260 with a message while `block_ingestion` is set
  (nothing stored), statuses/resets/delays via fake_http.Faults, 413 above
  `max_body` bytes.
- For the tests: `streams` (tenant, labels) -> list of (ts_ns, line, meta),
  `concurrent_stream_requests`: how often a stream was in two requests being
  handled at the same time (lugger must never do that).
"""

import json
import re
import threading
import time

from fake_http import FakeServer, run_standalone

_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_HOUR_NS = 3600 * 10**9
_ENTRY = re.compile(rb'\["\d+",')


def go_time(ts_ns):
    """Go's time.Time.String() in UTC, as Loki prints timestamps in its
    errors: "2024-05-01 12:00:00.123456789 +0000 UTC" (fraction trimmed)."""
    sec, ns = divmod(ts_ns, 10**9)
    out = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
    if ns:
        out += ("." + "%09d" % ns).rstrip("0")
    return out + " +0000 UTC"


def label_string(labels):
    return "{" + ", ".join('%s="%s"' % (k, str(v).replace("\\", "\\\\").replace('"', '\\"'))
                           for k, v in sorted(labels.items())) + "}"


class LokiServer(FakeServer):
    name = "loki"

    def __init__(self, auth_enabled=False, max_line_size=256 * 1024,
                 max_label_names=15, hold_s=0.0, **kw):
        super().__init__(**kw)
        self.auth_enabled = auth_enabled
        self.max_line_size = max_line_size
        self.max_label_names = max_label_names
        self.hold_s = hold_s        # each push holds its streams this long
        self.rate_limited = False
        # Loki's limits_config.reject_old_samples (default true, 7 days).
        self.reject_old_samples = True
        # Lines holding this text are refused as if over max_line_size.
        self.reject_containing = None
        self.block_ingestion = False
        self.streams = {}           # (tenant, labels tuple) -> [(ts, line, meta)]
        self.newest = {}            # (tenant, labels) -> newest ts
        self.seen = {}              # (tenant, labels) -> set of (ts, line, meta)
        self.active = {}            # (tenant, labels) -> requests handling it
        self.concurrent_stream_requests = 0
        self.pushes = 0
        self.duplicates = 0
        self.rejected = 0
        self.tenants = set()
        # store=False (benchmarks): count entries, keep nothing.
        self.store = True
        self.counted = 0

    def error_body(self, status, reason):
        if status == 429:
            return (b"Ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec) "
                    b"while attempting to ingest '1' lines totaling '1' bytes, reduce log "
                    b"volume or contact your Loki administrator to see if the limit can be "
                    b"increased")
        return (reason + "\n").encode()

    def entries(self, tenant=None):
        with self.lock:
            return [(t, dict(k), e) for (t, k), v in self.streams.items()
                    if tenant is None or t == tenant for e in v]

    def records_jsonl(self):
        return b"".join(l.encode() + b"\n" for v in self.streams.values()
                        for (_, l, _) in v)

    def stats(self):
        s = super().stats()
        s.update({"pushes": self.pushes, "streams": len(self.streams),
                  "entries": sum(len(v) for v in self.streams.values()),
                  "duplicates": self.duplicates, "rejected": self.rejected,
                  "concurrent_stream_requests": self.concurrent_stream_requests,
                  "counted": self.counted})
        return s

    def handle(self, req):
        if req.path == "/ready":
            return 200, [], b"ready\n"
        if req.path != "/loki/api/v1/push" or req.method != "POST":
            return 404, [], b"404 page not found\n"
        ctype = req.headers.get("content-type", "")
        if not ctype:
            return 400, [], b"mime: no media type\n"
        if ctype.split(";")[0].strip() != "application/json":
            return 415, [], b"protobuf pushes are not emulated by this stand-in\n"
        tenant = req.headers.get("x-scope-orgid")
        if self.auth_enabled and not tenant:
            return 401, [], b"no org id\n"
        if tenant and "|" in tenant:
            return 400, [], b"multiple org IDs present\n"
        tenant = tenant or "fake"
        if self.rate_limited:
            return 429, [], self.error_body(429, "")
        if self.block_ingestion:
            return 260, [], ("ingestion blocked for user %s until '%s' with status code 260\n"
                             % (tenant, "2099-01-01T00:00:00Z")).encode()
        if not self.store:
            with self.lock:
                self.pushes += 1
                self.counted += len(_ENTRY.findall(req.body))
            return 204, [], b""
        try:
            body = json.loads(req.body)
            streams = body["streams"]
            assert isinstance(streams, list)
        except Exception as e:
            return 400, [], ("loghttp.PushRequest.Streams: %s\n" % e).encode()
        keys = []
        for s in streams:
            labels = s.get("stream") or {}
            keys.append((tenant, tuple(sorted(labels.items()))))
        with self.lock:
            self.pushes += 1
            self.tenants.add(tenant)
            for k in set(keys):
                if self.active.get(k, 0) > 0:
                    self.concurrent_stream_requests += 1
                self.active[k] = self.active.get(k, 0) + 1
        try:
            if self.hold_s:
                time.sleep(self.hold_s)
            return self._push(tenant, streams, keys)
        finally:
            with self.lock:
                for k in set(keys):
                    self.active[k] -= 1

    def _push(self, tenant, streams, keys):
        now = time.time_ns()
        errors = []
        with self.lock:
            for s, key in zip(streams, keys):
                labels = s.get("stream") or {}
                ls = label_string(labels)
                values = s.get("values") or []
                if not labels:
                    errors.append("error at least one label pair is required per stream")
                    self.rejected += len(values)
                    continue
                bad = [n for n in labels if not _LABEL.match(n)]
                if bad:
                    errors.append("Error parsing labels '%s' with error: invalid label name %s"
                                  % (ls, bad[0]))
                    self.rejected += len(values)
                    continue
                if len(labels) > self.max_label_names:
                    errors.append("entry for stream '%s' has %d label names; limit %d"
                                  % (ls, len(labels), self.max_label_names))
                    self.rejected += len(values)
                    continue
                ignored = []
                for v in values:
                    try:
                        ts = int(v[0])
                        line = v[1]
                        meta = v[2] if len(v) > 2 else {}
                        assert isinstance(line, str) and isinstance(meta, dict)
                        assert all(isinstance(x, str) for x in meta.values())
                    except Exception:
                        errors.append("loghttp.PushRequest.Streams: invalid entry %r" % (v,))
                        self.rejected += 1
                        continue
                    reason = None
                    limit = self.max_line_size
                    if self.reject_containing and self.reject_containing in line:
                        limit = len(line.encode()) - 1
                    if len(line.encode()) > limit:
                        reason = ("Max entry size '%d' bytes exceeded for stream '%s' while "
                                  "adding an entry with length '%d' bytes"
                                  % (limit, ls, len(line.encode())))
                    elif self.reject_old_samples and ts < now - 7 * 24 * _HOUR_NS:
                        reason = ("entry for stream '%s' has timestamp too old: %s, oldest "
                                  "acceptable timestamp is: %s" % (ls, go_time(ts),
                                                                   go_time(now - 7 * 24 * _HOUR_NS)))
                    elif ts > now + 10 * 60 * 10**9:
                        reason = "entry for stream '%s' has timestamp too new: %s" % (ls, go_time(ts))
                    if reason:
                        errors.append(reason)
                        self.rejected += 1
                        continue
                    newest = self.newest.get(key)
                    if newest is not None and ts < newest - _HOUR_NS:
                        ignored.append(ts)
                        self.rejected += 1
                        continue
                    sig = (ts, line, json.dumps(meta, sort_keys=True))
                    seen = self.seen.setdefault(key, set())
                    if sig in seen:
                        self.duplicates += 1
                        continue
                    seen.add(sig)
                    self.streams.setdefault(key, []).append((ts, line, meta))
                    if newest is None or ts > newest:
                        self.newest[key] = ts
                if ignored:
                    # As the ingester words it (stream.go errorForFailedEntries):
                    # one line per ignored entry, at most 10, then the total.
                    oldest = go_time(self.newest[key] - _HOUR_NS)
                    msg = "".join(
                        "entry with timestamp %s ignored, reason: 'entry too far behind, "
                        "oldest acceptable timestamp is: %s',\n" % (go_time(t), oldest)
                        for t in ignored[:10])
                    msg += "user '%s', total ignored: %d out of %d for stream: %s" % (
                        tenant, len(ignored), len(values), ls)
                    errors.append(msg)
        if errors:
            return 400, [], ("\n".join(errors) + "\n").encode()
        return 204, [], b""


if __name__ == "__main__":
    import sys
    srv = LokiServer()
    srv.store = "--no-store" not in sys.argv
    run_standalone(srv)
