#!/usr/bin/env python3
"""podman + runc write CRI logs (k8s-file log driver) in the kubelet's
/var/log/pods layout; lugger's `kubernetes` source reads them.

Containers run the workload of runtime/rt.py from a busybox-static root
filesystem, with their logs at `<pods>/<ns>_<pod>_<uid>/<container>/
<restart>.log` (`--log-opt path=`): nginx of pod shop/web-1 and app of pod
default/api-7 at the same time, then nginx again as restart 1 (1.log).
conmon writes `<time> <stream> <P|F> <message>`, cutting lines longer than
8 KiB into P chunks, and leaves output without a trailing newline as a
last P chunk.

Checked record by record, per file and per stream: the body is exactly
what the container printed (P chunks joined, CR and UTF-8 kept, empty line
kept), in the order printed; log.iostream is the stream; the time is the
timestamp of the CRI line the record starts at (read by an independent
parser) and lies within the container's run; the path metadata
(k8s.namespace.name, k8s.pod.name, k8s.pod.uid, k8s.container.name,
k8s.container.restart_count, k8s.node.name, log.file.path) is the pod's;
nothing else comes out. The last words without a newline arrive after
flush_timeout. The source has multiline = "java": the Java stack trace
on stderr (the exception line, its frames, "Caused by:", "... 2 more")
is one record, lines joined with "\n", at the time of its first line;
every other line stays a record of its own.

A fourth container, at the same time, runs a static Go program (built
with the go command at test time, CGO_ENABLED=0, copied into its root
filesystem) that logs two lines and dies of a nil dereference in a
goroutine, printing every goroutine (GOTRACEBACK=all); its CRI log is read
by a `file` source with format = "cri" and multiline = "go": the Go
runtime's panic text is one stderr record, exactly as conmon wrote it, the
log lines before it records of their own.
"""

import os
import re
import shutil
import signal
import subprocess
import time
import uuid

import lugger_it as it
from runtime import rt

NODE = "node-podman"

GO_SRC = r"""
package main

import (
	"log"
	"sync"
	"time"
)

type cache struct{ items map[string]string }

func (c *cache) get(k string) string { return c.items[k] }

func serve(c *cache, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		log.Printf("GET /items/k1")
		log.Printf("value %q", c.get("k1"))
	}()
}

func main() {
	log.Printf("listening on :8080")
	block := make(chan int)
	go func() { <-block }()
	var wg sync.WaitGroup
	serve(nil, &wg)
	wg.Wait()
	time.Sleep(time.Second)
}
"""


def build_go(wd):
    """GO_SRC as a static binary (standard library only, nothing fetched,
    the build cache in the work dir). Returns its path."""
    gobin = shutil.which("go")
    it.check(gobin is not None, "no go command (Debian's golang-go): run "
             "scripts/setup")
    src = wd.mk("gosrc")
    with open(os.path.join(src, "main.go"), "w") as f:
        f.write(GO_SRC)
    with open(os.path.join(src, "go.mod"), "w") as f:
        f.write("module example.com/gosvc\n\ngo 1.19\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GO") and k != "CGO_ENABLED"}
    env.update(GOCACHE=wd.p("gocache"), GOPATH=wd.p("gopath"), GOENV="off",
               GOPROXY="off", GOTOOLCHAIN="local", CGO_ENABLED="0")
    exe = wd.p("gosvc")
    r = subprocess.run([gobin, "build", "-o", exe, "."], cwd=src, env=env,
                       capture_output=True, text=True, timeout=300)
    it.check(r.returncode == 0, "go build failed: %s" % r.stderr)
    return exe


def go_expected(ref):
    """The records the Go container's CRI file must give with multiline =
    "go", from the reference parser's lines: stdout as is; on stderr the
    log lines alone, then the panic (from "panic: " to the end) as one."""
    out = [b for _, b in ref["stdout"]]
    err = [b for _, b in ref["stderr"]]
    k = next((i for i, b in enumerate(err) if b.startswith("panic: ")), None)
    it.check(k == 2, "go container: expected 2 log lines, then the panic, "
             "on stderr: %r" % err)
    crash = "\n".join(err[k:]).rstrip("\n")
    it.check(re.search(
        r"\Apanic: runtime error: invalid memory address or nil pointer "
        r"dereference\n\[signal SIGSEGV: [^\n]*\]\n\ngoroutine \d+ "
        r"\[running\]:\nmain\.\(\*cache\)\.get\((?s:.*)\ncreated by "
        r"main\.serve\n(?s:.*)\ngoroutine 1 \[", crash) is not None,
        "go container: not the expected panic:\n%s" % crash)
    it.check(out == ["gosvc starting", "gosvc exited 2"],
             "go container stdout: %r" % out)
    return {"stdout": out, "stderr": err[:k] + [crash]}, crash


class Container:
    def __init__(self, pods, ns, pod, uid, name, restart):
        self.ns, self.pod, self.uid, self.name = ns, pod, uid, name
        self.restart = restart
        d = os.path.join(pods, "%s_%s_%s" % (ns, pod, uid), name)
        os.makedirs(d, exist_ok=True)
        self.log = os.path.join(d, "%d.log" % restart)
        self.load = rt.Workload("%s-%s-%d" % (pod, name, restart), plain=300)

    def meta(self):
        return {"k8s.namespace.name": self.ns, "k8s.pod.name": self.pod,
                "k8s.pod.uid": self.uid, "k8s.container.name": self.name,
                "k8s.container.restart_count": self.restart,
                "k8s.node.name": NODE, "log.file.path": self.log,
                "container.id": None}


def run():
    it.require_binary()
    with rt.work_dir("runtime-podman") as wd:
        podman = rt.Podman()
        pods = wd.mk("pods")
        web_uid, api_uid = str(uuid.uuid4()), str(uuid.uuid4())
        first = [Container(pods, "shop", "web-1", web_uid, "nginx", 0),
                 Container(pods, "default", "api-7", api_uid, "app", 0)]
        restart = Container(pods, "shop", "web-1", web_uid, "nginx", 1)
        cs = first + [restart]
        out = wd.p("out.jsonl")
        gosvc = build_go(wd)
        golog = os.path.join(wd.mk("golog"), "0.log")
        conf = it.write_config(
            wd.p("lugger.lua"),
            {"state_dir": wd.state, "workers": 2,
             "checkpoint_interval": "200ms", "rescan_interval": "1s"},
            {"pods": {"type": "kubernetes", "pods_dir": pods,
                      "docker_dir": "", "kube_api": "off",
                      "read_from": "head", "flush_timeout": "2s",
                      "multiline": "java"},
             "go": {"type": "file", "paths": [golog], "format": "cri",
                    "read_from": "head", "multiline": "go"}},
            {"main": {"sources": ["pods", "go"], "outputs": ["out"]}},
            {"out": {"type": "file", "path": out, "fsync": "never"}})
        lug = it.Lugger(conf, env={"NODE_NAME": NODE})
        try:
            rootfs = rt.make_rootfs(wd.p("rootfs"))
            t_min = rt.now_ns()
            t0 = time.monotonic()
            # Each container of the first pair runs in a copy of the root
            # filesystem: podman writes /etc/hosts and friends into it.
            procs = [podman.start(rt.make_rootfs(wd.p("rootfs-%d" % i)),
                                  c.log, c.load.script,
                                  "lit-%s-%s" % (c.pod, c.name))
                     for i, c in enumerate(first)]
            gofs = rt.make_rootfs(wd.p("rootfs-go"))
            shutil.copy2(gosvc, os.path.join(gofs, "bin", "gosvc"))
            procs.append(podman.start(
                gofs, golog, "echo gosvc starting; GOTRACEBACK=all "
                "/bin/gosvc; echo gosvc exited $?", "lit-gosvc"))
            for p in procs:
                podman.wait(p)
            podman.wait(podman.start(rootfs, restart.log, restart.load.script,
                                     "lit-web-1-nginx-1"))
            run_s = time.monotonic() - t0
            t_max = rt.now_ns()
            it.log("containers done in %.2f s" % run_s)
            # The Go container: 2 stdout lines, 2 log lines, the panic.
            want = sum(c.load.total(c.load.expected_multiline())
                       for c in cs) + 5
            it.wait_for(lambda: rt.count_lines(out) >= want, 30,
                        "%d records from the podman logs" % want, proc=lug,
                        detail=lambda: "%d so far" % rt.count_lines(out))
            deliver_s = time.monotonic() - t0
            time.sleep(0.5)  # a duplicate or a stray record would show now
            lug.stop(signal.SIGTERM)
        finally:
            lug.kill9()
            podman.stop()
        by = rt.records_by_path(out)
        it.check(golog in by, "no records of the Go container's log")
        go_ref = rt.read_cri_file(golog)
        go_want, go_crash = go_expected(go_ref)
        go_checked = rt.check_file_records(
            "podman gosvc", by.pop(golog), go_want,
            rt.group_reference(go_ref, go_want), t_min, t_max)
        it.check(set(by) == set(c.log for c in cs), "records for files %r, "
                 "expected %r" % (sorted(by), sorted(c.log for c in cs)))
        checked = chunks = cri_lines = nbytes = traces = 0
        for c in cs:
            counts = {}
            ref = rt.read_cri_file(c.log, counts)
            it.check(counts.get("partial", 0) >= 30, "%s: only %d P chunks "
                     "in %s; conmon should cut the long lines" % (
                         c.log, counts.get("partial", 0), c.log))
            chunks += counts["partial"]
            cri_lines += counts["lines"]
            nbytes += os.path.getsize(c.log)
            want_ml = c.load.expected_multiline()
            checked += rt.check_file_records(
                "podman %s/%s/%d" % (c.pod, c.name, c.restart), by[c.log],
                want_ml, rt.group_reference(ref, want_ml), t_min, t_max,
                c.meta())
            traces += sum(1 for r in by[c.log] if r["body"].startswith(
                "Exception in thread") and r["body"].count("\n") ==
                len(rt.JAVA_TRACE) - 1)
        rt.check_nothing_left(wd.path)
        it.check(traces == len(cs), "%d Java traces as one record, "
                 "expected %d" % (traces, len(cs)))
        return ("%d records from %d CRI lines (%d P chunks, %d bytes) of 3 "
                "podman containers in a pods_dir tree exact (body, stream, "
                "time, order, k8s metadata; each Java trace of %d lines one "
                "record with multiline = \"java\"); a Go container's %d "
                "records exact, its real panic (%d bytes, %d lines, every "
                "goroutine) one of them with multiline = \"go\"; containers "
                "ran %.2f s, all delivered after %.2f s" % (
                    checked, cri_lines, chunks, nbytes, len(rt.JAVA_TRACE),
                    go_checked, len(go_crash), go_crash.count("\n") + 1,
                    run_s, deliver_s))


if __name__ == "__main__":
    rt.main("runtime_podman", run)
