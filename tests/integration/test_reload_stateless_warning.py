#!/usr/bin/env python3
"""README "pipelines.X.stateless": the warning about a stateless
pipeline's script keeping state across records is logged when the
pipeline's scripts or its stateless flag change (and at start), not again
at every reload of an unchanged pipeline (it once was: every SIGHUP
repeated it).

A running lugger with one stateless pipeline whose script counts records
in a module-level local: the warning once at start; two SIGHUPs with
nothing changed add none; a change to the script (a comment: the warning
text stays the same) adds one, a SIGHUP after it none; the flag turned
off adds none, turned on again adds one. Then a reload rejected after
its scripts were loaded (it adds a file output whose path is a directory:
its creation fails at the switch), with the script changed (a new file,
so that no reload takes the script without the rejection): the change is
warned about as it loads; the reload that takes the same script with the
rejection fixed warns again. (The rejected reload once recorded the
script as warned about: the reload that took it said nothing.)
"""
import os
import signal

import lugger_it as it

SCRIPT = "local n = 0\nfunction process(rec)\n  n = n + 1\n  rec.n = n\nend\n"


def warnings(lug):
    return [r.get("msg", "") for r in lug.log_records()
            if r.get("component") == "config" and
            "pipelines.main.stateless: " in str(r.get("msg", ""))]


def reload_counts(lug):
    """(started, finished): reloads begun and ended (run or failed)."""
    started = finished = 0
    for r in lug.log_records():
        if r.get("component") != "reload":
            continue
        msg = str(r.get("msg", ""))
        if msg.endswith(": reloading"):
            started += 1
        elif "reload failed" in msg or ("config generation" in msg and "running" in msg):
            finished += 1
    return started, finished


def failures(lug):
    return [str(r.get("msg", "")) for r in lug.log_records()
            if r.get("component") == "reload" and "reload failed" in str(r.get("msg", ""))]


def sighup_and_settle(lug, what, rejected=False, failed0=None):
    """Sends SIGHUP and waits until every reload begun so far, that one
    included, has ended (a script or config rewrite may start one of its
    own through the file watch). Each of them must succeed, or with
    `rejected` fail on output zz. Returns how many failed since `failed0`
    (the count of failures before the change; default: now)."""
    started0, _ = reload_counts(lug)
    if failed0 is None:
        failed0 = len(failures(lug))
    lug.proc.send_signal(signal.SIGHUP)

    def settled():
        s, f = reload_counts(lug)
        return s > started0 and f == s
    it.wait_for(settled, 60, "the reload after %s" % what, proc=lug,
                detail=lug.stderr_tail)
    new = failures(lug)[failed0:]
    if rejected:
        it.check(new and all("outputs.zz" in m for m in new),
                 "%s: the reload was not rejected on output zz:\n%s"
                 % (what, lug.stderr_tail()))
    else:
        it.check(not new, "%s: a reload failed:\n%s" % (what, lug.stderr_tail()))
    return len(new)


def expect_warnings(lug, n, what):
    it.wait_for(lambda: len(warnings(lug)) >= n, 30,
                "%d stateless warnings (%s)" % (n, what), proc=lug,
                detail=lambda: "\n".join(warnings(lug)))
    got = warnings(lug)
    it.check(len(got) == n, "%s: %d stateless warnings, wanted %d:\n%s"
             % (what, len(got), n, "\n".join(got)))


def run():
    it.require_binary()
    with it.WorkDir("reload_stateless_warning") as wd:
        log = wd.p("logs", "a.log")
        with open(log, "w") as f:
            f.write("one\n")

        def config(stateless, script=SCRIPT, name="count.lua"):
            return it.simple_config(wd, [log], scripts=[name],
                                    script_files={name: script},
                                    pipeline={"stateless": stateless})
        conf = config(True)
        with it.Lugger(conf) as lug:
            lug.wait_started()
            expect_warnings(lug, 1, "at start")
            it.check("count.lua:3: " in warnings(lug)[0], warnings(lug)[0])
            sighup_and_settle(lug, "the first SIGHUP")
            sighup_and_settle(lug, "the second SIGHUP")
            expect_warnings(lug, 1, "after two SIGHUPs with nothing changed")

            config(True, SCRIPT + "-- v2\n")
            sighup_and_settle(lug, "the script changed")
            expect_warnings(lug, 2, "after the script changed")
            sighup_and_settle(lug, "a SIGHUP after the change")
            expect_warnings(lug, 2, "after a SIGHUP after the change")

            config(False, SCRIPT + "-- v2\n")
            sighup_and_settle(lug, "stateless turned off")
            expect_warnings(lug, 2, "stateless turned off")
            config(True, SCRIPT + "-- v2\n")
            sighup_and_settle(lug, "stateless turned on again")
            expect_warnings(lug, 3, "stateless turned on again")

            # Rejected after loading: the script in a new file, named only
            # by the config that the rename puts in place at once.
            failed0 = len(failures(lug))
            zz = wd.mk("zz.jsonl")
            v3 = SCRIPT + "-- v3\n"
            with open(wd.p("count3.lua"), "w") as f:
                f.write(v3)
            rej = it.write_config(
                wd.p("rejected.lua"),
                {"state_dir": wd.state, "memory_budget": "16MiB", "workers": 2,
                 "checkpoint_interval": "200ms", "rescan_interval": "1s"},
                {"app": {"type": "file", "paths": [log], "read_from": "head",
                         "format": "line"}},
                {"main": {"sources": ["app"], "outputs": ["out", "zz"],
                          "scripts": ["count3.lua"], "stateless": True}},
                {"out": {"type": "file", "path": wd.p("out.jsonl"), "fsync": "never"},
                 "zz": {"type": "file", "path": zz}})
            os.rename(rej, conf)
            nrej = sighup_and_settle(lug, "a reload rejected on output zz", rejected=True,
                                     failed0=failed0)
            it.check(all("Is a directory" in m for m in failures(lug)),
                     "the rejection does not say why: %r" % failures(lug))
            # Each rejected reload loaded v3 and warned about it (once the
            # first of them wrongly recorded it, the next ones did not).
            expect_warnings(lug, 3 + nrej, "%d reloads rejected after loading" % nrej)
            config(True, v3, "count3.lua")
            sighup_and_settle(lug, "the rejection fixed")
            expect_warnings(lug, 4 + nrej, "the rejected script taken by a good reload")
            it.check("count3.lua:3: " in warnings(lug)[-1], warnings(lug)[-1])
            lug.stop()
    return "warned at start, after a script change and after the flag came back; " \
           "not at unchanged reloads; again after a reload rejected after loading"


if __name__ == "__main__":
    it.main("test_reload_stateless_warning", run)
