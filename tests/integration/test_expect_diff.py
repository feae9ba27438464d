#!/usr/bin/env python3
"""`lugger test --expect`: the diff against a golden file aligns records
the way diff(1) aligns lines, so one record dropped, added or changed in
the middle of a sample shows as that one record; several samples are run
in order, each with its own log.file.path; large mismatches still finish.

Uses examples/nginx/nginx.lua over tests/fixtures/nginx/access.log (60
lines) and its golden file.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lugger_it as it  # noqa: E402

SCRIPT = os.path.join("examples", "nginx", "nginx.lua")
SAMPLE = os.path.join("tests", "fixtures", "nginx", "access.log")
GOLDEN = os.path.join(it.SOURCE_DIR, "tests", "fixtures", "nginx", "access.expected.jsonl")


def lugger_test(*args):
    return subprocess.run([it.LUGGER, "test"] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120,
                          cwd=it.SOURCE_DIR, env=it.asan_env())


def golden_lines():
    with open(GOLDEN) as f:
        return [l for l in f.read().splitlines() if l.strip()]


def with_golden(lines, fn):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "golden.jsonl")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return fn(path)


def test_one_record_out_of_place():
    lines = golden_lines()
    it.check(len(lines) == 60, "the golden file has 60 records")

    # the script keeps record 30 that the golden file does not have
    res = with_golden(lines[:29] + lines[30:], lambda g: lugger_test(
        SCRIPT, SAMPLE, "--format", "line", "--expect", g))
    it.check(res.returncode == 1, "mismatch exits 1, got %d" % res.returncode)
    out = res.stdout.splitlines()
    it.check(len(out) == 2 and out[0].startswith("record 30: unexpected {")
             and json.loads(out[0][len("record 30: unexpected "):])["body"]
             == json.loads(lines[29])["body"]
             and out[1].startswith("1 of 60 records differ from ")
             and out[1].endswith(" (60 kept, 59 expected)"),
             "one unexpected record:\n" + res.stdout)

    # the golden file has a record the script does not keep
    extra = json.dumps({"body": "not in the sample"})
    res = with_golden(lines[:10] + [extra] + lines[10:], lambda g: lugger_test(
        SCRIPT, SAMPLE, "--format", "line", "--expect", g))
    out = res.stdout.splitlines()
    it.check(res.returncode == 1 and len(out) == 2
             and out[0] == "record 11: missing; expected " + extra
             and out[1].startswith("1 of 61 records differ"), "one missing record:\n" + res.stdout)

    # a changed value in record 40 and a dropped record 50
    changed = json.loads(lines[39])
    changed["status"] = 999
    res = with_golden(lines[:39] + [json.dumps(changed)] + lines[40:49] + lines[50:],
                      lambda g: lugger_test(SCRIPT, SAMPLE, "--format", "line", "--expect", g))
    out = res.stdout.splitlines()
    it.check(res.returncode == 1 and out[0] == "record 40 differs:"
             and out[1] == "    expected status: 999"
             and out[2].startswith("         got status: ")
             and out[3].startswith("record 50: unexpected {")
             and out[4].startswith("2 of 60 records differ"), "changed and extra:\n" + res.stdout)

    res = lugger_test(SCRIPT, SAMPLE, "--format", "line", "--expect", GOLDEN)
    it.check(res.returncode == 0 and res.stdout == "60 records match %s\n" % GOLDEN,
             "the golden file matches: %d %s %s" % (res.returncode, res.stdout, res.stderr))


def test_several_samples():
    with tempfile.TemporaryDirectory() as d:
        a, b = os.path.join(d, "a.log"), os.path.join(d, "b.log")
        with open(os.path.join(it.SOURCE_DIR, SAMPLE)) as f:
            sample = f.read().splitlines()
        with open(a, "w") as f:
            f.write("\n".join(sample[:3]) + "\n")
        with open(b, "w") as f:
            f.write("\n".join(sample[3:5]) + "\n")
        res = lugger_test(SCRIPT, a, b, "--format", "line", "--routes",
                          "--params", '{"errors_output":"errors"}')
        recs = [json.loads(l) for l in res.stdout.splitlines()]
        it.check(res.returncode == 0 and len(recs) == 5, "5 records: %s %s" % (res.stdout, res.stderr))
        it.check([r["log.file.path"] for r in recs] == [a, a, a, b, b], "paths in sample order")
        it.check(recs[4]["status"] == 503 and recs[4]["@routes"] == ["errors"]
                 and recs[0]["@routes"] == ["default"], "routes: %r" % [r["@routes"] for r in recs])
        golden = golden_lines()[:5]
        res = with_golden(golden, lambda g: lugger_test(SCRIPT, a, b, "--format", "line",
                                                        "--expect", g))
        it.check(res.returncode == 0 and res.stdout.startswith("5 records match"), res.stdout)


def test_large_mismatch():
    # 6000 records against a golden file with every record changed: beyond
    # the alignment limit the records are paired by position; it finishes,
    # shows the first 20 and counts the rest.
    with tempfile.TemporaryDirectory() as d:
        sample = os.path.join(d, "big.log")
        with open(sample, "w") as f:
            for k in range(6000):
                f.write("line %d\n" % k)
        golden = os.path.join(d, "big.jsonl")
        with open(golden, "w") as f:
            for k in range(6001):
                f.write(json.dumps({"body": "other %d" % k}) + "\n")
        res = subprocess.run([it.LUGGER, "test", os.path.join(it.SOURCE_DIR, SCRIPT), sample,
                              "--format", "line", "--expect", golden],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=120, env=it.asan_env())
        out = res.stdout.splitlines()
        it.check(res.returncode == 1 and out[0] == "record 1 differs:"
                 and "... and 5981 more differing records" in out
                 and out[-1].startswith("6001 of 6001 records differ"),
                 "large mismatch: %d\n%s" % (res.returncode, "\n".join(out[-5:])))


def run_all():
    it.require_binary()
    tests = [test_one_record_out_of_place, test_several_samples, test_large_mismatch]
    for t in tests:
        it.log(t.__name__)
        t()
    return "%d check groups passed" % len(tests)


if __name__ == "__main__":
    it.main("test_expect_diff", run_all)
