#!/usr/bin/env python3
"""The s3 output against npm s3rver (S3 on 127.0.0.1), every request's
SigV4 signature checked on the way by tests/integration/aws/sigv4_verify.js
(npm aws4, an independent signer; s3rver itself checks none) in front of it.

1. PutObject, gzip: 30,000 lines through `lugger run --once`; while it
   runs, every object that can be listed is complete (it gunzips whole and
   every line is a record); at the end the objects' lines are exactly the
   input lines, each once; keys follow the template (a record field, the
   first record's time, {id}, .json.gz); Content-Type application/gzip;
   the verifier accepted every request and rejected none.
2. Multipart, no compression: objects of ~12 MB (max_bytes 12MiB,
   multipart_threshold and part_size 5MiB) go as 3-part uploads, their
   parts at once (more than one UploadPart in flight); their lines are the
   input's, each once; every upload created is completed. Again with the
   second UploadPart answered 500: that upload is aborted
   (AbortMultipartUpload) and the object sent again whole, every line
   still once.
3. A wrong secret: the verifier answers 403 to every request; nothing is
   acked (the checkpoint stays at 0) and lugger keeps retrying.
5. EKS IRSA: the s3 output of deploy/s3/configmap.yaml (endpoint pointed
   here, no keys in the config) with AWS_ROLE_ARN and
   AWS_WEB_IDENTITY_TOKEN_FILE: lugger gets temporary keys from the STS
   stand-in (aws/sts_server.py) and every request is signed with them and
   their session token (the verifier knows only those).
6. Memory pressure: a backlog 5x the memory budget with
   max_coalescing_delay 10m: objects are closed early at the budget, so
   `--once` ends in seconds with every line once.
4. Lost answers: the first 5 PutObjects reach s3rver but lugger gets a 500
   instead of their 200; each is retried under the same key (overwriting
   the object written), so every line is still in exactly one object and
   the keys of the lost answers are among the final objects.
7. A wrong `region`: s3rver checks no region, so the verifier answers as
   S3 does (written from the S3 API reference's error responses): 301
   PermanentRedirect (PutObject) and 400 AuthorizationHeaderMalformed
   (CreateMultipartUpload). Every record lands once in the dead-letter
   output with S3's answer and the bucket's region, none is retried or
   stored, the checkpoint reaches the end of the file, and lugger keeps
   running (later lines go the same way).
"""

import gzip
import json
import os
import re
import subprocess
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET

import lugger_it as it

HERE = os.path.dirname(os.path.abspath(__file__))
AWS = os.path.join(HERE, "aws")
S3RVER = os.path.join(AWS, "node_modules", ".bin", "s3rver")
NS = "{http://doc.s3.amazonaws.com/2006-03-01/}"


class Peers:
    """s3rver on one port, the verifier forwarding to it on another."""

    def __init__(self, wd, secret="S3RVER", lose_answers=0, key="S3RVER",
                 token=None, fail_part=0, bucket_region=None,
                 wrong_region=301):
        it.check(os.path.exists(S3RVER), "%s missing: run scripts/setup" % S3RVER)
        self.s3port = it.free_port()
        d = wd.mk("s3rver")
        self.s3 = subprocess.Popen(
            [S3RVER, "-d", d, "-a", "127.0.0.1", "-p", str(self.s3port),
             "--configure-bucket", "logs", "--silent"],
            stdout=subprocess.DEVNULL, stderr=open(wd.p("s3rver.err"), "wb"))
        it.wait_for(lambda: self._up(), 20, "s3rver to listen")
        self.verr = wd.p("verify.err")
        self.v = subprocess.Popen(
            ["node", os.path.join(AWS, "sigv4_verify.js"), "--region",
             "us-east-1", "--service", "s3", "--key", key, "--secret",
             secret, "--forward", "http://127.0.0.1:%d" % self.s3port,
             "--lose-answers", str(lose_answers),
             "--fail-part", str(fail_part)] +
            (["--token", token] if token else []) +
            (["--bucket-region", bucket_region, "--wrong-region",
              str(wrong_region)] if bucket_region else []),
            stdout=subprocess.PIPE, stderr=open(self.verr, "wb"))
        line = self.v.stdout.readline().decode()
        m = re.match(r"PORT (\d+)", line)
        it.check(m, "verifier did not start: %r" % line)
        self.vport = int(m.group(1))

    def _up(self):
        try:
            self.list()
            return True
        except OSError:
            return False

    def list(self):
        keys, token = [], None
        while True:
            url = "http://127.0.0.1:%d/logs?list-type=2" % self.s3port
            if token:
                url += "&continuation-token=" + urllib.request.quote(token)
            with urllib.request.urlopen(url, timeout=10) as r:
                root = ET.fromstring(r.read())
            for c in root.findall(NS + "Contents"):
                keys.append((c.find(NS + "Key").text,
                             int(c.find(NS + "Size").text)))
            t = root.find(NS + "NextContinuationToken")
            if t is None or root.find(NS + "IsTruncated").text != "true":
                return keys
            token = t.text

    def get(self, key):
        url = "http://127.0.0.1:%d/logs/%s" % (
            self.s3port, urllib.request.quote(key))
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read(), r.headers.get("Content-Type")

    def hold(self, n):
        """The verifier holds the next `n` PutObjects: neither passed on
        to s3rver nor answered (counts()["held"] counts them)."""
        req = urllib.request.Request(
            "http://127.0.0.1:%d/_fake/faults" % self.vport,
            data=json.dumps({"hold": n}).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def delay(self, n, ms):
        """The verifier passes the next `n` PutObjects on at once and relays
        s3rver's answer `ms` ms after it came: the object is written, the
        client not told yet (counts()["delayed"] counts those written)."""
        req = urllib.request.Request(
            "http://127.0.0.1:%d/_fake/faults" % self.vport,
            data=json.dumps({"delay": {"puts": n, "ms": ms}}).encode(),
            method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def counts(self):
        with urllib.request.urlopen(
                "http://127.0.0.1:%d/__sigv4" % self.vport, timeout=10) as r:
            return json.loads(r.read())

    def close(self):
        for p in (self.v, self.s3):
            p.kill()
            p.wait()


def output(peers, **kw):
    o = {"type": "s3", "bucket": "logs",
         "endpoint": "http://127.0.0.1:%d" % peers.vport,
         "region": "us-east-1", "access_key_id": "S3RVER",
         "secret_access_key": "S3RVER"}
    o.update(kw)
    return o


def write_lines(path, n, pad=60):
    with open(path, "w") as f:
        for i in range(n):
            f.write("line %07d %s\n" % (i, "x" * pad))
    return ["line %07d %s" % (i, "x" * pad) for i in range(n)]


def object_lines(data, gz):
    if gz:
        data = gzip.decompress(data)
    text = data.decode()
    it.check(text.endswith("\n"), "object does not end with a newline")
    return [json.loads(l)["body"] for l in text.split("\n")[:-1]]


def check_exactly_once(peers, want, gz):
    seen = {}
    for key, _ in peers.list():
        data, _ = peers.get(key)
        for b in object_lines(data, gz):
            seen[b] = seen.get(b, 0) + 1
    dup = [b for b, c in seen.items() if c > 1]
    it.check(not dup, "%d lines in more than one object, e.g. %r" % (
        len(dup), dup[:3]))
    missing = set(want) - set(seen)
    it.check(not missing, "%d lines in no object, e.g. %r" % (
        len(missing), sorted(missing)[:3]))
    it.check(len(seen) == len(want), "%d lines but %d records" % (
        len(seen), len(want)))


def part_putobject_gzip():
    with it.WorkDir("s3") as wd:
        peers = Peers(wd)
        try:
            want = write_lines(os.path.join(wd.logs, "a.log"), 30000)
            # A record field in the key: two teams, by line parity, so one
            # request makes an object per team.
            conf = it.simple_config(
                wd, [os.path.join(wd.logs, "a.log")],
                scripts=["team.lua"], script_files={"team.lua": (
                    "function process(rec)\n"
                    "  rec['k8s.namespace.name'] = 'team-' .. "
                    "(tonumber(rec.body:sub(6, 12)) % 2)\n"
                    "end\n")},
                output=output(
                    peers, key="logs/{k8s.namespace.name}/%Y/%m/%d/%H/{id}.json.gz",
                    max_bytes="256KiB", max_coalescing_delay="200ms"))
            stop = threading.Event()
            partial = []

            def watch():  # every listed object is whole
                while not stop.is_set():
                    for key, _ in peers.list():
                        try:
                            object_lines(peers.get(key)[0], True)
                        except Exception as e:  # noqa: BLE001
                            partial.append("%s: %s" % (key, e))
                    time.sleep(0.05)

            w = threading.Thread(target=watch)
            w.start()
            with it.Lugger(conf, once=True) as lg:
                rc = lg.wait(240)
                it.check(rc == 0, "lugger --once exited %r: %s" % (
                    rc, lg.stderr_tail()))
            stop.set()
            w.join()
            it.check(not partial, "incomplete objects seen: %r" % partial[:3])
            keys = peers.list()
            it.check(len(keys) >= 4, "only %d objects" % len(keys))
            year = time.gmtime().tm_year
            for key, size in keys:
                it.check(re.match(r"logs/team-[01]/%d/\d\d/\d\d/\d\d/[0-9a-f]{24}"
                                  r"\.json\.gz$" % year, key),
                         "key %r does not follow the template" % key)
                it.check(size <= 256 * 1024, "object %s of %d bytes" % (key, size))
            _, ctype = peers.get(keys[0][0])
            it.check(ctype == "application/gzip", "Content-Type %r" % ctype)
            check_exactly_once(peers, want, True)
            c = peers.counts()
            it.check(c["bad"] == 0 and c["ok"] >= len(keys),
                     "verifier: %r" % c)
            return len(keys), c["ok"]
        finally:
            peers.close()


def part_multipart(fail_part=0):
    with it.WorkDir("s3mp") as wd:
        peers = Peers(wd, fail_part=fail_part)
        try:
            want = write_lines(os.path.join(wd.logs, "a.log"), 260000)
            # Objects must reach max_bytes: neither the coalescing delay
            # nor the budget may close them first, also on a loaded machine
            # (at 1s and 96MiB they closed at 6-10 MiB under a loaded CI
            # run). --once sends the last one at the end.
            conf = it.simple_config(
                wd, [os.path.join(wd.logs, "a.log")],
                settings={"memory_budget": "192MiB"},
                output=output(peers, key="mp/{id}.json", compression="none",
                              max_bytes="12MiB", max_coalescing_delay="30s",
                              multipart_threshold="5MiB", part_size="5MiB",
                              max_in_flight=1))
            with it.Lugger(conf, once=True) as lg:
                rc = lg.wait(300)
                it.check(rc == 0, "lugger --once exited %r: %s" % (
                    rc, lg.stderr_tail()))
            keys = peers.list()
            big = [k for k, s in keys if s > 10 * 1024 * 1024]
            it.check(big, "no object above 10 MiB: %r" % keys)
            check_exactly_once(peers, want, False)
            c = peers.counts()
            # Each big object: Create + 3 parts + Complete.
            it.check(c["bad"] == 0 and c["ok"] >= 5 * len(big),
                     "verifier: %r for %d big objects" % (c, len(big)))
            # The parts of an object go at once (up to 4), not one by one
            # (one object in flight at a time here).
            it.check(c["maxParts"] >= 2, "parts one at a time: %r" % c)
            # Every upload ends: completed, or aborted after a failed part
            # (then the object is sent again whole).
            it.check(c["created"] == c["completed"] + c["aborted"] and
                     c["aborted"] == (1 if fail_part else 0),
                     "uploads left open or aborts: %r" % c)
            return len(keys), len(big), c["maxParts"]
        finally:
            peers.close()


def part_bad_signature():
    with it.WorkDir("s3bad") as wd:
        peers = Peers(wd, secret="not-the-secret")
        try:
            write_lines(os.path.join(wd.logs, "a.log"), 100)
            conf = it.simple_config(wd, [os.path.join(wd.logs, "a.log")],
                                    output=output(peers, max_coalescing_delay="100ms"))
            with it.Lugger(conf) as lg:
                it.wait_for(lambda: peers.counts()["bad"] >= 2, 30,
                            "two rejected attempts", proc=lg)
                time.sleep(0.5)
                it.check(peers.list() == [], "an object was written")
                offs = it.checkpoint_offsets(wd.state)
                it.check(all(v == 0 for v in offs.values()),
                         "checkpoint moved: %r" % offs)
                lg.stop()
            return peers.counts()["bad"]
        finally:
            peers.close()


def part_lost_answers():
    with it.WorkDir("s3lost") as wd:
        peers = Peers(wd, lose_answers=5)
        try:
            want = write_lines(os.path.join(wd.logs, "a.log"), 20000)
            conf = it.simple_config(wd, [os.path.join(wd.logs, "a.log")],
                                    output=output(peers, max_bytes="128KiB",
                                                  max_coalescing_delay="100ms"))
            with it.Lugger(conf, once=True) as lg:
                rc = lg.wait(240)
                it.check(rc == 0, "lugger --once exited %r: %s" % (
                    rc, lg.stderr_tail()))
            c = peers.counts()
            it.check(len(c["lost"]) == 5, "lost answers: %r" % c["lost"])
            keys = set(k for k, _ in peers.list())
            for url in c["lost"]:
                key = urllib.request.unquote(url.split("/", 2)[2])
                it.check(key in keys, "object of a lost answer %r missing" % key)
            check_exactly_once(peers, want, True)
            it.check(c["bad"] == 0, "verifier: %r" % c)
            return len(keys)
        finally:
            peers.close()


def part_memory_pressure():
    """A backlog larger than the memory budget, objects that would wait 10
    minutes to fill (max_coalescing_delay 10m, max_bytes 64MiB): at the
    budget they are closed early, so `--once` ends in seconds, with every
    line once, in several objects each smaller than the budget."""
    with it.WorkDir("s3mem") as wd:
        peers = Peers(wd)
        try:
            want = write_lines(os.path.join(wd.logs, "a.log"), 150000)
            conf = it.simple_config(
                wd, [os.path.join(wd.logs, "a.log")],
                settings={"memory_budget": "4MiB"},
                output=output(peers, key="mem/{id}.json.gz",
                              max_bytes="64MiB", max_coalescing_delay="10m"))
            t0 = time.monotonic()
            with it.Lugger(conf, once=True) as lg:
                rc = lg.wait(120)
                it.check(rc == 0, "lugger --once exited %r within 120 s "
                         "(objects not closed at the memory budget?): %s" % (
                             rc, lg.stderr_tail()))
            took = time.monotonic() - t0
            keys = peers.list()
            it.check(len(keys) >= 3, "only %d objects for a backlog of 5x "
                     "the budget" % len(keys))
            check_exactly_once(peers, want, True)
            return len(keys), took
        finally:
            peers.close()


def part_wrong_region(status):
    """A `region` other than the bucket's. S3 answers before looking at
    the signature: 301 PermanentRedirect at another region's endpoint
    (lugger's default endpoint for that region), 400
    AuthorizationHeaderMalformed at the bucket's own (an `endpoint` set);
    the verifier answers as S3 does (sigv4_verify.js --bucket-region).
    No retry changes that answer: every record goes to the dead-letter
    output once, with S3's answer and the bucket's region as the reason,
    nothing is retried or written to the bucket, the checkpoint moves to
    the end of the file, and lugger goes on: lines written afterwards go
    the same way. 301 with PutObject, 400 with CreateMultipartUpload
    (objects over multipart_threshold)."""
    with it.WorkDir("s3region%d" % status) as wd:
        peers = Peers(wd, bucket_region="eu-west-1", wrong_region=status)
        try:
            log = os.path.join(wd.logs, "a.log")
            n1 = 60000 if status == 400 else 5000
            want = write_lines(log, n1)
            port = it.free_port()
            kw = {"max_coalescing_delay": "200ms", "region": "us-east-1"}
            settings = {"http": "127.0.0.1:%d" % port}
            if status == 400:
                kw.update(compression="none", max_bytes="6MiB",
                          max_coalescing_delay="2s",
                          multipart_threshold="5MiB", part_size="5MiB")
                settings["memory_budget"] = "96MiB"
            conf = it.simple_config(wd, [log], settings=settings,
                                    output=output(peers, **kw))
            dl = os.path.join(wd.state, "dead-letter.jsonl")

            def dead():
                if not os.path.exists(dl):
                    return []
                return it.read_jsonl(dl, allow_partial_tail=True)

            with it.Lugger(conf) as lg:
                it.wait_for(lambda: len(dead()) >= n1, 60,
                            "%d records in the dead-letter output" % n1,
                            proc=lg, detail=lg.stderr_tail)
                # Running on: more lines, the same way.
                with open(log, "a") as f:
                    for i in range(n1, n1 + 1000):
                        f.write("line %07d %s\n" % (i, "x" * 60))
                want += ["line %07d %s" % (i, "x" * 60)
                         for i in range(n1, n1 + 1000)]
                it.wait_for(lambda: len(dead()) >= len(want), 60,
                            "the later lines in the dead-letter output",
                            proc=lg, detail=lg.stderr_tail)
                lg.check_running()
                st, _ = it.http_get(port, "/readyz")
                it.check(st == 200, "/readyz %d: the output retries?" % st)
                retries = it.metric_sum(port, "lugger_output_retries_total")
                it.check(retries == 0, "%d retries of an answer no retry "
                         "changes" % retries)
                lg.stop()
            recs = dead()
            bodies = [r["body"] for r in recs]
            it.check(sorted(bodies) == sorted(want) and
                     len(set(bodies)) == len(bodies),
                     "dead-letter output: %d records (%d distinct) for %d "
                     "lines" % (len(bodies), len(set(bodies)), len(want)))
            code = {301: "PermanentRedirect",
                    400: "AuthorizationHeaderMalformed"}[status]
            bad = [r.get("lugger.error") for r in recs
                   if not ("HTTP %d" % status in r.get("lugger.error", "") and
                           code in r["lugger.error"] and
                           "eu-west-1" in r["lugger.error"])]
            it.check(not bad, "%d dead letters without S3's answer and the "
                     "bucket's region, e.g. %r" % (len(bad), bad[:1]))
            it.check(peers.list() == [], "objects written: %r" %
                     peers.list()[:3])
            offs = it.checkpoint_offsets(wd.state)
            size = os.path.getsize(log)
            it.check(list(offs.values()) == [size],
                     "checkpoint %r, file size %d" % (offs, size))
            c = peers.counts()
            op = "PutObject" if status == 301 else "CreateMultipartUpload"
            it.check(c["wrongRegion"].get(op, 0) >= 1 and c["ok"] == 0 and
                     c["bad"] == 0, "verifier: %r" % c)
            return len(recs), c["wrongRegion"], recs[0]["lugger.error"]
        finally:
            peers.close()


def part_irsa():
    import yaml
    with it.WorkDir("s3irsa") as wd:
        tok = wd.p("token")
        with open(tok, "w") as f:
            f.write("eyJhbGciOiJSUzI1NiJ9.test.sig\n")
        sts = subprocess.Popen(
            ["python3", os.path.join(AWS, "sts_server.py"), "--accept", tok,
             "--role-arn", "arn:aws:iam::111122223333:role/lugger-s3"],
            stdout=subprocess.PIPE)
        port = int(sts.stdout.readline().decode().split()[1])
        peers = Peers(wd, key="ASIASTAND1", secret="secret1",
                      token="token1+/=&")
        try:
            with open(os.path.join(it.SOURCE_DIR, "deploy", "s3",
                                   "configmap.yaml")) as f:
                cm = yaml.safe_load(f)
            lua = cm["data"]["lugger.lua"]
            m = re.search(r"\n    s3 = \{\n(.*?)\n    \},", lua, re.S)
            it.check(m, "no s3 output in deploy/s3/configmap.yaml")
            out = dict(re.findall(r'^\s*(\w+) = "([^"]*)",', m.group(1), re.M))
            it.check(out["type"] == "s3" and "access_key_id" not in out,
                     "deploy/s3 output: %r" % out)
            # No region in the config: the one EKS's webhook sets
            # (AWS_REGION) signs, as for an output without `region`.
            out.pop("region", None)
            out.update(endpoint="http://127.0.0.1:%d" % peers.vport,
                       bucket="logs", max_coalescing_delay="200ms")
            want = write_lines(os.path.join(wd.logs, "a.log"), 5000)
            conf = it.simple_config(wd, [os.path.join(wd.logs, "a.log")],
                                    output=out)
            # What the EKS pod identity webhook sets in the container.
            env = {"AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/lugger-s3",
                   "AWS_WEB_IDENTITY_TOKEN_FILE": tok,
                   "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_STS_REGIONAL_ENDPOINTS": "regional",
                   "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:%d" % port,
                   "HOME": wd.path}
            with it.Lugger(conf, once=True, env=env) as lg:
                rc = lg.wait(120)
                it.check(rc == 0, "lugger --once exited %r: %s" % (
                    rc, lg.stderr_tail()))
            keys = peers.list()
            it.check(all(k.startswith("logs/_/") for k, _ in keys),
                     "keys (no namespace on file records): %r" % keys[:3])
            check_exactly_once(peers, want, True)
            c = peers.counts()
            it.check(c["bad"] == 0 and c["ok"] >= 1, "verifier: %r" % c)
            return c["ok"]
        finally:
            peers.close()
            sts.kill()
            sts.wait()


def run():
    it.require_binary()
    t = time.monotonic()
    n1, reqs = part_putobject_gzip()
    t1 = time.monotonic() - t
    n2, big, par = part_multipart()
    part_multipart(fail_part=2)
    bad = part_bad_signature()
    n4 = part_lost_answers()
    n5 = part_irsa()
    n6, took6 = part_memory_pressure()
    n7, ops7, why7 = part_wrong_region(301)
    n8, ops8, _ = part_wrong_region(400)
    return ("%d gzip objects (%d verified requests, %.1f s); %d objects, %d "
            "multipart (up to %d parts at once; a failed part aborted the "
            "upload and the object went again whole); %d attempts with a bad signature not acked; 5 lost "
            "answers retried into the same keys (%d objects, every line once); "
            "IRSA: %d requests signed with STS keys; memory budget 4 MiB, delay 10m: "
            "%d objects closed early, --once done in %.1f s; wrong region: "
            "%d records dead-lettered on 301 (%r), %d on 400 (%r), none "
            "retried, lugger running on (%s)"
            % (n1, reqs, t1, n2, big, par, bad, n4, n5, n6, took6, n7, ops7,
               n8, ops8, why7))


if __name__ == "__main__":
    it.main("test_s3", run)
