#!/usr/bin/env python3
"""Huge lines on a parallel pipeline: memory comes back to the budget's.

One file of 6 lines of 20 MiB (max_record_bytes 24MiB), each followed by
3,000 lines of 200 bytes, read by a stateless pipeline (the workers frame
the file's bytes: deferred framing) with 2 workers, memory_budget 16MiB,
into a file output. A huge line reaches a worker as one batch of ~20 MiB
of raw bytes in an arena of 40 MiB (doubled from 1.25 MiB), which the
worker swaps with its framing scratch. The budget charges batches, not
the scratch: a regression test for the scratch that kept such an arena
(~21 MiB of it touched) in every worker that framed a huge line, after
the batch was delivered and released, until a batch of at least 1/8 of
its size came (normal ones are 1.25 MiB): outside the budget, for good.

Checked: every line delivered once, in order, the huge ones whole; then,
with nothing in flight (lugger_memory_used_bytes 0), lugger's VmRSS is
back within IDLE_MIB of what it was before the huge lines (measured: +0
MiB, release and ASan builds; +20 MiB before the fix, 3 runs of each: the
huge lines' batches all went to one worker, every other batch of the
file being a small one in between)."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lugger_it as it  # noqa: E402

NHUGE = 6
HUGE = 20 * it.MiB
NORMAL = 3000        # lines after each huge one
LINE = 200
# VmRSS once idle may exceed what it was before the huge lines by this
# much (allocator caches, the pool's batches). One worker's kept scratch
# alone is ~20 MiB.
IDLE_MIB = 8


def normal(h, k):
    s = b"n%d-%05d " % (h, k)
    return s + b"." * (LINE - 1 - len(s)) + b"\n"


def huge(h):
    s = b"h%d " % h
    return s + b"x" * (HUGE - 1 - len(s)) + b"\n"


def run():
    it.require_binary()
    with it.WorkDir("huge_lines_memory") as wd:
        log = wd.p("logs", "app.log")
        port = it.free_port()
        # A first part of normal lines only, to measure the baseline.
        with open(log, "wb") as f:
            for k in range(NORMAL):
                f.write(normal(9, k))
        conf = it.simple_config(
            wd, [log], out_path=wd.p("out.jsonl"),
            settings={"memory_budget": "16MiB", "workers": 2,
                      "http": "127.0.0.1:%d" % port},
            source={"max_record_bytes": "24MiB"},
            pipeline={"stateless": True})
        out = wd.p("out.jsonl")

        def delivered():
            try:
                with open(out, "rb") as f:
                    return sum(1 for _ in f)
            except FileNotFoundError:
                return 0

        def idle_rss(lg, want):
            # 120 MiB of huge lines through an ASan build took 77-101 s
            # at load 8 and over 120 s at load 15: a deadline for a stall,
            # not a speed check.
            it.wait_for(lambda: delivered() >= want, 360,
                        "%d records in the output" % want, proc=lg,
                        detail=lambda: "%d so far" % delivered())
            it.wait_for(lambda: it.metric_sum(
                port, "lugger_memory_used_bytes") == 0, 30,
                "nothing in flight", proc=lg)
            time.sleep(1.0)
            samples = []
            for _ in range(5):
                samples.append(it.rss_kib(lg.pid) or 0)
                time.sleep(0.1)
            return min(samples)

        # glibc's malloc, left to itself, raises its mmap threshold to the
        # size of a freed huge buffer (up to 32 MiB) and then serves
        # buffers of that size from per-thread heaps it keeps: idle RSS
        # grew by 22-59 MiB either way. A fixed threshold makes every
        # buffer over 128 KiB its own mapping, returned when freed, so
        # that VmRSS shows what lugger holds. (ASan's allocator maps large
        # buffers the same way.)
        env = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
        with it.Lugger(conf, env=env) as lg:
            it.wait_for(lambda: it.http_get(port, "/metrics", 2)[0] == 200,
                        30, "/metrics", proc=lg)
            before = idle_rss(lg, NORMAL)
            sampler = it.RssSampler(lg.pid)
            sampler.start()
            with open(log, "ab") as f:
                for h in range(NHUGE):
                    f.write(huge(h))
                    for k in range(NORMAL):
                        f.write(normal(h, k))
            total = NORMAL + NHUGE * (1 + NORMAL)
            after = idle_rss(lg, total)
            sampler.stop()
            lg.stop()

        # Every line once, in order, the huge ones whole.
        want = [normal(9, k) for k in range(NORMAL)]
        for h in range(NHUGE):
            want.append(huge(h))
            want.extend(normal(h, k) for k in range(NORMAL))
        n = 0
        with open(out, "rb") as f:
            for raw in f:
                rec = it.parse_json_line(raw, "output")
                it.check(n < len(want), "more records than lines")
                body = rec["body"].encode()
                it.check(body + b"\n" == want[n],
                         "record %d: %d bytes %r..., want %d bytes %r..." % (
                             n, len(body), body[:20], len(want[n]) - 1,
                             want[n][:20]))
                n += 1
        it.check(n == len(want), "%d records for %d lines" % (n, len(want)))
        grew = (after - before) // 1024
        it.log("VmRSS idle %d MiB before the huge lines, %d MiB after "
               "(+%d), max %d MiB" % (before // 1024, after // 1024, grew,
                                      sampler.max_kib // 1024))
        it.check(grew <= IDLE_MIB,
                 "idle VmRSS grew by %d MiB after %d lines of %d MiB were "
                 "framed by 2 workers and delivered (at most %d): memory "
                 "held outside the budget (the workers' framing scratch?)" % (
                     grew, NHUGE, HUGE // it.MiB, IDLE_MIB))
        return ("%d lines of %d MiB and %d of %d B, 2 workers, stateless: "
                "all in order; idle VmRSS %d -> %d MiB (max %d)" % (
                    NHUGE, HUGE // it.MiB, len(want) - NHUGE, LINE,
                    before // 1024, after // 1024, sampler.max_kib // 1024))


if __name__ == "__main__":
    it.main("huge_lines_memory", run)
