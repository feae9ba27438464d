"""Shared base of the protocol stand-in servers (es_server.py,
loki_server.py, otlp_server.py, http_sink.py).

No real Elasticsearch, OpenSearch, Loki or OpenTelemetry collector can be
installed on these machines, so the tests run against servers written from
the official API documentation (see ../../../shared/notes/outputs-http.md
for the sources). This module has what they share: an HTTP/1.1 keep-alive
server in a thread (or its own process), optional TLS, authentication
(Basic, Bearer, ApiKey), gzip/deflate request bodies, and fault injection
that applies to whole requests:

  faults.statuses      a list of statuses answered to the next requests, one
                       each (e.g. [429, 503]); the body is the protocol's
                       error shape (the subclass's `error_body`)
  faults.down          when set, every request gets this status
  faults.delay_s       each answer waits this long
  faults.reset_next    this many requests are answered with a TCP reset
                       after the body was read
  faults.truncate_next this many answers are cut in half
  faults.retry_after   a Retry-After header value sent with injected statuses
  faults.silent        when set, a request is read whole and never answered:
                       the connection stays open and silent until the client
                       closes it (a server that hangs); nothing is stored,
                       and the (decompressed) body is kept in `held_bodies`

Out of process (the C conformance suite): POST /_fake/set {"attr": value}
sets an attribute the server has (e.g. "reject_containing"), and
GET /_fake/records answers what the server holds, one JSON record per line.

Python 3 standard library only. Run a subclass as a program to get a
standalone server that prints "PORT <n>" (for benchmarks); its knobs can
then be set with POST /_fake/faults (a JSON object of the names above).
"""

import base64
import gzip
import http.server
import json
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
import zlib


class Faults:
    def __init__(self):
        self.statuses = []
        self.down = None
        self.delay_s = 0.0
        self.reset_next = 0
        self.truncate_next = 0
        self.retry_after = None   # a Retry-After value sent with injected statuses
        self.silent = False

    def update(self, d):
        for k, v in d.items():
            if not hasattr(self, k):
                raise KeyError(k)
            setattr(self, k, v)


class Request:
    """What a handler method sees: method, path (without query), query
    (dict of lists), headers (lower-case keys), body (decompressed),
    raw_len (bytes on the wire)."""

    def __init__(self, method, path, query, headers, body, raw_len):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.raw_len = raw_len

    def q(self, name, default=None):
        v = self.query.get(name)
        return v[0] if v else default


class FakeServer:
    """Base class. Subclasses implement handle(req) -> (status, headers,
    body bytes) and error_body(status, reason) -> bytes."""

    name = "fake"

    def __init__(self, tls=None, users=None, api_keys=None, tokens=None,
                 max_body=None):
        # tls: (certfile, keyfile); users: {"user": "password"};
        # api_keys: set of encoded keys; tokens: set of bearer tokens.
        self.tls = tls
        self.users = users or {}
        self.api_keys = set(api_keys or ())
        self.tokens = set(tokens or ())
        self.max_body = max_body
        self.faults = Faults()
        self.lock = threading.RLock()
        self.requests = 0          # requests seen (all paths)
        self.injected = 0          # requests answered with an injected status
        self.times = []            # time.monotonic() of each request
        self.connections = 0
        self.held_bodies = []      # bodies of requests held by faults.silent
        self.srv = None
        self.thread = None
        self.port = None

    # --- to override ---------------------------------------------------
    def handle(self, req):
        return 404, [], b""

    def error_body(self, status, reason):
        return json.dumps({"error": reason, "status": status}).encode()

    def auth_error(self, req):
        return 401, [("WWW-Authenticate", 'Basic realm="security"')], \
            self.error_body(401, "missing or wrong authentication credentials")

    # --- server --------------------------------------------------------
    def auth_ok(self, headers):
        if not (self.users or self.api_keys or self.tokens):
            return True
        a = headers.get("authorization", "")
        scheme, _, cred = a.partition(" ")
        if scheme == "Basic" and self.users:
            try:
                u, _, p = base64.b64decode(cred).decode().partition(":")
            except Exception:
                return False
            return self.users.get(u) == p
        if scheme == "ApiKey":
            return cred in self.api_keys
        if scheme == "Bearer":
            return cred in self.tokens
        return False

    def start(self, port=0):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def setup(self):
                super().setup()
                with outer.lock:
                    outer.connections += 1

            def _reply(self, status, headers, body):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _reset(self):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def _hold(self, raw, headers):
                """faults.silent: keep the body, answer nothing, and wait
                for the client to close (or the server to stop)."""
                body = raw
                if headers.get("content-encoding", "") == "gzip":
                    try:
                        body = gzip.decompress(raw)
                    except Exception:
                        pass
                with outer.lock:
                    outer.held_bodies.append(body)
                self.close_connection = True
                self.connection.settimeout(0.2)
                while outer.srv is not None:
                    try:
                        if not self.connection.recv(4096):
                            break
                    except socket.timeout:
                        continue
                    except OSError:
                        break

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                u = urllib.parse.urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                if u.path == "/_fake/faults" and self.command == "POST":
                    with outer.lock:
                        outer.faults.update(json.loads(raw or b"{}"))
                    return self._reply(200, [], b"{}")
                if u.path == "/_fake/set" and self.command == "POST":
                    with outer.lock:
                        for k, v in json.loads(raw or b"{}").items():
                            if not hasattr(outer, k):
                                return self._reply(400, [], b"no such attribute")
                            setattr(outer, k, v)
                    return self._reply(200, [], b"{}")
                if u.path == "/_fake/records":
                    with outer.lock:
                        body = outer.records_jsonl()
                    return self._reply(200, [], body)
                if u.path == "/_fake/stats":
                    return self._reply(200, [("Content-Type", "application/json")],
                                       json.dumps(outer.stats()).encode())
                with outer.lock:
                    outer.requests += 1
                    outer.times.append(time.monotonic())
                    f = outer.faults
                    delay = f.delay_s
                    reset = f.reset_next > 0
                    if reset:
                        f.reset_next -= 1
                    status = f.down
                    if status is None and f.statuses:
                        status = f.statuses.pop(0)
                    retry_after = f.retry_after
                    silent = f.silent
                    trunc = f.truncate_next > 0
                    if trunc:
                        f.truncate_next -= 1
                if silent:
                    return self._hold(raw, headers)
                if delay:
                    time.sleep(delay)
                if reset:
                    return self._reset()
                if not outer.auth_ok(headers):
                    return self._reply(*outer.auth_error(headers))
                if status is not None:
                    with outer.lock:
                        outer.injected += 1
                    hd = [("Content-Type", "application/json")]
                    if retry_after is not None:
                        hd.append(("Retry-After", str(retry_after)))
                    return self._reply(status, hd, outer.error_body(status, "injected"))
                enc = headers.get("content-encoding", "")
                try:
                    if enc == "gzip":
                        body = gzip.decompress(raw)
                    elif enc == "deflate":
                        body = zlib.decompress(raw)
                    elif enc in ("", "identity"):
                        body = raw
                    else:
                        return self._reply(*outer.bad_encoding(enc))
                except Exception as e:
                    return self._reply(400, [], outer.error_body(400, str(e)))
                if outer.max_body is not None and len(body) > outer.max_body:
                    return self._reply(*outer.too_large(len(body)))
                req = Request(self.command, u.path, urllib.parse.parse_qs(u.query),
                              headers, body, len(raw))
                st, hd, bd = outer.handle(req)
                if trunc:
                    bd = bd[:len(bd) // 2]
                self._reply(st, hd, bd)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _any

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request, client_address):
                pass

        self.srv = Server(("127.0.0.1", port), Handler)
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True,
                                              do_handshake_on_connect=False)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.srv:
            self.srv.shutdown()
            self.srv.server_close()
            self.srv = None

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    def bad_encoding(self, enc):
        return 400, [], self.error_body(400, "Content-Encoding %r not supported" % enc)

    def too_large(self, n):
        return 413, [], b""

    def stats(self):
        return {"requests": self.requests, "connections": self.connections}

    def records_jsonl(self):
        return b""


def run_standalone(server):
    """`python3 <server>.py [--port N]`: serve until killed; print PORT."""
    port = 0
    if "--port" in sys.argv:
        port = int(sys.argv[sys.argv.index("--port") + 1])
    server.start(port)
    sys.stdout.write("PORT %d\n" % server.port)
    sys.stdout.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
