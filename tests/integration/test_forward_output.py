#!/usr/bin/env python3
"""The `forward` output of the lugger binary: a file source read with
--once (which exits only once every record is acked) sends to

1. lugger's forward server (test_forward_server --serve, acks 50 ms after
   each batch arrives), gzip, tag template: every record there once, with
   its body, time, tag and fields;
2. the same with a dead server first in `servers`: failover, the dead one
   named in the log;
3. a server that is down when lugger starts and comes up 2 s later: the
   records are retried (not dropped) and all arrive;
4. @fluent-org/logger's FluentServer (npm) with the shared key, over TLS
   (certificate made with the openssl CLI and checked by lugger).
"""

import json
import os
import subprocess
import tempfile
import time

import lugger_it as it

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "forward", "fwd_peers.js")
SERVER_BIN = os.path.join(os.path.dirname(it.LUGGER), "test_forward_server")
N = 5000


def read(f):
    f.seek(0)
    return f.read().decode("utf-8", "replace")


def serve(port, delay_ms=50):
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    p = subprocess.Popen([SERVER_BIN, "--serve", str(port), ""], stdout=out,
                         stderr=err, env=dict(os.environ,
                                              ACK_DELAY_MS=str(delay_ms)))
    p.out, p.err = out, err
    it.wait_for(lambda: "listening" in read(err) or p.poll() is not None, 10,
                "the forward server")
    return p


def config(wd, name, log, out):
    return it.write_config(
        wd.p(name + ".lua"),
        {"state_dir": wd.mk("state-" + name), "workers": 2,
         "memory_budget": "16MiB"},
        {"app": {"type": "file", "paths": [log], "read_from": "head",
                 "format": "line"}},
        {"main": {"sources": ["app"], "outputs": ["fwd"]}},
        {"fwd": out})


def check_records(text, what):
    recs = [json.loads(l) for l in text.splitlines() if l.strip()]
    bodies = sorted(r["body"] for r in recs)
    want = sorted(it.make_line(0, i, 60).decode()[:-1] for i in range(N))
    it.check(bodies == want, "%s: %d records, %d expected, first %r" %
             (what, len(bodies), N, recs[:1]))
    r = recs[0]
    it.check(r["fluent.tag"] == "app." + r["log.file.path"], "%s: tag %r" %
             (what, r))
    it.check(r["log.file.path"].endswith("/logs/app.log"), "%s: %r" % (what, r))
    return len(recs)


def test():
    it.require_binary()
    it.check(os.path.isfile(SERVER_BIN), "%s is not built" % SERVER_BIN)
    with it.WorkDir("fwdout") as wd:
        log = os.path.join(wd.logs, "app.log")
        with open(log, "wb") as f:
            for i in range(N):
                f.write(it.make_line(0, i, 60))
        base = {"type": "forward", "tag": "app.${log.file.path}",
                "compress": "gzip",
                "ack_timeout": "5s", "connect_timeout": "1s",
                "max_batch_size": 500}
        # 1. to lugger's server, gzip, acks
        port = it.free_port()
        srv = serve(port)
        try:
            conf = config(wd, "one", log, dict(base, servers=["127.0.0.1:%d" % port]))
            lug = it.Lugger(conf, once=True)
            rc = lug.wait(60)
            it.check(rc == 0, "--once exit %r\n%s" % (rc, lug.stderr_tail()))
            check_records(read(srv.out), "to lugger's server")
            it.log("1: %d records acked, gzip" % N)
            # 2. a dead server first: failover
            dead = it.free_port()
            srv.out.seek(0)
            srv.out.truncate()
            conf = config(wd, "two", log, dict(
                base, servers=["127.0.0.1:%d" % dead, "localhost:%d" % port]))
            lug = it.Lugger(conf, once=True)
            rc = lug.wait(60)
            it.check(rc == 0, "--once exit %r\n%s" % (rc, lug.stderr_tail()))
            check_records(read(srv.out), "failover")
            it.check("forward server 127.0.0.1:%d: connect" % dead
                     in lug.stderr_text(), "the dead server is named:\n" +
                     lug.stderr_tail())
            it.log("2: failover from a dead server")
        finally:
            srv.kill()
            srv.wait()
        # 3. the server comes up late: retried, nothing dropped
        port = it.free_port()
        conf = config(wd, "three", log, dict(base, servers=["127.0.0.1:%d" % port]))
        lug = it.Lugger(conf, once=True)
        time.sleep(2)
        it.check(lug.poll() is None, "lugger gave up while the server was down")
        srv = serve(port)
        try:
            rc = lug.wait(90)
            it.check(rc == 0, "--once exit %r\n%s" % (rc, lug.stderr_tail()))
            n = check_records(read(srv.out), "late server")
            it.check(n == N, "late server: %d records (duplicates?)" % n)
            it.log("3: server down for 2 s, then every record")
        finally:
            srv.kill()
            srv.wait()
        # 4. FluentServer (npm): shared key over TLS
        cert, key = wd.p("cert.pem"), wd.p("key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        port = it.free_port()
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        fs = subprocess.Popen(["node", PEERS, "server", json.dumps(
            {"port": port, "key": "s3cret", "cert": cert, "certKey": key})],
            cwd=HERE, stdout=out, stderr=err)
        try:
            it.wait_for(lambda: "listening" in read(err) or fs.poll() is not None,
                        20, "FluentServer")
            conf = config(wd, "four", log, dict(
                base, servers=["localhost:%d" % port], shared_key="s3cret",
                self_hostname="lugger-sidecar", tls=True, tls_ca=cert,
                compress="none"))
            lug = it.Lugger(conf, once=True)
            rc = lug.wait(60)
            it.check(rc == 0, "--once exit %r\n%s" % (rc, lug.stderr_tail()))
            ents = [json.loads(l) for l in read(out).splitlines()]
            it.check(len(ents) == N, "FluentServer got %d entries" % len(ents))
            e = ents[0]
            it.check(e["tag"] == "app." + log and "log" in e["rec"] and
                     isinstance(e["time"], list),
                     "entry at FluentServer: %r" % e)
            it.log("4: FluentServer, shared key, TLS: %d entries" % N)
        finally:
            fs.kill()
            fs.wait()
    return ("%d records each: to lugger's server (gzip, acks), failover from "
            "a dead server, a server up 2 s late (retried), FluentServer with "
            "shared key over TLS" % N)


if __name__ == "__main__":
    it.main("test_forward_output", test)
