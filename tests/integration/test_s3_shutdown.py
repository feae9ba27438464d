"""SIGTERM while S3 is silent, slow or down, and while an object waits
for max_coalescing_delay: the s3 output against npm s3rver, every
request's signature checked by aws/sigv4_verify.js (test_s3.py's Peers),
behind fault_proxy.py, which makes them accept and never answer, answer
late or refuse connections. The scenarios silent, second, slow, late,
down and back_up and what each checks are shutdown_it.py's; here `late` must end
with every line in exactly one object (the retry after the restart
overwrites the object stored unanswered: same records, same key). And:

  coalesce  300 lines read into an object that would wait 60 s
            (max_coalescing_delay) for more: SIGTERM uploads it at once
            (the exit well inside an 8 s shutdown timeout), nothing is
            left unacked, every line once, nothing sent again after the
            restart
  coalesce_silent  the same object, the server silent: the upload starts
            at the SIGTERM (the proxy holds its lines), the exit comes at
            the 2 s timeout with the records left unacked, and after the
            restart every line is in exactly one object

  multipart  a multipart upload (one part of ~1 MB) cut mid-part at
            SIGTERM: left unacked at the 2 s timeout, one warning names the
            upload left incomplete (not aborted: the client is closing)
            with its key and upload id; after the restart the object is
            uploaded again whole, every line once

Each scenario writes under its own key prefix, `compression = "none"` so
that the objects and the proxied requests show the test lines; each
object's lines are in file order.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import lugger_it as it  # noqa: E402
import shutdown_it as sd  # noqa: E402
from fault_proxy import FaultProxy  # noqa: E402
from test_s3 import Peers  # noqa: E402


class S3Backend(sd.Backend):
    name = "s3"

    def __init__(self, peers):
        self.peers = peers
        self.proxy = FaultProxy(peers.vport)
        self.prefix = None

    def fresh(self, tag):
        self.prefix = "sd/%s/" % tag

    def out(self, url):
        return {"type": "s3", "bucket": "logs", "endpoint": url, "region": "us-east-1",
                "access_key_id": "S3RVER", "secret_access_key": "S3RVER",
                "key": self.prefix + "{id}.json", "compression": "none",
                "max_batch_size": 100, "max_coalescing_delay": "50ms",
                "timeout": "60s"}

    def _objects(self):
        return [sd.seq_lists(self.peers.get(k)[0])
                for k, _ in self.peers.list() if k.startswith(self.prefix)]

    def stored(self):
        out = {}
        for o in self._objects():
            for q in o:
                out[q] = out.get(q, 0) + 1
        return out

    def in_order(self):
        return self._objects()


def coalesce(b, silent=False):
    """An object waiting for max_coalescing_delay (60 s) at SIGTERM."""
    tag = "coalesce_silent" if silent else "coalesce"
    n = 300
    shut = 2.0 if silent else 8.0
    px = b.proxy
    with it.WorkDir("s3-shutdown-" + tag) as wd:
        b.fresh(tag)
        px.clear()
        px.mode = "silent" if silent else "pass"
        # One request of the delivery layer: 300 records, under
        # max_batch_size, so it waits out the delay.
        out = dict(b.out(px.url), max_batch_size=1000, max_coalescing_delay="60s")
        conf = sd.config(wd, out, "%ds" % shut)
        log = wd.p("logs", "a.log")
        sd.write_lines(log, n)
        m = px.mark()
        with it.Lugger(conf) as lug:
            sd.wait_read(lug, conf, n)
            time.sleep(0.5)
            it.check(not sd.seqs_in(px.forwarded_bytes(m) + px.swallowed_bytes()),
                     "an object went before the SIGTERM, max_coalescing_delay 60 s: %r" % (px.forwarded_bytes(m) + px.swallowed_bytes())[:1500])
            took = sd.stop_timed(lug, shut, conf, n)
            held = sd.seqs_in(px.swallowed_bytes())
            if silent:
                it.check(held, "nothing uploaded after the SIGTERM: the object kept "
                         "waiting for max_coalescing_delay\n%s" % lug.stderr_tail())
                cpl, msg = sd.check_left(lug, b, log, n, 2000, held)
            else:
                logged = sd.unacked_log(lug)
        if silent:
            it.check(cpl == 0, "checkpoint at line %d, nothing answered" % cpl)
            px.mode = "pass"
            px.reset_all()
            sd.restart_deliver(conf, b, n, tag)
            sd.check_once(b, n, what=tag)
            return "%s ok (exit %.2f s, %d lines in the upload at the stop: %s)" % (
                tag, took, len(held), msg[:60])
        it.check(took < shut / 2, "exit %.2f s after SIGTERM: the object was not "
                 "uploaded at once (shutdown_timeout %.0f s)" % (took, shut))
        it.check(not logged, "records left unacked: %s" % logged)
        cp = it.checkpoint_offsets(wd.state).get(log, 0)
        it.check(cp == n * sd.LINE, "checkpoint %d, want %d" % (cp, n * sd.LINE))
        sd.check_once(b, n, what=tag)
        m = px.mark()
        with it.Lugger(conf) as lug:
            lug.wait_started()
            time.sleep(0.5)
            lug.stop()
        again = sd.seqs_in(px.forwarded_bytes(m))
        it.check(not again, "sent again after the restart: %s" % sorted(again)[:10])
        return "coalesce ok (object uploaded at SIGTERM, exit %.2f s)" % took


def multipart(b):
    """A multipart upload cut mid-part at SIGTERM (the proxy passes the
    first 256 KiB of each connection, then keeps the rest)."""
    n, shut = 4000, 2.0
    px = b.proxy
    with it.WorkDir("s3-shutdown-multipart") as wd:
        b.fresh("multipart")
        px.clear()
        px.mode = "pass"
        c0 = b.peers.counts()
        # ~1 MB: one object (max_coalescing_delay 2 s gathers every line)
        # over multipart_threshold, one part of it.
        out = dict(b.out(px.url), max_batch_size=100000, max_coalescing_delay="2s",
                   multipart_threshold="512KiB", part_size="5MiB")
        conf = sd.config(wd, out, "2s")
        log = wd.p("logs", "a.log")
        sd.write_lines(log, n)
        px.cut_after = 256 * 1024
        try:
            with it.Lugger(conf) as lug:
                it.wait_for(lambda: px.swallowed, 30, "a part cut", proc=lug)
                took = sd.stop_timed(lug, shut, conf, n)
                cpl, msg = sd.check_left(lug, b, log, n, 2000)
                inc = [str(r.get("msg")) for r in lug.log_records()
                       if r.get("component") == "output.out" and "left incomplete" in
                       str(r.get("msg"))]
        finally:
            px.cut_after = 0
        c1 = b.peers.counts()
        it.check(c1["created"] - c0["created"] == 1 and c1["completed"] == c0["completed"],
                 "want one upload created and none completed: %s" % c1)
        it.check(len(inc) == 1 and "upload id" in inc[0],
                 "want one warning naming the multipart upload left incomplete: %s\n%s"
                 % (inc, lug.stderr_tail()))
        px.reset_all()
        sd.restart_deliver(conf, b, n, "multipart")
        sd.check_once(b, n, what="multipart")
        c2 = b.peers.counts()
        it.check(c2["completed"] - c0["completed"] == 1, "want the object completed once "
                 "after the restart: %s" % c2)
        return "multipart ok (exit %.2f s, %s)" % (took, inc[0][:110])


def coalesce_silent(b):
    return coalesce(b, silent=True)


def late(b):
    return sd.late(b, exactly_once=True)


def run():
    it.require_binary()
    which = sys.argv[1:] or ["silent", "second", "slow", "late", "down", "back_up",
                             "coalesce", "coalesce_silent", "multipart"]
    with it.WorkDir("s3-shutdown-server") as wd:
        peers = Peers(wd)
        b = S3Backend(peers)
        scen = dict(coalesce=coalesce, coalesce_silent=coalesce_silent, late=late,
                    multipart=multipart)
        try:
            return "; ".join((scen.get(w) or getattr(sd, w))(b) for w in which)
        finally:
            b.proxy.stop()
            peers.close()


if __name__ == "__main__":
    it.main("test_s3_shutdown", run)
