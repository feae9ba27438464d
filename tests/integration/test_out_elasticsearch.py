"""The elasticsearch output end to end: real lugger processes, real files,
and the Elasticsearch/OpenSearch stand-in (es_server.py: no real
Elasticsearch can be installed here; the stand-in is written from the bulk
API documentation).

Scenarios:
  basic       documents by _id = record id, index template with a field and
              the record time, data-stream @timestamp, gzip, ApiKey auth
  dedot       a pod labelled `app` next to one labelled
              `app.kubernetes.io/name`: with dedot (default) every record is
              indexed; without it the conflicting ones are in the
              dead-letter output with ES's error type and reason
  faults      whole-request 429/503, resets, truncated answers, slow answers
              past the timeout, per-item 429s, 413 with a split and a
              record too large alone -> dead-letter; TLS + basic auth; two
              hosts, one down
  kill9       100,000 lines, 5 kill -9 restarts, 5% per-item 429s, every
              1000th line a mapping error: every line indexed exactly once
              by _id, every injected 400 in the dead-letter output
  answers     a whole-request 400 (a line ES cannot parse): the request is
              bisected, the bad record is in the dead-letter output with
              ES's reason, the others of it indexed once; 404
              index_not_found for 3 s, per item (Elasticsearch) and for the
              whole request (Quickwit): every line indexed once after it
  down        the backend answers 503 for 30 s while lines keep coming:
              /readyz and metrics say so, RSS stays in the budget, then
              every line arrives (0 lost)
"""

import gzip
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import lugger_it as it  # noqa: E402
from es_server import EsServer  # noqa: E402

LINE = 100


def bseq(rec):
    """The sequence number of a test line, from the record's body (a
    dead-letter record carries the body whatever its fields)."""
    return it.parse_line(rec["body"])[1]
SEQ_SCRIPT = r"""
function process(rec)
  local fid, seq = rec.body:match("^f(%d+) s(%d+) ")
  if not seq then return end
  seq = tonumber(seq)
  rec.seq = seq
  if BAD_EVERY > 0 and seq % BAD_EVERY == BAD_EVERY - 1 then
    rec.status = "not-a-number"   -- mapped as long by earlier documents
  else
    rec.status = 200
  end
end
"""


def script(bad_every=0):
    return SEQ_SCRIPT.replace("BAD_EVERY", str(bad_every))


def write_lines(path, n, start=0, fid=0):
    with open(path, "ab") as f:
        f.write(b"".join(it.make_line(fid, s, LINE) for s in range(start, start + n)))


def es_output(server, **kw):
    o = {"type": "elasticsearch", "hosts": [server.url],
         "index": "logs-%Y.%m.%d", "max_coalescing_delay": "50ms",
         "max_retry_time": "0"}
    o.update(kw)
    return o


def config(wd, out, script_text=None, settings=None, name="lugger.lua", dl=None):
    s = {"state_dir": wd.state, "memory_budget": "16MiB", "workers": 2,
         "checkpoint_interval": "200ms", "rescan_interval": "1s"}
    s.update(settings or {})
    outputs = {"es": out}
    if dl:
        outputs["dl"] = {"type": "file", "path": dl, "fsync": "never"}
        s["dead_letter"] = "dl"
    pipe = {"sources": ["app"], "outputs": ["es"]}
    scripts = None
    if script_text:
        pipe["scripts"] = ["s.lua"]
        scripts = {"s.lua": script_text}
    return it.write_config(wd.p(name), s,
                           {"app": {"type": "file", "paths": [os.path.join(wd.logs, "*.log")],
                                    "read_from": "head", "format": "line"}},
                           {"main": pipe}, outputs, scripts=scripts)


def seqs_of(server):
    """seq -> number of documents holding it, and the documents."""
    counts = {}
    docs = server.all_docs()
    for (_, _), d in docs.items():
        s = d.get("seq")
        if s is not None:
            counts[s] = counts.get(s, 0) + 1
    return counts, docs


def dl_records(path):
    if not os.path.exists(path):
        return []
    return it.read_jsonl(path, allow_partial_tail=True)


def basic():
    with it.WorkDir("es-basic") as wd:
        es = EsServer(api_keys={"aWQ6a2V5"}, data_stream_prefixes=("logs-ds-",)).start()
        try:
            write_lines(wd.p("logs", "a.log"), 2000)
            conf = config(wd, es_output(es, index="logs-ds-{app|none}-%Y.%m",
                                        data_stream=True, compression="gzip",
                                        api_key="aWQ6a2V5"),
                          script(0) + "\nlocal p = process\nfunction process(rec) "
                          "p(rec) rec.app = (rec.seq or 0) % 2 == 0 and 'Web' or nil end\n")
            with it.Lugger(conf) as lug:
                it.wait_for(lambda: len(es.all_docs()) >= 2000, 60, "2000 documents",
                            proc=lug)
                lug.stop()
            docs = es.all_docs()
            it.check(len(docs) == 2000, "documents: %d" % len(docs))
            month = time.strftime("%Y.%m", time.gmtime())
            names = sorted({i for (i, _) in docs})
            it.check(names == ["logs-ds-none-" + month, "logs-ds-web-" + month],
                     "index names from the template: %s" % names)
            for (idx, _id), d in docs.items():
                it.check("@timestamp" in d and d["@timestamp"] == d["time"],
                         "@timestamp: %s" % d)
                fp, off = _id.split(":")
                it.check(len(fp) == 16 and int(off) == d["seq"] * LINE,
                         "_id is the record id (<fingerprint>:<offset>): %s" % _id)
            it.check(any("filter_path=errors,items.*.status" in p for p in es.bulk_paths),
                     "filter_path: %s" % es.bulk_paths[-1:])
            it.check(es.connections <= 4, "keep-alive: %d connections" % es.connections)
        finally:
            es.stop()
    return "basic ok"


def dedot():
    out = []
    for dd in (True, False):
        with it.WorkDir("es-dedot") as wd:
            es = EsServer().start()
            try:
                write_lines(wd.p("logs", "a.log"), 200)
                sc = script(0) + r"""
local p = process
function process(rec)
  p(rec)
  if rec.seq % 2 == 0 then
    rec["k8s.pod.label.app"] = "web"
  else
    rec["k8s.pod.label.app.kubernetes.io/name"] = "web"
  end
end
"""
                dl = wd.p("dl.jsonl")
                conf = config(wd, es_output(es, dedot=dd, max_batch_size=10), sc, dl=dl)
                with it.Lugger(conf) as lug:
                    it.wait_for(lambda: len(es.all_docs()) + len(dl_records(dl)) >= 200, 60,
                                "200 records settled", proc=lug)
                    lug.stop()
                docs = es.all_docs()
                rej = dl_records(dl)
                if dd:
                    it.check(len(docs) == 200 and not rej,
                             "dedot: %d documents, %d rejected" % (len(docs), len(rej)))
                    keys = set()
                    for d in docs.values():
                        keys.update(k for k in d if k.startswith("k8s.pod.label."))
                    it.check(keys == {"k8s.pod.label.app", "k8s.pod.label.app_kubernetes_io/name"},
                             "dedotted keys: %s" % keys)
                else:
                    # The first document maps k8s.pod.label.app as text, so
                    # every app.kubernetes.io/name one conflicts.
                    it.check(len(docs) == 100 and len(rej) == 100,
                             "without dedot: %d documents, %d rejected" % (len(docs), len(rej)))
                    e = rej[0].get("lugger.error", "")
                    it.check("document_parsing_exception" in e and "must be of type object" in e,
                             "the reason names ES's error: %s" % e)
                    it.check(all(bseq(r) % 2 == 1 for r in rej),
                             "rejected are the dotted ones: %s" % rej[:1])
                out.append("%s: %d docs %d rejected" % (dd, len(docs), len(rej)))
            finally:
                es.stop()
    return "dedot ok (" + "; ".join(out) + ")"


def faults():
    with it.WorkDir("es-faults") as wd:
        certs = wd.mk("certs")
        it.check(os.system("python3 %s/tests/unit/core/http_test_server.py --make-certs %s"
                           % (it.SOURCE_DIR, certs)) == 0, "certificates")
        es = EsServer(tls=(os.path.join(certs, "server.pem"), os.path.join(certs, "server.key")),
                      users={"elastic": "changeme"}, max_content_length=60000).start()
        dead = it.free_port()
        try:
            es.faults.statuses = [429, 503, 500]
            es.faults.reset_next = 2
            es.faults.truncate_next = 2
            es.item_429_rate = 0.1
            write_lines(wd.p("logs", "a.log"), 3000)
            # One record of 70 KB: more than max_content_length alone.
            with open(wd.p("logs", "a.log"), "ab") as f:
                f.write(b"f000 s000003000 " + b"x" * 70000 + b"\n")
            dl = wd.p("dl.jsonl")
            conf = config(wd, es_output(es, hosts=["https://127.0.0.1:%d" % dead, es.url],
                                        ca_file=os.path.join(certs, "ca.pem"),
                                        user="elastic", password="changeme",
                                        max_bytes="200KiB", max_batch_size=1000,
                                        timeout="3s"), script(0), dl=dl)
            with it.Lugger(conf) as lug:
                it.wait_for(lambda: len(es.all_docs()) >= 3000 and dl_records(dl), 120,
                            "3000 documents and the big record in the dead-letter output",
                            proc=lug, detail=lambda: "%d docs" % len(es.all_docs()))
                # Slow answers past the timeout are retried, not lost.
                es.faults.delay_s = 4
                write_lines(wd.p("logs", "a.log"), 10, start=3001)
                time.sleep(5)
                es.faults.delay_s = 0
                it.wait_for(lambda: len(es.all_docs()) >= 3010, 60, "3010 documents", proc=lug)
                lug.stop()
            counts, docs = seqs_of(es)
            it.check(len(docs) == 3010 and sorted(counts) == list(range(3000)) + list(range(3001, 3011)),
                     "each line once: %d docs" % len(docs))
            rej = dl_records(dl)
            it.check(len(rej) == 1 and "413" in rej[0]["lugger.error"],
                     "the record larger than http.max_content_length: %s" %
                     [r.get("lugger.error") for r in rej])
            # What the script set is in the dead-letter record too, not
            # only the body and metadata.
            it.check(rej[0].get("seq") == 3000 and rej[0].get("status") == 200,
                     "the dead-letter record keeps the script's fields: %s" %
                     {k: v for k, v in rej[0].items() if k != "body"})
            it.check(es.item_status.get(429, 0) > 0 and es.item_status.get(409, 0) >= 0,
                     "per-item 429s were injected: %s" % es.item_status)
            it.check(any("trying other hosts" in l for l in lug.stderr_text().splitlines()),
                     "the dead host was set aside")
        finally:
            es.stop()
    return "faults ok (item statuses %s)" % es.item_status


def kill9():
    n = 100000
    bad_every = 1000
    with it.WorkDir("es-kill9") as wd:
        es = EsServer().start()
        es.item_429_rate = 0.05
        try:
            write_lines(wd.p("logs", "a.log"), n)
            dl = wd.p("dl.jsonl")
            conf = config(wd, es_output(es, max_batch_size=500, max_in_flight=2),
                          script(bad_every), dl=dl)
            kills = 0
            target = n - n // bad_every
            for k in range(5):
                lug = it.Lugger(conf)
                have = len(es.all_docs())
                it.wait_for(lambda: len(es.all_docs()) >= min(target, have + target // 7), 90,
                            "progress before kill %d" % (k + 1), proc=lug)
                lug.kill9()
                lug.check_sanitizers()
                kills += 1
            with it.Lugger(conf) as lug:
                it.wait_for(lambda: len(es.all_docs()) >= target and
                            len({bseq(r) for r in dl_records(dl)}) >= n // bad_every, 120,
                            "every line settled after %d kills" % kills, proc=lug,
                            detail=lambda: "%d docs, %d rejected" % (len(es.all_docs()),
                                                                      len(dl_records(dl))))
                time.sleep(1)
                lug.stop()
            counts, docs = seqs_of(es)
            dup = sum(1 for c in counts.values() if c > 1)
            want = {s for s in range(n) if s % bad_every != bad_every - 1}
            lost = len(want - set(counts))
            it.check(lost == 0 and dup == 0 and len(docs) == target,
                     "exactly once by _id: %d lost, %d duplicated, %d documents" %
                     (lost, dup, len(docs)))
            rej = dl_records(dl)
            rseq = {bseq(r) for r in rej}
            it.check(rseq == set(range(bad_every - 1, n, bad_every)),
                     "every injected 400 in the dead-letter output: %d of %d" %
                     (len(rseq), n // bad_every))
            it.check(all("document_parsing_exception" in r["lugger.error"] for r in rej),
                     "dead-letter reasons: %s" % rej[0].get("lugger.error"))
            retried = es.item_status.get(429, 0)
            conflicts = es.item_status.get(409, 0)
        finally:
            es.stop()
    return ("kill9 ok: %d lines, %d kills, %d documents, 0 lost, 0 duplicate, %d in "
            "dead-letter, %d per-item 429 retried, %d 409 (already there)" %
            (n, kills, len(docs), len(rseq), retried, conflicts))


def down():
    with it.WorkDir("es-down") as wd:
        es = EsServer().start()
        port = it.free_port()
        try:
            conf = config(wd, es_output(es, max_batch_size=500),
                          script(0), settings={"http": "127.0.0.1:%d" % port,
                                               "memory_budget": "8MiB"})
            write_lines(wd.p("logs", "a.log"), 1000)
            stop = threading.Event()
            written = [1000]

            def writer():
                while not stop.is_set():
                    write_lines(wd.p("logs", "a.log"), 200, start=written[0])
                    written[0] += 200
                    time.sleep(0.1)

            with it.Lugger(conf) as lug:
                it.wait_for(lambda: len(es.all_docs()) >= 1000, 60, "first 1000", proc=lug)
                es.faults.down = 503
                th = threading.Thread(target=writer, daemon=True)
                th.start()
                sampler = it.RssSampler(lug.pid)
                sampler.start()
                t0 = time.monotonic()
                saw_ready_503 = saw_metric = False
                while time.monotonic() - t0 < 30:
                    st, body = it.http_get(port, "/readyz")
                    if st == 503:
                        saw_ready_503 = True
                    if it.metric_sum(port, "lugger_output_retrying") >= 1:
                        saw_metric = True
                    time.sleep(1)
                stop.set()
                th.join()
                sampler.stop()
                es.faults.down = None
                total = written[0]
                it.wait_for(lambda: len(es.all_docs()) >= total, 90,
                            "all %d lines after the outage" % total, proc=lug)
                st, _ = it.http_get(port, "/readyz")
                lug.stop()
            counts, docs = seqs_of(es)
            lost = total - len(set(counts))
            it.check(lost == 0 and len(docs) == total, "0 lost: %d of %d" % (len(docs), total))
            it.check(saw_ready_503 and saw_metric,
                     "/readyz 503 (%s) and lugger_output_retrying (%s) during the outage" %
                     (saw_ready_503, saw_metric))
            it.check(st == 200, "/readyz after recovery: %s" % st)
            max_rss = sampler.max_kib
            it.check(max_rss <= it.rss_limit(60, 400),
                     "max RSS %d KiB with an 8 MiB budget" % max_rss)
        finally:
            es.stop()
    return "down ok (%d lines written during 30 s down, max RSS %.1f MiB)" % (
        total, max_rss / 1024)


def deploy():
    """deploy/elasticsearch/configmap.yaml on a test node: two pods of
    namespace shop, one labelled app=web, one app.kubernetes.io/name=web
    (the classic mapping conflict), documents checked field by field."""
    import deploy_config
    from k8s_api_server import FakeApiServer, make_pod
    from k8s_node import Node
    with it.WorkDir("es-deploy") as wd:
        es = EsServer(api_keys={"aWQ6a2V5"}, data_stream_prefixes=("logs-",)).start()
        api = FakeApiServer()
        node = Node(wd.path)
        try:
            a = node.pod("shop", "web-1")
            b = node.pod("shop", "web-2")
            api.add_pod(make_pod("shop", a.name, a.uid, "node-a", labels={"app": "web"},
                                 owner=("ReplicaSet", "web-5d8"),
                                 statuses={"app": ("containerd://cid-a", 0, None)}))
            api.add_pod(make_pod("shop", b.name, b.uid, "node-a",
                                 labels={"app.kubernetes.io/name": "web"},
                                 statuses={"app": ("containerd://cid-b", 0, None)}))
            api.start()
            a.write("app", ["GET /a %d" % i for i in range(50)])
            b.write("app", ["GET /b %d" % i for i in range(50)], stream="stderr")
            port = it.free_port()
            conf = deploy_config.materialise(wd, "elasticsearch", es.url, api.url,
                                             node.pods, "node-a", port)
            with it.Lugger(conf, env={"ES_API_KEY": "aWQ6a2V5", "NODE_NAME": "node-a"}) as lug:
                it.wait_for(lambda: len(es.all_docs()) >= 100, 60, "100 documents", proc=lug)
                lug.stop()
            docs = es.all_docs()
            names = {i for (i, _) in docs}
            it.check(names == {"logs-kubernetes.container_logs-shop"}, "data stream: %s" % names)
            d = next(d for d in docs.values() if d["message"] == "GET /a 0")
            want = {"kubernetes.namespace": "shop", "kubernetes.pod.name": "web-1",
                    "kubernetes.pod.uid": a.uid, "kubernetes.container.name": "app",
                    "kubernetes.node.name": "node-a", "kubernetes.labels.app": "web",
                    "kubernetes.replicaset.name": "web-5d8", "stream": "stdout",
                    "container.id": "cid-a"}
            for k, v in want.items():
                it.check(d.get(k) == v, "%s = %r, want %r: %s" % (k, d.get(k), v, d))
            it.check("@timestamp" in d and not any(k.startswith("k8s.") or k in ("time", "body")
                                                   for k in d), "ECS names only: %s" % sorted(d))
            e = next(d for d in docs.values() if d["message"] == "GET /b 0")
            it.check(e.get("kubernetes.labels.app_kubernetes_io/name") == "web" and
                     e.get("stream") == "stderr", "dedotted label: %s" % e)
        finally:
            api.stop()
            es.stop()
    return "deploy ok (ECS documents in logs-kubernetes.container_logs-shop)"


def split():
    """A Fluent Bit filter that returns two records for one line: both are
    indexed (they share the line's offset; the second's _id gets "/1", so
    Elasticsearch does not answer 409 for it as for a copy it has)."""
    with it.WorkDir("es-split") as wd:
        es = EsServer().start()
        try:
            write_lines(wd.p("logs", "a.log"), 20)
            with open(wd.p("split.lua"), "w") as f:
                f.write('function split(tag, ts, rec)\n'
                        '  return 1, ts, { { part = 1, log = rec.log }, { part = 2, log = rec.log } }\n'
                        'end\n')
            s = {"state_dir": wd.state, "workers": 2, "checkpoint_interval": "200ms"}
            conf = it.write_config(
                wd.p("lugger.lua"), s,
                {"app": {"type": "file", "paths": [os.path.join(wd.logs, "*.log")],
                         "read_from": "head", "format": "line"}},
                {"main": {"sources": ["app"], "outputs": ["es"],
                          "scripts": [{"path": "split.lua", "compat": "fluent-bit",
                                       "call": "split"}]}},
                {"es": es_output(es)})
            with it.Lugger(conf) as lug:
                it.wait_for(lambda: len(es.all_docs()) >= 40, 30, "40 documents", proc=lug)
                time.sleep(0.5)
                lug.stop()
            docs = es.all_docs()
            ids = sorted(i for (_, i) in docs)
            it.check(len(docs) == 40 and sum(1 for i in ids if i.endswith("/1")) == 20 and
                     es.item_status.get(409, 0) == 0,
                     "both parts of each line indexed: %d docs, %s" % (len(docs), ids[:3]))
        finally:
            es.stop()
    return "split ok (40 documents from 20 lines)"


def answers():
    n = 200
    bad = 77
    out = []
    with it.WorkDir("es-answers") as wd:
        es = EsServer().start()
        try:
            # One line of the request the stand-in cannot parse: the whole
            # request is refused, as Elasticsearch does.
            es.request_400_containing = "f000 s%09d " % bad
            write_lines(wd.p("logs", "a.log"), n)
            dl = wd.p("dl.jsonl")
            conf = config(wd, es_output(es, max_batch_size=n), script(0), dl=dl)
            with it.Lugger(conf) as lug:
                it.wait_for(lambda: len(es.all_docs()) >= n - 1 and dl_records(dl), 60,
                            "%d documents and the bad line in the dead-letter output" % (n - 1),
                            proc=lug, detail=lambda: "%d docs, %d 400s" %
                            (len(es.all_docs()), es.request_400s))
                time.sleep(1)
                lug.stop()
            counts, docs = seqs_of(es)
            it.check(sorted(counts) == [s for s in range(n) if s != bad] and
                     all(c == 1 for c in counts.values()) and len(docs) == n - 1 and
                     es.item_status.get(409, 0) == 0,
                     "every other line indexed once: %d docs, %s 409s" %
                     (len(docs), es.item_status.get(409, 0)))
            rej = dl_records(dl)
            e = rej[0].get("lugger.error", "") if rej else ""
            it.check(len(rej) == 1 and bseq(rej[0]) == bad, "only the bad line is dead-lettered: %s"
                     % [bseq(r) for r in rej])
            it.check("400" in e and "x_content_parse_exception" in e and "Unexpected character" in e,
                     "the reason is ES's: %s" % e)
            it.check(es.request_400s >= 2, "the request was split: %d 400s" % es.request_400s)
            out.append("400: %d docs, 1 dead-lettered after %d refused requests"
                       % (len(docs), es.request_400s))
        finally:
            es.stop()
    for mode in ("item", "request"):
        with it.WorkDir("es-404-" + mode) as wd:
            es = EsServer().start()
            try:
                es.index_missing_mode = mode
                es.index_missing_until = time.monotonic() + 3
                write_lines(wd.p("logs", "a.log"), n)
                dl = wd.p("dl.jsonl")
                conf = config(wd, es_output(es, max_batch_size=50), script(0), dl=dl)
                with it.Lugger(conf) as lug:
                    it.wait_for(lambda: es.index_missing_404s > 0, 30, "404s answered", proc=lug)
                    it.check(not es.all_docs(), "nothing indexed while the index is missing")
                    it.wait_for(lambda: len(es.all_docs()) >= n, 60, "%d documents" % n,
                                proc=lug, detail=lambda: "%d docs" % len(es.all_docs()))
                    time.sleep(1)
                    lug.stop()
                counts, docs = seqs_of(es)
                it.check(sorted(counts) == list(range(n)) and len(docs) == n and
                         all(c == 1 for c in counts.values()),
                         "404 %s: every line indexed once: %d docs" % (mode, len(docs)))
                it.check(not dl_records(dl), "404 %s: nothing dead-lettered: %s"
                         % (mode, dl_records(dl)[:1]))
                out.append("404 %s: %d docs after %d 404s" % (mode, len(docs), es.index_missing_404s))
            finally:
                es.stop()
    return "answers ok (" + "; ".join(out) + ")"


def run():
    it.require_binary()
    which = sys.argv[1:] or ["basic", "dedot", "split", "answers", "faults", "deploy", "kill9", "down"]
    res = [globals()[w]() for w in which]
    return "; ".join(res)


if __name__ == "__main__":
    it.main("test_out_elasticsearch", run)
