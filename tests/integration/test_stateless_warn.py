#!/usr/bin/env python3
"""A stateless pipeline whose script keeps state across records is warned
about by `lugger run` too, not only by `lugger check` (users skip check):
its batches run on every worker at once, so a counter sees only some of
the records, silently.

Two workers, two stateless pipelines: `count` (its script keeps a counter)
and `clean` (no state). At start: one warning (level warn, component
config) naming count.lua and the counter's line, the same text as `lugger
check`'s (without its "warning: " prefix); none for clean.lua; records
still flow (a warning, not an error). Then clean.lua is edited in place to
keep a dedupe table (the file-change reload): that reload warns about
clean.lua, once, and not again about count.lua, which did not change; a
SIGHUP after that, with nothing changed, warns about neither
(tests/integration/test_reload_stateless_warning.py has more of that).
"""

import os
import signal

import lugger_it as it

COUNT = """local n = 0
function process(rec)
  n = n + 1
  rec.n = n
end
"""
CLEAN = """function process(rec)
  rec.seen = true
end
"""
DEDUPE = """local seen = {}
function process(rec)
  if seen[rec.body] then return false end
  seen[rec.body] = true
end
"""
WHY = ("kept across records, but each worker has its own copy, so it sees "
       "only some of a file's records (keep no state, or remove stateless "
       "= true)")


def warnings(proc):
    return [r for r in proc.log_records()
            if ".stateless: " in str(r.get("msg", ""))]


def reloads(proc):
    return sum(1 for r in proc.log_records()
               if r.get("component") == "reload" and
               "config generation" in str(r.get("msg", "")) and
               "running" in str(r.get("msg", "")))


def expect(proc, conf, want, what):
    """`want`: {message tail: times}; every stateless warning is one of
    them, a config warning, as many times as said."""
    got = warnings(proc)
    for r in got:
        it.check(r.get("level") == "warn" and r.get("component") == "config",
                 "%s: not a config warning: %r" % (what, r))
    for tail, n in want.items():
        msg = "%s: %s: %s" % (conf, tail, WHY)
        k = sum(1 for r in got if r["msg"] == msg)
        it.check(k == n, "%s: %d times, want %d: %r\nall: %r" % (
            what, k, n, msg, [r["msg"] for r in got]))
    it.check(len(got) == sum(want.values()),
             "%s: other stateless warnings: %r" % (
                 what, [r["msg"] for r in got]))


def run():
    it.require_binary()
    with it.WorkDir("stateless_warn") as wd:
        logs = wd.mk("logs")
        for name in ("a.log", "b.log"):
            with open(os.path.join(logs, name), "w") as f:
                f.write("one\ntwo\n")
        out = wd.p("out.jsonl")
        conf = it.write_config(
            wd.p("lugger.lua"),
            {"state_dir": wd.state, "workers": 2, "memory_budget": "16MiB",
             "checkpoint_interval": "200ms", "rescan_interval": "1s"},
            {"a": {"type": "file", "paths": [os.path.join(logs, "a.log")],
                   "read_from": "head", "format": "line"},
             "b": {"type": "file", "paths": [os.path.join(logs, "b.log")],
                   "read_from": "head", "format": "line"}},
            {"count": {"sources": ["a"], "outputs": ["out"],
                       "scripts": ["count.lua"], "stateless": True},
             "clean": {"sources": ["b"], "outputs": ["out"],
                       "scripts": ["clean.lua"], "stateless": True}},
            {"out": {"type": "file", "path": out, "fsync": "never"}},
            scripts={"count.lua": COUNT, "clean.lua": CLEAN})
        count_w = "pipelines.count.stateless: %s:3: assigns the " \
            "module-level local 'n'" % wd.p("count.lua")
        dedupe_w = "pipelines.clean.stateless: %s:4: stores into the " \
            "module-level table 'seen'" % wd.p("clean.lua")
        with it.Lugger(conf) as lg:
            lg.wait_started()
            it.wait_for(lambda: os.path.exists(out) and
                        open(out).read().count("\n") == 4, 30,
                        "the 4 lines in the output", proc=lg)
            expect(lg, conf, {count_w: 1}, "at start")

            # The file-change reload: clean.lua now keeps a dedupe table.
            with open(wd.p("clean.lua"), "w") as f:
                f.write(DEDUPE)
            it.wait_for(lambda: reloads(lg) == 1, 30,
                        "the reload after clean.lua changed", proc=lg)
            expect(lg, conf, {count_w: 1, dedupe_w: 1},
                   "after the file-change reload")

            lg.proc.send_signal(signal.SIGHUP)
            it.wait_for(lambda: reloads(lg) == 2, 30,
                        "the reload after SIGHUP", proc=lg)
            expect(lg, conf, {count_w: 1, dedupe_w: 1}, "after SIGHUP")
            lg.stop()
        return "warned once per stateful script, when it is loaded or " \
            "changed: at start and at the file-change reload, not at SIGHUP"


if __name__ == "__main__":
    it.main("test_stateless_warn", run)
