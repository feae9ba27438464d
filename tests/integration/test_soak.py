#!/usr/bin/env python3
"""Soak: the failures users meet, all at once, in one run.

A Kubernetes node is laid out under a temp dir (the kubelet's
<pods>/<ns>_<pod>_<uid>/<container>/<restart>.log, CRI lines) with 20
containers writing at different rates; one of them is hot and its file is
sent (by the source's `select`) to a stateless pipeline. Into the lines go
CRI partial (`P`) chunks, lines over max_record_bytes, binary garbage
(inside CRI lines and as lines with no CRI header) and markers the script
acts on. While they write:

- rotations by rename (the kubelet's 0.log -> 0.log.<timestamp>), one of
  them while lugger is down; one copytruncate; a container restart (a new
  1.log); a pod deleted (its directory removed once it stopped writing);
- a Lua script routes `SIDE` lines to a second output (a file), drops
  `DROP` lines and raises an error on `BOOM` lines (-> dead-letter with
  the script's name and line); every record is stamped with the script's
  version, and SIGHUP reloads change the version (one reload is broken and
  must be refused);
- the Elasticsearch stand-in (es_server.py) answers whole requests 429 or
  500 at random, stalls some past lugger's timeout (then answers nothing
  useful and stores nothing), and rejects `REJECTME` items with
  mapper_parsing_exception (-> dead-letter with the reason);
- lugger is killed with SIGKILL twice and restarted.

At the end the server is healthy, and the test waits (on what arrived,
then on lugger's metrics) and checks:

- every written line is where its marker sends it, at least once: indexed
  (an item answered 201 or 409), in the side file, or in the dead-letter
  file with the backend's reason or the script error and its line;
  dropped lines nowhere; pieces of long lines flagged lugger.truncated;
- per container log and per destination, the first copies arrive in
  order, and the script versions they carry never go back (the
  copytruncated log too: its copy's unread lines before its new ones);
- copies beyond the first only as many as lugger says it read again after
  the kills (lugger_records_reread_total, from its logs);
- the last lugger's metrics add up: records read = delivered + rejected
  (elasticsearch) + dropped + failed (script), and the dead-letter output
  delivered what was rejected and failed;
- no sanitizer report from any of the lugger processes, and a clean exit
  at SIGTERM.

The random choices come from one seed, printed at the start:
LUGGER_SOAK_SEED=<n> repeats a run (default 1). LUGGER_SOAK_SECONDS sets
how long the containers write (default 24).
"""

import os
import random
import re
import shutil
import signal
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
import lugger_it as it  # noqa: E402
from es_server import EsServer  # noqa: E402

NODE = "soak-node"
MAX_RECORD = 8 * 1024
ES_TIMEOUT_S = 2.0
STALL_S = 3.0
LINE_RE = re.compile(r"^f(\d+) s(\d+) ")
KINDS = ("plain", "partial", "huge", "garbage", "raw", "drop", "side",
         "boom", "reject")
MARK = {"drop": " DROP", "side": " SIDE", "boom": " BOOM",
        "reject": " REJECTME"}
SCRIPT_TEXT = """-- soak script, version %(v)d
local V = %(v)d
function process(rec)
  local b = rec.body
  rec.v = V
  if b:find(" DROP", 1, true) then return false end
  if b:find(" SIDE", 1, true) then return "side" end
  if b:find(" BOOM", 1, true) then error("boom on a marked line") end
end
"""
BROKEN_SCRIPT = "function process(rec) rec.v = = 1 end\n"
SELECT = ('function(src) if src["k8s.pod.name"] == "hot-0" then '
          'return "hot" end return "main" end')


class ChaosEs(EsServer):
    """The stand-in with whole-request faults drawn from a seeded
    generator while `chaos` is on: 429, 500, and stalls (an answer after
    lugger's timeout, storing nothing)."""

    def __init__(self, seed, **kw):
        super().__init__(seed=seed, **kw)
        self.crng = random.Random(seed * 7 + 1)
        self.chaos = True
        self.p429, self.p500, self.pstall = 0.1, 0.08, 0.04
        self.chaos_counts = {"429": 0, "500": 0, "stall": 0}
        self.item_log = []
        self.reject_containing = "REJECTME"
        self.reject_type = "mapper_parsing_exception"

    def handle(self, req):
        parts = [p for p in req.path.split("/") if p]
        if parts and parts[-1] == "_bulk":
            with self.lock:
                r = self.crng.random() if self.chaos else 1.0
            hj = [("Content-Type", "application/json")]
            if r < self.p429:
                self.chaos_counts["429"] += 1
                return 429, hj, self.error_body(429, "chaos")
            r -= self.p429
            if r < self.p500:
                self.chaos_counts["500"] += 1
                return 500, hj, self.error_body(500, "chaos")
            r -= self.p500
            if r < self.pstall:
                self.chaos_counts["stall"] += 1
                time.sleep(STALL_S)
                return 503, hj, self.error_body(503, "stalled")
        return super().handle(req)


class Container:
    """One container's log: CRI lines appended at `rate` lines/s. A
    stream (`fid`) is the log and the files it is rotated into; a restart
    starts a new stream."""

    def __init__(self, soak, pod, name, rate, stream="stdout"):
        self.soak, self.pod, self.name = soak, pod, name
        self.rate, self.stream = rate, stream
        self.restart = 0
        self.fd = None
        self.due = 0.0
        self.active = True
        self.new_stream()

    def path(self):
        return os.path.join(self.pod.dir, self.name, "%d.log" % self.restart)

    def new_stream(self):
        if self.fd is not None:
            os.close(self.fd)
        self.fid = self.soak.new_fid(self)
        self.seq = 0
        os.makedirs(os.path.dirname(self.path()), exist_ok=True)
        self.fd = os.open(self.path(), os.O_WRONLY | os.O_APPEND |
                          os.O_CREAT, 0o644)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.active = False

    def write_due(self, dt):
        if not self.active:
            return
        self.due += self.rate * dt
        n = int(self.due)
        self.due -= n
        if n <= 0:
            return
        data = b"".join(self.soak.make_line(self) for _ in range(n))
        os.write(self.fd, data)


class Pod:
    def __init__(self, root, ns, name):
        self.ns, self.name = ns, name
        self.uid = str(uuid.uuid4())
        self.dir = os.path.join(root, "%s_%s_%s" % (ns, name, self.uid))
        os.makedirs(self.dir)


def cri_ts():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + \
        ".%09dZ" % int((t % 1) * 1e9)


class Soak:
    def __init__(self, wd, rng, seconds):
        self.wd, self.rng, self.seconds = wd, rng, seconds
        self.pods_dir = wd.mk("var", "log", "pods")
        self.streams = {}     # fid -> Container at the time
        self.lines = {}       # fid -> [kind per seq]
        self.stamp = 0
        self.events = []      # what happened, for the log

    def new_fid(self, c):
        fid = len(self.lines)
        self.lines[fid] = []
        self.streams[fid] = c
        return fid

    def pick_kind(self, c):
        r = self.rng.random()
        # Rarer kinds first; the rest are plain lines.
        for kind, p in (("partial", 0.03), ("huge", 0.002),
                        ("garbage", 0.004), ("raw", 0.003),
                        ("drop", 0.02), ("side", 0.03), ("boom", 0.003),
                        ("reject", 0.004)):
            if r < p:
                return kind
            r -= p
        return "plain"

    def garbage(self, n):
        # Any byte but LF, and no upper-case letters (they would spell
        # the markers by chance).
        return bytes(b for b in (self.rng.randrange(256) for _ in range(n))
                     if b != 10 and not 65 <= b <= 90)

    def make_line(self, c):
        kind = self.pick_kind(c)
        fid, seq = c.fid, c.seq
        c.seq += 1
        self.lines[fid].append(kind)
        head = "f%04d s%07d" % (fid, seq)
        pre = ("%s %s " % (cri_ts(), c.stream)).encode()
        if kind == "huge":
            n = self.rng.randint(2 * MAX_RECORD, 5 * MAX_RECORD)
            body = (head + " huge " + "abcdefghijklmnopqrstuvwxyz" *
                    (n // 26)).encode()
            return pre + b"F " + body + b"\n"
        if kind in ("garbage", "raw"):
            body = head.encode() + b" " + self.garbage(self.rng.randint(5, 80))
            return (pre + b"F " + body if kind == "garbage" else body) + b"\n"
        pad = "x" * self.rng.randint(10, 200)
        body = (head + MARK.get(kind, "") + " " + pad).encode()
        if kind == "partial":
            cuts = sorted(self.rng.sample(range(1, len(body)), 2))
            a, b, d = body[:cuts[0]], body[cuts[0]:cuts[1]], body[cuts[1]:]
            return (pre + b"P " + a + b"\n" + pre + b"P " + b + b"\n" +
                    pre + b"F " + d + b"\n")
        return pre + b"F " + body + b"\n"

    def rotate(self, c):
        """The kubelet's rotation: rename, and the runtime reopens."""
        self.stamp += 1
        old = c.path()
        os.rename(old, "%s.20261208-%06d" % (old, self.stamp))
        os.close(c.fd)
        c.fd = os.open(old, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def copytruncate(self, c):
        self.stamp += 1
        p = c.path()
        shutil.copyfile(p, "%s.20261208-%06d" % (p, self.stamp))
        os.truncate(p, 0)


def write_config(wd, soak, port, es, version):
    with open(wd.p("soak.lua"), "w") as f:
        f.write(SCRIPT_TEXT % {"v": version})
    settings = {"state_dir": wd.state, "workers": 2,
                "memory_budget": "16MiB", "checkpoint_interval": "200ms",
                "rescan_interval": "1s", "http": "127.0.0.1:%d" % port,
                "dead_letter": "dl", "shutdown_timeout": "10s"}
    source = {"type": "kubernetes", "pods_dir": soak.pods_dir,
              "docker_dir": "", "kube_api": "off", "read_from": "head",
              "max_record_bytes": MAX_RECORD, "select": "@SELECT@"}
    pipelines = {
        "main": {"sources": ["pods"], "scripts": ["soak.lua"],
                 "outputs": ["es"]},
        "hot": {"sources": ["pods"], "scripts": ["soak.lua"],
                "outputs": ["es"], "stateless": True}}
    outputs = {
        # One request in flight: a retried request goes again before any
        # newer one, so first copies arrive in file order.
        "es": {"type": "elasticsearch", "hosts": es.url, "index": "soak",
               "max_in_flight": 1, "timeout": "%ds" % ES_TIMEOUT_S,
               "max_batch_size": 500, "max_coalescing_delay": "100ms"},
        "side": {"type": "file", "path": wd.p("side.jsonl"),
                 "fsync": "never"},
        "dl": {"type": "file", "path": wd.p("dl.jsonl"), "fsync": "never"}}
    conf = {"settings": settings, "sources": {"pods": source},
            "pipelines": pipelines, "outputs": outputs}
    text = "return " + it.lua_value(conf) + "\n"
    text = text.replace('"@SELECT@"', SELECT)
    path = wd.p("lugger.lua")
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    return path


def set_script(wd, text):
    p = wd.p("soak.lua")
    with open(p + ".tmp", "w") as f:
        f.write(text)
    os.replace(p + ".tmp", p)


def parse_metrics(port):
    st, text = it.http_get(port, "/metrics")
    it.check(st == 200, "/metrics: %r %s" % (st, text[:200]))
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, v = line.rpartition(" ")
        name, _, labels = name_labels.partition("{")
        key = (name, labels.rstrip("}"))
        out[key] = float(v)
    return out


def msum(m, name, label=None):
    return sum(v for (n, lb), v in m.items()
               if n == name and (label is None or label in lb))


REREAD_RE = re.compile(r"(\d+) records read again after the restart")


def logged_rereads(lug):
    n = 0
    for r in lug.log_records():
        mm = REREAD_RE.search(str(r.get("msg", "")))
        if mm:
            n += int(mm.group(1))
    return n


class Arrivals:
    """What reached each destination, per stream, in arrival order."""

    def __init__(self):
        self.first = {}    # (dest, fid) -> [seq in first-arrival order]
        self.vers = {}     # (dest, fid) -> [version of each first copy]
        self.count = {}    # (dest, fid, seq) -> copies
        self.recs = {}     # (dest, fid, seq) -> first record
        self.pieces = 0    # continuation pieces of long lines
        self.times = {}    # (dest, fid) -> [(seq, copy number, time)]
        self.foreign = []

    def add(self, dest, body, rec, t=None):
        m = LINE_RE.match(body) if isinstance(body, str) else None
        if m is None:
            if rec.get("lugger.truncated") is True:
                self.pieces += 1
            elif len(self.foreign) < 20:
                self.foreign.append((dest, rec))
            return
        fid, seq = int(m.group(1)), int(m.group(2))
        k = (dest, fid, seq)
        c = self.count.get(k, 0)
        self.count[k] = c + 1
        self.times.setdefault((dest, fid), []).append((seq, c, t))
        if c == 0:
            self.first.setdefault((dest, fid), []).append(seq)
            self.vers.setdefault((dest, fid), []).append(rec.get("v"))
            self.recs[k] = rec

    def dups(self):
        return sum(c - 1 for c in self.count.values())


def collect(es, wd):
    a = Arrivals()
    with es.lock:
        log = list(es.item_log)
    for _id, status, src, t in log:
        if status in (200, 201, 409) and isinstance(src, dict):
            a.add("es", src.get("body"), src, t)
    for dest in ("side", "dl"):
        p = wd.p(dest + ".jsonl")
        if os.path.exists(p):
            for r in it.read_jsonl(p, allow_partial_tail=True):
                a.add(dest, r.get("body"), r)
    return a


DEST = {"plain": "es", "partial": "es", "huge": "es", "garbage": "es",
        "raw": "es", "side": "side", "boom": "dl", "reject": "dl",
        "drop": None}


def missing(soak, a, limit=10):
    out = []
    n = 0
    for fid, kinds in soak.lines.items():
        for seq, kind in enumerate(kinds):
            d = DEST[kind]
            if d is not None and (d, fid, seq) not in a.count:
                n += 1
                if len(out) < limit:
                    out.append((fid, seq, kind, d))
    return n, out


def arrival_runs(a, dest, fid, t0):
    """The arrivals of one stream at one destination as runs of
    consecutive sequence numbers: "first..last x<copy> @<s since start>"."""
    runs = []
    for seq, c, t in a.times.get((dest, fid), []):
        if runs and runs[-1][1] + 1 == seq and runs[-1][2] == c:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq, c, t])
    return "arrivals at %s of stream %d: %s" % (dest, fid, ", ".join(
        "%d..%d x%d @%s" % (r[0], r[1], r[2] + 1,
                            "%.1f" % (r[3] - t0) if r[3] else "?")
        for r in runs[:80]))


def stream_log(lugs, soak, fids):
    """lugger's log lines (info and up, script errors left out) about the
    directories of the streams `fids`: what it did with their files."""
    dirs = set(os.path.dirname(soak.streams[f].path()) for f in fids)
    out = []
    for k, x in enumerate(lugs):
        for r in x.log_records():
            msg = str(r.get("msg", ""))
            if r.get("level") != "debug" and "boom" not in msg and \
                    any(d in msg for d in dirs):
                out.append("lugger #%d %s %s: %s" % (
                    k + 1, r.get("time", ""), r.get("level"), msg))
    return "\n".join(out[:60])


def main():
    it.require_binary()
    seed = int(os.environ.get("LUGGER_SOAK_SEED", "1"))
    seconds = float(os.environ.get("LUGGER_SOAK_SECONDS", "24"))
    it.log("seed %d (LUGGER_SOAK_SEED=%d repeats this run), %.0f s of "
           "writing" % (seed, seed, seconds))
    rng = random.Random(seed)
    t_start = time.monotonic()
    with it.WorkDir("soak") as wd:
        soak = Soak(wd, rng, seconds)
        es = ChaosEs(seed)
        es.start()
        port = it.free_port()
        version = 1
        conf = write_config(wd, soak, port, es, version)

        # 20 containers in 9 pods; hot-0 is the busy one.
        root = soak.pods_dir
        conts = []
        hot = Pod(root, "shop", "hot-0")
        conts.append(Container(soak, hot, "app", 600))
        names = [("shop", "web-%d" % i, ("nginx", "sidecar")) for i in range(4)]
        names += [("batch", "job-%d" % i, ("main",)) for i in range(3)]
        names += [("default", "gone-0", ("app", "proxy"))]
        names += [("default", "api-0", ("api", "auth", "cache", "db", "q", "audit"))]
        pods = {"hot-0": hot}
        for ns, pn, cs in names:
            pod = Pod(root, ns, pn)
            pods[pn] = pod
            for cn in cs:
                rate = rng.choice((3, 10, 25, 60, 120))
                conts.append(Container(soak, pod, cn, rate,
                                       stream=rng.choice(("stdout",
                                                          "stdout",
                                                          "stderr"))))
        it.check(len(conts) == 20, "%d containers" % len(conts))
        by_name = {(c.pod.name, c.name): c for c in conts}
        gone = [c for c in conts if c.pod.name == "gone-0"]

        # The schedule, in seconds of writing.
        T = seconds
        k1 = rng.uniform(0.25, 0.35) * T
        k2 = rng.uniform(0.65, 0.75) * T
        plan = [
            (k1, "kill"), (k2, "kill"),
            (k1 + 0.2, "rotate", ("web-1", "nginx")),   # while lugger is down
            (rng.uniform(0.1, 0.9) * T, "rotate", ("hot-0", "app")),
            (rng.uniform(0.1, 0.9) * T, "rotate", ("hot-0", "app")),
            (rng.uniform(0.1, 0.9) * T, "rotate", ("api-0", "db")),
            (rng.uniform(0.1, 0.9) * T, "rotate", ("job-0", "main")),
            (rng.uniform(0.4, 0.6) * T, "copytruncate", ("web-2", "nginx")),
            (rng.uniform(0.2, 0.8) * T, "restart", ("api-0", "q")),
            (rng.uniform(0.4, 0.5) * T, "delete", "gone-0"),
            (0.9 * T, "chaos_off"),
        ]
        for i in range(5):
            plan.append((rng.uniform(0.05, 0.95) * T, "reload", i == 2))
        plan.sort(key=lambda e: e[0])
        it.log("plan: " + ", ".join("%.1f %s%s" % (
            e[0], e[1], " %s" % (e[2],) if len(e) > 2 else "") for e in plan))

        lugs = []
        lug = it.Lugger(conf, env={"NODE_NAME": NODE})
        lugs.append(lug)
        down_until = None
        gone_deleted_at = None
        broken_on_disk = False
        reloads = 0
        gone_state = {"t": 0.0, "done": False}

        def gone_read(now):
            # Polled at most twice a second: it reads what arrived.
            if gone_state["done"] or now - gone_state["t"] < 0.5:
                return gone_state["done"]
            gone_state["t"] = now
            a = collect(es, wd)
            gone_state["done"] = all(
                DEST[k] is None or (DEST[k], c.fid, i) in a.count
                for c in gone for i, k in enumerate(soak.lines[c.fid]))
            return gone_state["done"]
        tick = 0.05
        t0 = time.monotonic()
        last = t0
        pending = list(plan)
        try:
            while True:
                now = time.monotonic()
                t = now - t0
                if t >= T:
                    break
                for c in conts:
                    c.write_due(now - last)
                last = now
                if broken_on_disk and "reload failed" in lug.stderr_text():
                    # Refused, as it must be: the good script goes back.
                    set_script(wd, SCRIPT_TEXT % {"v": version})
                    broken_on_disk = False
                    it.log("the broken script was refused; version %d is "
                           "back" % version)
                if down_until is not None and now >= down_until:
                    lug = it.Lugger(conf, env={"NODE_NAME": NODE})
                    lugs.append(lug)
                    down_until = None
                deferred = []
                while pending and pending[0][0] <= t:
                    ev = pending.pop(0)
                    what = ev[1]
                    if what in ("reload", "kill"):
                        # Signals only to a lugger that runs (SIGHUP before
                        # its handlers are set would end it), and not while
                        # the broken script is on disk (a restart would
                        # fail on it).
                        if down_until is not None or broken_on_disk or \
                                not lug.has_started():
                            deferred.append(ev)
                            continue
                    if what == "kill" and gone_deleted_at is not None and \
                            not gone_read(now):
                        # The deleted pod's lines exist only in lugger's
                        # open files: a kill before they are read loses
                        # them, as it would on a node.
                        deferred.append(ev)
                        continue
                    soak.events.append("%.1f %s" % (t, what))
                    if what == "kill":
                        lug.check_running()
                        lug.kill9()
                        lug.check_sanitizers()
                        it.log("kill -9 lugger pid %d at %.1f s" % (lug.pid, t))
                        down_until = now + rng.uniform(0.5, 1.5)
                    elif what == "reload":
                        reloads += 1
                        broken = ev[2]
                        if broken:
                            set_script(wd, BROKEN_SCRIPT)
                        else:
                            version += 1
                            set_script(wd, SCRIPT_TEXT % {"v": version})
                        lug.proc.send_signal(signal.SIGHUP)
                        it.log("SIGHUP at %.1f s: %s" % (
                            t, "a broken script" if broken
                            else "script version %d" % version))
                        broken_on_disk = broken
                    elif what == "rotate":
                        soak.rotate(by_name[ev[2]])
                    elif what == "copytruncate":
                        soak.copytruncate(by_name[ev[2]])
                    elif what == "restart":
                        c = by_name[ev[2]]
                        c.restart += 1
                        c.new_stream()
                    elif what == "delete":
                        for c in gone:
                            c.close()
                        shutil.rmtree(pods["gone-0"].dir)
                        gone_deleted_at = now
                    elif what == "chaos_off":
                        with es.lock:
                            es.chaos = False
                pending[:0] = deferred
                time.sleep(max(0.0, tick - (time.monotonic() - now)))
            for c in conts:
                c.close()
            if down_until is not None:
                lug = it.Lugger(conf, env={"NODE_NAME": NODE})
                lugs.append(lug)
            with es.lock:
                es.chaos = False
            # A good script for the end (the last reload may have been the
            # broken one, which lugger refused).
            set_script(wd, SCRIPT_TEXT % {"v": version})
            total = sum(len(v) for v in soak.lines.values())
            it.log("wrote %d lines in %d streams; chaos %r; waiting for "
                   "delivery" % (total, len(soak.lines), es.chaos_counts))
            state = {}

            def delivered():
                a = collect(es, wd)
                n, ex = missing(soak, a)
                state["n"], state["ex"] = n, ex
                return n == 0

            it.wait_for(delivered, 120, "every line delivered",
                        interval=0.5, proc=lug,
                        detail=lambda: "%d lines missing, e.g. %s" % (
                            state.get("n", -1), state.get("ex")))
            t_delivered = time.monotonic()

            def settled():
                m = parse_metrics(port)
                read = msum(m, "lugger_records_read_total")
                done = (msum(m, "lugger_records_delivered_total",
                             'output="es"') +
                        msum(m, "lugger_records_delivered_total",
                             'output="side"') +
                        msum(m, "lugger_records_output_failed_total",
                             'output="es"') +
                        msum(m, "lugger_records_dropped_total") +
                        msum(m, "lugger_records_failed_total"))
                dl_in = (msum(m, "lugger_records_output_failed_total",
                              'output="es"') +
                         msum(m, "lugger_records_failed_total"))
                dl_out = msum(m, "lugger_records_delivered_total",
                              'output="dl"')
                state["m"] = (read, done, dl_in, dl_out,
                              msum(m, "lugger_batches_in_flight"))
                return read == done and dl_in == dl_out and \
                    msum(m, "lugger_batches_in_flight") == 0
            it.wait_for(settled, 30, "lugger's metrics to add up",
                        interval=0.25, proc=lug,
                        detail=lambda: "read %r, delivered+rejected+dropped+"
                        "failed %r, to dead-letter %r, dead-letter delivered "
                        "%r, batches in flight %r" % state.get("m", ()))
            final_m = state["m"]
            lug.stop(signal.SIGTERM, timeout=30)
        finally:
            for x in lugs:
                x.kill9()
            es.stop()
        for x in lugs:
            x.check_sanitizers()

        # ---- checks on what arrived
        a = collect(es, wd)
        it.read_jsonl(wd.p("side.jsonl"))   # complete lines only
        it.read_jsonl(wd.p("dl.jsonl"))
        n, ex = missing(soak, a)
        it.check(n == 0, "%d lines lost, e.g. %s (seed %d)" % (n, ex, seed))
        it.check(not a.foreign, "records that are no written line: %s" % (
            a.foreign[:3],))
        wrong = []
        for (dest, fid, seq), rec in a.recs.items():
            kind = soak.lines[fid][seq]
            if DEST[kind] != dest:
                wrong.append((fid, seq, kind, dest))
                continue
            if kind == "huge":
                if rec.get("lugger.truncated") is not True:
                    wrong.append((fid, seq, kind, "not flagged truncated"))
            err = rec.get("lugger.error", "")
            if kind == "boom" and not ("soak.lua:" in err and
                                       "boom on a marked line" in err):
                wrong.append((fid, seq, kind, err))
            if kind == "reject" and "mapper_parsing_exception" not in err:
                wrong.append((fid, seq, kind, err))
        it.check(not wrong, "%d lines at the wrong place or with the wrong "
                 "reason, e.g. %s (seed %d)" % (len(wrong), wrong[:5], seed))
        order = []
        for (dest, fid), seqs in a.first.items():
            if dest == "dl":
                continue   # two feeds (script errors, rejections)
            if seqs != sorted(seqs):
                i = next(i for i in range(1, len(seqs))
                         if seqs[i] < seqs[i - 1])
                order.append((dest, fid, seqs[i - 1], seqs[i]))
            vs = [v for v in a.vers[(dest, fid)]]
            if vs != sorted(vs):
                order.append((dest, fid, "versions", vs))
        if order:
            it.fail("first copies out of order (dest, stream, "
                 "seq before, seq after): %s (seed %d)\n%s" % (
                     order[:5], seed,
                     stream_log(lugs, soak, [o[1] for o in order]) + "\n" +
                     arrival_runs(a, order[0][0], order[0][1], t0)))
        versions = set(v for vs in a.vers.values() for v in vs)
        it.check(versions <= set(range(1, version + 1)),
                 "records stamped with versions %s, written 1..%d" % (
                     sorted(versions), version))
        # The soak did what it says (a deferred kill or reload waits for
        # the deleted pod's lines, or for lugger to run).
        it.check(len(lugs) - 1 == 2 and reloads >= 4,
                 "only %d kills and %d reloads happened while writing: %s" % (
                     len(lugs) - 1, reloads, soak.events))
        rereads = sum(logged_rereads(x) for x in lugs)
        dups = a.dups()
        it.check(dups <= rereads, "%d copies beyond the first, but lugger "
                 "read again only %d records it had sent before the kills "
                 "(seed %d)" % (dups, rereads, seed))
        took = time.monotonic() - t_start
        return ("seed %d: %d lines in %d streams, %d kill -9, %d reloads "
                "(versions %s), chaos %r; 0 lost, %d duplicates (<= %d read "
                "again), %d long-line pieces; metrics read %d = settled %d; "
                "delivered %.1f s after the writes; %.0f s in all" % (
                    seed, sum(len(v) for v in soak.lines.values()),
                    len(soak.lines), len(lugs) - 1, reloads, sorted(versions),
                    es.chaos_counts, dups, rereads, a.pieces, final_m[0],
                    final_m[1], t_delivered - t0 - T, took))


if __name__ == "__main__":
    it.main("test_soak", main)
