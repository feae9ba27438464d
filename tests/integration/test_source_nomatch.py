#!/usr/bin/env python3
"""A file source whose patterns match no file says so once at start (a
typo in `paths` used to look like a working collector with a quiet log),
names every pattern, and still finds a file that appears later; a source
that matches files says nothing of the kind."""

import json
import os

import lugger_it as it

WANT = "no file matches"


def warnings(lug):
    return [r for r in lug.log_records()
            if r.get("level") == "warn" and WANT in str(r.get("msg", ""))]


def run():
    it.require_binary()
    with it.WorkDir("source_nomatch") as wd:
        logs = wd.mk("logs")
        with open(os.path.join(logs, "a.log"), "w") as f:
            f.write("one\n")
        out = wd.p("out.jsonl")
        typo = os.path.join(logs, "*.lgo")
        other = os.path.join(wd.p("nowhere"), "*.log")
        conf = it.simple_config(wd, [typo, other], out_path=out,
                                settings={"rescan_interval": "200ms"})
        with it.Lugger(conf, once=True) as lug:
            rc = lug.wait(60)
            it.check(rc == 0, "--once: exit %r: %s" % (rc, lug.stderr_tail()))
            got = warnings(lug)
        it.check(len(got) == 1 and got[0]["component"] == "source.app" and
                 typo in got[0]["msg"] and other in got[0]["msg"],
                 "one warning naming both patterns: %r" % got)

        # Running, the source picks up a matching file created later.
        os.makedirs(wd.p("nowhere"))
        with it.Lugger(conf) as lug:
            lug.wait_started()
            with open(os.path.join(wd.p("nowhere"), "b.log"), "w") as f:
                f.write("later\n")

            def delivered():
                if not os.path.exists(out):
                    return False
                with open(out) as f:
                    return any(json.loads(x)["body"] == "later" for x in f)
            it.wait_for(delivered, 30, "the later file's line", proc=lug)
            lug.stop()

        # A source that matches: no such warning.
        conf2 = it.simple_config(wd, [os.path.join(logs, "*.log")],
                                 out_path=wd.p("out2.jsonl"), name="two.lua")
        with it.Lugger(conf2, once=True) as lug:
            rc = lug.wait(60)
            it.check(rc == 0 and not warnings(lug),
                     "a matching source: exit %r, %r" % (rc, warnings(lug)))
        return "a source matching nothing warned once with its 2 patterns, " \
               "then read a file created later; a matching source did not"


if __name__ == "__main__":
    it.main("test_source_nomatch", run)
