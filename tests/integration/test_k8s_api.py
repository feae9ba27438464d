#!/usr/bin/env python3
"""The kubernetes source with pod metadata from a (test) Kubernetes API
server, k8s_api_server.py, over a fake /var/log/pods tree.

1. One list + watch of the node's pods (fieldSelector=spec.nodeName=...),
   with the bearer token: records carry k8s.pod.label.*, the allowed
   k8s.pod.annotation.*, k8s.pod.ip, container.image.name/tag, container.id
   (the status of the container run the file belongs to),
   k8s.deployment.name (ReplicaSet owner minus its pod-template-hash),
   k8s.statefulset.name.
2. select() routes by label to pipelines (a list: every record to each);
   exclude by label and the lugger.io/exclude annotation skip pods.
3. A MODIFIED event (a new label): later records carry it.
4. A pod deleted (API DELETED + its directory removed) while its 20000
   lines are being read: every line still has the pod's labels.
5. 410: the server compacts (watch ERROR with a Status of code 410):
   lugger lists again; a pod added meanwhile is enriched. A watch the
   server ends is resumed at the last BOOKMARK's resourceVersion; after the
   API was down, lugger comes back to it.
6. The API down at start (TLS, CA file): files are read with path metadata
   after api_wait; once the API is up, later records are enriched.
7. read_from = "tail" on the first start with the API not answering yet:
   the files that waited for their pods still start at their end; a pod
   not matching include.labels is not read.
"""

import os
import time

import lugger_it as it
from k8s_api_server import FakeApiServer, make_pod
from k8s_node import Node

NODE = "node-a"
TOKEN = "s3cr3t-token"


class Out:
    def __init__(self, path):
        self.recs = []
        self.f = it.JsonlFollower(path, on_record=self.recs.append)

    def poll(self):
        self.f.poll()
        return self.recs

    def find(self, body):
        self.poll()
        return [r for r in self.recs if r["body"] == body]

    def wait_body(self, body, timeout, proc, pred=None):
        def ok():
            return any(r["body"] == body and (pred is None or pred(r))
                       for r in self.poll())
        it.wait_for(ok, timeout, "record %r" % body, proc=proc,
                    detail=lambda: "%d records, last %r" % (
                        len(self.recs), self.recs[-1:] or None))
        return [r for r in self.recs if r["body"] == body and
                (pred is None or pred(r))][0]


def expect_meta(rec, want, what):
    for k, v in want.items():
        got = rec.get(k, "<absent>")
        it.check(got == v, "%s: %s = %r, want %r (record %r)" % (
            what, k, got, v, rec))


def settings(wd):
    return {"state_dir": wd.state, "workers": 2, "checkpoint_interval": "200ms",
            "rescan_interval": "1s"}


def part_main():
    with it.WorkDir("k8s-api") as wd:
        node = Node(wd.path)
        api = FakeApiServer(token=TOKEN, bookmark_interval=0.5)
        web = node.pod("shop", "web-7d9f8-x1", containers=("nginx",))
        apip = node.pod("shop", "api-0")
        skip = node.pod("shop", "skip-1")
        quiet = node.pod("shop", "quiet-1")
        # A pod of another node: in the API only (its logs are elsewhere).
        other_uid = "uid-of-a-pod-on-node-b"
        api.add_pod(make_pod(
            "shop", web.name, web.uid, NODE,
            labels={"app": "nginx", "pod-template-hash": "7d9f8"},
            annotations={"team": "storefront", "secret": "no"},
            owner=("ReplicaSet", "web-7d9f8"), ip="10.1.0.5",
            containers=[("nginx", "docker.io/library/nginx:1.25")],
            statuses={"nginx": ("containerd://cid-web", 0, None)}))
        api.add_pod(make_pod("shop", apip.name, apip.uid, NODE,
                             labels={"app": "api"},
                             owner=("StatefulSet", "api"), ip="10.1.0.6"))
        api.add_pod(make_pod("shop", skip.name, skip.uid, NODE,
                             labels={"app": "api", "skip": "yes"}))
        api.add_pod(make_pod("shop", quiet.name, quiet.uid, NODE,
                             labels={"app": "api"},
                             annotations={"lugger.io/exclude": "true"}))
        api.add_pod(make_pod("elsewhere", "not-mine", other_uid, "node-b",
                             labels={"app": "nginx"}))
        api.start()
        web.write("nginx", ["web 1"])
        web.write("nginx", ["web err 1"], stream="stderr")
        apip.write("app", ["api 1"])
        skip.write("app", ["skip 1"])
        quiet.write("app", ["quiet 1"])
        tok = wd.p("token")
        with open(tok, "w") as f:
            f.write(TOKEN + "\n")

        out_web, out_rest = wd.p("web.jsonl"), wd.p("rest.jsonl")
        out_audit = wd.p("audit.jsonl")
        # nginx pods feed two pipelines: each gets every record.
        select = ("function(src)\n"
                  "  if src['k8s.pod.label.app'] == 'nginx' then\n"
                  "    return { 'web', 'audit' } end\n"
                  "  return 'rest'\nend")
        cfgp = wd.p("lugger.lua")
        it.write_config(
            cfgp, settings(wd),
            {"pods": {"type": "kubernetes", "pods_dir": node.pods,
                      "docker_dir": "", "kube_api": api.url,
                      "token_file": tok, "read_from": "head",
                      # Generous: under a loaded CI machine (ASan, other
                      # tests) an event may take seconds; a pod known in
                      # time costs no wait at all.
                      "api_wait": "30s",
                      "annotations": ["team"],
                      "exclude": {"labels": {"skip": "yes"}},
                      "select": "@SELECT@"}},
            {"web": {"sources": ["pods"], "outputs": ["w"]},
             "rest": {"sources": ["pods"], "outputs": ["r"]},
             "audit": {"sources": ["pods"], "outputs": ["a"]}},
            {"w": {"type": "file", "path": out_web, "fsync": "never"},
             "r": {"type": "file", "path": out_rest, "fsync": "never"},
             "a": {"type": "file", "path": out_audit, "fsync": "never"}})
        with open(cfgp) as f:
            text = f.read()
        with open(cfgp, "w") as f:
            f.write(text.replace('"@SELECT@"', select))
        ow, orr, oa = Out(out_web), Out(out_rest), Out(out_audit)
        with it.Lugger(cfgp, env={"NODE_NAME": NODE}) as lg:
            r = ow.wait_body("web 1", 15, lg)
            expect_meta(r, {
                "k8s.namespace.name": "shop", "k8s.pod.name": web.name,
                "k8s.pod.uid": web.uid, "k8s.container.name": "nginx",
                "k8s.container.restart_count": 0, "k8s.node.name": NODE,
                "container.id": "cid-web", "k8s.pod.ip": "10.1.0.5",
                "container.image.name": "docker.io/library/nginx",
                "container.image.tag": "1.25",
                "k8s.replicaset.name": "web-7d9f8",
                "k8s.deployment.name": "web",
                "k8s.pod.label.app": "nginx",
                "k8s.pod.label.pod-template-hash": "7d9f8",
                "k8s.pod.annotation.team": "storefront",
                "log.iostream": "stdout"}, "enriched record")
            it.check("k8s.pod.annotation.secret" not in r,
                     "annotation not in the allow-list was copied: %r" % r)
            ow.wait_body("web err 1", 5, lg)
            r = orr.wait_body("api 1", 5, lg)
            expect_meta(r, {"k8s.statefulset.name": "api",
                            "k8s.pod.label.app": "api"}, "select 'rest'")
            it.check(api.lists == 1, "lists: %d, want 1" % api.lists)
            it.check(not any(r.get("k8s.pod.uid") == other_uid
                             for r in ow.poll() + orr.poll()),
                     "metadata of another node's pod")
            it.check(all(a == "Bearer " + TOKEN for _, a in api.requests),
                     "a request without the token: %r" % api.requests)
            it.check(all("fieldSelector=spec.nodeName%3D" + NODE in p
                         for p, _ in api.requests),
                     "a request without the node selector: %r" % [
                         p for p, _ in api.requests])

            # 3. MODIFIED: a new label on later records.
            api.modify_pod(web.uid, lambda p: p["metadata"]["labels"].update(
                version="v2"))
            time.sleep(0.3)
            web.write("nginx", ["web 2"])
            r = ow.wait_body("web 2", 5, lg)
            expect_meta(r, {"k8s.pod.label.version": "v2"}, "after MODIFIED")

            # 4. Deleted while being read.
            # As with a real kubelet, the API has the pod before its
            # containers write logs.
            gone_uid = "uid-gone-1"
            api.add_pod(make_pod("shop", "gone-1", gone_uid, NODE,
                                 labels={"app": "gone"}))
            gone = node.pod("shop", "gone-1", uid=gone_uid)
            gone.write("app", ["gone first"])
            orr.wait_body("gone first", 10, lg)
            n_gone = 20000
            gone.write("app", ["gone %d" % i for i in range(n_gone)])
            api.delete_pod(gone.uid)
            gone.delete()
            orr.wait_body("gone %d" % (n_gone - 1), 20, lg)
            bad = [r for r in orr.poll() if r["body"].startswith("gone ")
                   and r.get("k8s.pod.label.app") != "gone"]
            it.check(not bad, "%d records of the deleted pod lost their "
                     "metadata, e.g. %r" % (len(bad), bad[:1]))

            # 5. 410 Gone: relist; a pod added meanwhile is enriched.
            api.expire()
            late_uid = "uid-late-1"
            api.add_pod(make_pod("shop", "late-1", late_uid, NODE,
                                 labels={"app": "late"}))
            late = node.pod("shop", "late-1", uid=late_uid)
            late.write("app", ["late 1"])
            r = orr.wait_body("late 1", 10, lg)
            expect_meta(r, {"k8s.pod.label.app": "late"}, "after 410")
            it.wait_for(lambda: api.lists >= 2, 10, "a relist after 410",
                        proc=lg)
            # Bookmarks move the version a resumed watch starts from: a
            # change on another node moves it without an event for us.
            api.modify_pod(other_uid, lambda p: p["metadata"]["labels"].update(
                x="1"))
            rv_now = api.rv
            time.sleep(1.2)
            n_req = len(api.requests)
            api.end_watches()
            want = "resourceVersion=%d&" % rv_now
            it.wait_for(lambda: any("watch=1" in p and want in p
                                    for p, _ in api.requests[n_req:]), 10,
                        "a watch resumed at the bookmark's version %d" %
                        rv_now, proc=lg,
                        detail=lambda: repr(api.requests[n_req:]))
            # Down and up again: lugger comes back (a resumed watch, or a
            # list when it tried while the API was down).
            api.stop()
            n_req = len(api.requests)
            api.start()
            it.wait_for(lambda: len(api.requests) > n_req, 15,
                        "a request after the API came back", proc=lg)
            oa.wait_body("web 2", 10, lg)
            lg.stop()
            lg.check_sanitizers()
        # select() returned two pipelines for the nginx pod: the same
        # records, with the same metadata, in both.
        web_recs = [(r["body"], r.get("k8s.pod.label.app")) for r in ow.poll()]
        audit_recs = [(r["body"], r.get("k8s.pod.label.app"))
                      for r in oa.poll()]
        it.check(sorted(web_recs) == sorted(audit_recs) and web_recs,
                 "web and audit outputs differ: %r vs %r" % (web_recs,
                                                            audit_recs))
        offs = it.checkpoint_offsets(wd.state)
        size = os.path.getsize(web.log("nginx"))
        it.check(offs.get(web.log("nginx")) == size,
                 "checkpoint of the two-pipeline file: %r, size %d" % (
                     offs.get(web.log("nginx")), size))
        bodies = [r["body"] for r in ow.poll() + orr.poll()]
        for b in ["skip 1", "quiet 1"]:
            it.check(b not in bodies, "excluded %r was delivered" % b)
        it.check(len(bodies) == len(set(bodies)), "duplicates")
        api.stop()
        return len(bodies), api.lists, api.watches


def part_down_at_start():
    with it.WorkDir("k8s-api-down") as wd:
        node = Node(wd.path)
        api = FakeApiServer(tls=True, workdir=wd.path, token=TOKEN)
        port = api.reserve_port()
        p1 = node.pod("shop", "p1")
        api.add_pod(make_pod("shop", p1.name, p1.uid, NODE,
                             labels={"app": "p1"}))
        p1.write("app", ["before api"])
        tok = wd.p("token")
        with open(tok, "w") as f:
            f.write(TOKEN)
        out = wd.p("out.jsonl")
        cfg = it.write_config(
            wd.p("lugger.lua"), settings(wd),
            {"pods": {"type": "kubernetes", "pods_dir": node.pods,
                      "docker_dir": "", "read_from": "head",
                      "kube_api": "https://127.0.0.1:%d" % port,
                      "ca_file": api.ca_file, "token_file": tok,
                      "node_name": NODE, "api_wait": "1s"}},
            {"main": {"sources": ["pods"], "outputs": ["out"]}},
            {"out": {"type": "file", "path": out, "fsync": "never"}})
        o = Out(out)
        with it.Lugger(cfg) as lg:
            t0 = time.monotonic()
            r = o.wait_body("before api", 10, lg)
            waited = time.monotonic() - t0
            it.check(waited >= 0.8, "read after %.2f s, before api_wait" %
                     waited)
            it.check("k8s.pod.label.app" not in r and
                     r.get("k8s.pod.name") == "p1",
                     "path metadata only while the API is down: %r" % r)
            api.start()
            # Later records are enriched once the API answers (backoff).
            i = [0]

            def enriched():
                i[0] += 1
                p1.write("app", ["after api %d" % i[0]])
                time.sleep(0.2)
                return any(x.get("k8s.pod.label.app") == "p1"
                           for x in o.poll())
            it.wait_for(enriched, 20, "an enriched record after the API "
                        "came up", proc=lg, interval=0.3)
            lg.stop()
            lg.check_sanitizers()
        api.stop()
        return waited


def part_first_start_tail():
    """read_from = "tail" at the first start while the API has not answered
    yet: files that waited for their pod still start at their end (their
    old lines are not shipped), and new lines come with the pod's labels."""
    with it.WorkDir("k8s-api-tail") as wd:
        node = Node(wd.path)
        api = FakeApiServer()
        port = api.reserve_port()
        p1 = node.pod("shop", "p1")
        api.add_pod(make_pod("shop", p1.name, p1.uid, NODE,
                             labels={"app": "p1"}))
        p1.write("app", ["old %d" % i for i in range(100)])
        # Not selected by include.labels.
        p2 = node.pod("shop", "p2")
        api.add_pod(make_pod("shop", p2.name, p2.uid, NODE,
                             labels={"app": "other"}))
        out = wd.p("out.jsonl")
        cfg = it.write_config(
            wd.p("lugger.lua"), settings(wd),
            {"pods": {"type": "kubernetes", "pods_dir": node.pods,
                      "docker_dir": "", "read_from": "tail",
                      "kube_api": "http://127.0.0.1:%d" % port,
                      "node_name": NODE, "api_wait": "30s",
                      "include": {"labels": {"app": "p1"}}}},
            {"main": {"sources": ["pods"], "outputs": ["out"]}},
            {"out": {"type": "file", "path": out, "fsync": "never"}})
        o = Out(out)
        with it.Lugger(cfg) as lg:
            time.sleep(1.0)  # the first scan is done; the API is down
            api.start()
            it.wait_for(lambda: api.lists >= 1, 15, "a list", proc=lg)
            time.sleep(0.5)

            def new_line():
                p2.write("app", ["p2 new"])
                p1.write("app", ["new"])
                time.sleep(0.2)
                return o.find("new")
            it.wait_for(new_line, 15, "a new line", proc=lg, interval=0.2)
            lg.stop()
        recs = o.poll()
        old = [r for r in recs if r["body"].startswith("old ")]
        it.check(not old, "%d lines written before the first start were "
                 "shipped despite read_from = \"tail\"" % len(old))
        it.check(not [r for r in recs if r["body"] == "p2 new"],
                 "a pod not matching include.labels was read")
        new = [r for r in recs if r["body"] == "new"]
        it.check(new and all(r.get("k8s.pod.label.app") == "p1" for r in new),
                 "new lines without the pod's labels: %r" % new[:1])
        api.stop()


def run():
    it.require_binary()
    n, lists, watches = part_main()
    waited = part_down_at_start()
    part_first_start_tail()
    return ("%d records enriched from the API (%d lists, %d watches); API "
            "down at start: path metadata after %.1f s, enriched later" % (
                n, lists, watches, waited))


if __name__ == "__main__":
    it.main("k8s_api", run)
