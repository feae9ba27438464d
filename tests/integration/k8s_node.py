"""A fake Kubernetes node's log directories for the kubernetes-source tests.

It lays files out the way the kubelet and Docker do (Kubernetes "Logging
architecture"; the CRI logging format of the kubelet's runtimes; Docker's
json-file driver):

    <pods>/<namespace>_<pod>_<uid>/<container>/<restart>.log     CRI lines
    <pods>/.../<restart>.log.<YYYYMMDD-hhmmss>                   rotated
    <docker>/<id>/<id>-json.log + config.v2.json (pod labels)    Docker

and appends lines in those formats. Used with lugger_it.
"""

import datetime
import json
import os
import shutil
import uuid


def now_rfc3339():
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def cri_line(body, stream="stdout", tag="F"):
    return "%s %s %s %s\n" % (now_rfc3339(), stream, tag, body)


def docker_line(body, stream="stdout"):
    return json.dumps({"log": body + "\n", "stream": stream,
                       "time": now_rfc3339()}) + "\n"


class Pod:
    def __init__(self, node, ns, name, uid=None, containers=("app",)):
        self.node, self.ns, self.name = node, ns, name
        self.uid = uid or str(uuid.uuid4())
        self.containers = list(containers)
        self.dir = os.path.join(node.pods, "%s_%s_%s" % (ns, name, self.uid))
        self.restarts = {c: 0 for c in containers}

    def create(self):
        for c in self.containers:
            os.makedirs(os.path.join(self.dir, c), exist_ok=True)
            open(self.log(c), "ab").close()
        return self

    def log(self, container, restart=None):
        r = self.restarts[container] if restart is None else restart
        return os.path.join(self.dir, container, "%d.log" % r)

    def write(self, container, bodies, stream="stdout"):
        with open(self.log(container), "a") as f:
            for b in bodies:
                f.write(cri_line(b, stream))

    def rotate(self, container, stamp="20240501-120000"):
        """The kubelet's rotation: rename the live file, start a new one."""
        src = self.log(container)
        dst = src + "." + stamp
        os.rename(src, dst)
        open(src, "ab").close()
        return dst

    def restart(self, container):
        self.restarts[container] += 1
        open(self.log(container), "ab").close()

    def delete(self):
        shutil.rmtree(self.dir)


class DockerContainer:
    def __init__(self, node, cid, pod=None, ns=None, uid=None,
                 container=None):
        self.node, self.id = node, cid
        self.dir = os.path.join(node.docker, cid)
        self.labels = {}
        if pod:
            self.labels = {"io.kubernetes.pod.name": pod,
                           "io.kubernetes.pod.namespace": ns,
                           "io.kubernetes.pod.uid": uid,
                           "io.kubernetes.container.name": container}

    def create(self):
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "config.v2.json"), "w") as f:
            json.dump({"ID": self.id, "Config": {"Labels": self.labels}}, f)
        open(self.log(), "ab").close()
        return self

    def log(self):
        return os.path.join(self.dir, "%s-json.log" % self.id)

    def write(self, bodies, stream="stdout"):
        with open(self.log(), "a") as f:
            for b in bodies:
                f.write(docker_line(b, stream))


class Node:
    def __init__(self, root):
        self.pods = os.path.join(root, "pods")
        self.docker = os.path.join(root, "docker")
        os.makedirs(self.pods, exist_ok=True)
        os.makedirs(self.docker, exist_ok=True)

    def pod(self, ns, name, containers=("app",), uid=None):
        return Pod(self, ns, name, uid=uid, containers=containers).create()

    def docker_container(self, cid, **kw):
        return DockerContainer(self, cid, **kw).create()
