#!/usr/bin/env python3
"""A file inside a container's own filesystem (on no volume), read from
the node through containerd's task bundle.

containerd with its CRI plugin (runtime/rt.py: private root and state,
overlayfs snapshotter, runc) runs a pod the way the kubelet does; its
container (busybox-static image) writes /var/log/app/app.log in its own
root filesystem, renaming it to app.log.1 every 100 lines. The stand-in
API server publishes the pod after the container started, with its
containerID and the annotation lugger.io/files: "app:/var/log/app/*.log";
the pod spec has no volume there. lugger's kubernetes source
(containerd_state = the test's containerd state directory) finds the
task's bundle <state>/io.containerd.runtime.v2.task/k8s.io/<id>/, reads
its config.json (no bind mount holds the path) and follows the glob in
the rootfs the shim mounted (the merged overlay).

Checked: every line once, in order, with the pod's metadata, container.id
the container's, log.file.path the in-container path; when the pod is
stopped and removed (its rootfs unmounted), nothing more comes and the
file was read to its end before.
"""

import os
import time
import uuid

import lugger_it as it
from k8s_api_server import FakeApiServer, make_pod
from runtime import rt

NODE = "node-cfs"
N = 500


def main():
    it.require_binary()
    with rt.work_dir("k8s-files-containerd") as wd:
        base = rt.short_dir("lgcf-")
        cd = rt.Containerd(base)
        pods = wd.mk("pods")
        out = wd.p("out.jsonl")
        api = FakeApiServer(bookmark_interval=0.5)
        api.start()
        lg = None
        try:
            cd.start()
            rootfs = rt.make_rootfs(wd.p("rootfs"))
            cd.import_images(rt.docker_archive(rootfs, wd.p("images.tar"), {
                "localhost/bb:local": {"Cmd": ["/bin/sh"]},
                cd.SANDBOX_IMAGE: {"Entrypoint": ["/bin/sleep", "86400"]}}))
            cfg = it.write_config(
                wd.p("lugger.lua"),
                {"state_dir": wd.state, "workers": 2,
                 "checkpoint_interval": "200ms", "rescan_interval": "1s"},
                {"pods": {"type": "kubernetes", "pods_dir": pods,
                          "docker_dir": "", "kube_api": api.url,
                          "node_name": NODE,
                          "kubelet_dir": wd.mk("kubelet"),
                          "containerd_state": os.path.join(base, "state"),
                          "include": {"containers": ["app"]},
                          "read_from": "head"}},
                {"main": {"sources": ["pods"], "outputs": ["out"]}},
                {"out": {"type": "file", "path": out, "fsync": "never"}})
            lg = it.Lugger(cfg)
            lg.wait_started()
            uid = str(uuid.uuid4())
            sid, sconf = cd.run_pod("shop", "cfs", uid,
                                    os.path.join(pods, "shop_cfs_" + uid))
            script = ('mkdir -p /var/log/app; i=0; while [ $i -lt %d ]; do '
                      'i=$((i+1)); echo "cfs line $i" >> /var/log/app/app.log; '
                      'if [ $((i %% 100)) -eq 0 ]; then mv /var/log/app/app.log '
                      '/var/log/app/app.log.1; fi; usleep 4000; done; '
                      'sleep 3' % N)
            cid, _ = cd.run_container(sid, sconf, "app",
                                      ["/bin/sh", "-c", script])
            # The kubelet publishes the running container's id.
            api.add_pod(make_pod(
                "shop", "cfs", uid, NODE, labels={"app": "cfs"},
                annotations={"lugger.io/files": "app:/var/log/app/*.log"},
                containers=[("app", "localhost/bb:local")],
                statuses={"app": ("containerd://" + cid, 0, None)}))
            want = ["cfs line %d" % i for i in range(1, N + 1)]
            it.wait_for(lambda: len(records(out)) >= N, 60,
                        "%d records of the file in the container" % N,
                        proc=lg, detail=lambda: "%d so far\n%s" % (
                            len(records(out)), lg.stderr_tail()))
            cd.wait_exited(cid, 60)
            api.delete_pod(uid)
            cd.remove_pods()
            time.sleep(1.5)
            lg.stop()
            lg.check_sanitizers()
        finally:
            if lg is not None:
                lg.kill9()
            api.stop()
            cd.stop()
        recs = records(out)
        meta = {"k8s.namespace.name": "shop", "k8s.pod.name": "cfs",
                "k8s.pod.uid": uid, "k8s.container.name": "app",
                "container.id": cid, "k8s.node.name": NODE,
                "k8s.pod.label.app": "cfs",
                "log.file.path": "/var/log/app/app.log"}
        it.check_records_exact(recs, want, meta)
        it.check("io.containerd.runtime.v2.task/k8s.io/%s/rootfs" % cid
                 in lg.stderr_text(), "lugger did not say where it reads:\n%s"
                 % lg.stderr_tail())
    return ("%d lines written inside a containerd container (rename "
            "rotation, no volume) read once each through its task's rootfs, "
            "with the pod's metadata" % N)


def records(path):
    if not os.path.exists(path):
        return []
    return it.read_jsonl(path, allow_partial_tail=True)


if __name__ == "__main__":
    rt.main("test_k8s_files_containerd", main)
