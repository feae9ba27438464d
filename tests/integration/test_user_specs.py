#!/usr/bin/env python3
"""Users' busted specs of their filters: `lugger lua --busted SPEC` runs
every examples/**/*_spec.lua (written with lugger.testing) from the
source tree and from another directory; a spec whose expectation is wrong
fails with exit status 1 and says which assertion failed.
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lugger_it as it  # noqa: E402


def busted(args, cwd):
    return subprocess.run([it.LUGGER, "lua", "--busted"] + args, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120, cwd=cwd,
                          env=it.asan_env())


def test_examples():
    specs = sorted(glob.glob(os.path.join(it.SOURCE_DIR, "examples", "**", "*_spec.lua"),
                             recursive=True))
    it.check(specs, "no examples/**/*_spec.lua found")
    for spec in specs:
        rel = os.path.relpath(spec, it.SOURCE_DIR)
        for cwd, arg in ((it.SOURCE_DIR, rel), ("/", spec)):
            res = busted(["-o", "TAP", arg], cwd)
            it.check(res.returncode == 0 and "not ok" not in res.stdout,
                     "%s from %s: exit %d\n%s\n%s" % (arg, cwd, res.returncode,
                                                      res.stdout[-3000:], res.stderr[-2000:]))
            n = res.stdout.count("\nok ") + res.stdout.startswith("ok ")
            it.check(n >= 3, "%s: %d passing tests in\n%s" % (arg, n, res.stdout))


def test_failing_spec():
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(os.path.join(it.SOURCE_DIR, "examples", "nginx", "nginx.lua"), d)
        with open(os.path.join(d, "wrong_spec.lua"), "w") as f:
            f.write('local testing = require("lugger.testing")\n'
                    'describe("nginx.lua", function()\n'
                    '  it("is checked", function()\n'
                    '    local f = assert(testing.load(testing.here("nginx.lua")))\n'
                    '    local res = f:run({ \'1.2.3.4 - - [01/May/2024:12:00:01 +0000] '
                    '"GET / HTTP/1.1" 200 5 "-" "-"\' })\n'
                    '    assert.equals(404, res.kept[1].status)\n'
                    '  end)\n'
                    'end)\n')
        res = busted(["wrong_spec.lua"], d)
        it.check(res.returncode == 1, "a failing spec exits 1, got %d" % res.returncode)
        it.check("wrong_spec.lua:6: Expected objects to be equal." in res.stdout
                 and "(number) 200" in res.stdout, res.stdout)


def run_all():
    it.require_binary()
    tests = [test_examples, test_failing_spec]
    for t in tests:
        it.log(t.__name__)
        t()
    return "%d check groups passed" % len(tests)


if __name__ == "__main__":
    it.main("test_user_specs", run_all)
