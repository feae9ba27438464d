"""SIGTERM while CloudWatch Logs is silent, slow or down: the
cloudwatch_logs output against tests/integration/aws/
cloudwatch_logs_server.js (the CloudWatch Logs stand-in: no CloudWatch
emulator can be installed here; it checks every call's SigV4 signature)
behind fault_proxy.py, which makes it accept and never answer, answer
late or refuse connections. The scenarios and what each checks are
shutdown_it.py's: silent, second (SIGINT and SIGTERM again during the
drain), slow (answers within the shutdown timeout), late (answers after
it: the events are stored, lugger leaves them unacked, the restart sends
them again: PutLogEvents has no idempotency key, so at least once), down
(connection refused, in backoff), back_up (the server back after a long
outage, SIGTERM in a backoff longer than the drain: delivered in the
drain).

Each scenario writes to its own log group (one stream), created by the
output on its first call; `message = "body"` so the stored events and
the proxied calls show the test lines. The stand-in keeps a stream's
events by time, then arrival, and the lines come in the same
millisecond: with max_in_flight = 1 (the default 2 lets two calls of one
stream cross, as the README says) their first copies are in file order.
"""

import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import lugger_it as it  # noqa: E402
import shutdown_it as sd  # noqa: E402
from fault_proxy import FaultProxy  # noqa: E402
from test_cloudwatch_logs import KEY, SECRET, Server  # noqa: E402


class CloudWatchBackend(sd.Backend):
    name = "cloudwatch"

    def __init__(self, srv):
        self.srv = srv
        self.proxy = FaultProxy(srv.port)
        self.group = None

    def fresh(self, tag):
        self.group = "/sd/" + tag

    def out(self, url):
        return {"type": "cloudwatch_logs", "endpoint": url, "region": "us-east-1",
                "access_key_id": KEY, "secret_access_key": SECRET,
                "log_group_name": self.group, "log_stream_name": "s",
                "message": "body", "max_batch_size": 100, "max_in_flight": 1,
                "max_coalescing_delay": "50ms", "timeout": "60s"}

    def _streams(self):
        with urllib.request.urlopen(self.srv.url + "/_fake/dump", timeout=30) as r:
            g = json.loads(r.read()).get(self.group)
        if not g:
            return []
        return [[q for e in evs for q in sd.seq_lists(e["message"].encode())]
                for evs in g["streams"].values()]

    def stored(self):
        out = {}
        for s in self._streams():
            for q in s:
                out[q] = out.get(q, 0) + 1
        return out

    def in_order(self):
        return self._streams()


def run():
    it.require_binary()
    which = sys.argv[1:] or ["silent", "second", "slow", "late", "down", "back_up"]
    with it.WorkDir("cw-shutdown-server") as wd:
        srv = Server(wd)
        b = CloudWatchBackend(srv)
        try:
            return "; ".join(getattr(sd, w)(b) for w in which)
        finally:
            b.proxy.stop()
            srv.close()


if __name__ == "__main__":
    it.main("test_cloudwatch_logs_shutdown", run)
