#!/usr/bin/env python3
"""A small HTTP/1.1 server for tests/unit/core/test_http_client.c.

Python standard library only. Prints "PORT <n>" on stdout once it listens
on 127.0.0.1, then serves until killed. Keep-alive connections (HTTP/1.1,
Content-Length on every answer), each connection numbered so the test can
see reuse. Paths:

  /echo            200, a JSON description of the request: method, path,
                   headers, body (gunzipped when Content-Encoding: gzip),
                   raw body length, the connection's number, the server's
                   name (--name)
  /status/<n>      answer <n>; ?retry_after=<v> adds a Retry-After header
  /slow/<ms>       wait <ms>, then answer like /echo
  /reset           close the connection with a TCP reset, no answer
  /big/<n>         200 with <n> bytes of body

Options: --name NAME, --tls CERT KEY (HTTPS), --client-ca CA (require a
client certificate signed by CA). With --make-certs DIR it writes a test CA,
a server certificate for 127.0.0.1/localhost and a client certificate into
DIR with openssl, and exits.
"""

import argparse
import gzip
import http.server
import itertools
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

_conn_ids = itertools.count(1)


def make_certs(d):
    os.makedirs(d, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], check=True, cwd=d,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=lugger test CA", "-keyout", "ca.key", "-out", "ca.pem")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", True), ("client", False)):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj",
            "/CN=%s" % ("127.0.0.1" if name == "server" else "lugger"),
            "-keyout", name + ".key", "-out", name + ".csr")
        args = ["x509", "-req", "-in", name + ".csr", "-CA", "ca.pem",
                "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-out", name + ".pem"]
        if ext:
            args += ["-extfile", "san.ext"]
        run(*args)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_name_ = "s"

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        self.conn_id = next(_conn_ids)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, code, body, headers=()):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Conn", str(self.conn_id))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _echo(self, raw):
        body = raw
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(raw)
        desc = {
            "method": self.command, "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"), "raw_len": len(raw),
            "conn": self.conn_id, "server": Handler.server_name_,
        }
        self._send(200, json.dumps(desc).encode(),
                   [("Content-Type", "application/json")])

    def _handle(self):
        raw = self._body()
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        parts = u.path.strip("/").split("/")
        if parts[0] == "echo":
            self._echo(raw)
        elif parts[0] == "status":
            hdrs = []
            if "retry_after" in q:
                hdrs.append(("Retry-After", q["retry_after"][0]))
            self._send(int(parts[1]), ("status %s" % parts[1]).encode(), hdrs)
        elif parts[0] == "slow":
            time.sleep(int(parts[1]) / 1000.0)
            self._echo(raw)
        elif parts[0] == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif parts[0] == "big":
            self._send(200, b"x" * int(parts[1]))
        else:
            self._send(404, b"no such path")

    do_GET = do_POST = do_PUT = do_HEAD = _handle


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="s")
    ap.add_argument("--tls", nargs=2)
    ap.add_argument("--client-ca")
    ap.add_argument("--make-certs")
    a = ap.parse_args()
    if a.make_certs:
        make_certs(a.make_certs)
        return
    Handler.server_name_ = a.name
    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # resets and refused TLS handshakes are what tests do

    srv = Server(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    if a.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls[0], a.tls[1])
        if a.client_ca:
            ctx.load_verify_locations(a.client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True,
                                     do_handshake_on_connect=False)
    sys.stdout.write("PORT %d\n" % srv.server_address[1])
    sys.stdout.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
