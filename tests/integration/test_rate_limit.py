#!/usr/bin/env python3
"""rate_limit on a kubernetes source: a noisy container is read at most at
its limit, nothing of it is dropped, and a quiet pod next to it is not
held behind it.

A fake node's pods_dir (tests/integration/k8s_node.py; kube_api = "off")
holds a quiet pod that writes one line every 50 ms and a noisy pod that
writes 6 MiB of CRI lines at once. The source has rate_limit = "1MiB"
(bytes per second per container log). The quiet pod runs alone for 1.5 s
first (its baseline in this run), then next to the noisy one. Checks:
- every noisy line is delivered, exactly once and in order (paused, never
  dropped), and it takes at least 4 s (6 MiB at 1 MiB/s after a 1 s
  burst), where an unlimited read takes a fraction of a second;
- lugger_source_rate_limited_total > 0;
- every quiet line is delivered once, in order;
- the quiet pod is served between the noisy pod's batches: from the moment
  a quiet line is written to the moment it is in the output, lugger
  writes at most 2 MiB of noisy lines (the noisy file's open batch, at
  most 1 MiB, and the next). That is counted in the output file, not
  timed, so a loaded machine cannot fail it: a stalled lugger writes no
  noisy lines either, and the noisy pod cannot get ahead faster than its
  limit. Were the quiet pod read only after the noisy one (or its lines
  queued behind the noisy backlog), its early lines would have ~3-4 MiB
  of noisy lines ahead of them;
- the quiet pod's median latency while the noisy pod is paused is no more
  than twice the worst latency it had alone in this run (plus the test's
  20 ms poll): rate limiting the noisy container does not slow the
  others' reading. (An absolute bound on the tail is not checked: on a
  loaded machine the pipeline's time for the noisy pod's 1 MiB burst and
  batches, which a quiet line can queue behind, is the scheduler's.)
"""

import bisect
import os
import threading
import time

import k8s_node
import lugger_it as it

NOISY_BYTES = 6 << 20
LINE = "x" * 200
POLL = 0.02  # the test's poll of the output (its latency resolution)
BASELINE_S = 1.5
HELD_MAX = 2 << 20  # noisy body bytes a quiet line may wait behind


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


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
        n = NOISY_BYTES // (len(LINE) + 45)
        last_noisy = "n%07d %s" % (n - 1, LINE)
        stop = threading.Event()
        sent = {}     # quiet body -> time written
        out_at = {}   # quiet body -> output file size when it was written
        arrival = {}  # body -> time the test first read it in the output

        def quiet_writer():
            i = 0
            while not stop.is_set():
                b = "q%05d" % i
                try:
                    out_at[b] = os.path.getsize(out)
                except FileNotFoundError:
                    out_at[b] = 0
                sent[b] = time.time()
                quiet.write("app", [b])
                i += 1
                stop.wait(0.05)

        fol = it.JsonlFollower(out, on_record=lambda r: arrival.setdefault(
            r["body"], time.time()))

        def delivered(bodies):
            def cond():
                fol.poll()
                return all(b in arrival for b in bodies)
            return cond

        qt = threading.Thread(target=quiet_writer, daemon=True)
        qt.start()
        try:
            # The quiet pod alone: its lines of the first 1.5 s, delivered.
            t_base = time.monotonic()
            def baseline_over():
                fol.poll()
                return time.monotonic() - t_base >= BASELINE_S
            it.wait_for(baseline_over, BASELINE_S + 5, "the baseline's end",
                        interval=POLL)
            base = list(sent)
            it.wait_for(delivered(base), 30, "the quiet pod's first lines",
                        interval=POLL, proc=lg)
            t_noisy = time.time()
            t0 = time.monotonic()
            noisy.write("app", ["n%07d %s" % (i, LINE) for i in range(n)])
            it.wait_for(delivered([last_noisy]), 60,
                        "every noisy line delivered", interval=POLL, proc=lg)
            took = time.monotonic() - t0
            t_done = time.time()
        finally:
            stop.set()
            qt.join()
        # Polled until the last quiet line is in: a line's arrival is when
        # the test read it (to within POLL), never a later catch-up read.
        it.wait_for(delivered(list(sent)), 30, "every quiet line delivered",
                    interval=POLL, proc=lg)
        limited = it.metric_sum(port, "lugger_source_rate_limited_total")
        lg.stop()

        # The output with each record's byte offset, and the noisy body
        # bytes written before each offset.
        with open(out, "rb") as f:
            data = f.read()
        ends, noisy_before, nb, qb = [], [], [], []
        off = cum = 0
        for raw in data.split(b"\n")[:-1]:
            r = it.parse_json_line(raw, out)
            off += len(raw) + 1
            body = r["body"]
            if body.startswith("n"):
                nb.append(body)
                cum += len(body)
            else:
                qb.append((body, cum))
            ends.append(off)
            noisy_before.append(cum)

        def noisy_by(offset):
            i = bisect.bisect_right(ends, offset)
            return noisy_before[i - 1] if i > 0 else 0

        it.check(nb == ["n%07d %s" % (i, LINE) for i in range(n)],
                 "noisy lines lost, repeated or reordered: %d of %d" % (
                     len(nb), n))
        it.check(took >= 4.0, "6 MiB read in %.2f s: rate_limit 1MiB/s not "
                 "applied" % took)
        it.check(limited and limited > 0, "lugger_source_rate_limited_total "
                 "= %r" % limited)
        it.check([b for b, _ in qb] == sorted(sent),
                 "quiet lines lost, repeated or reordered: %d of %d" % (
                     len(qb), len(sent)))
        held = max((cum - noisy_by(out_at[b]), b) for b, cum in qb)
        it.check(held[0] <= HELD_MAX,
                 "quiet line %s waited behind %.2f MiB of noisy lines (at "
                 "most %.0f MiB: the noisy pod's open batch and the next)" % (
                     held[1], held[0] / 2**20, HELD_MAX / 2**20))
        lat = {b: arrival[b] - sent[b] for b in sent}
        base_max = max(lat[b] for b in base)
        # While the noisy pod is paused: after its burst and first second
        # (2 MiB written, in 6), until its last line.
        t_paused = arrival["n%07d %s" % (n // 3, LINE)]
        paused = [lat[b] for b, ts in sent.items() if t_paused <= ts < t_done]
        it.check(len(paused) >= 10, "only %d quiet lines written while the "
                 "noisy pod was paused" % len(paused))
        p50 = median(paused)
        it.check(p50 <= 2 * base_max + POLL,
                 "quiet pod's median latency %.3f s while the noisy one was "
                 "paused; alone it was at most %.3f s" % (p50, base_max))
        tail = sorted(lat[b] for b in sent if sent[b] >= t_noisy)
        return ("noisy 6 MiB delivered in %.1f s at rate_limit 1MiB/s (%d "
                "pauses), all lines once in order; quiet pod: %d lines, at "
                "most %.2f MiB of noisy lines ahead of one; latency alone "
                "max %.3f s, next to the paused noisy pod median %.3f s; "
                "after the noisy write p99 %.3f s, max %.3f s (not "
                "checked)" % (
                    took, limited, len(sent), held[0] / 2**20, base_max, p50,
                    tail[int(len(tail) * 0.99) - 1], tail[-1]))


if __name__ == "__main__":
    it.main("test_rate_limit", main)
