"""The loki output end to end against the Loki stand-in (loki_server.py; no
real Loki can be installed here, the stand-in follows the push API
reference and Loki's validation messages).

Scenarios:
  streams   labels from record fields (default namespace/pod/container/node,
            sanitised names, static labels), entries of a stream in order,
            line = json and body, structured metadata, tenant header, gzip;
            no stream is ever in two requests at once
  partial   a 400 partial success: Loki keeps the valid entries; the ones it
            names (too far behind, too long) go to the dead-letter output with
            Loki's message; nothing is retried
  faults    429 and 5xx retried, 260 (ingestion blocked) not counted as
            delivered, 413 split; retries keep their timestamps, so the
            stand-in's dedup (as Loki's) stores each entry once
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import lugger_it as it  # noqa: E402
from loki_server import LokiServer  # noqa: E402

LINE = 100


def bseq(rec):
    """The sequence number of a test line, from the record's body (a
    dead-letter record carries the body whatever its fields)."""
    return it.parse_line(rec["body"])[1]
SCRIPT = r"""
function process(rec)
  local fid, seq = rec.body:match("^f(%d+) s(%d+) ")
  if not seq then return end
  rec.seq = tonumber(seq)
  rec["k8s.namespace.name"] = "ns" .. (tonumber(fid) % 2)
  rec["k8s.pod.name"] = "pod-" .. fid
  rec["k8s.container.name"] = "app"
  rec["k8s.node.name"] = "node-a"
  rec["k8s.pod.uid"] = "uid-" .. fid
  rec["app.kubernetes.io/name"] = "web"
  EXTRA
end
"""


def write_lines(path, n, start=0, fid=0):
    with open(path, "ab") as f:
        f.write(b"".join(it.make_line(fid, s, LINE) for s in range(start, start + n)))


def config(wd, out, extra_lua="", dl=None):
    s = {"state_dir": wd.state, "memory_budget": "16MiB", "workers": 2,
         "checkpoint_interval": "200ms", "rescan_interval": "1s", "dead_letter": "dl"}
    return it.write_config(
        wd.p("lugger.lua"), s,
        {"app": {"type": "file", "paths": [os.path.join(wd.logs, "*.log")],
                 "read_from": "head", "format": "line"}},
        {"main": {"sources": ["app"], "outputs": ["loki"], "scripts": ["s.lua"]}},
        {"loki": out, "dl": {"type": "file", "path": dl or wd.p("dl.jsonl"), "fsync": "never"}},
        scripts={"s.lua": SCRIPT.replace("EXTRA", extra_lua)})


def loki_out(srv, **kw):
    o = {"type": "loki", "hosts": [srv.url], "max_coalescing_delay": "50ms",
         "max_batch_size": 300}
    o.update(kw)
    return o


def streams():
    with it.WorkDir("loki-streams") as wd:
        srv = LokiServer(auth_enabled=True, hold_s=0.01).start()
        try:
            for fid in range(4):
                write_lines(wd.p("logs", "f%d.log" % fid), 1500, fid=fid)
            conf = config(wd, loki_out(srv, tenant="team-a",
                                       static_labels={"cluster": "prod"},
                                       structured_metadata=["k8s.pod.uid"]))
            with it.Lugger(conf) as lug:
                it.wait_for(lambda: len(srv.entries()) >= 6000, 60, "6000 entries", proc=lug)
                lug.stop()
            ents = srv.entries()
            it.check(len(ents) == 6000, "entries: %d" % len(ents))
            it.check(srv.tenants == {"team-a"}, "tenant: %s" % srv.tenants)
            labelsets = {tuple(sorted(l.items())) for _, l, _ in ents}
            it.check(len(labelsets) == 4, "4 streams: %s" % labelsets)
            l0 = dict(next(iter(labelsets)))
            it.check(set(l0) == {"cluster", "namespace", "pod", "container", "node"},
                     "default labels + static: %s" % l0)
            by_stream = {}
            for _, l, (ts, line, meta) in ents:
                rec = json.loads(line)
                by_stream.setdefault(l["pod"], []).append((ts, rec["seq"], meta))
            for pod, es in by_stream.items():
                seqs = [s for _, s, _ in es]
                it.check(seqs == list(range(1500)), "stream %s in order: %s..." % (pod, seqs[:5]))
                it.check(all(m.get("k8s.pod.uid") == "uid-" + pod[4:] for _, _, m in es),
                         "structured metadata: %s" % es[0][2])
            it.check(srv.concurrent_stream_requests == 0,
                     "a stream was in two requests at once %d times" % srv.concurrent_stream_requests)
            gz = srv.requests
        finally:
            srv.stop()
    # line = "body", sanitised custom label names.
    with it.WorkDir("loki-body") as wd:
        srv = LokiServer().start()
        try:
            write_lines(wd.p("logs", "a.log"), 100)
            conf = config(wd, loki_out(srv, line="body", compression="none",
                                       labels={"app.kubernetes.io/name": "app.kubernetes.io/name",
                                               "ns": "k8s.namespace.name"}))
            with it.Lugger(conf) as lug:
                it.wait_for(lambda: len(srv.entries()) >= 100, 60, "100 entries", proc=lug)
                lug.stop()
            ents = srv.entries()
            _, labels, (ts, line, _) = ents[0]
            it.check(labels == {"app_kubernetes_io_name": "web", "ns": "ns0"},
                     "sanitised label names: %s" % labels)
            it.check(line == it.make_line(0, 0, LINE).decode().rstrip("\n"), "body line: %r" % line)
        finally:
            srv.stop()
    return "streams ok (%d pushes)" % gz


def partial():
    with it.WorkDir("loki-partial") as wd:
        srv = LokiServer(max_line_size=400).start()
        try:
            write_lines(wd.p("logs", "a.log"), 1000)
            dl = wd.p("dl.jsonl")
            # Every 100th record gets a long field: its JSON line is over
            # max_line_size, so Loki rejects that entry and keeps the rest.
            conf = config(wd, loki_out(srv), 'if rec.seq % 100 == 42 then rec.pad = string.rep("x", 500) end',
                          dl=dl)
            with it.Lugger(conf) as lug:
                it.wait_for(lambda: len(srv.entries()) >= 990 and os.path.exists(dl) and
                            len(it.read_jsonl(dl, allow_partial_tail=True)) >= 10, 60,
                            "990 entries and 10 dead-lettered", proc=lug)
                time.sleep(0.5)
                lug.stop()
            ents = srv.entries()
            rej = it.read_jsonl(dl)
            it.check(len(ents) == 990 and len(rej) == 10, "%d stored, %d rejected" % (len(ents), len(rej)))
            it.check(sorted(bseq(r) for r in rej) == list(range(42, 1000, 100)),
                     "the rejected are the long ones: %s" % [bseq(r) for r in rej])
            it.check("Max entry size" in rej[0]["lugger.error"], "Loki's message: %s" % rej[0]["lugger.error"])
            it.check(srv.duplicates == 0, "a 400 is never retried (duplicates %d)" % srv.duplicates)
        finally:
            srv.stop()
    return "partial ok"


def faults():
    with it.WorkDir("loki-faults") as wd:
        srv = LokiServer(max_body=40000).start()
        try:
            srv.faults.statuses = [429, 500, 503]
            srv.faults.reset_next = 1
            srv.block_ingestion = True
            write_lines(wd.p("logs", "a.log"), 2000)
            conf = config(wd, loki_out(srv, max_batch_size=400, compression="none"))
            with it.Lugger(conf) as lug:
                time.sleep(3)
                it.check(len(srv.entries()) == 0, "nothing stored while blocked")
                it.check(not os.path.exists(wd.p("dl.jsonl")) or not it.read_jsonl(wd.p("dl.jsonl")),
                         "260 is not a reject")
                srv.block_ingestion = False
                it.wait_for(lambda: len(srv.entries()) >= 2000, 90, "2000 entries", proc=lug)
                srv.faults.truncate_next = 0
                lug.stop()
            ents = srv.entries()
            seqs = sorted(json.loads(l)["seq"] for _, _, (_, l, _) in ents)
            it.check(seqs == list(range(2000)), "each entry once: %d" % len(seqs))
        finally:
            srv.stop()
    return "faults ok (%d duplicate pushes deduplicated)" % srv.duplicates


def deploy():
    """deploy/loki/configmap.yaml on a test node: streams labelled as
    Promtail labels them, the container's line as it wrote it."""
    import deploy_config
    from k8s_api_server import FakeApiServer, make_pod
    from k8s_node import Node
    with it.WorkDir("loki-deploy") as wd:
        srv = LokiServer().start()
        api = FakeApiServer()
        node = Node(wd.path)
        try:
            a = node.pod("shop", "web-1")
            b = node.pod("shop", "api-0")
            api.add_pod(make_pod("shop", a.name, a.uid, "node-a",
                                 labels={"app.kubernetes.io/name": "web"},
                                 statuses={"app": ("containerd://cid-a", 0, None)}))
            api.add_pod(make_pod("shop", b.name, b.uid, "node-a",
                                 owner=("StatefulSet", "api")))
            api.start()
            a.write("app", ["GET /a %d" % i for i in range(50)])
            b.write("app", ["api err %d" % i for i in range(50)], stream="stderr")
            conf = deploy_config.materialise(wd, "loki", srv.url, api.url, node.pods,
                                             "node-a", it.free_port())
            with it.Lugger(conf, env={"NODE_NAME": "node-a"}) as lug:
                it.wait_for(lambda: len(srv.entries()) >= 100, 60, "100 entries", proc=lug)
                lug.stop()
            streams = {}
            for _, labels, (ts, line, meta) in srv.entries():
                streams.setdefault(tuple(sorted(labels.items())), []).append((line, meta))
            want_a = {"namespace": "shop", "pod": "web-1", "container": "app",
                      "node_name": "node-a", "app": "web", "stream": "stdout",
                      "cluster": "my-cluster"}
            want_b = dict(want_a, pod="api-0", app="api", stream="stderr")
            got = [dict(k) for k in streams]
            it.check(sorted(got, key=lambda d: d["pod"]) == [want_b, want_a],
                     "stream labels: %s" % got)
            lines = streams[tuple(sorted(want_a.items()))]
            it.check([l for l, _ in lines] == ["GET /a %d" % i for i in range(50)],
                     "lines as written, in order: %s" % lines[:2])
            it.check(lines[0][1] == {"k8s.pod.uid": a.uid, "container.id": "cid-a"},
                     "structured metadata: %s" % lines[0][1])
        finally:
            api.stop()
            srv.stop()
    return "deploy ok (Promtail's labels, lines as written)"


def run():
    it.require_binary()
    which = sys.argv[1:] or ["streams", "partial", "faults", "deploy"]
    return "; ".join(globals()[w]() for w in which)


if __name__ == "__main__":
    it.main("test_out_loki", run)
