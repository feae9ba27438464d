#!/usr/bin/env python3
"""max_rotated_open on a kubernetes source bounds the rotated files held
open per container, and what it costs is counted.

A fake node's pods_dir (kube_api off): one container's log is rotated the
kubelet's way (rename to 0.log.<stamp>, new 0.log) 4 times, 20 lines in
each file; max_rotated_open = 1, rescan_interval 500 ms. Checks:
- every line is delivered once;
- at most 1 rotated file of the container stays open (counted from
  /proc/<pid>/fd), and lugger_source_rotated_closed_total counts the
  others;
- a late line appended to the oldest rotated file (a writer that had not
  reopened its log yet) is still delivered: the file is reopened by
  identity, and lugger_source_reopened_total counts it.
"""

import os
import time

import k8s_node
import lugger_it as it


def open_rotated(pid, container_dir):
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith(container_dir) and ".log." in target:
            n += 1
    return n


def main():
    it.require_binary()
    with it.WorkDir("rotated-open") as wd:
        node = k8s_node.Node(wd.mk("node"))
        pod = node.pod("default", "web")
        port = it.free_port()
        out = wd.p("out.jsonl")
        conf = it.write_config(
            wd.p("lugger.lua"),
            {"state_dir": wd.state, "http": "127.0.0.1:%d" % port,
             "rescan_interval": "500ms"},
            {"pods": {"type": "kubernetes", "pods_dir": node.pods,
                      "docker_dir": node.docker, "kube_api": "off",
                      "read_from": "head", "max_rotated_open": 1}},
            {"main": {"sources": ["pods"], "outputs": ["out"]}},
            {"out": {"type": "file", "path": out, "fsync": "never"}})
        lg = it.Lugger(conf, env={"NODE_NAME": "node-a"})
        lg.wait_started()
        want = []
        rotated = []
        for r in range(4):
            body = ["r%d-%02d" % (r, i) for i in range(20)]
            pod.write("app", body)
            want += body
            time.sleep(0.3)
            rotated.append(pod.rotate("app", stamp="20240501-12000%d" % r))
        pod.write("app", ["live-0"])
        want.append("live-0")

        def bodies():
            return [r["body"] for r in it.read_jsonl(out, allow_partial_tail=True)] \
                if os.path.exists(out) else []
        it.wait_for(lambda: set(want) <= set(bodies()), 30,
                    "every line delivered", proc=lg)
        cdir = os.path.dirname(pod.log("app"))
        it.wait_for(lambda: open_rotated(lg.pid, cdir) <= 1, 15,
                    "at most 1 rotated file open", proc=lg,
                    detail=lambda: "%d open" % open_rotated(lg.pid, cdir))
        closed = it.metric_sum(port, "lugger_source_rotated_closed_total")
        it.check(closed and closed >= 3,
                 "lugger_source_rotated_closed_total = %r" % closed)
        with open(rotated[0], "a") as f:
            f.write(k8s_node.cri_line("late-0"))
        it.wait_for(lambda: "late-0" in bodies(), 15,
                    "a late line in a closed rotated file delivered", proc=lg)
        reopened = it.metric_sum(port, "lugger_source_reopened_total")
        it.check(reopened and reopened >= 1,
                 "lugger_source_reopened_total = %r" % reopened)
        lg.stop()
        got = bodies()
        it.check(sorted(got) == sorted(want + ["late-0"]),
                 "lines lost or repeated: %d of %d" % (len(got),
                                                        len(want) + 1))
        return ("4 rotations, max_rotated_open = 1: %d rotated files closed, "
                "at most 1 open, a late line in a closed one delivered "
                "(%d reopened), every line once" % (closed, reopened))


if __name__ == "__main__":
    it.main("test_rotated_open", main)
