#!/usr/bin/env python3
"""deploy/: the manifests, run the way a node runs them.

No cluster or kubectl can be installed here, so this test does what the
kubelet and the container runtime would do with deploy/*.yaml, and checks
what it can without them:

1. Shapes (Kubernetes API reference): every YAML document of deploy/ has
   a known apiVersion/kind pair, the fields that kind requires and no
   field the API does not have (kubectl's strict validation); the
   DaemonSet's selector matches its template, every volumeMount names a
   declared volume, probes name a declared port, env values come from
   downward-API fields the kubelet fills; the ServiceAccount, ClusterRole
   and ClusterRoleBinding fit together and allow get/list/watch on pods;
   the ConfigMap's keys are what the container's `-c` argument and the
   config's scripts point at; the settings agree with the pod spec
   (settings.http port = containerPort of the probes, memory limit >=
   memory_budget + workers x script_memory + 128 MiB, shutdown_timeout
   well below terminationGracePeriodSeconds, state_dir on a hostPath).
2. The DaemonSet's container, run as the runtime would run it: in a
   private mount namespace, chrooted into a root filesystem that holds only
   the binary (at the Dockerfile's path) and the libraries, with the
   spec's volumes bind-mounted at their mountPaths (the ConfigMap laid out
   as the kubelet does, with its `..data` link; hostPaths from a fake
   node's root; the service account's token and CA at
   /var/run/secrets/kubernetes.io/serviceaccount), the root read-only and
   every capability dropped but the ones the securityContext adds. So no
   path is rewritten: lugger sees /etc/lugger/lugger.lua, /var/log/pods,
   /var/lib/lugger and the in-cluster defaults exactly as in a pod. The
   test runs in its own network namespace, where the stand-in API server
   (k8s_api_server.py: TLS, bearer token) listens on 127.0.0.1:443 as
   KUBERNETES_SERVICE_HOST/PORT say, and lugger's settings.http on
   its real port 2020. `lugger check` passes on the config; `lugger run`
   answers the probes, reads new CRI lines of a fake node's pods (one
   pod's files owned by another user, mode 0600: CAP_DAC_READ_SEARCH at
   work), and every record on stdout carries the keys and values of the
   README's sample record exactly; kube-system and lugger's own namespace
   are not read (lugger's own pod is one the API does not describe: the
   namespace filter must hold by the path alone); an edit of the ConfigMap
   (the kubelet's `..data` swap) is reloaded; lugger asked the API only
   what the ClusterRole allows; SIGTERM exits 0 within the grace period
   with checkpoints on the node, and a replacement pod (a rolling update)
   reads what was written in between and nothing twice.
3. sidecar.yaml's lugger container, the same way, with the downward-API
   environment: `lugger check`, then its records carry the pod's names.
4. deploy/Dockerfile against the build (test_image.py builds the image
   with scripts/image and runs it under podman): the build stage installs
   the Debian package of every pkg-config module CMakeLists.txt uses (and
   scripts/setup does too), the files it copies are enough for CMake to
   configure, every library the binary links has a Debian package (which
   deploy/mkroot puts in the run stage), and the binary goes where the
   ENTRYPOINT and this test's pods expect it.
"""

import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

import yaml

import lugger_it as it
from k8s_api_server import FakeApiServer, make_pod

DEPLOY = os.path.join(it.SOURCE_DIR, "deploy")
README = os.path.join(it.SOURCE_DIR, "README.md")
NODE = "node-a"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.test-token"  # a projected token's shape
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                       ctypes.c_ulong, ctypes.c_char_p]
CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38

# What containerd and Docker give a container that asks for nothing else.
DEFAULT_CAPS = {"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD",
                "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
                "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}
CAP_NUMBERS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2,
               "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
               "SETUID": 7, "SETPCAP": 8, "NET_BIND_SERVICE": 10,
               "NET_RAW": 13, "SYS_CHROOT": 18, "MKNOD": 27,
               "AUDIT_WRITE": 29, "SETFCAP": 31}


def oserr(what):
    e = ctypes.get_errno()
    return OSError(e, "%s: %s" % (what, os.strerror(e)))


# --------------------------------------------------------------------------
# Namespaces


def enter_netns():
    """A network namespace of our own (before any thread starts): the API
    server can listen on 443 and lugger on 2020 as in a cluster, without
    colliding with anything else on the machine. Brings `lo` up."""
    if libc.unshare(CLONE_NEWNET) != 0:
        raise oserr("unshare(CLONE_NEWNET) (the test needs root)")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ifr = struct.pack("16sH14x", b"lo", 0)
    flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifr))[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))
    s.close()


def mount(src, dst, fstype, flags, data=None):
    enc = lambda v: v.encode() if isinstance(v, str) else v
    if libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)) != 0:
        raise oserr("mount %s on %s" % (src, dst))


def bind(src, dst, ro):
    mount(src, dst, None, MS_BIND | MS_REC)
    if ro:
        mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


# --------------------------------------------------------------------------
# A container's root filesystem and volumes


def configmap_update(dirpath, data, stamp):
    """A ConfigMap edit as the kubelet applies it: the new keys in a new
    timestamped directory, `..data_tmp` linking to it renamed over
    `..data`, the old directory removed."""
    new = os.path.join(dirpath, stamp)
    os.mkdir(new)
    for k, v in data.items():
        with open(os.path.join(new, k), "w") as f:
            f.write(v)
    old = os.readlink(os.path.join(dirpath, "..data"))
    os.symlink(stamp, os.path.join(dirpath, "..data_tmp"))
    os.rename(os.path.join(dirpath, "..data_tmp"),
              os.path.join(dirpath, "..data"))
    shutil.rmtree(os.path.join(dirpath, old))


def configmap_volume(dirpath, data):
    """A ConfigMap volume as the kubelet writes it: the keys in a
    timestamped directory, `..data` linking to it, each key a link through
    `..data` (which is what hot reload watches)."""
    os.makedirs(dirpath)
    ts = "..2024_05_01_12_00_00.000000001"
    os.mkdir(os.path.join(dirpath, ts))
    for k, v in data.items():
        with open(os.path.join(dirpath, ts, k), "w") as f:
            f.write(v)
        os.chmod(os.path.join(dirpath, ts, k), 0o644)
        os.symlink(os.path.join("..data", k), os.path.join(dirpath, k))
    os.symlink(ts, os.path.join(dirpath, "..data"))


class Pod:
    """One container of a pod spec, laid out under `base`: its root
    filesystem (`root`, holding only the binary and, bind-mounted, the
    host's libraries) and its volumes; `node` is the fake node's root,
    where hostPath volumes point."""

    def __init__(self, base, spec, container, configmaps, node, image):
        self.base, self.spec, self.node = base, spec, node
        self.c = container
        self.root = os.path.join(base, "rootfs")
        self.mounts = []           # (host path, container path, read-only)
        self.image = image         # {"entrypoint": [...], "binary": path}
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        for vm in container.get("volumeMounts", []):
            v = vols[vm["name"]]
            if "configMap" in v:
                src = os.path.join(base, "vol", v["name"])
                configmap_volume(src, configmaps[v["configMap"]["name"]])
            elif "hostPath" in v:
                src = node + v["hostPath"]["path"]
                t = v["hostPath"].get("type", "")
                if t == "DirectoryOrCreate":
                    os.makedirs(src, exist_ok=True)
                it.check(os.path.isdir(src), "hostPath %s (type %r) is not "
                         "a directory on the node" % (v["hostPath"]["path"], t))
            elif "emptyDir" in v:
                # The kubelet makes emptyDirs mode 0777: a non-root
                # container writes there.
                src = os.path.join(base, "vol", v["name"])
                os.makedirs(src, exist_ok=True)
                os.chmod(src, 0o777)
            else:
                it.fail("volume %r: a source this test does not know" % v)
            self.mounts.append((src, vm["mountPath"], vm.get("readOnly", False)))
        # The kubelet mounts the service account's token in every pod that
        # does not opt out (a placeholder until service_account()).
        self.sa_dir = None
        if spec.get("automountServiceAccountToken", True):
            self.sa_dir = os.path.join(base, "vol", "kube-api-access")
            self.mounts.append((self.sa_dir, SA_DIR, True))
            self.service_account("placeholder", "", "default")
        self._make_root()

    def service_account(self, token, ca_pem, namespace):
        """The projected service account volume: token, ca.crt, namespace
        (the token 0600, as the kubelet writes it)."""
        shutil.rmtree(self.sa_dir, ignore_errors=True)
        configmap_volume(self.sa_dir, {"token": token, "ca.crt": ca_pem,
                                       "namespace": namespace})
        ts = os.readlink(os.path.join(self.sa_dir, "..data"))
        os.chmod(os.path.join(self.sa_dir, ts, "token"), 0o600)

    def _make_root(self):
        r = self.root
        for d in ("usr/bin", "usr/lib", "usr/lib64", "etc", "proc", "dev",
                  "tmp"):
            os.makedirs(os.path.join(r, d))
        os.chmod(os.path.join(r, "tmp"), 0o1777)
        for name in ("lib", "lib64"):
            os.symlink("usr/" + name, os.path.join(r, name))
        os.symlink("usr/bin", os.path.join(r, "bin"))
        for f in ("ld.so.cache", "passwd", "group", "nsswitch.conf", "hosts"):
            if os.path.exists("/etc/" + f):
                with open("/etc/" + f, "rb") as a, \
                        open(os.path.join(r, "etc", f), "wb") as b:
                    b.write(a.read())
        for dev in ("null", "zero", "random", "urandom"):
            open(os.path.join(r, "dev", dev), "w").close()
        binpath = r + self.image["binary"]
        os.makedirs(os.path.dirname(binpath), exist_ok=True)
        open(binpath, "w").close()
        for _, dst, _ in self.mounts:
            os.makedirs(r + dst, exist_ok=True)

    def env(self, identity, extra=None):
        """The container's environment: what the image and the kubelet set,
        the spec's env with downward-API fields resolved from `identity`,
        and the sanitizer options of the test build."""
        e = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                     "/sbin:/bin",
             "HOSTNAME": identity["metadata.name"]}
        e.update(extra or {})
        for ev in self.c.get("env", []):
            if "value" in ev:
                e[ev["name"]] = ev["value"]
            else:
                fp = ev["valueFrom"]["fieldRef"]["fieldPath"]
                it.check(fp in identity, "env %s: fieldRef %s is not one "
                         "the kubelet fills" % (ev["name"], fp))
                e[ev["name"]] = identity[fp]
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
            e[k] = it.asan_env()[k]
        # llvm-symbolizer is not in the container; reports stay readable
        # enough with module offsets.
        e["ASAN_OPTIONS"] += ":symbolize=0"
        return e

    def preexec(self):
        """Runs in the child between fork and exec: a private mount
        namespace, the root and volumes, chroot, the securityContext."""
        r, mounts, binary = self.root, self.mounts, self.image["binary"]
        sc = self.c.get("securityContext", {})
        caps = sc.get("capabilities", {})
        keep = set() if "ALL" in caps.get("drop", []) else \
            DEFAULT_CAPS - set(caps.get("drop", []))
        keep |= set(caps.get("add", []))
        keep = {CAP_NUMBERS[c] for c in keep}
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
        uid = sc.get("runAsUser", 0)
        ro_root = sc.get("readOnlyRootFilesystem", False)
        nnp = sc.get("allowPrivilegeEscalation", True) is False
        lugger = it.LUGGER

        def fn():
            if libc.unshare(CLONE_NEWNS) != 0:
                raise oserr("unshare(CLONE_NEWNS)")
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            bind(r, r, False)
            bind("/usr/lib", r + "/usr/lib", True)
            bind("/usr/lib64", r + "/usr/lib64", True)
            for dev in ("null", "zero", "random", "urandom"):
                bind("/dev/" + dev, r + "/dev/" + dev, False)
            bind(lugger, r + binary, True)
            mount("proc", r + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            for src, dst, ro in mounts:
                bind(src, r + dst, ro)
            if ro_root:
                mount(None, r, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
            os.chroot(r)
            os.chdir("/")
            for c in range(last + 1):
                if c not in keep and libc.prctl(PR_CAPBSET_DROP, c, 0, 0, 0):
                    raise oserr("PR_CAPBSET_DROP %d" % c)
            if nnp and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise oserr("PR_SET_NO_NEW_PRIVS")
            if uid != 0:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        return fn


class PodLugger(it.Lugger):
    """lugger started as the pod's container: the image's ENTRYPOINT with
    the container's args (or `args`), in the pod's filesystem."""

    def __init__(self, pod, env, args=None, stdout=None, stderr_path=None):
        self.config = os.path.join(pod.base, "lugger")
        self.stderr_path = stderr_path or os.path.join(
            pod.base, "stderr.%d" % it._next_run())
        self._err = open(self.stderr_path, "wb")
        cmd = pod.image["entrypoint"] + list(
            args if args is not None else pod.c["args"])
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdout=stdout or subprocess.DEVNULL, stderr=self._err,
            stdin=subprocess.DEVNULL, env=env, preexec_fn=pod.preexec(),
            close_fds=True)
        self.pid = self.proc.pid
        self.returncode = None
        with it._live_lock:
            it._live.add(self)
        it.log("started %s in the pod (pid %d)" % (" ".join(cmd), self.pid))


def check_confined(proc, sc):
    """The running lugger has exactly the securityContext's capabilities,
    no_new_privs, and a read-only root (the harness did its job)."""
    want = 0
    for c in sc.get("capabilities", {}).get("add", []):
        want |= 1 << CAP_NUMBERS[c]
    with open("/proc/%d/status" % proc.pid) as f:
        st = dict(line.rstrip("\n").split(":\t", 1) for line in f
                  if ":\t" in line)
    for k in ("CapEff", "CapPrm", "CapBnd"):
        it.check(int(st[k], 16) == want, "lugger's %s %s, the "
                 "securityContext gives %x" % (k, st[k], want))
    it.check(st.get("NoNewPrivs", "0").strip() == "1", "no_new_privs unset")
    with open("/proc/%d/mountinfo" % proc.pid) as f:
        root = [line.split() for line in f if line.split()[4] == "/"]
    it.check(root and "ro" in root[-1][5].split(","),
             "lugger's root is not read-only: %r" % root)


def run_check(pod, env, config_path):
    """`lugger check -c <config>` in the pod: exit 0 and no error."""
    err = os.path.join(pod.base, "check.stderr")
    p = PodLugger(pod, env, args=["check", "-c", config_path],
                  stdout=subprocess.PIPE, stderr_path=err)
    out = p.proc.stdout.read().decode("utf-8", "replace")
    rc = p.wait(60)
    p.check_sanitizers()
    it.check(rc == 0, "lugger check -c %s in the pod exited %r\nstdout: %s\n"
             "%s" % (config_path, rc, out, p.stderr_tail()))


# --------------------------------------------------------------------------
# Manifests


def load_manifests():
    docs = {}
    for name in sorted(os.listdir(DEPLOY)):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(DEPLOY, name)) as f:
                docs[name] = [d for d in yaml.safe_load_all(f) if d]
    it.check("daemonset.yaml" in docs and "configmap.yaml" in docs and
             "sidecar.yaml" in docs, "deploy/ lacks a manifest: %s" %
             sorted(docs))
    return docs


KINDS = {("v1", "ServiceAccount"), ("v1", "ConfigMap"), ("v1", "Pod"),
         ("v1", "ResourceQuota"), ("apps/v1", "DaemonSet"),
         ("rbac.authorization.k8s.io/v1", "ClusterRole"),
         ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
DOWNWARD_FIELDS = {"metadata.name", "metadata.namespace", "metadata.uid",
                   "spec.nodeName", "spec.serviceAccountName",
                   "status.hostIP", "status.podIP"}


def parse_quantity(q):
    """A Kubernetes memory quantity ("512Mi", "1G", 1024) in bytes."""
    m = re.match(r"^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$", str(q))
    it.check(m is not None, "memory quantity %r not understood" % q)
    mul = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30,
           "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    return int(m.group(1)) * mul[m.group(2)]


def parse_bytes(s):
    """lugger's byte sizes ("256MiB")."""
    m = re.match(r"^(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$", s)
    it.check(m is not None, "byte size %r not understood" % s)
    mul = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
           "KB": 10**3, "MB": 10**6, "GB": 10**9}
    return int(m.group(1)) * mul[m.group(2)]


def parse_seconds(s):
    m = re.match(r"^(\d+(?:\.\d+)?)(ms|s|m)$", s)
    it.check(m is not None, "duration %r not understood" % s)
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def lua_setting(text, key):
    """The string or number a config's `key = ...` sets, or None. The
    configs of deploy/ are plain tables, so a pattern reads them."""
    m = re.search(r"\b%s\s*=\s*(\"([^\"]*)\"|(\d+))" % re.escape(key), text)
    if m is None:
        return None
    return m.group(2) if m.group(2) is not None else int(m.group(3))


def check_container(where, c, spec):
    it.check(DNS_LABEL.match(c.get("name", "")) is not None,
             "%s: container name %r" % (where, c.get("name")))
    it.check(c.get("image"), "%s: container %s has no image" % (where,
                                                              c["name"]))
    vols = [v["name"] for v in spec.get("volumes", [])]
    it.check(len(vols) == len(set(vols)), "%s: duplicate volume names %s" %
             (where, vols))
    for v in spec.get("volumes", []):
        srcs = [k for k in v if k != "name"]
        it.check(len(srcs) == 1, "%s: volume %s has %d sources %s" % (
            where, v["name"], len(srcs), srcs))
    paths = []
    for vm in c.get("volumeMounts", []):
        it.check(vm.get("name") in vols, "%s: container %s mounts volume %r, "
                 "which the pod does not declare (%s)" % (where, c["name"],
                                                          vm.get("name"), vols))
        it.check(vm.get("mountPath", "").startswith("/"), "%s: mountPath %r"
                 % (where, vm.get("mountPath")))
        paths.append(vm["mountPath"])
    it.check(len(paths) == len(set(paths)), "%s: duplicate mountPaths %s" %
             (where, paths))
    ports = {}
    for p in c.get("ports", []):
        it.check(isinstance(p.get("containerPort"), int) and
                 0 < p["containerPort"] < 65536, "%s: containerPort %r" %
                 (where, p))
        if "name" in p:
            it.check(len(p["name"]) <= 15 and DNS_LABEL.match(p["name"]),
                     "%s: port name %r" % (where, p["name"]))
            ports[p["name"]] = p["containerPort"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in c:
            port = c[probe]["httpGet"]["port"]
            it.check(port in ports or port in ports.values(),
                     "%s: %s port %r is not a declared port %s" % (
                         where, probe, port, ports))
    for ev in c.get("env", []):
        it.check(("value" in ev) != ("valueFrom" in ev), "%s: env %r" %
                 (where, ev))
        if "valueFrom" in ev:
            fp = ev["valueFrom"]["fieldRef"]["fieldPath"]
            it.check(fp in DOWNWARD_FIELDS, "%s: env %s from %r, not a "
                     "downward-API field" % (where, ev["name"], fp))
    return ports


# Field names from the Kubernetes API reference (v1.30) for the objects
# deploy/ uses: kubectl apply validates strictly and rejects a misspelt
# field, so this test does too. A dict maps field -> its type's fields;
# ANY is a map of free keys (labels, data, quantities) or a scalar; a list
# of one dict is a list of such objects. Fields deploy/ does not use are
# listed where a user may well add them.
ANY = None
META = {k: ANY for k in ("name", "namespace", "labels", "annotations",
                         "generateName", "ownerReferences", "finalizers")}
LABEL_SELECTOR = {"matchLabels": ANY, "matchExpressions": ANY}
CAPS = {"add": ANY, "drop": ANY}
SECURITY_CONTEXT = dict({k: ANY for k in (
    "runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem",
    "allowPrivilegeEscalation", "privileged", "seLinuxOptions",
    "seccompProfile", "appArmorProfile", "procMount")},
    capabilities=CAPS)
PROBE = dict({k: ANY for k in (
    "exec", "tcpSocket", "grpc", "initialDelaySeconds", "periodSeconds",
    "timeoutSeconds", "successThreshold", "failureThreshold",
    "terminationGracePeriodSeconds")},
    httpGet={k: ANY for k in ("path", "port", "host", "scheme",
                              "httpHeaders")})
ENV = [{"name": ANY, "value": ANY, "valueFrom": {
    "fieldRef": {"fieldPath": ANY, "apiVersion": ANY},
    "resourceFieldRef": ANY, "configMapKeyRef": ANY, "secretKeyRef": ANY}}]
CONTAINER = dict({k: ANY for k in (
    "name", "image", "imagePullPolicy", "command", "args", "workingDir",
    "envFrom", "lifecycle", "terminationMessagePath",
    "terminationMessagePolicy", "stdin", "stdinOnce", "tty",
    "restartPolicy", "resizePolicy", "volumeDevices")},
    env=ENV,
    ports=[{k: ANY for k in ("name", "containerPort", "protocol",
                             "hostPort", "hostIP")}],
    resources={"requests": ANY, "limits": ANY, "claims": ANY},
    volumeMounts=[{k: ANY for k in ("name", "mountPath", "readOnly",
                                    "subPath", "subPathExpr",
                                    "mountPropagation",
                                    "recursiveReadOnly")}],
    livenessProbe=PROBE, readinessProbe=PROBE, startupProbe=PROBE,
    securityContext=SECURITY_CONTEXT)
VOLUME = [{"name": ANY,
           "configMap": {k: ANY for k in ("name", "items", "defaultMode",
                                          "optional")},
           "hostPath": {"path": ANY, "type": ANY},
           "emptyDir": {"medium": ANY, "sizeLimit": ANY},
           "secret": ANY, "projected": ANY, "persistentVolumeClaim": ANY,
           "downwardAPI": ANY}]
POD_SPEC = dict({k: ANY for k in (
    "serviceAccountName", "automountServiceAccountToken", "nodeName",
    "nodeSelector", "affinity", "priorityClassName", "priority",
    "terminationGracePeriodSeconds", "activeDeadlineSeconds",
    "restartPolicy", "dnsPolicy", "dnsConfig", "hostNetwork", "hostPID",
    "hostIPC", "securityContext", "imagePullSecrets", "hostname",
    "subdomain", "schedulerName", "shareProcessNamespace",
    "enableServiceLinks", "preemptionPolicy", "runtimeClassName",
    "topologySpreadConstraints", "hostAliases", "readinessGates",
    "overhead", "os", "hostUsers", "schedulingGates")},
    containers=[CONTAINER], initContainers=[CONTAINER], volumes=VOLUME,
    tolerations=[{k: ANY for k in ("key", "operator", "value", "effect",
                                   "tolerationSeconds")}])
TOP = {"apiVersion": ANY, "kind": ANY, "metadata": META}
SCHEMAS = {
    "ServiceAccount": dict(TOP, secrets=ANY, imagePullSecrets=ANY,
                           automountServiceAccountToken=ANY),
    "ConfigMap": dict(TOP, data=ANY, binaryData=ANY, immutable=ANY),
    "Pod": dict(TOP, spec=POD_SPEC),
    "ResourceQuota": dict(TOP, spec={
        "hard": ANY, "scopes": ANY, "scopeSelector": {"matchExpressions": [
            {"operator": ANY, "scopeName": ANY, "values": ANY}]}}),
    "ClusterRole": dict(TOP, aggregationRule=ANY, rules=[{
        k: ANY for k in ("apiGroups", "resources", "verbs", "resourceNames",
                         "nonResourceURLs")}]),
    "ClusterRoleBinding": dict(
        TOP, roleRef={"apiGroup": ANY, "kind": ANY, "name": ANY},
        subjects=[{k: ANY for k in ("kind", "name", "namespace",
                                    "apiGroup")}]),
    "DaemonSet": dict(TOP, spec={
        "selector": LABEL_SELECTOR, "minReadySeconds": ANY,
        "revisionHistoryLimit": ANY,
        "updateStrategy": {"type": ANY, "rollingUpdate": {
            "maxUnavailable": ANY, "maxSurge": ANY}},
        "template": {"metadata": META, "spec": POD_SPEC}}),
}


def check_fields(where, obj, schema):
    """Every key of `obj` is a field of `schema` (see SCHEMAS)."""
    if schema is ANY:
        return
    if isinstance(schema, list):
        it.check(isinstance(obj, list), "%s: expected a list, got %r" % (
            where, obj))
        for i, o in enumerate(obj):
            check_fields("%s[%d]" % (where, i), o, schema[0])
        return
    it.check(isinstance(obj, dict), "%s: expected an object, got %r" % (
        where, obj))
    for k, v in obj.items():
        it.check(k in schema, "%s.%s: not a field of the API (strict "
                 "validation rejects it)" % (where, k))
        check_fields("%s.%s" % (where, k), v, schema[k])


def check_shapes(docs):
    """Kinds, required fields, cross references. Returns the objects by
    kind and name."""
    objs = {}
    for fname, ds in docs.items():
        for d in ds:
            key = (d.get("apiVersion"), d.get("kind"))
            it.check(key in KINDS, "%s: unknown apiVersion/kind %s" % (
                fname, key))
            md = d.get("metadata", {})
            it.check(DNS_SUBDOMAIN.match(md.get("name", "")) is not None,
                     "%s: %s metadata.name %r" % (fname, key[1],
                                                   md.get("name")))
            if key[1] in CLUSTER_SCOPED:
                it.check("namespace" not in md, "%s: %s is cluster-scoped "
                         "but has a namespace" % (fname, md["name"]))
            check_fields("%s: %s %s" % (fname, key[1], md["name"]), d,
                         SCHEMAS[key[1]])
            objs[(key[1], md["name"])] = d
            d["_file"] = fname
    ds = [o for (k, _), o in objs.items() if k == "DaemonSet"]
    it.check(len(ds) == 1, "want one DaemonSet, found %d" % len(ds))
    ds = ds[0]
    ns = ds["metadata"]["namespace"]
    sel = ds["spec"]["selector"]["matchLabels"]
    tl = ds["spec"]["template"]["metadata"]["labels"]
    it.check(sel and all(tl.get(k) == v for k, v in sel.items()),
             "DaemonSet selector %s does not match its template's labels %s"
             % (sel, tl))
    spec = ds["spec"]["template"]["spec"]
    it.check(len(spec["containers"]) == 1, "DaemonSet: one container")
    check_container("daemonset.yaml", spec["containers"][0], spec)
    # RBAC: the pod's service account may get, list and watch pods.
    sa = spec.get("serviceAccountName")
    it.check(("ServiceAccount", sa) in objs and
             objs[("ServiceAccount", sa)]["metadata"].get("namespace") == ns,
             "DaemonSet's serviceAccountName %r: no such ServiceAccount in "
             "namespace %s" % (sa, ns))
    allowed = set()
    for (kind, name), b in objs.items():
        if kind != "ClusterRoleBinding":
            continue
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa
                   and s.get("namespace") == ns for s in b["subjects"]):
            continue
        rr = b["roleRef"]
        it.check(rr.get("apiGroup") == "rbac.authorization.k8s.io" and
                 rr.get("kind") == "ClusterRole" and
                 ("ClusterRole", rr.get("name")) in objs,
                 "ClusterRoleBinding %s: roleRef %r names no ClusterRole "
                 "here" % (name, rr))
        for rule in objs[("ClusterRole", rr["name"])]["rules"]:
            if "" in rule["apiGroups"] and "pods" in rule["resources"]:
                allowed |= set(rule["verbs"])
    it.check({"get", "list", "watch"} <= allowed, "the service account %s/%s "
             "may only %s pods" % (ns, sa, sorted(allowed)))
    # A ResourceQuota that admits the priority class where clusters ask.
    pc = spec.get("priorityClassName")
    it.check(pc, "DaemonSet: no priorityClassName (evicted first under node "
             "pressure)")
    for (kind, name), q in objs.items():
        if kind == "ResourceQuota":
            exprs = q["spec"]["scopeSelector"]["matchExpressions"]
            it.check(q["metadata"].get("namespace") == ns and any(
                e["scopeName"] == "PriorityClass" and pc in e["values"]
                for e in exprs), "ResourceQuota %s does not admit %s in %s"
                % (name, pc, ns))
    # Every node, the tainted ones included.
    it.check(any(t.get("operator") == "Exists" and "key" not in t and
                 "effect" not in t for t in spec.get("tolerations", [])),
             "DaemonSet: no toleration of every taint: %r" %
             spec.get("tolerations"))
    us = ds["spec"].get("updateStrategy", {})
    it.check(us.get("type", "RollingUpdate") == "RollingUpdate",
             "updateStrategy %r" % us)
    return objs, ds


def check_memory(where, text, c, allowance_mib):
    """The container's memory limit holds the budget, the Lua states and an
    allowance for the rest (binary, output buffers, metadata)."""
    workers = lua_setting(text, "workers")
    it.check(isinstance(workers, int), "%s: settings.workers unset: lugger "
             "would start one Lua state per CPU the pod may use, every CPU "
             "of the node without a CPU limit" % where)
    # Unset: the default, 8 MiB per worker and at least 32 MiB.
    budget = parse_bytes(lua_setting(text, "memory_budget") or
                         "%dMiB" % max(32, 8 * workers))
    smem = parse_bytes(lua_setting(text, "script_memory") or "64MiB")
    limit = parse_quantity(c["resources"]["limits"]["memory"])
    need = budget + workers * smem + allowance_mib * it.MiB
    it.check(limit >= need, "%s: memory limit %d MiB < memory_budget %d MiB "
             "+ %d x script_memory %d MiB + %d MiB" % (
                 where, limit >> 20, budget >> 20, workers, smem >> 20,
                 allowance_mib))
    req = parse_quantity(c["resources"]["requests"]["memory"])
    it.check(req <= limit, "%s: memory request above the limit" % where)


def check_backend_configmaps(ds):
    """deploy/<backend>/configmap.yaml replaces configmap.yaml under the
    same DaemonSet: each is the ConfigMap it mounts, and fits its memory
    limit as configmap.yaml does. Returns {backend: memory_budget or
    None (the default)}."""
    c = ds["spec"]["template"]["spec"]["containers"][0]
    mounted = [v["configMap"]["name"] for v in
               ds["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    budgets = {}
    for name in sorted(os.listdir(DEPLOY)):
        path = os.path.join(DEPLOY, name, "configmap.yaml")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            cm = yaml.safe_load(f)
        where = "deploy/%s/configmap.yaml" % name
        it.check(cm["kind"] == "ConfigMap" and
                 cm["metadata"]["name"] in mounted and
                 cm["metadata"].get("namespace") == ds["metadata"][
                     "namespace"],
                 "%s is not the ConfigMap the DaemonSet mounts (%s)" % (
                     where, mounted))
        text = cm["data"]["lugger.lua"]
        check_memory(where, text, c, 128)
        budgets[name] = lua_setting(text, "memory_budget")
    it.check(len(budgets) >= 4, "backend ConfigMaps found: %s" % budgets)
    return budgets


def check_config_against_spec(ds, cm):
    """The ConfigMap's lugger.lua agrees with the pod spec around it."""
    spec = ds["spec"]["template"]["spec"]
    c = spec["containers"][0]
    vols = {v["name"]: v for v in spec["volumes"]}
    cm_vols = [v for v in spec["volumes"] if "configMap" in v]
    it.check(len(cm_vols) == 1 and
             cm_vols[0]["configMap"]["name"] == cm["metadata"]["name"] and
             cm["metadata"].get("namespace") == ds["metadata"]["namespace"],
             "the DaemonSet mounts ConfigMap %r, configmap.yaml is %s/%s" % (
                 [v["configMap"]["name"] for v in cm_vols],
                 cm["metadata"].get("namespace"), cm["metadata"]["name"]))
    mp = [vm["mountPath"] for vm in c["volumeMounts"]
          if vm["name"] == cm_vols[0]["name"]][0]
    args = c["args"]
    it.check(args[:1] == ["run"] and "-c" in args, "container args %r" % args)
    cfg = args[args.index("-c") + 1]
    it.check(os.path.dirname(cfg) == mp and
             os.path.basename(cfg) in cm["data"],
             "-c %s is not a key of the ConfigMap mounted at %s (keys %s)" % (
                 cfg, mp, sorted(cm["data"])))
    text = cm["data"][os.path.basename(cfg)]
    for script in re.findall(r"scripts\s*=\s*\{([^}]*)\}", text):
        for s in re.findall(r"\"([^\"]+)\"", script):
            it.check(s in cm["data"], "the config's script %s is not a key "
                     "of the ConfigMap (%s)" % (s, sorted(cm["data"])))
    # settings.http is what the probes and containerPort use.
    http = lua_setting(text, "http")
    it.check(http is not None, "settings.http unset: the probes get no answer")
    port = int(http.rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, path in (("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):
        g = c[probe]["httpGet"]
        it.check(g["path"] == path and ports.get(g["port"], g["port"]) == port,
                 "%s %r: want %s on port %d (settings.http)" % (
                     probe, g, path, port))
    check_memory("daemonset.yaml", text, c, 128)
    # SIGTERM: the drain ends well before the kubelet's SIGKILL.
    st = parse_seconds(lua_setting(text, "shutdown_timeout") or "10s")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    it.check(grace >= st + 5, "terminationGracePeriodSeconds %d leaves no "
             "margin over shutdown_timeout %.0f s" % (grace, st))
    # Checkpoints outlive the pod: state_dir is a hostPath.
    sd = lua_setting(text, "state_dir") or "/var/lib/lugger"
    on_host = [vm for vm in c["volumeMounts"]
               if vm["mountPath"] == sd and "hostPath" in vols[vm["name"]]
               and not vm.get("readOnly")]
    it.check(on_host, "state_dir %s is not a writable hostPath mount" % sd)
    sc = c.get("securityContext", {})
    it.check(sc.get("readOnlyRootFilesystem") is True and
             "ALL" in sc.get("capabilities", {}).get("drop", []),
             "securityContext %r: want a read-only root and capabilities "
             "dropped (the run below shows what lugger needs)" % sc)
    return cfg, port, st, grace


# --------------------------------------------------------------------------
# The image


def dockerfile():
    """Stages of deploy/Dockerfile: [{"from", "apt", "copy", "run",
    "entrypoint", "cmd"}]."""
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "ARG" and not stages:
            continue  # the base image's name, before the first stage
        if instr == "FROM":
            stages.append({"from": rest, "apt": set(), "copy": [],
                           "run": [], "entrypoint": None, "cmd": None})
        elif instr == "RUN":
            stages[-1]["run"].append(rest)
            for m in re.finditer(r"apt-get install ((?:[-\w.+]+\s*)+)",
                                 rest + " "):
                stages[-1]["apt"] |= {w for w in m.group(1).split()
                                      if not w.startswith("-")}
        elif instr == "COPY":
            stages[-1]["copy"].append(rest.split())
        elif instr in ("ENTRYPOINT", "CMD"):
            stages[-1][instr.lower()] = json.loads(rest)
    return stages


def dpkg_owner(path):
    r = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return r.stdout.split(":", 1)[0].strip()


def check_dockerfile(wd):
    stages = dockerfile()
    it.check(len(stages) == 2, "want a build and a run stage")
    build, run = stages
    # Build stage: every pkg-config module CMake asks for.
    with open(os.path.join(it.SOURCE_DIR, "CMakeLists.txt")) as f:
        cm = f.read()
    mods = re.findall(r"pkg_check_modules\(\w+ REQUIRED IMPORTED_TARGET "
                      r"(\S+)\)", cm)
    m = re.search(r"foreach\(opt_pkg ([^)]*)\)", cm)
    mods += m.group(1).split() if m else []
    it.check("luajit" in mods and "libuv" in mods, "CMakeLists.txt parsed "
             "wrong: %s" % mods)
    with open(os.path.join(it.SOURCE_DIR, "scripts", "setup")) as f:
        setup = f.read()
    block = re.search(r"^PKGS=\((.*?)^\)", setup, re.S | re.M).group(1)
    setup_pkgs = set(re.findall(r"[-\w.+]+", re.sub(r"#.*", "", block)))
    for mod in mods:
        pc = subprocess.run(["pkg-config", "--variable=pcfiledir", mod],
                            capture_output=True, text=True).stdout.strip()
        pkg = dpkg_owner(os.path.join(pc, mod + ".pc"))
        it.check(pkg is not None, "pkg-config module %s: no Debian package "
                 "owns its .pc here" % mod)
        it.check(pkg in build["apt"], "Dockerfile build stage does not "
                 "install %s (pkg-config %s, CMakeLists.txt)" % (pkg, mod))
        it.check(pkg in setup_pkgs, "scripts/setup does not install %s" % pkg)
    for tool in ("build-essential", "cmake", "pkg-config"):
        it.check(tool in build["apt"], "build stage lacks %s" % tool)
    # The files the build stage copies are enough for CMake to configure.
    src = os.path.join(wd, "image-src")
    os.makedirs(src)
    for c in build["copy"]:
        it.check(not c[0].startswith("--"), "build COPY %r" % c)
        *froms, dest = c
        for fr in froms:
            host = os.path.join(it.SOURCE_DIR, fr.rstrip("/"))
            to = src + dest.replace("/src", "", 1)
            if os.path.isdir(host):
                subprocess.run(["cp", "-a", host, to.rstrip("/")], check=True)
            else:
                os.makedirs(to if dest.endswith("/") else
                            os.path.dirname(to), exist_ok=True)
                subprocess.run(["cp", "-a", host, to], check=True)
    # BuildKit's Dockerfile-specific ignore file lets exactly those in.
    with open(os.path.join(DEPLOY, "Dockerfile.dockerignore")) as f:
        ign = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    copied = sorted(fr.rstrip("/") for c in build["copy"] for fr in c[:-1])
    it.check(ign[:1] == ["*"] and sorted(l[1:] for l in ign[1:]
                                         if l.startswith("!")) == copied,
             "deploy/Dockerfile.dockerignore %r does not let in exactly what "
             "the build stage copies %r" % (ign, copied))
    cmake = [r for r in build["run"] if "cmake -S" in r]
    it.check(len(cmake) == 1, "build stage: one cmake RUN, got %r" % cmake)
    m = re.search(r"-S (\S+) -B (\S+)", cmake[0])
    it.check(m and m.group(1) == "/src", "cmake -S /src: %r" % cmake[0])
    r = subprocess.run(["cmake", "-S", src, "-B", os.path.join(wd, "ib")],
                       capture_output=True, text=True)
    it.check(r.returncode == 0, "cmake does not configure the files the "
             "build stage copies:\n%s%s" % (r.stdout[-2000:], r.stderr[-2000:]))
    # The binary: built at <build dir>/lugger, put into the run stage's
    # root by deploy/mkroot, where ENTRYPOINT runs it.
    it.check("RUNTIME_OUTPUT_DIRECTORY" not in cm, "CMake moved the binary")
    mk = [re.search(r"\bmkroot (\S+) (\S+)", r) for r in build["run"]]
    mk = [x for x in mk if x]
    it.check(len(mk) == 1 and mk[0].group(1) == m.group(2) + "/lugger",
             "build stage: want `mkroot %s/lugger ROOT`, got %r" % (
                 m.group(2), build["run"]))
    cp = [c for c in run["copy"] if c[0] == "--from=build"]
    it.check(run["from"] == "scratch" and len(cp) == 1 and
             cp[0][1:] == [mk[0].group(2), "/"], "run stage: want FROM "
             "scratch and the root mkroot made copied to /, got %r %r" % (
                 run["from"], cp))
    with open(os.path.join(DEPLOY, "mkroot")) as f:
        mkroot = f.read()
    binary = "/usr/bin/lugger"
    it.check('"$root%s"' % binary in mkroot, "mkroot does not install the "
             "binary at %s" % binary)
    it.check(run["entrypoint"] == [binary], "ENTRYPOINT %r, binary at %s" % (
        run["entrypoint"], binary))
    # The run stage's libraries are the packages owning what `ldd` lists at
    # build time (mkroot): every library the binary links must have one.
    # (tests/integration/test_image.py builds the image and runs it.)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        subprocess.run(["readelf", "-d", it.LUGGER],
                                       capture_output=True, text=True).stdout)
    ldd = subprocess.run(["ldd", it.LUGGER], capture_output=True,
                         text=True).stdout
    it.check("libluajit-5.1.so.2" in needed, "readelf -d: %r" % needed)
    pkgs = {}
    for lib in needed:
        m2 = re.search(r"^\s*%s => (\S+)" % re.escape(lib), ldd, re.M)
        it.check(m2 is not None, "ldd does not resolve %s" % lib)
        pkg = dpkg_owner(m2.group(1)) or dpkg_owner(
            os.path.realpath(m2.group(1)))
        it.check(pkg is not None, "%s: no Debian package owns it" % lib)
        pkgs[lib] = pkg.split(",")[0]
    it.check("ca-certificates" in build["apt"], "build stage: no "
             "ca-certificates for mkroot's CA bundle")
    return {"entrypoint": run["entrypoint"], "binary": binary,
            "cmd": run["cmd"]}, len(mods), pkgs


# --------------------------------------------------------------------------
# The README's sample record


def readme_sample():
    """The JSON record of the README's DaemonSet section ("Every record
    carries:")."""
    with open(README) as f:
        text = f.read()
    sec = text.split("### DaemonSet", 1)[1].split("\n### ", 1)[0]
    m = re.search(r"Every record carries:\s*```json\n(.*?)```", sec, re.S)
    it.check(m is not None, "README: no sample record in the DaemonSet "
             "section")
    return json.loads(m.group(1))


def matches(sample, got):
    """Sample values with "…" stand for any text there."""
    if isinstance(sample, str) and "…" in sample:
        pre, post = sample.split("…", 1)
        return isinstance(got, str) and got.startswith(pre) and \
            got.endswith(post) and len(got) > len(pre) + len(post)
    return type(sample) is type(got) and sample == got


def check_record_like_sample(rec, sample):
    it.check(list(rec) == list(sample) or set(rec) == set(sample),
             "record keys differ from the README's sample:\n  only in the "
             "record: %s\n  only in the README: %s\n  record: %s" % (
                 sorted(set(rec) - set(sample)),
                 sorted(set(sample) - set(rec)), json.dumps(rec)))
    for k, v in sample.items():
        it.check(matches(v, rec[k]), "%s = %r, the README shows %r\n  "
                 "record: %s" % (k, rec[k], v, json.dumps(rec)))
    return list(rec) == list(sample)


# --------------------------------------------------------------------------
# The scenarios


def cri(time_s, stream, body):
    return "%s %s F %s\n" % (time_s, stream, body)


def append(path, lines):
    with open(path, "a") as f:
        f.write("".join(lines))


def pod_dir(node, ns, name, uid, container, mode=0o755, owner=None,
            file_mode=0o640):
    d = os.path.join(node, "var/log/pods", "%s_%s_%s" % (ns, name, uid),
                     container)
    os.makedirs(d)
    p = os.path.join(d, "0.log")
    open(p, "w").close()
    os.chmod(p, file_mode)
    os.chmod(d, mode)
    os.chmod(os.path.dirname(d), mode)
    if owner is not None:
        for x in (p, d, os.path.dirname(d)):
            os.chown(x, owner, owner)
    return p


def daemonset_scenario(wd, objs, ds, image):
    cm_obj = [o for (k, _), o in objs.items() if k == "ConfigMap" and
              o["_file"] == "configmap.yaml"][0]
    cfg, http_port, _, grace = check_config_against_spec(ds, cm_obj)
    it.check(image["cmd"] == ds["spec"]["template"]["spec"]["containers"][0][
        "args"], "the image's CMD %r and the DaemonSet's args differ" %
        image["cmd"])
    node = os.path.join(wd.path, "node")
    os.makedirs(os.path.join(node, "var/log/pods"))  # the kubelet's
    spec = ds["spec"]["template"]["spec"]
    ns = ds["metadata"]["namespace"]
    pod = Pod(os.path.join(wd.path, "ds"), spec, spec["containers"][0],
              {cm_obj["metadata"]["name"]: cm_obj["data"]}, node, image)

    # The API: this node's pods, as the real server describes them.
    api = FakeApiServer(token=TOKEN, tls=True, workdir=wd.path,
                        bookmark_interval=0.5)
    with open(api.ca_file) as f:
        pod.service_account(TOKEN, f.read(), ns)
    sample = readme_sample()
    web_uid = "0f" + "3c5e1a-7b2d-4e8f-9a6b-1c2d3e4f5a6b"
    cid = "c0ffee" + "1234567890abcdef" * 3 + "0123456789ab"
    web = make_pod("shop", "web-7d9f8-x1", web_uid, NODE,
                   labels={"app": "nginx", "pod-template-hash": "7d9f8"},
                   annotations={"team": "storefront", "note": "not copied"},
                   owner=("ReplicaSet", "web-7d9f8"), ip="10.1.0.5",
                   containers=(("nginx", "docker.io/library/nginx:1.25"),),
                   statuses={"nginx": ("containerd://" + cid, 0, None)})
    db_uid = "5e1b2c3d-0000-4000-8000-00000000db00"
    db = make_pod("shop", "db-0", db_uid, NODE, labels={"app": "db"},
                  owner=("StatefulSet", "db"), ip="10.1.0.6",
                  containers=(("postgres", "postgres:16"),))
    dns_uid = "11111111-2222-4333-8444-555555555555"
    dns = make_pod("kube-system", "coredns-5d78c-abcde", dns_uid, NODE,
                   containers=(("coredns", "coredns:1.11"),))
    self_uid = "99999999-8888-4777-8666-555555555555"
    # lugger's own pod is one the API has not described (yet): the config
    # must keep lugger from reading its own stdout by the path alone.
    for p in (web, db, dns):
        api.add_pod(p)
    api.port = 443
    api.start()

    web_log = pod_dir(node, "shop", "web-7d9f8-x1", web_uid, "nginx")
    # The database's files belong to another user, mode 0600 in 0700
    # directories: only CAP_DAC_READ_SEARCH lets root without
    # CAP_DAC_OVERRIDE read them.
    db_log = pod_dir(node, "shop", "db-0", db_uid, "postgres", mode=0o700,
                     owner=999, file_mode=0o600)
    dns_log = pod_dir(node, "kube-system", "coredns-5d78c-abcde", dns_uid,
                      "coredns")
    self_log = pod_dir(node, ns, "lugger-x7k2p", self_uid, "lugger")
    # Lines from before lugger's first start: read_from = "tail" skips them.
    for p in (web_log, db_log, dns_log):
        append(p, [cri("2024-05-01T11:59:59.000000001Z", "stdout",
                       "old line before the first start")])

    env = pod.env({"metadata.name": "lugger-x7k2p", "metadata.namespace": ns,
                   "metadata.uid": self_uid, "spec.nodeName": NODE,
                   "spec.serviceAccountName": spec["serviceAccountName"],
                   "status.podIP": "10.1.0.2", "status.hostIP": "192.168.0.1"},
                  {"KUBERNETES_SERVICE_HOST": "127.0.0.1",
                   "KUBERNETES_SERVICE_PORT": "443"})
    run_check(pod, env, cfg)
    it.log("lugger check passed on the ConfigMap's config in the pod")

    out_path = os.path.join(wd.path, "ds.stdout")
    with open(out_path, "wb") as out:
        lg = PodLugger(pod, env, stdout=out)
    recs = []
    follow = it.JsonlFollower(out_path, on_record=recs.append)
    try:
        it.wait_for(lambda: it.http_get(http_port, "/readyz")[0] == 200, 20,
                    "/readyz 200 on the probes' port %d" % http_port,
                    proc=lg, detail=lambda: "%r\n%s" % (
                        it.http_get(http_port, "/readyz"), lg.stderr_tail()))
        code, body = it.http_get(http_port, "/healthz")
        it.check(code == 200, "/healthz: %r %r" % (code, body))
        check_confined(lg, spec["containers"][0]["securityContext"])
        it.wait_for(lambda: api.watches >= 1, 10, "lugger to watch the API",
                    proc=lg, detail=lg.stderr_tail)
        # read_from = "tail" applies to files found at the first start:
        # write only once lugger has the files open at their end.
        it.wait_for(lambda: sum(f.endswith(("nginx/0.log", "postgres/0.log"))
                                for f in lg.open_files()) >= 2, 15,
                    "lugger to open the pods' logs", proc=lg,
                    detail=lambda: "%s\n%s" % (lg.open_files(),
                                               lg.stderr_tail()))
        append(dns_log, [cri("2024-05-01T12:00:00.000000002Z", "stdout",
                             "kube-system line")])
        append(db_log, [cri("2024-05-01T12:00:00.000000003Z", "stderr",
                            "LOG:  checkpoint starting: time")])
        append(web_log, [
            cri(sample["time"], sample["log.iostream"], sample["body"]),
            cri("2024-05-01T12:00:00.200000000Z", "stderr",
                '{"level":"DEBUG","msg":"dropped by filter.lua"}'),
            cri("2024-05-01T12:00:00.300000000Z", "stderr",
                '{"level":"WARN","msg":"slow upstream"}')])
        it.wait_for(lambda: follow.poll() is not None and len(recs) >= 3,
                    20, "3 records on stdout", proc=lg,
                    detail=lambda: "%s\n%s" % (recs, lg.stderr_tail()))
        # The pod the API does not describe: after api_wait lugger decides
        # on its files by their paths. Its next line must not be read.
        it.wait_for(lambda: "lugger-x7k2p" in lg.stderr_text(), 20,
                    "lugger to give up waiting for its own pod's metadata",
                    proc=lg, detail=lg.stderr_tail)
        t_self = time.monotonic()
        append(self_log, [cri("2024-05-01T12:00:01.000000001Z", "stdout",
                              json.dumps({"body": "lugger's own record"}))])
        append(web_log, [cri("2024-05-01T12:00:01.000000002Z", "stdout",
                             "after the wait")])
        it.wait_for(lambda: follow.poll() is not None and
                    any(r["body"] == "after the wait" for r in recs),
                    20, "the record after the wait", proc=lg)
        time.sleep(1.0)  # a line of a followed file is read within ms
        follow.poll()
        it.log("waited out lugger's own pod %.1f s after the start" % (
            t_self - lg.started))
        # `kubectl apply` of an edited ConfigMap: the kubelet swaps the
        # volume's `..data`; lugger reloads, no restart.
        cm_src = [src for src, dst, _ in pod.mounts
                  if dst == os.path.dirname(cfg)][0]
        data = dict(cm_obj["data"])
        data["filter.lua"] += 'local p = process\n' \
            'function process(rec) rec.cluster = "prod" return p(rec) end\n'
        reloads = lambda: sum(
            r.get("component") == "reload" and
            "config generation" in str(r.get("msg")) and
            "running" in str(r.get("msg")) for r in lg.log_records())
        n0 = reloads()
        configmap_update(cm_src, data, "..2024_05_01_12_05_00.000000002")
        it.wait_for(lambda: reloads() > n0, 20,
            "lugger to reload the edited ConfigMap", proc=lg,
            detail=lg.stderr_tail)
        append(web_log, [cri("2024-05-01T12:05:00.000000001Z", "stdout",
                             "after the edit")])
        it.wait_for(lambda: follow.poll() is not None and
                    any(r["body"] == "after the edit" for r in recs),
                    20, "the record after the edit", proc=lg,
                    detail=lg.stderr_tail)
        code, metrics = it.http_get(http_port, "/metrics")
        it.check(code == 200 and "lugger_records_delivered_total" in metrics,
                 "/metrics: %r %s" % (code, metrics[:300]))
        took = lg.stop(timeout=grace)
        follow.poll()
        lg.check_sanitizers()
        # A rolling update: the next pod on this node starts from the
        # checkpoints on the node's /var/lib/lugger; what was written in
        # between is read, nothing is read twice.
        append(web_log, [cri("2024-05-01T12:06:00.000000001Z", "stdout",
                             "written while lugger was replaced")])
        out2 = os.path.join(wd.path, "ds2.stdout")
        with open(out2, "wb") as out:
            lg2 = PodLugger(pod, env, stdout=out)
        recs2 = []
        follow2 = it.JsonlFollower(out2, on_record=recs2.append)
        it.wait_for(lambda: follow2.poll() is not None and recs2, 20,
                    "the replacement pod's first record", proc=lg2,
                    detail=lg2.stderr_tail)
        time.sleep(0.5)
        lg2.stop(timeout=grace)
        follow2.poll()
        it.check([r["body"] for r in recs2] ==
                 ["written while lugger was replaced"], "the replacement "
                 "pod read %r" % [r["body"] for r in recs2])
        it.check(recs2[0]["k8s.pod.label.app"] == "nginx",
                 "replacement: %r" % recs2[0])
    finally:
        lg.kill9()
        if "lg2" in locals():
            lg2.kill9()
        api.stop()

    by_body = {r["body"]: r for r in recs}
    it.check(len(recs) == 5 and len(by_body) == 5, "want 5 records (the "
             "README's line, the WARN line, the database's, the ones after "
             "the wait and after the edit), got %d:\n%s" % (
                 len(recs), "\n".join(json.dumps(r) for r in recs)))
    rec = by_body.get(sample["body"])
    it.check(rec is not None, "no record %r" % sample["body"])
    same_order = check_record_like_sample(rec, sample)
    it.check(rec["log.file.path"] == web_log[len(node):], "log.file.path %r "
             "!= the path in the pod %r" % (rec["log.file.path"],
                                            web_log[len(node):]))
    it.check(rec["k8s.pod.uid"] == web_uid and rec["container.id"] == cid,
             "uid/container.id: %r" % rec)
    warn = by_body['{"level":"WARN","msg":"slow upstream"}']
    it.check(warn.get("level") == "warn" and
             warn["log.iostream"] == "stderr" and
             warn["k8s.pod.label.app"] == "nginx", "filter.lua's level: %r" %
             warn)
    it.check(by_body["after the edit"].get("cluster") == "prod" and
             "cluster" not in rec, "the edited filter.lua: %r" %
             by_body["after the edit"])
    dbr = by_body.get("LOG:  checkpoint starting: time")
    it.check(dbr is not None and dbr.get("k8s.statefulset.name") == "db" and
             dbr["k8s.pod.name"] == "db-0", "the 0600 file's record: %r" % dbr)
    # lugger asked the API only what the ClusterRole allows.
    for path, auth in api.requests:
        it.check(auth == "Bearer " + TOKEN, "request %s with Authorization "
                 "%r, not the service account's token" % (path, auth))
        it.check(path.startswith("/api/v1/pods?") and
                 ("fieldSelector=spec.nodeName%3D" + NODE in path or
                  "fieldSelector=spec.nodeName=" + NODE in path),
                 "request %s: not this node's pods" % path)
    it.check(api.lists >= 1 and api.watches >= 1, "lists %d watches %d" % (
        api.lists, api.watches))
    # Checkpoints on the node, where the next pod finds them.
    state = [vm for vm in spec["containers"][0]["volumeMounts"]
             if vm["mountPath"] == "/var/lib/lugger"][0]
    host_state = node + [v for v in spec["volumes"] if v["name"] ==
                         state["name"]][0]["hostPath"]["path"]
    it.check(os.listdir(host_state), "no checkpoint in the node's %s" %
             host_state)
    it.log("daemonset: %d records, README sample matched (key order %s), "
           "SIGTERM exit in %.2f s" % (len(recs), "same" if same_order else
                                       "differs", took))
    return rec, took, same_order


def image_name(ds):
    return ds["spec"]["template"]["spec"]["containers"][0]["image"]


def sidecar_scenario(wd, objs, image):
    pod_obj = [o for (k, _), o in objs.items() if k == "Pod" and
               o["_file"] == "sidecar.yaml"]
    it.check(len(pod_obj) == 1, "sidecar.yaml: one Pod")
    pod_obj = pod_obj[0]
    spec = pod_obj["spec"]
    for c in spec["containers"]:
        check_container("sidecar.yaml", c, spec)
    lc = [c for c in spec["containers"] if c["name"] == "lugger"]
    it.check(len(lc) == 1, "sidecar.yaml: no container named lugger")
    lc = lc[0]
    cms = {o["metadata"]["name"]: o["data"] for (k, _), o in objs.items()
           if k == "ConfigMap" and o["_file"] == "sidecar.yaml"}
    node = os.path.join(wd.path, "node2")
    os.makedirs(node)
    pod = Pod(os.path.join(wd.path, "sc"), spec, lc, cms, node, image)
    ns = pod_obj["metadata"].get("namespace", "default")
    uid = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    env = pod.env({"metadata.name": pod_obj["metadata"]["name"],
                   "metadata.namespace": ns, "metadata.uid": uid,
                   "spec.nodeName": NODE, "status.podIP": "10.1.0.9",
                   "status.hostIP": "192.168.0.1",
                   "spec.serviceAccountName": "default"})
    args = lc.get("args") or image["cmd"]
    cfg = args[args.index("-c") + 1]
    cm_vol = [v for v in spec["volumes"] if "configMap" in v][0]
    check_memory("sidecar.yaml", cms[cm_vol["configMap"]["name"]][
        os.path.basename(cfg)], lc, 64)
    run_check(pod, env, cfg)
    # The app container's view of the shared volume: where it writes.
    app = [c for c in spec["containers"] if c is not lc][0]
    shared = {vm["name"] for vm in lc["volumeMounts"]} & \
        {vm["name"] for vm in app["volumeMounts"]}
    it.check(len(shared) == 1, "sidecar: the containers share %s" % shared)
    vol = shared.pop()
    app_dir = [vm["mountPath"] for vm in app["volumeMounts"]
               if vm["name"] == vol][0]
    lugger_dir = [vm["mountPath"] for vm in lc["volumeMounts"]
                  if vm["name"] == vol][0]
    host_dir = [src for src, dst, _ in pod.mounts if dst == lugger_dir][0]
    with open(os.path.join(host_dir, "app.log"), "w") as f:
        f.write("Sat May  1 12:00:00 UTC 2024\n")
    out_path = os.path.join(wd.path, "sc.stdout")
    with open(out_path, "wb") as out:
        lg = PodLugger(pod, env, args=args, stdout=out)
    recs = []
    follow = it.JsonlFollower(out_path, on_record=recs.append)
    try:
        lg.wait_started()
        check_confined(lg, lc["securityContext"])
        with open(os.path.join(host_dir, "app.log"), "a") as f:
            f.write("Sat May  1 12:00:01 UTC 2024\n")
        it.wait_for(lambda: follow.poll() is not None and len(recs) >= 2,
                    20, "2 sidecar records", proc=lg,
                    detail=lambda: "%s\n%s" % (recs, lg.stderr_tail()))
        lg.stop(timeout=spec.get("terminationGracePeriodSeconds", 30))
    finally:
        lg.kill9()
    follow.poll()
    it.check([r["body"] for r in recs] == ["Sat May  1 12:00:00 UTC 2024",
                                           "Sat May  1 12:00:01 UTC 2024"],
             "sidecar bodies: %r" % [r.get("body") for r in recs])
    want = {"log.file.path": os.path.join(app_dir, "app.log"),
            "k8s.namespace.name": ns,
            "k8s.pod.name": pod_obj["metadata"]["name"],
            "k8s.pod.uid": uid,
            "k8s.container.name": app["name"],
            "k8s.node.name": NODE}
    for r in recs:
        extra = set(r) - set(want) - {"time", "body"}
        it.check(not extra and all(r.get(k) == v for k, v in want.items()),
                 "sidecar record %s, want %s (and time, body)" % (
                     json.dumps(r), want))
    return len(recs)


def main():
    it.require_binary()
    enter_netns()
    docs = load_manifests()
    objs, ds = check_shapes(docs)
    budgets = check_backend_configmaps(ds)
    it.log("backend ConfigMaps within the DaemonSet's memory limit, "
           "memory_budget: %s" % ", ".join(
               "%s %s" % (k, v or "default") for k, v in budgets.items()))
    with it.WorkDir("deploy") as wd:
        image, nmods, pkgs = check_dockerfile(wd.path)
        it.log("Dockerfile: %d pkg-config modules, run-time packages %s" % (
            nmods, sorted(set(pkgs.values()))))
        rec, took, same_order = daemonset_scenario(wd, objs, ds, image)
        nside = sidecar_scenario(wd, objs, image)
    return ("%d manifests ok; DaemonSet pod: %d keys as in the README "
            "(order %s), SIGTERM exit %.2f s; sidecar: %d records with the "
            "downward metadata; Dockerfile matches CMake, setup and the "
            "binary's %d libraries" % (
                sum(len(d) for d in docs.values()), len(rec),
                "same" if same_order else "differs", took, nside, len(pkgs)))


if __name__ == "__main__":
    it.main("test_deploy", main)
