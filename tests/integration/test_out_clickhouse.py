"""The clickhouse output against a real ClickHouse (Debian clickhouse-server
18.16, started here with its own ZooKeeper so the table can be a
ReplicatedMergeTree, whose block deduplication makes an identical retried
INSERT a no-op).

Scenarios:
  typed     rows arrive exactly as sent, typed (DateTime from RFC 3339 with
            best_effort, integers, strings, a column mapped from a field),
            unknown keys skipped
  badrow    a batch of 1,000 with one bad row: 999 rows stored, the bad one
            in the dead-letter output with ClickHouse's Code and message
  down      the server stopped for 20 s while lines keep coming: nothing
            lost, no duplicate
  lostack   a proxy that forwards INSERTs but drops some answers (the rows
            were stored, lugger cannot know): the retries are the same bytes,
            ClickHouse deduplicates them, every row once
"""

import http.client
import os
import socket
import struct
import sys
import threading
import time
import http.server

sys.path.insert(0, os.path.dirname(__file__))
import lugger_it as it  # noqa: E402
import clickhouse_server  # noqa: E402
from clickhouse_server import ClickHouse  # noqa: E402

LINE = 100


def bseq(rec):
    """The sequence number of a test line, from the record's body (a
    dead-letter record carries the body whatever its fields)."""
    return it.parse_line(rec["body"])[1]
SCRIPT = r"""
function process(rec)
  local seq = rec.body:match("^f%d+ s(%d+) ")
  if not seq then return end
  rec.seq = tonumber(seq)
  rec.status = 200
  if BAD >= 0 and rec.seq == BAD then rec.status = "two hundred" end
  rec.extra = "not a column"
end
"""

TABLE = """CREATE TABLE {name} (
  time DateTime, body String, seq UInt32, status UInt16,
  `log.file.path` String, `lugger.id` String, src String DEFAULT ''
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{name}', '{{replica}}')
ORDER BY seq"""


def write_lines(path, n, start=0):
    with open(path, "ab") as f:
        f.write(b"".join(it.make_line(0, s, LINE) for s in range(start, start + n)))


def config(wd, url, table, bad=-1, extra=None, dl=None):
    out = {"type": "clickhouse", "hosts": [url], "table": table,
           "max_batch_size": 1000, "max_coalescing_delay": "100ms"}
    out.update(extra or {})
    s = {"state_dir": wd.state, "memory_budget": "16MiB", "workers": 2,
         "checkpoint_interval": "200ms", "rescan_interval": "1s",
         "dead_letter": "dl"}
    return it.write_config(
        wd.p("lugger.lua"), s,
        {"app": {"type": "file", "paths": [os.path.join(wd.logs, "*.log")],
                 "read_from": "head", "format": "line"}},
        {"main": {"sources": ["app"], "outputs": ["ch"], "scripts": ["s.lua"]}},
        {"ch": out, "dl": {"type": "file", "path": dl or wd.p("dl.jsonl"), "fsync": "never"}},
        scripts={"s.lua": SCRIPT.replace("BAD", str(bad))})


def count(ch, table):
    try:
        return int(ch.query("SELECT count() FROM %s" % table).strip())
    except RuntimeError:
        return -1


def check_exact(ch, table, n):
    rows = ch.query("SELECT seq, count() FROM %s GROUP BY seq HAVING count() > 1" % table)
    it.check(rows.strip() == "", "duplicate rows: %s" % rows[:300])
    got = count(ch, table)
    it.check(got == n, "rows: %d, expected %d" % (got, n))
    missing = ch.query("SELECT count() FROM (SELECT number AS seq FROM system.numbers "
                       "LIMIT %d) WHERE seq NOT IN (SELECT toUInt64(seq) FROM %s)" % (n, table))
    it.check(missing.strip() == "0", "missing rows: %s" % missing)


def typed(ch):
    with it.WorkDir("ch-typed") as wd:
        ch.query(TABLE.format(name="typed"))
        write_lines(wd.p("logs", "a.log"), 50)
        conf = config(wd, ch.url, "typed")
        with it.Lugger(conf) as lug:
            it.wait_for(lambda: count(ch, "typed") >= 50, 60, "50 rows", proc=lug)
            lug.stop()
        check_exact(ch, "typed", 50)
        row = ch.query("SELECT toUnixTimestamp(time), body, seq, status, `log.file.path`, "
                       "`lugger.id` FROM typed WHERE seq = 7 FORMAT TabSeparated").strip().split("\t")
        now = time.time()
        it.check(abs(int(row[0]) - now) < 120, "DateTime from the record's time: %s" % row[0])
        it.check(row[1] == it.make_line(0, 7, LINE).decode().rstrip("\n"), "body: %r" % row[1])
        it.check(row[2:4] == ["7", "200"], "typed seq/status: %s" % row[2:4])
        it.check(row[4] == wd.p("logs", "a.log"), "dotted column name: %s" % row[4])
        it.check(row[5].endswith(":%d" % (7 * LINE)), "record id: %s" % row[5])
        # A column mapped from a field.
        ch.query(TABLE.format(name="mapped"))
        conf = config(wd, ch.url, "mapped",
                      extra={"columns": {"time": "time", "body": "body", "seq": "seq",
                                         "status": "status", "src": "log.file.path",
                                         "lugger.id": "lugger.id"}})
        os.system("rm -rf %s/*" % wd.state)
        with it.Lugger(conf) as lug:
            it.wait_for(lambda: count(ch, "mapped") >= 50, 60, "50 mapped rows", proc=lug)
            lug.stop()
        src = ch.query("SELECT DISTINCT src, `log.file.path` FROM mapped").strip("\n")
        it.check(src == wd.p("logs", "a.log") + "\t",
                 "columns mapping (src filled, log.file.path not): %r" % src)
    return "typed ok"


def badrow(ch):
    with it.WorkDir("ch-bad") as wd:
        ch.query(TABLE.format(name="bad"))
        write_lines(wd.p("logs", "a.log"), 1000)
        dl = wd.p("dl.jsonl")
        conf = config(wd, ch.url, "bad", bad=437, dl=dl,
                      extra={"max_coalescing_delay": "2s"})
        with it.Lugger(conf) as lug:
            it.wait_for(lambda: count(ch, "bad") >= 999 and os.path.exists(dl) and
                        it.read_jsonl(dl, allow_partial_tail=True), 90,
                        "999 rows and 1 dead-lettered", proc=lug)
            time.sleep(0.5)
            lug.stop()
        got = count(ch, "bad")
        rej = it.read_jsonl(dl)
        it.check(got == 999 and len(rej) == 1 and bseq(rej[0]) == 437,
                 "999 stored + the bad one in dead-letter: %d rows, %s" %
                 (got, [bseq(r) for r in rej]))
        e = rej[0]["lugger.error"]
        it.check("Code: " in e, "ClickHouse's reason: %s" % e)
        seq = ch.query("SELECT count() FROM bad WHERE seq = 437").strip()
        it.check(seq == "0", "the bad row is not in the table")
    return "badrow ok (%s)" % e[:80]


def down(ch):
    with it.WorkDir("ch-down") as wd:
        ch.query(TABLE.format(name="down"))
        write_lines(wd.p("logs", "a.log"), 2000)
        conf = config(wd, ch.url, "down")
        total = [2000]
        stop = threading.Event()

        def writer():
            while not stop.is_set():
                write_lines(wd.p("logs", "a.log"), 200, start=total[0])
                total[0] += 200
                time.sleep(0.1)

        with it.Lugger(conf) as lug:
            it.wait_for(lambda: count(ch, "down") >= 2000, 60, "first rows", proc=lug)
            th = threading.Thread(target=writer, daemon=True)
            th.start()
            time.sleep(0.5)
            ch.stop()
            time.sleep(20)
            ch.start()
            time.sleep(1)
            stop.set()
            th.join()
            it.wait_for(lambda: count(ch, "down") >= total[0], 90,
                        "%d rows after the restart" % total[0], proc=lug)
            time.sleep(1)
            lug.stop()
        check_exact(ch, "down", total[0])
    return "down ok (%d rows, server stopped 20 s)" % total[0]


class DroppingProxy:
    """Forwards HTTP requests to ClickHouse; for every `every`-th INSERT it
    lets ClickHouse answer, then resets lugger's connection instead of
    passing the answer on."""

    def __init__(self, target_port, every=3):
        self.every = every
        self.n = 0
        self.dropped = 0
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                c = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                hd = {k: v for k, v in self.headers.items()
                      if k.lower() in ("content-type", "content-encoding")}
                c.request("POST", self.path, body=body, headers=hd)
                r = c.getresponse()
                data = r.read()
                c.close()
                with outer.lock:
                    outer.n += 1
                    drop = r.status == 200 and outer.n % outer.every == 0
                    if drop:
                        outer.dropped += 1
                    if os.environ.get("CH_PROXY_DEBUG"):
                        import hashlib
                        it.log("proxy: %d %s %s len %d sha %s %s" % (
                            r.status, self.path[-60:], self.headers.get("Content-Encoding"),
                            len(body), hashlib.sha1(body).hexdigest()[:10], "DROP" if drop else ""))
                if drop:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                self.send_response(r.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class S(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, *a):
                pass

        self.srv = S(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def lostack(ch):
    with it.WorkDir("ch-lostack") as wd:
        ch.query(TABLE.format(name="lostack"))
        port = int(ch.url.rsplit(":", 1)[1])
        proxy = DroppingProxy(port, every=3)
        try:
            # Lines come in small groups, so requests are cut by the
            # coalescing delay, not by max_batch_size: a retry that took
            # whatever is pending would be a different (larger) block and
            # ClickHouse would store its rows twice.
            n = 3000
            conf = config(wd, proxy.url, "lostack",
                          extra={"max_batch_size": 500, "max_in_flight": 1,
                                 "max_coalescing_delay": "100ms"})
            with it.Lugger(conf) as lug:
                for start in range(0, n, 60):
                    write_lines(wd.p("logs", "a.log"), 60, start=start)
                    time.sleep(0.03)
                it.wait_for(lambda: count(ch, "lostack") >= n, 90, "%d rows" % n, proc=lug)
                time.sleep(2)
                lug.stop()
            it.check(proxy.dropped >= 3, "answers dropped: %d" % proxy.dropped)
            check_exact(ch, "lostack", n)
        finally:
            proxy.stop()
    return "lostack ok (%d answers lost, retries deduplicated: %d rows once)" % (proxy.dropped, n)


def run():
    it.require_binary()
    if not clickhouse_server.available():
        it.fail("clickhouse-server not installed: run scripts/setup")
    which = sys.argv[1:] or ["typed", "badrow", "down", "lostack"]
    with it.WorkDir("ch-server") as wd:
        ch = ClickHouse(wd.p("ch"), zookeeper=True)
        t = ch.start()
        it.log("clickhouse up in %.1f s" % t)
        try:
            res = [globals()[w](ch) for w in which]
        finally:
            ch.kill()
    return "; ".join(res)


if __name__ == "__main__":
    it.main("test_out_clickhouse", run)
