#!/usr/bin/env python3
"""A file inside a Docker container's own filesystem (on no volume), read
from the node through the Docker Engine API.

The Debian docker.io engine (runtime/rt.py, private socket and data root,
here with the overlay2 storage driver, whose GraphDriver.Data.UpperDir is
the container's writable layer) runs a container from a busybox-static
image that writes /var/log/app/app.log in its own root filesystem,
renaming it to app.log.1 every 100 lines. The stand-in API server
publishes the pod with the container's id (docker://...) and the
annotation lugger.io/files: "app:/var/log/app/*.log"; the pod spec has no
volume there. lugger's kubernetes source (docker_socket = the engine's
socket, containerd_state off) asks GET /containers/<id>/json over the unix
socket (libcurl), finds no mount holding the path, and follows the glob
in the UpperDir.

Checked: every line once, in order, with the pod's metadata, container.id
the container's, log.file.path the in-container path.
"""

import os
import time
import uuid

import lugger_it as it
from k8s_api_server import FakeApiServer, make_pod
from runtime import rt

NODE = "node-dfs"
N = 500


def main():
    it.require_binary()
    with rt.work_dir("k8s-files-docker") as wd:
        base = rt.short_dir("lgdf-")
        docker = rt.DockerDaemon(base, storage_driver="overlay2")
        pods = wd.mk("pods")
        out = wd.p("out.jsonl")
        api = FakeApiServer(bookmark_interval=0.5)
        api.start()
        lg = None
        try:
            docker.start()
            rootfs = rt.make_rootfs(wd.p("rootfs"))
            docker.cli("import", rt.rootfs_tar(rootfs, wd.p("rootfs.tar")),
                       "lugger-it/busybox:local")
            cfg = it.write_config(
                wd.p("lugger.lua"),
                {"state_dir": wd.state, "workers": 2,
                 "checkpoint_interval": "200ms", "rescan_interval": "1s"},
                {"pods": {"type": "kubernetes", "pods_dir": pods,
                          "docker_dir": "", "kube_api": api.url,
                          "node_name": NODE,
                          "kubelet_dir": wd.mk("kubelet"),
                          "containerd_state": "",
                          "docker_socket": docker.sock,
                          "read_from": "head"}},
                {"main": {"sources": ["pods"], "outputs": ["out"]}},
                {"out": {"type": "file", "path": out, "fsync": "never"}})
            lg = it.Lugger(cfg)
            lg.wait_started()
            uid = str(uuid.uuid4())
            script = ('mkdir -p /var/log/app; i=0; while [ $i -lt %d ]; do '
                      'i=$((i+1)); echo "dfs line $i" >> /var/log/app/app.log; '
                      'if [ $((i %% 100)) -eq 0 ]; then mv /var/log/app/app.log '
                      '/var/log/app/app.log.1; fi; usleep 4000; done; '
                      'sleep 3' % N)
            # The name cri-dockerd gives a pod's container.
            cid = docker.cli(
                "run", "-d", "--network", "none", "--name",
                "k8s_app_dfs_shop_%s_0" % uid, "lugger-it/busybox:local",
                "sh", "-c", script).stdout.decode().strip()
            it.check(len(cid) == 64, "docker run: %r" % cid)
            api.add_pod(make_pod(
                "shop", "dfs", uid, NODE, labels={"app": "dfs"},
                annotations={"lugger.io/files": "app:/var/log/app/*.log"},
                containers=[("app", "lugger-it/busybox:local")],
                statuses={"app": ("docker://" + cid, 0, None)}))
            want = ["dfs line %d" % i for i in range(1, N + 1)]
            it.wait_for(lambda: len(records(out)) >= N, 60,
                        "%d records of the file in the container" % N,
                        proc=lg, detail=lambda: "%d so far\n%s" % (
                            len(records(out)), lg.stderr_tail()))
            time.sleep(1.0)
            lg.stop()
            lg.check_sanitizers()
        finally:
            if lg is not None:
                lg.kill9()
            api.stop()
            docker.stop()
        recs = records(out)
        meta = {"k8s.namespace.name": "shop", "k8s.pod.name": "dfs",
                "k8s.pod.uid": uid, "k8s.container.name": "app",
                "container.id": cid, "k8s.node.name": NODE,
                "k8s.pod.label.app": "dfs",
                "log.file.path": "/var/log/app/app.log"}
        it.check_records_exact(recs, want, meta)
        it.check("/diff/var/log/app/*.log" in lg.stderr_text(),
                 "lugger did not read from the UpperDir:\n%s" %
                 lg.stderr_tail())
    return ("%d lines written inside a Docker container (overlay2, rename "
            "rotation, no volume) read once each through its UpperDir from "
            "the Engine API, with the pod's metadata" % N)


def records(path):
    if not os.path.exists(path):
        return []
    return it.read_jsonl(path, allow_partial_tail=True)


if __name__ == "__main__":
    rt.main("test_k8s_files_docker", main)
