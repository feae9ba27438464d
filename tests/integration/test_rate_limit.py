#!/usr/bin/env python3
"""rate_limit on a kubernetes source: a noisy container is read at most at
its limit, nothing of it is dropped, and a quiet pod next to it is not
delayed.

A fake node's pods_dir (tests/integration/k8s_node.py; kube_api = "off")
holds a noisy pod that writes 6 MiB of CRI lines at once and a quiet pod
that writes one line every 50 ms, each stamped with the time it was
written. The source has rate_limit = "1MiB" (bytes per second per
container log). Checks:
- every noisy line is delivered, exactly once and in order (paused, never
  dropped), and it takes at least 4 s (6 MiB at 1 MiB/s after a 1 s
  burst), where an unlimited read takes a fraction of a second;
- lugger_source_rate_limited_total > 0;
- the quiet pod's lines are delivered within 1 s of being written (p99).
"""

import json
import os
import threading
import time

import k8s_node
import lugger_it as it

NOISY_BYTES = 6 << 20
LINE = "x" * 200


def main():
    it.require_binary()
    with it.WorkDir("rate-limit") as wd:
        node = k8s_node.Node(wd.mk("node"))
        noisy = node.pod("default", "noisy").create()
        quiet = node.pod("default", "quiet").create()
        port = it.free_port()
        out = wd.p("out.jsonl")
        conf = it.write_config(
            wd.p("lugger.lua"),
            {"state_dir": wd.state, "http": "127.0.0.1:%d" % port},
            {"pods": {"type": "kubernetes", "pods_dir": node.pods,
                      "docker_dir": node.docker, "kube_api": "off",
                      "read_from": "head", "rate_limit": "1MiB"}},
            {"main": {"sources": ["pods"], "outputs": ["out"]}},
            {"out": {"type": "file", "path": out, "fsync": "never"}})
        lg = it.Lugger(conf, env={"NODE_NAME": "node-a"})
        lg.wait_started()
        stop = threading.Event()
        sent = {}

        def quiet_writer():
            i = 0
            while not stop.is_set():
                sent["q%05d" % i] = time.time()
                quiet.write("app", ["q%05d" % i])
                i += 1
                stop.wait(0.05)

        qt = threading.Thread(target=quiet_writer, daemon=True)
        qt.start()
        n = NOISY_BYTES // (len(LINE) + 45)
        t0 = time.monotonic()
        noisy.write("app", ["n%07d %s" % (i, LINE) for i in range(n)])
        arrival = {}
        fol = it.JsonlFollower(out, on_record=lambda r: arrival.setdefault(
            r["body"], (time.time(), r)))
        try:
            def noisy_done():
                fol.poll()
                return ("n%07d %s" % (n - 1, LINE)) in arrival
            it.wait_for(noisy_done, 60, "every noisy line delivered",
                        interval=0.02, proc=lg)
            took = time.monotonic() - t0
        finally:
            stop.set()
            qt.join()
        time.sleep(1.0)
        fol.poll()
        limited = it.metric_sum(port, "lugger_source_rate_limited_total")
        lg.stop()
        recs = it.read_jsonl(out)
        nb = [r["body"] for r in recs if r["body"].startswith("n")]
        it.check(nb == ["n%07d %s" % (i, LINE) for i in range(n)],
                 "noisy lines lost, repeated or reordered: %d of %d" % (
                     len(nb), n))
        it.check(took >= 4.0, "6 MiB read in %.2f s: rate_limit 1MiB/s not "
                 "applied" % took)
        it.check(limited and limited > 0, "lugger_source_rate_limited_total "
                 "= %r" % limited)
        lat = sorted(arrival[b][0] - ts for b, ts in sent.items()
                     if b in arrival)
        it.check(len(lat) == len(sent), "%d of %d quiet lines delivered" % (
            len(lat), len(sent)))
        p99 = lat[int(len(lat) * 0.99) - 1] if lat else None
        it.check(p99 is not None and p99 < 1.0,
                 "quiet pod p99 delivery latency %.3f s next to the noisy "
                 "one" % p99)
        return ("noisy 6 MiB delivered in %.1f s at rate_limit 1MiB/s (%d "
                "pauses), all lines once in order; quiet pod: %d lines, p99 "
                "latency %.3f s" % (took, limited, len(lat), p99))


if __name__ == "__main__":
    it.main("test_rate_limit", main)
