#!/usr/bin/env python3
"""settings.script_timeout is CPU time: a worker starved of CPU, or a
lugger stopped outright, does not turn normal records into poison ones;
a script burning its CPU budget is still interrupted under the same load.

lugger (one worker, script_timeout = 300ms) is pinned to one CPU, and
three busy-looping processes are pinned to the same CPU, so the worker
gets about a quarter of it. Each WORK record costs ~100 ms of CPU in the
interpreter (a third of the budget), so ~400 ms of wall time. While the
worker is in the middle of those records (its thread runnable, records
still undelivered), lugger is stopped with SIGSTOP for 1 s, three times:
what a frozen container or a CPU-throttled pod sees. A wall-clock
watchdog fires on every one of these; this one must not:

- every WORK record and the line after them is delivered, none goes to
  the dead-letter file, lugger_script_timeouts_total stays 0 and
  poison.json is not written;
- then, under the same load, LOOP_INTERP (an interpreted endless loop) is
  interrupted: dead-letter file, "script_timeout" and "of CPU time" in its
  error; the record after it is delivered; /readyz stays 200.
"""

import os
import signal
import subprocess
import sys
import time

import lugger_it as it

SCRIPT = r"""
function process(rec)
  local b = rec.body
  if b:sub(1, 4) == "WORK" then
    -- ~100 ms of the process's CPU time (the worker's own is at most
    -- that), in the interpreter: creating a closure is not compiled.
    local t = os.clock()
    while os.clock() - t < 0.1 do local f = function() end end
  elseif b == "LOOP_INTERP" then
    while true do local f = function() end end
  end
  rec.seen = true
end
"""

TIMEOUT_S = 0.3
NWORK = 8
HOGS = 3
STOP_S = 1.0
NSTOPS = 3


def records(path):
    if not os.path.exists(path):
        return []
    return it.read_jsonl(path, allow_partial_tail=True)


def bodies(path):
    return [r.get("body") for r in records(path)]


def tasks(pid):
    return [int(t) for t in os.listdir("/proc/%d/task" % pid)]


def task_state(pid, tid):
    """The state letter of thread `tid` ("R" running or runnable)."""
    with open("/proc/%d/task/%d/stat" % (pid, tid)) as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()[0]


def task_cpu_ns(pid, tid):
    """CPU time thread `tid` has used, in ns (0 once it is gone)."""
    try:
        with open("/proc/%d/task/%d/schedstat" % (pid, tid)) as f:
            return int(f.read().split()[0])
    except OSError:
        return 0


def main():
    it.require_binary()
    cpu = min(os.sched_getaffinity(0))
    hogs = []
    with it.WorkDir("watchdog-load") as wd:
        try:
            return run(wd, cpu, hogs)
        finally:
            for h in hogs:
                h.kill()
                h.wait()


def run(wd, cpu, hogs):
    port = it.free_port()
    out = wd.p("out.jsonl")
    dead = os.path.join(wd.state, "dead-letter.jsonl")
    log = os.path.join(wd.logs, "work.log")
    conf = it.write_config(
        wd.p("lugger.lua"),
        {"state_dir": wd.state, "workers": 1, "memory_budget": "16MiB",
         "checkpoint_interval": "200ms", "http": "127.0.0.1:%d" % port,
         "script_timeout": "%dms" % int(TIMEOUT_S * 1000)},
        {"work": {"type": "file", "read_from": "head", "format": "line",
                  "paths": [log]}},
        {"work": {"sources": ["work"], "scripts": ["work.lua"],
                  "outputs": ["out"]}},
        {"out": {"type": "file", "path": out, "fsync": "never"}},
        scripts={"work.lua": SCRIPT})
    open(log, "w").close()
    lg = it.Lugger(conf)
    it.wait_for(lambda: it.http_get(port, "/readyz")[0] == 200, 30,
                "/readyz 200", proc=lg)
    # Every thread of lugger on `cpu` (threads it starts later inherit it),
    # and the hogs there too.
    for tid in tasks(lg.pid):
        os.sched_setaffinity(tid, {cpu})
    for _ in range(HOGS):
        hogs.append(subprocess.Popen(
            [sys.executable, "-c",
             "import os\nos.sched_setaffinity(0, {%d})\nwhile True: pass\n"
             % cpu], stdin=subprocess.DEVNULL))
    time.sleep(0.5)

    before = {t: task_cpu_ns(lg.pid, t) for t in tasks(lg.pid)}
    t0 = time.monotonic()
    with open(log, "a") as f:
        f.write("".join("WORK %d\n" % i for i in range(NWORK)) + "ok end\n")

    # The worker is the thread that burns CPU now: the first to use 50 ms
    # (reading and shipping nine lines takes a fraction of that).
    def used():
        return {t: task_cpu_ns(lg.pid, t) - before.get(t, 0)
                for t in tasks(lg.pid)}
    it.wait_for(lambda: max(used().values()) >= 50 * 10**6, 30,
                "a thread of lugger to use 50 ms of CPU", proc=lg,
                detail=lambda: repr(used()))
    u = used()
    worker = max(u, key=u.get)

    def delivered():
        b = bodies(out)
        return sum(1 for x in b if str(x).startswith("WORK")), "ok end" in b

    stops = 0
    while stops < NSTOPS:
        n, end = delivered()
        if n >= NWORK - 1 or end:
            break
        if task_state(lg.pid, worker) != "R":
            time.sleep(0.02)
            continue
        # Mid-record: the worker is runnable and records are waiting.
        os.kill(lg.pid, signal.SIGSTOP)
        time.sleep(STOP_S)
        os.kill(lg.pid, signal.SIGCONT)
        stops += 1
        time.sleep(0.2)
    def all_delivered():
        if bodies(dead):
            it.fail("records dead-lettered under load: %r\n%s" % (
                bodies(dead), lg.stderr_tail()))
        return delivered() == (NWORK, True)

    it.wait_for(all_delivered, 60,
                "all WORK records and 'ok end' delivered", proc=lg,
                detail=lambda: "out %r, dead %r\n%s" % (
                    bodies(out), bodies(dead), lg.stderr_tail()))
    took = time.monotonic() - t0
    it.check(stops >= 2, "only %d SIGSTOPs landed while the worker was in "
             "a record: the test proved nothing" % stops)
    per_record = (took - stops * STOP_S) / NWORK
    it.check(bodies(dead) == [], "records dead-lettered under load: %r" %
             bodies(dead))
    it.check(it.metric_sum(port, "lugger_script_timeouts_total") == 0,
             "lugger_script_timeouts_total != 0 under load")
    it.check(not os.path.exists(os.path.join(wd.state, "poison.json")),
             "poison.json written under load")
    it.check(all(r.get("seen") for r in records(out)),
             "a record skipped the script")

    # Under the same load, a loop burning CPU is interrupted.
    t1 = time.monotonic()
    with open(log, "a") as f:
        f.write("LOOP_INTERP\nok after\n")
    it.wait_for(lambda: "LOOP_INTERP" in bodies(dead), 60,
                "LOOP_INTERP in the dead-letter file", proc=lg,
                detail=lg.stderr_tail)
    t_interrupt = time.monotonic() - t1
    err = [r for r in records(dead)
           if r.get("body") == "LOOP_INTERP"][0].get("lugger.error", "")
    it.check("script_timeout" in err and "of CPU time" in err,
             "LOOP_INTERP error: %r" % err)
    it.wait_for(lambda: "ok after" in bodies(out), 60, "'ok after' delivered",
                proc=lg)
    it.check(it.metric_sum(port, "lugger_script_timeouts_total") == 1,
             "lugger_script_timeouts_total != 1")
    it.check(it.http_get(port, "/readyz")[0] == 200, "/readyz not 200")
    for h in hogs:
        h.kill()
        h.wait()
    hogs.clear()
    lg.stop(timeout=30)
    return ("%d WORK records of ~100 ms CPU with %d hogs on the CPU and %d "
            "x %.1f s SIGSTOP mid-record: %.2f s wall per record on average "
            "(script_timeout %.1f s of CPU), none interrupted; the CPU loop "
            "was interrupted %.2f s after it was written" % (
                NWORK, HOGS, stops, STOP_S, per_record, TIMEOUT_S,
                t_interrupt))


if __name__ == "__main__":
    it.main("test_watchdog_load", main)
