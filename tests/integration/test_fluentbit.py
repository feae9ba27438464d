#!/usr/bin/env python3
"""Fluent Bit Lua filters run unchanged (`compat = "fluent-bit"`).

Each directory under tests/fixtures/fluent-bit/ holds a Fluent Bit filter
written for these tests in the idioms of published ones (filter.lua, with
any modules it requires next to it), a sample (input.log or input.jsonl),
the `lugger test` arguments (args: --format, --call, options), optionally
environment variables (env: KEY=VALUE lines, for os.getenv and TZ), and
the expected records (expected.jsonl), derived from Fluent Bit's
documented behaviour and its source (plugins/filter_lua, src/flb_lua.c,
the docker and cri multiline parsers, plugins/filter_kubernetes): what the
filter's table holds, how nulls, arrays, maps and timestamps cross. Each
is run with `lugger test --compat fluent-bit ... --expect expected.jsonl`;
a spoiled golden must make it fail with a diff; bad usage, filter errors
and print() are checked too.
"""
import glob
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lugger_it as it  # noqa: E402

FIX = os.path.join(it.SOURCE_DIR, "tests", "fixtures", "fluent-bit")


def run(args, stdin=None, env=None):
    e = it.asan_env()
    e.update(env or {})
    return subprocess.run([it.LUGGER, "test"] + args, input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=60, cwd=FIX, env=e)


def case_env(name):
    """The optional `env` file of a fixture: KEY=VALUE lines for lugger's
    environment (os.getenv, TZ)."""
    path = os.path.join(FIX, name, "env")
    env = {}
    if os.path.exists(path):
        for line in open(path):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                env[k] = v
    return env


def case_args(name, expect=None):
    sample = glob.glob(os.path.join(FIX, name, "input.*"))[0]
    args = [os.path.join(name, "filter.lua"), os.path.relpath(sample, FIX),
            "--compat", "fluent-bit"]
    args += shlex.split(open(os.path.join(FIX, name, "args")).read())
    args += ["--expect", expect or os.path.join(name, "expected.jsonl")]
    return args


def test_fixtures():
    names = sorted(d for d in os.listdir(FIX) if os.path.isdir(os.path.join(FIX, d)))
    it.check(len(names) >= 25, "only %d fixtures" % len(names))
    for name in names:
        res = run(case_args(name), env=case_env(name))
        it.check(res.returncode == 0 and " records match " in res.stdout,
                 "%s: exit %d\nstdout: %s\nstderr: %s"
                 % (name, res.returncode, res.stdout, res.stderr))


def test_mismatch_fails():
    with tempfile.TemporaryDirectory() as td:
        bad = os.path.join(td, "bad.jsonl")
        with open(os.path.join(FIX, "split_record", "expected.jsonl")) as f:
            lines = f.read().splitlines()
        del lines[2]  # one split record missing
        with open(bad, "w") as f:
            f.write("\n".join(lines) + "\n")
        res = run(case_args("split_record", bad))
        it.check(res.returncode == 1, "spoiled golden: exit %d\n%s" % (res.returncode, res.stdout))
        it.check("differ" in res.stdout, res.stdout)


def test_errors_and_usage():
    with tempfile.TemporaryDirectory() as td:
        f = os.path.join(td, "f.lua")
        with open(f, "w") as fh:
            fh.write("function cb(tag, ts, record)\n"
                     "  if record.log == 'boom' then error('bad line') end\n"
                     "  if record.log == 'code' then return 7, ts, record end\n"
                     "  return 0, ts, record\nend\n")
        res = run([f, "--format", "line", "--compat", "fluent-bit", "--call", "cb"],
                  stdin="ok\nboom\ncode\nfine\n")
        it.check(res.returncode == 1, "filter errors: exit %d" % res.returncode)
        # An unknown code keeps the record and logs an error, as Fluent Bit.
        it.check(res.stdout.count("\n") == 3 and '"ok"' in res.stdout and
                 '"code"' in res.stdout and '"fine"' in res.stdout, res.stdout)
        it.check("f.lua:2: bad line" in res.stderr, res.stderr)
        it.check("unexpected Lua script return code 7" in res.stderr, res.stderr)
        res = run([f, "--compat", "fluent-bit", "--call", "nope"], stdin="x\n")
        it.check(res.returncode == 1 and "no such function" in res.stderr, res.stderr)
        res = run([f, "--compat", "fluent-bit"], stdin="x\n")
        it.check(res.returncode == 2, "missing --call: exit %d" % res.returncode)
        res = run([f, "--compat", "fluent-bit", "--call", "cb", "--compat-opt", "bogus=1"],
                  stdin="x\n")
        it.check(res.returncode == 1 and "unknown Fluent Bit option 'bogus'" in res.stderr,
                 res.stderr)


FB_SPLIT = """
function cb(tag, timestamp, record)
  if record["log"] == "debug" then return -1, timestamp, record end
  local out = {}
  for word in string.gmatch(record["log"], "%S+") do
    out[#out + 1] = { log = word, n = #word + 0.5, tag = tag,
                      path = record["log.file.path"], kube = record.kubernetes }
  end
  return 2, timestamp, out
end
"""


def test_pipeline():
    """A config's script entry with compat = "fluent-bit" in `lugger run`."""
    with it.WorkDir("fluentbit") as wd:
        log = wd.p("logs/app.log")
        with open(log, "w") as f:
            f.write("a bb\ndebug\nccc\n")
        out = wd.p("out.jsonl")
        conf = it.simple_config(
            wd, [log], out_path=out, script_files={"fb.lua": FB_SPLIT},
            scripts=[{"path": "fb.lua", "compat": "fluent-bit", "call": "cb",
                      "type_int_key": "n", "tag": "app", "lugger_metadata": True}])
        with it.Lugger(conf, once=True) as lg:
            lg.wait(30)
        recs = it.read_jsonl(out)
        # lugger_metadata shows log.file.path; a file source has no
        # kubernetes map; the metadata stays on every split record.
        got = [(r.get("body"), r.get("n"), r.get("tag"), r.get("path"), r.get("kube"),
                r.get("log.file.path")) for r in recs]
        it.check(got == [("a", 1, "app", log, None, log), ("bb", 2, "app", log, None, log),
                         ("ccc", 3, "app", log, None, log)], "pipeline output: %r" % got)
        # A Fluent Bit option without compat is a config error.
        bad = it.simple_config(wd, [log], out_path=out, name="bad.lua",
                               scripts=[{"path": "fb.lua", "call": "cb",
                                         "time_as_table": True}])
        res = subprocess.run([it.LUGGER, "check", "-c", bad], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=30,
                             env=it.asan_env())
        it.check(res.returncode != 0 and "needs compat" in res.stdout, res.stdout)


# Copies what the filter sees of the record: the kubernetes map and the CRI
# parser's keys, and which keys there are at all.
FB_SEE = """
function see(tag, timestamp, record)
  local keys = {}
  for k in pairs(record) do keys[#keys + 1] = k end
  table.sort(keys)
  record.k8s_seen = record.kubernetes
  record.keys_seen = table.concat(keys, " ")
  record.envelope = { stream = record.stream, p = record._p,
                      time_is_text = type(record.time) == "string" }
  return 2, timestamp, record
end
"""


def test_kubernetes_source():
    """The kubernetes map on a kubernetes source (pod metadata from the
    test API server, k8s_api_server.py, written from the Kubernetes API
    docs): the same label-routing filter as the k8s_label_route fixture,
    whose sample is the record shape Fluent Bit documents."""
    from k8s_api_server import FakeApiServer, make_pod
    from k8s_node import Node
    node_name = "node-a"
    with it.WorkDir("fluentbit-k8s") as wd:
        node = Node(wd.path)
        api = FakeApiServer()
        web = node.pod("shop", "web-7d9f8-x1", containers=("nginx",))
        dns = node.pod("kube-system", "coredns-1")
        job = node.pod("jobs", "batch-9", containers=("run",))
        api.add_pod(make_pod(
            "shop", web.name, web.uid, node_name,
            labels={"app": "web", "team": "payments"},
            annotations={"prometheus.io/scrape": "true", "other": "x"},
            ip="10.1.0.5", containers=[("nginx", "docker.io/library/nginx:1.25")],
            statuses={"nginx": ("containerd://cid-web", 0, None)}))
        api.add_pod(make_pod("kube-system", dns.name, dns.uid, node_name,
                             labels={"k8s-app": "kube-dns"}))
        api.add_pod(make_pod("jobs", job.name, job.uid, node_name, labels={},
                             annotations={}, ip="10.1.0.9",
                             containers=[("run", "registry.local:5000/batch:7")],
                             statuses={"run": ("containerd://cid-job", 0, None)}))
        api.start()
        try:
            web.write("nginx", ["web 1"])
            dns.write("app", ["dns 1"])
            job.write("run", ["job 1"])
            with open(os.path.join(FIX, "k8s_label_route", "filter.lua")) as f:
                route = f.read()
            out = wd.p("out.jsonl")
            cfg = it.write_config(
                wd.p("lugger.lua"),
                {"state_dir": wd.state, "workers": 1, "checkpoint_interval": "200ms",
                 "rescan_interval": "1s"},
                {"pods": {"type": "kubernetes", "pods_dir": node.pods,
                          "docker_dir": "", "kube_api": api.url,
                          "read_from": "head", "api_wait": "30s",
                          "annotations": ["prometheus.io/scrape"]}},
                {"main": {"sources": ["pods"], "outputs": ["out"], "scripts": [
                    {"path": "see.lua", "compat": "fluent-bit", "call": "see"},
                    {"path": "route.lua", "compat": "fluent-bit", "call": "route"}]}},
                {"out": {"type": "file", "path": out, "fsync": "never"}},
                scripts={"see.lua": FB_SEE, "route.lua": route})
            recs = []
            follower = it.JsonlFollower(out, on_record=recs.append)
            with it.Lugger(cfg, env={"NODE_NAME": node_name}) as lg:
                def both():
                    follower.poll()
                    return {"web 1", "job 1"} <= {r.get("body") for r in recs}
                it.wait_for(both, 30, "the web and job records", proc=lg,
                            detail=lambda: repr(recs))
                time.sleep(0.5)
                follower.poll()
        finally:
            api.stop()
        by_body = {r.get("body"): r for r in recs}
        it.check("dns 1" not in by_body, "kube-system record kept: %r" % recs)
        w = by_body["web 1"]
        want = {"pod_name": web.name, "namespace_name": "shop", "pod_id": web.uid,
                "labels": {"app": "web", "team": "payments"},
                "annotations": {"prometheus.io/scrape": "true", "other": "x"},
                "host": node_name, "pod_ip": "10.1.0.5", "container_name": "nginx",
                "docker_id": "cid-web",
                "container_hash": "docker.io/library/nginx:1.25@sha256:00",
                "container_image": "docker.io/library/nginx:1.25"}
        it.check(w.get("k8s_seen") == want, "kubernetes map %r, want %r" % (
            w.get("k8s_seen"), want))
        # Only what Fluent Bit's tail (CRI) + kubernetes filter give: no
        # lugger metadata keys in the table, yet all of it on the output.
        it.check(w.get("keys_seen") == "_p kubernetes log stream time",
                 "keys in the table: %r" % w.get("keys_seen"))
        it.check(w.get("envelope") == {"stream": "stdout", "p": "F", "time_is_text": True},
                 "CRI keys: %r" % w.get("envelope"))
        for k, v in {"app": "web", "team": "payments", "index": "logs-shop-web",
                     "k8s.pod.name": web.name, "k8s.pod.label.app": "web",
                     "container.id": "cid-web", "log.iostream": "stdout"}.items():
            it.check(w.get(k) == v, "web record %s = %r, want %r: %r" % (k, w.get(k), v, w))
        it.check("kubernetes" not in w, "an unchanged kubernetes map was written: %r" % w)
        j = by_body["job 1"]
        it.check(j.get("k8s_seen") == {
            "pod_name": job.name, "namespace_name": "jobs", "pod_id": job.uid,
            "host": node_name, "pod_ip": "10.1.0.9", "container_name": "run",
            "docker_id": "cid-job", "container_image": "registry.local:5000/batch:7",
            "container_hash": "registry.local:5000/batch:7@sha256:00"},
            "job kubernetes map (no labels, no annotations): %r" % j.get("k8s_seen"))
        it.check(j.get("app") == "unlabelled" and j.get("index") == "logs-jobs-unlabelled",
                 "job record: %r" % j)


def test_print():
    """print() goes to standard error in `lugger test`, prefixed with the
    script and line; standard output is the records only."""
    with tempfile.TemporaryDirectory() as td:
        f = os.path.join(td, "p.lua")
        with open(f, "w") as fh:
            fh.write("function cb(tag, ts, record)\n"
                     "  print('seen', tag, record.log)\n"
                     "  return 0, ts, record\nend\n")
        res = run([f, "--format", "line", "--compat", "fluent-bit", "--call", "cb",
                   "--tag", "app.one"], stdin="hello\n")
        it.check(res.returncode == 0, "print: exit %d %s" % (res.returncode, res.stderr))
        it.check(res.stderr.splitlines() == ["[%s:2] seen\tapp.one\thello" % f],
                 "print output: %r" % res.stderr)
        it.check([json.loads(line)["body"] for line in res.stdout.splitlines()] == ["hello"],
                 "stdout holds the record only: %r" % res.stdout)


def test_example():
    """examples/fluent-bit/filters.lua as the README shows it."""
    ex = os.path.join(it.SOURCE_DIR, "examples", "fluent-bit", "filters.lua")
    res = run([ex, "--format", "cri", "--compat", "fluent-bit", "--call", "merge_json"],
              stdin='2024-05-01T12:00:00Z stdout F {"level":"info","msg":"up"}\n'
                    "2024-05-01T12:00:01Z stderr F plain\n")
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    it.check(res.returncode == 0 and recs == [
        {"time": "2024-05-01T12:00:00.000000000Z", "log.iostream": "stdout",
         "level": "info", "msg": "up"},
        {"time": "2024-05-01T12:00:01.000000000Z", "body": "plain",
         "log.iostream": "stderr"}], "example: %r %s" % (recs, res.stderr))


def run_all():
    it.require_binary()
    tests = [test_fixtures, test_mismatch_fails, test_errors_and_usage, test_pipeline,
             test_kubernetes_source, test_print, test_example]
    for t in tests:
        it.log(t.__name__)
        t()
    return "%d check groups passed" % len(tests)


if __name__ == "__main__":
    it.main("test_fluentbit", run_all)
