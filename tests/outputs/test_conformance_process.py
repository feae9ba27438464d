#!/usr/bin/env python3
"""Output conformance, the process-level part (tests/outputs/test_conformance.c
is the rest): a real `lugger run` per output type.

file: the output goes down (RLIMIT_FSIZE set on the lugger process, so
every write past 4 MB fails with EFBIG as on a full disk) while ~50 MB wait
in the log files:
  - lugger's max RSS stays within memory_budget plus a stated allowance,
    and it has read about the budget plus what it delivered, not the input
    (reading paused);
  - no checkpoint passes what is in the output file;
  - kill -9 while it is down; a restart without the limit (`--once`)
    delivers every line at least once, and the output holds whole JSON
    lines only.
stdout: kill -9 mid-stream with stdout on a file, then a restart with
`--once` on another file: every line is in one of them at least once.
Kafka's process-level checks (broker down with the memory budget, SIGKILL
mid-stream) are in tests/integration/test_kafka_broker.py against a real
broker.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "integration"))
import lugger_it as it  # noqa: E402

NFILES = 4
LINE_LEN = 250
PER_FILE = 50_000            # 4 * 50,000 * 250 B = 50 MB
BUDGET = 16 * it.MiB
LIMIT = 4 * it.MiB           # the output file may not grow past this
DOWN_SECONDS = 4.0


def write_inputs(wd):
    paths = []
    for fid in range(NFILES):
        p = os.path.join(wd.logs, "app-%d.log" % fid)
        with open(p, "wb") as f:
            f.write(b"".join(it.make_line(fid, s, LINE_LEN)
                             for s in range(PER_FILE)))
        paths.append(p)
    return paths


def tracker_of(*outs):
    tr = it.SeqTracker(expected_len=LINE_LEN)
    for out in outs:
        if os.path.exists(out):
            for r in it.read_jsonl(out, allow_partial_tail=True):
                tr.add(r)
    return tr


def start_limited(wd, conf):
    """Starts lugger with RLIMIT_FSIZE = LIMIT and SIGXFSZ ignored, so its
    writes past LIMIT fail with EFBIG instead of killing it. Through a
    shell that execs lugger: Python's subprocess resets SIGXFSZ in the
    child, a shell's `trap '' XFSZ` is kept across exec."""
    wrapper = wd.p("limited.sh")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\ntrap '' XFSZ\nulimit -f %d\nexec %s \"$@\"\n"
                % (LIMIT // 512, it.LUGGER))
    os.chmod(wrapper, 0o755)
    saved = it.LUGGER
    it.LUGGER = wrapper
    try:
        return it.Lugger(conf)
    finally:
        it.LUGGER = saved


def scenario_file(results):
    with it.WorkDir("conf-file") as wd:
        paths = write_inputs(wd)
        out = wd.p("out.jsonl")
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")], out,
                                settings={"memory_budget": "16MiB"})
        lug = start_limited(wd, conf)
        sampler = it.RssSampler(lug.pid)
        sampler.start()
        # The output fills up to LIMIT, then every write fails (and is cut
        # back: a failed request leaves no partial line).
        it.wait_for(lambda: "retrying with backoff" in lug.stderr_text(), 60,
                    "the output to fail at the limit", proc=lug)
        time.sleep(DOWN_SECONDS)
        lug.check_running()
        rchar = lug.io().get("rchar", 0)
        size = os.path.getsize(out)
        sampler.stop()
        max_kib = sampler.max_kib
        bound = it.rss_limit(96, 160)
        it.check(max_kib <= bound, "max RSS %d KiB while the output was down, "
                 "bound %d KiB" % (max_kib, bound))
        # Reading paused: about the budget beyond what was delivered (the
        # JSON is larger than the lines, so delivered input < size).
        it.check(rchar < size + 3 * BUDGET + 4 * it.MiB,
                 "read %d bytes with %d in the output: reading did not pause"
                 % (rchar, size))
        it.check("retrying" in lug.stderr_text(),
                 "no retry logged:\n" + lug.stderr_tail())
        lug.kill9()
        # No checkpoint passes a line that is not in the output.
        tr = tracker_of(out)
        cps = it.checkpoint_offsets(wd.state)
        for p, off in cps.items():
            fid = int(os.path.basename(p).split("-")[1].split(".")[0])
            it.check(off % LINE_LEN == 0, "checkpoint %d of %s not at a line "
                     "boundary" % (off, p))
            got = tr.delivered(fid)
            it.check(off // LINE_LEN <= got, "checkpoint of %s at line %d but "
                     "only %d lines delivered" % (p, off // LINE_LEN, got))
        delivered_down = tr.total
        lug2 = it.Lugger(conf, once=True)
        rc = lug2.wait(300)
        it.check(rc == 0, "restart exited %r\n%s" % (rc, lug2.stderr_tail()))
        tr = tracker_of(out)
        lost, dups, ex, extra = tr.summary({f: PER_FILE for f in range(NFILES)})
        it.check(lost == 0, "file: %d lines lost, e.g. %r" % (lost, ex))
        it.read_jsonl(out)  # whole lines only, no partial line anywhere
        results.append("file: down at %.1f MB for %.0f s: max RSS %.1f MiB "
                       "(budget 16 MiB), read %.1f MB of %.0f MB; kill -9 while "
                       "down, restart: %d lines, 0 lost, %d duplicates "
                       "(%d delivered before the kill)" % (
                           size / 1e6, DOWN_SECONDS, max_kib / 1024.0,
                           rchar / 1e6, NFILES * PER_FILE * LINE_LEN / 1e6,
                           NFILES * PER_FILE, dups, delivered_down))


def scenario_stdout(results):
    with it.WorkDir("conf-stdout") as wd:
        write_inputs(wd)
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")],
                                output={"type": "stdout"})
        out1, out2 = wd.p("stdout-1.jsonl"), wd.p("stdout-2.jsonl")
        with open(out1, "wb") as f:
            lug = it.Lugger(conf, stdout=f)
        it.wait_for(lambda: os.path.getsize(out1) > 8 * it.MiB, 60,
                    "8 MB on stdout", proc=lug)
        lug.kill9()
        with open(out2, "wb") as f:
            lug2 = it.Lugger(conf, once=True, stdout=f)
        rc = lug2.wait(300)
        it.check(rc == 0, "restart exited %r\n%s" % (rc, lug2.stderr_tail()))
        tr = tracker_of(out1, out2)
        lost, dups, ex, extra = tr.summary({f: PER_FILE for f in range(NFILES)})
        it.check(lost == 0, "stdout: %d lines lost, e.g. %r" % (lost, ex))
        results.append("stdout: kill -9 after %.1f MB, restart: 0 lost, %d "
                       "duplicates" % (os.path.getsize(out1) / 1e6, dups))


def run():
    it.require_binary()
    results = []
    scenario_file(results)
    scenario_stdout(results)
    for r in results:
        it.log(r)
    return "; ".join(results)


if __name__ == "__main__":
    it.main("test_conformance_process", run)
