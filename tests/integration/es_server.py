#!/usr/bin/env python3
"""A stand-in for Elasticsearch 8 / OpenSearch 2: the _bulk API as
documented, with fault injection.

No real Elasticsearch or OpenSearch can be installed here; this server is
written from the official documentation (Elasticsearch bulk API reference
docs/reference/docs/bulk.asciidoc and
https://elastic.co/docs/api/doc/elasticsearch/operation/operation-bulk,
networking settings for http.max_content_length, the OpenSearch bulk page)
and the facts collected in shared/notes/outputs-http.md §1. What it does:

- POST/PUT /_bulk and /{index}/_bulk: NDJSON, the last line must end with
  "\\n" (else a top-level 400 illegal_argument_exception); action lines with
  exactly one of index|create|update|delete; `_type` refused (removed in 8);
  per-item results in request order; `filter_path` as Elasticsearch applies
  it (dotted patterns, `*`, empty objects dropped, so
  `filter_path=items.*.error` shifts positions while
  `items.*.status` keeps one entry per action).
- Documents stored per index by _id: `create` of an existing _id is a
  per-item 409 version_conflict_engine_exception; `index` overwrites
  (200 updated) or creates (201); no _id = a generated one.
- Dynamic mapping: dotted keys are object paths; the first type of a path
  wins (object, long, double, boolean, date by date detection, text); an
  object-vs-value or type conflict is a per-item 400
  document_parsing_exception with Elasticsearch's messages (e.g.
  `k8s.pod.label.app` next to `k8s.pod.label.app.kubernetes.io/name`);
  more than `total_fields_limit` (1000) fields is a per-item 400
  illegal_argument_exception.
- Data streams (`data_stream_prefixes`): only `create`, and `@timestamp` is
  required (per-item 400s with the documented messages).
- Invalid index names (upper case, \\ / * ? " < > | , # space, leading - _ +)
  are per-item 400 invalid_index_name_exception.
- http.max_content_length on the decompressed body: 413 (empty body, as
  Elasticsearch's HTTP layer answers); gzip and deflate request bodies.
- GET / (version), GET /{index}/_count, GET /{index}/_doc/{id}.
- Faults: `request_400_containing` (a marker): a bulk body holding it is
  refused whole with 400 x_content_parse_exception naming the line, as
  Elasticsearch answers a request it cannot parse (one bad line rejects
  every action of it); `index_missing_until` (time.monotonic()) with
  `index_missing_mode`: "item" = per-item 404 index_not_found_exception
  (Elasticsearch with action.auto_create_index=false or require_alias,
  since 5.4 / elastic/elasticsearch#24048), "request" = the whole
  request 404 (Quickwit's Elasticsearch-compatible _bulk, quickwit#4425).
  No server found omits an item's `status`, so that is not emulated.
- Faults: per-item 429 es_rejected_execution_exception for a fraction of
  items (`item_429_rate`, seeded) or chosen _ids (`item_429_ids`: id ->
  times), per-item 503, whole-request statuses/resets/delays/truncation
  (fake_http.Faults), auth (Basic, ApiKey; OpenSearch flavour refuses
  ApiKey).
- `reject_containing` items are refused with a per-item 400 whose type is
  `reject_type` (document_parsing_exception, or e.g. Elasticsearch 7's
  mapper_parsing_exception); `item_log`, when a list, gets every item's
  (_id, status, source, time.monotonic()) in the order they were taken.
"""

import json
import random
import re
import threading
import time
import uuid

from fake_http import FakeServer, run_standalone

_BAD_INDEX = re.compile(r'[\\/*?"<>| ,#:A-Z]')
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


def es_error(status, etype, reason, extra=None):
    e = {"type": etype, "reason": reason}
    if extra:
        e.update(extra)
    return {"error": {"root_cause": [dict(e)], **e}, "status": status}


def filter_path(obj, patterns):
    """Elasticsearch's response filtering: keep what a pattern names."""
    pats = [p.split(".") for p in patterns if p]

    def keep(node, pl):
        if any(len(p) == 0 for p in pl):
            return node, True
        if isinstance(node, list):
            out = []
            for x in node:
                v, ok = keep(x, pl)
                if ok:
                    out.append(v)
            return out, bool(out)
        if not isinstance(node, dict):
            return None, False
        out = {}
        for k, v in node.items():
            sub = [p[1:] for p in pl if p[0] == "*" or p[0] == k]
            if not sub:
                continue
            fv, ok = keep(v, sub)
            if ok:
                out[k] = fv
        return out, bool(out)

    v, ok = keep(obj, pats)
    return v if ok else {}


class Index:
    def __init__(self, name, data_stream=False):
        self.name = name
        self.uuid = uuid.uuid4().hex[:22]
        self.docs = {}      # _id -> source
        self.mapping = {}   # dotted path -> object|long|double|boolean|date|text
        self.data_stream = data_stream
        self.seq = 0


class ParseError(Exception):
    def __init__(self, etype, reason):
        super().__init__(reason)
        self.etype = etype
        self.reason = reason


class EsServer(FakeServer):
    name = "elasticsearch"

    def __init__(self, distribution="elasticsearch", max_content_length=100 << 20,
                 data_stream_prefixes=(), total_fields_limit=1000, seed=1,
                 store=True, **kw):
        super().__init__(max_body=max_content_length, **kw)
        # store=False (benchmarks): every action is answered 201 without
        # parsing or keeping the documents, so the stand-in's own CPU and
        # memory stay small; only the action count is checked.
        self.store = store
        self.distribution = distribution
        self.indices = {}
        self.data_stream_prefixes = tuple(data_stream_prefixes)
        self.total_fields_limit = total_fields_limit
        self.item_429_rate = 0.0
        self.item_429_ids = {}
        self.item_503_rate = 0.0
        self.reject_containing = None  # sources holding it: item 400
        self.reject_type = "document_parsing_exception"  # its error.type
        # When a list, every item's (_id, status, source, time.monotonic())
        # is appended in the order the server took them (an arrival log).
        self.item_log = None
        self.request_400_containing = None  # bodies holding it: whole 400
        self.request_400s = 0
        self.index_missing_until = 0.0   # time.monotonic(): 404 before it
        self.index_missing_mode = "item"  # or "request"
        self.index_missing_404s = 0
        self.rng = random.Random(seed)
        # Counters for the tests.
        self.bulk_requests = 0
        self.items = 0
        self.item_status = {}   # status -> count
        self.bulk_paths = []    # last paths with query, for checks
        if distribution == "opensearch":
            self.api_keys = set()

    def stats(self):
        s = super().stats()
        s.update({"bulk_requests": self.bulk_requests, "items": self.items,
                  "item_status": self.item_status,
                  "docs": {n: len(i.docs) for n, i in self.indices.items()}})
        return s

    def error_body(self, status, reason):
        etype = {429: "es_rejected_execution_exception",
                 503: "unavailable_shards_exception",
                 401: "security_exception"}.get(status, "exception")
        return json.dumps(es_error(status, etype, reason)).encode()

    def auth_error(self, headers):
        return 401, [("WWW-Authenticate", 'Basic realm="security" charset="UTF-8"'),
                     ("WWW-Authenticate", "ApiKey")], json.dumps(es_error(
                         401, "security_exception",
                         "missing authentication credentials for REST request [/_bulk]",
                         {"header": {"WWW-Authenticate": ['Basic realm="security"']}})).encode()

    def auth_ok(self, headers):
        a = headers.get("authorization", "")
        if self.distribution == "opensearch" and a.startswith("ApiKey "):
            return False
        return super().auth_ok(headers)

    def records_jsonl(self):
        return b"".join(json.dumps(d, separators=(",", ":")).encode() + b"\n"
                        for x in self.indices.values() for d in x.docs.values())

    # --- documents -----------------------------------------------------
    def all_docs(self):
        """{(index, _id): source} over every index."""
        with self.lock:
            return {(n, i): d for n, x in self.indices.items() for i, d in x.docs.items()}

    def index_for(self, name):
        idx = self.indices.get(name)
        if idx is None:
            ds = any(name.startswith(p) for p in self.data_stream_prefixes)
            idx = self.indices[name] = Index(name, ds)
        return idx

    def _leaves(self, src):
        """Flattens a source into (dotted path components, value, kind)."""
        out = []

        def walk(prefix, v):
            if isinstance(v, dict):
                if prefix:
                    out.append((prefix, None, "object"))
                for k, x in v.items():
                    if k == "":
                        raise ParseError("document_parsing_exception",
                                         "field name cannot be an empty string")
                    walk(prefix + k.split("."), x)
            elif isinstance(v, list):
                for x in v:
                    walk(prefix, x)
            elif v is None:
                pass
            else:
                out.append((prefix, v, "value"))

        walk([], src)
        return out

    @staticmethod
    def _type_of(v):
        if isinstance(v, bool):
            return "boolean"
        if isinstance(v, int):
            return "long"
        if isinstance(v, float):
            return "float"
        if isinstance(v, str) and _DATE.match(v):
            return "date"
        return "text"

    def _check_value(self, path, t, v, doc_id):
        ok = True
        if t == "long" and not isinstance(v, (int, float)):
            try:
                float(v)
            except (TypeError, ValueError):
                ok = False
        elif t == "float" and isinstance(v, str):
            try:
                float(v)
            except ValueError:
                ok = False
        elif t == "date" and not (isinstance(v, (int, float)) and not isinstance(v, bool)) \
                and not (isinstance(v, str) and _DATE.match(v)):
            ok = False
        elif t == "boolean" and not (isinstance(v, bool) or v in ("true", "false", "")):
            ok = False
        if not ok:
            raise ParseError(
                "document_parsing_exception",
                "[1:2] failed to parse field [%s] of type [%s] in document with id '%s'. "
                "Preview of field's value: '%s'" % (path, t, doc_id, v))

    def _map(self, idx, src, doc_id):
        """Checks `src` against the index's dynamic mapping and returns the
        new paths to add (committed by the caller only if the item
        succeeds), or raises ParseError."""
        new = {}
        for comps, v, kind in self._leaves(src):
            # Every proper prefix must be an object.
            for i in range(1, len(comps)):
                p = ".".join(comps[:i])
                t = new.get(p) or idx.mapping.get(p)
                if t is None:
                    new[p] = "object"
                elif t != "object":
                    raise ParseError(
                        "document_parsing_exception",
                        "[1:2] Could not dynamically add mapping for field [%s]. "
                        "Existing mapping for [%s] must be of type object but found [%s]."
                        % (".".join(comps), p, t))
            path = ".".join(comps)
            t = new.get(path) or idx.mapping.get(path)
            if kind == "object":
                if t is None:
                    new[path] = "object"
                elif t != "object":
                    raise ParseError(
                        "document_parsing_exception",
                        "[1:2] Could not dynamically add mapping for field [%s]. "
                        "Existing mapping for [%s] must be of type object but found [%s]."
                        % (path, path, t))
                continue
            if t == "object":
                raise ParseError(
                    "document_parsing_exception",
                    "[1:2] object mapping for [%s] tried to parse field [%s] as object, "
                    "but found a concrete value" % (path, comps[-1]))
            if t is None:
                new[path] = self._type_of(v)
            else:
                self._check_value(path, t, v, doc_id)
        if len(idx.mapping) + len(new) > self.total_fields_limit:
            raise ParseError("illegal_argument_exception",
                             "Limit of total fields [%d] has been exceeded while adding new fields [%d]"
                             % (self.total_fields_limit, len(new)))
        return new

    # --- _bulk ---------------------------------------------------------
    def bulk_count_only(self, req):
        lines = req.body.count(b"\n")
        n = lines // 2
        with self.lock:
            self.bulk_requests += 1
            self.items += n
            self.item_status[201] = self.item_status.get(201, 0) + n
        item = b'{"create":{"status":201}}'
        return (b'{"errors":false,"items":[' + b",".join([item] * n) + b"]}")

    def bulk(self, req, path_index):
        body = req.body
        if not body.endswith(b"\n"):
            return 400, es_error(400, "illegal_argument_exception",
                                 "The bulk request must be terminated by a newline [\\n]")
        lines = body.split(b"\n")[:-1]
        mark = self.request_400_containing
        if mark:
            for n, line in enumerate(lines):
                if mark.encode() in line:
                    with self.lock:
                        self.request_400s += 1
                    return 400, es_error(400, "x_content_parse_exception",
                                         "[%d:1] Unexpected character in bulk line (%s)"
                                         % (n + 1, mark))
        missing = time.monotonic() < self.index_missing_until
        if missing and self.index_missing_mode == "request":
            name = path_index
            try:
                name = name or next(iter(json.loads(lines[0]).values())).get("_index")
            except (ValueError, IndexError, AttributeError, StopIteration):
                pass
            name = name or "_all"
            with self.lock:
                self.index_missing_404s += 1
            return 404, es_error(404, "index_not_found_exception",
                                 "no such index [%s]" % name,
                                 {"index": name, "index_uuid": "_na_",
                                  "resource.type": "index_or_alias",
                                  "resource.id": name})
        items = []
        errors = False
        i = 0
        t0 = time.monotonic()
        with self.lock:
            self.bulk_requests += 1
            self.bulk_paths.append(req.path + ("?" + "&".join(
                "%s=%s" % (k, v[0]) for k, v in req.query.items()) if req.query else ""))
            del self.bulk_paths[:-20]
            while i < len(lines):
                line_no = i + 1
                if not lines[i].strip():
                    i += 1
                    continue
                try:
                    action = json.loads(lines[i])
                except ValueError:
                    return 400, es_error(400, "x_content_parse_exception",
                                         "[%d:1] Unexpected character in action line" % line_no)
                if not isinstance(action, dict) or len(action) != 1:
                    return 400, es_error(400, "illegal_argument_exception",
                                         "Malformed action/metadata line [%d], expected a simple "
                                         "value for field [%s] but found [START_OBJECT]"
                                         % (line_no, next(iter(action), "")) if isinstance(action, dict)
                                         else "Malformed action/metadata line [%d]" % line_no)
                op, meta = next(iter(action.items()))
                if op not in ("index", "create", "update", "delete"):
                    return 400, es_error(400, "illegal_argument_exception",
                                         "Malformed action/metadata line [%d], expected field "
                                         "[create], [delete], [index] or [update] but found [%s]"
                                         % (line_no, op))
                if "_type" in meta:
                    return 400, es_error(400, "illegal_argument_exception",
                                         "Action/metadata line [%d] contains an unknown parameter [_type]"
                                         % line_no)
                i += 1
                src = None
                if op != "delete":
                    if i >= len(lines):
                        return 400, es_error(400, "illegal_argument_exception",
                                             "The bulk request must be terminated by a newline [\\n]")
                    src_line = lines[i]
                    i += 1
                    try:
                        src = json.loads(src_line)
                    except ValueError:
                        src = ValueError
                item = self._item(op, meta, src, path_index)
                if self.item_log is not None:
                    self.item_log.append((item.get("_id"), item["status"], src,
                                          time.monotonic()))
                self.items += 1
                st = item["status"]
                self.item_status[st] = self.item_status.get(st, 0) + 1
                if "error" in item:
                    errors = True
                items.append({op: item})
        took = int((time.monotonic() - t0) * 1000)
        return 200, {"took": took, "errors": errors, "items": items}

    def _item(self, op, meta, src, path_index):
        name = meta.get("_index") or path_index
        doc_id = meta.get("_id")
        if not name:
            return {"status": 400, "error": {"type": "action_request_validation_exception",
                                             "reason": "Validation Failed: 1: index is missing;"}}
        base = {"_index": name, "_id": doc_id}
        if _BAD_INDEX.search(name) or name[0] in "-_+":
            return dict(base, status=400, error={
                "type": "invalid_index_name_exception",
                "reason": "Invalid index name [%s], must be lowercase and not contain "
                          "the characters [ \\, /, *, ?, \", <, >, |,  , ,, #]" % name,
                "index": name})
        if time.monotonic() < self.index_missing_until and name not in self.indices:
            self.index_missing_404s += 1
            return dict(base, status=404, error={
                "type": "index_not_found_exception",
                "reason": "no such index [%s]" % name, "index": name,
                "index_uuid": "_na_", "resource.type": "index_expression",
                "resource.id": name})
        idx = self.index_for(name)

        def err(status, etype, reason):
            return dict(base, status=status, error={
                "type": etype, "reason": reason, "index_uuid": idx.uuid,
                "shard": "0", "index": name})

        if doc_id is not None and self.item_429_ids.get(doc_id, 0) > 0:
            self.item_429_ids[doc_id] -= 1
            return err(429, "es_rejected_execution_exception",
                       "rejected execution of coordinating operation "
                       "[coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, "
                       "coordinating_operation_bytes=1, max_coordinating_and_primary_bytes=1]")
        if self.item_429_rate and self.rng.random() < self.item_429_rate:
            return err(429, "es_rejected_execution_exception",
                       "rejected execution of primary operation "
                       "[coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, "
                       "primary_operation_bytes=1, max_coordinating_and_primary_bytes=1]")
        if self.item_503_rate and self.rng.random() < self.item_503_rate:
            return err(503, "unavailable_shards_exception",
                       "[%s][0] primary shard is not active Timeout: [1m]" % name)
        if op in ("update", "delete"):
            if doc_id not in idx.docs:
                return err(404, "document_missing_exception",
                           "[%s]: document missing" % doc_id)
            if op == "delete":
                del idx.docs[doc_id]
                return dict(base, status=200, result="deleted")
            return err(400, "illegal_argument_exception", "update is not emulated")
        if src is ValueError or not isinstance(src, dict):
            return err(400, "document_parsing_exception",
                       "[1:1] failed to parse: source is not a JSON object")
        if idx.data_stream:
            if op != "create":
                return err(400, "illegal_argument_exception",
                           "only write ops with an op_type of create are allowed in data streams")
            if "@timestamp" not in src:
                return err(400, "document_parsing_exception",
                           "[1:1] failed to parse: data stream timestamp field [@timestamp] is missing")
        if self.reject_containing and self.reject_containing in json.dumps(src):
            return err(400, self.reject_type,
                       "[1:2] failed to parse: a value injected to be refused (%s)"
                       % self.reject_containing)
        if doc_id is None:
            doc_id = base["_id"] = uuid.uuid4().hex
        if op == "create" and doc_id in idx.docs:
            return err(409, "version_conflict_engine_exception",
                       "[%s]: version conflict, document already exists (current version [1])"
                       % doc_id)
        try:
            new = self._map(idx, src, doc_id)
        except ParseError as e:
            return err(400, e.etype, e.reason)
        idx.mapping.update(new)
        existed = doc_id in idx.docs
        idx.docs[doc_id] = src
        idx.seq += 1
        return dict(base, _version=2 if existed else 1,
                    result="updated" if existed else "created",
                    _shards={"total": 2, "successful": 1, "failed": 0},
                    _seq_no=idx.seq - 1, _primary_term=1,
                    status=200 if existed else 201)

    def handle(self, req):
        parts = [p for p in req.path.split("/") if p]
        hj = [("Content-Type", "application/json")]
        if not parts and req.method in ("GET", "HEAD"):
            v = {"name": "stand-in", "cluster_name": "lugger-test",
                 "version": {"number": "8.11.0", "build_flavor": "default"},
                 "tagline": "You Know, for Search"}
            if self.distribution == "opensearch":
                v = {"name": "stand-in", "cluster_name": "lugger-test",
                     "version": {"distribution": "opensearch", "number": "2.11.0"},
                     "tagline": "The OpenSearch Project: https://opensearch.org/"}
            return 200, hj, json.dumps(v).encode()
        if parts and parts[-1] == "_bulk" and len(parts) <= 2 and req.method in ("POST", "PUT"):
            if not self.store:
                return 200, hj, self.bulk_count_only(req)
            status, out = self.bulk(req, parts[0] if len(parts) == 2 else None)
            fp = req.q("filter_path")
            if fp and status == 200:
                out = filter_path(out, fp.split(","))
            return status, hj, json.dumps(out, separators=(",", ":")).encode()
        if len(parts) == 2 and parts[1] == "_count":
            with self.lock:
                idx = self.indices.get(parts[0])
                if idx is None:
                    return 404, hj, json.dumps(es_error(404, "index_not_found_exception",
                                                        "no such index [%s]" % parts[0])).encode()
                return 200, hj, json.dumps({"count": len(idx.docs)}).encode()
        if len(parts) == 3 and parts[1] == "_doc" and req.method == "GET":
            with self.lock:
                idx = self.indices.get(parts[0])
                d = idx.docs.get(parts[2]) if idx else None
            if d is None:
                return 404, hj, json.dumps({"_index": parts[0], "_id": parts[2],
                                            "found": False}).encode()
            return 200, hj, json.dumps({"_index": parts[0], "_id": parts[2], "_version": 1,
                                        "found": True, "_source": d}).encode()
        return 405, hj, json.dumps(es_error(405, "exception", "Incorrect HTTP method")).encode()


if __name__ == "__main__":
    import sys
    run_standalone(EsServer(store="--no-store" not in sys.argv))
