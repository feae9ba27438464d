#!/usr/bin/env python3
"""What the process's cgroup allows: CPUs (the default workers) and memory.

Without settings.workers, lugger starts one worker per CPU it may use.

A pod's CPU limit is a CFS quota on its cgroup and a cpuset narrows the
CPUs it runs on; the node's CPU count is neither. Here the real kernel
decides: lugger runs --once over a small file (1) as it is, (2) pinned to
one CPU (sched_setaffinity, as taskset or a cpuset does), (3) in a cgroup
of its own with a CPU quota of half a CPU and (4) in a child cgroup
without a quota under such a parent (the limit of an ancestor applies).
Each run must say how many workers it started and why, and deliver every
line. Parts 3 and 4 need a writable cgroup hierarchy with the cpu
controller (v1 `cpu`, or v2 with `cpu` in cgroup.controllers); without
one they are skipped, said in the test's output.

Part 5: in a cgroup whose memory limit (100 MiB) is below memory_budget +
workers x script_memory + 24 MiB + workers x 4 MiB, lugger warns at start with the numbers
(and still runs); under a limit that holds them (1 GiB) it does not.
Skipped likewise without a writable memory controller.
"""
import os
import re
import shutil
import subprocess

import lugger_it as it

LINES = 500


def run(wd, name, log, preexec=None, cgroup_procs=None, want_err=None):
    """One --once run; returns (workers, by) from its start line, and its
    stderr in want_err (a list) when given."""
    out = wd.p(name + ".jsonl")
    conf = it.write_config(
        wd.p(name + ".lua"),
        {"state_dir": wd.p("state-" + name)},
        {"app": {"type": "file", "paths": [log], "read_from": "head",
                 "format": "line"}},
        {"main": {"sources": ["app"], "outputs": ["out"]}},
        {"out": {"type": "file", "path": out, "fsync": "never"}})
    cmd = [it.LUGGER, "run", "-c", conf, "--once"]
    if cgroup_procs is not None:
        # Joins the cgroup before exec, so lugger starts inside it.
        cmd = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', cgroup_procs] + cmd
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       env=it.asan_env(), preexec_fn=preexec, timeout=120)
    err = p.stderr.decode(errors="replace")
    it.check(p.returncode == 0, "%s: exit %d:\n%s" % (name, p.returncode,
                                                       err[-2000:]))
    m = re.search(r"running: .*?, (\d+) workers \(default: one per usable "
                  r"CPU, by ([a-zA-Z ]+)\)", err)
    it.check(m is not None, "%s: no start line with the default workers:\n%s"
             % (name, err[-2000:]))
    recs = it.read_jsonl(out)
    it.check(len(recs) == LINES, "%s: %d of %d lines delivered"
             % (name, len(recs), LINES))
    it.log("%s: %s workers, by %s" % (name, m.group(1), m.group(2)))
    if want_err is not None:
        want_err.append(err)
    return int(m.group(1)), m.group(2)


def cgroup_base(controller, v1_file):
    """A directory where a child cgroup limited by `controller` can be
    made, and the files' format ("v1" or "v2"); (None, why) when there is
    none."""
    v1 = "/sys/fs/cgroup/" + controller
    if os.path.exists(os.path.join(v1, v1_file)) and os.access(v1, os.W_OK):
        return v1, "v1"
    v2 = "/sys/fs/cgroup"
    ctl = os.path.join(v2, "cgroup.controllers")
    if os.path.exists(ctl) and controller in open(ctl).read().split() and \
            os.access(v2, os.W_OK):
        try:
            with open(os.path.join(v2, "cgroup.subtree_control"), "w") as f:
                f.write("+" + controller)
        except OSError as e:
            return None, "cannot enable the %s controller: %s" % (controller, e)
        return v2, "v2"
    return None, "no writable cgroup hierarchy with the %s controller" \
        % controller


def set_quota(path, kind, cpus):
    if kind == "v1":
        with open(os.path.join(path, "cpu.cfs_period_us"), "w") as f:
            f.write("100000")
        with open(os.path.join(path, "cpu.cfs_quota_us"), "w") as f:
            f.write(str(int(cpus * 100000)))
    else:
        with open(os.path.join(path, "cpu.max"), "w") as f:
            f.write("%d 100000" % int(cpus * 100000))


def main():
    it.require_binary()
    online = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0))
    with it.WorkDir("default-workers") as wd:
        log = wd.p("logs/app.log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "w") as f:
            for i in range(LINES):
                f.write("line %d\n" % i)

        n, by = run(wd, "plain", log)
        it.check(1 <= n <= usable, "plain: %d workers, %d usable CPUs"
                 % (n, usable))
        if by == "online CPUs":
            it.check(n == online, "plain: %d workers by online CPUs, %d "
                     "online" % (n, online))

        one = sorted(os.sched_getaffinity(0))[0]
        n, by = run(wd, "pinned", log,
                    preexec=lambda: os.sched_setaffinity(0, {one}))
        it.check(n == 1, "pinned to one CPU: %d workers" % n)
        if usable > 1:
            it.check(by == "CPU affinity", "pinned: decided by %r" % by)

        cpu_parts(wd, log, usable)
        memory_part(wd, log)


def cpu_parts(wd, log, usable):
    base, kind = cgroup_base("cpu", "cpu.cfs_quota_us")
    if base is None:
        it.log("SKIP parts 3 and 4 (cgroup quota): %s" % kind)
        return
    if usable < 2:
        it.log("SKIP parts 3 and 4: one usable CPU, a quota cannot lower it")
        return
    parent = os.path.join(base, "lugger-it-%d" % os.getpid())
    child = os.path.join(parent, "c")
    os.mkdir(parent)
    try:
        set_quota(parent, kind, 0.5)
        n, by = run(wd, "quota", log,
                    cgroup_procs=os.path.join(parent, "cgroup.procs"))
        it.check((n, by) == (1, "cgroup CPU quota"),
                 "half a CPU: %d workers by %s" % (n, by))
        os.mkdir(child)
        if kind == "v2":
            with open(os.path.join(parent, "cgroup.subtree_control"),
                      "w") as f:
                f.write("+cpu")
        n, by = run(wd, "quota-parent", log,
                    cgroup_procs=os.path.join(child, "cgroup.procs"))
        it.check((n, by) == (1, "cgroup CPU quota"),
                 "under a parent with half a CPU: %d workers by %s"
                 % (n, by))
    finally:
        for d in (child, parent):
            if os.path.isdir(d):
                os.rmdir(d)


def memory_part(wd, log):
    base, kind = cgroup_base("memory", "memory.limit_in_bytes")
    if base is None:
        it.log("SKIP part 5 (memory limit): %s" % kind)
        return
    cg = os.path.join(base, "lugger-it-mem-%d" % os.getpid())
    os.mkdir(cg)
    try:
        limit_file = "memory.limit_in_bytes" if kind == "v1" else "memory.max"
        for mib, warned in ((100, True), (1024, False)):
            with open(os.path.join(cg, limit_file), "w") as f:
                f.write(str(mib << 20))
            errs = []
            run(wd, "memory-%d" % mib, log,
                cgroup_procs=os.path.join(cg, "cgroup.procs"), want_err=errs)
            m = re.search(r"the cgroup's memory limit \((\d+) MiB\) is below "
                          r"what the config lets lugger use: memory_budget "
                          r"\((\d+) MiB\)", errs[0])
            if warned:
                it.check(m is not None and m.group(1) == "100",
                         "limit 100 MiB: no warning:\n%s" % errs[0][-2000:])
                it.log("memory-100: warned (budget %s MiB)" % m.group(2))
            else:
                it.check(m is None, "limit 1 GiB: warned: %s" % m.group(0)
                         if m else "")
    finally:
        os.rmdir(cg)


if __name__ == "__main__":
    it.main("test_cgroup_limits", main)
