"""Real container runtimes for lugger's runtime integration tests.

The test_runtime_*.py scripts start Debian's container runtimes themselves,
run containers from a busybox-static root filesystem built here (no image
registry is reachable), let the runtimes write real container logs, and
check what lugger makes of them against what the containers printed.

    Podman      podman + runc with private config and storage; the k8s-file
                log driver writes CRI lines (`--log-opt path=...`), cutting
                lines over 8 KiB into P chunks.
    DockerDaemon  the docker.io engine on a private unix socket, vfs storage,
                no bridge or iptables; json-file logs, lines cut at 16 KiB,
                size-based rotation renames `-json.log` to `-json.log.1`.
    Containerd  containerd with its CRI plugin, driven over gRPC by
                cri_client.js the way the kubelet drives it (pod sandboxes,
                CRI log files under a pod log directory, ReopenContainerLog).

Every daemon is a child of the test process and is stopped at the end, on
a failed check, on SIGTERM (a CTest timeout) and at exit; `leftovers()`
lists processes and mounts still using a test's directory, so a test can
fail when anything stayed behind. A runtime that cannot start fails the
test loudly: scripts/setup installs all of them.

The workload (`Workload`) is one shell script for busybox sh that prints
plain lines on both streams, an empty line, a CRLF line, escapes and UTF-8,
lines of 8 KiB +-1, 16 KiB +-1 and up to 100 KB, a Java stack trace on
stderr and output without a trailing newline on both streams; `expected`
holds the bodies each stream must yield, in order. The reference parsers
(`read_cri_file`, `read_docker_file`) read a runtime's file independently
of lugger, so each record's time can be checked against the line it came
from.
"""

import atexit
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lugger_it as it  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BUSYBOX = "/bin/busybox"

# --------------------------------------------------------------------------
# Cleanup of everything a test started, whatever way it ends.

_daemons = []


def _stop_all():
    for d in reversed(list(_daemons)):
        try:
            d.stop()
        except Exception as e:  # keep stopping the others
            it.log("stopping %s: %s" % (d, e))


def _on_term(signum, frame):
    _stop_all()
    _remove_short_dirs()
    it._on_term(signum, frame)


signal.signal(signal.SIGTERM, _on_term)


def main(name, fn):
    """Like lugger_it.main, but stops the runtimes before exiting."""
    def wrapped():
        try:
            return fn()
        finally:
            _stop_all()
    it.main(name, wrapped)


def need(cmd):
    """Fails (not skips) when a runtime binary is missing."""
    path = shutil.which(cmd, path="/usr/sbin:/usr/bin:/sbin:/bin")
    it.check(path is not None, "%s is not installed (run scripts/setup)" % cmd)
    return path


def leftovers(base):
    """Processes whose command line or cwd mentions `base`, and mounts under
    it: what a test must not leave behind."""
    procs = []
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open("/proc/%s/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and base in cmd:
            procs.append("%s %s" % (pid, cmd.strip()[:200]))
    mounts = [m for m in _mounts() if m == base or m.startswith(base + "/")]
    return procs, mounts


def _mounts():
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            out.append(line.split()[4].replace("\\040", " "))
    return out


def unmount_under(base):
    """Lazily unmounts whatever a runtime left mounted under `base`, deepest
    first, so the work directory can be removed."""
    for m in sorted((m for m in _mounts() if m.startswith(base + "/")),
                    key=len, reverse=True):
        subprocess.run(["umount", "-l", m], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def _kill_pids_mentioning(base):
    """Last resort after a daemon died uncleanly: SIGKILL the processes it
    started (container shims, container processes) by pid, found by our
    private directory in their command line."""
    procs, _ = leftovers(base)
    for p in procs:
        pid = int(p.split()[0])
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _short_tmp():
    return "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"


_short_dirs = []


def _remove_short_dirs():
    if os.environ.get("LUGGER_IT_KEEP"):
        return
    for d in _short_dirs:
        unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_remove_short_dirs)


def work_dir(name):
    """lugger_it.WorkDir(name), also removed when the test is stopped by
    SIGTERM (a CTest timeout), which skips the `with` block's cleanup."""
    wd = it.WorkDir(name)
    _short_dirs.append(wd.path)
    return wd


def short_dir(prefix):
    """A new private directory with a short path (removed at exit): runtimes
    put unix sockets under their state directories, and a socket path has
    at most 107 bytes."""
    d = tempfile.mkdtemp(prefix=prefix, dir=_short_tmp())
    os.chmod(d, 0o755)
    _short_dirs.append(d)
    return d


def _kill_containers(ids):
    """SIGKILLs the processes of the containers `ids` (container or sandbox
    ids; a runtime puts each container in cgroups named after its id), for
    when their shim or daemon went away without stopping them."""
    ids = [i for i in ids if i]
    if not ids:
        return
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cgroup" % pid) as f:
                cg = f.read()
        except OSError:
            continue
        if any(i in cg for i in ids):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _pdeathsig():
    it._libc.prctl(it._PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _wait_pid_exit(proc, timeout):
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


# --------------------------------------------------------------------------
# Root filesystem and images


def make_rootfs(dest):
    """A busybox-static root filesystem at `dest`: /bin/busybox and one
    symlink per applet, /etc/passwd and /etc/group for root, and the mount
    points a runtime expects. Returns `dest`."""
    it.check(os.path.isfile(BUSYBOX), "%s is missing (busybox-static; run "
             "scripts/setup)" % BUSYBOX)
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", "run"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(dest, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], check=True,
                             capture_output=True, text=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", os.path.join(dest, "bin", a))
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write("root:x:0:\n")
    return dest


def rootfs_tar(rootfs, out):
    """The root filesystem as a tar file (for `docker import`)."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        t.add(rootfs, arcname=".")
    return out


def docker_archive(rootfs, out, images):
    """Writes a `docker save`-format archive holding one layer (the root
    filesystem) and one image per entry of `images` ({"repo:tag": image
    config dict, e.g. {"Cmd": [...]}}), which `ctr images import` reads
    like a pulled image. Returns `out`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        t.add(rootfs, arcname=".")
    layer = buf.getvalue()
    layer_id = hashlib.sha256(layer).hexdigest()
    files = [(layer_id + "/layer.tar", layer)]
    manifest = []
    for tag, conf in images.items():
        conf = dict(conf)
        conf.setdefault("Env", ["PATH=/bin"])
        blob = json.dumps({
            "architecture": "amd64", "os": "linux", "config": conf,
            "rootfs": {"type": "layers",
                       "diff_ids": ["sha256:" + layer_id]}}).encode()
        name = hashlib.sha256(blob).hexdigest() + ".json"
        files.append((name, blob))
        manifest.append({"Config": name, "RepoTags": [tag],
                         "Layers": [layer_id + "/layer.tar"]})
    files.append(("manifest.json", json.dumps(manifest).encode()))
    with tarfile.open(out, "w") as t:
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            t.addfile(ti, io.BytesIO(data))
    return out


# --------------------------------------------------------------------------
# The workload and what it must yield

JAVA_TRACE = [
    'Exception in thread "main" java.lang.IllegalStateException: '
    'order queue full (capacity 512)',
    "\tat com.example.orders.OrderQueue.offer(OrderQueue.java:88)",
    "\tat com.example.orders.OrderService.submit(OrderService.java:41)",
    "\tat com.example.orders.Main.main(Main.java:17)",
    "Caused by: java.io.IOException: journal: disk quota exceeded",
    "\tat com.example.orders.Journal.append(Journal.java:120)",
    "\tat com.example.orders.OrderQueue.offer(OrderQueue.java:85)",
    "\t... 2 more",
]

# Line lengths around the runtimes' cut points: podman's conmon writes at
# most 8192 bytes of a line per CRI chunk, Docker 16384 per json-file piece.
LONG_LENGTHS = (8191, 8192, 8193, 16383, 16384, 16385, 40000, 100000)


def _seq_text(n):
    """What `seq -s, 1 K | head -c n` prints for a K big enough."""
    out, i, size = [], 1, 0
    while size <= n:
        s = str(i)
        out.append(s)
        size += len(s) + 1
        i += 1
    return ",".join(out)[:n], i


def _sh_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


class Workload:
    """A shell script for busybox sh and the bodies it yields per stream.

    `plain` stdout/stderr line pairs, then the special lines, the long
    lines, the Java trace (stderr), more plain lines, and last the output
    without a trailing newline on both streams. `tag` is put in every line
    so records of different containers cannot be mistaken for each other.
    """

    def __init__(self, tag, plain=200, keeps_cr=True):
        """`keeps_cr`: the runtime keeps a CR before the LF in the message
        (conmon and Docker do; containerd's CRI logger drops it)."""
        self.tag = tag
        out, err = [], []
        sh = []
        # Plain lines, stdout and stderr interleaved in the program; the
        # runtime reads the two pipes separately, so only the order within
        # a stream is defined.
        sh.append('i=1; while [ $i -le %d ]; do '
                  'echo "%s out $i: GET /api/v1/items?page=$i 200"; '
                  'echo "%s err $i: WARN slow query took ${i}ms" >&2; '
                  'i=$((i+1)); done' % (plain, tag, tag))
        for i in range(1, plain + 1):
            out.append("%s out %d: GET /api/v1/items?page=%d 200" % (tag, i, i))
            err.append("%s err %d: WARN slow query took %dms" % (tag, i, i))
        # An empty line, a CRLF line (the CR is part of the message in both
        # formats), JSON escapes, UTF-8 and a line that looks like JSON.
        specials = [
            ("", "echo"),
            ("%s crlf line%s" % (tag, "\r" if keeps_cr else ""),
             "printf '%s crlf line\\r\\n'" % tag),
            ('%s tab\there "quoted" back\\slash' % tag,
             "printf '%s tab\\there \"quoted\" back\\\\slash\\n'" % tag),
            ("%s utf8 h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c" % tag,
             "printf '%s utf8 h\\303\\251llo w\\303\\266rld \\342\\234\\223 "
             "\\346\\227\\245\\346\\234\\254\\n'" % tag),
            ('{"level":"info","msg":"%s json-looking line"}' % tag,
             "echo " + _sh_quote('{"level":"info","msg":"%s json-looking '
                                 'line"}' % tag)),
        ]
        for body, cmd in specials:
            out.append(body)
            sh.append(cmd)
        # Long lines: "<tag> long <n>:" then seq digits, n bytes in all.
        for n in LONG_LENGTHS:
            head = "%s long %d:" % (tag, n)
            text, k = _seq_text(n - len(head))
            out.append(head + text)
            sh.append("printf %s; seq -s, 1 %d | head -c %d; echo" % (
                _sh_quote(head), k, n - len(head)))
        head = "%s long stderr 30000:" % tag
        text, k = _seq_text(30000 - len(head))
        err.append(head + text)
        sh.append("{ printf %s; seq -s, 1 %d | head -c %d; echo; } >&2" % (
            _sh_quote(head), k, 30000 - len(head)))
        # A Java stack trace on stderr between two ordinary log lines.
        err.append("%s ERROR request 42 failed" % tag)
        sh.append("echo %s >&2" % _sh_quote("%s ERROR request 42 failed" % tag))
        self.trace_index = len(err)
        err.extend(JAVA_TRACE)
        sh.append("printf %s >&2" % _sh_quote(
            "".join(x.replace("\\", "\\\\").replace("%", "%%") + "\\n"
                    for x in JAVA_TRACE)))
        err.append("%s INFO recovered" % tag)
        sh.append("echo %s >&2" % _sh_quote("%s INFO recovered" % tag))
        for i in range(plain + 1, plain + 11):
            out.append("%s out %d: GET /api/v1/items?page=%d 200" % (tag, i, i))
        sh.append('i=%d; while [ $i -le %d ]; do '
                  'echo "%s out $i: GET /api/v1/items?page=$i 200"; '
                  'i=$((i+1)); done' % (plain + 1, plain + 10, tag))
        # Output without a trailing newline, the program's last words.
        out.append("%s stdout last words, no newline" % tag)
        err.append("%s stderr last words, no newline" % tag)
        sh.append("printf %s >&2" % _sh_quote(err[-1]))
        sh.append("printf %s" % _sh_quote(out[-1]))
        self.script = "\n".join(sh) + "\n"
        self.expected = {"stdout": out, "stderr": err}

    def expected_multiline(self):
        """The bodies when a Java stack-trace rule groups the trace: its
        lines become one record (joined with "\\n") starting at the
        Exception line; the lines around it stay records of their own."""
        err = list(self.expected["stderr"])
        i = self.trace_index
        err[i:i + len(JAVA_TRACE)] = ["\n".join(JAVA_TRACE)]
        return {"stdout": list(self.expected["stdout"]), "stderr": err}

    def total(self, expected=None):
        e = expected or self.expected
        return sum(len(v) for v in e.values())

    def nbytes(self):
        return sum(len(b.encode()) + 1 for v in self.expected.values()
                   for b in v)


# --------------------------------------------------------------------------
# Times and reference parsers

_RFC3339 = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
    r"(Z|[+-]\d\d:\d\d)$")


def parse_time_ns(s):
    """RFC 3339 with 0-9 fractional digits -> nanoseconds since the epoch
    (UTC). Fails on anything else."""
    m = _RFC3339.match(s)
    it.check(m is not None, "not an RFC 3339 time: %r" % (s,))
    import calendar
    y, mo, d, h, mi, sec = (int(m.group(i)) for i in range(1, 7))
    secs = calendar.timegm((y, mo, d, h, mi, sec, 0, 0, 0))
    frac = int((m.group(7) or "").ljust(9, "0"))
    tz = m.group(8)
    if tz != "Z":
        off = int(tz[1:3]) * 3600 + int(tz[4:6]) * 60
        secs -= off if tz[0] == "+" else -off
    return secs * 1_000_000_000 + frac


def read_cri_file(path, counts=None):
    """The records of a CRI log file, per stream: [(time_ns, body)], P
    chunks joined with the F chunk that ends them; a P chunk with nothing
    after it at the end of the file is a record too (output without a
    trailing newline). `counts` (a dict) gets "lines" and "partial"."""
    recs = {"stdout": [], "stderr": []}
    open_ = {}
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    it.check(lines[-1] == b"", "%s does not end in LF" % path)
    for raw in lines[:-1]:
        ts, stream, tag, msg = raw.split(b" ", 3) if raw.count(b" ") >= 3 \
            else raw.split(b" ", 2) + [b""]
        stream = stream.decode()
        flag = tag.split(b":")[0]
        if counts is not None:
            counts["lines"] = counts.get("lines", 0) + 1
            if flag == b"P":
                counts["partial"] = counts.get("partial", 0) + 1
        t = parse_time_ns(ts.decode())
        cur = open_.get(stream)
        if cur is None:
            cur = open_[stream] = [t, b""]
        cur[1] += msg
        if flag == b"F":
            recs[stream].append((cur[0], cur[1].decode("utf-8")))
            del open_[stream]
    for stream, cur in open_.items():
        recs[stream].append((cur[0], cur[1].decode("utf-8")))
    return recs


def read_docker_file(path, counts=None):
    """The records of a Docker json-file log, per stream: [(time_ns,
    body)], pieces without a trailing "\\n" joined with what follows; a
    last piece without one is a record too. `counts` gets "lines" and
    "partial"."""
    recs = {"stdout": [], "stderr": []}
    open_ = {}
    with open(path, "rb") as f:
        for raw in f:
            it.check(raw.endswith(b"\n"), "%s: line without LF" % path)
            o = json.loads(raw)
            stream, log_ = o["stream"], o["log"]
            t = parse_time_ns(o["time"])
            if counts is not None:
                counts["lines"] = counts.get("lines", 0) + 1
            cur = open_.get(stream)
            if cur is None:
                cur = open_[stream] = [t, ""]
            cur[1] += log_
            if log_.endswith("\n"):
                recs[stream].append((cur[0], cur[1][:-1]))
                del open_[stream]
            elif counts is not None:
                counts["partial"] = counts.get("partial", 0) + 1
    for stream, cur in open_.items():
        recs[stream].append((cur[0], cur[1]))
    return recs


def group_reference(reference, expected):
    """`reference` ({stream: [(time_ns, body)]}, one entry per line) grouped
    the way `expected` ({stream: [body]}) groups lines: an expected body
    with k "\n" takes the next k + 1 lines, joined with "\n", at the time
    of the first. For checking multiline records against the file."""
    out = {}
    for s, recs in reference.items():
        grouped, i = [], 0
        for body in expected[s]:
            k = body.count("\n") + 1
            part = recs[i:i + k]
            if not part:
                break
            grouped.append((part[0][0], "\n".join(b for _, b in part)))
            i += k
        grouped.extend(recs[i:])
        out[s] = grouped
    return out


def _short(s, n=120):
    s = repr(s)
    return s if len(s) <= n else s[:n] + "...(%d chars)" % len(s)


def compare_bodies(what, got, want):
    """Fails at the first difference between two lists of bodies, saying
    where, with both values (shortened)."""
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            j = next((k for k in range(min(len(g), len(w))) if g[k] != w[k]),
                     min(len(g), len(w)))
            it.fail("%s: record %d differs (of %d got, %d expected): got %d "
                    "chars, expected %d, first difference at char %d:\n"
                    "  got      %s\n  expected %s" % (
                        what, i, len(got), len(want), len(g), len(w), j,
                        _short(g[max(0, j - 20):j + 60]),
                        _short(w[max(0, j - 20):j + 60])))
    if len(got) != len(want):
        i = min(len(got), len(want))
        extra = got[i:] if len(got) > len(want) else want[i:]
        it.fail("%s: %d records, expected %d; first %s: %s" % (
            what, len(got), len(want),
            "extra" if len(got) > len(want) else "missing",
            ", ".join(_short(x, 80) for x in extra[:3])))


def _write_order(older, newer):
    """For a failure message: did the runtime write `older`'s last line
    (any stream) after `newer`'s first one? Reads both files (CRI, else
    Docker json-file) and says so with the lines' times; "" when they
    cannot be read."""
    try:
        recs = []
        for p in (older, newer):
            try:
                r = read_cri_file(p)
            except Exception:
                r = read_docker_file(p)
            recs.append(sorted((t, s, b) for s in r for t, b in r[s]))
        old, new = recs
        if not old or not new:
            return ""
        first = new[0]
        late = [x for x in old if x[0] > first[0]]
        if not late:
            return ("; the runtime wrote all of %s before %s's first line "
                    "(%s %s): one writer, lugger's order" % (
                        os.path.basename(older), os.path.basename(newer),
                        first[1], _short(first[2], 40)))
        return ("; the runtime wrote %d line(s) of %s (first: %s %s, %.3f "
                "ms late) after %s's first line (%s %s): two writers at once "
                "(e.g. one logger thread per stream)" % (
                    len(late), os.path.basename(older), late[0][1],
                    _short(late[0][2], 40), (late[0][0] - first[0]) / 1e6,
                    os.path.basename(newer), first[1],
                    _short(first[2], 40)))
    except Exception as e:  # a diagnosis only: never hide the failure
        return "; (write order unknown: %s)" % e


def check_rotated_stream(what, seqs, file_of):
    """Checks one stream of a rotated log: `seqs` are the sequence numbers
    of lugger's records in output order; `file_of` maps the sequence
    numbers whose file is known (the files still on disk) to that file.
    Each sequence number must come exactly once, 1..len(seqs) (the caller
    makes that so), within each known file in increasing order (file
    order), and across files too: lugger drains a renamed file before it
    reads its successor (README, "Delivery guarantees"). Fails at the first
    record out of order, saying which files it and the one before it are
    in, and whether the runtime wrote the older file's last line after the
    newer file's first (from the lines' own times)."""
    last = {}
    back = 0
    for i, q in enumerate(seqs):
        f = file_of.get(q)
        if f is not None:
            it.check(q > last.get(f, 0), "%s: record %d (seq %d) of %s came "
                     "after seq %d of the same file" % (
                         what, i, q, os.path.basename(f), last.get(f, 0)))
            last[f] = q
        if i and q < seqs[i - 1]:
            back += 1
            g = file_of.get(seqs[i - 1])
            it.check(False, "%s: record %d (seq %d, %s) came after seq %d "
                     "(%s): a rotated file's rest after its successor%s" % (
                         what, i, q, os.path.basename(str(f)), seqs[i - 1],
                         os.path.basename(str(g)),
                         _write_order(f, g) if f and g and f != g else ""))
    return back


def check_file_records(what, records, expected, reference, t_min, t_max,
                       meta=None):
    """Checks lugger's records of one container log file.

    `records`: lugger's output records of that file, in output order.
    `expected`: {stream: [body]} from the workload, in order.
    `reference`: {stream: [(time_ns, body)]} from the reference parser.
    Every record must carry `log.iostream`, its body must be exactly the
    expected one in order per stream, and its `time` must be exactly the
    time of the runtime's line where the record starts, within [t_min,
    t_max] (ns, the wall clock around the container's run). Every record
    must carry the fields of `meta` ({key: value}) with those values (a
    value None: the key must be absent). Returns the number of records
    checked."""
    per = {"stdout": [], "stderr": []}
    for r in records:
        for k, v in (meta or {}).items():
            got = r.get(k, None)
            it.check(got == v and (v is not None or k not in r),
                     "%s: %s = %r, expected %r in %s" % (
                         what, k, r.get(k, "<absent>"),
                         "<absent>" if v is None else v, _short(r, 300)))
        s = r.get("log.iostream")
        it.check(s in per, "%s: record without a valid log.iostream: %s" % (
            what, _short(r, 300)))
        it.check(isinstance(r.get("body"), str) and
                 isinstance(r.get("time"), str),
                 "%s: record without body/time: %s" % (what, _short(r, 300)))
        per[s].append(r)
    for s in ("stdout", "stderr"):
        compare_bodies("%s %s vs the runtime's file (reference parser)" % (
            what, s), [b for _, b in reference[s]], expected[s])
        compare_bodies("%s %s" % (what, s), [r["body"] for r in per[s]],
                       expected[s])
        for i, (r, (t_ref, _)) in enumerate(zip(per[s], reference[s])):
            t = parse_time_ns(r["time"])
            it.check(t == t_ref, "%s %s record %d: time %s (%d ns), the "
                     "runtime's line says %d ns" % (what, s, i, r["time"], t,
                                                    t_ref))
            it.check(t_min <= t <= t_max, "%s %s record %d: time %s outside "
                     "the container's run [%d, %d] ns" % (
                         what, s, i, r["time"], t_min, t_max))
    return len(records)


def now_ns():
    return time.time_ns()


# --------------------------------------------------------------------------
# lugger's output


def records_by_path(out_path):
    """lugger's JSON-lines output grouped by log.file.path (in order)."""
    by = {}
    if not os.path.exists(out_path):
        return by
    for r in it.read_jsonl(out_path, allow_partial_tail=True):
        by.setdefault(r.get("log.file.path"), []).append(r)
    return by


def count_lines(path):
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        return f.read().count(b"\n")


# --------------------------------------------------------------------------
# Podman


class Podman:
    """Rootful podman with its own containers.conf and storage.conf under
    `base`: runc (crun fails on this kernel's hybrid cgroups), cgroupfs, no
    network, explicit nofile/nproc ulimits (no CAP_SYS_RESOURCE here), the
    k8s-file log driver. Containers run from a root filesystem directory
    (`--rootfs`), so no image is needed."""

    def __init__(self):
        need("podman")
        need("runc")
        need("conmon")
        # A short private directory: with run/storage paths some 40 bytes
        # longer, conmon's unix socket paths pass the 108-byte limit and
        # every `podman run` waits 20 s for the container's exit.
        self.base = short_dir("lgpm-")
        base = self.base
        for d in ("root", "runroot", "tmp"):
            os.makedirs(os.path.join(base, d), exist_ok=True)
        with open(os.path.join(base, "containers.conf"), "w") as f:
            f.write('[containers]\n'
                    'default_ulimits = ["nofile=20000:20000", '
                    '"nproc=32768:32768"]\n'
                    'log_driver = "k8s-file"\n'
                    'netns = "none"\n'
                    '[engine]\n'
                    'runtime = "runc"\n'
                    'cgroup_manager = "cgroupfs"\n'
                    'events_logger = "file"\n'
                    'tmp_dir = "%s/tmp"\n' % base)
        with open(os.path.join(base, "storage.conf"), "w") as f:
            f.write('[storage]\ndriver = "vfs"\ngraphroot = "%s/root"\n'
                    'runroot = "%s/runroot"\n' % (base, base))
        self.env = dict(os.environ)
        self.env["CONTAINERS_CONF"] = os.path.join(base, "containers.conf")
        self.env["CONTAINERS_STORAGE_CONF"] = os.path.join(base,
                                                           "storage.conf")
        self.procs = []
        _daemons.append(self)

    def start(self, rootfs, log_path, script, name, volumes=()):
        """Starts `sh -c script` in a container (attached, so `wait()`
        returns when it has exited and conmon has written all of its
        output), with `volumes` [(host dir, container dir)] bind-mounted.
        Returns the podman process."""
        cmd = ["podman", "run", "--rm", "--name", name,
               "--log-driver", "k8s-file", "--log-opt", "path=" + log_path]
        for host, ctr in volumes:
            cmd += ["-v", "%s:%s" % (host, ctr)]
        cmd += ["--rootfs", rootfs, "sh", "-c", script]
        errf = open(os.path.join(self.base, name + ".err"), "wb")
        p = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=errf,
                             preexec_fn=_pdeathsig)
        p.errf, p.name = errf, name
        self.procs.append(p)
        return p

    def wait(self, p, timeout=60):
        ok = _wait_pid_exit(p, timeout)
        p.errf.close()
        with open(p.errf.name, "rb") as f:
            err = f.read().decode("utf-8", "replace")
        it.check(ok, "podman run %s did not finish within %d s: %s" % (
            p.name, timeout, err[-2000:]))
        it.check(p.returncode == 0, "podman run %s exited %d: %s" % (
            p.name, p.returncode, err[-2000:]))

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run(["podman", "rm", "-af", "-t", "0"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)
        _kill_pids_mentioning(self.base)
        unmount_under(self.base)
        if self in _daemons:
            _daemons.remove(self)
        check_nothing_left(self.base)

    def __str__(self):
        return "podman (%s)" % self.base


# --------------------------------------------------------------------------
# Docker engine


class DockerDaemon:
    """dockerd (Debian docker.io) on a private unix socket with its own data
    and exec roots, vfs storage, no bridge, iptables or userland proxy. It
    starts its own containerd under the exec root."""

    def __init__(self, base, storage_driver="vfs"):
        self.storage_driver = storage_driver
        self.dockerd = need("dockerd")
        # /usr/bin/docker is Debian's client; another `docker` may be
        # earlier in PATH.
        self.docker = "/usr/bin/docker"
        it.check(os.access(self.docker, os.X_OK),
                 "%s is missing (docker.io; run scripts/setup)" % self.docker)
        self.base = base
        self.data = os.path.join(base, "data")
        self.sock = os.path.join(base, "docker.sock")
        self.proc = None

    def start(self, timeout=30):
        os.makedirs(self.data, exist_ok=True)
        os.makedirs(os.path.join(self.base, "exec"), exist_ok=True)
        self.logf = open(os.path.join(self.base, "dockerd.log"), "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [self.dockerd, "--data-root", self.data,
             "--exec-root", os.path.join(self.base, "exec"),
             "--host", "unix://" + self.sock,
             "--pidfile", os.path.join(self.base, "dockerd.pid"),
             "--bridge=none", "--iptables=false", "--ip6tables=false",
             "--ip-masq=false", "--ip-forward=false",
             "--userland-proxy=false",
             "--storage-driver=" + self.storage_driver,
             "--log-driver=json-file"],
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf)
        _daemons.append(self)
        while True:
            if self.proc.poll() is not None:
                it.fail("dockerd exited %d at start:\n%s" % (
                    self.proc.returncode, self.log_tail()))
            if os.path.exists(self.sock) and self.cli(
                    "version", check=False).returncode == 0:
                break
            if time.monotonic() - t0 > timeout:
                it.fail("dockerd did not answer within %d s:\n%s" % (
                    timeout, self.log_tail()))
            time.sleep(0.1)
        self.start_s = time.monotonic() - t0
        it.log("dockerd up in %.2f s" % self.start_s)
        return self

    def log_tail(self, n=4000):
        try:
            with open(os.path.join(self.base, "dockerd.log"), "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def cli(self, *args, check=True, timeout=120, input=None):
        env = dict(os.environ, DOCKER_HOST="unix://" + self.sock)
        env.pop("DOCKER_CONFIG", None)
        env["DOCKER_CONFIG"] = os.path.join(self.base, "client")
        r = subprocess.run([self.docker] + list(args), env=env,
                           capture_output=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            it.fail("docker %s exited %d: %s\n%s" % (
                " ".join(args[:3]), r.returncode,
                r.stderr.decode("utf-8", "replace")[-2000:],
                self.log_tail(2000)))
        return r

    def log_path(self, cid):
        return os.path.join(self.data, "containers", cid, cid + "-json.log")

    def stop(self):
        if self in _daemons:
            _daemons.remove(self)
        if self.proc is None:
            return
        ids = []
        if self.proc.poll() is None:
            try:
                ids = self.cli("ps", "-aq", "--no-trunc", check=False,
                               timeout=30).stdout.decode().split()
                if ids:
                    self.cli("rm", "-f", *ids, check=False, timeout=60)
            except Exception as e:  # stop the daemon anyway
                it.log("removing containers: %s" % e)
            self.proc.terminate()
            if not _wait_pid_exit(self.proc, 20):
                self.proc.kill()
                self.proc.wait()
        _kill_pids_mentioning(self.base)
        _kill_containers(ids)
        unmount_under(self.base)
        self.logf.close()

    def __str__(self):
        return "dockerd (%s)" % self.base


# --------------------------------------------------------------------------
# containerd with the CRI plugin


class Containerd:
    """containerd with its CRI plugin on a private socket, root and state,
    the overlayfs snapshotter and runc. Pods use the host network (no CNI
    plugin configuration is needed). `cri(method, request)` calls the CRI
    RuntimeService through cri_client.js."""

    SANDBOX_IMAGE = "localhost/pause:local"

    def __init__(self, base):
        self.containerd = need("containerd")
        self.ctr = need("ctr")
        need("runc")
        self.node = need("node")
        it.check(os.path.isdir(os.path.join(HERE, "node_modules", "@grpc",
                                            "grpc-js")),
                 "%s/node_modules lacks @grpc/grpc-js (run scripts/setup)"
                 % HERE)
        self.base = base
        self.sock = os.path.join(base, "containerd.sock")
        self.proc = self.client = None
        self.sandboxes = []
        self.containers = []

    def start(self, timeout=30):
        for d in ("root", "state", "cni"):
            os.makedirs(os.path.join(self.base, d), exist_ok=True)
        conf = os.path.join(self.base, "config.toml")
        with open(conf, "w") as f:
            f.write(
                'version = 2\nroot = "{b}/root"\nstate = "{b}/state"\n'
                '[grpc]\n  address = "{b}/containerd.sock"\n'
                '[ttrpc]\n  address = "{b}/containerd.sock.ttrpc"\n'
                '[debug]\n  address = ""\n[metrics]\n  address = ""\n'
                '[plugins."io.containerd.grpc.v1.cri"]\n'
                '  sandbox_image = "{img}"\n'
                '  stream_server_address = "127.0.0.1"\n'
                '  stream_server_port = "0"\n'
                '  disable_apparmor = true\n'
                '  restrict_oom_score_adj = true\n'
                '  [plugins."io.containerd.grpc.v1.cri".containerd]\n'
                '    snapshotter = "overlayfs"\n'
                '    default_runtime_name = "runc"\n'
                '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes'
                '.runc]\n'
                '      runtime_type = "io.containerd.runc.v2"\n'
                '  [plugins."io.containerd.grpc.v1.cri".cni]\n'
                '    bin_dir = "/usr/lib/cni"\n'
                '    conf_dir = "{b}/cni"\n'.format(b=self.base,
                                                    img=self.SANDBOX_IMAGE))
        self.logf = open(os.path.join(self.base, "containerd.log"), "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [self.containerd, "--config", conf], stdin=subprocess.DEVNULL,
            stdout=self.logf, stderr=self.logf)
        _daemons.append(self)
        while True:
            if self.proc.poll() is not None:
                it.fail("containerd exited %d at start:\n%s" % (
                    self.proc.returncode, self.log_tail()))
            if os.path.exists(self.sock) and subprocess.run(
                    [self.ctr, "--address", self.sock, "version"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL).returncode == 0:
                break
            if time.monotonic() - t0 > timeout:
                it.fail("containerd did not answer within %d s:\n%s" % (
                    timeout, self.log_tail()))
            time.sleep(0.1)
        self.client = self._client()
        v = self.cri("Version", {"version": "v1"})
        self.start_s = time.monotonic() - t0
        it.log("containerd %s (CRI %s) up in %.2f s" % (
            v.get("runtime_version"), v.get("runtime_api_version"),
            self.start_s))
        return self

    def _client(self):
        return subprocess.Popen(
            [self.node, os.path.join(HERE, "cri_client.js"),
             "unix://" + self.sock], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.logf, text=True,
            preexec_fn=_pdeathsig)

    def log_tail(self, n=4000):
        try:
            with open(os.path.join(self.base, "containerd.log"), "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def import_images(self, archive):
        r = subprocess.run([self.ctr, "--address", self.sock, "-n", "k8s.io",
                            "images", "import", archive],
                           capture_output=True, timeout=120)
        it.check(r.returncode == 0, "ctr images import failed: %s" %
                 r.stderr.decode("utf-8", "replace")[-2000:])

    def cri(self, method, request, check=True):
        """One CRI call; returns the response dict, or fails (with
        containerd's log) on an error when `check`."""
        it.check(self.client is not None and self.client.poll() is None,
                 "cri_client.js is not running")
        self.client.stdin.write(json.dumps({"method": method,
                                            "request": request}) + "\n")
        self.client.stdin.flush()
        line = self.client.stdout.readline()
        it.check(line, "cri_client.js closed its output (see %s)" %
                 os.path.join(self.base, "containerd.log"))
        a = json.loads(line)
        if "error" in a:
            if check:
                it.fail("CRI %s: %s\n%s" % (method, a["error"],
                                            self.log_tail(2000)))
            return None
        return a["response"]

    def run_pod(self, namespace, name, uid, log_directory, labels=None):
        """RunPodSandbox on the host network (so no hostname: the pod has
        no UTS namespace of its own); returns (id, config)."""
        conf = {"metadata": {"name": name, "uid": uid,
                             "namespace": namespace, "attempt": 0},
                "log_directory": log_directory,
                "labels": labels or {},
                "linux": {"security_context": {"namespace_options": {
                    "network": "NODE", "pid": "CONTAINER", "ipc": "POD"}}}}
        sid = self.cri("RunPodSandbox", {"config": conf})["pod_sandbox_id"]
        self.sandboxes.append(sid)
        return sid, conf

    def run_container(self, sid, sconf, name, command, image="localhost/bb:local",
                      attempt=0, before_start=None):
        """CreateContainer + StartContainer with the kubelet's log path
        layout (<container>/<restart>.log under the pod's directory);
        `before_start(container id)` runs between the two (where the
        kubelet would publish the id in the pod's status). Returns
        (container id, absolute log path)."""
        cid = self.cri("CreateContainer", {
            "pod_sandbox_id": sid, "sandbox_config": sconf,
            "config": {"metadata": {"name": name, "attempt": attempt},
                       "image": {"image": image}, "command": command,
                       "log_path": "%s/%d.log" % (name, attempt)}})["container_id"]
        self.containers.append(cid)
        if before_start is not None:
            before_start(cid)
        self.cri("StartContainer", {"container_id": cid})
        st = self.cri("ContainerStatus", {"container_id": cid})["status"]
        return cid, st["log_path"]

    def wait_exited(self, cid, timeout=60):
        t0 = time.monotonic()
        while True:
            st = self.cri("ContainerStatus", {"container_id": cid})["status"]
            if st["state"] == "CONTAINER_EXITED":
                return st
            it.check(time.monotonic() - t0 < timeout,
                     "container %s still %s after %d s" % (
                         cid[:12], st["state"], timeout))
            time.sleep(0.05)

    def remove_pods(self):
        for sid in list(self.sandboxes):
            self.cri("StopPodSandbox", {"pod_sandbox_id": sid}, check=False)
            self.cri("RemovePodSandbox", {"pod_sandbox_id": sid}, check=False)
            self.sandboxes.remove(sid)

    def stop(self):
        if self in _daemons:
            _daemons.remove(self)
        if self.proc is None:
            return
        # A fresh client: stop() may run from a signal handler that
        # interrupted a call on the old one.
        if self.client is not None and self.client.poll() is None:
            self.client.kill()
            self.client.wait()
        if self.proc.poll() is None and self.sandboxes:
            try:
                self.client = self._client()
                self.remove_pods()
                self.client.stdin.close()
                if not _wait_pid_exit(self.client, 5):
                    self.client.kill()
                    self.client.wait()
            except Exception as e:
                it.log("removing pods: %s" % e)
                self.client.kill()
                self.client.wait()
        if self.proc.poll() is None:
            self.proc.terminate()
            if not _wait_pid_exit(self.proc, 20):
                self.proc.kill()
                self.proc.wait()
        _kill_pids_mentioning(self.base)
        _kill_containers(self.containers + self.sandboxes)
        unmount_under(self.base)
        self.logf.close()

    def __str__(self):
        return "containerd (%s)" % self.base


def check_nothing_left(base):
    """Fails if a process or a mount still uses `base`."""
    procs, mounts = leftovers(base)
    it.check(not procs and not mounts, "left behind under %s: processes %r, "
             "mounts %r" % (base, procs[:5], mounts[:5]))
