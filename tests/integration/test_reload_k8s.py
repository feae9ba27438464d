#!/usr/bin/env python3
"""Hot reload of a kubernetes source (issue 5 item 2; README "Hot
reload"), with a fake pods dir and kube_api = "off":

1. A reload adds the kubernetes source: its pods' lines arrive, with
   k8s.* metadata.
2. A reload changes its include regex (only pod web-1 now): api-1's new
   lines stop, web-1's go on, nothing is duplicated.
3. A reload removes it: the new lines of both pods stop.
4. A reload adds it back (both pods): it resumes at the checkpoints, so
   every line written meanwhile arrives, and no line arrives twice.
A file source in the same pipeline goes on throughout (its marker lines
show that the collector has read past the pods' lines).
"""

import os
import time

import lugger_it as it
from k8s_node import Node

NODE = "node-r"


def reload_ok_count(proc):
    ok = bad = 0
    for r in proc.log_records():
        if r.get("component") != "reload":
            continue
        msg = r.get("msg", "")
        if "reload failed" in msg:
            bad += 1
        elif "config generation" in msg and "running" in msg:
            ok += 1
    return ok, bad


def run():
    it.require_binary()
    with it.WorkDir("reload-k8s-src") as wd:
        node = Node(wd.path)
        web = node.pod("default", "web-1")
        api = node.pod("default", "api-1")
        marks = os.path.join(wd.logs, "marks.log")
        open(marks, "w").close()
        out = wd.p("out.jsonl")
        settings = {"state_dir": wd.state, "workers": 2,
                    "checkpoint_interval": "200ms", "rescan_interval": "1s"}
        fsrc = {"type": "file", "paths": [marks], "read_from": "head",
                "format": "line"}

        def config(pods):
            sources = {"f": fsrc}
            names = ["f"]
            if pods is not None:
                sources["pods"] = {
                    "type": "kubernetes", "pods_dir": node.pods,
                    "docker_dir": "", "kube_api": "off", "read_from": "head",
                    "include": {"pods": pods}}
                names.append("pods")
            it.write_config(
                wd.p("lugger.lua"), settings, sources,
                {"main": {"sources": names, "outputs": ["out"]}},
                {"out": {"type": "file", "path": out, "fsync": "never"}})
            return wd.p("lugger.lua")

        recs = []
        follower = it.JsonlFollower(out, on_record=recs.append)

        def bodies():
            follower.poll()
            return [r["body"] for r in recs]

        def wait_body(b, lg, timeout=10):
            it.wait_for(lambda: b in bodies(), timeout, "record %r" % b,
                        proc=lg)

        nmark = [0]

        def mark(lg):
            # A line of the file source: once it is out, the pods' lines
            # written before it were read (or are not read at all).
            nmark[0] += 1
            m = "mark %d" % nmark[0]
            with open(marks, "a") as f:
                f.write(m + "\n")
            wait_body(m, lg)
            time.sleep(1.5)  # a rescan, and batches in flight
            follower.poll()

        def reload(lg, pods, what):
            ok0, bad0 = reload_ok_count(lg)
            config(pods)
            it.wait_for(lambda: reload_ok_count(lg)[0] > ok0 or
                        reload_ok_count(lg)[1] > bad0, 20, what, proc=lg)
            time.sleep(0.8)  # a second event of the same edit, if any
            ok, bad = reload_ok_count(lg)
            it.check(bad == bad0, "%s: reload failed: %s" % (
                what, lg.stderr_tail()))

        def write(lo, hi):
            web.write("app", ["web %d" % i for i in range(lo, hi)])
            api.write("app", ["api %d" % i for i in range(lo, hi)])

        write(0, 10)
        with it.Lugger(config(None), env={"NODE_NAME": NODE}) as lg:
            mark(lg)
            it.check(not any(b.startswith(("web", "api")) for b in bodies()),
                     "pod lines without a kubernetes source")

            # 1. Added.
            reload(lg, ["web-.*", "api-.*"], "add the kubernetes source")
            wait_body("web 9", lg)
            wait_body("api 9", lg)
            r = next(r for r in recs if r["body"] == "api 3")
            for k, v in {"k8s.namespace.name": "default",
                         "k8s.pod.name": "api-1", "k8s.pod.uid": api.uid,
                         "k8s.container.name": "app",
                         "k8s.node.name": NODE}.items():
                it.check(r.get(k) == v, "added source: %s = %r, want %r" % (
                    k, r.get(k), v))
            write(10, 20)
            wait_body("web 19", lg)
            wait_body("api 19", lg)

            # 2. Changed: api-1 no longer included.
            reload(lg, ["web-.*"], "change the include regex")
            write(20, 30)
            wait_body("web 29", lg)
            mark(lg)
            got = bodies()
            it.check(not any(b in got for b in
                             ("api %d" % i for i in range(20, 30))),
                     "excluded pod's new lines were read")

            # 3. Removed.
            reload(lg, None, "remove the kubernetes source")
            write(30, 40)
            mark(lg)
            got = bodies()
            it.check(not any(b in got for b in
                             ["web %d" % i for i in range(30, 40)] +
                             ["api %d" % i for i in range(30, 40)]),
                     "removed source's new lines were read")

            # 4. Added back: resumes at the checkpoints.
            reload(lg, ["web-.*", "api-.*"], "add the source back")
            write(40, 45)
            wait_body("web 44", lg)
            wait_body("api 44", lg)
            mark(lg)
            lg.stop()
            lg.check_sanitizers()

        got = bodies()
        for p in ("web", "api"):
            for i in range(45):
                n = got.count("%s %d" % (p, i))
                it.check(n == 1, "%s %d arrived %d times" % (p, i, n))
        dup = len(got) - len(set(got))
        it.check(dup == 0, "%d duplicated records" % dup)
        return "%d records over 4 reloads of a kubernetes source" % len(got)


if __name__ == "__main__":
    it.main("reload_k8s", run)
