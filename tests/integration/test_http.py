#!/usr/bin/env python3
"""The operations endpoint (settings.http): /healthz, /readyz, /metrics.

1. With settings.http on a free loopback port: /healthz answers 200 "ok",
   /readyz 200 "ready"; after 3000 lines are delivered, /metrics (Prometheus
   text format: every sample line parses, every family has HELP and TYPE)
   shows lugger_records_read_total{source="app"} 3000,
   lugger_records_delivered_total{output="out"} 3000 and
   lugger_records_dropped_total{pipeline="main"} equal to the lines the
   script dropped; other paths are 404, POST is 405.
2. A port already in use: lugger exits 1 and the log names settings.http.
3. A script edited into a syntax error: the reload fails, /readyz turns
   503 with a "reload:" line naming the script; fixed again, /readyz is
   200 (the old script ran all along).
"""

import os
import re
import socket
import time
import urllib.error
import urllib.request

import lugger_it as it

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+]+)$')


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(port, path, method="GET"):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers.get("Content-Type")


def parse_metrics(text):
    """{(name, labels text): value}; fails on a malformed line or a family
    without HELP/TYPE."""
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        it.check(m, "malformed metrics line: %r" % line)
        name = m.group(1)
        # A histogram's samples are <family>_bucket, _sum and _count.
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        it.check(name in typed or family in typed,
                 "%s has no # TYPE line before it" % name)
        samples[(name, m.group(2) or "")] = float(m.group(3))
    return samples


def part_endpoints():
    with it.WorkDir("http") as wd:
        log_path = os.path.join(wd.logs, "a.log")
        n = 3000
        with open(log_path, "w") as f:
            for i in range(n):
                f.write("line %d%s\n" % (i, " DEBUG" if i % 10 == 0 else ""))
        port = free_port()
        conf = it.simple_config(
            wd, [log_path], settings={"http": "127.0.0.1:%d" % port},
            scripts=["drop.lua"], script_files={"drop.lua": (
                "function process(rec)\n"
                "  if rec.body:find('DEBUG', 1, true) then return false end\n"
                "end\n")})
        with it.Lugger(conf) as lg:
            it.wait_for(lambda: get_ok(port), 10, "/healthz to answer",
                        proc=lg)
            st, body, _ = get(port, "/healthz")
            it.check((st, body) == (200, "ok\n"), "/healthz: %r" % ((st, body),))
            it.wait_for(lambda: get(port, "/readyz")[0] == 200, 10,
                        "/readyz 200", proc=lg)
            st, body, _ = get(port, "/readyz")
            it.check(body == "ready\n", "/readyz body %r" % body)

            want = {
                ("lugger_records_read_total", '{source="app"}'): n,
                ("lugger_records_delivered_total", '{output="out"}'): n - n // 10,
                ("lugger_records_dropped_total", '{pipeline="main"}'): n // 10,
                ("lugger_records_failed_total", '{pipeline="main"}'): 0,
            }

            def metrics_match():
                st, text, ctype = get(port, "/metrics")
                it.check(st == 200, "/metrics status %d" % st)
                it.check(ctype.startswith("text/plain; version=0.0.4"),
                         "/metrics Content-Type %r" % ctype)
                got = parse_metrics(text)
                return all(got.get(k) == v for k, v in want.items()), got

            it.wait_for(lambda: metrics_match()[0], 15, "metrics to show "
                        "every record", proc=lg,
                        detail=lambda: repr({k: metrics_match()[1].get(k)
                                             for k in want}))
            got = metrics_match()[1]
            for k in (("lugger_memory_budget_bytes", ""),
                      ("lugger_memory_used_bytes", ""),
                      ("lugger_bytes_read_total", '{source="app"}')):
                it.check(k in got, "metric %s%s missing" % k)
            it.check(got[("lugger_memory_budget_bytes", "")] == 16 * it.MiB,
                     "memory budget gauge %r" % got[("lugger_memory_budget_bytes", "")])
            st, _, _ = get(port, "/nope")
            it.check(st == 404, "/nope: %d" % st)
            st, _, _ = get(port, "/metrics", method="POST")
            it.check(st == 405, "POST /metrics: %d" % st)
            lg.stop()
        return got


def get_ok(port):
    try:
        return get(port, "/healthz")[0] == 200
    except OSError:
        return False


def part_port_in_use():
    with it.WorkDir("http-busy") as wd:
        log_path = os.path.join(wd.logs, "a.log")
        open(log_path, "w").close()
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        try:
            conf = it.simple_config(
                wd, [log_path], settings={"http": "127.0.0.1:%d" % port})
            lg = it.Lugger(conf)
            rc = lg.wait(15)
            it.check(rc == 1, "lugger with a busy port exited %r, expected 1"
                     % rc)
            text = lg.stderr_text()
            it.check("settings.http" in text and str(port) in text,
                     "the log does not name settings.http and the port:\n%s"
                     % lg.stderr_tail())
        finally:
            s.close()


def part_failed_reload():
    with it.WorkDir("http-reload") as wd:
        log_path = os.path.join(wd.logs, "a.log")
        open(log_path, "w").close()
        port = free_port()
        good = "function process(rec) rec.v = 1 end\n"
        conf = it.simple_config(
            wd, [log_path], settings={"http": "127.0.0.1:%d" % port},
            scripts=["f.lua"], script_files={"f.lua": good})
        with it.Lugger(conf) as lg:
            it.wait_for(lambda: get_ok(port) and
                        get(port, "/readyz")[0] == 200, 10, "/readyz 200",
                        proc=lg)
            with open(wd.p("f.lua"), "w") as f:
                f.write("function process(rec) rec.v = = 1 end\n")
            it.wait_for(lambda: get(port, "/readyz")[0] == 503, 15,
                        "/readyz 503 after a failed reload", proc=lg)
            st, body, _ = get(port, "/readyz")
            it.check("reload:" in body and "f.lua:1" in body,
                     "/readyz after a failed reload: %r" % body)
            it.check(get(port, "/healthz")[0] == 200,
                     "/healthz must stay 200 after a failed reload")
            with open(wd.p("f.lua"), "w") as f:
                f.write("function process(rec) rec.v = 2 end\n")
            it.wait_for(lambda: get(port, "/readyz")[0] == 200, 15,
                        "/readyz 200 after a good reload", proc=lg)
            lg.stop()


def main():
    it.require_binary()
    t0 = time.monotonic()
    got = part_endpoints()
    part_port_in_use()
    part_failed_reload()
    return "ok: /healthz, /readyz, /metrics (%d series), 404/405, busy port, "\
        "failed reload on /readyz (%.1f s)" % (len(got), time.monotonic() - t0)


if __name__ == "__main__":
    it.main("test_http", main)
