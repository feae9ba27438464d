#!/usr/bin/env bash
# Integration test: `lugger check -c FILE` on real config files — exit 0
# and a summary for a good config; exit 1 and every expected message, one
# per line on stderr, for bad ones.
set -euo pipefail
: "${LUGGER:?path of the lugger binary}" "${LUGGER_SOURCE_DIR:?source dir}"
fx=$LUGGER_SOURCE_DIR/tests/fixtures/config
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# run NAME ARGS...: runs lugger check, keeps stdout/stderr/exit code.
run() {
  local name=$1
  shift
  set +e
  "$LUGGER" check "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
  echo $? >"$tmp/$name.rc"
  set -e
}

expect_rc() {
  local got
  got=$(cat "$tmp/$1.rc")
  [ "$got" = "$2" ] || { fail "$1: exit $got, want $2"; sed 's/^/  stderr: /' "$tmp/$1.err" >&2; }
}

# expect_line NAME STREAM LINE: LINE is one whole line of the stream.
expect_line() {
  grep -qxF -- "$3" "$tmp/$1.$2" || { fail "$1: missing line in $2: $3"; sed 's/^/  got: /' "$tmp/$1.$2" >&2; }
}

# A good config.
run good -c "$fx/good.lua"
expect_rc good 0

# The design contract's example config: accepted; its source no pipeline
# reads is left out, with a warning (not an error).
run design -c "$fx/design/lugger.lua"
expect_rc design 0
expect_line design out "config OK: 1 sources, 1 pipelines, 3 outputs"
expect_line design err "warning: sources.app: not read by any pipeline; it is not started"
expect_line good out "config OK: 2 sources, 2 pipelines, 2 outputs"
[ ! -s "$tmp/good.err" ] || fail "good: stderr not empty: $(cat "$tmp/good.err")"

# Also through --config= and from another directory with a relative path.
(cd "$fx/scripts" && run good2 --config=../good.lua)
expect_rc good2 0

# A config with many problems: every one is reported, with its key path.
run bad -c "$fx/bad.lua"
expect_rc bad 1
want=(
  "settings.colour: unknown key"
  'settings.memory_budget: invalid size "lots" (expected a number of bytes or a string like "64KiB", "1MiB", "2GB")'
  "settings.workers: must be from 1 to 1024, got 0"
  "sources.app.paths: expected a list of strings, got number"
  'sources.app.read_from: expected one of "head", "tail", got "middle"'
  'sources.pods.kube_api: expected "in-cluster", "off" or an http(s) URL, got "sometimes"'
  'outputs.kafka.fsync: expected one of "never", "interval", "always", got "sometimes"'
  "outputs.kafka.topik: unknown key"
  "pipelines.web.sources[2]: unknown source 'nope'"
  "pipelines.web.scripts[1]: no such file: $fx/scripts/missing.lua"
  "pipelines.web.outputs[2]: unknown output 'kafak'"
  "pipelines.web.scripts[2]: $fx/scripts/syntax_error.lua:2: unexpected symbol near '='"
  "warning: sources.lonely: not read by any pipeline; it is not started"
  "warning: sources.pods: not read by any pipeline; it is not started"
  "lugger check: $fx/bad.lua: 12 problems found"
)
for line in "${want[@]}"; do expect_line bad err "$line"; done
n=$(wc -l <"$tmp/bad.err")
[ "$n" -eq ${#want[@]} ] || fail "bad: $n lines on stderr, want ${#want[@]}"
[ ! -s "$tmp/bad.out" ] || fail "bad: stdout not empty"

# A Lua syntax error in the config itself names file and line.
run syntax -c "$fx/syntax.lua"
expect_rc syntax 1
expect_line syntax err "$fx/syntax.lua:3: '}' expected near 'paths'"

# A config that is fine except for a script that does not compile.
mkdir -p "$tmp/conf"
cp "$fx/scripts/syntax_error.lua" "$tmp/conf/broken.lua"
cat >"$tmp/conf/lugger.lua" <<'LUA'
return {
  sources = { app = { type = "file", paths = "/var/log/app.log" } },
  pipelines = { p = { sources = { "app" }, scripts = { "broken.lua" },
                      outputs = { "out" } } },
  outputs = { out = { type = "stdout" } },
}
LUA
run script -c "$tmp/conf/lugger.lua"
expect_rc script 1
expect_line script err "pipelines.p.scripts[1]: $tmp/conf/broken.lua:2: unexpected symbol near '='"

# Fixing the script makes the config pass.
echo 'function process(rec) end' >"$tmp/conf/broken.lua"
run fixed -c "$tmp/conf/lugger.lua"
expect_rc fixed 0
expect_line fixed out "config OK: 1 sources, 1 pipelines, 1 outputs"

# Scripts are loaded into the sandbox and their init(params) runs: errors
# there are found by check, not at the first start.
mkdir -p "$tmp/init"
cat >"$tmp/init/lugger.lua" <<'LUA'
return {
  sources = { a = { type = "file", paths = "/x" },
              b = { type = "file", paths = "/y" },
              c = { type = "file", paths = "/z" } },
  pipelines = {
    p1 = { sources = { "a" }, outputs = { "out" },
           scripts = { { path = "init_err.lua", params = { n = 7 } } } },
    p2 = { sources = { "b" }, outputs = { "out" }, scripts = { "io.lua" } },
    p3 = { sources = { "c" }, outputs = { "out" },
           scripts = { "ok.lua", { path = "params.lua",
                                   params = { level = "warn" } } } },
  },
  outputs = { out = { type = "stdout" } },
}
LUA
printf 'function init(p)\n  error("bad param n=" .. p.n)\nend\nfunction process(r) end\n' >"$tmp/init/init_err.lua"
printf 'local f = io.open("/etc/passwd")\nfunction process(r) end\n' >"$tmp/init/io.lua"
cp "$fx/scripts/ok.lua" "$fx/scripts/params.lua" "$tmp/init/"
run init -c "$tmp/init/lugger.lua"
expect_rc init 1
expect_line init err "pipelines.p1: $tmp/init/init_err.lua:2: bad param n=7"
expect_line init err "pipelines.p2: $tmp/init/io.lua:1: attempt to index global 'io' (a nil value)"
expect_line init err "lugger check: $tmp/init/lugger.lua: 2 problems found"
n=$(wc -l <"$tmp/init.err")
[ "$n" -eq 3 ] || fail "init: $n lines on stderr, want 3"

# stateless = true with a script that keeps state across records: each
# worker has its own copy, so the count would silently be wrong. A warning
# (exit 0) naming the line; the same script on a stateful pipeline, and a
# stateless script, get none.
mkdir -p "$tmp/state"
cat >"$tmp/state/lugger.lua" <<'LUA'
return {
  sources = { a = { type = "file", paths = "/x" }, b = { type = "file", paths = "/y" },
              c = { type = "file", paths = "/z" } },
  pipelines = {
    fast = { sources = { "a" }, outputs = { "out" }, scripts = { "count.lua" },
             stateless = true },
    ordered = { sources = { "b" }, outputs = { "out" }, scripts = { "count.lua" } },
    pure = { sources = { "c" }, outputs = { "out" }, scripts = { "ok.lua" },
             stateless = true },
  },
  outputs = { out = { type = "stdout" } },
}
LUA
printf 'local n = 0\nfunction process(rec)\n  n = n + 1\n  rec.n = n\nend\n' >"$tmp/state/count.lua"
cp "$fx/scripts/ok.lua" "$tmp/state/"
run state -c "$tmp/state/lugger.lua"
expect_rc state 0
expect_line state err "warning: pipelines.fast.stateless: $tmp/state/count.lua:3: assigns the module-level local 'n': kept across records, but each worker has its own copy, so it sees only some of a file's records (keep no state, or remove stateless = true)"
n=$(wc -l <"$tmp/state.err")
[ "$n" -eq 1 ] || fail "state: $n lines on stderr, want 1"

# A route to an output the config does not have would fail every record
# that takes it (and lugger test, with no config, takes any name).
mkdir -p "$tmp/route"
cat >"$tmp/route/lugger.lua" <<'LUA'
return {
  sources = { a = { type = "file", paths = "/x" } },
  pipelines = { p = { sources = { "a" }, outputs = { "out" }, scripts = { "r.lua" } } },
  outputs = { out = { type = "stdout" }, errors = { type = "stdout" } },
}
LUA
printf 'function process(rec)\n  if rec.body:find("ERROR") then return "errros" end\nend\n' >"$tmp/route/r.lua"
run route -c "$tmp/route/lugger.lua"
expect_rc route 1
expect_line route err "pipelines.p: $tmp/route/r.lua:2: routes to 'errros', which is not an output (outputs: errors, out)"

# Typos of keys: the key meant is named.
mkdir -p "$tmp/typo"
cat >"$tmp/typo/lugger.lua" <<'LUA'
return {
  settings = { memory_budjet = "64MiB", script_memory = 100 },
  sources = { a = { type = "file", paths = "/x", read_form = "head" },
              b = { tpye = "file", paths = "/y" } },
  pipelines = { p = { sources = { "a" }, outputs = { "out" }, statless = true,
                      scripts = { { paht = "ok.lua" } } } },
  outputs = { out = { type = "file", pth = "/tmp/x.jsonl" } },
}
LUA
run typo -c "$tmp/typo/lugger.lua"
expect_rc typo 1
expect_line typo err "settings.memory_budjet: unknown key (did you mean memory_budget?)"
# 100 bytes passed check, then lugger run aborted (LuaJIT could not make
# a state at all).
expect_line typo err "settings.script_memory: must be at least 1MiB (the Lua runtime alone takes about 250 KiB), got 100 bytes"
expect_line typo err "sources.a.read_form: unknown key (did you mean read_from?)"
expect_line typo err "sources.b.type: required key missing (is 'tpye' a typo?)"
expect_line typo err "pipelines.p.statless: unknown key (did you mean stateless?)"
expect_line typo err "pipelines.p.scripts[1].paht: unknown key (did you mean path?)"
expect_line typo err "outputs.out.pth: unknown key (did you mean path?)"

# A missing config file, and bad arguments.
run missing -c "$tmp/nope.lua"
expect_rc missing 1
expect_line missing err "$tmp/nope.lua: No such file or directory"
run args --frobnicate
expect_rc args 2

# `lugger run` on the bad config: exit 1, and the same messages as lugger's
# log, one JSON object per line on stderr (DESIGN.md, "Operations").
set +e
"$LUGGER" run -c "$fx/bad.lua" >"$tmp/run.out" 2>"$tmp/run.err"
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "run bad: exit $rc, want 1"
python3 - "$tmp/run.err" "$fx/bad.lua" <<'PY' || fail "run bad: stderr is not JSON log lines"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
recs = [json.loads(l) for l in lines]
assert len(recs) == 11, len(recs)  # the load's 11 (scripts compile later)
assert all(r["level"] == "error" and r["component"] == "config" for r in recs), recs
assert any(r["msg"] == sys.argv[2] + ": outputs.kafka.topik: unknown key" for r in recs), recs
PY

if [ "$fails" -gt 0 ]; then
  echo "test_check: $fails failures" >&2
  exit 1
fi
echo "test_check: ok"
