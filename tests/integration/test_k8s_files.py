#!/usr/bin/env python3
"""Log files inside pods: the `lugger.io/files` annotation.

Pods' volumes are laid out on a fake node as the kubelet lays them out
(<kubelet_dir>/pods/<uid>/volumes/kubernetes.io~empty-dir/<volume>/, and a
hostPath directory); real podman containers (runc, busybox-static root)
have them mounted where the pod spec says and write their log files there
with rename rotation (app.log -> app.log.1, as logrotate's default does).
The stand-in API server (k8s_api_server.py) serves the pods with their
spec.volumes, the containers' volumeMounts and the annotation. lugger's
kubernetes source (pods_dir empty, kubelet_dir the fake one) maps each
declared in-container glob to the node and reads the files.

- web: emptyDir `logs` at /var/log/app, annotation "app:/var/log/app/*.log"
  from the start; 1,500 lines rotated every 300.
- batch: a hostPath volume mounted with subPath "batch" at /data; its file
  is written first (200 lines and a Java stack trace), the annotation comes
  later (a MODIFIED event): the whole file is read; the source's
  multiline = "java" makes the trace one record, and its select() sends
  the file (by its in-container path) to a pipeline whose script marks it.
- gone: writing when the API deletes it; then its container stops and
  the kubelet removes the emptyDir: every line it wrote is read.
- bad: declares a path on no volume: an error naming the pod.
- evil: a symlink in its volume pointing at a file of the node: refused.

Checked: each pod's records are exactly the lines its container wrote, in
order, each once; each carries the pod's metadata (namespace, name, uid,
labels, node, container name, container.id, IP) and log.file.path = the
path in the container; nothing else is read.
"""

import json
import os
import shutil
import time
import uuid

import lugger_it as it
from k8s_api_server import FakeApiServer, make_pod
from runtime import rt

NODE = "node-files"
# A Java stack trace (printf text): multiline = "java" makes it one record.
TRACE = ('Exception in thread "main" java.lang.IllegalStateException: '
         'done\\n\\tat job.Main.run(Main.java:10)\\n\\tat '
         'job.Main.main(Main.java:3)\\n')
N_WEB = 1500


def writer(path, n, rotate_every, prefix, pace_us=2000):
    """busybox sh: n numbered lines to `path`, renamed to path.1 every
    `rotate_every` lines (then a new file is written at `path`)."""
    return ('i=0; while [ $i -lt %d ]; do i=$((i+1)); '
            'echo "%s line $i" >> %s; '
            'if [ $((i %% %d)) -eq 0 ]; then mv %s %s.1; fi; '
            'usleep %d; done' % (n, prefix, path, rotate_every, path, path,
                                 pace_us))


def forever(path, prefix, stop):
    return ('i=0; while [ ! -f %s ]; do i=$((i+1)); echo "%s line $i" >> %s; '
            'usleep 3000; done' % (stop, prefix, path))


def main():
    it.require_binary()
    with rt.work_dir("k8s-files") as wd:
        podman = rt.Podman()
        kubelet = wd.mk("node", "var/lib/kubelet")
        hostvol = wd.mk("node", "srv/batch-logs")
        pods_dir = wd.mk("node", "var/log/pods")  # no container logs here
        api = FakeApiServer()
        api.start()

        def empty_dir(uid, vol):
            return os.path.join(kubelet, "pods", uid, "volumes",
                                "kubernetes.io~empty-dir", vol)

        def pod(name, uid, annotation, volumes, mounts, labels=None):
            ann = {"lugger.io/files": annotation} if annotation else {}
            return make_pod("shop", name, uid, NODE,
                            labels=dict({"app": name}, **(labels or {})),
                            annotations=ann, ip="10.1.0.%d" % (
                                len(api.pods) + 10),
                            containers=(("app", "example/%s:1" % name),),
                            statuses={"app": ("containerd://cid-" + name,
                                              0, None)},
                            volumes=volumes, mounts={"app": mounts})

        uids = {n: str(uuid.uuid4()) for n in
                ("web", "batch", "gone", "bad", "evil")}
        # web: emptyDir, declared from the start.
        web_dir = empty_dir(uids["web"], "logs")
        os.makedirs(web_dir)
        api.add_pod(pod("web", uids["web"], "app:/var/log/app/*.log",
                        [{"name": "logs", "emptyDir": {}}],
                        [{"name": "logs", "mountPath": "/var/log/app"}]))
        # batch: hostPath + subPath, declared later.
        batch_dir = os.path.join(hostvol, "batch")
        os.makedirs(batch_dir)
        api.add_pod(pod("batch", uids["batch"], None,
                        [{"name": "data", "hostPath": {
                            "path": "/srv/batch-logs"}}],
                        [{"name": "data", "mountPath": "/data",
                          "subPath": "batch"}]))
        # gone: emptyDir, deleted while writing.
        gone_dir = empty_dir(uids["gone"], "logs")
        os.makedirs(gone_dir)
        api.add_pod(pod("gone", uids["gone"], "app:/var/log/app/*.log",
                        [{"name": "logs", "emptyDir": {}}],
                        [{"name": "logs", "mountPath": "/var/log/app/"}]))
        # bad: the path is on no volume.
        api.add_pod(pod("bad", uids["bad"], "app:/opt/app/logs/*.log",
                        [{"name": "logs", "emptyDir": {}}],
                        [{"name": "logs", "mountPath": "/var/log/app"}]))
        # evil: a symlink to a file of the node in its volume.
        evil_dir = empty_dir(uids["evil"], "logs")
        os.makedirs(evil_dir)
        secret = wd.p("node", "secret.txt")
        with open(secret, "w") as f:
            f.write("node secret\n")
        os.symlink(secret, os.path.join(evil_dir, "app.log"))
        api.add_pod(pod("evil", uids["evil"], "app:/var/log/app/*.log",
                        [{"name": "logs", "emptyDir": {}}],
                        [{"name": "logs", "mountPath": "/var/log/app"}]))

        out = wd.p("out.jsonl")
        cfg = it.write_config(
            wd.p("lugger.lua"),
            {"state_dir": wd.mk("state"), "workers": 2,
             "rescan_interval": "1s", "checkpoint_interval": "200ms"},
            {"pods": {"type": "kubernetes", "pods_dir": pods_dir,
                      "docker_dir": "", "kube_api": api.url,
                      "node_name": NODE, "kubelet_dir": kubelet,
                      "host_root": wd.p("node"), "read_from": "head"}},
            {"main": {"sources": ["pods"], "outputs": ["out"]},
             "jobs": {"sources": ["pods"], "scripts": ["job.lua"],
                      "outputs": ["out"]}},
            {"out": {"type": "file", "path": out, "fsync": "never"}},
            scripts={"job.lua": "function process(rec) rec.job = true "
                                "end\n"})
        # select() sees a declared file's metadata (its in-container path).
        with open(cfg) as f:
            text = f.read()
        text = text.replace(
            'type = "kubernetes",', 'type = "kubernetes", multiline = '
            '"java",\n      select = function(src)\n        if src['
            '"log.file.path"] == "/data/job.log" then return "jobs" end\n'
            '        return "main"\n      end,', 1)
        it.check("select = function" in text, "config shape changed")
        with open(cfg, "w") as f:
            f.write(text)
        rootfs = rt.make_rootfs(wd.p("rootfs"))
        lg = it.Lugger(cfg)
        stop = os.path.join(rootfs, "stop-gone")
        try:
            lg.wait_started()
            it.wait_for(lambda: api.watches >= 1, 15, "lugger to watch",
                        proc=lg, detail=lg.stderr_tail)
            # The batch job writes its file before it is declared.
            p_batch = podman.start(rootfs, wd.p("batch.cri"), writer(
                "/data/job.log", 200, 10**6, "batch", 0) + "; printf '%s' "
                ">> /data/job.log" % TRACE, "files-batch",
                volumes=[(batch_dir, "/data")])
            p_web = podman.start(rootfs, wd.p("web.cri"), writer(
                "/var/log/app/app.log", N_WEB, 300, "web"), "files-web",
                volumes=[(web_dir, "/var/log/app")])
            p_gone = podman.start(rootfs, wd.p("gone.cri"), forever(
                "/var/log/app/app.log", "gone", "/stop-gone"), "files-gone",
                volumes=[(gone_dir, "/var/log/app")])
            podman.wait(p_batch)
            time.sleep(1.5)  # a rescan that must not read it
            it.check(not any("batch line" in r.get("body", "")
                             for r in records(out)),
                     "batch's file was read before it was declared")
            api.modify_pod(uids["batch"], lambda p: p["metadata"][
                "annotations"].update({"lugger.io/files": "app:/data/*.log"}))
            # gone: deleted by the API while it writes; the kubelet stops
            # its container, then removes its volumes.
            it.wait_for(lambda: sum("gone line" in r.get("body", "")
                                    for r in records(out)) >= 50, 30,
                        "gone's first records", proc=lg,
                        detail=lg.stderr_tail)
            api.delete_pod(uids["gone"])
            time.sleep(0.3)
            open(stop, "w").close()
            podman.wait(p_gone)
            with open(os.path.join(gone_dir, "app.log")) as f:
                gone_lines = f.read().splitlines()
            shutil.rmtree(os.path.join(kubelet, "pods", uids["gone"]))
            podman.wait(p_web, timeout=120)
            web_lines = ["web line %d" % i for i in range(1, N_WEB + 1)]
            batch_lines = ["batch line %d" % i for i in range(1, 201)] + \
                [TRACE.replace("\\n", "\n").replace(
                    "\\t", "\t").rstrip("\n")]
            want = {"web": web_lines, "batch": batch_lines,
                    "gone": gone_lines}
            it.wait_for(lambda: all(
                len([r for r in records(out) if r["k8s.pod.name"] == n])
                >= len(v) for n, v in want.items()), 60,
                "every declared line", proc=lg,
                detail=lambda: "%s\n%s" % (
                    {n: len([r for r in records(out)
                             if r["k8s.pod.name"] == n]) for n in want},
                    lg.stderr_tail()))
            time.sleep(1.0)  # nothing more may come
            lg.stop()
            lg.check_sanitizers()
        finally:
            lg.kill9()
            api.stop()
            podman.stop()
        recs = records(out)
        errs = lg.stderr_text()
        for name, lines in want.items():
            got = [r for r in recs if r["k8s.pod.name"] == name]
            bodies = [r["body"] for r in got]
            it.check(bodies == lines, "%s: %d records for %d lines, %d "
                     "duplicated, first differences %s" % (
                         name, len(bodies), len(lines),
                         len(bodies) - len(set(bodies)),
                         [(a, b) for a, b in zip(bodies, lines)
                          if a != b][:3]))
            path = "/data/job.log" if name == "batch" else \
                "/var/log/app/app.log"
            meta = {"k8s.namespace.name": "shop", "k8s.pod.name": name,
                    "k8s.pod.uid": uids[name], "k8s.container.name": "app",
                    "container.id": "cid-" + name, "k8s.node.name": NODE,
                    "k8s.pod.label.app": name, "log.file.path": path,
                    "container.image.name": "example/" + name,
                    "container.image.tag": "1"}
            for r in got:
                it.check(r.get("job") is (True if name == "batch" else None),
                         "%s: select() sent it to the wrong pipeline: %s" % (
                             name, json.dumps(r)))
                for k, v in meta.items():
                    it.check(r.get(k) == v, "%s: %s = %r, want %r\n%s" % (
                        name, k, r.get(k), v, json.dumps(r)))
                it.check(r.get("k8s.pod.ip", "").startswith("10.1.0."),
                         "pod ip: %r" % r)
        others = {r["k8s.pod.name"] for r in recs} - set(want)
        it.check(not others, "records of %s" % others)
        it.check(not any("node secret" in r.get("body", "") for r in recs),
                 "the symlink out of the volume was read")
        it.check("shop/bad" in errs and "/opt/app/logs/*.log" in errs and
                 "no volume" in errs, "no error naming pod shop/bad:\n%s" %
                 lg.stderr_tail())
        it.check("shop/evil" in errs and "out of its volume" in errs,
                 "no warning about evil's symlink:\n%s" % lg.stderr_tail())
        rt.check_nothing_left(wd.path)
    return ("declared files: web %d lines rotated every 300, batch %d "
            "(declared later, hostPath+subPath), gone %d (deleted while "
            "writing): each once, in order, with the pod's metadata; a path "
            "on no volume named, a symlink out refused" % (
                len(web_lines), len(batch_lines), len(gone_lines)))


def records(path):
    if not os.path.exists(path):
        return []
    return it.read_jsonl(path, allow_partial_tail=True)


if __name__ == "__main__":
    rt.main("test_k8s_files", main)
