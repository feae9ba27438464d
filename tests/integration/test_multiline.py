#!/usr/bin/env python3
"""Multiline grouping on real stack traces.

1. Presets: Java traces printed by a real JVM (a class compiled with javac
   and run with java: `Exception in thread`, `\\tat`, `Caused by:`,
   `... N more`), Python tracebacks printed by a real python3 (a plain one
   and a chained one), and Go panics as the Go runtime prints them (text:
   no Go toolchain here), each between ordinary log lines, in files read
   with multiline = "java" / "python" / "go". Each trace must be exactly
   one record whose body is the trace's text; every other line its own
   record, in order. A CRI file whose stderr carries a Java trace (one of
   its lines split into P + F chunks) interleaved with stdout lines gives
   one stderr record for the trace, with the first line's time.
2. kill -9 in the middle of a group: the checkpoint stays at the group's
   first line; after the restart the whole trace arrives as one record,
   and nothing else is read twice.
"""

import json
import os
import signal
import subprocess
import time

import lugger_it as it

JAVA_SRC = r"""
public class Boom {
  static void inner(int n) {
    if (n == 0) throw new IllegalStateException("inner failure");
    inner(n - 1);
  }
  static void outer() {
    try { inner(2); }
    catch (IllegalStateException e) { throw new RuntimeException("outer failure", e); }
  }
  public static void main(String[] a) {
    if (a.length > 0) {
      try { outer(); } catch (RuntimeException e) { e.printStackTrace(); }
      return;
    }
    outer();
  }
}
"""

PY_PLAIN = r"""
def parse(s):
    return int(s)
def handler(req):
    return parse(req["n"])
handler({"n": "x1"})
"""

PY_CHAINED = r"""
import json
def load(s):
    try:
        return json.loads(s)
    except ValueError as e:
        raise RuntimeError("config unreadable") from e
load("{bad")
"""

# As the Go runtime prints them (go1.21 format): a nil dereference with
# two goroutines, and a plain panic(fmt.Sprintf(...)).
GO_PANICS = [
    "panic: runtime error: invalid memory address or nil pointer dereference\n"
    "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4a1c3e]\n"
    "\n"
    "goroutine 7 [running]:\n"
    "main.(*Store).Get(0x0, {0x5200e8, 0x3})\n"
    "\t/src/app/store.go:31 +0x1e\n"
    "main.handler({0x55f6a0, 0xc0000a8000}, 0xc0000b2000)\n"
    "\t/src/app/main.go:18 +0x4b\n"
    "created by main.serve in goroutine 1\n"
    "\t/src/app/main.go:40 +0x8f\n"
    "\n"
    "goroutine 1 [chan receive]:\n"
    "main.main()\n"
    "\t/src/app/main.go:52 +0x125\n",
    "panic: unexpected state 3\n"
    "\n"
    "goroutine 1 [running]:\n"
    "main.step(...)\n"
    "\t/src/app/fsm.go:12\n"
    "main.main()\n"
    "\t/src/app/main.go:9 +0x65\n",
]


def java_traces(wd):
    """Two real traces from the JVM: uncaught (the thread's handler) and
    printStackTrace."""
    src = wd.p("Boom.java")
    with open(src, "w") as f:
        f.write(JAVA_SRC)
    cls = wd.mk("javacls")
    r = subprocess.run(["javac", "-d", cls, src], capture_output=True,
                       text=True, timeout=120)
    it.check(r.returncode == 0, "javac failed: %s" % r.stderr)
    out = []
    for args in ([], ["caught"]):
        r = subprocess.run(["java", "-cp", cls, "Boom"] + args,
                           capture_output=True, text=True, timeout=120)
        it.check(r.stderr.count("\tat ") >= 3 and "Caused by:" in r.stderr
                 and "more" in r.stderr,
                 "java printed no usable trace: %r" % r.stderr)
        out.append(r.stderr)
    return out


def python_traces():
    out = []
    for prog in (PY_PLAIN, PY_CHAINED):
        r = subprocess.run(["python3", "-c", prog], capture_output=True,
                           text=True, timeout=60)
        it.check(r.returncode != 0 and
                 r.stderr.startswith("Traceback (most recent call last):"),
                 "python3 printed no traceback: %r" % r.stderr)
        out.append(r.stderr)
    return out


def write_log(path, traces, tag):
    """Ordinary lines around each trace; returns the expected bodies."""
    want = []
    with open(path, "w") as f:
        for i, tr in enumerate(traces):
            for line in ("2024-05-01 12:00:%02d INFO %s request %d ok" %
                         (i, tag, i),
                         "2024-05-01 12:00:%02d ERROR %s request %d failed" %
                         (i, tag, i)):
                f.write(line + "\n")
                want.append(line)
            f.write(tr if tr.endswith("\n") else tr + "\n")
            want.append(tr.rstrip("\n"))
        f.write("2024-05-01 12:01:00 INFO %s done\n" % tag)
        want.append("2024-05-01 12:01:00 INFO %s done" % tag)
    return want


def cri(ts, stream, tag, msg):
    return "2024-05-01T12:00:%02d.%09dZ %s %s %s\n" % (ts, ts * 1000,
                                                       stream, tag, msg)


def presets(wd, java, py):
    files = {
        "java": (wd.p("logs", "java.log"), java),
        "python": (wd.p("logs", "python.log"), py),
        "go": (wd.p("logs", "go.log"), GO_PANICS),
    }
    want = {}
    for name, (path, traces) in files.items():
        want[path] = write_log(path, traces, name)
    # CRI: the JVM's stderr with stdout lines in between; one trace line
    # split in two chunks.
    jl = java[0].rstrip("\n").split("\n")
    cpath = wd.p("logs", "cri.log")
    with open(cpath, "w") as f:
        t = 1
        f.write(cri(t, "stdout", "F", "serving")); t += 1
        for k, line in enumerate(jl):
            if k == 2:
                f.write(cri(t, "stderr", "P", line[:7])); t += 1
                f.write(cri(t, "stdout", "F", "GET /a 200")); t += 1
                f.write(cri(t, "stderr", "F", line[7:])); t += 1
            else:
                f.write(cri(t, "stderr", "F", line)); t += 1
            if k == 1:
                f.write(cri(t, "stdout", "F", "GET /b 200")); t += 1
        f.write(cri(t, "stdout", "F", "GET /c 200")); t += 1
        f.write(cri(t, "stderr", "F", "restarting")); t += 1
    sources = {}
    for name, (path, _) in files.items():
        sources[name] = {"type": "file", "paths": [path], "read_from": "head",
                         "format": "line", "multiline": name}
    sources["cri"] = {"type": "file", "paths": [cpath], "read_from": "head",
                      "format": "cri", "multiline": "java"}
    out = wd.p("out.jsonl")
    conf = it.write_config(
        wd.p("presets.lua"),
        {"state_dir": wd.p("state1"), "workers": 2},
        sources, {"p": {"sources": list(sources), "outputs": ["o"]}},
        {"o": {"type": "file", "path": out}})
    lug = it.Lugger(conf, once=True)
    lug.wait(120)
    it.check(lug.returncode == 0, "lugger --once exited %r: %s" % (
        lug.returncode, lug.stderr_tail()))
    recs = it.read_jsonl(out)
    by_file = {}
    for r in recs:
        by_file.setdefault(r["log.file.path"], []).append(r)
    ntr = 0
    for path, bodies in want.items():
        got = [r["body"] for r in by_file.get(path, [])]
        if got != bodies:
            it.fail("%s: records differ from the expected groups:\n"
                    "want %s\ngot  %s" % (os.path.basename(path),
                                          json.dumps(bodies, indent=1),
                                          json.dumps(got, indent=1)))
        ntr += sum(1 for b in bodies if "\n" in b)
    got = by_file.get(cpath, [])
    trace = java[0].rstrip("\n")
    stdout = [r["body"] for r in got if r.get("log.iostream") == "stdout"]
    stderr = [r for r in got if r.get("log.iostream") == "stderr"]
    it.check(stdout == ["serving", "GET /b 200", "GET /a 200", "GET /c 200"],
             "cri stdout records: %r" % stdout)
    it.check([r["body"] for r in stderr] == [trace, "restarting"],
             "cri stderr records: %r" % [r["body"] for r in stderr])
    it.check(stderr[0]["time"] == "2024-05-01T12:00:02.000002000Z",
             "the trace's time is not its first line's: %r" %
             stderr[0]["time"])
    return ntr + 1


def kill_mid_group(wd, java):
    trace = java[0]
    lines = trace.split("\n")
    first, rest = "\n".join(lines[:4]) + "\n", "\n".join(lines[4:])
    log = wd.p("logs2", "app.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    before = "2024-05-01 INFO one\n2024-05-01 ERROR two\n"
    with open(log, "w") as f:
        f.write(before + first)
    state = wd.p("state2")
    out = wd.p("out2.jsonl")
    conf = it.simple_config(
        wd, [log], out, name="kill.lua",
        settings={"state_dir": state, "checkpoint_interval": "100ms"},
        source={"multiline": {"continue": r"^\s+at\s|^\s*\.\.\.\s+\d+"
                              r"\s+more|^Caused by: ", "timeout": "60s"}})
    lug = it.Lugger(conf)
    group_off = len(before.split("\n")[0]) + 1 + len(before.split("\n")[1]) + 1

    def delivered_two():
        if not os.path.exists(out):
            return False
        return len(it.read_jsonl(out, allow_partial_tail=True)) >= 2
    it.wait_for(delivered_two, 30, "the two lines before the trace",
                proc=lug)
    # The checkpoint reaches the group's first line and stays there.
    it.wait_for(lambda: it.checkpoint_offsets(state).get(log) == group_off,
                30, "checkpoint at the trace's first line", proc=lug,
                detail=lambda: repr(it.checkpoint_offsets(state)))
    for _ in range(10):
        off = it.checkpoint_offsets(state).get(log)
        it.check(off == group_off, "checkpoint %r moved past the open "
                 "group's first line %d" % (off, group_off))
        time.sleep(0.05)
    lug.kill9()
    with open(log, "a") as f:
        f.write(rest + "after\n")
    lug2 = it.Lugger(conf, once=True)
    lug2.wait(60)
    it.check(lug2.returncode == 0, "restart exited %r: %s" % (
        lug2.returncode, lug2.stderr_tail()))
    bodies = [r["body"] for r in it.read_jsonl(out)]
    want = ["2024-05-01 INFO one", "2024-05-01 ERROR two",
            trace.rstrip("\n"), "after"]
    it.check(bodies == want, "after kill -9 mid-group:\nwant %s\ngot  %s" % (
        json.dumps(want, indent=1), json.dumps(bodies, indent=1)))


def run():
    it.require_binary()
    with it.WorkDir("multiline") as wd:
        wd.mk("logs")
        java = java_traces(wd)
        py = python_traces()
        n = presets(wd, java, py)
        kill_mid_group(wd, java)
        return ("%d real traces (java, python, go, java in CRI) -> one record "
                "each; kill -9 mid-group: checkpoint held at its first line, "
                "the whole trace once after the restart" % n)


if __name__ == "__main__":
    it.main("multiline", run)
