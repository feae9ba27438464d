#!/usr/bin/env python3
"""Sidecar -> daemon over the forward protocol, with crashes: a "sidecar"
lugger tails 4 files (with its pod's metadata from the downward-API
environment) and sends them with its forward output (acks) to a
"daemon" lugger whose forward source writes them to a file. While writers
append 200,000 lines, the daemon is killed with SIGKILL 3 times and the
sidecar 2 times (each restarted) -> every line at least once in the
daemon's output, no broken output line, and the duplicates bounded by what
was in flight at the kills; every record carries the pod's metadata.

The bound: the daemon acks a chunk only once its records are in its output
file, and the sidecar checkpoints a file only over acked records. So after
any kill (waiting until the survivor's checkpoint file settles), the lines
of a file in the daemon's output at or after the sidecar's checkpoint are
exactly the ones that can be sent again; their sum over the kills bounds
the duplicates.
"""

import os
import random
import signal
import time

import lugger_it as it

NFILES = 4
LINE_LEN = 100
TOTAL = 200_000
RATE = 20_000  # lines/s over all files: ~10 s of writing
KILLS = ["daemon", "sidecar", "daemon", "sidecar", "daemon"]
# The sidecar's pod, as the downward API tells it (k8s = "downward").
DOWNWARD = {"POD_NAME": "web-7d9f8-x1", "POD_NAMESPACE": "shop",
            "POD_UID": "0f1e2d3c", "NODE_NAME": "node-a",
            "CONTAINER_NAME": "app"}


def output_state(out):
    tr = it.SeqTracker(expected_len=LINE_LEN)
    if os.path.exists(out):
        for r in it.read_jsonl(out, allow_partial_tail=True):
            tr.add(r)
    return tr


def in_flight(wd, paths, out):
    cps = it.checkpoint_offsets(wd.p("sidecar-state"))
    tr = output_state(out)
    n = 0
    for fid, p in enumerate(paths):
        cp_line = cps.get(p, 0) // LINE_LEN
        it.check(cp_line <= tr.delivered(fid),
                 "sidecar checkpoint of %s at line %d, but the daemon's output "
                 "only has lines 0..%d: a restart would skip lines" %
                 (p, cp_line, tr.delivered(fid) - 1))
        n += max(0, tr.last.get(fid, -1) + 1 - cp_line)
    return n, tr.total


def run():
    it.require_binary()
    seed = int(os.environ.get("LUGGER_IT_SEED", time.time()))
    it.log("seed %d (set LUGGER_IT_SEED to repeat)" % seed)
    rng = random.Random(seed)
    with it.WorkDir("fwdchain") as wd:
        port = it.free_port()
        paths = [os.path.join(wd.logs, "app-%d.log" % i) for i in range(NFILES)]
        out = wd.p("out.jsonl")
        settings = {"memory_budget": "32MiB", "workers": 2,
                    "checkpoint_interval": "200ms", "rescan_interval": "1s"}
        daemon_conf = it.write_config(
            wd.p("daemon.lua"), dict(settings, state_dir=wd.mk("daemon-state")),
            {"fwd": {"type": "forward", "host": "127.0.0.1", "port": port}},
            {"main": {"sources": ["fwd"], "outputs": ["out"]}},
            {"out": {"type": "file", "path": out, "fsync": "never"}})
        sidecar_conf = it.write_config(
            wd.p("sidecar.lua"), dict(settings, state_dir=wd.mk("sidecar-state")),
            {"app": {"type": "file", "paths": [os.path.join(wd.logs, "*.log")],
                     "read_from": "head", "format": "line",
                     "k8s": "downward"}},
            {"main": {"sources": ["app"], "outputs": ["daemon"]}},
            {"daemon": {"type": "forward", "servers": ["127.0.0.1:%d" % port],
                        "tag": "app", "ack_timeout": "3s",
                        "connect_timeout": "1s"}})
        for p in paths:
            open(p, "wb").close()
        writer = it.PacedWriter(paths, RATE, LINE_LEN,
                                lines_per_file=TOTAL // NFILES)
        procs = {"daemon": it.Lugger(daemon_conf)}
        procs["daemon"].wait_started()
        procs["sidecar"] = it.Lugger(sidecar_conf, env=DOWNWARD)
        bound = 0
        try:
            writer.start()
            for k, who in enumerate(KILLS):
                time.sleep(rng.uniform(0.5, 2.0))
                procs[who].check_running()
                procs[who].kill9()
                procs[who].check_sanitizers()
                # Let the survivor settle: no ack can come (daemon dead) or
                # be asked for (sidecar dead); checkpoints every 200 ms.
                time.sleep(0.8)
                n, total = in_flight(wd, paths, out)
                bound += n
                it.log("kill -9 #%d of the %s: %d lines in the output, %d in "
                       "flight" % (k + 1, who, total, n))
                time.sleep(rng.uniform(0.0, 0.5))
                procs[who] = it.Lugger(daemon_conf) if who == "daemon" else \
                    it.Lugger(sidecar_conf, env=DOWNWARD)
                if who == "daemon":
                    procs[who].wait_started()
            writer.join(timeout=120)
            it.check(not writer.is_alive(), "writer did not finish")
            sizes = {p: os.path.getsize(p) for p in paths}
            it.wait_for(
                lambda: all(it.checkpoint_offsets(wd.p("sidecar-state"))
                            .get(p, 0) == sizes[p] for p in paths),
                120, "sidecar checkpoints at the end of every file",
                interval=0.2, proc=procs["sidecar"])
            procs["sidecar"].stop(signal.SIGTERM)
            procs["daemon"].stop(signal.SIGTERM)
        finally:
            writer.halt()
            for p in procs.values():
                p.kill9()
        written = writer.written
        final = it.SeqTracker(expected_len=LINE_LEN)
        recs = it.read_jsonl(out)
        for r in recs:
            final.add(r)
        lost, dups, missing, extra = final.summary(written)
        it.check(not final.foreign, "records that are not test lines: %r" %
                 final.foreign[:3])
        it.check(not final.bad_body, "broken bodies: %r" % final.bad_body[:3])
        it.check(lost == 0, "%d of %d lines lost (first %s, seed %d)" %
                 (lost, sum(written.values()), missing, seed))
        it.check(extra == 0, "%d unexpected sequence numbers" % extra)
        it.check(dups <= bound, "%d duplicates, more than the %d in flight at "
                 "the kills (seed %d)" % (dups, bound, seed))
        it.check(all(r.get("fluent.tag") == "app" for r in recs),
                 "tag carried: %r" % recs[0])
        # The pod's metadata, added by the sidecar, arrives with every record.
        for r in recs:
            if (r.get("k8s.pod.name"), r.get("k8s.namespace.name"),
                    r.get("k8s.pod.uid"), r.get("k8s.container.name")) != \
                    ("web-7d9f8-x1", "shop", "0f1e2d3c", "app"):
                it.fail("pod metadata lost on the way: %r" % r)
        return ("%d lines from %d files, sidecar -> daemon, kill -9 of the "
                "daemon x3 and the sidecar x2: 0 lost, %d duplicated (bound "
                "%d in flight at the kills), %d output lines all valid JSON, "
                "seed %d" % (sum(written.values()), NFILES, dups, bound,
                             len(recs), seed))


if __name__ == "__main__":
    it.main("forward_chain", run)
