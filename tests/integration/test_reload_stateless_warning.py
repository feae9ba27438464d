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
off adds none, turned on again adds one.
"""
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


def sighup_and_settle(lug, what):
    """Sends SIGHUP and waits until every reload begun so far, that one
    included, has ended (a script or config rewrite may start one of its
    own through the file watch)."""
    started0, _ = reload_counts(lug)
    lug.proc.send_signal(signal.SIGHUP)

    def settled():
        s, f = reload_counts(lug)
        return s > started0 and f == s
    it.wait_for(settled, 60, "the reload after %s" % what, proc=lug,
                detail=lug.stderr_tail)
    s, f = reload_counts(lug)
    it.check("reload failed" not in lug.stderr_text(), "a reload failed:\n%s"
             % lug.stderr_tail())


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

        def config(stateless, script=SCRIPT):
            return it.simple_config(wd, [log], scripts=["count.lua"],
                                    script_files={"count.lua": script},
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
            lug.stop()
    return "warned at start, after a script change and after the flag came back; " \
           "not at unchanged reloads"


if __name__ == "__main__":
    it.main("test_reload_stateless_warning", run)
