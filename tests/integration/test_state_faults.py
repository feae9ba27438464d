#!/usr/bin/env python3
"""Disk faults in state_dir: full, read-only, and a corrupt checkpoint file.

state_dir is a 256 KiB tmpfs mounted by the test (needs root, as CI is);
the logs and the output live elsewhere. Two writers append 200 lines/s
each the whole time.

1. Disk full: a filler file takes every free byte of the tmpfs. Checkpoint
   saves fail: /readyz turns 503 with a "checkpoint:" line naming the file
   and "No space left on device"; checkpoints.json stays the valid file it
   was (read several times during the fault); lines keep being delivered.
   lugger is killed with SIGKILL during the fault, the filler removed and
   lugger started again: /readyz 200, and later every line is delivered.
2. Read-only: state_dir made read-only for lugger (chmod 0555; lugger runs
   as "nobody" in this test, since root ignores permissions, and a remount
   read-only is refused while lugger has files open there): /readyz 503
   "Permission denied", delivery goes on; writable again: /readyz 200 and
   the checkpoints move on again.
3. Corrupt checkpoint file: lugger stopped, checkpoints.json cut in half,
   lines written while it is down, lugger started with read_from = "tail"
   (the default, which would skip what is already in the files on a
   first start): an error names the file and where it was moved, lugger
   runs, and every line written is delivered (the files are read again
   from their start: duplicates, no loss).
"""

import glob
import json
import os
import signal
import time

import lugger_it as it

LINE_LEN = 100


def readyz(port):
    try:
        return it.http_get(port, "/readyz", timeout=5)
    except Exception as e:  # noqa: BLE001 - a refused connection is "not yet"
        return (0, str(e))


def main():
    it.require_binary()
    with it.WorkDir("state-faults") as wd:
        with it.small_tmpfs(wd.mk("state-mnt"), "256k", "lugger-it-state") as state:
            return run(wd, state)


def run(wd, state):
    port = it.free_port()
    paths = [os.path.join(wd.logs, "a.log"), os.path.join(wd.logs, "b.log")]
    out = wd.p("out.jsonl")
    settings = {"state_dir": state, "http": "127.0.0.1:%d" % port,
                "checkpoint_interval": "200ms"}
    conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")], out,
                            settings=settings)
    cpfile = os.path.join(state, "checkpoints.json")
    tr = it.SeqTracker(expected_len=LINE_LEN)

    for p in paths:
        open(p, "wb").close()
    wd.chown_tree(it.NOBODY, it.NOBODY)
    writer = it.PacedWriter(paths, 400, LINE_LEN, burst=10)
    writer.start()
    lg = it.Lugger(conf, user=it.NOBODY)
    try:
        it.wait_for(lambda: readyz(port)[0] == 200, 30, "/readyz 200",
                    proc=lg)
        it.wait_for(lambda: os.path.exists(cpfile), 10, "checkpoints.json",
                    proc=lg)

        # 1. Disk full.
        filler = os.path.join(state, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while os.write(fd, b"\0" * 4096) > 0:
                pass
        except OSError:
            pass
        os.close(fd)
        it.wait_for(lambda: readyz(port)[0] == 503, 15,
                    "/readyz 503 with the state_dir full", proc=lg)
        st, text = readyz(port)
        it.check("checkpoint:" in text and "checkpoints.json" in text and
                 "No space left on device" in text,
                 "/readyz does not name the checkpoint fault: %r" % text)
        n0 = it.jsonl_count(out)
        for _ in range(5):
            json.load(open(cpfile))  # still the valid previous file
            time.sleep(0.3)
        it.check(it.jsonl_count(out) > n0, "delivery stopped with state_dir full")
        it.log("disk full: /readyz %d %r" % (st, text.strip()[:160]))
        lg.kill9()
        os.unlink(filler)
        lg = it.Lugger(conf, user=it.NOBODY)
        it.wait_for(lambda: readyz(port)[0] == 200, 30,
                    "/readyz 200 after the disk has room again", proc=lg)
        upto = dict(writer.written)
        it.wait_for(lambda: it.delivered_all(out, upto, LINE_LEN), 60,
                    "lines written up to the disk-full restart delivered",
                    interval=0.3, proc=lg)

        # 2. Read-only.
        os.chmod(state, 0o555)
        try:
            it.wait_for(lambda: readyz(port)[0] == 503, 15,
                        "/readyz 503 with state_dir read-only", proc=lg)
            st, text = readyz(port)
            it.check("Permission denied" in text,
                     "/readyz does not say the state_dir is read-only: %r" %
                     text)
            n0 = it.jsonl_count(out)
            time.sleep(1.0)
            it.check(it.jsonl_count(out) > n0, "delivery stopped with state_dir "
                     "read-only")
            before = it.checkpoint_offsets(state)
        finally:
            os.chmod(state, 0o755)
        it.wait_for(lambda: readyz(port)[0] == 200, 15,
                    "/readyz 200 after remounting read-write", proc=lg)
        it.wait_for(lambda: it.checkpoint_offsets(state) != before, 10,
                    "checkpoints moving on again", proc=lg)
        lg.stop()

        # 3. A corrupt checkpoint file, and read_from = "tail".
        raw = open(cpfile, "rb").read()
        with open(cpfile, "wb") as f:
            f.write(raw[:len(raw) // 2])
        os.unlink(os.path.join(state, "checkpoints.journal"))
        time.sleep(0.5)  # lines written while lugger is down
        conf2 = it.simple_config(wd, [os.path.join(wd.logs, "*.log")], out,
                                 settings=settings,
                                 source={"read_from": "tail"},
                                 name="lugger-tail.lua")
        lg = it.Lugger(conf2, user=it.NOBODY)
        it.wait_for(lambda: readyz(port)[0] == 200, 30, "/readyz 200",
                    proc=lg)
        errs = [r for r in lg.log_records() if r.get("component") ==
                "checkpoint" and r.get("level") == "error"]
        it.check(errs and "checkpoints.json" in errs[0]["msg"] and
                 "corrupt-" in errs[0]["msg"] and "from its start" in
                 errs[0]["msg"],
                 "no clear error about the corrupt file: %r" % errs)
        it.check(glob.glob(cpfile + ".corrupt-*"),
                 "the corrupt file was not kept aside")
        writer.stop()
        final = dict(writer.written)
        it.wait_for(lambda: it.delivered_all(out, final, LINE_LEN), 60, "every line delivered",
                    interval=0.3, proc=lg)
        lg.stop()
    finally:
        writer.halt()
        lg.kill9()
    for r in it.read_jsonl(out):
        tr.add(r)
    lost, dups, missing, _ = tr.summary(final)
    it.check(lost == 0, "%d lines lost (first %s)" % (lost, missing))
    return "disk full, read-only and a corrupt checkpoint file: %d lines, " \
           "0 lost, %d duplicated (the corrupt file's files read again)" % (
               sum(final.values()), dups)


if __name__ == "__main__":
    it.main("test_state_faults", main)
