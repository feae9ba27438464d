#!/usr/bin/env python3
"""`lugger test SCRIPT [SAMPLE...]`: the script runner without a config.

Runs the real binary on the fixture scripts and samples in
tests/fixtures/scripts/ and checks stdout, stderr and exit codes: typed
fields, drops, @routes, --expect matches and diffs, per-record script
errors, load errors, missing samples, --format json / cri, stdin,
--params, every parsing helper (helpers.lua), that a sandbox escape
fails the records instead of running, and that a stuck script is
interrupted (or reported) instead of hanging.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lugger_it as it  # noqa: E402

FIX = os.path.join(it.SOURCE_DIR, "tests", "fixtures", "scripts")


def lugger_test(*args, stdin=None):
    res = subprocess.run([it.LUGGER, "test"] + list(args), input=stdin,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=60, cwd=FIX, env=it.asan_env())
    return res


def records(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def expect_rc(res, rc, what):
    it.check(res.returncode == rc, "%s: exit %d, wanted %d\nstdout: %s\nstderr: %s"
             % (what, res.returncode, rc, res.stdout[-2000:], res.stderr[-2000:]))


def test_parse():
    res = lugger_test("parse.lua", "sample.log", "--format", "line")
    expect_rc(res, 0, "parse")
    recs = records(res.stdout)
    it.check(len(recs) == 5, "5 kept records (DEBUG dropped), got %d: %s" % (len(recs), res.stdout))
    r = recs[0]
    it.check(r["user"] == "alice" and r["took"] == 12 and isinstance(r["took"], int)
             and r["ratio"] == 0.5, "typed fields: %r" % r)
    it.check(r["log.file.path"] == "sample.log", "log.file.path is the sample: %r" % r)
    it.check("time" in r and r["time"].endswith("Z"), "line records get the read time: %r" % r)
    it.check(recs[4]["body"] == "INFO crlf=1", "CR removed before LF: %r" % recs[4])
    it.check("@routes" not in r, "no @routes without --routes")
    # stable key order: builtins, metadata, then fields in the order set
    keys = list(json.loads(res.stdout.splitlines()[0]).keys())
    it.check(keys[:3] == ["time", "body", "log.file.path"] and keys[3] == "level",
             "key order %r" % keys)


def test_routes():
    res = lugger_test("parse.lua", "sample.log", "--format", "line", "--routes")
    expect_rc(res, 0, "--routes")
    routes = [r["@routes"] for r in records(res.stdout)]
    it.check(routes == [["default"], ["errors", "audit"], ["audit"], ["default"], ["default"]],
             "routes %r" % routes)


def test_expect():
    res = lugger_test("parse.lua", "sample.log", "--format", "line",
                      "--expect", "parse.expected.jsonl")
    expect_rc(res, 0, "--expect match")
    it.check("5 records match parse.expected.jsonl" in res.stdout, res.stdout)

    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(FIX, "parse.expected.jsonl")) as f:
            lines = f.read().splitlines()
        # a changed value, a missing key and a golden record too many
        bad = [lines[0].replace('"took":12', '"took":13'),
               lines[1].replace(',"code":500', ''),
               lines[2], lines[3], lines[4], lines[4]]
        golden = os.path.join(d, "bad.jsonl")
        with open(golden, "w") as f:
            f.write("\n".join(bad) + "\n")
        res = lugger_test("parse.lua", "sample.log", "--format", "line", "--expect", golden)
        expect_rc(res, 1, "--expect mismatch")
        out = res.stdout
        it.check("record 1 differs:" in out and "expected took: 13" in out
                 and "got took: 12" in out, "value diff shown:\n" + out)
        it.check("record 2 differs:" in out and "unexpected code: 500" in out,
                 "extra key shown:\n" + out)
        it.check("record 6: missing; expected" in out, "missing record shown:\n" + out)
        it.check("3 of 6 records differ" in out, "summary:\n" + out)

        # a golden record with "time" compares it
        with open(golden, "w") as f:
            f.write(lines[0][:-1] + ',"time":"2024-01-01T00:00:00.000000000Z"}\n')
        res = lugger_test("parse.lua", "sample.log", "--format", "line", "--expect", golden)
        expect_rc(res, 1, "--expect with time")
        it.check("expected time:" in res.stdout, res.stdout)

        res = lugger_test("parse.lua", "sample.log", "--expect", os.path.join(d, "nope.jsonl"))
        expect_rc(res, 2, "missing golden")
        it.check("cannot open golden file" in res.stderr, res.stderr)


def test_script_errors():
    res = lugger_test("error.lua", "errors.log", "--format", "line")
    expect_rc(res, 1, "script error")
    recs = records(res.stdout)
    it.check([r["body"] for r in recs] == ["first", "third"] and all(r["ok"] for r in recs),
             "other records flow: %r" % recs)
    it.check("error: error.lua:4: cannot parse boom here (file errors.log offset 6)" in res.stderr,
             "error names script, line, file and offset:\n" + res.stderr)
    it.check("1 script error" in res.stderr, res.stderr)


def test_load_errors():
    res = lugger_test("broken.lua", "sample.log")
    expect_rc(res, 1, "syntax error")
    it.check("broken.lua:3:" in res.stderr, res.stderr)
    res = lugger_test("nonexistent.lua", "sample.log")
    expect_rc(res, 1, "missing script")
    it.check("nonexistent.lua: cannot read: No such file or directory" in res.stderr, res.stderr)
    res = lugger_test("parse.lua", "sample.log", "missing.log")
    expect_rc(res, 2, "missing sample")
    it.check("missing.log: cannot open sample: No such file or directory" in res.stderr, res.stderr)
    it.check(res.stdout == "", "nothing printed before the sample check: %r" % res.stdout)
    res = lugger_test("parse.lua", "sample.log", "--format", "xml")
    expect_rc(res, 2, "bad format")
    it.check("unknown format 'xml'" in res.stderr, res.stderr)
    res = lugger_test()
    expect_rc(res, 2, "no script")
    it.check("usage: lugger test" in res.stderr and
             res.stderr.startswith("lugger test: which script?"), res.stderr)


def test_json_format():
    res = lugger_test("json.lua", "sample.jsonl", "--format", "json")
    expect_rc(res, 0, "--format json")
    recs = records(res.stdout)
    it.check(len(recs) == 2, "two records (blank line skipped): %r" % recs)
    a, b = recs
    it.check(a["body"] == "hello" and a["time"] == "2024-05-01T12:00:00.500000000Z"
             and a["log.iostream"] == "stderr", "builtins from keys: %r" % a)
    it.check(a["user"] == {"name": "ann", "id": 7} and a["tags"] == ["a", "b"]
             and a["gone"] is None, "nested values kept: %r" % a)
    it.check(a["doubled"] == 42 and a["user_name"] == "ann" and a["first_tag"] == "a"
             and a["is_null"] is True, "script saw typed values: %r" % a)
    it.check("body" not in b and b["flag"] is True and b["doubled"] == 2,
             "a record without body: %r" % b)
    res = lugger_test("json.lua", "sample.log", "--format", "json")
    expect_rc(res, 2, "--format json on text")
    it.check("sample.log:1: invalid JSON at byte 1" in res.stderr, res.stderr)


def test_cri_and_stdin():
    res = lugger_test("parse.lua", "sample.cri", "--format", "cri", "--routes")
    expect_rc(res, 0, "--format cri")
    recs = records(res.stdout)
    it.check(len(recs) == 2, "P+F joined: %r" % recs)
    it.check(recs[0]["time"] == "2024-05-01T12:00:00.000000001Z" and recs[0]["log.iostream"] == "stdout"
             and recs[0]["user"] == "dan", "CRI record: %r" % recs[0])
    it.check(recs[1]["body"] == "ERROR user=eve code=503" and recs[1]["log.iostream"] == "stderr"
             and recs[1]["@routes"] == ["errors", "audit"], "joined CRI record: %r" % recs[1])
    # auto detects CRI too
    res = lugger_test("parse.lua", "sample.cri")
    expect_rc(res, 0, "auto")
    it.check(records(res.stdout)[0].get("user") == "dan", res.stdout)
    # no sample: stdin
    res = lugger_test("parse.lua", "--format", "line", stdin="WARN from=stdin\n")
    expect_rc(res, 0, "stdin")
    recs = records(res.stdout)
    it.check(len(recs) == 1 and recs[0]["from"] == "stdin" and "log.file.path" not in recs[0],
             "stdin record: %r" % recs)


def test_batch_and_params():
    res = lugger_test("batch.lua", "--format", "line", stdin="a\nskip\nb\n")
    expect_rc(res, 0, "process_batch")
    it.check([r.get("seq") for r in records(res.stdout)] == [1, 2], res.stdout)
    res = lugger_test("params.lua", "--format", "line", "--params", '{"key":"env","value":"prod"}',
                      stdin="x\n")
    expect_rc(res, 0, "--params")
    it.check(records(res.stdout)[0]["env"] == "prod", res.stdout)
    # Params that are not JSON are an error even for a script without init
    # (they were ignored).
    res = lugger_test("batch.lua", "--params", "{bad", stdin="a\n")
    expect_rc(res, 1, "--params {bad")
    it.check("batch.lua: params: json:" in res.stderr and res.stdout == "",
             res.stderr)


def test_helpers():
    """Every parsing helper through `lugger test` (helpers.lua on a line
    of each kind), and their script mistakes named with script and line."""
    res = lugger_test("helpers.lua", "helpers.log", "--format", "line",
                      "--expect", "helpers.expected.jsonl")
    expect_rc(res, 0, "helpers --expect")
    it.check("6 records match helpers.expected.jsonl" in res.stdout, res.stdout)
    res = lugger_test("helpers.lua", "helpers.log", "--format", "line")
    expect_rc(res, 0, "helpers")
    # --expect compares numbers as doubles: check the 64-bit id's digits.
    it.check('"req.id":18446744073709551615,' in res.stdout, res.stdout)
    recs = records(res.stdout)
    it.check([r["time"] for r in recs[:3]] + [recs[4]["time"]] ==
             ["2024-05-01T10:00:01.000000000Z", "2024-05-01T12:00:02.000000000Z",
              "2024-05-01T12:00:03.250000000Z", "2024-05-01T12:00:05.000000000Z"],
             "times from the lines: %r" % recs)
    with tempfile.TemporaryDirectory() as d:
        bad = os.path.join(d, "bad.lua")
        with open(bad, "w") as f:
            f.write('local RE = lugger.regex("x")\nfunction process(rec)\n'
                    '  rec:parse_json({ flatten = 1 })\nend\n')
        res = lugger_test(bad, "helpers.log", "--format", "line")
        expect_rc(res, 1, "helper error")
        it.check("bad.lua:3: rec:parse_json: flatten is true or a separator string "
                 "(file helpers.log offset 0)" in res.stderr, res.stderr)
        with open(bad, "w") as f:
            f.write('\nlocal RE = lugger.regex("(a")\nfunction process(rec) end\n')
        res = lugger_test(bad, "helpers.log", "--format", "line")
        expect_rc(res, 1, "bad pattern")
        it.check("bad.lua:2: lugger.regex: missing closing parenthesis at offset 2 of "
                 "the pattern" in res.stderr, res.stderr)


def test_sandbox():
    marker = os.path.join(tempfile.gettempdir(), "lugger_escape_%d" % os.getpid())
    res = lugger_test("escape.lua", "--format", "line", stdin=marker + "\n")
    expect_rc(res, 1, "escape")
    it.check(not os.path.exists(marker), "os.execute ran")
    it.check("escape.lua:3: attempt to call field 'execute' (a nil value)" in res.stderr, res.stderr)


def test_stuck_script():
    """A script that never finishes a record does not hang `lugger test`:
    the collector's watchdog (script_timeout's default, 1 s of CPU time)
    interrupts an interpreted loop, which fails that record only; a loop
    LuaJIT compiled ignores the interrupt, and lugger test says so and
    exits 1 (it once hung until killed)."""
    with tempfile.TemporaryDirectory() as d:
        interp = os.path.join(d, "interp.lua")
        with open(interp, "w") as f:
            f.write('function process(rec)\n'
                    '  if rec.body == "spin" then\n'
                    '    while true do local f = function() end end\n'
                    '  end\n'
                    'end\n')
        res = lugger_test(interp, "--format", "line", stdin="a\nspin\nb\n")
        expect_rc(res, 1, "interpreted loop")
        it.check([r["body"] for r in records(res.stdout)] == ["a", "b"], res.stdout)
        # "for 1.0 s of CPU time", or a sample later on a loaded machine.
        it.check("error: %s:3: script_timeout: no progress on this record for "
                 % interp in res.stderr and "s of CPU time" in res.stderr,
                 res.stderr)
        jit = os.path.join(d, "jit.lua")
        with open(jit, "w") as f:
            f.write('function process(rec)\n'
                    '  local i = 0\n'
                    '  while true do i = i + 1 end\n'
                    'end\n')
        res = lugger_test(jit, "--format", "line", stdin="a\n")
        expect_rc(res, 1, "compiled loop")
        it.check("error: %s: stuck on the record at the sample offset 0" % jit
                 in res.stderr and "interrupt did not stop it" in res.stderr,
                 res.stderr)


def test_print():
    """A script's print() goes to stderr, each line prefixed with
    "[<script>:<line>] ", so stdout stays the kept records only (what
    `lugger test ... | jq` reads); it once went to stdout between them."""
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "p.lua")
        with open(script, "w") as f:
            f.write('print("loading", 1)\n'
                    'function process(rec)\n'
                    '  print("saw", rec.body)\n'
                    '  if rec.body == "b" then print("two\\nlines") end\n'
                    '  pcall(print, "via pcall")\n'
                    'end\n')
        res = lugger_test(script, "--format", "line", stdin="a\nb\n")
        expect_rc(res, 0, "print")
        lines = res.stdout.splitlines()
        it.check(len(lines) == 2, "stdout holds the 2 records only: %r" % res.stdout)
        for line in lines:
            try:
                r = json.loads(line)
            except ValueError:
                it.fail("stdout line is not JSON (print leaked into it?): %r" % line)
            it.check(isinstance(r, dict) and r.get("body") in ("a", "b"), line)
        want = ["[%s:1] loading\t1" % script,
                "[%s:3] saw\ta" % script,
                "[%s:5] via pcall" % script,
                "[%s:3] saw\tb" % script,
                "[%s:4] two" % script,
                "[%s:4] lines" % script,
                "[%s:5] via pcall" % script]
        it.check(res.stderr.splitlines() == want,
                 "stderr:\n%s\nwanted:\n%s" % (res.stderr, "\n".join(want)))


def run_all():
    it.require_binary()
    tests = [test_parse, test_routes, test_expect, test_script_errors, test_load_errors,
             test_json_format, test_cri_and_stdin, test_batch_and_params, test_helpers,
             test_sandbox, test_stuck_script, test_print]
    for t in tests:
        it.log(t.__name__)
        t()
    return "%d checks groups passed" % len(tests)


if __name__ == "__main__":
    it.main("test_cli_test", run_all)
