"""A TCP proxy in front of a real server (or a stand-in) that can make it
silent, slow or down, for the shutdown tests of outputs whose server
cannot be told to misbehave (a real ClickHouse, s3rver, the CloudWatch
Logs stand-in). It works on bytes, not on HTTP: what it does is what the
network would do.

Modes (set at any time; a connection keeps none of it but `poisoned`):
  pass     bytes go both ways at once
  silent   connections are accepted and what lugger sends is read and kept
           (`swallowed`), never passed on, never answered; a connection
           that swallowed once stays silent (its stream to the server is
           cut mid-request)
  delay    requests go to the server at once; each chunk of its answer is
           passed back `delay_s` after it came (the server has done the
           work, lugger is not told yet)
  cut_after  (bytes, with pass) each connection passes its first
           cut_after bytes, then swallows the rest as in silent: a
           large upload cut mid-body
  down()   the listening socket is closed and every open connection reset:
           connects are refused, as for a server that is not running;
           up() listens again on the same port

`forwarded` holds every byte passed to the server, `swallowed` every byte
kept in silent mode (each a list of (connection id, bytes) chunks);
`held_answers` counts the answers' chunks the delay still holds back.
"""

import queue
import socket
import struct
import threading
import time


class FaultProxy:
    def __init__(self, upstream_port, upstream_host="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.delay_s = 0.0
        self.lock = threading.Lock()
        self.forwarded = []
        self.swallowed = []
        self.accepted = 0
        self.held_answers = 0  # chunks of answers not passed back yet
        self.cut_after = 0
        self.refused_since = None
        self.conns = []
        self.ls = None
        self.port = None
        self.up()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    # -- listening

    def up(self):
        """Listens (again) on the proxy's port."""
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port or 0))
        ls.listen(64)
        self.port = ls.getsockname()[1]
        self.ls = ls
        self.refused_since = None
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self):
        """Connection refused from now on; open connections are reset."""
        ls, self.ls = self.ls, None
        if ls is not None:
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()
        self.refused_since = time.monotonic()
        self.reset_all()

    def reset_all(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            except OSError:
                pass

    def stop(self):
        self.down()

    def _accept(self, ls):
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                cid = self.accepted
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c, cid), daemon=True).start()

    # -- one connection

    def _serve(self, c, cid):
        up = None
        if self.mode != "silent":
            try:
                up = socket.create_connection(self.upstream, timeout=10)
                up.settimeout(None)
            except OSError:
                self._close(c)
                return
            with self.lock:
                self.conns.append(up)
            threading.Thread(target=self._answers, args=(up, c), daemon=True).start()
        poisoned = up is None
        sent = 0
        while True:
            try:
                data = c.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            cut = self.cut_after
            if not poisoned and self.mode != "silent" and cut and sent + len(data) > cut:
                # The first `cut_after` bytes go on; the rest is kept.
                head, data = data[:max(0, cut - sent)], data[max(0, cut - sent):]
                if head:
                    with self.lock:
                        self.forwarded.append((cid, head))
                    try:
                        up.sendall(head)
                    except OSError:
                        break
                poisoned = True
            sent += len(data)
            if poisoned or self.mode == "silent":
                poisoned = True
                with self.lock:
                    self.swallowed.append((cid, data))
                continue
            with self.lock:
                self.forwarded.append((cid, data))
            try:
                up.sendall(data)
            except OSError:
                break
        self._close(c)
        if up is not None:
            self._close(up)

    def _answers(self, up, c):
        """Server -> lugger; in delay mode each chunk `delay_s` after it
        came (a reader and a writer, so later chunks wait no longer)."""
        q = queue.Queue()

        def writer():
            while True:
                item = q.get()
                if item is None:
                    break
                due, data = item
                d = due - time.monotonic()
                if d > 0:
                    time.sleep(d)
                try:
                    c.sendall(data)
                except OSError:
                    break
                finally:
                    with self.lock:
                        self.held_answers -= 1
            self._close(c)

        w = threading.Thread(target=writer, daemon=True)
        w.start()
        while True:
            try:
                data = up.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            delay = self.delay_s if self.mode == "delay" else 0.0
            with self.lock:
                self.held_answers += 1
            q.put((time.monotonic() + delay, data))
        q.put(None)

    def _close(self, s):
        with self.lock:
            if s in self.conns:
                self.conns.remove(s)
        try:
            s.close()
        except OSError:
            pass

    # -- what passed

    def _per_conn(self, chunks, since):
        with self.lock:
            by = {}
            for cid, d in chunks[since:]:
                by.setdefault(cid, []).append(d)
        # One connection's bytes whole (a line may span chunks), the
        # connections apart.
        return b"\n".join(b"".join(v) for v in by.values())

    def forwarded_bytes(self, since=0):
        """Every byte passed to the server (from chunk `since` on: see
        mark())."""
        return self._per_conn(self.forwarded, since)

    def swallowed_bytes(self):
        return self._per_conn(self.swallowed, 0)

    def clear(self):
        """Forgets what passed so far (a new scenario)."""
        with self.lock:
            self.forwarded = []
            self.swallowed = []
            self.held_answers = 0

    def mark(self):
        """The count of chunks forwarded so far, for forwarded_bytes()."""
        with self.lock:
            return len(self.forwarded)

    def forwarded_len(self):
        with self.lock:
            return sum(len(d) for _, d in self.forwarded)
