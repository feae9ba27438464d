#!/usr/bin/env python3
"""The README's examples, taken from README.md as a new user copies them:

1. "Writing a filter": the two-line nginx parser runs with `lugger test`
   on the bundled nginx log (examples/quickstart/logs/nginx-access.log):
   every "combined" line parsed into typed fields, `time` from
   $time_local, the lines that are not "combined" kept unchanged.
2. "S3 output" and "CloudWatch Logs output": their `outputs = {...}`
   blocks, in a config around them, pass `lugger check` (without any AWS
   credentials, as on a laptop before deploying).
3. Every other config block of the README (the whole config, `sources =`,
   `outputs =`, `pipelines =`, `scripts =` fragments): completed into a
   config with what it leaves out (a file source, stdout outputs for the
   names it routes to, stub scripts), it passes `lugger check`, so a key,
   type or value the README shows is one the parser accepts.
4. "Writing a filter": its app.lua on its app.log, as the steps show them:
   `lugger test --routes` keeps two records (routes default and errors,
   took_ms parsed), the repl transcript's lines answer as shown, the
   golden file round-trips with `--expect`, and its busted spec
   (app_spec.lua) passes under `lugger lua --busted`.
5. lua/README.md's "Writing a script": the nginx script drops the health
   probe (kept with --params '{"keep_health":true}'), routes a 5xx answer
   to "errors" and removes the body; the batch script drops DEBUG lines.
6. README.md's "Lua scripts" skeleton, each of its two scripts as it
   stands: the per-record one drops the health probe and routes a 5xx
   answer to "errors"; the per-batch one drops DEBUG lines.
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


# Lua that completes a fragment table `frag` into a config: a file source
# when it has none, a pipeline over every source to every output when it
# has none, a stdout output for every name a pipeline routes to that it
# does not define.
COMPLETE = r"""
frag.settings = frag.settings or { state_dir = STATE }
frag.sources = frag.sources or { app = { type = "file", paths = { LOGS .. "/*.log" } } }
frag.outputs = frag.outputs or {}
if frag.pipelines == nil then
  local srcs, outs = {}, {}
  for k in pairs(frag.sources) do srcs[#srcs + 1] = k end
  for k in pairs(frag.outputs) do outs[#outs + 1] = k end
  if #outs == 0 then frag.outputs.out = { type = "stdout" }; outs = { "out" } end
  frag.pipelines = { main = { sources = srcs, outputs = outs, scripts = frag.scripts } }
end
frag.scripts = nil
for _, p in pairs(frag.pipelines) do
  for _, o in ipairs(p.outputs or {}) do
    frag.outputs[o] = frag.outputs[o] or { type = "stdout" }
  end
end
return frag
"""

# A fragment that is a part of one output's entry: the entry around it.
ENTRY_FRAGMENTS = {
    "idempotence": 'outputs = { kafka = { type = "kafka", brokers = "k:9092", '
                   'topic = "logs", %s } }',
}


def config_fragments(text):
    """(line, lua) of each ```lua block of README.md that is config: a whole
    config (`return {`) or fields of one; a block of two commented parts
    (`-- sidecar` ... `-- daemon` ...) gives each."""
    for m in re.finditer(r"```lua\n(.*?)```", text, re.S):
        line = text.count("\n", 0, m.start()) + 1
        parts, cur = [], []
        for ln in m.group(1).splitlines():
            if re.match(r"^-- \w+$", ln) and cur:
                parts.append("\n".join(cur))
                cur = []
            cur.append(ln)
        parts.append("\n".join(cur))
        for part in parts:
            body = "\n".join(ln for ln in part.splitlines()
                             if not re.match(r"^-- \w+$", ln))
            first = body.lstrip().split("\n", 1)[0]
            key = re.match(r"^(\w+)\s*=", first)
            if first.startswith("return {"):
                yield line, "local frag = (function()\n%s\nend)()" % body
            elif key and key.group(1) in ("settings", "sources", "pipelines",
                                          "outputs", "scripts"):
                yield line, "local frag = {\n%s\n}" % body
            elif key and key.group(1) in ENTRY_FRAGMENTS:
                yield line, "local frag = {\n%s\n}" % (
                    ENTRY_FRAGMENTS[key.group(1)] % body)


STUB_SCRIPT = ("function process(rec) end\n"
               "function route(tag, ts, record) return 0, ts, record end\n")


def part_config_blocks(wd, text):
    n = 0
    for line, lua in config_fragments(text):
        d = wd.mk("block%d" % line)
        # Scripts a fragment names, relative to the config file.
        for name in set(re.findall(r'"([\w./-]+\.lua)"', lua)):
            path = os.path.join(d, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(STUB_SCRIPT)
        conf = os.path.join(d, "lugger.lua")
        with open(conf, "w") as f:
            f.write("local STATE, LOGS = %s, %s\n%s\n%s" % (
                it.lua_str(wd.state), it.lua_str(wd.logs), lua, COMPLETE))
        env = it.asan_env()
        env["HOST_IP"] = "127.0.0.1"
        r = subprocess.run([it.LUGGER, "check", "-c", conf], capture_output=True,
                           text=True, timeout=60, env=env)
        it.check(r.returncode == 0, "lugger check of the README's config block "
                 "at line %d: %s %s" % (line, r.stdout, r.stderr))
        n += 1
    it.check(n >= 15, "only %d config blocks found in README.md" % n)
    return n


def block_after_text(text, marker):
    """The unlabelled ``` block after `marker`."""
    i = text.index(marker)
    m = re.compile(r"```\n(.*?)```", re.S).search(text, i)
    it.check(m, "no ``` block after %r in README.md" % marker)
    return m.group(1)


def part_writing_a_filter(wd, text):
    d = wd.mk("filter")
    files = {
        "app.lua": block_after(text, "**1. Write it.**"),
        "app.log": block_after_text(text, "pairs, in `app.log`"),
        "app_spec.lua": block_after(text, "`lugger.testing` module, which runs"),
    }
    for name, body in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(body)
    it.check(files["app_spec.lua"].startswith("-- app_spec.lua"),
             "the spec block: %r" % files["app_spec.lua"][:40])
    env = it.asan_env()

    def lugger(*args, stdin=None):
        return subprocess.run([it.LUGGER] + list(args), capture_output=True,
                              text=True, timeout=120, env=env, cwd=d,
                              input=stdin)

    r = lugger("test", "app.lua", "app.log", "--routes")
    it.check(r.returncode == 0, "lugger test: %s" % r.stderr)
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    it.check([x["@routes"] for x in recs] == [["default"], ["errors"]] and
             [x["took_ms"] for x in recs] == [12, 503] and
             recs[1]["err"] == "timeout" and recs[1]["level"] == "ERROR" and
             recs[1]["time"] == "2024-05-01T12:00:02.000000000Z",
             "lugger test --routes: %r" % recs)
    with open(os.path.join(d, "app.expected.jsonl"), "w") as f:
        f.write(r.stdout)
    r = lugger("test", "app.lua", "app.log", "--routes", "--expect",
               "app.expected.jsonl")
    it.check(r.returncode == 0 and
             r.stdout.strip() == "2 records match app.expected.jsonl",
             "--expect: %d %r %r" % (r.returncode, r.stdout, r.stderr))
    # The repl transcript: after `:next 2`, rec.took_ms > 500 is true, and
    # rec.nope + 1 is the error it shows (a pipe: exit 1, as a line failed).
    r = lugger("repl", "app.lua", "--sample", "app.log",
               stdin=":next 2\nrec.took_ms > 500\nrec.nope + 1\n")
    transcript = block_after_text(text, "**2. Try it in the repl.**")
    want_err = [ln for ln in transcript.splitlines() if ln.startswith("error: ")]
    it.check(r.returncode == 1 and "\ntrue\n" in "\n" + r.stdout and
             want_err and want_err[0] in r.stdout + r.stderr,
             "repl: rc %d, wanted 'true' and %r in:\n%s%s" %
             (r.returncode, want_err, r.stdout, r.stderr))
    r = lugger("lua", "--busted", "app_spec.lua")
    it.check(r.returncode == 0 and "2 successes / 0 failures" in r.stdout,
             "busted app_spec.lua: %d %s %s" % (r.returncode, r.stdout, r.stderr))


def lugger_test(d, *args, stdin=None):
    """`lugger test ARGS` in folder d: the records it prints."""
    r = subprocess.run([it.LUGGER, "test"] + list(args), capture_output=True,
                       text=True, timeout=120, env=it.asan_env(), cwd=d, input=stdin)
    it.check(r.returncode == 0, "lugger test %r: %s" % (args, r.stderr))
    return [json.loads(x) for x in r.stdout.splitlines()]


def write_scripts_and_log(d, blocks):
    """Writes blocks (name -> Lua text) and access.log (a 200, a health
    probe, a 503) into folder d; returns the log's path."""
    for name, body in blocks.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(body)
    log = os.path.join(d, "access.log")
    with open(log, "w") as f:
        for path, status in (("/x", 200), ("/health", 200), ("/y", 503)):
            f.write('10.0.0.1 - - [01/May/2024:12:00:01 +0000] "GET %s HTTP/1.1" '
                    '%d 5 "-" "curl"\n' % (path, status))
    return log


def part_lua_readme(wd):
    with open(os.path.join(it.SOURCE_DIR, "lua", "README.md")) as f:
        text = f.read()
    start = text.index("## Writing a script")
    blocks = re.findall(r"```lua\n(.*?)```", text[start:], re.S)
    d = wd.mk("luareadme")
    log = write_scripts_and_log(d, {"nginx.lua": blocks[0], "batch.lua": blocks[1]})
    recs = lugger_test(d, "nginx.lua", log, "--routes")
    it.check([(x["path"], x["status"], x["@routes"]) for x in recs] ==
             [("/x", 200, ["default"]), ("/y", 503, ["errors"])] and
             all("body" not in x and x["remote_addr"] == "10.0.0.1" for x in recs),
             "lua/README nginx script: %r" % recs)
    recs = lugger_test(d, "nginx.lua", log, "--params", '{"keep_health":true}')
    it.check([x["path"] for x in recs] == ["/x", "/health", "/y"],
             "with keep_health: %r" % recs)
    recs = lugger_test(d, "batch.lua", stdin="a\nDEBUG b\nc\n")
    it.check([x["body"] for x in recs] == ["a", "c"], "batch script: %r" % recs)


def part_lua_scripts_skeleton(wd, text):
    start = text.index("## Lua scripts")
    end = text.index("### Writing a filter", start)
    blocks = re.findall(r"```lua\n(.*?)```", text[start:end], re.S)
    it.check(len(blocks) == 2, "'Lua scripts' has %d lua blocks" % len(blocks))
    d = wd.mk("skeleton")
    log = write_scripts_and_log(d, {"record.lua": blocks[0], "batch.lua": blocks[1]})
    recs = lugger_test(d, "record.lua", log, "--routes")
    it.check([(x["path"], x["status"], x["@routes"]) for x in recs] ==
             [("/x", 200, ["default"]), ("/y", 503, ["errors"])],
             "the per-record skeleton: %r" % recs)
    recs = lugger_test(d, "batch.lua", stdin="a\nDEBUG b\nc\n")
    it.check([x["body"] for x in recs] == ["a", "c"], "the per-batch skeleton: %r" % recs)


def run():
    it.require_binary()
    with it.WorkDir("readme") as wd:
        with open(README) as f:
            text = f.read()
        parsed, total = part_nginx(wd, text)
        n = part_aws_blocks(wd, text)
        nb = part_config_blocks(wd, text)
        part_writing_a_filter(wd, text)
        part_lua_readme(wd)
        part_lua_scripts_skeleton(wd, text)
        return ("nginx two-liner: %d of %d lines parsed, time from the line; "
                "%d AWS output blocks and %d config blocks pass lugger check; "
                "the 'Writing a filter' steps, the 'Lua scripts' skeleton and "
                "lua/README's scripts run as shown"
                % (parsed, total, n, nb))


if __name__ == "__main__":
    it.main("test_readme_examples", run)
