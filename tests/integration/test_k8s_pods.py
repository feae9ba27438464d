#!/usr/bin/env python3
"""The kubernetes source without the API (kube_api = "off"): a fake
/var/log/pods tree and a Docker containers dir in a temp dir.

1. Path metadata on every record (k8s.namespace.name, k8s.pod.name,
   k8s.pod.uid, k8s.container.name, k8s.container.restart_count,
   log.iostream, log.file.path, k8s.node.name from NODE_NAME; container.id
   and pod labels from config.v2.json for Docker), CRI framing under the
   pods dir and Docker framing under the Docker dir.
2. Filters by namespace / pod / container regex: excluded containers never
   show up; included ones all do.
3. A pod created while lugger runs is read within 1 s of its first line.
4. Kubelet rotation (rename to <n>.log.<timestamp>, new <n>.log): every
   line of both files arrives once; the rotated one with its restart count.
5. A container restart (1.log next to 0.log): restart_count 1.
6. A pod deleted (its directory removed) right after writing: its last
   lines still arrive, with its metadata.
7. `streams`: include.streams = stdout drops stderr records (--once run).
8. The scripts of examples/k8s-nginx (stdout/stderr to two outputs) and
   examples/k8s-java (log4j line and grouped stack trace) via `lugger test`;
   and examples/k8s-java's set-up end to end: multiline = "java" on the
   kubernetes source groups a CRI stack trace into one record.
"""

import json
import os
import subprocess
import time

import lugger_it as it
from k8s_node import Node

NODE = "node-a"


def base_settings(wd):
    return {"state_dir": wd.state, "workers": 2, "checkpoint_interval": "200ms",
            "rescan_interval": "1s"}


def k8s_source(node, **kw):
    s = {"type": "kubernetes", "pods_dir": node.pods,
         "docker_dir": node.docker, "kube_api": "off", "read_from": "head"}
    s.update(kw)
    return s


class Out:
    def __init__(self, path):
        self.recs = []
        self.f = it.JsonlFollower(path, on_record=self.recs.append)

    def poll(self):
        self.f.poll()
        return self.recs

    def bodies(self, pred=None):
        self.poll()
        return [r["body"] for r in self.recs if pred is None or pred(r)]

    def wait_body(self, body, timeout, proc):
        it.wait_for(lambda: any(r["body"] == body for r in self.poll()),
                    timeout, "record %r" % body, proc=proc,
                    detail=lambda: "%d records so far" % len(self.recs))
        return next(r for r in self.recs if r["body"] == body)


def expect_meta(rec, want, what):
    for k, v in want.items():
        got = rec.get(k, "<absent>")
        it.check(got == v, "%s: %s = %r, want %r (record %r)" % (
            what, k, got, v, rec))


def part_main():
    with it.WorkDir("k8s-pods") as wd:
        node = Node(wd.path)
        web = node.pod("default", "web-1", containers=("nginx", "istio-proxy"))
        dns = node.pod("kube-system", "coredns-x")
        shop = node.pod("shop", "api-7", containers=("app",))
        dk = node.docker_container("c0ffee", pod="legacy-1", ns="shop",
                                   uid="uid-legacy", container="java")
        web.write("nginx", ["web out 1", "web out 2"])
        web.write("nginx", ["web err 1"], stream="stderr")
        web.write("istio-proxy", ["proxy noise"])
        dns.write("app", ["dns line"])
        shop.write("app", ["shop line"])
        dk.write(["docker out"])
        dk.write(["docker err"], stream="stderr")

        out = wd.p("out.jsonl")
        cfg = it.write_config(
            wd.p("lugger.lua"), base_settings(wd),
            {"pods": k8s_source(node, exclude={
                "namespaces": ["kube-.*"], "containers": ["istio-proxy"]})},
            {"main": {"sources": ["pods"], "outputs": ["out"]}},
            {"out": {"type": "file", "path": out, "fsync": "never"}})
        o = Out(out)
        with it.Lugger(cfg, env={"NODE_NAME": NODE}) as lg:
            r = o.wait_body("web out 1", 10, lg)
            expect_meta(r, {
                "log.iostream": "stdout",
                "log.file.path": web.log("nginx"),
                "k8s.namespace.name": "default", "k8s.pod.name": "web-1",
                "k8s.pod.uid": web.uid, "k8s.container.name": "nginx",
                "k8s.container.restart_count": 0, "k8s.node.name": NODE},
                "CRI record")
            it.check("container.id" not in r,
                     "container.id without the API: %r" % r)
            r = o.wait_body("web err 1", 5, lg)
            expect_meta(r, {"log.iostream": "stderr",
                            "k8s.container.name": "nginx"}, "CRI stderr")
            r = o.wait_body("docker err", 5, lg)
            expect_meta(r, {
                "log.iostream": "stderr", "log.file.path": dk.log(),
                "k8s.namespace.name": "shop", "k8s.pod.name": "legacy-1",
                "k8s.pod.uid": "uid-legacy", "k8s.container.name": "java",
                "container.id": "c0ffee", "k8s.node.name": NODE},
                "Docker record")
            o.wait_body("shop line", 5, lg)
            o.wait_body("docker out", 5, lg)

            # 3. A new pod is picked up within a second.
            time.sleep(0.3)
            late = node.pod("shop", "late-1")
            t0 = time.monotonic()
            late.write("app", ["late line"])
            r = o.wait_body("late line", 5, lg)
            dt = time.monotonic() - t0
            it.check(dt < 1.0, "new pod's line arrived after %.2f s" % dt)
            expect_meta(r, {"k8s.pod.name": "late-1", "k8s.pod.uid": late.uid},
                        "new pod")
            it.log("new pod picked up in %.0f ms" % (dt * 1000))

            # 4. Rotation: lines before, then in the new file.
            shop.write("app", ["before rotate %d" % i for i in range(50)])
            rotated = shop.rotate("app")
            shop.write("app", ["after rotate %d" % i for i in range(50)])
            o.wait_body("after rotate 49", 5, lg)
            o.wait_body("before rotate 49", 5, lg)

            # 5. A restart.
            shop.restart("app")
            shop.write("app", ["after restart"])
            r = o.wait_body("after restart", 5, lg)
            expect_meta(r, {"k8s.container.restart_count": 1,
                            "log.file.path": shop.log("app")}, "restart")

            # 6. A pod deleted right after its last lines.
            late.write("app", ["last words %d" % i for i in range(200)])
            late.delete()
            r = o.wait_body("last words 199", 5, lg)
            expect_meta(r, {"k8s.pod.name": "late-1",
                            "k8s.container.name": "app"}, "deleted pod")
            lg.stop()
            lg.check_sanitizers()

        recs = o.poll()
        bodies = [r["body"] for r in recs]
        for b in ["proxy noise", "dns line"]:
            it.check(b not in bodies, "excluded record %r was delivered" % b)
        dup = len(bodies) - len(set(bodies))
        it.check(dup == 0, "%d duplicated records" % dup)
        for i in range(50):
            it.check("before rotate %d" % i in bodies, "lost before rotate %d" % i)
            it.check("after rotate %d" % i in bodies, "lost after rotate %d" % i)
        for i in range(200):
            it.check("last words %d" % i in bodies, "lost last words %d" % i)
        for r in recs:
            it.check(r.get("k8s.node.name") == NODE, "no node name: %r" % r)
            if r["body"].startswith("before rotate"):
                it.check(r["log.file.path"] in (shop.log("app", 0), rotated),
                         "rotated record's path: %r" % r)
                it.check(r["k8s.container.restart_count"] == 0,
                         "rotated record's restart count: %r" % r)
        return len(recs), dt


def part_streams_and_regex():
    with it.WorkDir("k8s-streams") as wd:
        node = Node(wd.path)
        a = node.pod("shop", "web-1", containers=("nginx", "sidecar"))
        b = node.pod("shop", "db-0")
        a.write("nginx", ["a out"])
        a.write("nginx", ["a err"], stream="stderr")
        a.write("sidecar", ["side out"])
        b.write("app", ["b out"])
        out = wd.p("out.jsonl")
        cfg = it.write_config(
            wd.p("lugger.lua"), base_settings(wd),
            {"pods": k8s_source(node, docker_dir="", include={
                "pods": ["web-[0-9]+"], "containers": ["ngin."],
                "streams": "stdout"})},
            {"main": {"sources": ["pods"], "outputs": ["out"]}},
            {"out": {"type": "file", "path": out, "fsync": "never"}})
        lg = it.Lugger(cfg, once=True, env={"NODE_NAME": NODE})
        lg.wait(20)
        it.check(lg.returncode == 0, "--once exit %r: %s" % (
            lg.returncode, lg.stderr_tail()))
        bodies = sorted(r["body"] for r in it.read_jsonl(out))
        it.check(bodies == ["a out"], "include pods/containers/streams: "
                 "got %r, want ['a out']" % bodies)
        # The stderr record was read and dropped: the checkpoint covers it.
        offs = it.checkpoint_offsets(wd.state)
        size = os.path.getsize(a.log("nginx"))
        it.check(offs.get(a.log("nginx")) == size,
                 "checkpoint %r, file size %d" % (offs.get(a.log("nginx")),
                                                  size))


def lugger_test(args):
    p = subprocess.run([it.LUGGER, "test"] + args, capture_output=True,
                       text=True, timeout=60, env=it.asan_env())
    it.check(p.returncode == 0, "lugger test %s: exit %d: %s" % (
        " ".join(args), p.returncode, p.stderr[-2000:]))
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def part_examples():
    """The scripts of examples/k8s-*: stream routing and the Java parser
    (over a grouped stack trace, as multiline = "java" makes it)."""
    ex = os.path.join(it.SOURCE_DIR, "examples")
    fx = os.path.join(it.SOURCE_DIR, "tests", "fixtures", "k8s")
    recs = lugger_test([os.path.join(ex, "k8s-nginx", "streams.lua"),
                        os.path.join(fx, "nginx_streams.jsonl"),
                        "--format", "json", "--routes"])
    routes = [r["@routes"] for r in recs]
    it.check(routes == [["default"], ["stderr_out"]],
             "streams.lua routes: %r" % routes)
    recs = lugger_test([os.path.join(ex, "k8s-java", "java.lua"),
                        os.path.join(fx, "java.jsonl"), "--format", "json"])
    it.check(len(recs) == 3, "java.lua: %d records" % len(recs))
    expect_meta(recs[0], {"level": "ERROR", "thread": "main",
                          "logger": "com.example.Orders",
                          "log_time": "2024-05-01 12:00:00.123",
                          "message": "payment failed",
                          "exception": "java.lang.IllegalStateException"},
                "java.lua, stack trace")
    expect_meta(recs[1], {"level": "INFO", "thread": "http-nio-8080-exec-1",
                          "message": "GET /orders 200"}, "java.lua, one line")
    it.check("exception" not in recs[1] and "level" not in recs[2],
             "java.lua: %r" % recs[1:])


def part_java_multiline():
    """examples/k8s-java end to end: a kubernetes source with multiline =
    "java" and the example's java.lua over a CRI file with a stack trace."""
    with it.WorkDir("k8s-java") as wd:
        node = Node(wd.path)
        pod = node.pod("shop", "orders-0")
        trace = ["2024-05-01 12:00:00.123 ERROR [main] com.example.Orders - "
                 "payment failed",
                 "java.lang.IllegalStateException: card declined",
                 "\tat com.example.Orders.pay(Orders.java:42)",
                 "\tat com.example.Main.main(Main.java:7)",
                 "Caused by: java.io.IOException: timeout",
                 "\t... 2 more"]
        pod.write("app", trace)
        pod.write("app", ["2024-05-01 12:00:01.456 INFO [main] "
                          "com.example.Orders - next"])
        out = wd.p("out.jsonl")
        java = os.path.join(it.SOURCE_DIR, "examples", "k8s-java", "java.lua")
        cfg = it.write_config(
            wd.p("lugger.lua"), base_settings(wd),
            {"pods": k8s_source(node, docker_dir="", multiline="java")},
            {"main": {"sources": ["pods"], "scripts": [java],
                      "outputs": ["out"]}},
            {"out": {"type": "file", "path": out, "fsync": "never"}})
        lg = it.Lugger(cfg, once=True, env={"NODE_NAME": NODE})
        lg.wait(30)
        it.check(lg.returncode == 0, "--once exit %r: %s" % (
            lg.returncode, lg.stderr_tail()))
        recs = it.read_jsonl(out)
        it.check(len(recs) == 3, "%d records, want 3 (log line, grouped "
                 "trace, log line): %r" % (len(recs),
                                           [r["body"] for r in recs]))
        expect_meta(recs[0], {"level": "ERROR", "message": "payment failed",
                              "k8s.pod.name": "orders-0"}, "java log line")
        it.check(recs[1]["body"] == "\n".join(trace[1:]),
                 "grouped body: %r" % recs[1]["body"])
        expect_meta(recs[1], {"k8s.pod.name": "orders-0",
                              "exception": "java.lang.IllegalStateException",
                              "k8s.container.name": "app"}, "java trace")
        expect_meta(recs[2], {"level": "INFO", "message": "next"}, "java line")


def run():
    it.require_binary()
    n, dt = part_main()
    part_streams_and_regex()
    part_examples()
    part_java_multiline()
    return "%d records with path metadata; new pod read in %.0f ms" % (
        n, dt * 1000)


if __name__ == "__main__":
    it.main("k8s_pods", run)
