#!/usr/bin/env python3
"""LUGGER_LOG_LEVEL sets the level of lugger's own log in any case
("WARN" and "warn" alike); a value that is no level is said in the log
(it used to be ignored without a word, so LUGGER_LOG_LEVEL=WARN kept
every info line and nothing said why)."""

import json
import os
import subprocess

import lugger_it as it


def run_once(conf, level):
    env = dict(it.asan_env(), LUGGER_LOG_LEVEL=level)
    r = subprocess.run([it.LUGGER, "run", "-c", conf, "--once"],
                       capture_output=True, text=True, timeout=60, env=env)
    it.check(r.returncode == 0, "LUGGER_LOG_LEVEL=%s: exit %d: %s"
             % (level, r.returncode, r.stderr[-2000:]))
    return [json.loads(x) for x in r.stderr.splitlines() if x.startswith("{")]


def run():
    it.require_binary()
    with it.WorkDir("log_level") as wd:
        logs = wd.mk("logs")
        with open(os.path.join(logs, "a.log"), "w") as f:
            f.write("one\n")
        conf = it.simple_config(wd, [os.path.join(logs, "*.log")])
        infos = [r for r in run_once(conf, "info") if r["level"] == "info"]
        it.check(infos, "no info lines at info")
        for level in ("WARN", "warn", "Warning", "error"):
            got = run_once(conf, level)
            it.check(not any(r["level"] == "info" for r in got),
                     "LUGGER_LOG_LEVEL=%s: info lines: %r" % (level, got))
        got = run_once(conf, "verbose")
        said = [r for r in got if r["level"] == "warn" and
                "LUGGER_LOG_LEVEL=verbose is not a level" in r["msg"]]
        it.check(len(said) == 1 and any(r["level"] == "info" for r in got),
                 "LUGGER_LOG_LEVEL=verbose: %r" % got)
        return "WARN, warn, Warning and error silence info lines; " \
               "'verbose' is named in a warning and info applies"


if __name__ == "__main__":
    it.main("test_log_level", run)
