"""Forward interop: third-party Fluent clients from npm send to lugger's
forward server, and lugger's forward client sends to a third-party server,
with acks.

The receiver is lugger's forward server (src/sources/forward/) run by the
unit test binary in `--serve` mode (test_forward_server --serve PORT KEY
[CERT KEY]): it prints each record as lugger's JSON line and releases each
batch's ack ACK_DELAY_MS after receiving it, as the source does once the
records are delivered. The senders are @fluent-org/logger 1.0.10's
FluentClient in all four event modes (Message, Forward, PackedForward,
CompressedPackedForward) with acks, and fluent-logger 3.4.1 with
requireAckResponse (Message, PackedForward, CompressedPackedForward), with
the shared-key handshake, a wrong key, and TLS (certificate made with the
openssl CLI, verified by the client). The other way, lugger's forward
client (test_forward_client --send) sends PackedForward (half of it gzip)
with chunk ids to @fluent-org/logger's FluentServer, plain, with the shared
key and over TLS. Each client waits for every ack:
exit 0 means lugger acked every chunk, and the records must all be there
with their bodies, times and tags.
"""

import calendar
import json
import os
import subprocess
import tempfile
import time

import lugger_it as it

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "forward", "fwd_peers.js")
SERVER_BIN = os.path.join(os.path.dirname(it.LUGGER), "test_forward_server")
CLIENT_BIN = os.path.join(os.path.dirname(it.LUGGER), "test_forward_client")


def to_fluent_server(key="", tls=None):
    """lugger's forward client (test_forward_client --send) -> FluentServer:
    PackedForward, every other message gzip, chunk ids, acks."""
    port = it.free_port()
    opts = {"port": port}
    if key:
        opts["key"] = key
    if tls:
        opts["cert"], opts["certKey"] = tls
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    p = subprocess.Popen(["node", PEERS, "server", json.dumps(opts)], cwd=HERE,
                         stdout=out, stderr=err)
    try:
        it.wait_for(lambda: "listening" in read(err) or p.poll() is not None,
                    20, "FluentServer to listen")
        args = [CLIENT_BIN, "--send", str(port), "95", key]
        if tls:
            args.append(tls[0])
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        it.check(r.returncode == 0, "lugger -> FluentServer: %s %s" %
                 (r.stdout, r.stderr))
        it.check(json.loads(r.stdout)["acked"] == 10, r.stdout)
        it.wait_for(lambda: len(read(out).splitlines()) >= 95, 10,
                    "95 entries at FluentServer")
        ents = [json.loads(l) for l in read(out).splitlines()]
        it.check(sorted(e["rec"]["seq"] for e in ents) == list(range(95)),
                 "seqs at FluentServer")
        e = ents[0]
        it.check(e["tag"] == "lugger.test" and e["time"] == [1700000000, 123456789]
                 and e["rec"]["log"].startswith("lugger "),
                 "entry as FluentServer sees it: %r" % e)
    finally:
        p.kill()
        p.wait()
    return 95


def start_server(port, key="", tls=None, ack_delay_ms=200):
    args = [SERVER_BIN, "--serve", str(port), key]
    if tls:
        args += list(tls)
    env = dict(os.environ, ACK_DELAY_MS=str(ack_delay_ms))
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    p = subprocess.Popen(args, stdout=out, stderr=err, env=env)
    p.out, p.err = out, err
    it.wait_for(lambda: read(err).find("listening") >= 0 or p.poll() is not None,
                10, "the forward server to listen")
    it.check(p.poll() is None, "server exited: " + read(err))
    return p


def read(f):
    f.seek(0)
    return f.read().decode("utf-8", "replace")


def records(p):
    return [json.loads(l) for l in read(p.out).splitlines() if l.strip()]


def peer(cmd, **opts):
    r = subprocess.run(["node", PEERS, cmd, json.dumps(opts)], cwd=HERE,
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr


def run_clients(p, port, key, tls_ca=None):
    expected = 0
    for mode in ("Message", "Forward", "PackedForward",
                 "CompressedPackedForward"):
        n = 40
        rc, out, err = peer("client", port=port, mode=mode, n=n, key=key,
                            tls=tls_ca, tag="npm", label=mode.lower())
        it.check(rc == 0, "FluentClient %s: exit %d: %s %s" % (mode, rc, out, err))
        it.check(json.loads(out.strip().splitlines()[-1])["acked"] == n,
                 "FluentClient %s: %s" % (mode, out))
        expected += n
        it.wait_for(lambda: len(records(p)) >= expected, 10,
                    "%d records" % expected)
        recs = [r for r in records(p) if r.get("fluent.tag") == "npm." + mode.lower()]
        bodies = sorted(r["body"] for r in recs)
        it.check(bodies == sorted("%s %d" % (mode, i) for i in range(n)),
                 "%s: bodies %r" % (mode, bodies[:5]))
        it.check(all(isinstance(r["i"], int) for r in recs), "i is an integer")
        # EventTime keeps sub-second precision; times are recent.
        for r in recs:
            sec = calendar.timegm(time.strptime(r["time"][:19], "%Y-%m-%dT%H:%M:%S"))
            it.check(abs(sec - time.time()) < 300, "time %s" % r["time"])
        it.check(any(r["time"][20:29] != "000000000" for r in recs),
                 "%s: no sub-second times (EventTime lost?)" % mode)
        it.log("FluentClient %s: %d records acked" % (mode, n))
    if tls_ca:
        return expected
    for mode in ("Message", "PackedForward", "CompressedPackedForward"):
        n = 20
        rc, out, err = peer("fluent-logger", port=port, mode=mode, n=n, key=key,
                            tag="fl", label=mode.lower())
        it.check(rc == 0, "fluent-logger %s: exit %d: %s %s" % (mode, rc, out, err))
        expected += n
        it.wait_for(lambda: len(records(p)) >= expected, 10,
                    "%d records" % expected)
        recs = [r for r in records(p) if r.get("fluent.tag") == "fl." + mode.lower()]
        it.check(sorted(r["body"] for r in recs) ==
                 sorted("fluent-logger %s %d" % (mode, i) for i in range(n)),
                 "fluent-logger %s records" % mode)
        it.log("fluent-logger %s: %d records acked" % (mode, n))
    return expected


def lugger_binary_both_ways(total):
    """The real binary: FluentClient (PackedForward, acks) -> lugger's
    forward source -> lugger's forward output -> FluentServer."""
    with it.WorkDir("fwdinterop") as wd:
        lport, fport = it.free_port(), it.free_port()
        out = tempfile.TemporaryFile()
        err = tempfile.TemporaryFile()
        fs = subprocess.Popen(["node", PEERS, "server",
                               json.dumps({"port": fport, "key": "k2"})],
                              cwd=HERE, stdout=out, stderr=err)
        conf = it.write_config(
            wd.p("lugger.lua"),
            {"state_dir": wd.state, "workers": 2, "memory_budget": "16MiB"},
            {"fwd": {"type": "forward", "host": "127.0.0.1", "port": lport,
                     "shared_key": "k1", "self_hostname": "relay"}},
            {"main": {"sources": ["fwd"], "outputs": ["up"]}},
            {"up": {"type": "forward",
                    "servers": ["127.0.0.1:%d" % fport],
                    "tag": "relay.${fluent.tag}", "shared_key": "k2",
                    "self_hostname": "relay-out", "compress": "gzip"}})
        lug = it.Lugger(conf)
        try:
            it.wait_for(lambda: "listening" in read(err), 20, "FluentServer")
            lug.wait_started()
            n = 60
            rc, o, e = peer("client", port=lport, mode="PackedForward", n=n,
                            key="k1", tag="app", label="x")
            it.check(rc == 0, "FluentClient -> lugger: %s %s\n%s" %
                     (o, e, lug.stderr_tail()))
            it.wait_for(lambda: len(read(out).splitlines()) >= n, 20,
                        "%d entries at FluentServer" % n, proc=lug)
            ents = [json.loads(l) for l in read(out).splitlines()]
            it.check(all(x["tag"] == "relay.app.x" for x in ents),
                     "tags: %r" % ents[0])
            it.check(sorted(x["rec"]["log"] for x in ents) ==
                     sorted("PackedForward %d" % i for i in range(n)),
                     "bodies at FluentServer: %r" % ents[:2])
            it.check(all(isinstance(x["time"], list) and x["time"][1] != 0
                         for x in ents[:5]), "EventTime kept: %r" % ents[0])
            lug.stop()
        finally:
            lug.kill9()
            fs.kill()
            fs.wait()
        return total + n


def test():
    it.check(os.path.isfile(SERVER_BIN), "%s is not built" % SERVER_BIN)
    it.check(os.path.isdir(os.path.join(HERE, "forward", "node_modules")),
             "run scripts/setup (npm packages of tests/integration/forward)")
    total = 0
    # No handshake, then the shared key.
    for key in ("", "s3cret"):
        port = it.free_port()
        p = start_server(port, key)
        try:
            total += run_clients(p, port, key)
            if key:
                rc, out, err = peer("client", port=port, mode="PackedForward",
                                    n=1, key="wrong", ackTimeout=3000)
                it.check(rc != 0, "a wrong shared key was accepted")
                it.wait_for(lambda: "authentication failed: shared_key mismatch"
                            in read(p.err), 5, "the server's log line")
                it.check("tcp 127.0.0.1:" in read(p.err), "peer named")
            # No duplicates: every chunk was acked once, so nothing resent.
            bodies = [r["body"] for r in records(p)]
            dups = sorted(set(b for b in bodies if bodies.count(b) > 1))
            it.check(not dups, "duplicates: %d of %d, e.g. %r" %
                     (len(bodies) - len(set(bodies)), len(bodies), dups[:5]))
        finally:
            p.kill()
            p.wait()
    # The lugger binary in the middle: FluentClient -> forward source ->
    # forward output -> FluentServer.
    total = lugger_binary_both_ways(total)
    it.log("FluentClient -> lugger -> FluentServer")
    # lugger's client as the sender, FluentServer as the receiver.
    total += to_fluent_server()
    total += to_fluent_server("s3cret")
    it.log("lugger -> FluentServer: plain and shared key")
    # TLS with the handshake inside it.
    d = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    port = it.free_port()
    p = start_server(port, "k", (cert, key))
    try:
        total += run_clients(p, port, "k", tls_ca=cert)
        total += to_fluent_server("k", (cert, key))
        it.log("lugger -> FluentServer: TLS")
    finally:
        p.kill()
        p.wait()
        for f in (cert, key):
            os.unlink(f)
        os.rmdir(d)
    return "%d records: FluentClient (4 modes) and fluent-logger (3 modes) -> " \
           "lugger, lugger -> FluentServer; plain, shared key and TLS; every " \
           "chunk acked" % total


if __name__ == "__main__":
    it.main("test_forward_interop", test)
