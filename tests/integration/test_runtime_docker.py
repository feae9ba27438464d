#!/usr/bin/env python3
"""The Docker engine writes json-file logs; lugger's `kubernetes` source
reads them from docker_dir with pod metadata from config.v2.json labels.

One dockerd (Debian docker.io) is started on a private socket with vfs
storage and no network, and a busybox-static root filesystem is imported
as an image. Then, while lugger runs:

1. Two containers labelled like the kubelet's dockershim does
   (io.kubernetes.pod.name/.namespace/.uid, io.kubernetes.container.name)
   run the workload of runtime/rt.py. Docker writes one JSON object per
   line, cutting lines at 16 KiB into pieces without a trailing "\\n", and
   output without a trailing newline as a last piece without one. Checked
   record by record, per container and stream: the body is exactly what
   the container printed, in order; log.iostream; the time is the `time`
   of the piece the record starts at (read by an independent parser) and
   lies within the run; k8s.* metadata from the labels, container.id,
   k8s.node.name, log.file.path.
2. Size-based rotation: a container with `--log-opt max-size=200k
   --log-opt max-file=3` prints 8,000 numbered lines; Docker renames
   `<id>-json.log` to `.1` (and `.1` to `.2`, deleting the oldest) while
   lugger reads. Every line arrives exactly once and in order (the
   renamed file is drained before the new one, and with workers = 2 the
   new file goes to the worker of the old one), and the test counts the
   rotations it saw happen. The last line arrives within
   ROT_DELAY_BOUND_S of the container's exit: lugger reads the new file as
   soon as Docker writes to it, instead of waiting for the renamed one to
   be idle for a second at every rotation.
The source has multiline = "java" (so a line is held until the next one
shows it is not continued, and the renamed file's last line is emitted
when it is drained): the pod containers' Java trace is one record, every
other line a record of its own.
Nothing of dockerd (nor its containerd, shims or mounts) is left after.
"""

import os
import signal
import threading
import time
import uuid

import lugger_it as it
from runtime import rt

NODE = "node-docker"
ROT_LINES = 8000
ROT_PAD = "x" * 60
# Seconds from the rotation container's exit to its last record in the
# output (the last line waits for the multiline timeout, 1 s); 2 cores,
# ASan, other tests running.
ROT_DELAY_BOUND_S = 3.0


class Rotations(threading.Thread):
    """Counts the distinct inodes a path has had (each rotation makes a new
    file at the path), polling every 5 ms until halted."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.inodes, self.halted = path, set(), False

    def run(self):
        while not self.halted:
            try:
                self.inodes.add(os.stat(self.path).st_ino)
            except OSError:
                pass
            time.sleep(0.005)


def rot_line(i):
    return "rot %d %s" % (i, ROT_PAD)


def run():
    it.require_binary()
    with rt.work_dir("runtime-docker") as wd:
        base = rt.short_dir("lgdk-")
        docker = rt.DockerDaemon(base)
        cdir = os.path.join(docker.data, "containers")
        out = wd.p("out.jsonl")
        try:
            docker.start()
            rootfs = rt.make_rootfs(wd.p("rootfs"))
            tar = rt.rootfs_tar(rootfs, wd.p("rootfs.tar"))
            docker.cli("import", tar, "lugger-it/busybox:local")
            os.makedirs(cdir, exist_ok=True)
            conf = it.write_config(
                wd.p("lugger.lua"),
                {"state_dir": wd.state, "workers": 2,
                 "checkpoint_interval": "200ms", "rescan_interval": "1s"},
                {"pods": {"type": "kubernetes", "pods_dir": "",
                          "docker_dir": cdir, "kube_api": "off",
                          "read_from": "head", "flush_timeout": "2s",
                          "multiline": "java"}},
                {"main": {"sources": ["pods"], "outputs": ["out"]}},
                {"out": {"type": "file", "path": out, "fsync": "never"}})
            lug = it.Lugger(conf, env={"NODE_NAME": NODE})
            try:
                # 1. The workload in two pod containers.
                pods = [("shop", "web-1", str(uuid.uuid4()), "nginx"),
                        ("default", "api-7", str(uuid.uuid4()), "app")]
                t_min = rt.now_ns()
                t0 = time.monotonic()
                cons = []
                for ns, pod, uid, cname in pods:
                    load = rt.Workload("%s-%s" % (pod, cname), plain=300)
                    cid = docker.cli(
                        "run", "-d", "--network", "none",
                        "--log-driver", "json-file",
                        "--label", "io.kubernetes.pod.namespace=" + ns,
                        "--label", "io.kubernetes.pod.name=" + pod,
                        "--label", "io.kubernetes.pod.uid=" + uid,
                        "--label", "io.kubernetes.container.name=" + cname,
                        "lugger-it/busybox:local", "sh", "-c", load.script
                    ).stdout.decode().strip()
                    cons.append((ns, pod, uid, cname, cid, load))
                for c in cons:
                    code = docker.cli("wait", c[4]).stdout.decode().strip()
                    it.check(code == "0", "container %s exited %s" % (
                        c[4][:12], code))
                run_s = time.monotonic() - t0
                t_max = rt.now_ns()
                want = sum(c[5].total(c[5].expected_multiline())
                           for c in cons)
                it.wait_for(lambda: rt.count_lines(out) >= want, 30,
                            "%d records from the docker logs" % want,
                            proc=lug,
                            detail=lambda: "%d so far" % rt.count_lines(out))
                deliver_s = time.monotonic() - t0
                it.log("workload: containers ran %.2f s, delivered after "
                       "%.2f s" % (run_s, deliver_s))
                # The files as Docker wrote them, read now: stopping the
                # daemon removes the containers with their logs.
                refs = {}
                for c in cons:
                    counts = {}
                    path = docker.log_path(c[4])
                    refs[c[4]] = (rt.read_docker_file(path, counts), counts,
                                  os.path.getsize(path))

                # 2. Rotation by size while lugger reads.
                script = ('i=1; while [ $i -le %d ]; do '
                          'echo "rot $i %s"; '
                          '[ $((i %% 100)) -eq 0 ] && usleep 25000; '
                          'i=$((i+1)); done' % (ROT_LINES, ROT_PAD))
                rid = docker.cli(
                    "create", "--network", "none",
                    "--log-driver", "json-file",
                    "--log-opt", "max-size=200k", "--log-opt", "max-file=3",
                    "lugger-it/busybox:local", "sh", "-c", script
                ).stdout.decode().strip()
                rlog = docker.log_path(rid)
                watch = Rotations(rlog)
                watch.start()
                t1 = time.monotonic()
                docker.cli("start", rid)
                code = docker.cli("wait", rid).stdout.decode().strip()
                it.check(code == "0", "rotation container exited %s" % code)
                rot_s = time.monotonic() - t1
                total = want + ROT_LINES
                it.wait_for(lambda: rt.count_lines(out) >= total, 90,
                            "%d records in all" % total, proc=lug,
                            detail=lambda: "%d so far" % rt.count_lines(out))
                rot_deliver_s = time.monotonic() - t1
                rot_delay_s = rot_deliver_s - rot_s
                it.log("rotation: container ran %.2f s, all delivered "
                       "%.2f s after its exit" % (rot_s, rot_delay_s))
                # Which file each line is in, for the files Docker kept.
                file_of = {}
                for sfx in ("", ".1", ".2"):
                    if os.path.exists(rlog + sfx):
                        for _, b in rt.read_docker_file(rlog + sfx)["stdout"]:
                            file_of[int(b.split()[1])] = rlog + sfx
                watch.halted = True
                watch.join()
                time.sleep(0.5)  # a duplicate would show now
                lug.stop(signal.SIGTERM)
            finally:
                lug.kill9()
        finally:
            docker.stop()

        by = rt.records_by_path(out)
        checked = pieces = nlines = nbytes = traces = 0
        for ns, pod, uid, cname, cid, load in cons:
            path = docker.log_path(cid)
            ref, counts, size = refs[cid]
            it.check(counts.get("partial", 0) >= 10, "%s: only %d pieces "
                     "without a newline; Docker should cut the long lines"
                     % (path, counts.get("partial", 0)))
            pieces += counts["partial"]
            nlines += counts["lines"]
            nbytes += size
            want_ml = load.expected_multiline()
            recs = by.pop(path, [])
            traces += sum(1 for r in recs if r["body"].startswith(
                "Exception in thread") and r["body"].count("\n") ==
                len(rt.JAVA_TRACE) - 1)
            checked += rt.check_file_records(
                "docker %s/%s" % (pod, cname), recs,
                want_ml, rt.group_reference(ref, want_ml), t_min, t_max,
                {"k8s.namespace.name": ns, "k8s.pod.name": pod,
                 "k8s.pod.uid": uid, "k8s.container.name": cname,
                 "container.id": cid, "k8s.node.name": NODE,
                 "log.file.path": path})

        # The rotated container: one record per line, once, all
        # from its log file (under its current or a rotated name).
        rot = [r for r in it.read_jsonl(out) if r.get("container.id") == rid]
        rot_paths = {}
        for path in list(by):
            if path is not None and os.path.basename(path).startswith(rid):
                rot_paths[os.path.basename(path)[len(rid):]] = len(by.pop(path))
        it.log("rotation records per log.file.path: %r" % rot_paths)
        it.check(not by, "records from unexpected files: %r" % {
            k: len(v) for k, v in by.items()})
        bodies = [r["body"] for r in rot]
        rt.compare_bodies("docker rotation (sorted)", sorted(
            bodies, key=lambda b: int(b.split()[1])),
            [rot_line(i) for i in range(1, ROT_LINES + 1)])
        back = rt.check_rotated_stream(
            "docker rotation", [int(b.split()[1]) for b in bodies], file_of)
        for r in rot:
            # Not a pod's container (no io.kubernetes.* labels): its id and
            # the node, no k8s.pod.* fields.
            it.check(r.get("container.id") == rid and
                     r.get("log.iostream") == "stdout" and
                     r.get("k8s.node.name") == NODE and
                     "k8s.pod.name" not in r and "k8s.pod.uid" not in r,
                     "rotation record metadata: %r" % r)
        rotations = len(watch.inodes) - 1
        it.check(rotations >= 3, "docker rotated the log only %d times "
                 "(expected >= 3 with max-size=200k)" % rotations)
        it.check(traces == len(cons), "%d Java traces as one record, "
                 "expected %d" % (traces, len(cons)))
        it.check(rot_delay_s <= ROT_DELAY_BOUND_S,
                 "the rotated log's last record came %.2f s after the "
                 "container exited (bound %.1f s): lugger falls behind at "
                 "rotations" % (rot_delay_s, ROT_DELAY_BOUND_S))
        rt.check_nothing_left(base)
        rt.check_nothing_left(wd.path)
        return ("dockerd up in %.2f s; %d records from %d json-file lines "
                "(%d pieces without newline, %d bytes) of 2 pod containers "
                "exact (body, stream, time, order, k8s metadata from labels; "
                "each Java trace one record with multiline = \"java\"), "
                "delivered %.2f s after start; %d lines across %d size "
                "rotations (max-size=200k, max-file=3, workers = 2): 0 lost, "
                "0 duplicated, in order (%d back); "
                "all delivered %.2f s after start (container ran "
                "%.2f s; %.2f s after its exit)" % (
                    docker.start_s, checked, nlines, pieces, nbytes,
                    deliver_s, ROT_LINES, rotations, back, rot_deliver_s,
                    rot_s, rot_delay_s))


if __name__ == "__main__":
    rt.main("runtime_docker", run)
