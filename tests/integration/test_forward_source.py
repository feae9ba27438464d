#!/usr/bin/env python3
"""The `forward` source of the lugger binary:

1. `lugger check` names the key of each bad forward option;
2. user authentication in the handshake: @fluent-org/logger's FluentClient
   with the right password is acked, with a wrong one refused, and the log
   line names the peer and the user;
3. the configs of deploy/forward/ (daemon and sidecar) pass `lugger check`
   with the environment their pods give them;
4. a client that resets its connection with acks owed while lugger has
   stopped reading it: the first ack's write fails (no SIGPIPE), lugger
   closes the connection at once (`lugger_forward_closed_total{reason=
   "write"}`), and when the sender comes back and sends again every chunk
   it had no ack for, every record arrives (at-least-once);
5. backpressure end to end: lugger relays forward -> forward to a server
   that is down, with a 2 MiB memory budget. A raw-socket sender (msgpack
   written by hand here from the spec) pushes PackedForward messages until
   its send() blocks: lugger stopped reading at the budget, its RSS stays
   bounded, and nothing is dropped: once the downstream server is up,
   every record sent arrives.
"""

import fcntl
import json
import os
import socket
import struct
import subprocess
import tempfile
import termios
import time

import lugger_it as it

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "forward", "fwd_peers.js")
SERVER_BIN = os.path.join(os.path.dirname(it.LUGGER), "test_forward_server")


def read(f):
    f.seek(0)
    return f.read().decode("utf-8", "replace")


# -- a few msgpack encoders (MessagePack spec), enough for PackedForward

def mp_str(s):
    b = s.encode()
    if len(b) < 32:
        return bytes([0xa0 | len(b)]) + b
    return b"\xda" + struct.pack(">H", len(b)) + b


def mp_bin(b):
    return b"\xc6" + struct.pack(">I", len(b)) + b


def mp_uint(n):
    return b"\xce" + struct.pack(">I", n)


def packed(tag, seq0, n, pad, chunk=None):
    """A PackedForward message of n records; with `chunk`, an ack request."""
    entries = b"".join(
        b"\x92" + b"\xd7\x00" + struct.pack(">II", int(time.time()), i) +
        b"\x81" + mp_str("log") + mp_str("m %08d %s" % (seq0 + i, pad))
        for i in range(n))
    opts = mp_str("size") + mp_uint(n)
    if chunk is not None:
        opts += mp_str("chunk") + mp_str(chunk)
    return b"\x93" + mp_str(tag) + mp_bin(entries) + \
        bytes([0x80 | (2 if chunk is not None else 1)]) + opts


def check_errors(wd):
    cases = [
        ({"port": 70000}, "sources.fwd.port: expected a port"),
        ({"users": {"u": "p"}}, "sources.fwd.users: needs shared_key"),
        ({"tls_cert": "/x.pem"}, "tls_cert and tls_key go together"),
        ({"prot": 1}, "sources.fwd.prot: unknown key"),
        ({"port": -1}, "port = -1 needs unix_path"),
        ({"max_message_bytes": "0"}, "sources.fwd.max_message_bytes"),
    ]
    for extra, want in cases:
        src = {"type": "forward"}
        src.update(extra)
        conf = it.write_config(wd.p("bad.lua"), {"state_dir": wd.state},
                               {"fwd": src},
                               {"main": {"sources": ["fwd"], "outputs": ["o"]}},
                               {"o": {"type": "stdout"}})
        r = subprocess.run([it.LUGGER, "check", "-c", conf],
                           capture_output=True, text=True)
        it.check(r.returncode == 1 and want in r.stdout + r.stderr,
                 "lugger check %r: rc %d, wanted %r in:\n%s%s" %
                 (extra, r.returncode, want, r.stdout, r.stderr))


def check_deploy(wd):
    import yaml
    env = dict(os.environ, HOST_IP="10.0.0.5", FORWARD_SHARED_KEY="k",
               POD_NAME="web", NODE_NAME="node-a", POD_NAMESPACE="default",
               POD_UID="0f", CONTAINER_NAME="app")
    d = os.path.join(it.SOURCE_DIR, "deploy", "forward")
    kinds = {}
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name)) as f:
            for doc in yaml.safe_load_all(f):
                kinds.setdefault(doc["kind"], []).append(doc)
                if doc["kind"] != "ConfigMap":
                    continue
                conf = wd.p("deploy-" + name + ".lua")
                with open(conf, "w") as c:
                    c.write(doc["data"]["lugger.lua"])
                r = subprocess.run([it.LUGGER, "check", "-c", conf], env=env,
                                   capture_output=True, text=True)
                it.check(r.returncode == 0, "deploy/forward/%s: %s%s" %
                         (name, r.stdout, r.stderr))
    it.check(len(kinds.get("ConfigMap", [])) == 2 and kinds.get("DaemonSet")
             and kinds.get("Pod"), "deploy/forward/: %r" % list(kinds))


def check_users(wd):
    port = it.free_port()
    out = wd.p("users.jsonl")
    conf = it.write_config(
        wd.p("users.lua"), {"state_dir": wd.mk("st-users")},
        {"fwd": {"type": "forward", "host": "127.0.0.1", "port": port,
                 "shared_key": "k", "users": {"alice": "wonder"},
                 "self_hostname": "daemon"}},
        {"main": {"sources": ["fwd"], "outputs": ["o"]}},
        {"o": {"type": "file", "path": out, "fsync": "never"}})
    lug = it.Lugger(conf)
    try:
        lug.wait_started()
        for pw, ok in (("wonder", True), ("nope", False)):
            r = subprocess.run(
                ["node", PEERS, "client", json.dumps(
                    {"port": port, "mode": "PackedForward", "n": 5, "key": "k",
                     "user": "alice", "password": pw, "ackTimeout": 3000})],
                cwd=HERE, capture_output=True, text=True, timeout=60)
            it.check((r.returncode == 0) == ok, "password %s: rc %d %s %s" %
                     (pw, r.returncode, r.stdout, r.stderr))
        it.wait_for(lambda: "username/password mismatch" in lug.stderr_text(),
                    5, "the refusal in the log", proc=lug)
        line = [l for l in lug.stderr_text().splitlines()
                if "username/password mismatch" in l][0]
        it.check("tcp 127.0.0.1:" in line and "as npm-client" in line,
                 "the log line names the peer: " + line)
        it.wait_for(lambda: os.path.exists(out) and
                    len(open(out).read().splitlines()) == 5, 10, "5 records")
        lug.stop()
    finally:
        lug.kill9()


def relay_config(wd, name, http_port=None):
    """A lugger relaying its forward source (on `port`) to a forward
    output whose server (`down`) is not up yet, with a 2 MiB memory
    budget; returns port, down and the config's path."""
    port, down = it.free_port(), it.free_port()
    settings = {"state_dir": wd.mk("st-" + name), "memory_budget": "2MiB",
                "workers": 1}
    if http_port is not None:
        settings["http"] = "127.0.0.1:%d" % http_port
    conf = it.write_config(
        wd.p(name + ".lua"), settings,
        {"fwd": {"type": "forward", "host": "127.0.0.1", "port": port}},
        {"main": {"sources": ["fwd"], "outputs": ["up"]}},
        {"up": {"type": "forward", "servers": ["127.0.0.1:%d" % down],
                "connect_timeout": "500ms"}})
    return port, down, conf


def series(http_port, line_start):
    """The value of the one /metrics line starting with `line_start`
    (name and labels), or None."""
    st, text = it.http_get(http_port, "/metrics")
    it.check(st == 200, "/metrics: %r" % st)
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def check_peer_gone(wd):
    """A sender that resets its connection with acks still owed, while
    lugger has stopped reading it (at its memory budget, the output's
    server down): once the server is up, the first ack goes to a dead
    socket. The write fails with ECONNRESET (not SIGPIPE, which killed the
    daemon of test_forward_chain once) and lugger closes the connection at
    once, counted under reason "write"; what its kernel held unread goes
    with it, unacked. The sender comes back and sends every chunk it had
    no ack for, as a forward sender does: every record arrives, and the
    only duplicates are the records lugger had read before the reset."""
    hport = it.free_port()
    port, down, conf = relay_config(wd, "gone", hport)
    lug = it.Lugger(conf)
    srv = None
    n = 100
    try:
        lug.wait_started()
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        s.settimeout(3)
        msgs, blocked = [], False
        t0 = time.monotonic()
        while not blocked and time.monotonic() - t0 < 60:
            whole = packed("gone", len(msgs) * n, n, "x" * 200,
                           chunk="c%d" % len(msgs))
            msgs.append(whole)
            msg = memoryview(whole)
            while msg:
                try:
                    k = s.send(msg)
                except socket.timeout:
                    blocked = True
                    break
                msg = msg[k:]
        it.check(blocked, "the sender never blocked (%d messages sent): lugger "
                 "kept reading past its memory budget" % len(msgs))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
        s.close()  # a reset
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        srv = subprocess.Popen([SERVER_BIN, "--serve", str(down), ""],
                               stdout=out, stderr=err)
        closed = 'lugger_forward_closed_total{source="fwd",reason="write"}'
        it.wait_for(lambda: series(hport, closed) == 1, 60,
                    "the reset connection closed on its failed ack write",
                    proc=lug, detail=lambda: lug.stderr_tail(5))
        it.check(series(hport, 'lugger_forward_connections{source="fwd"}')
                 == 0, "the reset connection is still open")
        it.wait_for(lambda: series(hport, "lugger_memory_used_bytes") == 0,
                    60, "what lugger had read delivered", proc=lug)
        first = len(read(out).splitlines())
        it.check(first > 0, "nothing lugger had read was delivered")
        # The sender again, with every chunk it had no ack for: all of them.
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(60)
        for m in msgs:
            s.sendall(m)
        got = b""
        while got.count(b"\x81\xa3ack") < len(msgs):
            b = s.recv(65536)
            it.check(b, "lugger closed the connection after %d acks of %d" %
                     (got.count(b"\x81\xa3ack"), len(msgs)))
            got += b
        s.close()
        total = len(msgs) * n
        it.wait_for(lambda: len(read(out).splitlines()) >= total + first, 60,
                    "%d records downstream" % (total + first), proc=lug)
        lug.check_running()
        seqs = sorted(int(json.loads(l)["body"].split()[1])
                      for l in read(out).splitlines())
        it.check(sorted(set(seqs)) == list(range(total)),
                 "records lost: %d of %d" % (len(set(seqs)), total))
        it.check(len(seqs) - total == first,
                 "%d duplicates; lugger had read %d records before the reset" %
                 (len(seqs) - total, first))
        lug.stop()
        return first, total
    finally:
        lug.kill9()
        if srv is not None:
            srv.kill()
            srv.wait()


def check_backpressure(wd):
    port, down, conf = relay_config(wd, "relay")
    lug = it.Lugger(conf)
    srv = None
    try:
        lug.wait_started()
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        s.settimeout(3)
        pad = "x" * 200
        sent = 0
        blocked = False
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            msg = packed("bp", sent, 100, pad)
            try:
                s.sendall(msg)
            except socket.timeout:
                blocked = True
                break
            sent += 100
        it.check(blocked, "the sender never blocked (%d records sent): lugger "
                 "kept reading past its memory budget" % sent)
        rss = lug.rss_kib() / 1024.0
        it.log("sender blocked after %d records (~%.1f MB); lugger RSS %.1f MiB"
               % (sent, sent * 230 / 1e6, rss))
        it.check(sent * 230 < 200e6, "blocked only after %d records" % sent)
        it.check(lug.rss_kib() < it.rss_limit(64, 160), "RSS %.1f MiB" % rss)
        # The downstream server comes up: everything arrives.
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        srv = subprocess.Popen([SERVER_BIN, "--serve", str(down), ""],
                               stdout=out, stderr=err)
        # The last message may be cut where send() blocked: finish it.
        s.settimeout(60)
        it.wait_for(lambda: len(read(out).splitlines()) >= sent, 120,
                    "%d records downstream" % sent, proc=lug)
        s.close()
        seqs = sorted(int(json.loads(l)["body"].split()[1])
                      for l in read(out).splitlines())
        it.check(seqs[:sent] == list(range(sent)), "records lost or reordered")
        lug.stop()
        return sent, rss
    finally:
        lug.kill9()
        if srv is not None:
            srv.kill()
            srv.wait()


def test():
    it.require_binary()
    with it.WorkDir("fwdsrc") as wd:
        check_errors(wd)
        it.log("lugger check names every bad forward option")
        check_users(wd)
        it.log("user authentication: accepted, refused with the peer named")
        check_deploy(wd)
        it.log("deploy/forward/ configs pass lugger check")
        first, total = check_peer_gone(wd)
        it.log("a client reset with acks owed: its connection closed on the "
               "failed write; %d records read before the reset, then all %d "
               "sent again and delivered" % (first, total))
        sent, rss = check_backpressure(wd)
    return ("check errors; users; a client reset with acks owed: closed, "
            "%d of %d records resent were duplicates; "
            "backpressure: sender blocked after %d "
            "records with lugger at %.1f MiB RSS, all %d delivered once the "
            "downstream came up" % (first, total, sent, rss, sent))


if __name__ == "__main__":
    it.main("test_forward_source", test)
