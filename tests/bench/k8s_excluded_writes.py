#!/usr/bin/env python3
"""What writes to excluded pods cost lugger: 20 pods annotated
lugger.io/exclude = "true" written to at a high rate while one included
pod is read (kubernetes source, stand-in API server). With --waiting, the
20 pods are not in the API and their files wait for it instead.

usage: LUGGER=build/lugger tests/bench/k8s_excluded_writes.py
           [--seconds S] [--rate WRITES_PER_S] [--runs N]
           [--valgrind OUT.callgrind] [--no-noise] [--waiting]

Prints, per run, the writes made, the records delivered and lugger's CPU
seconds (user + system, from /proc) over the writing phase; with
--valgrind, runs lugger once under callgrind (a fixed number of writes,
paced) and prints its total instruction count instead. Not a test: a
measurement for A/B comparisons of two binaries.
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import lugger_it as it  # noqa: E402
from k8s_api_server import FakeApiServer, make_pod  # noqa: E402
from k8s_node import Node, cri_line  # noqa: E402

NODE = "node-a"
N_EXCLUDED = 20


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(seconds, rate, valgrind=None, noise=True, waiting=False):
    with it.WorkDir("bench-k8s-excl") as wd:
        node = Node(wd.path)
        api = FakeApiServer()
        inc = node.pod("shop", "inc-1")
        api.add_pod(make_pod("shop", inc.name, inc.uid, NODE))
        exc = []
        for i in range(N_EXCLUDED):
            p = node.pod("noisy", "exc-%d" % i)
            if not waiting:  # else not in the API: they wait for it
                api.add_pod(make_pod("noisy", p.name, p.uid, NODE,
                                     annotations={
                                         "lugger.io/exclude": "true"}))
            exc.append(p)
        api.start()
        out = wd.p("out.jsonl")
        cfg = it.write_config(
            wd.p("lugger.lua"),
            {"state_dir": wd.state, "workers": 1},
            {"pods": {"type": "kubernetes", "pods_dir": node.pods,
                      "docker_dir": "", "kube_api": api.url,
                      "node_name": NODE, "read_from": "head",
                      "api_wait": "600s",
                      "exclude": {"namespaces": ["kube-system"]}}},
            {"main": {"sources": ["pods"], "outputs": ["out"]}},
            {"out": {"type": "file", "path": out, "fsync": "never"}})
        env = None
        if valgrind:
            wrapper = wd.p("lugger-vg")
            with open(wrapper, "w") as f:
                f.write("#!/bin/sh\nexec valgrind --tool=callgrind "
                        "--callgrind-out-file=%s %s \"$@\"\n" % (
                            valgrind, os.path.abspath(it.LUGGER)))
            os.chmod(wrapper, 0o755)
            saved, it.LUGGER = it.LUGGER, wrapper
        fds = [os.open(p.log("app"), os.O_WRONLY | os.O_APPEND) for p in exc]
        ifd = os.open(inc.log("app"), os.O_WRONLY | os.O_APPEND)
        recs = []
        fo = it.JsonlFollower(out, on_record=recs.append)
        try:
            with it.Lugger(cfg, env=env) as lg:
                lg.wait_started(120)
                # Every pod known and decided before the clock starts.
                os.write(ifd, cri_line("inc start").encode())
                it.wait_for(lambda: fo.poll() >= 0 and recs, 120,
                            "the first record", proc=lg)
                # Children of the wrapper: valgrind execs lugger (same pid).
                c0 = cpu_s(lg.pid)
                t0 = time.monotonic()
                writes = inc_lines = 0
                period = len(fds) / float(rate)
                n = 0
                while time.monotonic() - t0 < seconds:
                    line = cri_line("noise %d" % n).encode()
                    for fd in fds if noise else []:
                        os.write(fd, line)
                        writes += 1
                    os.write(ifd, cri_line("inc %d" % n).encode())
                    inc_lines += 1
                    n += 1
                    ahead = t0 + n * period - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                last = "inc %d" % (n - 1)
                it.wait_for(lambda: fo.poll() >= 0 and
                            any(r["body"] == last for r in recs), 600,
                            "the last included line", proc=lg)
                c1 = cpu_s(lg.pid)
                lg.stop(timeout=300)
        finally:
            for fd in fds + [ifd]:
                os.close(fd)
            if valgrind:
                it.LUGGER = saved
            api.stop()
        it.check(not any(r["body"].startswith("noise") for r in recs),
                 "an excluded (or waiting) pod's line was delivered")
        return writes, inc_lines, len(recs), c1 - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=int, default=20000,
                    help="writes per second to the excluded pods, in all")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--valgrind")
    ap.add_argument("--no-noise", action="store_true",
                    help="the same run without the writes to excluded pods "
                    "(what the rest costs)")
    ap.add_argument("--waiting", action="store_true",
                    help="the 20 pods are not in the API: their files wait "
                    "for it (api_wait) instead of being excluded")
    a = ap.parse_args()
    if a.valgrind:
        w, il, nrec, _ = one_run(a.seconds, a.rate, a.valgrind,
                                 noise=not a.no_noise, waiting=a.waiting)
        out = subprocess.run(["callgrind_annotate", a.valgrind],
                             capture_output=True, text=True).stdout
        total = [ln for ln in out.splitlines() if "PROGRAM TOTALS" in ln]
        print("callgrind: %d writes to excluded pods, %d included lines "
              "(%d records): %s" % (w, il, nrec, total[0] if total else "?"))
        return
    best = None
    for i in range(a.runs):
        w, il, nrec, cpu = one_run(a.seconds, a.rate, noise=not a.no_noise,
                                   waiting=a.waiting)
        print("run %d: %d writes to %d excluded pods, %d included lines "
              "(%d records), lugger CPU %.3f s (%.1f us per excluded write)"
              % (i + 1, w, N_EXCLUDED, il, nrec, cpu, cpu / max(w, 1) * 1e6))
        best = cpu if best is None else min(best, cpu)
    print("least CPU: %.3f s" % best)


if __name__ == "__main__":
    main()
