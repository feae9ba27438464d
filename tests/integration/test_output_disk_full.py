#!/usr/bin/env python3
"""The file output on a full disk: the write is retried, no line is broken,
nothing is lost.

The output file lives on a 512 KiB tmpfs mounted by the test (needs root,
as CI is). 20,000 lines of 100 bytes (about 6 MB of JSON) are written to
the source, far more than fits. While the disk is full the test samples
the output file: it must always end with a complete line (a failed write
is cut off again, never left half-written) and every line must parse;
the checkpoint must not pass what is not in the output. Then the tmpfs
is grown to 64 MiB (mount -o remount,size=64m): every line arrives,
exactly once, and the output is valid JSON lines throughout.
"""

import json
import os
import subprocess
import time

import lugger_it as it

LINE_LEN = 100
NLINES = 20000


def check_complete(path):
    """The output file ends with a newline and every line parses."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return 0
    it.check(data.endswith(b"\n"), "the output ends with a partial line "
             "(%d bytes): %r" % (len(data), data[-120:]))
    n = 0
    for raw in data.split(b"\n")[:-1]:
        json.loads(raw)
        n += 1
    return n


def main():
    it.require_binary()
    it.check(os.geteuid() == 0, "this test mounts a tmpfs: run it as root")
    with it.WorkDir("output-disk-full") as wd:
        mnt = wd.mk("out-mnt")
        subprocess.check_call(["mount", "-t", "tmpfs", "-o", "size=512k",
                               "lugger-it-out", mnt])
        try:
            return run(wd, mnt)
        finally:
            subprocess.call(["umount", "-l", mnt])


def run(wd, mnt):
    log = os.path.join(wd.logs, "app.log")
    out = os.path.join(mnt, "out.jsonl")
    with open(log, "wb") as f:
        for s in range(NLINES):
            f.write(it.make_line(0, s, LINE_LEN))
    conf = it.simple_config(wd, [log], out,
                            settings={"checkpoint_interval": "200ms"})
    lg = it.Lugger(conf)
    try:
        it.wait_for(lambda: any("No space left" in str(r.get("msg"))
                                for r in lg.log_records()), 30,
                    "the output logging the full disk", proc=lg)
        samples = []
        for _ in range(8):
            n = check_complete(out)
            cp = it.checkpoint_offsets(wd.state).get(log, 0)
            it.check(cp // LINE_LEN <= n,
                     "checkpoint at line %d but the output has %d lines" % (
                         cp // LINE_LEN, n))
            samples.append(n)
            time.sleep(0.25)
        it.check(samples[-1] < NLINES, "everything fit: no full disk")
        it.log("disk full: output stays at %d complete lines" % samples[-1])
        subprocess.check_call(["mount", "-o", "remount,size=64m", mnt])
        it.wait_for(lambda: check_complete(out) >= NLINES, 60,
                    "every line in the output after the disk grew",
                    proc=lg, interval=0.3)
        lg.stop()
    finally:
        lg.kill9()
    tr = it.SeqTracker(expected_len=LINE_LEN)
    for r in it.read_jsonl(out):
        tr.add(r)
    lost, dups, missing, _ = tr.summary({0: NLINES})
    it.check(lost == 0 and dups == 0 and not tr.order_errors,
             "%d lost (first %s), %d duplicated, %d out of order" % (
                 lost, missing, dups, len(tr.order_errors)))
    return ("output on a 512 KiB tmpfs: stuck at %d complete lines while "
            "full, then all %d lines exactly once, in order" % (
                samples[-1], NLINES))


if __name__ == "__main__":
    it.main("test_output_disk_full", main)
