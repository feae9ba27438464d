#!/usr/bin/env python3
"""Node-scale measurements for scripts/bench --only-node (issue 15):
numbers, not pass/fail.

fairness: a fake node's pods_dir (CRI files, kube_api off) with one pod
  writing ~50 MB/s next to 20 pods writing 10 lines/s each, every quiet
  line stamped with the time it was written; lugger (default settings but
  for state_dir) writes a file on tmpfs, which this script follows. Prints
  the quiet pods' delivery latency (p50, p99, max) and what of the noisy
  pod was delivered, without a limit and with rate_limit = "5MiB".
scale: 1,000 pods x 3 containers (3,000 files, 5 lines each) under a
  pods_dir: time until every line is delivered, then idle CPU (% of one
  core over 10 s) and RSS, the time from a new pod's first line being
  written to its delivery (median of 5 pods), and peak RSS while all 3,000
  files get a line per second for 10 s.

Each case runs RUNS times (default 3; the fairness cases take turns), one
line per run, then the median and the range of each number over the runs:
on a shared machine single runs scatter.

usage: node_bench.py LUGGER WORKDIR [fairness|scale|all] [RUNS]
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid

CLK = os.sysconf("SC_CLK_TCK")


def stamp():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + \
        ".%09dZ" % int((t % 1) * 1e9)


def pod_dir(pods, ns, name, container):
    d = os.path.join(pods, "%s_%s_%s" % (ns, name, uuid.uuid4()), container)
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, "0.log")


def start(lugger, work, name, pods, extra=""):
    cfg = os.path.join(work, name + ".lua")
    out = os.path.join(work, name + ".jsonl")
    with open(cfg, "w") as f:
        f.write("""return {
  settings = { state_dir = %r },
  sources = { pods = { type = "kubernetes", pods_dir = %r, docker_dir = "",
                       kube_api = "off", read_from = "head" %s } },
  pipelines = { main = { sources = { "pods" }, outputs = { "out" } } },
  outputs = { out = { type = "file", path = %r, fsync = "never" } },
}
""" % (os.path.join(work, "state-" + name), pods, extra, out))
    err = open(os.path.join(work, name + ".stderr"), "wb")
    p = subprocess.Popen([lugger, "run", "-c", cfg], stdout=subprocess.DEVNULL,
                         stderr=err, env=dict(os.environ, NODE_NAME="bench"))
    return p, out


class Follower(threading.Thread):
    """Reads the output as it grows; records when each body arrived."""

    def __init__(self, path, want=None):
        super().__init__(daemon=True)
        self.path, self.want = path, want
        self.arrived = {}
        self.count = 0
        self.bytes = 0
        self.halt = threading.Event()

    def run(self):
        while not os.path.exists(self.path) and not self.halt.is_set():
            time.sleep(0.01)
        buf = b""
        with open(self.path, "rb") as f:
            while not self.halt.is_set():
                chunk = f.read(1 << 20)
                if not chunk:
                    time.sleep(0.005)
                    continue
                now = time.time()
                self.bytes += len(chunk)
                lines = (buf + chunk).split(b"\n")
                buf = lines.pop()
                for raw in lines:
                    self.count += 1
                    if self.want is not None and self.want not in raw:
                        continue
                    body = json.loads(raw)["body"]
                    self.arrived.setdefault(body, now)


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / CLK


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def stop(p):
    p.terminate()
    p.wait(timeout=60)


def fairness(lugger, work, limit, run=0):
    name = "fair-%s-%d" % (limit or "none", run)
    pods = os.path.join(work, name + "-pods")
    noisy = pod_dir(pods, "load", "noisy", "app")
    quiet = [pod_dir(pods, "web", "quiet-%d" % i, "app") for i in range(20)]
    p, out = start(lugger, work, name, pods,
                   ', rate_limit = "%s"' % limit if limit else "")
    fol = Follower(out, want=b'"q')
    fol.start()
    time.sleep(1.0)
    halt = threading.Event()
    sent = {}
    written = [0]

    def noisy_writer():
        line = ("%s stdout F %s\n" % (stamp(), "n" * 200)).encode()
        chunk = line * (1048576 // len(line))
        with open(noisy, "ab") as f:
            t0 = time.monotonic()
            while not halt.is_set():
                f.write(chunk)
                f.flush()
                written[0] += len(chunk)
                # ~50 MB/s: 50 chunks of 1 MiB per second.
                ahead = written[0] / 50e6 - (time.monotonic() - t0)
                if ahead > 0:
                    halt.wait(ahead)

    def quiet_writer():
        fds = [open(q, "a") for q in quiet]
        i = 0
        while not halt.is_set():
            for k, f in enumerate(fds):
                body = "q%02d-%06d" % (k, i)
                sent[body] = time.time()
                f.write("%s stdout F %s\n" % (stamp(), body))
                f.flush()
            i += 1
            halt.wait(0.1)  # 10 lines/s per pod
        for f in fds:
            f.close()

    threads = [threading.Thread(target=noisy_writer, daemon=True),
               threading.Thread(target=quiet_writer, daemon=True)]
    for t in threads:
        t.start()
    time.sleep(10.0)
    halt.set()
    for t in threads:
        t.join()
    out_mb = fol.bytes / 1e6
    deadline = time.time() + 120
    while time.time() < deadline and len(fol.arrived) < len(sent):
        time.sleep(0.1)
    stop(p)
    fol.halt.set()
    fol.join()
    # ~1 GB on tmpfs per run: gone before the next one.
    shutil.rmtree(pods, ignore_errors=True)
    os.unlink(out)
    lat = sorted(fol.arrived[b] - t for b, t in sent.items()
                 if b in fol.arrived)
    q = lambda x: lat[min(len(lat) - 1, int(len(lat) * x))] if lat else float("nan")
    r = {"delivered": len(lat), "sent": len(sent), "p50": q(0.5),
         "p99": q(0.99), "max": lat[-1] if lat else float("nan"),
         "noisy_mb": written[0] / 1e6, "out_mb": out_mb}
    print("%-22s %5d/%-5d %8.3f %8.3f %8.3f %10.0f %12.0f" % (
        "rate_limit " + (limit or "none"), r["delivered"], r["sent"],
        r["p50"], r["p99"], r["max"], r["noisy_mb"], r["out_mb"]),
        flush=True)
    return r


def scale(lugger, work, run=0):
    pods = os.path.join(work, "scale-pods-%d" % run)
    files = []
    for i in range(1000):
        base = os.path.join(pods, "ns%d_pod-%04d_%s" % (i % 10, i, uuid.uuid4()))
        for c in ("app", "sidecar", "proxy"):
            os.makedirs(os.path.join(base, c))
            path = os.path.join(base, c, "0.log")
            with open(path, "w") as f:
                for k in range(5):
                    f.write("%s stdout F s-%04d-%s-%d\n" % (stamp(), i, c, k))
            files.append(path)
    t0 = time.monotonic()
    p, out = start(lugger, work, "scale-%d" % run, pods)
    fol = Follower(out)
    fol.start()
    while fol.count < 15000 and time.monotonic() - t0 < 300:
        time.sleep(0.05)
    t_all = time.monotonic() - t0
    time.sleep(2.0)
    c0, w0 = cpu_s(p.pid), time.monotonic()
    time.sleep(10.0)
    idle_cpu = (cpu_s(p.pid) - c0) / (time.monotonic() - w0) * 100
    idle_rss = rss_mib(p.pid)
    firsts = []
    for k in range(5):
        path = pod_dir(pods, "new", "pod-%d" % k, "app")
        body = "first-%d" % k
        t1 = time.time()
        with open(path, "w") as f:
            f.write("%s stdout F %s\n" % (stamp(), body))
        while body not in fol.arrived and time.time() - t1 < 30:
            time.sleep(0.005)
        firsts.append(fol.arrived.get(body, float("nan")) - t1)
        time.sleep(0.5)
    peak = 0.0
    fds = [open(f, "a") for f in files]
    t2 = time.monotonic()
    n = 0
    while time.monotonic() - t2 < 10.0:
        for i, f in enumerate(fds):
            f.write("%s stdout F w-%d-%d\n" % (stamp(), i, n))
            f.flush()
        n += 1
        peak = max(peak, rss_mib(p.pid))
        time.sleep(max(0.0, n - (time.monotonic() - t2)))
    for f in fds:
        f.close()
    busy_cpu = cpu_s(p.pid)
    stop(p)
    fol.halt.set()
    r = {"all_s": t_all, "idle_cpu": idle_cpu, "idle_rss": idle_rss,
         "first": statistics.median(firsts), "first_max": max(firsts),
         "peak_rss": peak}
    print("3,000 files (1,000 pods x 3): all 15,000 lines in %.1f s; idle: "
          "%.2f%% of a core, %.1f MiB RSS; new pod's first line delivered "
          "after %.3f s (median of 5, max %.3f s); 3,000 lines/s for 10 s: "
          "peak RSS %.1f MiB" % (r["all_s"], r["idle_cpu"], r["idle_rss"],
                                 r["first"], r["first_max"], r["peak_rss"]),
          flush=True)
    return r


def spread(runs, key, fmt="%.3f"):
    """median [least-largest] of one number over the runs."""
    v = sorted(r[key] for r in runs)
    return (fmt + " [" + fmt + "-" + fmt + "]") % (
        statistics.median(v), v[0], v[-1])


def main():
    lugger, work = sys.argv[1], sys.argv[2]
    what = sys.argv[3] if len(sys.argv) > 3 else "all"
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    if what in ("fairness", "all"):
        print("\nfairness: one pod writing ~50 MB/s next to 20 pods writing "
              "10 lines/s each, 10 s; %d runs, taking turns" % runs)
        print("%-22s %11s %8s %8s %8s %10s %12s" % (
            "", "quiet lines", "p50 s", "p99 s", "max s", "noisy MB",
            "output MB"))
        res = {None: [], "5MiB": []}
        for k in range(runs):
            for limit in (None, "5MiB"):
                res[limit].append(fairness(lugger, work, limit, k))
        print("median [least-largest] of %d runs:" % runs)
        for limit, rs in res.items():
            print("  rate_limit %-5s quiet p50 %s s, p99 %s s, max %s s; "
                  "output when the writers stopped %s MB" % (
                      limit or "none", spread(rs, "p50"), spread(rs, "p99"),
                      spread(rs, "max"), spread(rs, "out_mb", "%.0f")))
    if what in ("scale", "all"):
        print("\nscale: %d runs" % runs)
        rs = [scale(lugger, work, k) for k in range(runs)]
        print("median [least-largest] of %d runs: all lines %s s; idle CPU "
              "%s %% of a core, idle RSS %s MiB; new pod's first line %s s "
              "(max of any run %.3f s); peak RSS while all write %s MiB" % (
                  runs, spread(rs, "all_s", "%.1f"),
                  spread(rs, "idle_cpu", "%.2f"), spread(rs, "idle_rss", "%.1f"),
                  spread(rs, "first"), max(r["first_max"] for r in rs),
                  spread(rs, "peak_rss", "%.1f")))


if __name__ == "__main__":
    main()
