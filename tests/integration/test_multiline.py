#!/usr/bin/env python3
"""Multiline grouping on real stack traces.

1. Presets: Java traces printed by a real JVM (a class compiled with javac
   and run with java: `Exception in thread`, `\\tat`, `Caused by:`,
   `... N more`), Python tracebacks printed by a real python3 (a plain one
   and a chained one), and Go crashes printed by a real Go runtime
   (Debian's golang-go, 1.19): a program built at test time from the
   standard library only, run once per kind of crash (nil dereference
   with every goroutine, panic(fmt.Sprintf(...)), a panic in a goroutine
   another function started, a re-panic "[recovered]", the deadlock and
   stack-overflow fatal errors, a SIGQUIT dump, log.Panicf, log.Fatalf,
   and `go run`'s "exit status 2"), its whole stderr (its own log lines,
   then the crash) into the log; each between ordinary log lines, in files
   read with multiline = "java" / "python" / "go". Each trace must be
   exactly one record whose body is the trace's text as printed; every
   other line its own record, in order. A CRI file whose stderr carries a Java trace (one of
   its lines split into P + F chunks) interleaved with stdout lines gives
   one stderr record for the trace, with the first line's time.
2. kill -9 in the middle of a group: the checkpoint stays at the group's
   first line; after the restart the whole trace arrives as one record,
   and nothing else is read twice.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
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

# What Go services print when they die, one kind per run (argv[1]); each
# run logs a line or two with the log package first.
GO_SRC = r"""
package main

import (
	"fmt"
	"log"
	"os"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
)

type Store struct{ m map[string]int }

func (s *Store) Get(k string) int { return s.m[k] }

func handler(s *Store, k string) int { return s.Get(k) }

// A nil *Store dereferenced while other goroutines wait or sleep.
func nilDeref() {
	var wg sync.WaitGroup
	ch := make(chan int)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); <-ch }()
	}
	go func() { time.Sleep(time.Hour) }()
	time.Sleep(20 * time.Millisecond)
	log.Printf("GET /items/k")
	var s *Store
	fmt.Println(handler(s, "k"))
}

func step(state int) {
	if state == 3 {
		panic(fmt.Sprintf("unexpected state %d", state))
	}
}

func worker(id int, jobs []int) {
	for _, j := range jobs {
		_ = 10 / (j - id)
	}
}

func serve() { go worker(2, []int{1, 2, 3}) }

func cleanup() {
	defer func() {
		if r := recover(); r != nil {
			panic(fmt.Errorf("cleanup after %v failed", r))
		}
	}()
	panic("first failure")
}

func main() {
	log.Printf("starting %s pid=%d", os.Args[1], os.Getpid())
	switch os.Args[1] {
	case "nil":
		nilDeref()
	case "sprintf":
		for i := 0; i < 5; i++ {
			step(i)
		}
	case "goroutine":
		serve()
		time.Sleep(5 * time.Second)
	case "fatal":
		log.Fatalf("config %q: missing key %s", "/etc/app.yaml", "listen")
	case "recovered":
		cleanup()
	case "deadlock":
		<-make(chan int)
	case "overflow":
		// A 4 MiB limit instead of the default 1 GB: the same fatal
		// error, in milliseconds instead of seconds.
		debug.SetMaxStack(4 << 20)
		var f func(int) int
		f = func(n int) int { return f(n+1) + 1 }
		f(0)
	case "quit":
		// What kill -QUIT (a goroutine dump) prints.
		syscall.Kill(os.Getpid(), syscall.SIGQUIT)
		time.Sleep(5 * time.Second)
	case "logpanic":
		log.Panicf("bad request %d", 7)
	}
	log.Printf("no crash")
}
"""

# (argv[1], extra environment, a regex the crash text must match, so that
# a Go printing something else fails here and not as a grouping error).
# "fatal" is log.Fatalf: log lines only, no crash text.
GO_RUNS = [
    ("nil", {"GOTRACEBACK": "all"},
     r"\Apanic: runtime error: invalid memory address or nil pointer "
     r"dereference\n\[signal SIGSEGV: [^\n]*\]\n\ngoroutine \d+ \[running\]:"
     r"(?s:.*\ngoroutine \d+ \[){3}(?s:.*)\ncreated by main\.nilDeref\n"),
    ("sprintf", {}, r"\Apanic: unexpected state 3\n\ngoroutine 1 "
     r"\[running\]:\nmain\.step\(\.\.\.\)\n\t"),
    ("goroutine", {}, r"\Apanic: runtime error: integer divide by zero\n"
     r"(?s:.*)\ncreated by main\.serve\n\t"),
    ("fatal", {}, None),
    ("recovered", {}, r"\Apanic: first failure \[recovered\]\n\tpanic: "
     r"cleanup after first failure failed\n"),
    ("deadlock", {}, r"\Afatal error: all goroutines are asleep - "
     r"deadlock!\n\ngoroutine 1 \[chan receive\]:\n"),
    ("overflow", {}, r"\Aruntime: goroutine stack exceeds \d+-byte limit\n"
     r"runtime: sp=[^\n]*\nfatal error: stack overflow\n\nruntime stack:\n"
     r"(?s:.*)\n\.\.\.additional frames elided\.\.\.\n"),
    ("quit", {}, r"\ASIGQUIT: quit\nPC=0x[0-9a-f]+ m=\d+ sigcode=\d+\n\n"
     r"goroutine (?s:.*)\nrip +0x[0-9a-f]+\n"),
    ("logpanic", {}, r"\Apanic: bad request 7\n\ngoroutine 1 \[running\]:"
     r"\nlog\.Panicf\("),
]

# The lines the program logs itself ("2006/01/02 15:04:05 msg").
GO_LOG_LINE = re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ")

# Hand-written in the go1.21+ format, which Go 1.19 does not print:
# "created by main.serve in goroutine 1" names the creator's goroutine
# since Go 1.21. A nil dereference with two goroutines, and a plain
# panic(fmt.Sprintf(...)) with an inlined frame.
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


def go_crashes():
    """Builds GO_SRC with the go command (standard library only, nothing
    fetched) and runs each kind of crash. Returns, per run, its whole
    stderr and the records it must give: each log line alone, then the
    crash text (up to the end) as one record; and a summary."""
    gobin = shutil.which("go")
    it.check(gobin is not None, "no go command (Debian's golang-go): run "
             "scripts/setup")
    runs = []
    # Under the system temp dir, not the test's /dev/shm work dir: a
    # container's /dev/shm is often mounted noexec, and the program runs.
    with it.WorkDir("multiline-go", base=tempfile.gettempdir()) as gd:
        src = gd.mk("src")
        with open(os.path.join(src, "main.go"), "w") as f:
            f.write(GO_SRC)
        with open(os.path.join(src, "go.mod"), "w") as f:
            f.write("module example.com/crash\n\ngo 1.19\n")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("GO") and k != "CGO_ENABLED"}
        # The build cache in the work dir (Debian's Go ships the standard
        # library compiled, so a fresh cache builds in well under a
        # second); no proxy, no user config, no toolchain switch; a static
        # binary.
        env.update(GOCACHE=gd.p("gocache"), GOPATH=gd.p("gopath"),
                   GOENV="off", GOPROXY="off", GOTOOLCHAIN="local",
                   CGO_ENABLED="0")
        t0 = time.monotonic()
        exe = gd.p("crash")
        r = subprocess.run([gobin, "build", "-o", exe, "."], cwd=src,
                           env=env, capture_output=True, text=True,
                           timeout=300)
        it.check(r.returncode == 0, "go build failed: %s" % r.stderr)
        build_s = time.monotonic() - t0
        for mode, extra, pat in GO_RUNS:
            r = subprocess.run([exe, mode], env=dict(env, **extra),
                               capture_output=True, text=True, timeout=60)
            runs.append((mode, r.returncode, r.stderr, pat))
        # `go run` (the build is cached by now) adds "exit status 2" after
        # its child's crash, on the same stderr.
        r = subprocess.run([gobin, "run", ".", "sprintf"], cwd=src, env=env,
                           capture_output=True, text=True, timeout=300)
        runs.append(("go run", r.returncode, r.stderr,
                     r"\Apanic: unexpected state 3\n(?s:.*)\nexit status 2"
                     r"\n\Z"))
        all_s = time.monotonic() - t0
    out, sizes = [], []
    for mode, rc, err, pat in runs:
        it.check(rc != 0, "go %s: exit status 0: %r" % (mode, err))
        lines = err.split("\n")
        k = 0
        while k < len(lines) and GO_LOG_LINE.match(lines[k]):
            k += 1
        logs, crash = lines[:k], "\n".join(lines[k:])
        it.check(logs, "go %s: no log line first: %r" % (mode, err))
        if pat is None:
            it.check(crash == "", "go %s: more than log lines: %r" % (
                mode, err))
            out.append((err, logs))
            continue
        it.check(re.search(pat, crash) is not None,
                 "go %s: the crash text is not as expected (%s):\n%s" % (
                     mode, pat, crash))
        sizes.append("%s %d B/%d lines" % (mode, len(crash),
                                           crash.count("\n")))
        out.append((err, logs + [crash.rstrip("\n")]))
    summary = ("go1.19 build %.2f s, build+runs %.2f s; crashes: %s" % (
        build_s, all_s, ", ".join(sizes)))
    it.log(summary)
    return out, summary


def write_log(path, chunks, tag):
    """Ordinary lines around each chunk (the text written, the records it
    must give); returns the expected bodies."""
    want = []
    with open(path, "w") as f:
        for i, (text, bodies) in enumerate(chunks):
            for line in ("2024-05-01 12:00:%02d INFO %s request %d ok" %
                         (i, tag, i),
                         "2024-05-01 12:00:%02d ERROR %s request %d failed" %
                         (i, tag, i)):
                f.write(line + "\n")
                want.append(line)
            f.write(text if text.endswith("\n") else text + "\n")
            want.extend(bodies)
        f.write("2024-05-01 12:01:00 INFO %s done\n" % tag)
        want.append("2024-05-01 12:01:00 INFO %s done" % tag)
    return want


def traces_alone(traces):
    """Chunks of traces that are one record each."""
    return [(tr, [tr.rstrip("\n")]) for tr in traces]


def cri(ts, stream, tag, msg):
    return "2024-05-01T12:00:%02d.%09dZ %s %s %s\n" % (ts, ts * 1000,
                                                       stream, tag, msg)


def presets(wd, java, py, go):
    files = {
        "java": (wd.p("logs", "java.log"), traces_alone(java)),
        "python": (wd.p("logs", "python.log"), traces_alone(py)),
        "go": (wd.p("logs", "go.log"), go + traces_alone(GO_PANICS)),
    }
    want = {}
    for name, (path, chunks) in files.items():
        want[path] = write_log(path, chunks, name)
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
        go, go_summary = go_crashes()
        n = presets(wd, java, py, go)
        kill_mid_group(wd, java)
        return ("%d traces (java, python, go: all real but 2 go1.21-format "
                "ones; java in CRI) -> one record each; kill -9 mid-group: "
                "checkpoint held at its first line, the whole trace once "
                "after the restart; %s" % (n, go_summary))


if __name__ == "__main__":
    it.main("multiline", run)
