"""SIGTERM while the clickhouse output's server is silent, slow or down:
a real ClickHouse (Debian clickhouse-server 18.16, clickhouse_server.py)
behind fault_proxy.py, which makes it accept and never answer, answer
late or refuse connections. The scenarios and what each checks are
shutdown_it.py's: silent, second (SIGINT and SIGTERM again during the
drain), slow (answers within the shutdown timeout), late (answers after
it: the rows are stored, lugger leaves them unacked, the restart inserts
them again: at least once), down (connection refused, in backoff),
back_up (the server back after a long outage, SIGTERM in a backoff
longer than the drain: delivered in the drain).

Each scenario inserts into its own table of engine Log, read back in
insertion order (max_threads=1): the rows' first copies are in file
order. max_in_flight = 1 so that one INSERT is stored before the next is
sent; the output's `compression = "none"` lets the proxy see which lines
each request holds.
"""

import os
import sys
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import lugger_it as it  # noqa: E402
import clickhouse_server  # noqa: E402
import shutdown_it as sd  # noqa: E402
from clickhouse_server import ClickHouse  # noqa: E402
from fault_proxy import FaultProxy  # noqa: E402


class ClickHouseBackend(sd.Backend):
    name = "clickhouse"

    def __init__(self, ch):
        self.ch = ch
        self.proxy = FaultProxy(ch.http_port)
        self.table = None

    def fresh(self, tag):
        self.table = "sd_" + tag
        self.ch.query("CREATE TABLE %s (body String) ENGINE = Log" % self.table)

    def out(self, url):
        return {"type": "clickhouse", "hosts": [url], "table": self.table,
                "compression": "none", "max_batch_size": 100, "max_in_flight": 1,
                "max_coalescing_delay": "50ms", "timeout": "60s",
                # 18.16 refuses the token (Code 115): the retry without it
                # would add a backoff step to what a scenario times.
                "dedup_token": "off"}

    def _bodies(self):
        url = self.ch.url + "/?" + urllib.parse.urlencode(
            {"query": "SELECT body FROM %s FORMAT TabSeparated" % self.table,
             "max_threads": "1"})
        with urllib.request.urlopen(url, timeout=30) as f:
            return f.read()

    def stored(self):
        out = {}
        for q in sd.seq_lists(self._bodies()):
            out[q] = out.get(q, 0) + 1
        return out

    def in_order(self):
        return [sd.seq_lists(self._bodies())]


def run():
    it.require_binary()
    if not clickhouse_server.available():
        it.fail("clickhouse-server not installed: run scripts/setup")
    which = sys.argv[1:] or ["silent", "second", "slow", "late", "down", "back_up"]
    with it.WorkDir("ch-shutdown-server") as wd:
        ch = ClickHouse(wd.p("ch"))
        t = ch.start()
        it.log("clickhouse up in %.1f s" % t)
        b = ClickHouseBackend(ch)
        try:
            return "; ".join(getattr(sd, w)(b) for w in which)
        finally:
            b.proxy.stop()
            ch.kill()


if __name__ == "__main__":
    it.main("test_clickhouse_shutdown", run)
