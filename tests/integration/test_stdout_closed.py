#!/usr/bin/env python3
"""The stdout output on a closed pipe: the records it cannot write go to
the dead-letter output with the reason, the fields their script set
included, and the run still ends (--once, exit 0).

lugger's stdout is a pipe whose read end the test closed before starting
it, so every write fails with EPIPE (which cannot heal: the stdout output
rejects the records). The pipeline's script sets two fields on every
record. Checks: every line is in <state_dir>/dead-letter.jsonl exactly
once, with `lugger.error` naming the stdout output and the broken pipe,
and with the script's fields (before the output type said it rejects
records, the worker took the fields back after encoding and the
dead-letter records lost them).
"""

import os

import lugger_it as it

SCRIPT = """
function process(rec)
  rec.seen = true
  rec.tag = "t-" .. rec.body:sub(1, 4)
end
"""


def main():
    it.require_binary()
    with it.WorkDir("stdout_closed") as wd:
        n = 300
        path = os.path.join(wd.logs, "app.log")
        with open(path, "w") as f:
            for s in range(n):
                f.write("line %05d\n" % s)
        conf = it.simple_config(wd, [path], output={"type": "stdout"},
                                scripts=["set.lua"],
                                script_files={"set.lua": SCRIPT})
        r, w = os.pipe()
        os.close(r)  # nobody will ever read: writes fail with EPIPE
        try:
            lug = it.Lugger(conf, once=True, stdout=w)
        finally:
            os.close(w)
        rc = lug.wait(60)
        if rc is None:
            lug.kill9()
            it.fail("--once into a closed pipe did not exit in 60 s\n" +
                    lug.stderr_tail())
        lug.check_sanitizers()
        it.check(rc == 0, "--once into a closed pipe exited %d\n%s" % (
            rc, lug.stderr_tail()))
        dlp = os.path.join(wd.state, "dead-letter.jsonl")
        it.check(os.path.exists(dlp), "no dead-letter file\n" +
                 lug.stderr_tail())
        dl = it.read_jsonl(dlp)
        bodies = sorted(r.get("body", "") for r in dl)
        want = ["line %05d" % s for s in range(n)]
        it.check(bodies == want, "dead-letter: %d records, want %d once each "
                 "(first %s)" % (len(bodies), n, bodies[:3]))
        for rec in dl:
            err = rec.get("lugger.error", "")
            it.check("output out rejected" in err and "pipe" in err.lower(),
                     "lugger.error does not name the output and the closed "
                     "pipe: %r" % err)
            it.check(rec.get("seen") is True and
                     rec.get("tag") == "t-" + rec["body"][:4],
                     "dead-letter record without its script's fields: %r" %
                     rec)
            it.check(rec.get("log.file.path") == path,
                     "dead-letter record without log.file.path: %r" % rec)
        return ("%d records into a closed stdout: all in dead-letter once, "
                "with the reason and the script's fields" % n)


if __name__ == "__main__":
    it.main("test_stdout_closed", main)
