#!/usr/bin/env python3
"""The cloudwatch_logs output against tests/integration/aws/
cloudwatch_logs_server.js, a CloudWatch Logs stand-in written from the API
reference (no CloudWatch emulator can be installed here) that checks every
request's SigV4 signature with npm aws4 and enforces PutLogEvents' limits.

0. The official AWS SDK for JavaScript (npm @aws-sdk/client-cloudwatch-logs)
   against the stand-in: create group/stream, retention, events stored and
   read back (GetLogEvents), rejectedLogEventsInfo parsed, and the errors
   parsed by the SDK as the right exceptions (ResourceNotFoundException,
   ResourceAlreadyExistsException, InvalidParameterException for order,
   24 h span and size, ThrottlingException, InvalidSignatureException).
1. Limits: 86,500 lines into four streams, one request of the delivery
   layer holding up to 30,000 records, timestamps out of order (and equal
   ones) over 7 days in two of them (cut by the 24 h span), 25,000 lines
   1 ms apart in one (cut by count), 1,500 lines of 1.5 KB in one (cut by
   bytes): every PutLogEvents lugger sends is within 10,000 events,
   1,048,576 bytes (26 per event) and 24 h (each reached), in
   chronological order (the stand-in refuses anything else with
   InvalidParameterException, which would dead-letter records); 3
   ThrottlingExceptions retried; every line stored once, each stream in
   (time, line) order; lines 20 days old and 3 hours ahead are in the
   dead-letter file with CloudWatch's reason (tooOldLogEventEndIndex,
   tooNewLogEventStartIndex), and nothing else is.
2. Templates and creation: records of 2 namespaces x 3 pods go to log
   groups /k8s/<namespace> and streams <pod>/<container>, each line once in
   its own stream; groups lugger created have retention_days, a group that
   existed already keeps its own (none); a 300 KB record is in the
   dead-letter file (larger than max_event_size). A role without
   logs:CreateLogGroup (the stand-in answers AccessDeniedException) and a
   group made beforehand: lugger creates only the streams.
3. Restart: the stand-in is killed (kill -9) twice while 40,000 lines flow
   and started again on its port with its state file: no line lost;
   duplicates only from calls whose answer was lost in a kill (at most the
   requests in flight then).
4. A wrong secret: every call answered 403, nothing acked (the checkpoint
   stays at 0), lugger keeps retrying.
5. EKS IRSA: the output of deploy/cloudwatch/configmap.yaml (endpoint
   pointed here, no keys in the config) with AWS_ROLE_ARN and
   AWS_WEB_IDENTITY_TOKEN_FILE: temporary keys from the STS stand-in
   (aws/sts_server.py) sign every call, with their session token; the
   group is created with the ConfigMap's retention.
6. The whole deploy/cloudwatch ConfigMap on a test node (kubernetes
   source over a pods tree, API server stand-in; keys from the
   environment): log groups and streams from the pods' metadata, lines as
   written, in order.
"""

import json
import os
import re
import subprocess
import threading
import time
import urllib.request

import lugger_it as it

HERE = os.path.dirname(os.path.abspath(__file__))
AWS = os.path.join(HERE, "aws")
SERVER = os.path.join(AWS, "cloudwatch_logs_server.js")
SDK = os.path.join(AWS, "node_modules", "@aws-sdk", "client-cloudwatch-logs")
KEY, SECRET = "AKIDCWSTANDIN", "cw/secret+key="
DAY_MS = 86400000


class Server:
    """cloudwatch_logs_server.js on a port that stays the same across
    restarts, its state in a file."""

    def __init__(self, wd, port=None, key=KEY, secret=SECRET, token=None,
                 region="us-east-1"):
        self.creds = ["--key", key, "--secret", secret, "--region", region] + (
            ["--token", token] if token else [])
        it.check(os.path.isdir(os.path.join(AWS, "node_modules", "aws4")),
                 "tests/integration/aws/node_modules missing: run scripts/setup")
        self.port = port or it.free_port()
        self.state = wd.p("cw-state.jsonl")
        self.err = wd.p("cw.err")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["node", SERVER, "--port", str(self.port), "--state",
             self.state] + self.creds,
            stdout=subprocess.PIPE, stderr=open(self.err, "ab"))
        line = self.proc.stdout.readline().decode()
        it.check(line.startswith("PORT "), "stand-in did not start: %r" % line)

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def close(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def set(self, **kw):
        req = urllib.request.Request(self.url + "/_fake/set",
                                     data=json.dumps(kw).encode(), method="POST")
        urllib.request.urlopen(req, timeout=10).read()


def output(srv, **kw):
    o = {"type": "cloudwatch_logs", "endpoint": srv.url, "region": "us-east-1",
         "access_key_id": KEY, "secret_access_key": SECRET,
         "log_group_name": "/k8s/{k8s.namespace.name}",
         "log_stream_name": "{k8s.pod.name}/{k8s.container.name}",
         "max_coalescing_delay": "200ms"}
    o.update(kw)
    return o


# Lines "<epoch ms> <namespace> <pod> <seq> <padding>": the script makes
# the first three the record's time and Kubernetes fields.
SCRIPT = """
function process(rec)
  local ts, ns, pod = rec.body:match("^(%d+) (%S+) (%S+)")
  if not ts then return end
  rec:set_time(ts, "epoch_ms")
  rec["k8s.namespace.name"] = ns
  rec["k8s.pod.name"] = pod
  rec["k8s.container.name"] = "app"
end
"""


def config(wd, out, settings=None):
    s = {"state_dir": wd.state, "memory_budget": "64MiB", "workers": 2,
         "checkpoint_interval": "200ms", "rescan_interval": "1s",
         "dead_letter": "dl"}
    s.update(settings or {})
    return it.write_config(
        wd.p("lugger.lua"), s,
        {"app": {"type": "file", "paths": [os.path.join(wd.logs, "*.log")],
                 "read_from": "head", "format": "line"}},
        {"main": {"sources": ["app"], "outputs": ["cw"], "scripts": ["s.lua"]}},
        {"cw": out, "dl": {"type": "file", "path": wd.p("dl.jsonl"),
                           "fsync": "never"}},
        scripts={"s.lua": SCRIPT})


def write(path, lines):
    with open(path, "w") as f:
        f.write("".join(l + "\n" for l in lines))


def run_once(conf, timeout=300, env=None):
    with it.Lugger(conf, once=True, env=env) as lg:
        rc = lg.wait(timeout)
        it.check(rc == 0, "lugger --once exited %r: %s" % (rc, lg.stderr_tail()))


def stored(srv):
    """{(group, stream): [message, ...]} in the stand-in's read order."""
    out = {}
    for g, v in srv.get("/_fake/dump").items():
        for s, evs in v["streams"].items():
            out[(g, s)] = [e["message"] for e in evs]
    return out


def dead_letters(wd):
    p = wd.p("dl.jsonl")
    return it.read_jsonl(p) if os.path.exists(p) else []


def check_signatures(srv):
    c = srv.get("/__sigv4")
    it.check(c["bad"] == 0, "requests with a bad signature: %r" % c["failures"][:3])
    return c["ok"]


# ---- 0. the AWS SDK against the stand-in ---------------------------------

def part_sdk():
    it.check(os.path.isdir(SDK), "%s missing: run scripts/setup" % SDK)
    with it.WorkDir("cw-sdk") as wd:
        srv = Server(wd)
        try:
            r = subprocess.run(["node", os.path.join(AWS, "cloudwatch_sdk_check.js"),
                                srv.url, KEY, SECRET], capture_output=True,
                               timeout=120)
            it.check(r.returncode == 0, "SDK check failed: %s" % r.stderr.decode()[-2000:])
            out = json.loads(r.stdout.decode().strip().splitlines()[-1])
            want = {
                "putMissingGroup": "ResourceNotFoundException",
                "createGroupAgain": "ResourceAlreadyExistsException",
                "badRetention": "InvalidParameterException",
                "putMissingStream": "ResourceNotFoundException",
                "unordered": "InvalidParameterException",
                "span": "InvalidParameterException",
                "tooLarge": "InvalidParameterException",
                "throttled": "ThrottlingException",
                "badSignature": "InvalidSignatureException",
            }
            for k, name in want.items():
                it.check(out[k] and out[k]["name"] == name,
                         "SDK step %s: %r, wanted %s" % (k, out[k], name))
            it.check("does not exist" in out["putMissingStream"]["message"],
                     "message not parsed: %r" % out["putMissingStream"])
            it.check(out["rejectedLogEventsInfo"] == {
                "tooOldLogEventEndIndex": 1, "tooNewLogEventStartIndex": 3},
                "rejectedLogEventsInfo: %r" % out["rejectedLogEventsInfo"])
            it.check(out["events"] == ["first", "second"], "events: %r" % out["events"])
            return len(want)
        finally:
            srv.close()


# ---- 1. limits, order, throttling, rejected events -----------------------

def part_limits():
    with it.WorkDir("cw-limits") as wd:
        srv = Server(wd)
        try:
            now = int(time.time() * 1000)
            lines, want = [], {}
            n = 60000
            for i in range(n):
                pod = "pod-%d" % (i % 2)
                # From 8 days back, 20 s apart (10,000 events span 55 h);
                # every 7th line 3 ms earlier than the one before it;
                # pairs of equal times.
                ts = now - 8 * DAY_MS + (i // 2) * 20000
                if i % 7 == 3:
                    ts -= 3
                body = "%d ns %s %06d %s" % (ts, pod, i, "y" * 40)
                lines.append(body)
                want.setdefault(pod, []).append((ts, i, body))
            # pod-2: 1,500 lines of 1.5 KB, cut by bytes, not by count.
            for k in range(1500):
                ts = now - 3600 * 1000 + k
                body = "%d ns pod-2 %06d %s" % (ts, n + k, "w" * 1500)
                lines.insert(k * 40, body)
                want.setdefault("pod-2", []).append((ts, n + k, body))
            # pod-3: 25,000 short lines 1 ms apart, cut by count.
            for k in range(25000):
                ts = now - 2 * 3600 * 1000 + k
                body = "%d ns pod-3 %06d" % (ts, n + 1500 + k)
                lines.append(body)
                want.setdefault("pod-3", []).append((ts, n + 1500 + k, body))
            old = ["%d ns pod-0 old-%d z" % (now - 20 * DAY_MS + k, k) for k in range(5)]
            new = ["%d ns pod-1 new-%d z" % (now + 3 * 3600 * 1000 + k, k) for k in range(4)]
            write(os.path.join(wd.logs, "a.log"), old + lines + new)
            srv.set(throttle=3)
            # Requests of up to 30,000 records: a 5 s delay lets them fill
            # on a loaded machine (the limits are reached only in large ones).
            conf = config(wd, output(srv, message="body", max_batch_size=30000,
                                     max_bytes="16MiB", max_in_flight=1,
                                     max_coalescing_delay="5s"))
            t0 = time.monotonic()
            run_once(conf)
            dt = time.monotonic() - t0
            got = stored(srv)
            for pod, evs in want.items():
                exp = [b for _, _, b in sorted(evs)]  # (time, line) order
                have = got.get(("/k8s/ns", pod + "/app"), [])
                it.check(len(have) == len(exp), "%s: %d events, want %d" % (
                    pod, len(have), len(exp)))
                if have != exp:
                    k = next(k for k in range(len(exp)) if have[k] != exp[k])
                    it.fail("%s: events not in (time, line) order or not each "
                            "once; first difference at %d: %r, want %r"
                            % (pod, k, have[k], exp[k]))
            calls = srv.get("/_fake/calls")
            it.check(calls["maxEvents"] == 10000,
                     "largest PutLogEvents %d events: the 10,000 limit was not "
                     "reached or passed" % calls["maxEvents"])
            it.check(1048576 - 1600 < calls["maxBytes"] <= 1048576,
                     "largest PutLogEvents %d bytes: the 1 MiB limit was not "
                     "reached or passed" % calls["maxBytes"])
            it.check(23 * 3600 * 1000 < calls["maxSpan"] <= DAY_MS,
                     "largest span of a PutLogEvents %d ms: the 24 h limit was "
                     "not reached or passed" % calls["maxSpan"])
            it.check(calls["throttled"] == 3, "calls: %r" % calls)
            it.check(calls["PutLogEvents"] >= 3 + n // 10000, "calls: %r" % calls)
            dl = dead_letters(wd)
            reasons = {r["body"].split()[3]: r["lugger.error"] for r in dl}
            it.check(len(dl) == 9 and all(("old-%d" % k) in reasons for k in range(5))
                     and all(("new-%d" % k) in reasons for k in range(4)),
                     "dead letters: %r" % sorted(reasons)[:12])
            it.check(all("tooOldLogEventEndIndex" in reasons["old-%d" % k]
                         for k in range(5)), "reason: %r" % reasons["old-0"])
            it.check(all("tooNewLogEventStartIndex" in reasons["new-%d" % k]
                         for k in range(4)), "reason: %r" % reasons["new-0"])
            ok = check_signatures(srv)
            n += 1500 + 25000
            return ("%d lines in %.1f s, %d PutLogEvents (largest %d events, %d B), "
                    "3 throttles retried, 9 dead letters, %d signed calls"
                    % (n, dt, calls["PutLogEvents"], calls["maxEvents"],
                       calls["maxBytes"], ok))
        finally:
            srv.close()


# ---- 2. templates, create with retention, a too large record ---------------

def part_templates():
    with it.WorkDir("cw-tpl") as wd:
        # /k8s/ns-1 exists already, without retention.
        with open(wd.p("cw-state.jsonl"), "w") as f:
            f.write(json.dumps({"op": "group", "name": "/k8s/ns-1", "at": 0}) + "\n")
        srv = Server(wd)
        try:
            now = int(time.time() * 1000)
            want = {}
            lines = []
            for i in range(6000):
                ns, pod = "ns-%d" % (i % 2), "pod-%d" % (i % 3)
                body = "%d %s %s %05d" % (now + i, ns, pod, i)
                lines.append(body)
                want.setdefault(("/k8s/" + ns, pod + "/app"), []).append(body)
            big = "%d ns-0 pod-0 big %s" % (now, "b" * 300000)
            write(os.path.join(wd.logs, "a.log"), lines[:3000] + [big] + lines[3000:])
            run_once(config(wd, output(srv, retention_days=7)))
            got = stored(srv)
            it.check(sorted(got) == sorted(want), "streams: %r" % sorted(got))
            for k, bodies in want.items():
                have = [json.loads(m)["body"] for m in got[k]]
                it.check(have == bodies, "%s/%s: %d events, want %d in order" % (
                    k[0], k[1], len(have), len(bodies)))
                rec = json.loads(got[k][0])
                it.check(rec["k8s.namespace.name"] == k[0][5:], "record %r" % rec)
            dump = srv.get("/_fake/dump")
            it.check(dump["/k8s/ns-0"]["retentionInDays"] == 7, "ns-0: %r" % (
                dump["/k8s/ns-0"]["retentionInDays"]))
            it.check(dump["/k8s/ns-1"]["retentionInDays"] is None,
                     "the existing group's retention changed")
            dl = dead_letters(wd)
            # With the script's fields (the batch kept them for this).
            it.check(len(dl) == 1 and dl[0]["body"] == big and
                     "larger than max_event_size" in dl[0]["lugger.error"] and
                     dl[0].get("k8s.namespace.name") == "ns-0",
                     "dead letters: %r" % [(d["body"][:40], d.get("lugger.error"))
                                           for d in dl])
            calls = srv.get("/_fake/calls")
            check_signatures(srv)
            return ("6 streams in 2 groups (CreateLogGroup %d, CreateLogStream %d, "
                    "PutRetentionPolicy %d)" % (calls.get("CreateLogGroup", 0),
                                               calls.get("CreateLogStream", 0),
                                               calls.get("PutRetentionPolicy", 0)))
        finally:
            srv.close()


def part_no_create_group():
    """A role without logs:CreateLogGroup, its group made beforehand: the
    streams are created and every line delivered."""
    with it.WorkDir("cw-nogroup") as wd:
        with open(wd.p("cw-state.jsonl"), "w") as f:
            f.write(json.dumps({"op": "group", "name": "/k8s/ns", "at": 0}) + "\n")
        srv = Server(wd)
        try:
            srv.set(deny=["CreateLogGroup", "PutRetentionPolicy"])
            now = int(time.time() * 1000)
            lines = ["%d ns pod-%d %05d" % (now + i, i % 2, i) for i in range(1000)]
            write(os.path.join(wd.logs, "a.log"), lines)
            run_once(config(wd, output(srv, message="body")))
            got = stored(srv)
            it.check(sorted(got) == [("/k8s/ns", "pod-0/app"), ("/k8s/ns", "pod-1/app")],
                     "streams: %r" % sorted(got))
            it.check(sorted(m for v in got.values() for m in v) == sorted(lines),
                     "events are not the lines, each once")
            calls = srv.get("/_fake/calls")
            it.check("CreateLogGroup" not in calls, "calls: %r" % calls)
            return calls.get("CreateLogStream", 0)
        finally:
            srv.close()


# ---- 3. the stand-in killed and restarted mid-run -------------------------

def part_restart():
    with it.WorkDir("cw-restart") as wd:
        srv = Server(wd)
        try:
            now = int(time.time() * 1000)
            n = 40000
            lines = ["%d ns pod-%d %06d %s" % (now + i, i % 4, i, "r" * 60)
                     for i in range(n)]
            conf = config(wd, output(srv, message="body", max_batch_size=500,
                                     max_coalescing_delay="20ms"))
            path = os.path.join(wd.logs, "a.log")
            open(path, "w").close()

            def writer():  # 10,000 lines a second
                with open(path, "a") as f:
                    for k in range(0, n, 500):
                        f.write("".join(l + "\n" for l in lines[k:k + 500]))
                        f.flush()
                        time.sleep(0.05)

            w = threading.Thread(target=writer)
            with it.Lugger(conf) as lg:
                w.start()
                for _ in range(2):
                    time.sleep(1.0)
                    srv.kill9()
                    time.sleep(1.0)
                    srv.start()
                w.join()
                it.check("retrying" in lg.stderr_text(),
                         "no failed call while the stand-in was down")
                it.wait_for(lambda: sum(len(v) for v in stored(srv).values()) >= n,
                            120, "every line stored", proc=lg,
                            detail=lambda: str(sum(len(v) for v in stored(srv).values())))
                time.sleep(1.0)
                lg.stop()
            seen = {}
            for msgs in stored(srv).values():
                for m in msgs:
                    seen[m] = seen.get(m, 0) + 1
            missing = [l for l in lines if l not in seen]
            it.check(not missing, "%d lines lost, e.g. %r" % (len(missing), missing[:2]))
            dups = sum(c - 1 for c in seen.values())
            it.check(dups <= 2 * 2 * 500, "%d duplicates: more than the requests in "
                     "flight at the two kills" % dups)
            it.check(dead_letters(wd) == [], "dead letters: %r" % dead_letters(wd)[:2])
            return "%d lines, stand-in killed twice: none lost, %d duplicates" % (n, dups)
        finally:
            srv.close()


# ---- 4. a wrong secret ---------------------------------------------------

def part_bad_signature():
    with it.WorkDir("cw-bad") as wd:
        srv = Server(wd)
        try:
            write(os.path.join(wd.logs, "a.log"),
                  ["%d ns pod %d" % (int(time.time() * 1000), i) for i in range(100)])
            conf = config(wd, output(srv, secret_access_key="not-the-secret",
                                     max_coalescing_delay="100ms"))
            with it.Lugger(conf) as lg:
                it.wait_for(lambda: srv.get("/__sigv4")["bad"] >= 2, 30,
                            "two rejected attempts", proc=lg)
                time.sleep(0.5)
                it.check(stored(srv) == {}, "events stored")
                offs = it.checkpoint_offsets(wd.state)
                it.check(all(v == 0 for v in offs.values()), "checkpoint moved: %r" % offs)
                lg.stop()
            it.check(dead_letters(wd) == [], "dead-lettered on a bad signature")
            return srv.get("/__sigv4")["bad"]
        finally:
            srv.close()


# ---- 5. the deploy/cloudwatch output with EKS IRSA credentials -----------

def part_irsa():
    import yaml
    with it.WorkDir("cw-irsa") as wd:
        tok = wd.p("token")
        with open(tok, "w") as f:
            f.write("eyJhbGciOiJSUzI1NiJ9.test.sig\n")
        sts = subprocess.Popen(
            ["python3", os.path.join(AWS, "sts_server.py"), "--accept", tok,
             "--role-arn", "arn:aws:iam::111122223333:role/lugger-cloudwatch"],
            stdout=subprocess.PIPE)
        port = int(sts.stdout.readline().decode().split()[1])
        srv = Server(wd, key="ASIASTAND1", secret="secret1", token="token1+/=&")
        try:
            with open(os.path.join(it.SOURCE_DIR, "deploy", "cloudwatch",
                                   "configmap.yaml")) as f:
                lua = yaml.safe_load(f)["data"]["lugger.lua"]
            m = re.search(r"\n    cloudwatch = \{\n(.*?)\n    \},", lua, re.S)
            it.check(m, "no cloudwatch output in deploy/cloudwatch/configmap.yaml")
            out = dict(re.findall(r'^\s*(\w+) = "([^"]*)",', m.group(1), re.M))
            out.update((k, int(v)) for k, v in
                       re.findall(r'^\s*(\w+) = (\d+),', m.group(1), re.M))
            it.check(out["type"] == "cloudwatch_logs" and "access_key_id" not in out,
                     "deploy/cloudwatch output: %r" % out)
            out.update(endpoint=srv.url, region="us-east-1",
                       max_coalescing_delay="200ms")
            now = int(time.time() * 1000)
            lines = ["%d web pod-%d %05d" % (now + i, i % 2, i) for i in range(3000)]
            write(os.path.join(wd.logs, "a.log"), lines)
            # What the EKS pod identity webhook sets in the container.
            env = {"AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/lugger-cloudwatch",
                   "AWS_WEB_IDENTITY_TOKEN_FILE": tok,
                   "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1",
                   "AWS_STS_REGIONAL_ENDPOINTS": "regional",
                   "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:%d" % port,
                   "HOME": wd.path}
            run_once(config(wd, out), env=env)
            dump = srv.get("/_fake/dump")
            it.check(sorted(dump) == ["/k8s/web"], "groups: %r" % sorted(dump))
            it.check(dump["/k8s/web"]["retentionInDays"] == out["retention_days"],
                     "retention: %r" % dump["/k8s/web"]["retentionInDays"])
            got = stored(srv)
            it.check(sorted(got) == [("/k8s/web", "pod-0/app"), ("/k8s/web", "pod-1/app")],
                     "streams: %r" % sorted(got))
            bodies = sorted(json.loads(m)["body"] for v in got.values() for m in v)
            it.check(bodies == sorted(lines), "events are not the lines, each once")
            return check_signatures(srv)
        finally:
            srv.close()
            sts.kill()
            sts.wait()


# ---- 6. deploy/cloudwatch/configmap.yaml on a test node -------------------

def part_deploy():
    """The whole deploy/cloudwatch ConfigMap on a test node (the kubernetes
    source over a pods tree, the API server stand-in), keys from the
    environment as a pod would have them: groups and streams from the
    pods' real metadata, lines as written, in order."""
    import deploy_config
    from k8s_api_server import FakeApiServer, make_pod
    from k8s_node import Node
    with it.WorkDir("cw-deploy") as wd:
        srv = Server(wd, region="eu-west-1")
        api = FakeApiServer()
        node = Node(wd.path)
        try:
            a = node.pod("shop", "web-1")
            b = node.pod("billing", "api-0")
            for pod in (a, b):
                api.add_pod(make_pod(pod.ns, pod.name, pod.uid, "node-a"))
            api.start()
            a.write("app", ["GET /a %d" % i for i in range(300)])
            b.write("app", ["api err %d" % i for i in range(200)], stream="stderr")
            conf = deploy_config.materialise(wd, "cloudwatch", None, api.url,
                                             node.pods, "node-a", it.free_port())
            with open(conf) as f:
                text = f.read()
            text = text.replace('type = "cloudwatch_logs",',
                                'type = "cloudwatch_logs", endpoint = "%s",' % srv.url, 1)
            with open(conf, "w") as f:
                f.write(text)
            env = {"NODE_NAME": "node-a", "AWS_ACCESS_KEY_ID": KEY,
                   "AWS_SECRET_ACCESS_KEY": SECRET, "HOME": wd.path}
            with it.Lugger(conf, env=env) as lug:
                it.wait_for(lambda: sum(len(v) for v in stored(srv).values()) >= 500,
                            60, "500 events", proc=lug)
                lug.stop()
            got = stored(srv)
            it.check(sorted(got) == [("/k8s/billing", "api-0/app"), ("/k8s/shop", "web-1/app")],
                     "groups/streams: %r" % sorted(got))
            web = [json.loads(m) for m in got[("/k8s/shop", "web-1/app")]]
            it.check([r["body"] for r in web] == ["GET /a %d" % i for i in range(300)],
                     "lines as written, in order: %r" % [r["body"] for r in web[:2]])
            it.check(web[0].get("k8s.pod.uid") == a.uid, "record: %r" % web[0])
            dump = srv.get("/_fake/dump")
            it.check(dump["/k8s/shop"]["retentionInDays"] == 30, "retention: %r" %
                     dump["/k8s/shop"]["retentionInDays"])
            check_signatures(srv)
            return "deploy/cloudwatch on a test node: 2 pods -> 2 groups"
        finally:
            api.stop()
            srv.close()


def run():
    it.require_binary()
    r0 = part_sdk()
    r1 = part_limits()
    r2 = part_templates()
    r2b = part_no_create_group()
    r3 = part_restart()
    r4 = part_bad_signature()
    r5 = part_irsa()
    r6 = part_deploy()
    return ("SDK: %d error cases parsed as CloudWatch's; %s; %s; %s; "
            "%d attempts with a bad signature not acked; IRSA: %d calls signed "
            "with STS keys; no CreateLogGroup permission: %d streams created in "
            "an existing group; %s" % (r0, r1, r2, r3, r4, r5, r2b, r6))


if __name__ == "__main__":
    it.main("test_cloudwatch_logs", run)
