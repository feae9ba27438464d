#!/usr/bin/env python3
"""state_dir full, then room again, without a restart.

state_dir is a 256 KiB tmpfs mounted by the test (needs root, as CI is);
two writers append 400 lines/s in all, the whole time.
(test_state_faults.py kills lugger during the fault; this one lets it
live through it.)

1. A filler file takes every free byte. For 4 s: /readyz 503 naming
   checkpoints.json and "No space left on device"; checkpoints.json stays
   valid JSON; lines keep being delivered;
   lugger_checkpoint_save_failures_total counts the failed saves (more than
   one); the log says it once for the episode: one checkpoint error line,
   at most one journal warning, not one line per save (every 200 ms).
2. The filler removed: "saved again after N failed attempts" in the log,
   /readyz 200, the checkpoints catch up with what was delivered after the
   fault, and the journal (stopped by the full disk) takes changes again.
3. kill -9, restart: every line is delivered, none lost, and the restart
   reads again little (the journal worked: duplicates under 0.5 s of
   input).
"""

import json
import os
import time

import lugger_it as it

LINE_LEN = 100
RATE = 400


def readyz(port):
    st, text = it.http_get(port, "/readyz", timeout=5)
    return st or 0, text


def main():
    it.require_binary()
    with it.WorkDir("state-full-recover") as wd:
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
    jfile = os.path.join(state, "checkpoints.journal")

    for p in paths:
        open(p, "wb").close()
    writer = it.PacedWriter(paths, RATE, LINE_LEN, burst=10)
    writer.start()
    lg = it.Lugger(conf)
    try:
        it.wait_for(lambda: readyz(port)[0] == 200, 30, "/readyz 200",
                    proc=lg)
        it.wait_for(lambda: os.path.exists(cpfile), 10, "checkpoints.json",
                    proc=lg)
        m0 = it.metric_sum(port, "lugger_checkpoint_save_failures_total")

        # 1. Full.
        nlog0 = len(lg.log_records())
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
        n0 = it.jsonl_count(out)
        for _ in range(8):
            with open(cpfile) as f:
                json.load(f)  # still the valid previous file
            time.sleep(0.5)
        st, text = readyz(port)
        it.check(st == 503 and "checkpoints.json" in text and
                 "No space left on device" in text,
                 "/readyz does not name the checkpoint fault: %r" % text)
        it.check(it.jsonl_count(out) > n0, "delivery stopped with state_dir full")
        fails = it.metric_sum(port, "lugger_checkpoint_save_failures_total") \
            - m0
        it.check(fails > 1, "lugger_checkpoint_save_failures_total rose by "
                 "%r in 4 s of failing saves" % fails)
        during = lg.log_records()[nlog0:]
        errs = [r for r in during if r.get("component") == "checkpoint" and
                r.get("level") == "error"]
        warns = [r for r in during if r.get("component") == "checkpoint" and
                 r.get("level") == "warn"]
        it.check(len(errs) == 1 and "No space left on device" in
                 errs[0]["msg"] and "checkpoints.json" in errs[0]["msg"],
                 "want one checkpoint error for the episode (%d failed "
                 "saves), got %d: %r" % (fails, len(errs), errs[:3]))
        it.check(len(warns) <= 1, "%d checkpoint warnings in the episode: "
                 "%r" % (len(warns), warns[:3]))

        # 2. Room again.
        os.unlink(filler)
        it.wait_for(lambda: readyz(port)[0] == 200, 15,
                    "/readyz 200 once the disk has room", proc=lg)
        it.check(any("saved again after" in str(r.get("msg"))
                     for r in lg.log_records()),
                 "no \"saved again\" line\n%s" % lg.stderr_tail())
        upto = dict(writer.written)
        it.wait_for(lambda: it.delivered_all(out, upto, LINE_LEN), 30,
                    "the lines written during the fault delivered",
                    interval=0.3, proc=lg)
        want = {p: upto[i] * LINE_LEN for i, p in enumerate(paths)}

        def caught_up():
            offs = it.checkpoint_offsets(state)
            return all(offs.get(p, 0) >= n for p, n in want.items())
        it.wait_for(caught_up, 10, "checkpoints.json covering the lines "
                    "delivered after the fault", interval=0.2, proc=lg,
                    detail=lambda: "%r, want %r" % (
                        it.checkpoint_offsets(state), want))
        j0 = os.path.getsize(jfile) if os.path.exists(jfile) else 0
        it.wait_for(lambda: os.path.exists(jfile) and
                    os.path.getsize(jfile) != j0, 10,
                    "the journal taking changes again", proc=lg)

        # 3. A kill now; the restart resumes from the journal.
        time.sleep(1.0)
        lg.kill9()
        at_kill = it.jsonl_count(out)
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
    it.check(dups < RATE // 2, "%d lines delivered twice after the kill "
             "(the journal was not taking changes again?)" % dups)
    return ("state_dir full 4 s: %d failed saves, 1 error line; room again: "
            "saved, checkpoints caught up; kill -9 at %d lines: 0 lost, %d "
            "duplicated" % (fails, at_kill, dups))


if __name__ == "__main__":
    it.main("test_state_full_recover", main)
