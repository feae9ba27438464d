#!/usr/bin/env python3
"""Checks the examples in examples/: the loghub parsers against every line
of their ground-truth CSV (fields, and the record's time from the line),
every parser against its golden file, the nginx parser's parameters,
that every example config passes `lugger check`, and that the
quick-start job runs.

Environment: LUGGER = the lugger binary; LUGGER_SOURCE_DIR = the source
tree (default: two levels above this file). The Lua harnesses in
tests/examples/ run both inside the host (`lugger lua`) and in the plain
`luajit` that scripts/setup installs.

Prints one "ok"/"FAIL" line per check; exits 0 when every check passed,
1 otherwise.
"""
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

SRC = os.path.abspath(os.environ.get("LUGGER_SOURCE_DIR")
                      or os.path.join(os.path.dirname(__file__), "..", ".."))
LUGGER = os.environ.get("LUGGER") or os.path.join(SRC, "build", "lugger")
LUAJIT = shutil.which("luajit")
FIX = os.path.join(SRC, "tests", "fixtures")
HARNESS = os.path.join(SRC, "tests", "examples")

# Each loghub parser, its sample, and the mapping from every CSV column
# (other than LineId, EventId, EventTemplate) to the field that holds it.
# ":int" = an integer field whose decimal text equals the cell;
# "?" = an empty cell means the field is absent.
LOGHUB = [
    ("hdfs", "HDFS",
     "Date=date,Time=log_time,Pid=pid:int,Level=level,Component=component,Content=content"),
    ("apache", "Apache",
     "Time=log_time,Level=level,Content=content"),
    ("openssh", "OpenSSH",
     "Date=month,Day=day:int,Time=log_time,Component=host,Pid=pid:int,Content=content"),
    ("linux", "Linux",
     "Month=month,Date=day:int,Time=log_time,Level=host,Component=component,"
     "PID=pid:int?,Content=content"),
    ("spark", "Spark",
     "Date=date,Time=log_time,Level=level,Component=component,Content=content"),
    ("hadoop", "Hadoop",
     "Date=date,Time=log_time,Level=level,Process=thread,Component=component,Content=content"),
]

# Golden tests: (script, sample, expected JSON lines, lugger test options).
GOLDEN = [(os.path.join("examples", "loghub", name + ".lua"),
           os.path.join("tests", "fixtures", "loghub", system + "_head50.log"),
           os.path.join("tests", "fixtures", "loghub", system + ".expected.jsonl"), [])
          for name, system, _ in LOGHUB] + [
    (os.path.join("examples", "nginx", "nginx.lua"),
     os.path.join("tests", "fixtures", "nginx", "access.log"),
     os.path.join("tests", "fixtures", "nginx", "access.expected.jsonl"), []),
    (os.path.join("examples", "nginx", "nginx.lua"),
     os.path.join("tests", "fixtures", "nginx", "access.log"),
     os.path.join("tests", "fixtures", "nginx", "access.routed.expected.jsonl"),
     ["--routes", "--params", '{"drop_health":true,"errors_output":"errors"}']),
]

failures = []


def run(cmd, **kw):
    kw.setdefault("cwd", SRC)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=120, **kw)


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name)
    if not ok:
        failures.append(name)
        if detail:
            print("     " + detail.rstrip().replace("\n", "\n     "))


def lua_runners():
    """The ways to run a harness: inside lugger (`lugger lua`). The
    examples use lugger's C parsing helpers (lugger.regex), so a plain
    LuaJIT can no longer run them; csv_check's self-test still runs there."""
    return [("lugger lua", [LUGGER, "lua"])]


def test_harnesses(runners, tmp):
    csv_check = os.path.join(HARNESS, "csv_check.lua")
    for rname, prefix in runners:
        res = run(prefix + [csv_check, "--self-test"])
        check("%s: csv_check self-test" % rname,
              res.returncode == 0 and "0 failures" in res.stdout, res.stdout + res.stderr)

        for name, system, mapping in LOGHUB:
            parser = os.path.join("examples", "loghub", name + ".lua")
            log = os.path.join(FIX, "loghub", system + "_2k.log")
            csv = os.path.join(FIX, "loghub", system + "_2k.log_structured.csv")
            res = run(prefix + [csv_check, parser, log, csv, mapping])
            m = re.search(r"(\d+) lines, (\d+) CSV rows, (\d+) fields compared, (\d+) mismatches",
                          res.stdout)
            ok = (res.returncode == 0 and m is not None and m.group(1) == "2000"
                  and m.group(2) == "2000" and m.group(4) == "0")
            check("%s: %s fields equal %s CSV on all lines%s"
                  % (rname, parser, system, " (%s fields)" % m.group(3) if m else ""),
                  ok, res.stdout + res.stderr)

        # The check must be able to fail: a Hadoop parser that keeps the
        # trailing blanks of 147 messages, and a mapping that calls the
        # Linux pid mandatory (151 lines have none).
        bad = os.path.join(tmp, "hadoop_untrimmed.lua")
        with open(os.path.join(SRC, "examples", "loghub", "hadoop.lua")) as f:
            src = f.read()
        mutated = src.replace(r'(?<content>.*?)\s*$', r'(?<content>.*)$')
        assert mutated != src, "hadoop.lua no longer has the pattern the mutation needs"
        with open(bad, "w") as f:
            f.write(mutated)
        res = run(prefix + [csv_check, bad, os.path.join(FIX, "loghub", "Hadoop_2k.log"),
                            os.path.join(FIX, "loghub", "Hadoop_2k.log_structured.csv"),
                            LOGHUB[5][2]])
        check("%s: csv_check catches untrimmed Hadoop content (147 mismatches)" % rname,
              res.returncode == 1 and "147 mismatches" in res.stdout, res.stdout + res.stderr)
        res = run(prefix + [csv_check, "examples/loghub/linux.lua",
                            os.path.join(FIX, "loghub", "Linux_2k.log"),
                            os.path.join(FIX, "loghub", "Linux_2k.log_structured.csv"),
                            LOGHUB[3][2].replace("pid:int?", "pid:int")])
        check("%s: csv_check catches an absent Linux pid (151 mismatches)" % rname,
              res.returncode == 1 and "151 mismatches" in res.stdout, res.stdout + res.stderr)

        res = run(prefix + [os.path.join(HARNESS, "nginx_check.lua"), "examples/nginx/nginx.lua"])
        check("%s: nginx parser cases and parameters" % rname,
              res.returncode == 0 and " 0 failures" in res.stdout, res.stdout + res.stderr)

        # The golden files (from the CSV ground truth and from an
        # independent Python parser, tests/fixtures/*/make_golden.py) are
        # checked by test_golden through `lugger test --expect`.

    if LUAJIT:
        res = run([LUAJIT, os.path.join(HARNESS, "csv_check.lua"), "--self-test"])
        check("luajit: csv_check self-test",
              res.returncode == 0 and "0 failures" in res.stdout, res.stdout + res.stderr)


def mapped_fields(mapping, row):
    """The record fields that a CSV row says a parser must set."""
    want = {}
    for item in mapping.split(","):
        column, field = item.split("=")
        optional = field.endswith("?")
        field = field.rstrip("?")
        integer = field.endswith(":int")
        field = field[:-4] if integer else field
        cell = row[column]
        if optional and cell == "":
            continue
        want[field] = int(cell) if integer else cell
    return want


def syslog_time(month, day, hms, now):
    """A syslog (RFC 3164) time without a year as lugger reads it: this
    year, or the last one when that would be more than a day ahead; UTC."""
    t = datetime.datetime.strptime("%d %s %s %s" % (now.year, month, day, hms),
                                   "%Y %b %d %H:%M:%S")
    if t > now + datetime.timedelta(days=1):
        t = t.replace(year=now.year - 1)
    return t


# The time each loghub line carries, from its CSV row: what the parser
# must make the record's time (UTC; these logs name no zone).
LINE_TIME = {
    "HDFS": lambda r, now: datetime.datetime.strptime(r["Date"] + r["Time"], "%y%m%d%H%M%S"),
    "Apache": lambda r, now: datetime.datetime.strptime(r["Time"], "%a %b %d %H:%M:%S %Y"),
    "OpenSSH": lambda r, now: syslog_time(r["Date"], r["Day"], r["Time"], now),
    "Linux": lambda r, now: syslog_time(r["Month"], r["Date"], r["Time"], now),
    "Spark": lambda r, now: datetime.datetime.strptime(r["Date"] + " " + r["Time"],
                                                       "%y/%m/%d %H:%M:%S"),
    "Hadoop": lambda r, now: datetime.datetime.strptime(r["Date"] + " " + r["Time"],
                                                        "%Y-%m-%d %H:%M:%S,%f"),
}


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%06d000Z" % t.microsecond


def test_lugger_test_csv():
    """The CSV equality again, through the real collector path: lugger
    test frames the 2,000-line file (CRLF, no final LF), runs the parser
    in the sandbox on real record proxies and encodes JSON."""
    import csv
    for name, system, mapping in LOGHUB:
        script = os.path.join("examples", "loghub", name + ".lua")
        log = os.path.join(FIX, "loghub", system + "_2k.log")
        res = run([LUGGER, "test", script, log, "--format", "line"])
        with open(os.path.join(FIX, "loghub", system + "_2k.log_structured.csv"),
                  newline="") as f:
            rows = list(csv.DictReader(f))
        with open(log, "rb") as f:
            lines = [l[:-1] if l.endswith("\r") else l
                     for l in f.read().decode().split("\n")]
        if lines[-1] == "":
            lines.pop()
        try:
            recs = json_lines(res.stdout)
        except ValueError as e:
            check("lugger test %s prints JSON lines" % script, False, str(e))
            continue
        bad, bad_time = [], []
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        for i, (rec, row, line) in enumerate(zip(recs, rows, lines)):
            got = {k: v for k, v in rec.items()
                   if k not in ("time", "log.file.path", "body")}
            if got != mapped_fields(mapping, row) or rec.get("body") != line:
                bad.append(i + 1)
            want = rfc3339(LINE_TIME[system](row, now))
            if rec.get("time") != want:
                bad_time.append((i + 1, rec.get("time"), want))
        check("lugger test %s: fields equal %s CSV on all %d lines"
              % (script, system, len(rows)),
              res.returncode == 0 and len(recs) == len(rows) == 2000 and not bad,
              "rc %d, %d records, mismatching lines %s %s"
              % (res.returncode, len(recs), bad[:10], res.stderr[-1000:]))
        check("lugger test %s: every record's time is its line's (%s CSV)" % (script, system),
              len(recs) == 2000 and not bad_time,
              "%d records, %d wrong times, first %r" % (len(recs), len(bad_time), bad_time[:3]))


def test_golden():
    # --expect must be able to fail: one pid changed in a golden record.
    with open(os.path.join(SRC, GOLDEN[0][2])) as f:
        text = f.read()
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as bad:
        bad.write(text.replace('"pid":148,', '"pid":149,', 1))
        bad.flush()
        res = run([LUGGER, "test", GOLDEN[0][0], GOLDEN[0][1], "--format", "line",
                   "--expect", bad.name])
        check("lugger test --expect fails on a changed golden record",
              res.returncode == 1 and "149" in res.stdout + res.stderr,
              res.stdout[-2000:] + res.stderr[-2000:])
    for script, sample, golden, opts in GOLDEN:
        if not os.path.exists(os.path.join(SRC, golden)):
            check("golden %s exists" % golden, False)
            continue
        res = run([LUGGER, "test", script, sample, "--format", "line", "--expect", golden] + opts)
        check("lugger test %s %s %s--expect %s" % (script, sample, " ".join(opts + [""]), golden),
              res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:])


def example_configs():
    out = []
    for root, _, files in os.walk(os.path.join(SRC, "examples")):
        for f in files:
            if f == "lugger.lua":
                out.append(os.path.relpath(os.path.join(root, f), SRC))
    return sorted(out)


def test_check():
    configs = example_configs()
    check("example configs found", len(configs) >= 2, repr(configs))
    for c in configs:
        res = run([LUGGER, "check", "-c", c])
        check("lugger check -c %s" % c, res.returncode == 0, res.stdout + res.stderr)
    # And check must be able to fail on an example: the nginx config with
    # a copy of nginx.lua that does not compile.
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(os.path.join(SRC, "examples", "nginx", "lugger.lua"), d)
        with open(os.path.join(SRC, "examples", "nginx", "nginx.lua")) as f:
            src = f.read()
        broken = src.replace("function process(rec)\n", "function process(rec\n")
        assert broken != src
        with open(os.path.join(d, "nginx.lua"), "w") as f:
            f.write(broken)
        res = run([LUGGER, "check", "-c", os.path.join(d, "lugger.lua")])
        check("lugger check rejects an example whose script does not compile",
              res.returncode == 1 and "nginx.lua" in res.stdout + res.stderr,
              res.stdout + res.stderr)
        # A parameter of the wrong type: nginx.lua's init() rejects it, and
        # check runs init(params).
        with open(os.path.join(d, "nginx.lua"), "w") as f:
            f.write(src)
        with open(os.path.join(d, "lugger.lua")) as f:
            conf = f.read()
        bad = conf.replace("drop_health = true", 'drop_health = "yes"')
        assert bad != conf
        with open(os.path.join(d, "lugger.lua"), "w") as f:
            f.write(bad)
        res = run([LUGGER, "check", "-c", os.path.join(d, "lugger.lua")])
        check("lugger check rejects params.drop_health = \"yes\"",
              res.returncode == 1 and "params.drop_health" in res.stdout + res.stderr,
              res.stdout + res.stderr)


def json_lines(text):
    recs = []
    for line in text.splitlines():
        if line.strip():
            recs.append(json.loads(line))
    return recs


def test_quickstart(tmp):
    state = os.path.join(tmp, "state")
    os.mkdir(state)
    env = dict(os.environ, LUGGER_STATE_DIR=state)
    # Run from another directory: paths in the config are relative to it.
    res = run([LUGGER, "run", "-c", os.path.join(SRC, "examples", "quickstart", "lugger.lua"),
               "--once"], env=env, cwd=tmp)
    check("quick-start run exits 0", res.returncode == 0, res.stderr[-3000:])
    try:
        recs = json_lines(res.stdout)
    except ValueError as e:
        check("quick-start output is JSON lines", False, str(e))
        return
    nginx = [r for r in recs if r.get("log.file.path", "").endswith("nginx-access.log")]
    hdfs = [r for r in recs if r.get("log.file.path", "").endswith("hdfs.log")]
    check("quick-start prints 300 nginx and 100 HDFS records",
          len(nginx) == 300 and len(hdfs) == 100 and len(recs) == 400,
          "nginx %d, hdfs %d, total %d" % (len(nginx), len(hdfs), len(recs)))
    # One nginx line is cut short and stays unparsed; HDFS lines all parse.
    check("quick-start nginx records have integer status (all but the cut line)",
          sum(1 for r in nginx if isinstance(r.get("status"), int)) == 299)
    check("quick-start HDFS records have integer pid and no CR in body",
          all(isinstance(r.get("pid"), int) and "\r" not in r["body"] for r in hdfs))
    # The record's time is the line's: $time_local for nginx, date and
    # time (UTC) for HDFS.
    nginx_t = [r for r in nginx if "time_local" in r]
    want = [datetime.datetime.strptime(r["time_local"], "%d/%b/%Y:%H:%M:%S %z")
            .astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000000Z") for r in nginx_t]
    check("quick-start nginx records carry $time_local as their time",
          len(nginx_t) == 299 and [r["time"] for r in nginx_t] == want,
          "%d parsed; first %s vs %s" % (len(nginx_t), nginx_t[0]["time"] if nginx_t else None,
                                         want[0] if want else None))
    hdfs_want = [datetime.datetime.strptime(r["date"] + r["log_time"], "%y%m%d%H%M%S")
                 .strftime("%Y-%m-%dT%H:%M:%S.000000000Z") for r in hdfs]
    check("quick-start HDFS records carry their line's time",
          [r["time"] for r in hdfs] == hdfs_want)
    check("quick-start state dir holds checkpoints", len(os.listdir(state)) > 0)


def test_nginx_run(tmp):
    """The drop-and-route example end to end: health probes dropped, 5xx
    routed to the errors output, the rest to the main one."""
    d = os.path.join(tmp, "nginx")
    os.mkdir(d)
    shutil.copy(os.path.join(FIX, "nginx", "access.log"), os.path.join(d, "access.log"))
    script = os.path.join(SRC, "examples", "nginx", "nginx.lua")
    conf = os.path.join(d, "lugger.lua")
    with open(conf, "w") as f:
        f.write("""return {
  settings = { state_dir = %(state)s },
  sources = { web = { type = "file", paths = { %(log)s }, read_from = "head", format = "line" } },
  pipelines = { web = { sources = { "web" },
                        scripts = { { path = %(script)s,
                                      params = { drop_health = true, errors_output = "errors" } } },
                        outputs = { "main" } } },
  outputs = { main = { type = "file", path = %(main)s },
              errors = { type = "file", path = %(errors)s } },
}
""" % {k: json.dumps(v) for k, v in dict(state=os.path.join(d, "state"),
                                          log=os.path.join(d, "access.log"), script=script,
                                          main=os.path.join(d, "main.jsonl"),
                                          errors=os.path.join(d, "errors.jsonl")).items()})
    res = run([LUGGER, "run", "-c", conf, "--once"])
    check("nginx run exits 0", res.returncode == 0, res.stderr[-3000:])
    with open(os.path.join(FIX, "nginx", "access.log")) as f:
        lines = f.read().splitlines()
    probes = sum(1 for l in lines if '"GET /healthz HTTP/1.1" 200 ' in l)
    errors = sum(1 for l in lines if re.search(r'" 5\d\d \d+ "', l))
    try:
        with open(os.path.join(d, "main.jsonl")) as f:
            main = json_lines(f.read())
        with open(os.path.join(d, "errors.jsonl")) as f:
            errs = json_lines(f.read())
    except (OSError, ValueError) as e:
        check("nginx run outputs are JSON lines", False, str(e))
        return
    check("nginx run: %d 5xx records in errors.jsonl" % errors,
          len(errs) == errors and all(r["status"] >= 500 for r in errs),
          "got %d" % len(errs))
    check("nginx run: probes dropped, the rest in main.jsonl",
          len(main) == len(lines) - probes - errors
          and not any(r.get("path") == "/healthz" and r.get("status") == 200 for r in main),
          "got %d, want %d" % (len(main), len(lines) - probes - errors))


def main():
    if not os.access(LUGGER, os.X_OK):
        print("FAIL: LUGGER=%s is not an executable" % LUGGER)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        test_harnesses(lua_runners(), tmp)
        test_lugger_test_csv()
        test_golden()
        test_check()
        test_quickstart(tmp)
        test_nginx_run(tmp)
    print("test_examples: %d failed" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
