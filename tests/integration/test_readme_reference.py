#!/usr/bin/env python3
"""The reference parts of README.md and lua/README.md name only what
exists, and name all of it:

1. Metrics: every metric the code registers (the name given to
   lg_metrics_counter/gauge/histogram in src/) is in README.md, and every
   `lugger_*` name README.md shows in backticks is one of them (or a
   family prefix `lugger_x_*` of some, or the `lugger_metadata` option).
   A running lugger (a file and a forward source, a file output, a
   script) serves each metric of the Operations table that it registers
   with exactly the labels the table gives it.
2. Command line: every `--option` of README's "Command line" is one a
   command's --help shows, and every option a --help shows is in that
   section; `run` and `check` --help name their own options; every --help
   writes to stdout; a wrong argument is named.
3. Lua API: every `lugger.<name>` of lua/README's `lugger` table is in a
   script's `lugger` table; every `rec:<method>(`, `re:<method>(` and
   `batch:<method>(` either README shows is a function on a record, a
   compiled regex and a batch; every `testing.<fn>(` and `f:<method>(` of
   the `lugger.testing` table is a function of the module and of a loaded
   filter.
4. Environment: every LUGGER_* variable src/ reads is in README.md.
5. Files: every path of the repository the READMEs name (tests/...,
   examples/..., deploy/..., scripts/..., src/..., spec/..., lua/...)
   exists (a glob matches something), and so does every test file named
   alone (`test_rotation.py`) somewhere under tests/.

A grep of the sources and a few `lugger` runs: about a second.
"""
import glob
import json
import os
import re
import subprocess

import lugger_it as it

README = os.path.join(it.SOURCE_DIR, "README.md")
LUA_README = os.path.join(it.SOURCE_DIR, "lua", "README.md")
REGISTER = re.compile(
    r'lg_metrics_(?:counter|gauge|histogram)\(\s*"(lugger_[a-z0-9_]+)"')


def section(text, start, end):
    i = text.index(start)
    return text[i:text.index(end, i)]


def lugger(*args, stdin=None, cwd=None):
    return subprocess.run([it.LUGGER] + list(args), capture_output=True,
                          text=True, timeout=60, env=it.asan_env(),
                          input=stdin, cwd=cwd)


def part_metrics(readme):
    registered = set()
    for path in glob.glob(os.path.join(it.SOURCE_DIR, "src", "**", "*.c"),
                          recursive=True):
        with open(path) as f:
            registered.update(REGISTER.findall(f.read()))
    it.check(len(registered) >= 40, "only %d metrics found in src/: %r"
             % (len(registered), sorted(registered)))
    missing = sorted(m for m in registered if m not in readme)
    it.check(not missing, "metrics registered in src/ but not in README.md: "
             "%s" % ", ".join(missing))
    unknown = []
    for name, star in re.findall(r"`(lugger_[a-z0-9_]+)(\*?)", readme):
        if star:
            ok = any(m.startswith(name) for m in registered)
        else:
            ok = name in registered or name == "lugger_metadata"
        if not ok:
            unknown.append(name + star)
    it.check(not unknown, "README.md names metrics that the code does not "
             "register: %s" % ", ".join(sorted(set(unknown))))
    return len(registered)


def part_metric_labels(wd, readme):
    doc = section(readme, "## Operations: metrics", "\n## ")
    want = {}
    for line in re.findall(r"^\| `lugger_.*", doc, re.M):
        cells = [c.strip() for c in line.strip("|").split("|")]
        labels = set(re.findall(r"`(\w+)`", cells[1]))
        for name in re.findall(r"`(lugger_\w+)`", cells[0]):
            want[name] = labels
    it.check(len(want) >= 30, "metrics table: %r" % want)
    log = os.path.join(wd.logs, "a.log")
    with open(log, "w") as f:
        f.write("one\n")
    port = it.free_port()
    conf = it.write_config(
        wd.p("metrics.lua"),
        {"state_dir": wd.state, "http": "127.0.0.1:%d" % port, "workers": 1},
        {"app": {"type": "file", "paths": [log], "read_from": "head"},
         "fw": {"type": "forward", "host": "127.0.0.1",
                "port": it.free_port()}},
        {"main": {"sources": ["app", "fw"], "scripts": ["s.lua"],
                  "outputs": ["out"]}},
        {"out": {"type": "file", "path": wd.p("out.jsonl")}},
        scripts={"s.lua": "function process(rec) end\n"})
    with it.Lugger(conf) as lug:
        lug.wait_started()
        it.wait_for(lambda: it.metric_sum(port, "lugger_records_delivered_total")
                    >= 1, 30, "a record delivered", proc=lug)
        st, text = it.http_get(port, "/metrics")
        lug.stop()
    it.check(st == 200, "/metrics: %r" % st)
    got = {}
    for m in re.finditer(r"^(lugger_\w+?)(?:_bucket|_sum|_count)?(?:\{(.*?)\})? ",
                         text, re.M):
        name = m.group(1)
        if name not in want and name + "_total" in want:
            name += "_total"  # not one: a counter's own name ends in _total
        labels = set(re.findall(r'(\w+)="', m.group(2) or "")) - {"le"}
        got.setdefault(name, set()).update(labels)
    served = [n for n in want if n in got]
    it.check(len(served) >= 20, "only %d of the table's metrics served: %r"
             % (len(served), sorted(got)))
    wrong = ["%s: README %s, served %s" % (n, sorted(want[n]), sorted(got[n]))
             for n in served if want[n] != got[n]]
    it.check(not wrong, "labels differ: %s" % "; ".join(wrong))
    return len(served)


def part_environment(readme):
    names = set()
    for path in glob.glob(os.path.join(it.SOURCE_DIR, "src", "**", "*.c"),
                          recursive=True):
        with open(path) as f:
            names.update(re.findall(r'getenv\("(LUGGER_\w+)"\)', f.read()))
    it.check(names, "no LUGGER_* variables found in src/")
    missing = sorted(n for n in names if n not in readme)
    it.check(not missing, "environment variables src/ reads but README.md "
             "does not name: %s" % ", ".join(missing))
    return len(names)


def part_paths(readme):
    with open(LUA_README) as f:
        text = readme + f.read()
    paths = set(re.findall(r"\b(?:tests|examples|deploy|scripts|src|spec|lua)"
                           r"/[A-Za-z0-9_./*-]+", text))
    missing = []
    for p in paths:
        p = p.rstrip(".")
        if not glob.glob(os.path.join(it.SOURCE_DIR, p)):
            missing.append(p)
    tests = set(os.path.basename(p) for p in glob.glob(
        os.path.join(it.SOURCE_DIR, "tests", "**", "test_*"), recursive=True))
    named = set(re.findall(r"\b(test_\w+\.(?:py|c|sh))\b", text))
    missing += sorted(named - tests)
    it.check(not missing, "paths the READMEs name that do not exist: %s"
             % ", ".join(sorted(missing)))
    return len(paths) + len(named)


def part_command_line(readme):
    doc = section(readme, "## Command line", "\n## ")
    helps = [lugger("--help")]
    for cmd in ("run", "check", "test", "repl", "lua"):
        helps.append(lugger(cmd, "--help"))
    text = ""
    for r in helps:
        it.check(r.returncode == 0, "--help: %d %s" % (r.returncode, r.stderr))
        # Asked for, help is the output: on stdout (`| less` works), and
        # nothing on stderr.
        it.check(r.stdout.startswith("usage: ") and r.stderr == "",
                 "%s: help not on stdout: %r %r" % (" ".join(r.args[1:]),
                                                    r.stdout, r.stderr))
        text += r.stdout + r.stderr
    # Each command's own --help names the options README gives it, -c's
    # long form included ("-c FILE is also --config FILE").
    for cmd, r in zip(("run", "check"), helps[1:3]):
        line = re.search(r"^- `lugger %s .*?(?=^- )" % cmd, doc, re.M | re.S)
        want = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line.group(0)))
        want.add("--config")
        missing = sorted(o for o in want if o not in r.stdout)
        it.check(not missing, "lugger %s --help lacks %s: %r"
                 % (cmd, ", ".join(missing), r.stdout))
    # A wrong argument is named, not only answered with the usage.
    for cmd in ("run", "check"):
        for args, says in ((["--onec"], "unexpected argument '--onec'"),
                           (["-c"], "-c needs a FILE")):
            r = lugger(cmd, *args)
            it.check(r.returncode == 2 and says in r.stderr,
                     "lugger %s %s: %d %r" % (cmd, " ".join(args),
                                              r.returncode, r.stderr))
    flag = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
    in_help = set(flag.findall(text)) | {"--help"}
    in_doc = set(flag.findall(doc))
    it.check(in_doc <= in_help, "README's Command line names options no "
             "--help shows: %s" % ", ".join(sorted(in_doc - in_help)))
    it.check(in_help <= in_doc, "options the --help texts show but README's "
             "Command line does not: %s" % ", ".join(sorted(in_help - in_doc)))
    return len(in_help)


def lua_list(names):
    return "{" + ", ".join(json.dumps(n) for n in sorted(names)) + "}"


def part_lua_api(wd, readme):
    with open(LUA_README) as f:
        lua_readme = f.read()
    both = readme + lua_readme
    table = section(lua_readme, "The `lugger` table:", "\n#")
    fields = set(re.findall(r"^\| `lugger\.(\w+)", table, re.M))
    rec = set(re.findall(r"\brec:(\w+)[({]", both))
    regex = set(re.findall(r"\bre:(\w+)\(", both))
    batch = set(re.findall(r"\bbatch:(\w+)\(", both))
    it.check(len(fields) >= 6 and len(rec) >= 10 and regex and batch,
             "too few API names found: %r %r %r %r" % (fields, rec, regex, batch))
    d = wd.mk("lua")
    script = os.path.join(d, "api.lua")
    with open(script, "w") as f:
        f.write("""
local RE = lugger.regex("x")
local missing = {}
local function need(what, t, names, kind)
  for _, n in ipairs(names) do
    local v = t[n]
    if v == nil or (kind and type(v) ~= kind) then
      missing[#missing + 1] = what .. n
    end
  end
end
function process_batch(batch)
  need("lugger.", lugger, %s)
  need("batch:", batch, %s, "function")
  need("re:", RE, %s, "function")
  for rec in batch:records() do
    need("rec:", rec, %s, "function")
    rec.missing = table.concat(missing, " ")
  end
end
""" % (lua_list(fields), lua_list(batch), lua_list(regex), lua_list(rec)))
    r = lugger("test", script, stdin="a line\n")
    it.check(r.returncode == 0, "lugger test api.lua: %s" % r.stderr)
    out = json.loads(r.stdout.splitlines()[0])
    it.check(out["missing"] == "", "in the READMEs, not in the Lua API: %s"
             % out["missing"])

    tsec = section(lua_readme, "## Testing a script from busted", "\n## ")
    mod = set(re.findall(r"`testing\.(\w+)\(", tsec))
    flt = set(re.findall(r"`f:(\w+)\(", tsec))
    it.check(len(mod) >= 3 and len(flt) >= 4, "testing API: %r %r" % (mod, flt))
    with open(os.path.join(d, "f.lua"), "w") as f:
        f.write("function process(rec) end\n")
    with open(os.path.join(d, "t.lua"), "w") as f:
        f.write("""
local testing = require("lugger.testing")
local f = assert(testing.load("f.lua"))
local missing = {}
for _, n in ipairs(%s) do
  if type(testing[n]) ~= "function" then missing[#missing + 1] = "testing." .. n end
end
for _, n in ipairs(%s) do
  if type(f[n]) ~= "function" then missing[#missing + 1] = "f:" .. n end
end
print("missing: " .. table.concat(missing, " "))
""" % (lua_list(mod), lua_list(flt)))
    r = lugger("lua", "t.lua", cwd=d)
    it.check(r.returncode == 0 and "missing: \n" in r.stdout,
             "lugger.testing: %d %s %s" % (r.returncode, r.stdout, r.stderr))
    return len(fields) + len(rec) + len(regex) + len(batch) + len(mod) + len(flt)


def run():
    it.require_binary()
    with open(README) as f:
        readme = f.read()
    with it.WorkDir("readme_ref") as wd:
        nm = part_metrics(readme)
        nl = part_metric_labels(wd, readme)
        nf = part_command_line(readme)
        na = part_lua_api(wd, readme)
        ne = part_environment(readme)
        np = part_paths(readme)
    return ("%d metrics (%d served with the README's labels), %d command-line options, %d Lua API names, %d "
            "environment variables and %d paths: the READMEs and the code "
            "agree" % (nm, nl, nf, na, ne, np))


if __name__ == "__main__":
    it.main("test_readme_reference", run)
