#!/usr/bin/env python3
"""Lines in progress fill the memory budget while a script is stuck.

A JIT-compiled endless loop in the script (which the watchdog cannot
interrupt) holds a batch of hang.log on its worker; meanwhile FILES
writers are each in the middle of a line of HUGE bytes, which the file
source holds and charges to the budget (16 MiB) until reading pauses.
While the stuck batch is in flight, lugger waits for it to come back. When
the watchdog declares the worker stuck, the batch is frozen (it never
comes back), and with nothing else in flight only reading a held line on
to its end frees memory: the source must drain the held lines one file at
a time. Before that was checked at the freeze, reading stayed paused for
good and no line after it was ever delivered.

Checked: the gauge reached the budget with the lines held, the worker was
declared stuck (/healthz 503), then each writer ends its line and adds one
more, and every one of those lines is delivered, the long ones whole.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lugger_it as it  # noqa: E402

FILES = 6
HUGE = 6 * it.MiB
BUDGET = 16 * it.MiB

SCRIPT = r"""
function process(rec)
  if rec.body == "LOOP_JIT" then local i = 0 while true do i = i + 1 end end
end
"""


def long_line(f):
    head = b"f%02d long " % f
    return head + b"x" * (HUGE - len(head)) + b" end\n"


def short_line(f):
    return b"f%02d after\n" % f


def run():
    it.require_binary()
    with it.WorkDir("held-lines-stuck") as wd:
        logs = wd.mk("logs")
        out = wd.p("out.jsonl")
        hang = os.path.join(logs, "hang.log")
        paths = [os.path.join(logs, "f%02d.log" % f) for f in range(FILES)]
        for p in [hang] + paths:
            open(p, "wb").close()
        port = it.free_port()
        conf = it.simple_config(
            wd, [os.path.join(logs, "*.log")], out_path=out,
            settings={"memory_budget": "16MiB", "workers": 2,
                      "http": "127.0.0.1:%d" % port,
                      "script_timeout": "2s"},
            source={"max_record_bytes": "8MiB", "flush_timeout": "10m"},
            scripts=["stuck.lua"], script_files={"stuck.lua": SCRIPT})

        def bodies():
            if not os.path.exists(out):
                return []
            return [r.get("body") for r in
                    it.read_jsonl(out, allow_partial_tail=True)]

        # The abandoned thread keeps its Lua state and batch until the
        # process exits, on purpose: no leak check.
        lg = it.Lugger(conf, env={
            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1"})
        try:
            it.wait_for(lambda: it.http_get(port, "/readyz")[0] == 200, 15,
                        "/readyz 200", proc=lg)
            with open(hang, "ab") as o:
                o.write(b"LOOP_JIT\n")
            time.sleep(0.3)
            # Every writer in the middle of a long line: reading fills the
            # budget with them and pauses, the stuck batch still in flight.
            for f, p in enumerate(paths):
                with open(p, "ab") as o:
                    o.write(long_line(f)[:-5])
            it.wait_for(lambda: it.metric_sum(
                port, "lugger_memory_used_bytes") >= BUDGET * 3 // 4, 20,
                "the held lines charged to the budget", proc=lg)
            it.check(it.http_get(port, "/healthz")[0] == 200,
                     "the worker was declared stuck before the held lines "
                     "filled the budget: the case is not the one at hand")
            it.wait_for(lambda: it.http_get(port, "/healthz")[0] == 503, 60,
                        "/healthz 503 for the stuck script", proc=lg)
            for f, p in enumerate(paths):
                with open(p, "ab") as o:
                    o.write(b" end\n" + short_line(f))
            want = [long_line(f)[:-1].decode() for f in range(FILES)] + \
                [short_line(f)[:-1].decode() for f in range(FILES)]
            it.wait_for(lambda: all(w in bodies() for w in want), 60,
                        "every line after the freeze", proc=lg,
                        detail=lambda: "%d of %d delivered, gauge %d" % (
                            sum(1 for w in want if w in bodies()),
                            len(want), it.metric_sum(
                                port, "lugger_memory_used_bytes")))
            got = bodies()
            for w in want:
                it.check(got.count(w) == 1, "%r... delivered %d times" % (
                    w[:12], got.count(w)))
            it.check("LOOP_JIT" not in got,
                     "the stuck record was delivered")
        finally:
            lg.stop()
        return "%d held lines of %d MiB drained after the worker holding " \
            "the only batch in flight was declared stuck" % (
                FILES, HUGE // it.MiB)


if __name__ == "__main__":
    it.main("held_lines_stuck", run)
