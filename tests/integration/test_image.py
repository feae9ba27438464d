#!/usr/bin/env python3
"""The image, built by scripts/image and run as Kubernetes runs it.

1. `scripts/image` builds lugger:<version> with podman (private storage
   under /var/cache/lugger-it/podman, kept between runs so its layer cache
   makes a rebuild take seconds; the first run builds everything, and
   mmdebstrap's base is cached by scripts/image itself). Checked: the
   printed size is the image's, under 50 MB; the image runs as 65532 by
   default; its root has the binary and no shell or package manager.
2. The DaemonSet: its pod template (deploy/daemonset.yaml, made a Pod here
   as the DaemonSet controller does, with what the kubelet fills in: the
   downward-API env values podman does not resolve, KUBERNETES_SERVICE_*
   and the service account volume; hostPaths under a fake node root) and
   deploy/configmap.yaml, played with `podman kube play`. Real podman
   containers (runc, k8s-file log driver) write CRI logs into the node's
   /var/log/pods, which the pod mounts read-only. The stand-in API server
   (k8s_api_server.py: TLS, bearer token) describes the pods, reachable
   from the pod at its network's gateway. Checked: the container's
   confinement (uid 0, CAP_DAC_READ_SEARCH only, read-only root);
   /healthz, /readyz and /metrics on the pod's IP and containerPort;
   records key by key against the README's sample record's keys and the
   pod's metadata; an edited filter.lua in the ConfigMap volume is
   reloaded (later records carry its field); `podman pod stop` with the
   grace period (the kubelet's SIGTERM; podman 4.3's `kube down` kills
   with SIGKILL at once) exits 0 after draining, with checkpoints on the
   node; `podman kube down`, the writer goes on, the pod is played again:
   every line the container printed from lugger's first read on is
   delivered exactly once across the two pods.
3. The sidecar (deploy/sidecar.yaml): its Pod and ConfigMap played the
   same way, the app container from a busybox-static image made here.
   Checked: lugger runs as 65532 with no capability and a read-only root;
   records carry the downward-API metadata; a ConfigMap edit is
   reloaded; stop, `kube down` and a second play (podman keeps the pod's
   emptyDir volumes, so the state survives as it would a container
   restart) lose and repeat nothing of the app's file.

No network namespace of the machine is touched: after the build, the test
moves into a network namespace of its own, where the pods' bridge, the
API server on :443 and the pods' :2020 live.

Skips (exit 77) only when podman cannot run here; a failed build fails.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import yaml

import lugger_it as it
from k8s_api_server import FakeApiServer, make_pod
from runtime import rt
import test_deploy as td

NODE = "node-a"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.image-test-token"
STORE = os.environ.get("LUGGER_IT_PODMAN_STORE", "/var/cache/lugger-it/podman")
SIZE_LIMIT = 50_000_000


# --------------------------------------------------------------------------
# podman with the test's persistent storage


class Engine:
    """Rootful podman with config and storage under STORE (overlay: layers
    are diffs, and the build cache survives between runs). One test run at a
    time holds STORE's lock."""

    def __init__(self):
        for d in ("root", "runroot", "tmp"):
            os.makedirs(os.path.join(STORE, d), exist_ok=True)
        self.lock = open(os.path.join(STORE, "lock"), "w")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        conf = os.path.join(STORE, "containers.conf")
        with open(conf, "w") as f:
            f.write('[containers]\n'
                    'default_ulimits = ["nofile=20000:20000", '
                    '"nproc=32768:32768"]\n'
                    'log_driver = "k8s-file"\n'
                    '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n'
                    'events_logger = "file"\ntmp_dir = "%s/tmp"\n' % STORE)
        sconf = os.path.join(STORE, "storage.conf")
        with open(sconf, "w") as f:
            f.write('[storage]\ndriver = "overlay"\ngraphroot = "%s/root"\n'
                    'runroot = "%s/runroot"\n' % (STORE, STORE))
        self.env = dict(os.environ, CONTAINERS_CONF=conf,
                        CONTAINERS_STORAGE_CONF=sconf,
                        LUGGER_IMAGE_ENGINE="podman")
        self.pods = []
        self.volumes = set()

    def run(self, *args, check=True, timeout=120):
        # Away from a directory named like the image: `kube play` would
        # build from <cwd>/<image name>/Containerfile.
        r = subprocess.run(["podman"] + list(args), env=self.env, cwd=STORE,
                           capture_output=True, text=True, timeout=timeout)
        if check:
            it.check(r.returncode == 0, "podman %s: exit %d\n%s%s" % (
                " ".join(args), r.returncode, r.stdout[-2000:],
                r.stderr[-2000:]))
        return r

    def cleanup(self):
        for yml in self.pods:
            self.run("kube", "down", yml, check=False)
        for v in self.volumes:
            self.run("volume", "rm", "-f", v, check=False)


def podman_usable():
    """None if podman can run a container here, else why not."""
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/setup installs it)"
    try:
        r = subprocess.run(["podman", "info"], capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "podman info: %s" % e
    if r.returncode != 0:
        return "podman info fails: %s" % r.stderr.strip()[-300:]
    if os.geteuid() != 0:
        return "rootful podman needs root"
    return None


# --------------------------------------------------------------------------
# The image


def build_image(eng, tag):
    t0 = time.monotonic()
    r = subprocess.run([os.path.join(it.SOURCE_DIR, "scripts", "image")],
                       env=eng.env, capture_output=True, text=True,
                       timeout=1800)
    took = time.monotonic() - t0
    it.check(r.returncode == 0, "scripts/image exited %d:\n%s\n%s" % (
        r.returncode, r.stdout[-3000:], r.stderr[-3000:]))
    m = re.search(r"^image (\S+): (\d+) bytes", r.stdout, re.M)
    it.check(m is not None, "scripts/image printed no size:\n%s" %
             r.stdout[-2000:])
    it.check(m.group(1) == tag, "scripts/image built %s, the DaemonSet "
             "runs %s" % (m.group(1), tag))
    size = int(m.group(2))
    got = int(eng.run("image", "inspect", "--format", "{{.Size}}",
                      tag).stdout)
    it.check(size == got, "printed size %d, podman says %d" % (size, got))
    it.check(size < SIZE_LIMIT, "image %s is %d bytes, over %d" % (
        tag, size, SIZE_LIMIT))
    cfg = json.loads(eng.run("image", "inspect", tag).stdout)[0]["Config"]
    it.check(cfg.get("User") == "65532:65532", "image user %r, want "
             "65532:65532 (non-root by default)" % cfg.get("User"))
    it.check(cfg.get("Entrypoint") == ["/usr/bin/lugger"],
             "entrypoint %r" % cfg.get("Entrypoint"))
    # Its root: the binary, and nothing that runs but it.
    mnt = eng.run("image", "mount", tag).stdout.strip()
    try:
        it.check(os.access(mnt + "/usr/bin/lugger", os.X_OK), "no "
                 "/usr/bin/lugger in the image")
        for p in ("bin/sh", "usr/bin/sh", "usr/bin/dash", "usr/bin/bash",
                  "usr/bin/apt-get", "usr/bin/dpkg", "usr/bin/busybox"):
            it.check(not os.path.lexists(os.path.join(mnt, p)),
                     "the image has /%s" % p)
        it.check(os.path.isfile(mnt + "/etc/ssl/certs/ca-certificates.crt"),
                 "no CA bundle in the image")
        status = sorted(os.listdir(mnt + "/var/lib/dpkg/status.d"))
        files = sum(len(fs) for _, _, fs in os.walk(mnt))
    finally:
        eng.run("image", "unmount", tag, check=False)
    # Each source change leaves the previous build's intermediate images
    # behind: keep a day of them (the layer cache), not every run's.
    eng.run("image", "prune", "-f", "--filter", "until=24h", check=False)
    r = eng.run("run", "--rm", "--read-only", "--cap-drop=ALL",
                "--network=none", tag, "--version")
    it.check(r.stdout.startswith("lugger "), "lugger --version in the "
             "image: %r" % r.stdout)
    it.log("image %s: %d bytes, %d files, %d packages, built in %.1f s" % (
        tag, size, files, len(status), took))
    return size, len(status), took


# --------------------------------------------------------------------------
# Pods


def pod_from_template(ds):
    """The Pod the DaemonSet controller makes of its template."""
    tmpl = ds["spec"]["template"]
    md = dict(tmpl["metadata"])
    md["name"] = "%s-%s" % (ds["metadata"]["name"], uuid.uuid4().hex[:5])
    md["namespace"] = ds["metadata"]["namespace"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md,
            "spec": json.loads(json.dumps(tmpl["spec"]))}


def as_kubelet(pod, identity, node_root, extra_env=None, sa_dir=None):
    """What the kubelet does with a Pod that podman does not: downward-API
    env values resolved from `identity` (podman 4.3 resolves few
    fieldPaths), the API's address in the env, the service account's
    volume, hostPaths on the fake node `node_root`."""
    spec = pod["spec"]
    for c in spec["containers"]:
        env = []
        for ev in c.get("env", []):
            if "valueFrom" in ev:
                fp = ev["valueFrom"]["fieldRef"]["fieldPath"]
                ev = {"name": ev["name"], "value": identity[fp]}
            env.append(ev)
        env += [{"name": k, "value": v} for k, v in (extra_env or {}).items()]
        c["env"] = env
        if sa_dir:
            c.setdefault("volumeMounts", []).append(
                {"name": "kube-api-access", "mountPath": td.SA_DIR,
                 "readOnly": True})
    if sa_dir:
        spec.setdefault("volumes", []).append(
            {"name": "kube-api-access",
             "hostPath": {"path": sa_dir, "type": "Directory"}})
    for v in spec.get("volumes", []):
        hp = v.get("hostPath")
        if hp and not hp["path"].startswith(node_root) and \
                v["name"] != "kube-api-access":
            hp["path"] = node_root + hp["path"]
            if hp.get("type") == "DirectoryOrCreate":
                os.makedirs(hp["path"], exist_ok=True)
    return pod


def read_container_log(path, offset=0):
    """The CRI lines conmon wrote for a container from `offset`: (stdout
    records as dicts, stderr log lines as dicts, end offset)."""
    recs, logs = [], []
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return recs, logs, offset
    end = data.rfind(b"\n") + 1
    partial = {}
    for raw in data[:end].split(b"\n")[:-1]:
        _, stream, tag, msg = raw.split(b" ", 3)
        partial[stream] = partial.get(stream, b"") + msg
        if tag.split(b":")[0] != b"F":
            continue
        line = partial.pop(stream).decode("utf-8")
        obj = it.parse_json_line(line.encode(), path)
        (recs if stream == b"stdout" else logs).append(obj)
    return recs, logs, offset + end


class PlayedPod:
    """One `podman kube play` of a Pod (+ ConfigMaps); the lugger
    container's output goes to `log` (every container of the pod logs there:
    the sidecar's app prints nothing)."""

    def __init__(self, eng, wd, pod, configmaps, tag):
        self.eng, self.pod = eng, pod
        self.name = pod["metadata"]["name"]
        self.yml = os.path.join(wd, "%s-%s.yaml" % (self.name, tag))
        with open(self.yml, "w") as f:
            yaml.safe_dump(pod, f)
        self.log = os.path.join(wd, "%s-%s.log" % (self.name, tag))
        args = ["kube", "play", "--build=false", "--log-opt",
                "path=" + self.log]
        for cm in configmaps:
            args += ["--configmap", cm]
        eng.pods.append(self.yml)
        eng.run(*(args + [self.yml]))
        self.ctr = "%s-lugger" % self.name
        self.offset = 0
        self.recs, self.logs = [], []

    def inspect(self):
        return json.loads(self.eng.run("inspect", self.ctr).stdout)[0]

    def ip(self):
        nets = self.inspect()["NetworkSettings"]["Networks"]
        return [n["IPAddress"] for n in nets.values() if n["IPAddress"]][0]

    def poll(self):
        try:
            if os.path.getsize(self.log) < self.offset:
                self.offset = 0  # conmon started the file again
        except FileNotFoundError:
            pass
        r, l, self.offset = read_container_log(self.log, self.offset)
        self.recs += r
        self.logs += l
        return self

    def stderr_tail(self):
        self.poll()
        return "\n".join(json.dumps(l) for l in self.logs[-30:])

    def stop(self, grace):
        """The kubelet's stop: SIGTERM, SIGKILL after the grace period.
        Returns (exit code, seconds)."""
        t0 = time.monotonic()
        self.eng.run("pod", "stop", "-t", str(grace), self.name,
                     timeout=grace + 60)
        took = time.monotonic() - t0
        st = self.inspect()["State"]
        self.poll()
        return st["ExitCode"], took

    def start(self):
        """The pod's containers started again (volumes kept): what the
        kubelet does when a container restarts."""
        self.eng.run("pod", "start", self.name)

    def down(self):
        self.eng.run("kube", "down", self.yml)
        self.eng.pods.remove(self.yml)


def http(ip, port, path):
    try:
        with urllib.request.urlopen("http://%s:%d%s" % (ip, port, path),
                                    timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def check_proc(pp, uid, caps):
    """The container's process: its uid, capabilities (all sets), no new
    privileges, read-only root."""
    pid = pp.inspect()["State"]["Pid"]
    with open("/proc/%d/status" % pid) as f:
        st = dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)
    it.check(st["Uid"].split()[:2] == [str(uid)] * 2, "uid %r, want %d" % (
        st["Uid"], uid))
    want = 0
    for c in caps:
        want |= 1 << td.CAP_NUMBERS[c]
    for k in ("CapEff", "CapPrm", "CapBnd"):
        it.check(int(st[k], 16) == want, "%s %s, want %x" % (k, st[k], want))
    it.check(st.get("NoNewPrivs", "0").strip() == "1", "no_new_privs unset")
    with open("/proc/%d/mountinfo" % pid) as f:
        root = [l.split() for l in f if l.split()[4] == "/"]
    it.check(root and "ro" in root[-1][5].split(","), "root not read-only")


def configmap_edit(eng, cm_name, key, text):
    """A ConfigMap edit in podman's ConfigMap volume: the key's new text
    renamed over the old one (atomically, as the kubelet's `..data` swap
    is)."""
    eng.volumes.add(cm_name)
    mp = eng.run("volume", "inspect", "--format", "{{.Mountpoint}}",
                 cm_name).stdout.strip()
    tmp = os.path.join(mp, ".%s.tmp" % key)
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.rename(tmp, os.path.join(mp, key))


def write_configmap(wd, cm_obj, key, text):
    """The edited ConfigMap as the API would hold it after `kubectl
    apply`: the next pod gets it."""
    obj = json.loads(json.dumps({k: v for k, v in cm_obj.items()
                                 if k != "_file"}))
    obj["data"][key] = text
    path = os.path.join(wd, "%s-edited.yaml" % obj["metadata"]["name"])
    with open(path, "w") as f:
        yaml.safe_dump(obj, f)
    return path


def wait_reload(pp, n0):
    it.wait_for(lambda: sum(
        l.get("component") == "reload" and "running" in str(l.get("msg"))
        for l in pp.poll().logs) > n0, 30, "the ConfigMap edit reloaded",
        detail=pp.stderr_tail)


def reloads(pp):
    return sum(l.get("component") == "reload" and
               "running" in str(l.get("msg")) for l in pp.poll().logs)


# --------------------------------------------------------------------------
# The DaemonSet


WRITER = ('i=0; while [ ! -f /stop ]; do i=$((i+1)); '
          'echo "GET /item/$i 200"; usleep 20000; done; echo "last $i"')


def daemonset(eng, wd, objs, ds, gateway):
    cm_obj = [o for (k, _), o in objs.items() if k == "ConfigMap" and
              o["_file"] == "configmap.yaml"][0]
    cfg, port, _, grace = td.check_config_against_spec(ds, cm_obj)
    cm_name = cm_obj["metadata"]["name"]
    eng.run("volume", "rm", "-f", cm_name, check=False)
    eng.volumes.add(cm_name)
    node = os.path.join(wd, "node")
    pods_dir = os.path.join(node, "var/log/pods")
    os.makedirs(pods_dir)

    # A real container of a pod on this node, printing numbered lines.
    web_uid = str(uuid.uuid4())
    logdir = os.path.join(pods_dir, "shop_web-7d9f8-x1_%s" % web_uid, "nginx")
    os.makedirs(logdir)
    web_log = os.path.join(logdir, "0.log")
    workers = rt.Podman()
    wroot = rt.make_rootfs(os.path.join(wd, "rootfs-web"))
    wproc = workers.start(wroot, web_log, WRITER, "web-nginx-%s" %
                          web_uid[:8])
    it.wait_for(lambda: os.path.exists(web_log) and
                os.path.getsize(web_log) > 0, 30, "the container's log")
    cid = workers_cid(workers, "web-nginx-%s" % web_uid[:8])

    api = FakeApiServer(token=TOKEN, tls=True, workdir=wd, host="0.0.0.0",
                        cert_ips=(gateway, "127.0.0.1"),
                        bookmark_interval=0.5)
    api.port = 443
    api.add_pod(make_pod(
        "shop", "web-7d9f8-x1", web_uid, NODE,
        labels={"app": "nginx", "pod-template-hash": "7d9f8"},
        annotations={"team": "storefront"}, owner=("ReplicaSet", "web-7d9f8"),
        ip="10.1.0.5", containers=(("nginx", "docker.io/library/nginx:1.25"),),
        statuses={"nginx": ("containerd://" + cid, 0, None)}))
    api.start()
    sa = os.path.join(wd, "sa")
    with open(api.ca_file) as f:
        td.configmap_volume(sa, {"token": TOKEN, "ca.crt": f.read(),
                                 "namespace": ds["metadata"]["namespace"]})

    pod = pod_from_template(ds)
    identity = {"spec.nodeName": NODE, "metadata.name": pod["metadata"]["name"],
                "metadata.namespace": pod["metadata"]["namespace"]}
    as_kubelet(pod, identity, node, sa_dir=sa, extra_env={
        "KUBERNETES_SERVICE_HOST": gateway, "KUBERNETES_SERVICE_PORT": "443"})
    c = pod["spec"]["containers"][0]
    cm_file = os.path.join(td.DEPLOY, "configmap.yaml")
    sample_keys = set(td.readme_sample())

    p1 = PlayedPod(eng, wd, pod, [cm_file], "1")
    try:
        ip = p1.ip()
        it.wait_for(lambda: http(ip, port, "/readyz")[0] == 200, 30,
                    "/readyz 200 at %s:%d" % (ip, port),
                    detail=p1.stderr_tail)
        code, body = http(ip, port, "/healthz")
        it.check(code == 200, "/healthz: %r %r" % (code, body))
        check_proc(p1, 0, c["securityContext"]["capabilities"]["add"])
        it.wait_for(lambda: len(p1.poll().recs) >= 20, 30,
                    "records of the container's lines", detail=p1.stderr_tail)
        code, metrics = http(ip, port, "/metrics")
        it.check(code == 200 and re.search(
            r"^lugger_records_delivered_total\S* [1-9]", metrics, re.M),
            "/metrics: %r %s" % (code, metrics[:500]))
        # The ConfigMap edited: a field from the new filter.lua.
        n0 = reloads(p1)
        configmap_edit(eng, cm_name, "filter.lua", cm_obj["data"][
            "filter.lua"] + 'local p = process\nfunction process(rec) '
            'rec.cluster = "prod" return p(rec) end\n')
        wait_reload(p1, n0)
        cm_edited = write_configmap(wd, cm_obj, "filter.lua", cm_obj["data"][
            "filter.lua"] + 'local p = process\nfunction process(rec) '
            'rec.cluster = "prod" return p(rec) end\n')
        it.wait_for(lambda: any(r.get("cluster") == "prod"
                                for r in p1.poll().recs), 20,
                    "a record of the edited filter", detail=p1.stderr_tail)
        rc, took = p1.stop(grace)
        it.check(rc == 0, "lugger exited %r on SIGTERM\n%s" % (
            rc, p1.stderr_tail()))
        it.check(any("SIGTERM" in str(l.get("msg")) for l in p1.logs),
                 "no SIGTERM drain in the log:\n%s" % p1.stderr_tail())
        state = node + "/var/lib/lugger"
        it.check(os.listdir(state), "no checkpoint in the node's %s" % state)
        p1.down()
        time.sleep(0.5)  # lines written while no collector runs
        p2 = PlayedPod(eng, wd, pod, [cm_edited], "2")
        it.wait_for(lambda: len(p2.poll().recs) >= 10, 30,
                    "the second pod's records", detail=p2.stderr_tail)
        open(os.path.join(wroot, "stop"), "w").close()
        workers.wait(wproc)
        ref = rt.read_cri_file(web_log)["stdout"]
        it.wait_for(lambda: any(r["body"] == ref[-1][1]
                                for r in p2.poll().recs), 30,
                    "the writer's last line %r" % ref[-1][1],
                    detail=p2.stderr_tail)
        rc2, _ = p2.stop(grace)
        it.check(rc2 == 0, "the second pod exited %r" % rc2)
        p2.down()
    finally:
        api.stop()
        workers.stop()

    # Exactly once from lugger's first record on (read_from = "tail": what
    # the container printed before lugger opened the file is skipped).
    recs = p1.recs + p2.recs
    bodies = [r["body"] for r in recs]
    ref_bodies = [b for _, b in ref]
    first = ref_bodies.index(bodies[0])
    it.check(bodies == ref_bodies[first:], "records vs the container's "
             "lines from %r on: %d records, %d lines, duplicates %d, first "
             "differences %s" % (bodies[0], len(bodies),
                                 len(ref_bodies) - first,
                                 len(bodies) - len(set(bodies)),
                                 [(a, b) for a, b in zip(
                                     bodies, ref_bodies[first:]) if a != b][:3]))
    # Key by key.
    times = {b: t for t, b in ref}
    want = {"log.iostream": "stdout",
            "log.file.path": web_log[len(node):],
            "k8s.namespace.name": "shop", "k8s.pod.name": "web-7d9f8-x1",
            "k8s.pod.uid": web_uid, "k8s.container.name": "nginx",
            "k8s.container.restart_count": 0, "container.id": cid,
            "k8s.node.name": NODE, "k8s.pod.ip": "10.1.0.5",
            "container.image.name": "docker.io/library/nginx",
            "container.image.tag": "1.25", "k8s.replicaset.name": "web-7d9f8",
            "k8s.deployment.name": "web", "k8s.pod.label.app": "nginx",
            "k8s.pod.label.pod-template-hash": "7d9f8",
            "k8s.pod.annotation.team": "storefront"}
    it.check(set(want) | {"time", "body"} == sample_keys, "the test's keys "
             "and the README's sample differ: %s" % sorted(
                 sample_keys ^ (set(want) | {"time", "body"})))
    n_prod = 0
    seen_prod = False
    for r in recs:
        if r["body"].startswith("last "):
            continue
        keys = sample_keys | ({"cluster"} if "cluster" in r else set())
        it.check(set(r) == keys, "record keys %s, want %s" % (
            sorted(r), sorted(keys)))
        for k, v in want.items():
            it.check(r[k] == v and type(r[k]) is type(v),
                     "%s = %r, want %r\n%s" % (k, r[k], v, json.dumps(r)))
        it.check(rt.parse_time_ns(r["time"]) == times[r["body"]],
                 "time %s is not the CRI line's" % r["time"])
        # Per file, in order: once the edited filter runs, every record
        # has its field (the second pod reads the edited ConfigMap volume).
        if "cluster" in r:
            seen_prod = True
            n_prod += 1
        it.check(not seen_prod or r.get("cluster") == "prod",
                 "a record without the edited filter's field after one "
                 "with it: %s" % json.dumps(r))
    it.log("daemonset: %d records (%d + %d), %d after the edit, SIGTERM "
           "exit 0 in %.2f s" % (len(recs), len(p1.recs), len(p2.recs),
                                 n_prod, took))
    return len(recs), took


def workers_cid(podman, name):
    r = subprocess.run(["podman", "inspect", "--format", "{{.Id}}", name],
                       env=podman.env, capture_output=True, text=True)
    it.check(r.returncode == 0, "podman inspect %s: %s" % (name, r.stderr))
    return r.stdout.strip()


# --------------------------------------------------------------------------
# The sidecar


def sidecar(eng, wd, objs):
    pod = [o for (k, _), o in objs.items() if k == "Pod" and
           o["_file"] == "sidecar.yaml"][0]
    pod = json.loads(json.dumps({k: v for k, v in pod.items()
                                 if k != "_file"}))
    pod["metadata"]["name"] = "web-%s" % uuid.uuid4().hex[:5]
    cms = [o for (k, _), o in objs.items() if k == "ConfigMap" and
           o["_file"] == "sidecar.yaml"]
    cm_file = os.path.join(wd, "sidecar-cm.yaml")
    with open(cm_file, "w") as f:
        yaml.safe_dump_all([{k: v for k, v in o.items() if k != "_file"}
                            for o in cms], f)
    cm_name = cms[0]["metadata"]["name"]
    vols = [v["name"] for v in pod["spec"]["volumes"]
            if "emptyDir" in v] + [cm_name]
    for v in vols:
        eng.run("volume", "rm", "-f", v, check=False)
        eng.volumes.add(v)
    emptydirs = [v for v in vols if v != cm_name]
    # The app's image: busybox-static, made here (no registry).
    app = [c for c in pod["spec"]["containers"] if c["name"] != "lugger"][0]
    lc = [c for c in pod["spec"]["containers"] if c["name"] == "lugger"][0]
    bb = rt.rootfs_tar(rt.make_rootfs(os.path.join(wd, "bb")),
                       os.path.join(wd, "bb.tar"))
    eng.run("import", "--change", "ENV PATH=/bin", bb,
            "localhost/lugger-it-busybox:1")
    app["image"] = "localhost/lugger-it-busybox:1"
    uid = str(uuid.uuid4())
    identity = {"metadata.name": pod["metadata"]["name"],
                "metadata.namespace": "default", "metadata.uid": uid,
                "spec.nodeName": NODE}
    as_kubelet(pod, identity, os.path.join(wd, "node2"))
    sc = lc["securityContext"]
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)

    logs_vol = [vm["name"] for vm in lc["volumeMounts"]
                if vm["mountPath"] == app["volumeMounts"][0]["mountPath"]][0]
    want = {"log.file.path": os.path.join(
                app["volumeMounts"][0]["mountPath"], "app.log"),
            "k8s.namespace.name": "default",
            "k8s.pod.name": pod["metadata"]["name"], "k8s.pod.uid": uid,
            "k8s.container.name": app["name"], "k8s.node.name": NODE}

    def app_lines():
        mp = eng.run("volume", "inspect", "--format", "{{.Mountpoint}}",
                     logs_vol).stdout.strip()
        with open(os.path.join(mp, "app.log")) as f:
            return f.read().splitlines()

    def check_drained(recs, lines, what):
        # The app and lugger stop together: a line or two the app writes
        # after lugger's last read are for the next start.
        bodies = [r["body"] for r in recs]
        it.check(bodies and bodies == lines[:len(bodies)] and
                 len(bodies) >= len(lines) - 2, "sidecar %s: %d "
                 "records vs %d lines of the app's file; first difference "
                 "%s" % (what, len(bodies), len(lines), [
                     (a, b) for a, b in zip(bodies, lines) if a != b][:2]))
        for r in recs:
            extra = set(r) - set(want) - {"time", "body", "edited"}
            it.check(not extra and all(r.get(k) == v for k, v in
                                       want.items()),
                     "sidecar record %s, want %s" % (json.dumps(r), want))

    p1 = PlayedPod(eng, wd, pod, [cm_file], "1")
    it.wait_for(lambda: len(p1.poll().recs) >= 2, 30,
                "the sidecar's first records", detail=p1.stderr_tail)
    check_proc(p1, sc["runAsUser"], sc["capabilities"].get("add", []))
    n0 = reloads(p1)
    cm_text = cms[0]["data"]["lugger.lua"]
    edited = cm_text.replace(
        'outputs = { "out" } } }',
        'scripts = { "tag.lua" }, outputs = { "out" } } }')
    it.check(edited != cm_text, "the sidecar's config changed shape")
    configmap_edit(eng, cm_name, "tag.lua",
                   'function process(rec) rec.edited = true end\n')
    configmap_edit(eng, cm_name, "lugger.lua", edited)
    wait_reload(p1, n0)
    it.wait_for(lambda: any(r.get("edited") for r in p1.poll().recs),
                20, "a record of the edited config", detail=p1.stderr_tail)
    rc, took = p1.stop(grace)
    it.check(rc == 0, "sidecar lugger exited %r\n%s" % (
        rc, p1.stderr_tail()))
    # A restart of the pod's containers (the volumes stay): lugger resumes
    # at its checkpoint in the state volume.
    p1.start()
    n1 = len(app_lines())
    it.wait_for(lambda: len(p1.poll().recs) > n1, 30,
                "records after the restart", detail=p1.stderr_tail)
    rc, _ = p1.stop(grace)
    it.check(rc == 0, "restarted sidecar exited %r" % rc)
    check_drained(p1.recs, app_lines(), "stop, start, stop")
    n_first = len(p1.recs)
    # `kube down` deletes the pod and its emptyDirs; a new pod starts over.
    p1.down()
    for v in emptydirs:  # gone with the pod, as in Kubernetes
        eng.run("volume", "rm", "-f", v, check=False)
    p2 = PlayedPod(eng, wd, pod, [cm_file], "2")
    it.wait_for(lambda: len(p2.poll().recs) >= 2, 30,
                "the second pod's records", detail=p2.stderr_tail)
    rc, _ = p2.stop(grace)
    it.check(rc == 0, "second sidecar exited %r" % rc)
    check_drained(p2.recs, app_lines(), "second pod")
    p2.down()
    return n_first + len(p2.recs)


def main():
    why = podman_usable()
    if why:
        it.skip("podman cannot run here: %s" % why)
    it.require_binary()
    eng = Engine()
    docs = td.load_manifests()
    objs, ds = td.check_shapes(docs)
    tag = ds["spec"]["template"]["spec"]["containers"][0]["image"]
    try:
        size, npkgs, took = build_image(eng, tag)
        # `kube play` makes its network at its first use; the pods need
        # its gateway before that (on a machine that never played a pod).
        net = "podman-default-kube-network"
        if eng.run("network", "exists", net, check=False).returncode != 0:
            eng.run("network", "create", net)
        gw = json.loads(eng.run("network", "inspect", net).stdout)[0]
        gateway = gw["subnets"][0]["gateway"]
        # The build needed the machine's network; the pods get their own.
        td.enter_netns()
        with rt.work_dir("image") as wd:
            n, stop_s = daemonset(eng, wd.path, objs, ds, gateway)
            ns = sidecar(eng, wd.path, objs)
    finally:
        eng.cleanup()
    return ("image %s %d bytes (%d packages, scripts/image %.0f s); "
            "DaemonSet pod: %d records exactly once across kube down/play, "
            "SIGTERM exit 0 in %.2f s; sidecar: %d records" % (
                tag, size, npkgs, took, n, stop_s, ns))


if __name__ == "__main__":
    rt.main("test_image", main)
