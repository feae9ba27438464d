#!/usr/bin/env python3
"""Memory with many busy files: a DaemonSet node has dozens to hundreds of
containers writing at once. The same 48 MiB of lines are read once as one
file and once as 48 files of 1 MiB (each larger than a read chunk, so every
file stays busy across several read turns), with a 4 MiB memory budget.
Peak RSS must not grow with the number of busy files: a regression test
for one open batch (up to 1 MiB, not charged to the budget) per busy file,
which held ~130 MiB more with 50 busy pods than with one file. Every line
must still come out exactly once."""

import json
import os

import lugger_it as it

FILES = 48
LINES_PER_FILE = 9000  # ~115 bytes each: ~1 MiB per file
PAD = "y" * 90
# Extra peak RSS allowed for 48 busy files over one file of the same bytes.
# Per-file state (framer, descriptors, checkpoint entries) is a few KiB;
# the old behaviour added ~48 MiB here.
MAX_EXTRA_MIB = 16


def write_line(o, f, i):
    o.write("f%03d l%06d %s\n" % (f, i, PAD))


def peak_rss(wd, name, paths, expect):
    out = wd.p(name + ".jsonl")
    conf = it.simple_config(wd, paths, out, name=name + ".lua",
                            settings={"memory_budget": "4MiB",
                                      "state_dir": wd.mk("state-" + name)})
    with it.Lugger(conf, once=True) as lg:
        sampler = it.RssSampler(lg.pid, interval=0.01)
        sampler.start()
        rc = lg.wait(240)
        sampler.stop()
        it.check(rc == 0, "%s: lugger --once exited %r: %s" % (
            name, rc, lg.stderr_tail()))
    seen = set()
    with open(out) as o:
        for line in o:
            body = json.loads(line)["body"]
            it.check(body not in seen, "%s: %r delivered twice" % (name, body))
            seen.add(body)
    it.check(seen == expect, "%s: %d of %d lines delivered; missing e.g. %r" % (
        name, len(seen & expect), len(expect), sorted(expect - seen)[:3]))
    os.unlink(out)
    it.log("%s: peak RSS %.1f MiB (%d samples)" % (
        name, sampler.max_kib / 1024.0, len(sampler.samples)))
    return sampler.max_kib


def run():
    it.require_binary()
    with it.WorkDir("many_files_memory") as wd:
        many = wd.mk("many")
        one = wd.mk("one")
        expect = set()
        with open(os.path.join(one, "all.log"), "w") as big:
            for f in range(FILES):
                with open(os.path.join(many, "f%03d.log" % f), "w") as o:
                    for i in range(LINES_PER_FILE):
                        write_line(o, f, i)
                        write_line(big, f, i)
                        expect.add("f%03d l%06d %s" % (f, i, PAD))
        base = peak_rss(wd, "one-file", [os.path.join(one, "*.log")], expect)
        busy = peak_rss(wd, "many-files", [os.path.join(many, "*.log")], expect)
        extra = (busy - base) / 1024.0
        it.check(extra < MAX_EXTRA_MIB,
                 "%d busy files peaked at %.1f MiB, %.1f MiB more than one "
                 "file of the same bytes (allowed: %d MiB)" % (
                     FILES, busy / 1024.0, extra, MAX_EXTRA_MIB))


if __name__ == "__main__":
    it.main("many_files_memory", run)
