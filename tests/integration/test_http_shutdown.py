"""SIGTERM while HTTP requests are in flight, end to end: real lugger
processes, real files, and the Elasticsearch and Loki stand-ins
(es_server.py, loki_server.py: no real server can be installed here; they
are written from the bulk and push API documentation).

Every HTTP output (elasticsearch, loki, clickhouse, otlp, http) sends
through lg_out_http_common.c over the libcurl multi client
(lg_http_client.c), so the cancel path at the shutdown timeout is one
piece of code: it is tested well once with elasticsearch, and the loki
scenario shows a second output type goes the same way.

Scenarios (settings.shutdown_timeout short; the output's own `timeout`
long, so requests are still in flight when the shutdown gives up):
  silent      the server reads a request and never answers: lugger exits 0
              within shutdown_timeout + 2 s, ASan clean, logs the output's
              name, how many records it leaves unacked and that they are
              sent again at the next start; after a restart against a
              server that answers, every line is indexed, what was acked
              before the SIGTERM is not sent again, and only the records
              that were in flight are sent twice
  loki        the same against the Loki stand-in
  others      the same against the `http` and `otlp` outputs (clickhouse
              shares the code too: test_clickhouse_shutdown.py makes its
              real server silent through fault_proxy.py)
  two         elasticsearch silent and loki answering in one pipeline: only
              output.es counts records left unacked, the checkpoint stays
  tls         silent over TLS (ca_file): the cancel ends TLS connections
  unaccepted  a listening socket that never accepts (the kernel completes
              the handshake, nothing answers): the same exit, then every
              line delivered by the server started on that port
  backlog     the same with the listen queue full: lugger's connects hang
              (SYNs dropped) when the shutdown gives up on them
  handshake   https to a port that never accepts: the TLS handshake is in
              progress at the cancel
  slow        the server answers after 1.2 s, inside an 8 s shutdown
              timeout: the answer is waited for, acked, and nothing is sent
              again after the restart
  slow_loki   the same against the Loki stand-in (one request at a time)
"""

import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import lugger_it as it  # noqa: E402
import shutdown_it as sd  # noqa: E402
from es_server import EsServer  # noqa: E402
from http_sink import HttpSink  # noqa: E402
from loki_server import LokiServer  # noqa: E402
from otlp_server import OtlpServer  # noqa: E402

LINE = 100
SEQ = re.compile(rb"f(\d{3}) s(\d{9}) ")


def seqs_in(body):
    """The test lines' sequence numbers a request body holds (each once)."""
    return {int(m.group(2)) for m in SEQ.finditer(body)}


class Counting:
    """Mixed into a stand-in: the sequence numbers of every request that
    reached handle() (answered), in order, so sends can be counted even
    where the stand-in stores a document once by its id."""

    def handle(self, req):
        if req.method in ("POST", "PUT"):
            s = seqs_in(req.body)
            if s:
                with self.lock:
                    self.sent.append(s)
        return super().handle(req)

    def sent_counts(self):
        with self.lock:
            out = {}
            for s in self.sent:
                for q in s:
                    out[q] = out.get(q, 0) + 1
            return out

    def held_seqs(self):
        with self.lock:
            out = set()
            for b in self.held_bodies:
                out |= seqs_in(b)
            return out


class CountingEs(Counting, EsServer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.sent = []


class CountingLoki(Counting, LokiServer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.sent = []


class CountingSink(Counting, HttpSink):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.sent = []


class CountingOtlp(Counting, OtlpServer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.sent = []


def write_lines(path, n, start=0):
    with open(path, "ab") as f:
        f.write(b"".join(it.make_line(0, s, LINE) for s in range(start, start + n)))


# config path -> the port of its /metrics: shutdown_it's, which its
# stop_timed reads
HTTP_PORT = sd.HTTP_PORT


def config(wd, out, shutdown_timeout, outputs=None):
    """One output "out", or the named `outputs`, fed by one pipeline."""
    port = it.free_port()
    s = {"state_dir": wd.state, "memory_budget": "16MiB", "workers": 2,
         "checkpoint_interval": "200ms", "rescan_interval": "1s",
         "shutdown_timeout": shutdown_timeout, "http": "127.0.0.1:%d" % port}
    outputs = outputs or {"out": out}
    path = wd.p("lugger.lua")
    HTTP_PORT[path] = port
    return it.write_config(
        path, s,
        {"app": {"type": "file", "paths": [os.path.join(wd.logs, "*.log")],
                 "read_from": "head", "format": "line"}},
        {"main": {"sources": ["app"], "outputs": sorted(outputs)}}, outputs)


def es_out(url, **kw):
    # `timeout` far past the shutdown timeout: the request is still in
    # flight when the shutdown gives up on it.
    o = {"type": "elasticsearch", "hosts": [url], "index": "logs",
         "max_coalescing_delay": "50ms", "max_batch_size": 100,
         "max_retry_time": "0", "timeout": "60s"}
    o.update(kw)
    return o


def make_certs(wd):
    """A CA and a server certificate for 127.0.0.1 (the unit tests'
    maker); (server cert, server key, CA file)."""
    certs = wd.mk("certs")
    it.check(os.system("python3 %s/tests/unit/core/http_test_server.py --make-certs %s"
                       % (it.SOURCE_DIR, certs)) == 0, "certificates")
    return (os.path.join(certs, "server.pem"), os.path.join(certs, "server.key"),
            os.path.join(certs, "ca.pem"))


def loki_out(url):
    return {"type": "loki", "hosts": [url], "max_coalescing_delay": "50ms",
            "max_batch_size": 100, "static_labels": {"job": "it"},
            "timeout": "60s"}


def restart_deliver(wd, conf, srv, total, what):
    """Starts lugger again against `srv` (which answers) and waits until
    every line 0..total-1 was sent to it; then stops it."""
    with it.Lugger(conf) as lug:
        it.wait_for(lambda: set(range(total)) <= set(srv.sent_counts()), 60,
                    "every line sent after the restart (%s)" % what, proc=lug,
                    detail=lambda: "%d of %d" % (len(srv.sent_counts()), total))
        time.sleep(1.0)  # anything sent twice would come now
        lug.stop()


def hang_then_restart(name, make_server, out_fn):
    """Lines acked, then a server that reads and never answers, SIGTERM,
    restart against an answering one. make_server(wd) -> a stand-in;
    out_fn(url, wd) -> the output's config."""
    n1, n2, shut = 500, 300, 2.0
    with it.WorkDir("http-shutdown-" + name) as wd:
        srv = make_server(wd).start()
        try:
            conf = config(wd, out_fn(srv.url, wd), "2s")
            log = wd.p("logs", "a.log")
            write_lines(log, n1)
            with it.Lugger(conf) as lug:
                it.wait_for(lambda: set(range(n1)) <= set(srv.sent_counts()), 60,
                            "%d lines answered" % n1, proc=lug)
                # The acks reach the engine on the next loop turns.
                it.wait_for(lambda: it.checkpoint_offsets(wd.state).get(log, 0) >= n1 * LINE,
                            10, "checkpoint past the answered lines", proc=lug)
                acked = srv.sent_counts()
                srv.faults.silent = True
                write_lines(log, n2, start=n1)
                it.wait_for(lambda: srv.held_seqs(), 30, "a request held", proc=lug)
                time.sleep(0.3)  # let more requests go out
                held = srv.held_seqs()
                took = sd.stop_timed(lug, shut, conf, n1 + n2)
                logged = sd.unacked_log(lug, "out")
                err = lug.stderr_text()
                engine = [r for r in lug.log_records() if r.get("component") == "engine"
                          and "shutdown timeout (2000 ms)" in str(r.get("msg"))]
            it.check(logged, "no warning of output.out naming the records left "
                     "unacked and that they are sent again at the next start:\n%s"
                     % err[-3000:])
            it.check(engine, "no engine warning naming the shutdown timeout:\n%s"
                     % err[-3000:])
            left = sum(c for c, _ in logged)
            cp = it.checkpoint_offsets(wd.state).get(log, 0)
            # Every line was read and handed to the output before the
            # SIGTERM: the count is every line after the checkpoint,
            # those held in flight among them.
            it.check(left == n1 + n2 - cp // LINE and left >= len(held),
                     "logged %d unacked records; %d lines after the checkpoint, "
                     "%d held in flight: %s"
                     % (left, n1 + n2 - cp // LINE, len(held), logged))
            first_held = min(held) * LINE
            it.check(n1 * LINE <= cp <= first_held,
                     "checkpoint %d: want between the acked end %d and the "
                     "first held record %d" % (cp, n1 * LINE, first_held))
            srv.faults.silent = False
            before = srv.sent_counts()
            restart_deliver(wd, conf, srv, n1 + n2, name)
            after = srv.sent_counts()
            again = {q: after.get(q, 0) - before.get(q, 0) for q in after}
            it.check(not [q for q in acked if again.get(q, 0) > 0],
                     "acked before the SIGTERM and sent again: %s"
                     % sorted(q for q in acked if again.get(q, 0) > 0)[:10])
            total = {q: after.get(q, 0) + (1 if q in held else 0)
                     for q in range(n1 + n2)}
            missing = [q for q, c in total.items() if c == 0]
            it.check(not missing, "lost: %s" % missing[:10])
            twice = sorted(q for q, c in total.items() if c > 1)
            it.check(set(twice) <= held,
                     "sent twice but not in flight at the SIGTERM: %s"
                     % sorted(set(twice) - held)[:10])
            it.check(all(c <= 2 for c in total.values()),
                     "a line sent more than twice: %s"
                     % [(q, c) for q, c in total.items() if c > 2][:5])
            return ("%s ok (exit %.2f s, %d held, %d logged unacked, %d sent twice)"
                    % (name, took, len(held), left, len(twice)))
        finally:
            srv.stop()


def silent():
    return hang_then_restart("silent", lambda wd: CountingEs(),
                             lambda url, wd: es_out(url))


def loki():
    return hang_then_restart("loki", lambda wd: CountingLoki(),
                             lambda url, wd: loki_out(url))


def others():
    """silent against the `http` and `otlp` outputs: the same shared path
    (lg_out_http_common.c), the same outcome."""
    common = {"max_coalescing_delay": "50ms", "max_batch_size": 100,
              "timeout": "60s"}
    res = [hang_then_restart(
        "http", lambda wd: CountingSink(),
        lambda url, wd: dict(common, type="http", hosts=[url], path="/ingest"))]
    res.append(hang_then_restart(
        "otlp", lambda wd: CountingOtlp(),
        lambda url, wd: dict(common, type="otlp", hosts=[url])))
    return "; ".join(res)


def two():
    """Two outputs, elasticsearch silent and loki answering: only
    output.es logs records left unacked (all of them: loki's acks alone do
    not move the checkpoint); after the restart every line is in both."""
    n, shut = 300, 2.0
    with it.WorkDir("http-shutdown-two") as wd:
        es = CountingEs().start()
        lk = CountingLoki().start()
        try:
            es.faults.silent = True
            conf = config(wd, None, "2s", outputs={"es": es_out(es.url),
                                                    "lk": loki_out(lk.url)})
            log = wd.p("logs", "a.log")
            write_lines(log, n)
            with it.Lugger(conf) as lug:
                it.wait_for(lambda: set(range(n)) <= set(lk.sent_counts()), 60,
                            "every line at loki", proc=lug)
                it.wait_for(lambda: es.held_seqs(), 30, "a request held", proc=lug)
                took = sd.stop_timed(lug, shut, conf, n)
                les, llk = sd.unacked_log(lug, "es"), sd.unacked_log(lug, "lk")
            it.check([c for c, _ in les] == [n],
                     "output.es: want one warning of %d records: %s" % (n, les))
            it.check(not llk, "output.lk delivered everything, yet: %s" % llk)
            it.check(it.checkpoint_offsets(wd.state).get(log, 0) == 0,
                     "checkpoint moved past records es did not ack: %s"
                     % it.checkpoint_offsets(wd.state))
            es.faults.silent = False
            with it.Lugger(conf) as lug:
                it.wait_for(lambda: set(range(n)) <= set(es.sent_counts()), 60,
                            "every line at es after the restart", proc=lug)
                lug.stop()
            return "two ok (exit %.2f s, output.es: %s)" % (took, les[0][1][:60])
        finally:
            es.stop()
            lk.stop()


def tls():
    """silent over TLS: the connection's TLS state goes with the cancel."""
    def server(wd):
        cert, key, _ = make_certs(wd)
        return CountingEs(tls=(cert, key))

    def out(url, wd):
        return es_out(url, ca_file=os.path.join(wd.p("certs"), "ca.pem"))
    return hang_then_restart("tls", server, out)


def unaccepted(backlog_full=False, https=False):
    """A port that listens but never accepts: connect() completes in the
    kernel, the request sits in the socket buffer, no answer comes. With
    `backlog_full`, the accept queue is full first, so the kernel drops
    lugger's SYNs and its connections stay in connect (inside the
    output's connect_timeout)."""
    name = "backlog" if backlog_full else "handshake" if https else "unaccepted"
    n, shut = 400, 2.0
    with it.WorkDir("http-shutdown-" + name) as wd:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", 0))
        ls.listen(0 if backlog_full else 64)
        port = ls.getsockname()[1]
        fillers = []
        if backlog_full:
            # Connect until one hangs: the queue is then full, and the
            # kernel drops further SYNs.
            for _ in range(8):
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                c.settimeout(0.5)
                fillers.append(c)
                try:
                    c.connect(("127.0.0.1", port))
                except (socket.timeout, TimeoutError):
                    break
            else:
                it.fail("the accept queue never filled")
        url = "%s://127.0.0.1:%d" % ("https" if https else "http", port)
        extra = {}
        if https:
            cert, key, ca = make_certs(wd)
            extra["ca_file"] = ca
        conf = config(wd, es_out(url, **extra), "2s")
        log = wd.p("logs", "a.log")
        write_lines(log, n)
        try:
            with it.Lugger(conf) as lug:
                lug.wait_started()
                time.sleep(1.5)  # read, handed to the output, sent
                took = sd.stop_timed(lug, shut, conf, n)
                logged = sd.unacked_log(lug, "out")
            it.check(logged, "no warning of output.out naming the records left "
                     "unacked:\n%s" % lug.stderr_tail())
            it.check(sum(c for c, _ in logged) == n,
                     "logged %s unacked records, none of the %d was answered: %s"
                     % (sum(c for c, _ in logged), n, logged))
            it.check(it.checkpoint_offsets(wd.state).get(log, 0) == 0,
                     "checkpoint moved past records nothing answered: %s"
                     % it.checkpoint_offsets(wd.state))
        finally:
            for c in fillers:
                c.close()
            ls.close()
        srv = CountingEs(tls=(cert, key) if https else None).start(port)
        try:
            restart_deliver(wd, conf, srv, n, name)
            c = srv.sent_counts()
            it.check(all(v == 1 for v in c.values()),
                     "sent more than once after the restart: %s"
                     % [(q, v) for q, v in c.items() if v > 1][:5])
        finally:
            srv.stop()
        return "%s ok (exit %.2f s, logged %s)" % (name, took, [m for _, m in logged][:1])


def backlog():
    return unaccepted(backlog_full=True)


def handshake():
    """https to a port that never accepts: the ClientHello sits in the
    socket buffer, the TLS handshake is in progress at the cancel."""
    return unaccepted(https=True)


def slow(name="slow", make_server=CountingEs, out_fn=es_out):
    """An answer that comes within the shutdown timeout is waited for and
    acked: nothing is sent again after the restart. 3 requests of 100
    records, 1.2 s each: at most 3.6 s in a row (loki sends one at a
    time) of an 8 s timeout (room for a loaded machine)."""
    n1, n2, shut = 300, 300, 8.0
    with it.WorkDir("http-shutdown-" + name) as wd:
        srv = make_server().start()
        try:
            conf = config(wd, out_fn(srv.url), "8s")
            log = wd.p("logs", "a.log")
            write_lines(log, n1)
            with it.Lugger(conf) as lug:
                it.wait_for(lambda: set(range(n1)) <= set(srv.sent_counts()), 60,
                            "%d lines answered" % n1, proc=lug)
                srv.faults.delay_s = 1.2
                r0 = srv.requests
                write_lines(log, n2, start=n1)
                it.wait_for(lambda: srv.requests > r0, 30, "a slow request", proc=lug)
                took = sd.stop_timed(lug, shut, conf, n1 + n2)
                logged = sd.unacked_log(lug, "out")
            it.check(took >= 0.5, "exit after %.2f s: the slow answer was not "
                     "waited for" % took)
            it.check(not logged, "records left unacked though every answer came "
                     "within the shutdown timeout: %s" % logged)
            got = srv.sent_counts()
            it.check(set(range(n1 + n2)) <= set(got),
                     "lines not delivered before the exit: %d of %d"
                     % (len(got), n1 + n2))
            cp = it.checkpoint_offsets(wd.state).get(log, 0)
            it.check(cp == (n1 + n2) * LINE, "checkpoint %d, want %d (every line "
                     "acked)" % (cp, (n1 + n2) * LINE))
            srv.faults.delay_s = 0.0
            before = srv.sent_counts()
            with it.Lugger(conf) as lug:
                time.sleep(2.0)
                lug.stop()
            after = srv.sent_counts()
            it.check(after == before, "sent again after the restart: %s" %
                     sorted(q for q in after if after[q] != before.get(q))[:10])
            it.check(all(v == 1 for v in after.values()),
                     "sent twice: %s" % [q for q, v in after.items() if v > 1][:10])
            return "%s ok (exit %.2f s)" % (name, took)
        finally:
            srv.stop()


def slow_loki():
    return slow("slow_loki", CountingLoki, loki_out)


def run():
    it.require_binary()
    which = sys.argv[1:] or ["silent", "loki", "others", "two", "tls", "unaccepted", "backlog",
                             "handshake", "slow", "slow_loki"]
    return "; ".join(globals()[w]() for w in which)


if __name__ == "__main__":
    it.main("test_http_shutdown", run)
