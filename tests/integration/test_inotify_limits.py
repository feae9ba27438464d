#!/usr/bin/env python3
"""inotify limits: lugger runs as a user whose inotify instances, or
watches, another process of the same user has used up.

The limits are per user, so the test needs no sysctl change: lugger and a
helper (tests/integration/inotify_hog.py) run as uid 54321, a uid nothing
else on the machine uses (so other tests running at the same time keep
their inotify), and the helper takes what the limit allows.

1. No instance left (fs.inotify.max_user_instances used up): lugger says
   so once, with the limit and the sysctl to raise; lugger_inotify_available
   is 0; lines appended to existing files and a file created later are all
   delivered (polling every rescan_interval, 500 ms here).
2. No watch left (fs.inotify.max_user_watches used up; the helper keeps
   one instance free for lugger): one warning for all directories, with
   the numbers and the sysctl; lugger_inotify_unwatched_directories counts
   the directories; lines in files of 5 unwatched directories, and in a
   file created in a new directory, are all delivered. When the helper lets
   go, the next rescan watches them (the gauge drops to 0).
"""

import os
import subprocess
import sys
import time

import lugger_it as it

UID = 54321
LINE_LEN = 80


def hog(mode, wd, ndirs=0):
    """Starts the helper as UID; returns it once it has taken the limit."""
    # The system interpreter: the one running this test may sit under a
    # home directory the other uid cannot read.
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else \
        sys.executable
    cmd = [py, os.path.join(os.path.dirname(__file__),
                                        "inotify_hog.py"), mode, wd.p("hog")]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         preexec_fn=lambda: (os.setgid(UID), os.setuid(UID)))
    line = p.stdout.readline().decode().strip()
    it.check(line.startswith("ready"), "inotify_hog %s: %r" % (mode, line))
    it.log("inotify_hog %s: %s" % (mode, line))
    return p


def release(p):
    p.stdin.close()
    p.wait(timeout=30)


def write(path, fid, seqs):
    with open(path, "ab") as f:
        for s in seqs:
            f.write(it.make_line(fid, s, LINE_LEN))


def delivered(out, want):
    tr = it.SeqTracker(expected_len=LINE_LEN)
    if os.path.exists(out):
        for r in it.read_jsonl(out, allow_partial_tail=True):
            tr.add(r)
    return all(tr.delivered(fid) >= n for fid, n in want.items())


def scenario(wd, name, mode, check_log, metric, metric_want):
    port = it.free_port()
    dirs = [wd.mk("logs", name, "d%d" % i) for i in range(5)]
    files = [os.path.join(d, "app.log") for d in dirs]
    for fid, p in enumerate(files):
        write(p, fid, range(10))
    out = wd.p(name + ".jsonl")
    conf = it.simple_config(
        wd, [os.path.join(wd.logs, name, "*", "*.log")], out,
        name=name + ".lua",
        settings={"rescan_interval": "500ms",
                  "state_dir": wd.mk("state-" + name),
                  "http": "127.0.0.1:%d" % port})
    wd.chown_tree(UID, UID)
    h = hog(mode, wd)
    lg = it.Lugger(conf, user=UID)
    try:
        want = {fid: 10 for fid in range(len(files))}
        it.wait_for(lambda: delivered(out, want), 30,
                    "%s: the files' first lines" % name, proc=lg)
        msgs = [str(r.get("msg")) for r in lg.log_records()
                if "fs.inotify" in str(r.get("msg"))]
        it.check(len(msgs) == 1 and check_log in msgs[0] and
                 "sysctl -w" in msgs[0],
                 "%s: expected one inotify warning naming %s and the sysctl: "
                 "%r" % (name, check_log, msgs))
        got = it.metric_sum(port, metric)
        it.check(metric_want(got), "%s: %s = %r" % (name, metric, got))
        # Appends and a new file in a new directory: found by polling.
        for fid, p in enumerate(files):
            write(p, fid, range(10, 20))
            want[fid] = 20
        nd = wd.mk("logs", name, "new")
        write(os.path.join(nd, "app.log"), 9, range(5))
        wd.chown_tree(UID, UID, only=[os.path.join("logs", name)])
        want[9] = 5
        t0 = time.monotonic()
        it.wait_for(lambda: delivered(out, want), 30,
                    "%s: appended lines and the new file delivered" % name,
                    proc=lg)
        took = time.monotonic() - t0
        it.log("%s: %s = %r; appends delivered %.2f s after writing" % (
            name, metric, got, took))
        if mode == "watches":
            release(h)
            h = None
            it.wait_for(lambda: it.metric_sum(port, metric) == 0, 15,
                        "%s: directories watched once watches are free" %
                        name, proc=lg)
        lg.stop()
    finally:
        if h is not None:
            release(h)
        lg.kill9()
    return took


def main():
    it.require_binary()
    it.check(os.geteuid() == 0, "this test runs processes as uid %d: run it "
             "as root" % UID)
    with it.WorkDir("inotify-limits") as wd:
        wd.mk("hog")
        t1 = scenario(wd, "instances", "instances", "max_user_instances",
                      "lugger_inotify_available", lambda v: v == 0)
        t2 = scenario(wd, "watches", "watches", "max_user_watches",
                      "lugger_inotify_unwatched_directories",
                      lambda v: v is not None and v >= 5)
        return ("no inotify instance: polled, appends delivered in %.1f s; "
                "no watch left: polled, delivered in %.1f s, watched again "
                "once free" % (t1, t2))


if __name__ == "__main__":
    it.main("test_inotify_limits", main)
