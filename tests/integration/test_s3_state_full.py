#!/usr/bin/env python3
"""The s3 output with its state_dir full: uploads wait, nothing is lost.

The s3 output uploads an object only once its request journal (a file in
state_dir, lg_req_journal.h) holds the request, so that a crash cannot
make the same records into a second object. Here state_dir is a 256 KiB
tmpfs the test mounts (root, as in CI) and fills, with npm s3rver behind
the SigV4 verifier as in test_s3.py:

1. 50 lines before the fault: uploaded.
2. The tmpfs filled, 50 more lines written, 12 s: no object more is
   uploaded; the request journal's failure is logged once (file, step,
   "No space left on device"), not once per retry; lugger runs.
3. The filler removed: "written again after N failed writes", and every
   one of the 100 lines is in exactly one object.
"""

import os
import time

import lugger_it as it
from test_s3 import Peers, check_exactly_once, output


def main():
    it.require_binary()
    with it.WorkDir("s3-state-full") as wd:
        with it.small_tmpfs(wd.mk("state-mnt"), "256k", "lugger-it-s3-state") as state:
            peers = Peers(wd)
            try:
                return run(wd, state, peers)
            finally:
                peers.close()


def run(wd, state, peers):
    log = wd.p("logs/objs.log")
    open(log, "wb").close()
    settings = {"state_dir": state, "checkpoint_interval": "200ms",
                "rescan_interval": "1s"}
    conf = it.write_config(
        wd.p("lugger.lua"), settings,
        {"objs": {"type": "file", "read_from": "head", "format": "line",
                  "paths": [log]}},
        {"s3": {"sources": ["objs"], "outputs": ["s3"]}},
        {"s3": output(peers, key="full/{id}.json.gz", max_bytes="64KiB",
                      max_coalescing_delay="200ms", max_in_flight=4)})
    want = [it.make_line(1, s)[:-1].decode() for s in range(100)]
    lg = it.Lugger(conf)
    try:
        lg.wait_started()
        with open(log, "ab") as f:
            for s in range(50):
                f.write(it.make_line(1, s))
        it.wait_for(lambda: len(peers.list()) >= 1, 30, "the first object",
                    proc=lg, interval=0.3)
        time.sleep(1.0)
        n_before = len(peers.list())

        filler = os.path.join(state, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while os.write(fd, b"\0" * 4096) > 0:
                pass
        except OSError:
            pass
        os.close(fd)
        n0 = len(lg.log_records())
        with open(log, "ab") as f:
            for s in range(50, 100):
                f.write(it.make_line(1, s))
                f.flush()
                time.sleep(0.05)
        time.sleep(12)
        lg.check_running()
        during = lg.log_records()[n0:]
        it.check(len(peers.list()) == n_before, "objects uploaded while "
                 "their request journal could not be written: %d, were %d"
                 % (len(peers.list()), n_before))
        jerr = [r for r in during if "requests-s3.json" in str(r.get("msg"))
                and r.get("level") == "error"]
        it.check(len(jerr) == 1 and "No space left on device" in
                 jerr[0]["msg"], "want one request journal error for the "
                 "episode, got %d: %r" % (len(jerr), jerr[:3]))

        os.unlink(filler)
        it.wait_for(lambda: sum(1 for _ in peers.list()) > n_before, 90,
                    "uploads once the disk has room", proc=lg, interval=0.5)

        def all_in():
            try:
                check_exactly_once(peers, want, True)
                return True
            except it.TestFailure:
                return False
        it.wait_for(all_in, 60, "every line in an object", proc=lg,
                    interval=0.5)
        check_exactly_once(peers, want, True)
        it.check(any("written again after" in str(r.get("msg"))
                     for r in lg.log_records()),
                 "the request journal's recovery is not logged\n%s" %
                 lg.stderr_tail())
        lg.stop()
    finally:
        lg.kill9()
    return ("s3 with state_dir full 12 s: no upload, 1 error line; room "
            "again: 100 lines in %d objects, each once" % len(peers.list()))


if __name__ == "__main__":
    it.main("test_s3_state_full", main)
