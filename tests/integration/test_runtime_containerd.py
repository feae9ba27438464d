#!/usr/bin/env python3
"""containerd's CRI plugin, driven like the kubelet drives it, writes a
node's /var/log/pods tree; lugger's `kubernetes` source reads it, through
kubelet-style log rotation.

containerd (Debian) is started with its CRI plugin on a private socket;
a busybox-static root filesystem is imported as two images (the app and
the pod sandbox's pause image). runtime/cri_client.js relays the test's
CRI calls over gRPC: RunPodSandbox with a log_directory under the pods
dir, CreateContainer with log_path `<container>/<restart>.log`,
StartContainer, ContainerStatus, ReopenContainerLog, Stop/Remove.

1. Pod shop/web-1, container nginx, runs the workload of runtime/rt.py:
   containerd writes CRI lines itself (lines over 16 KiB as P chunks, the
   default max_container_log_line_size; a CR before the LF is dropped,
   unlike conmon and Docker). Checked record by record: body,
   order per stream, log.iostream, time = the CRI line's, within the run,
   the path metadata containerd's layout gives (namespace, pod, uid,
   container, restart count, node, log.file.path), and the metadata of
   the pod from a test Kubernetes API server (k8s_api_server.py), which
   publishes each pod with the container id containerd gave it, as the
   kubelet does: container.id, k8s.pod.label.*, the owner's
   k8s.replicaset.name and k8s.deployment.name, container.image.*.
2. Pod shop/ticker-0, container ticker, prints 20,000 numbered stdout
   lines and 2,000 stderr lines over about 3 s while the test rotates its
   log like the kubelet does, several times: rename `0.log` to
   `0.log.<YYYYMMDD-HHMMSS>`, then ReopenContainerLog so containerd opens
   a new `0.log` (lines written between the two go to the renamed file).
   Every line arrives exactly once and in order per stream, across the
   rotations too (the renamed file is drained before the new one), and
   within TICK_DELAY_BOUND_S of the ticker's exit: lugger reads the new
   0.log as soon as containerd writes to it, instead of waiting for the
   renamed file to be idle for a second at every rotation.
3. A second collector (default read_from = "tail", its own state) reads
   the ticker too; it is stopped with SIGTERM after the 2nd rotation and
   started again after the 4th; while it is down, pod shop/late-1 runs
   and exits. It still delivers every line of the ticker and of late-1
   exactly once: its checkpoints cover the renamed files, and files it
   meets on a restart that were not there before are read from the start.
Everything containerd started (shims, containers, mounts) is gone after.
"""

import os
import signal
import time
import uuid

import lugger_it as it
from k8s_api_server import FakeApiServer, make_pod
from runtime import rt

NODE = "node-containerd"
TICKS = 20000
ROTATE_EVERY_S = 0.4
# Seconds from the ticker's exit (seen by the test, up to ROTATE_EVERY_S
# late) to its last record in collector A's output; 2 cores, ASan, other
# tests running.
TICK_DELAY_BOUND_S = 3.0
LATE_LINES = 100
LATE_SCRIPT = ('i=1; while [ $i -le %d ]; do echo "late $i"; i=$((i+1)); '
               'done' % LATE_LINES)
LATE_EXPECTED = ["late %d" % i for i in range(1, LATE_LINES + 1)]


def run():
    it.require_binary()
    with rt.work_dir("runtime-containerd") as wd:
        base = rt.short_dir("lgcd-")
        cd = rt.Containerd(base)
        pods = wd.mk("pods")
        out = wd.p("out.jsonl")
        # The pods' metadata as the kubelet would publish it, with the
        # real container ids containerd gives.
        api = FakeApiServer(bookmark_interval=0.5)
        api.start()

        def publish(ns, name, uid, cname, labels, owner=None):
            def before_start(cid):
                api.add_pod(make_pod(
                    ns, name, uid, NODE, labels=labels, owner=owner,
                    containers=[(cname, "localhost/bb:local")],
                    statuses={cname: ("containerd://" + cid, 0, None)}))
            return before_start

        try:
            cd.start()
            rootfs = rt.make_rootfs(wd.p("rootfs"))
            cd.import_images(rt.docker_archive(rootfs, wd.p("images.tar"), {
                "localhost/bb:local": {"Cmd": ["/bin/sh"]},
                cd.SANDBOX_IMAGE: {"Entrypoint": ["/bin/sleep", "86400"]}}))
            conf = it.write_config(
                wd.p("lugger.lua"),
                {"state_dir": wd.state, "workers": 2,
                 "checkpoint_interval": "200ms", "rescan_interval": "1s"},
                {"pods": {"type": "kubernetes", "pods_dir": pods,
                          "docker_dir": "", "kube_api": api.url,
                          # Generous (as in test_k8s_api): on a loaded CI
                          # machine the API's event may come seconds after
                          # the pod's first file; past api_wait the file is
                          # read without the API's metadata. A pod known in
                          # time costs no wait at all.
                          "api_wait": "30s",
                          # A runtime paused between the 16 KiB pieces of a
                          # long line (seen: 355 ms on a loaded machine)
                          # must not have its line flushed in two.
                          "read_from": "head", "flush_timeout": "2s"}},
                {"main": {"sources": ["pods"], "outputs": ["out"]}},
                {"out": {"type": "file", "path": out, "fsync": "never"}})
            # A second collector for part 3, with the default read_from =
            # "tail", its own state and output, for the ticker and the pod
            # created while it is down.
            out_b = wd.p("out-b.jsonl")
            conf_b = it.write_config(
                wd.p("lugger-b.lua"),
                {"state_dir": wd.mk("state-b"), "workers": 2,
                 "checkpoint_interval": "200ms", "rescan_interval": "1s"},
                {"pods": {"type": "kubernetes", "pods_dir": pods,
                          "docker_dir": "", "kube_api": "off",
                          "flush_timeout": "2s",
                          "include": {"pods": ["ticker-0", "late-1"]}}},
                {"main": {"sources": ["pods"], "outputs": ["out"]}},
                {"out": {"type": "file", "path": out_b, "fsync": "never"}})
            lug = it.Lugger(conf, env={"NODE_NAME": NODE})
            lug_b = it.Lugger(conf_b, env={"NODE_NAME": NODE})
            restarts = []
            try:
                # 1. The workload.
                web_uid = str(uuid.uuid4())
                load = rt.Workload("web-1-nginx", plain=300, keeps_cr=False)
                t_min = rt.now_ns()
                t0 = time.monotonic()
                sid, sconf = cd.run_pod(
                    "shop", "web-1", web_uid,
                    os.path.join(pods, "shop_web-1_" + web_uid))
                cid, web_log = cd.run_container(
                    sid, sconf, "nginx", ["/bin/sh", "-c", load.script],
                    before_start=publish(
                        "shop", "web-1", web_uid, "nginx",
                        {"app": "web", "pod-template-hash": "5c9d7"},
                        ("ReplicaSet", "web-5c9d7")))
                st = cd.wait_exited(cid)
                it.check(st["exit_code"] == 0, "nginx exited %r" %
                         st["exit_code"])
                run_s = time.monotonic() - t0
                t_max = rt.now_ns()
                want = load.total()
                it.wait_for(lambda: rt.count_lines(out) >= want, 30,
                            "%d records of the workload" % want, proc=lug,
                            detail=lambda: "%d so far" % rt.count_lines(out))
                deliver_s = time.monotonic() - t0
                counts = {}
                ref = rt.read_cri_file(web_log, counts)
                web_size = os.path.getsize(web_log)

                # 2. Kubelet-style rotation while the ticker writes.
                tick_uid = str(uuid.uuid4())
                script = ('i=1; while [ $i -le %d ]; do echo "tick $i"; '
                          '[ $((i %% 10)) -eq 0 ] && echo "tock $i" >&2; '
                          '[ $((i %% 100)) -eq 0 ] && usleep 15000; '
                          'i=$((i+1)); done' % TICKS)
                tsid, tconf = cd.run_pod(
                    "shop", "ticker-0", tick_uid,
                    os.path.join(pods, "shop_ticker-0_" + tick_uid))
                t1 = time.monotonic()
                tcid, tick_log = cd.run_container(
                    tsid, tconf, "ticker", ["/bin/sh", "-c", script],
                    before_start=publish("shop", "ticker-0", tick_uid,
                                         "ticker", {"app": "ticker"}))
                rotated = []
                stamp = 0
                while True:
                    time.sleep(ROTATE_EVERY_S)
                    st = cd.cri("ContainerStatus",
                                {"container_id": tcid})["status"]
                    if st["state"] == "CONTAINER_EXITED":
                        break
                    # The kubelet's rotated name: <log>.<YYYYMMDD-HHMMSS>.
                    stamp += 1
                    name = "%s.%s" % (tick_log, time.strftime(
                        "%Y%m%d-%H%M%S", time.gmtime(1700000000 + stamp)))
                    os.rename(tick_log, name)
                    rotated.append(name)
                    if cd.cri("ReopenContainerLog", {"container_id": tcid},
                              check=False) is None:
                        # It exited since the status call: containerd
                        # reopens only a running container's log (the
                        # kubelet ignores this error too).
                        st = cd.wait_exited(tcid)
                        break
                    # 3. Collector B stops (SIGTERM) after the 2nd rotation;
                    # while it is down the log rotates twice more and pod
                    # shop/late-1 runs and exits; then B starts again.
                    if len(rotated) == 2:
                        lug_b.stop(signal.SIGTERM)
                        restarts.append(time.monotonic())
                    elif len(rotated) == 3:
                        late_uid = str(uuid.uuid4())
                        lsid, lconf = cd.run_pod(
                            "shop", "late-1", late_uid,
                            os.path.join(pods, "shop_late-1_" + late_uid))
                        lcid, late_log = cd.run_container(
                            lsid, lconf, "app", ["/bin/sh", "-c",
                                                 LATE_SCRIPT],
                            before_start=publish("shop", "late-1", late_uid,
                                                 "app", {"app": "late"}))
                    elif len(rotated) == 4:
                        st = cd.wait_exited(lcid)
                        it.check(st["exit_code"] == 0, "late-1 exited %r" %
                                 st["exit_code"])
                        lug_b = it.Lugger(conf_b, env={"NODE_NAME": NODE})
                        restarts.append(time.monotonic())
                it.check(st["exit_code"] == 0, "ticker exited %r" %
                         st["exit_code"])
                tick_s = time.monotonic() - t1
                total = want + TICKS + TICKS // 10
                it.wait_for(lambda: rt.count_lines(out) >= total, 90,
                            "%d records in all" % total, proc=lug,
                            detail=lambda: "%d so far" % rt.count_lines(out))
                tick_deliver_s = time.monotonic() - t1
                tick_delay_s = tick_deliver_s - tick_s
                it.log("ticker: ran %.2f s through %d rotations, all "
                       "delivered %.2f s after its exit" % (
                           tick_s, len(rotated), tick_delay_s))
                it.check(len(restarts) == 2, "the ticker stopped after %d "
                         "rotations, before collector B's restart" %
                         len(rotated))
                total_b = TICKS + TICKS // 10 + LATE_LINES
                it.wait_for(lambda: rt.count_lines(out_b) >= total_b, 90,
                            "%d records from collector B" % total_b,
                            proc=lug_b, detail=lambda: "%d so far" %
                            rt.count_lines(out_b))
                time.sleep(0.5)  # a duplicate would show now
                lug.stop(signal.SIGTERM)
                lug_b.stop(signal.SIGTERM)
            finally:
                lug.kill9()
                lug_b.kill9()
        finally:
            cd.stop()
            api.stop()

        recs = it.read_jsonl(out)
        web = [r for r in recs if r.get("k8s.pod.name") == "web-1"]
        rt.check_file_records(
            "containerd web-1/nginx", web, load.expected, ref, t_min, t_max,
            {"k8s.namespace.name": "shop", "k8s.pod.name": "web-1",
             "k8s.pod.uid": web_uid, "k8s.container.name": "nginx",
             "k8s.container.restart_count": 0, "k8s.node.name": NODE,
             "log.file.path": web_log, "container.id": cid,
             "k8s.pod.label.app": "web", "k8s.replicaset.name": "web-5c9d7",
             "k8s.deployment.name": "web",
             "container.image.name": "localhost/bb",
             "container.image.tag": "local"})
        it.check(counts.get("partial", 0) >= 10, "only %d P chunks in %s; "
                 "containerd should cut the long lines" % (
                     counts.get("partial", 0), web_log))

        ticks = [r for r in recs if r.get("k8s.pod.name") == "ticker-0"]
        late = [r["body"] for r in recs if r.get("k8s.pod.name") == "late-1"]
        it.check(len(web) + len(ticks) + len(late) == len(recs),
                 "%d records of other pods" % (
                     len(recs) - len(web) - len(ticks) - len(late)))
        rt.compare_bodies("late-1", late, LATE_EXPECTED)
        paths = {}
        for r in ticks:
            it.check(r.get("k8s.container.name") == "ticker" and
                     r.get("k8s.pod.uid") == tick_uid and
                     r.get("k8s.container.restart_count") == 0 and
                     r.get("container.id") == tcid and
                     r.get("k8s.pod.label.app") == "ticker",
                     "ticker record metadata: %r" % r)
            p = r.get("log.file.path")
            it.check(p == tick_log or p in rotated, "ticker record from %r" % p)
            paths[p] = paths.get(p, 0) + 1
        # Which file each line went to, from the files on disk.
        file_of = {}
        for p in rotated + ([tick_log] if os.path.exists(tick_log) else []):
            for s in ("stdout", "stderr"):
                for _, body in rt.read_cri_file(p)[s]:
                    file_of[(s, int(body.split()[1]))] = p
        it.check(len(file_of) == TICKS + TICKS // 10, "the rotated files "
                 "hold %d lines, the ticker printed %d" % (
                     len(file_of), TICKS + TICKS // 10))
        back = 0
        for stream, word, step in (("stdout", "tick", 1),
                                   ("stderr", "tock", 10)):
            what = "ticker %s through %d rotations" % (stream, len(rotated))
            bodies = [r["body"] for r in ticks if r["log.iostream"] == stream]
            want = ["%s %d" % (word, i) for i in range(step, TICKS + 1, step)]
            rt.compare_bodies(what + " (sorted)", sorted(
                bodies, key=lambda b: int(b.split()[1])), want)
            seqs = [int(b.split()[1]) for b in bodies]
            back += rt.check_rotated_stream(
                what, seqs, {q: f for (s, q), f in file_of.items()
                             if s == stream})
        it.check(len(rotated) >= 3, "only %d rotations during the ticker's "
                 "run" % len(rotated))
        # After the metadata checks: a pod the API never described is read
        # only after api_wait, which is a late delivery for another reason.
        it.check(tick_delay_s <= TICK_DELAY_BOUND_S,
                 "the ticker's last record came %.2f s after it exited "
                 "(bound %.1f s): lugger falls behind at rotations" % (
                     tick_delay_s, TICK_DELAY_BOUND_S))
        # Collector B, restarted around two rotations and a whole pod:
        # every line exactly once (a clean stop saved its checkpoints).
        recs_b = it.read_jsonl(out_b)
        late_b = [r["body"] for r in recs_b
                  if r.get("k8s.pod.name") == "late-1"]
        rt.compare_bodies("collector B, late-1 (ran while B was down)",
                          late_b, LATE_EXPECTED)
        for stream, word, step in (("stdout", "tick", 1),
                                   ("stderr", "tock", 10)):
            bodies = [r["body"] for r in recs_b
                      if r.get("k8s.pod.name") == "ticker-0" and
                      r.get("log.iostream") == stream]
            rt.compare_bodies(
                "collector B, ticker %s, stopped after rotation 2 and "
                "started after rotation 4 (sorted)" % stream,
                sorted(bodies, key=lambda b: int(b.split()[1])),
                ["%s %d" % (word, i) for i in range(step, TICKS + 1, step)])
        it.check(len(recs_b) == total_b, "collector B: %d records, "
                 "expected %d" % (len(recs_b), total_b))
        rt.check_nothing_left(base)
        rt.check_nothing_left(wd.path)
        return ("containerd %.2f s to start; workload: %d records from %d CRI "
                "lines (%d P chunks, %d bytes) exact (body, stream, time, "
                "order, k8s metadata from the path and the API with the "
                "real container id), delivered %.2f s after RunPodSandbox "
                "(container ran %.2f s); kubelet rotation: %d lines through "
                "%d rename + ReopenContainerLog rotations (%d log.file.path "
                "values): 0 lost, 0 duplicated, in order (%d back); delivered "
                "%.2f s after start (container ran %.2f s); a second "
                "collector (read_from tail) stopped for %.2f s across 2 "
                "rotations and a whole pod's run: %d records, 0 lost, 0 "
                "duplicated" % (
                    cd.start_s, len(web), counts["lines"], counts["partial"],
                    web_size, deliver_s, run_s, len(ticks), len(rotated),
                    len(paths), back, tick_deliver_s, tick_s,
                    restarts[1] - restarts[0], len(recs_b)))


if __name__ == "__main__":
    rt.main("runtime_containerd", run)
