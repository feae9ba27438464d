#!/usr/bin/env python3
"""What a file source says at start about a setup that would silently
give nothing (both used to look like a working collector with a quiet
log):

1. Patterns that match no file (a typo in `paths`): one warning naming
   every pattern; a file that appears later is still read; a source that
   matches files says nothing of the kind.
2. `k8s = "downward"` without the downward-API environment (no POD_NAME,
   no POD_NAMESPACE): one warning; records carry no k8s.pod.name. With
   the environment: no warning, the keys are there."""

import json
import os
import subprocess

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
        part_downward(wd, logs)
        return "a source matching nothing warned once with its 2 patterns, " \
               "then read a file created later; a matching source did not; " \
               "k8s = downward without its env warned, with it did not"


def part_downward(wd, logs):
    out = wd.p("dw.jsonl")
    conf = it.simple_config(wd, [os.path.join(logs, "*.log")], out_path=out,
                            source={"k8s": "downward"}, name="dw.lua")
    base = {k: v for k, v in it.asan_env().items()
            if k not in ("POD_NAME", "POD_NAMESPACE", "POD_UID",
                         "CONTAINER_NAME", "NODE_NAME")}
    for env, want_warn in ((base, True),
                           (dict(base, POD_NAME="web-1", POD_NAMESPACE="shop"),
                            False)):
        if os.path.exists(out):
            os.unlink(out)
        state = wd.mk("dw-state-%d" % want_warn)
        r = subprocess.run([it.LUGGER, "run", "-c", conf, "--once"],
                           capture_output=True, text=True, timeout=60,
                           env=dict(env, LUGGER_STATE_DIR=state))
        it.check(r.returncode == 0, "downward: exit %d: %s"
                 % (r.returncode, r.stderr[-2000:]))
        warned = [x for x in r.stderr.splitlines()
                  if '"warn"' in x and 'k8s = \\"downward\\", but POD_NAME' in x]
        with open(out) as f:
            recs = [json.loads(x) for x in f]
        it.check(len(warned) == (1 if want_warn else 0),
                 "downward (warning wanted: %s): %r" % (want_warn, r.stderr))
        it.check(recs and all(("k8s.pod.name" in x) != want_warn for x in recs),
                 "downward records: %r" % recs)


if __name__ == "__main__":
    it.main("test_source_warnings", run)
