#!/usr/bin/env python3
"""Lines in progress count against the memory budget.

FILES files each get a line of HUGE bytes with no newline yet (a writer in
the middle of a long line), under memory_budget 16MiB and
max_record_bytes 8MiB. The file source holds such a line in its framer
until its newline comes (up to ~max_record_bytes per file, its buffer
doubling to 8 MiB here): FILES x 8 MiB if it read them all. Those bytes
are charged to the budget like batches, so reading stops at the budget and
the other files wait, unread (the file is the buffer). When the held lines
alone fill the budget and no batch is in flight, only reading on frees
memory: a file holding a line is read on, one at a time, and its line goes
on once complete.

Run twice: a stateful pipeline (the reading thread frames) and a stateless
one (the workers frame: the held bytes are the carry of deferred framing).

Checked, in each: while the lines are in progress, lugger's VmRSS stays
within GROWTH_MIB of what it was before them (before the fix it grew by
about FILES x 6 MiB: +144 MiB measured, release build, stateful), and
lugger_memory_used_bytes, which now shows the held lines (it reaches the
budget), stays under the budget plus two files' line buffers (GAUGE_MAX).
Then each writer ends its line and adds one more: every line is
delivered exactly once, the long ones whole, and the gauge comes back to
0.
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lugger_it as it  # noqa: E402

FILES = 24
BEFORE = 200          # normal lines per file before the long one
HUGE = 6 * it.MiB     # the long line's bytes written before its newline
BUDGET = 16 * it.MiB
MAX_RECORD = 8 * it.MiB
# The gauge may pass the budget by what the read that reached it added
# (one file's buffer doubling: under max_record_bytes) and by the growth of
# the one file drained then (its buffer up to max_record_bytes).
GAUGE_MAX = BUDGET + 2 * MAX_RECORD
# VmRSS over its level before the long lines: at most what the gauge
# allows (32 MiB) plus slack (the pool's batches, the allocator).
# Measured: +12 MiB stateful, +23 stateless (release); +20 / +25 (ASan).
GROWTH_MIB = 48


def normal(f, k):
    return b"f%02d n%04d %s\n" % (f, k, b"." * 80)


def long_head(f):
    return b"f%02d long " % f


def long_line(f):
    head = long_head(f)
    return head + b"x" * (HUGE - len(head)) + b" end\n"


def metric(port, name):
    return it.metric_sum(port, name)


class GaugeSampler(threading.Thread):
    """The largest lugger_memory_used_bytes seen, polled every 50 ms."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.max = port, 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                self.max = max(self.max,
                               metric(self.port, "lugger_memory_used_bytes"))
            except Exception:  # noqa: BLE001 (lugger going away)
                pass
            self._halt.wait(0.05)

    def stop(self):
        self._halt.set()
        self.join()


def run_case(wd, stateless):
    name = "stateless" if stateless else "stateful"
    logs = wd.mk("logs-" + name)
    out = wd.p("out-%s.jsonl" % name)
    paths = [os.path.join(logs, "f%02d.log" % f) for f in range(FILES)]
    for f, p in enumerate(paths):
        with open(p, "wb") as o:
            o.write(b"".join(normal(f, k) for k in range(BEFORE)))
    port = it.free_port()
    conf = it.simple_config(
        wd, [os.path.join(logs, "*.log")], out_path=out,
        name=name + ".lua",
        settings={"memory_budget": "16MiB", "workers": 2,
                  "http": "127.0.0.1:%d" % port,
                  "state_dir": wd.mk("state-" + name)},
        source={"max_record_bytes": "8MiB", "flush_timeout": "10m"},
        pipeline={"stateless": stateless})

    def delivered():
        try:
            with open(out, "rb") as o:
                return sum(1 for _ in o)
        except FileNotFoundError:
            return 0

    def idle_rss(lg):
        samples = []
        for _ in range(5):
            samples.append(it.rss_kib(lg.pid) or 0)
            time.sleep(0.1)
        return min(samples)

    # As in test_huge_lines_memory: every buffer over 128 KiB its own
    # mapping, returned when freed, so that VmRSS shows what lugger holds.
    env = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    with it.Lugger(conf, env=env) as lg:
        it.wait_for(lambda: it.http_get(port, "/metrics", 2)[0] == 200,
                    30, "/metrics", proc=lg)
        it.wait_for(lambda: delivered() >= FILES * BEFORE, 60,
                    "the first lines", proc=lg)
        it.wait_for(lambda: metric(port, "lugger_memory_used_bytes") == 0,
                    30, "nothing in flight", proc=lg)
        time.sleep(0.5)
        base = idle_rss(lg)
        rss = it.RssSampler(lg.pid)
        gauge = GaugeSampler(port)
        rss.start()
        gauge.start()
        # Every writer is in the middle of a long line.
        for f, p in enumerate(paths):
            with open(p, "ab") as o:
                o.write(long_line(f)[:-5])
        # lugger reads until the held lines fill its budget, then waits
        # (without the budget's charge it reads them all: wait at most 20 s
        # for the gauge, so that the RSS check below says by how much).
        t0 = time.monotonic()
        while gauge.max < BUDGET * 3 // 4 and time.monotonic() - t0 < 20:
            lg.check_running()
            time.sleep(0.1)
        time.sleep(3)
        held_rss = rss.max_kib
        held_gauge = gauge.max
        it.check(delivered() == FILES * BEFORE,
                 "%d records delivered before any long line ended"
                 % delivered())
        # The writers end their lines and write one more each.
        for f, p in enumerate(paths):
            with open(p, "ab") as o:
                o.write(b" end\n" + normal(f, BEFORE + 1))
        total = FILES * (BEFORE + 2)
        it.wait_for(lambda: delivered() >= total, 180,
                    "%d records" % total, proc=lg,
                    detail=lambda: "%d so far, gauge %d" % (
                        delivered(), metric(port,
                                            "lugger_memory_used_bytes")))
        it.wait_for(lambda: metric(port, "lugger_memory_used_bytes") == 0,
                    30, "the gauge back to 0", proc=lg)
        rss.stop()
        gauge.stop()
        lg.stop()

    # Every line once, each file's in order, the long ones whole.
    per_file = {f: [] for f in range(FILES)}
    with open(out, "rb") as o:
        for raw in o:
            body = it.parse_json_line(raw, "output")["body"].encode()
            per_file[int(body[1:3])].append(body)
    for f in range(FILES):
        want = [normal(f, k)[:-1] for k in range(BEFORE)] + \
            [long_line(f)[:-1], normal(f, BEFORE + 1)[:-1]]
        got = per_file[f]
        it.check(len(got) == len(want) and all(
            g == w for g, w in zip(got, want)),
            "%s: file %d: %d records for %d lines (lengths %s...)" % (
                name, f, len(got), len(want),
                [len(g) for g in got[BEFORE - 1:BEFORE + 3]]))
    grew = (held_rss - base) / 1024.0
    it.log("%s: VmRSS %.1f MiB before the long lines, at most %.1f MiB while "
           "%d files held one (+%.1f); memory gauge at most %.1f MiB"
           % (name, base / 1024.0, held_rss / 1024.0, FILES, grew,
              held_gauge / it.MiB))
    it.check(grew <= GROWTH_MIB,
             "%s: VmRSS grew by %.1f MiB while %d files each held a line of "
             "%d MiB (at most %d): lines in progress outside the budget" % (
                 name, grew, FILES, HUGE // it.MiB, GROWTH_MIB))
    it.check(held_gauge >= BUDGET * 3 // 4,
             "%s: lugger_memory_used_bytes reached only %.1f MiB while the "
             "lines were held: they are not charged to the budget" % (
                 name, held_gauge / it.MiB))
    it.check(held_gauge <= GAUGE_MAX,
             "%s: lugger_memory_used_bytes reached %.1f MiB (at most %.1f)" % (
                 name, held_gauge / it.MiB, GAUGE_MAX / it.MiB))
    return grew, held_gauge


def run():
    it.require_binary()
    with it.WorkDir("held_lines_memory") as wd:
        res = [run_case(wd, False), run_case(wd, True)]
    return ("%d files each holding a %d MiB line, budget 16 MiB: VmRSS "
            "+%.1f MiB (stateful) / +%.1f MiB (stateless), gauge at most "
            "%.1f / %.1f MiB; every line once" % (
                FILES, HUGE // it.MiB, res[0][0], res[1][0],
                res[0][1] / it.MiB, res[1][1] / it.MiB))


if __name__ == "__main__":
    it.main("held_lines_memory", run)
