#!/usr/bin/env python3
"""I/O errors under state_dir on a running lugger: EIO injected by strace
(Debian's; -P limits it to the checkpoint store's files) into the fsync of
the temp file, the rename over checkpoints.json, and the fsync of the
directory, each for 3 s, while two writers append 200 lines/s.

For each fault: /readyz 503 naming checkpoints.json, the step and
"Input/output error"; checkpoints.json stays valid JSON; lines keep being
delivered; lugger_checkpoint_save_failures_total rises; the log says it
once (one checkpoint error line), not once per save (every 200 ms). With
strace detached: "saved again after N failed attempts" and /readyz 200.
At the end lugger is killed (SIGKILL) and started again: no line lost,
and little read again (the journal was kept through the faults).
"""

import json
import os
import shutil
import signal
import subprocess
import time

import lugger_it as it

LINE_LEN = 100
RATE = 200

FAULTS = [
    ("fsync of the temp file", "checkpoints.json.tmp", "fsync", "fsync:"),
    ("rename", "checkpoints.json.tmp", "rename,renameat,renameat2",
     "rename:"),
    ("fsync of the directory", None, "fsync", "fsync of directory:"),
]


def readyz(port):
    st, text = it.http_get(port, "/readyz", timeout=5)
    return st or 0, text or ""


def inject(pid, path, calls, trace):
    st = subprocess.Popen(
        ["strace", "-f", "-qq", "-p", str(pid), "-P", path, "-o", trace,
         "-e", "trace=" + calls, "-e", "inject=%s:error=EIO" % calls],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached to every thread
    it.check(st.poll() is None, "strace exited: %r" % st.returncode)
    return st


def main():
    it.require_binary()
    if shutil.which("strace") is None:
        it.skip("strace is not installed (scripts/setup installs it)")
    with it.WorkDir("state-eio") as wd:
        return run(wd)


def run(wd):
    port = it.free_port()
    state = wd.state
    paths = [os.path.join(wd.logs, "a.log"), os.path.join(wd.logs, "b.log")]
    out = wd.p("out.jsonl")
    conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")], out,
                            settings={"http": "127.0.0.1:%d" % port,
                                      "checkpoint_interval": "200ms"})
    cpfile = os.path.join(state, "checkpoints.json")

    for p in paths:
        open(p, "wb").close()
    writer = it.PacedWriter(paths, RATE, LINE_LEN, burst=5)
    writer.start()
    lg = it.Lugger(conf)
    seen = []
    try:
        it.wait_for(lambda: readyz(port)[0] == 200, 30, "/readyz 200",
                    proc=lg)
        it.wait_for(lambda: os.path.exists(cpfile), 10, "checkpoints.json",
                    proc=lg)
        for name, rel, calls, step in FAULTS:
            target = os.path.join(state, rel) if rel else state
            m0 = it.metric_sum(port, "lugger_checkpoint_save_failures_total")
            n_log = len(lg.log_records())
            trace = wd.p("strace-%s.txt" % calls.split(",")[0])
            st = inject(lg.pid, target, calls, trace)
            try:
                it.wait_for(lambda: readyz(port)[0] == 503, 15,
                            "/readyz 503 with %s failing" % name, proc=lg)
                n0 = it.jsonl_count(out)
                for _ in range(6):
                    with open(cpfile) as f:
                        json.load(f)  # a whole store all along
                    time.sleep(0.5)
                code, text = readyz(port)
            finally:
                st.send_signal(signal.SIGINT)  # detaches; lugger runs on
                st.wait(10)
            it.check(code == 503 and "checkpoints.json" in text and step in
                     text and "Input/output error" in text,
                     "/readyz does not name the %s fault: %r" % (name, text))
            it.check(it.jsonl_count(out) > n0, "delivery stopped with %s failing"
                     % name)
            fails = it.metric_sum(
                port, "lugger_checkpoint_save_failures_total") - m0
            it.check(fails > 1, "lugger_checkpoint_save_failures_total rose "
                     "by %r with %s failing for 3 s" % (fails, name))
            it.wait_for(lambda: readyz(port)[0] == 200, 15,
                        "/readyz 200 once %s works" % name, proc=lg)
            during = lg.log_records()[n_log:]
            errs = [r for r in during if r.get("component") == "checkpoint"
                    and r.get("level") == "error"]
            it.check(len(errs) == 1 and step in errs[0]["msg"],
                     "want one checkpoint error for %s (%d failed saves), "
                     "got %r" % (name, fails, [r["msg"][:200] for r in errs]))
            it.check(any("saved again after" in str(r.get("msg"))
                         for r in during),
                     "no \"saved again\" after %s\n%s" % (
                         name, lg.stderr_tail()))
            injected = open(trace).read().count("(INJECTED)")
            it.check(injected > 1, "strace injected %d errors into %s" % (
                injected, name))
            seen.append("%s: %d failed saves" % (name, fails))
        time.sleep(1.0)
        lg.kill9()
        lg = it.Lugger(conf)
        it.wait_for(lambda: readyz(port)[0] == 200, 30, "/readyz 200 after "
                    "the restart", proc=lg)
        writer.stop()
        final = dict(writer.written)
        it.wait_for(lambda: it.delivered_all(out, final, LINE_LEN), 60, "every line delivered",
                    interval=0.3, proc=lg)
        lg.stop()
    finally:
        writer.halt()
        lg.kill9()
    tr = it.SeqTracker(expected_len=LINE_LEN)
    for r in it.read_jsonl(out):
        tr.add(r)
    lost, dups, missing, _ = tr.summary(final)
    it.check(lost == 0, "%d lines lost (first %s)" % (lost, missing))
    it.check(dups < RATE // 2, "%d lines delivered twice after the kill"
             % dups)
    return "EIO injected: %s; one error line each; kill -9 after: 0 lost, " \
           "%d duplicated" % ("; ".join(seen), dups)


if __name__ == "__main__":
    it.main("test_state_eio", main)
