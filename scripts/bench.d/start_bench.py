#!/usr/bin/env python3
"""Start-up with many log files, for scripts/bench --only-start: numbers,
not pass/fail.

For N in 5,000 and 20,000: N log files of ~200 bytes in one directory on
tmpfs, one file source over them (read_from head), a file output.
"restart": the files are read once (their checkpoints saved), then each
run is `lugger run --once` with that state: every file is opened at its
checkpoint, nothing new is read, and lugger exits; what is measured is
start-up and shutdown. "new": the same with a fresh state directory each
run, so every file is read from its start (N records). Each case runs
RUNS times; printed: the least wall time (exec to exit) and the least CPU
(user + sys) of the runs, which on a shared machine only grow with noise.
With BASELINE (an older lugger binary), each run of this binary is
followed by one of the baseline, and both are printed.

usage: start_bench.py LUGGER WORKDIR [RUNS] [BASELINE]
"""

import os
import shutil
import subprocess
import sys
import time


def make_files(logs, n):
    os.makedirs(logs)
    for i in range(n):
        text, j = "", 0
        while len(text) < 200:
            text += "file %d line %d\n" % (i, j)
            j += 1
        with open(os.path.join(logs, "f%06d.log" % i), "w") as f:
            f.write(text)


def config(path, state, logs, out):
    with open(path, "w") as f:
        f.write("""return {
  settings = { state_dir = %r, workers = 1, memory_budget = "64MiB" },
  sources = { app = { type = "file", paths = { %r }, read_from = "head",
                      format = "line" } },
  pipelines = { main = { sources = { "app" }, outputs = { "out" } } },
  outputs = { out = { type = "file", path = %r, fsync = "never" } },
}
""" % (state, os.path.join(logs, "*.log"), out))


def run_once(lugger, conf):
    """(wall s, CPU s) of one `run --once`; fails on a non-zero exit."""
    t = time.monotonic()
    p = subprocess.Popen([lugger, "run", "-c", conf, "--once"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("%s run --once exited %d" % (lugger, status))
    return wall, ru.ru_utime + ru.ru_stime


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    lugger, work = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    bins = [("this", lugger)]
    if len(sys.argv) > 4:
        bins.append(("baseline", sys.argv[4]))
    for n in (5000, 20000):
        d = os.path.join(work, "start-%d" % n)
        logs = os.path.join(d, "logs")
        make_files(logs, n)
        for case in ("restart", "new"):
            best = {name: [1e9, 1e9] for name, _ in bins}
            for name, binary in bins:
                state = os.path.join(d, "state-" + name)
                conf = os.path.join(d, "lugger-%s.lua" % name)
                config(conf, state, logs, os.path.join(d, "out-%s.jsonl" % name))
                if case == "restart":
                    shutil.rmtree(state, ignore_errors=True)
                    run_once(binary, conf)  # reads every file; checkpoints saved
            for _ in range(runs):
                for name, binary in bins:
                    state = os.path.join(d, "state-" + name)
                    conf = os.path.join(d, "lugger-%s.lua" % name)
                    if case == "new":
                        shutil.rmtree(state, ignore_errors=True)
                    wall, cpu = run_once(binary, conf)
                    best[name][0] = min(best[name][0], wall)
                    best[name][1] = min(best[name][1], cpu)
            for name, _ in bins:
                print("start %-7s %6d files  %-8s  wall %6.2f s  CPU %6.2f s  "
                      "(least of %d)" % (case, n, name, best[name][0],
                                         best[name][1], runs), flush=True)
        shutil.rmtree(d)


if __name__ == "__main__":
    main()
