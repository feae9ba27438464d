"""The DaemonSet-to-Kafka scenario of test_kafka_broker.py (issue 4):
examples/kafka/lugger.lua and nginx_cri.lua, unchanged, read nginx
containers' CRI log files in a kubelet-style pods directory; access lines
(stdout) must reach the topic access-log and error lines (stderr) the topic
error-log, read back with kcat and checked field by field against what
this file parses independently (Python regexes, not the Lua script).
"""

import json
import os
import re
import time

import lugger_it as it

PODS = [("default", "web-1", "0f6a4c1e-1111-4a2b-9c3d-000000000001"),
        ("shop", "web-2", "0f6a4c1e-2222-4a2b-9c3d-000000000002")]
ACCESS_PER_POD = 1500
ERRORS_EVERY = 10  # one stderr line after every 10th access line

ACCESS_RE = re.compile(
    r'^(\S+) - (\S+) \[([^\]]+)\] "(\S+) (\S+) (\S+)" (\d+) (\d+) "([^"]*)" "([^"]*)"$')
ERROR_RE = re.compile(
    r'^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(\w+)\] (\d+)#(\d+): \*(\d+) (.*?), '
    r'client: ([^,]+), server: ([^,]*), request: "([^"]*)", host: "([^"]*)"$')
AGENTS = ["curl/7.88.1", "kube-probe/1.29",
          'Mozilla/5.0 (X11; Linux x86_64) "quoted" \u00e9t\u00e9']


def access_line(pod, i):
    user = "-" if i % 3 else "alice"
    ref = "-" if i % 2 else "https://example.com/from/%d" % i
    # The user agent may hold quotes (nginx escapes them as \x22).
    agent = AGENTS[i % len(AGENTS)].replace('"', "\\x22")
    return ('10.%d.%d.%d - %s [21/Nov/2026:10:%02d:%02d +0000] "GET /p/%s/%d?x=%d HTTP/1.1" '
            '%d %d "%s" "%s"' % (pod, i // 250, i % 250, user, (i // 60) % 60, i % 60,
                                 pod, i, i, [200, 404, 500, 301][i % 4], i * 7, ref, agent))


def error_line(pod, i):
    return ('2026/11/21 10:%02d:%02d [error] 29#%d: *%d open() "/usr/share/nginx/html/p/%d" '
            'failed (2: No such file or directory), client: 10.%d.0.1, server: localhost, '
            'request: "GET /p/%s/%d HTTP/1.1", host: "web-%d:8080"'
            % ((i // 60) % 60, i % 60, pod + 29, i, i, pod, pod, i, pod))


def cri_time(n):
    return "2026-11-21T10:00:%02d.%09dZ" % (n // 1000000 % 60, n % 1000000 * 1000 + 1)


def expected_access(line):
    m = ACCESS_RE.match(line)
    assert m, line
    addr, user, tl, meth, path, proto, st, by, ref, ua = m.groups()
    e = {"remote_addr": addr, "time_local": tl, "method": meth, "path": path,
         "protocol": proto, "status": int(st), "body_bytes_sent": int(by),
         "http_user_agent": ua}
    if user != "-":
        e["remote_user"] = user
    if ref != "-":
        e["http_referer"] = ref
    return e


def expected_error(line):
    m = ERROR_RE.match(line)
    assert m, line
    t, lvl, pid, tid, conn, msg, client, server, req, host = m.groups()
    return {"error_time": t, "level": lvl, "pid": int(pid), "tid": int(tid),
            "connection": int(conn), "message": msg, "client": client,
            "server": server, "request": req, "host": host}


def write_pods(pods_dir):
    """Writes the CRI files; returns {topic: [expected record]} in file
    order per pod."""
    want = {"access-log": [], "error-log": []}
    n = 0
    for pi, (ns, pod, uid) in enumerate(PODS):
        d = os.path.join(pods_dir, "%s_%s_%s" % (ns, pod, uid), "nginx")
        os.makedirs(d)
        meta = {"k8s.namespace.name": ns, "k8s.pod.name": pod,
                "k8s.pod.uid": uid, "k8s.container.name": "nginx"}
        out = []
        for i in range(ACCESS_PER_POD):
            line = access_line(pi, i)
            ts = cri_time(n)
            n += 1
            if i % 100 == 7:  # a long line the runtime split: P then F
                cut = len(line) // 2
                out.append("%s stdout P %s\n" % (ts, line[:cut]))
                out.append("%s stdout F %s\n" % (ts, line[cut:]))
            else:
                out.append("%s stdout F %s\n" % (ts, line))
            e = expected_access(line)
            e.update(meta, body=line, time=ts)
            e["log.iostream"] = "stdout"
            want["access-log"].append(e)
            if i % ERRORS_EVERY == ERRORS_EVERY - 1:
                line = error_line(pi, i)
                ts = cri_time(n)
                n += 1
                out.append("%s stderr F %s\n" % (ts, line))
                e = expected_error(line)
                e.update(meta, body=line, time=ts)
                e["log.iostream"] = "stderr"
                want["error-log"].append(e)
        with open(os.path.join(d, "0.log"), "w", encoding="utf-8") as f:
            f.write("".join(out))
    return want


def run(b):
    src = os.path.join(it.SOURCE_DIR, "examples", "kafka", "lugger.lua")
    from test_kafka_broker import workdir
    with workdir("kafka-ds") as wd:
        pods_dir = wd.mk("pods")
        env = {"KAFKA_BROKERS": b.addr, "KAFKA_BROKER_VERSION": "0.9.0.1",
               "LUGGER_PODS_DIR": pods_dir, "LUGGER_KUBE_API": "off",
               "LUGGER_STATE_DIR": wd.state, "NODE_NAME": "node-a"}
        lg = it.Lugger(src, env=env,
                       stderr_path=wd.p("lugger.stderr"))
        time.sleep(1.0)
        lg.check_running()
        t0 = time.monotonic()
        want = write_pods(pods_dir)  # pods start after lugger, as on a node
        total = sum(len(v) for v in want.values())

        def count():
            return sum(len(b.consume(t, missing_ok=True)) for t in want)
        it.wait_for(lambda: count() >= total, 90, "%d records in Kafka" % total,
                    interval=0.5, proc=lg)
        took = time.monotonic() - t0
        lg.stop()
        checked = 0
        for topic, exp in want.items():
            msgs = b.consume(topic)
            it.check(len(msgs) == len(exp), "%s: %d messages, want %d" % (
                topic, len(msgs), len(exp)))
            # One pod is one key, so one partition, in file order: match
            # each partition's messages with that pod's expected records.
            by_uid = {}
            for p, o, k, v in msgs:
                rec = it.parse_json_line(v.encode(), "%s/%d/%d" % (topic, p, o))
                it.check(k == rec.get("k8s.pod.uid"), "%s: key %r is not the pod uid %r" % (
                    topic, k, rec.get("k8s.pod.uid")))
                by_uid.setdefault(k, []).append((p, rec))
            for uid, recs in by_uid.items():
                it.check(len(set(p for p, _ in recs)) == 1,
                         "%s: pod %s in several partitions" % (topic, uid))
                exp_pod = [e for e in exp if e["k8s.pod.uid"] == uid]
                it.check(len(recs) == len(exp_pod), "%s: pod %s: %d records, want %d" % (
                    topic, uid, len(recs), len(exp_pod)))
                for i, ((_, got), e) in enumerate(zip(recs, exp_pod)):
                    for key, val in e.items():
                        if got.get(key) != val:
                            it.fail("%s: pod %s record %d: %s is %r, want %r\n  got  %s" % (
                                topic, uid, i, key, got.get(key), val,
                                json.dumps(got, ensure_ascii=False)))
                    extra = set(got) - set(e) - {"log.file.path"}
                    extra = [x for x in extra if not x.startswith(("k8s.", "container."))]
                    it.check(not extra, "%s: pod %s record %d has unexpected fields %r" % (
                        topic, uid, i, extra))
                    checked += 1
        return ("daemonset: examples/kafka -> access-log %d, error-log %d records, "
                "%d checked field by field (2 pods, P/F lines joined), all in "
                "Kafka %.1f s after the pods wrote them" % (
                    len(want["access-log"]), len(want["error-log"]), checked, took))
