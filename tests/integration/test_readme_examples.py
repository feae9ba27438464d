#!/usr/bin/env python3
"""The README's examples, taken from README.md as a new user copies them:

1. "Writing a filter": the two-line nginx parser runs with `lugger test`
   on the bundled nginx log (examples/quickstart/logs/nginx-access.log):
   every "combined" line parsed into typed fields, `time` from
   $time_local, the lines that are not "combined" kept unchanged.
2. "S3 output" and "CloudWatch Logs output": their `outputs = {...}`
   blocks, in a config around them, pass `lugger check` (without any AWS
   credentials, as on a laptop before deploying).
(test_s3.py and test_cloudwatch_logs.py deliver with the deploy/ ones.)
"""
import json
import os
import re
import subprocess

import lugger_it as it

README = os.path.join(it.SOURCE_DIR, "README.md")
NGINX_LOG = os.path.join(it.SOURCE_DIR, "examples", "quickstart", "logs",
                         "nginx-access.log")
COMBINED = re.compile(r'^(\S+) \S+ (\S+) \[([^\]]+)\] "(\S+) ([^ "?]+)\S* '
                      r'([^"]*)" (\d+) (\d+) "([^"]*)" "([^"]*)"$')


def block_after(text, marker, lang="lua"):
    i = text.index(marker)
    m = re.compile(r"```%s\n(.*?)```" % lang, re.S).search(text, i)
    it.check(m, "no ```%s block after %r in README.md" % (lang, marker))
    return m.group(1)


def part_nginx(wd, text):
    src = block_after(text, "An nginx\naccess-log parser")
    lines = [ln for ln in src.splitlines() if ln.strip()]
    it.check(len(lines) == 2, "the README's nginx parser is %d lines" % len(lines))
    script = wd.p("nginx.lua")
    with open(script, "w") as f:
        f.write(src)
    r = subprocess.run([it.LUGGER, "test", script, NGINX_LOG],
                       capture_output=True, text=True, timeout=120,
                       env=it.asan_env())
    it.check(r.returncode == 0, "lugger test: %s" % r.stderr[-2000:])
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    with open(NGINX_LOG) as f:
        raw = f.read().splitlines()
    it.check(len(recs) == len(raw), "%d records for %d lines" % (len(recs), len(raw)))
    parsed = 0
    for line, rec in zip(raw, recs):
        it.check(rec["body"] == line, "body %r != line %r" % (rec["body"], line))
        m = COMBINED.match(line)
        if not m or m.group(6) == "":
            it.check("status" not in rec, "a line that is not combined got "
                     "fields: %r" % rec)
            continue
        parsed += 1
        it.check(rec["status"] == int(m.group(7)) and
                 rec["body_bytes_sent"] == int(m.group(8)) and
                 rec["remote_addr"] == m.group(1) and rec["method"] == m.group(4),
                 "fields of %r: %r" % (line, rec))
        # 01/May/2024:12:00:01 +0000 -> 2024-05-01T12:00:01
        d, mon, rest = m.group(3).split("/", 2)
        y, hms = rest.split(" ")[0].split(":", 1)
        it.check(rec["time"].startswith("%s-05-%sT%s" % (y, d, hms)) and mon == "May",
                 "time %r from %r" % (rec["time"], m.group(3)))
    it.check(parsed >= len(raw) - 10, "only %d of %d lines parsed" % (parsed, len(raw)))
    return parsed, len(raw)


def part_aws_blocks(wd, text):
    n = 0
    for marker in ("`type = \"s3\"` writes objects", "`type = \"cloudwatch_logs\"` sends"):
        out = block_after(text, marker)
        it.check(out.lstrip().startswith("outputs = {"), "block: %r" % out[:40])
        name = re.search(r"outputs = \{\s*(\w+) =", out).group(1)
        conf = wd.p("aws%d.lua" % n)
        with open(conf, "w") as f:
            f.write('return {\n  settings = { state_dir = "%s" },\n'
                    '  sources = { app = { type = "file", paths = { "%s/*.log" } } },\n'
                    '  pipelines = { main = { sources = { "app" }, outputs = { "%s" } } },\n'
                    '  %s}\n' % (wd.state, wd.logs, name, out))
        env = {k: v for k, v in it.asan_env().items() if not k.startswith("AWS_")}
        env["HOME"] = wd.path
        r = subprocess.run([it.LUGGER, "check", "-c", conf], capture_output=True,
                           text=True, timeout=60, env=env)
        it.check(r.returncode == 0, "lugger check of the README's %s block: %s %s"
                 % (name, r.stdout, r.stderr))
        n += 1
    return n


def run():
    it.require_binary()
    with it.WorkDir("readme") as wd:
        with open(README) as f:
            text = f.read()
        parsed, total = part_nginx(wd, text)
        n = part_aws_blocks(wd, text)
        return ("nginx two-liner: %d of %d lines parsed, time from the line; "
                "%d AWS output blocks pass lugger check" % (parsed, total, n))


if __name__ == "__main__":
    it.main("test_readme_examples", run)
