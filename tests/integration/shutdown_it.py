"""SIGTERM against a silent, slow or down server, for one output: the
scenarios test_clickhouse_shutdown.py, test_cloudwatch_logs_shutdown.py
and test_s3_shutdown.py run against their servers (test_http_shutdown.py
has its own for the outputs whose stand-ins can be told to hang).

Each test gives a Backend: the real server (or stand-in) behind a
FaultProxy (fault_proxy.py), which makes it silent, slow or down, and a
way to read what the server stored. The rules every scenario checks:

  - SIGTERM goes only once `lugger_records_read_total` counts every input
    line (a line still unread would be neither delivered nor logged);
  - lugger exits 0 within settings.shutdown_timeout + MARGIN_S, ASan
    clean, not by the engine's hard stop;
  - every record ends somewhere known: the checkpoint covers only records
    the server stored when lugger exited (never acked without being
    delivered), and the output's warning counts exactly the records past
    the checkpoint (left unacked, sent again at the next start);
  - after a restart against the answering server every line is stored;
    twice only if it reached the server and its answer did not reach
    lugger (then at most twice), else exactly once; each line's first
    copy after those of the lines before it, where the server keeps an
    order.

Scenarios:
  silent    300 lines acked, then the server accepts and never answers
            300 more; the second phase's lines are left unacked, none
            acked ones sent again after the restart
  second    a silent server from the start, SIGTERM, then SIGINT and
            SIGTERM again during the drain: the same exit and the same
            one warning, the drain neither cut short nor made longer
  slow      every answer 1.2 s late, inside an 8 s shutdown timeout: the
            answers are waited for and acked, nothing left, nothing sent
            again after the restart
  late      the answers come 8 s late, past a 2 s shutdown timeout: the
            server stored the records, lugger leaves them unacked and
            sends them again after the restart (at least once)
  down      connection refused while lugger retries in backoff: exit at
            the timeout, every record left unacked, and the output's
            warning at the stop names the failed connect as the reason;
            all delivered once after the restart
  back_up   the server down for 8 failed attempts (the next backoff 1.3 to
            12.8 s), back up just before the SIGTERM: delivered in the
            1.5 s drain, nothing left (before: the drain waited out the
            backoff and left every record for the next start)
"""

import os
import re
import signal
import time

import lugger_it as it

LINE = 100
SEQ = re.compile(rb"f(\d{3}) s(\d{9}) ")
MARGIN_S = 2.0


def seqs_in(data):
    """The test lines' sequence numbers in `data` (each once)."""
    return {int(m.group(2)) for m in SEQ.finditer(data)}


def seq_lists(data):
    """The sequence numbers in `data` in the order they appear."""
    return [int(m.group(2)) for m in SEQ.finditer(data)]


def write_lines(path, n, start=0):
    with open(path, "ab") as f:
        f.write(b"".join(it.make_line(0, s, LINE) for s in range(start, start + n)))


class Backend:
    """What a test gives: `proxy` (a FaultProxy in front of the server),
    `name`, and
      fresh(tag)   a new table / log group / key prefix for a scenario
      out(url)     the output's config against `url`
      stored()     {seq: count} of what the server stored for it
      in_order()   lists of the stored lines' sequence numbers, each in
                   the order the server keeps them (a table in insertion
                   order, a log stream, an object)
    """
    name = "?"
    proxy = None

    def fresh(self, tag):
        raise NotImplementedError

    def out(self, url):
        raise NotImplementedError

    def stored(self):
        raise NotImplementedError

    def in_order(self):
        raise NotImplementedError


HTTP_PORT = {}


def config(wd, out, shutdown_timeout):
    port = it.free_port()
    s = {"state_dir": wd.state, "memory_budget": "16MiB", "workers": 2,
         "checkpoint_interval": "200ms", "rescan_interval": "1s",
         "shutdown_timeout": shutdown_timeout, "http": "127.0.0.1:%d" % port}
    path = wd.p("lugger.lua")
    HTTP_PORT[path] = port
    return it.write_config(
        path, s,
        {"app": {"type": "file", "paths": [os.path.join(wd.logs, "*.log")],
                 "read_from": "head", "format": "line"}},
        {"main": {"sources": ["app"], "outputs": ["out"]}}, {"out": out})


def wait_read(lug, conf, lines):
    lug.wait_started()  # /metrics answers from then on
    it.wait_for(lambda: it.metric_sum(HTTP_PORT[conf], "lugger_records_read_total") >= lines,
                30, "all %d lines read" % lines, proc=lug)


def stop_timed(lug, shutdown_s, conf, lines, extra_signals=(), at_signal=None):
    """Once all `lines` are read, SIGTERM (then each of `extra_signals`
    (delay s, signal) after the first); the exit must be 0, ASan clean
    and within shutdown_timeout + MARGIN_S, not by the hard stop.
    `at_signal()` is called right before the SIGTERM (the state then)."""
    wait_read(lug, conf, lines)
    lug.wait_started()
    if at_signal is not None:
        at_signal()
    t0 = time.monotonic()
    lug.proc.send_signal(signal.SIGTERM)
    for d, sig in extra_signals:
        time.sleep(max(0.0, t0 + d - time.monotonic()))
        if lug.proc.poll() is None:
            lug.proc.send_signal(sig)
    rc = lug.wait(shutdown_s + 20)
    took = time.monotonic() - t0
    if rc is None:
        lug.kill9()
        it.fail("no exit within %.0f s of SIGTERM\n%s" % (shutdown_s + 20, lug.stderr_tail()))
    lug.check_sanitizers()
    it.check(rc == 0, "exit %d after SIGTERM\n%s" % (rc, lug.stderr_tail()))
    it.check(took <= shutdown_s + MARGIN_S,
             "exit took %.2f s after SIGTERM, shutdown_timeout %.0f s\n%s"
             % (took, shutdown_s, lug.stderr_tail()))
    it.check("still blocked after the shutdown timeout" not in lug.stderr_text(),
             "exited by the hard stop, not by closing every output:\n%s" % lug.stderr_tail())
    return took


def unacked_log(lug, name="out"):
    """The warnings of output `name` that count records left unacked for
    the next start: [(count, message)]."""
    found = []
    for r in lug.log_records():
        msg = str(r.get("msg", ""))
        if r.get("component") == "output." + name and "next start" in msg:
            m = re.search(r"(\d+)[a-z ]* record", msg)
            if m:
                found.append((int(m.group(1)), msg))
    return found


def engine_timeout_log(lug, shutdown_ms):
    return [r for r in lug.log_records() if r.get("component") == "engine"
            and "shutdown timeout (%d ms)" % shutdown_ms in str(r.get("msg"))]


def check_left(lug, b, log, total, shut_ms, held=()):
    """After a stop at the shutdown timeout: one warning of output.out
    counting every line past the checkpoint; the engine's warning; the
    checkpoint not past a line the server lacks, nor past a held one.
    Returns (checkpoint in lines, the warning)."""
    logged = unacked_log(lug)
    err = lug.stderr_text()
    it.check(len(logged) == 1, "want one warning of output.out naming the records "
             "left unacked for the next start, got %s:\n%s" % (logged, err[-3000:]))
    it.check(engine_timeout_log(lug, shut_ms),
             "no engine warning naming the shutdown timeout:\n%s" % err[-3000:])
    cp = it.checkpoint_offsets(wd_state(log)).get(log, 0)
    it.check(cp % LINE == 0, "checkpoint %d inside a line" % cp)
    cpl = cp // LINE
    it.check(logged[0][0] == total - cpl,
             "logged %d unacked records; %d lines past the checkpoint: %s"
             % (logged[0][0], total - cpl, logged))
    st = b.stored()
    missing = [q for q in range(cpl) if q not in st]
    it.check(not missing, "acked (before the checkpoint at line %d) but not stored: %s"
             % (cpl, missing[:10]))
    if held:
        it.check(cpl <= min(held), "checkpoint at line %d, past line %d that was "
                 "never answered" % (cpl, min(held)))
    return cpl, logged[0][1]


def wd_state(log):
    """The state dir of the work dir holding logs/<file> `log`."""
    return os.path.join(os.path.dirname(os.path.dirname(log)), "state")


def restart_deliver(conf, b, total, what):
    """lugger again, the server answering: waits until every line
    0..total-1 is stored, then a moment for anything sent twice; stops
    it (exit 0)."""
    with it.Lugger(conf) as lug:
        it.wait_for(lambda: set(range(total)) <= set(b.stored()), 60,
                    "every line stored after the restart (%s)" % what, proc=lug,
                    detail=lambda: "%d of %d" % (len(b.stored()), total))
        time.sleep(0.3)
        lug.stop()


def check_once(b, total, twice_ok=(), what=""):
    """Every line 0..total-1 stored; more than once only those in
    `twice_ok`, and those at most twice."""
    st = b.stored()
    missing = [q for q in range(total) if q not in st]
    it.check(not missing, "%s: lost %d lines: %s" % (what, len(missing), missing[:10]))
    extra = sorted(q for q in st if q >= total)
    it.check(not extra, "%s: stored lines never written: %s" % (what, extra[:10]))
    bad = sorted(q for q, c in st.items() if c > 1 and q not in twice_ok)
    it.check(not bad, "%s: stored more than once, yet never in flight unanswered "
             "at the stop: %s" % (what, bad[:10]))
    over = [(q, c) for q, c in st.items() if c > 2]
    it.check(not over, "%s: stored more than twice: %s" % (what, over[:10]))
    return sum(1 for c in st.values() if c > 1)


def check_order(b, what):
    """In each of the server's ordered views (b.in_order(): a table in
    insertion order, a log stream, an object) the lines arrive in file
    order: each line's first copy after every earlier line's (a line
    sent again may come after later ones)."""
    for seqs in b.in_order():
        first, seen = [], set()
        for q in seqs:
            if q not in seen:
                seen.add(q)
                first.append(q)
        bad = [(a, c) for a, c in zip(first, first[1:]) if c < a]
        it.check(not bad, "%s: lines stored out of file order: %s" % (what, bad[:5]))


# ---------------------------------------------------------------------------
# Scenarios


def silent(b, second_signal=False):
    """Acked lines, then a server that accepts and never answers, SIGTERM
    (with `second_signal`: SIGINT 0.4 s and SIGTERM 0.8 s after it)."""
    tag = "second" if second_signal else "silent"
    # The second signal's run skips the acked first phase (silent's).
    n1, n2, shut = (0 if second_signal else 300), 300, 2.0
    px = b.proxy
    with it.WorkDir("%s-shutdown-%s" % (b.name, tag)) as wd:
        b.fresh(tag)
        px.clear()
        px.mode = "pass"
        conf = config(wd, b.out(px.url), "2s")
        log = wd.p("logs", "a.log")
        write_lines(log, n1)
        if not n1:
            px.mode = "silent"
        with it.Lugger(conf) as lug:
            it.wait_for(lambda: set(range(n1)) <= set(b.stored()), 60,
                        "%d lines stored" % n1, proc=lug)
            it.wait_for(lambda: it.checkpoint_offsets(wd.state).get(log, 0) >= n1 * LINE,
                        10, "checkpoint past the stored lines", proc=lug)
            px.mode = "silent"
            write_lines(log, n2, start=n1)
            it.wait_for(lambda: seqs_in(px.swallowed_bytes()), 30,
                        "a request swallowed", proc=lug)
            time.sleep(0.3)  # more requests go out
            took = stop_timed(lug, shut, conf, n1 + n2, extra_signals=(
                ((0.4, signal.SIGINT), (0.8, signal.SIGTERM)) if second_signal else ()))
            held = seqs_in(px.swallowed_bytes())
            cpl, msg = check_left(lug, b, log, n1 + n2, 2000, held)
        it.check(cpl >= n1, "checkpoint at line %d, before the %d stored lines" % (cpl, n1))
        px.mode = "pass"
        px.reset_all()
        restart_deliver(conf, b, n1 + n2, tag)
        # Nothing of the second phase reached the server before the stop.
        check_once(b, n1 + n2, what=tag)
        check_order(b, tag)
        return ("%s ok (exit %.2f s, %d lines held by the silent server, %d left: %s)"
                % (tag, took, len(held), n1 + n2 - cpl, msg[:70]))


def second(b):
    return silent(b, second_signal=True)


def slow(b):
    """Answers 1.2 s late within an 8 s shutdown timeout: waited for."""
    n1, n2, shut = 200, 200, 8.0
    px = b.proxy
    with it.WorkDir("%s-shutdown-slow" % b.name) as wd:
        b.fresh("slow")
        px.clear()
        px.mode = "pass"
        conf = config(wd, b.out(px.url), "8s")
        log = wd.p("logs", "a.log")
        write_lines(log, n1)
        with it.Lugger(conf) as lug:
            it.wait_for(lambda: set(range(n1)) <= set(b.stored()), 60,
                        "%d lines stored" % n1, proc=lug)
            px.delay_s, px.mode = 1.2, "delay"
            m = px.mark()
            write_lines(log, n2, start=n1)
            it.wait_for(lambda: seqs_in(px.forwarded_bytes(m)), 30,
                        "a slow request", proc=lug)
            held = []
            took = stop_timed(lug, shut, conf, n1 + n2,
                              at_signal=lambda: held.append(px.held_answers))
            logged = unacked_log(lug)
        # On a machine so loaded that every answer came before the SIGTERM
        # there was nothing to wait for.
        it.check(took >= 0.5 or not held[0], "exit %.2f s after SIGTERM: the slow "
                 "answer was not waited for" % took)
        it.check(not logged, "records left unacked though every answer came within "
                 "the shutdown timeout: %s" % logged)
        cp = it.checkpoint_offsets(wd.state).get(log, 0)
        it.check(cp == (n1 + n2) * LINE, "checkpoint %d, want %d (every line acked)"
                 % (cp, (n1 + n2) * LINE))
        check_once(b, n1 + n2, what="slow, before the restart")
        px.mode = "pass"
        m = px.mark()
        with it.Lugger(conf) as lug:
            lug.wait_started()
            time.sleep(1.0)
            lug.stop()
        again = seqs_in(px.forwarded_bytes(m))
        it.check(not again, "sent again after the restart: %s" % sorted(again)[:10])
        check_once(b, n1 + n2, what="slow, after the restart")
        check_order(b, "slow")
        return "slow ok (exit %.2f s, every answer waited for)" % took


def late(b, exactly_once=False):
    """Answers 8 s late, past a 2 s shutdown timeout: the server stored
    what lugger leaves unacked. `exactly_once`: a retry overwrites what
    the first attempt stored (the s3 output's keys)."""
    n1, n2, shut = 200, 200, 2.0
    px = b.proxy
    with it.WorkDir("%s-shutdown-late" % b.name) as wd:
        b.fresh("late")
        px.clear()
        px.mode = "pass"
        conf = config(wd, b.out(px.url), "2s")
        log = wd.p("logs", "a.log")
        write_lines(log, n1)
        with it.Lugger(conf) as lug:
            it.wait_for(lambda: set(range(n1)) <= set(b.stored()), 60,
                        "%d lines stored" % n1, proc=lug)
            it.wait_for(lambda: it.checkpoint_offsets(wd.state).get(log, 0) >= n1 * LINE,
                        10, "checkpoint past the stored lines", proc=lug)
            px.delay_s, px.mode = 8.0, "delay"
            m = px.mark()
            write_lines(log, n2, start=n1)
            it.wait_for(lambda: seqs_in(px.forwarded_bytes(m)), 30,
                        "a request passed on", proc=lug)
            # Stored by the server, the answer held by the proxy.
            it.wait_for(lambda: seqs_in(px.forwarded_bytes(m)) & set(b.stored()), 30,
                        "a late request stored", proc=lug)
            took = stop_timed(lug, shut, conf, n1 + n2)
            inflight = seqs_in(px.forwarded_bytes(m))
            cpl, msg = check_left(lug, b, log, n1 + n2, 2000)
        it.check(cpl < n1 + n2, "every line acked, though no answer came")
        it.check(cpl <= min(inflight), "checkpoint at line %d, past line %d whose "
                 "answer never came" % (cpl, min(inflight)))
        px.mode = "pass"
        px.reset_all()
        restart_deliver(conf, b, n1 + n2, "late")
        twice = check_once(b, n1 + n2, twice_ok=set() if exactly_once else inflight,
                           what="late")
        check_order(b, "late")
        return ("late ok (exit %.2f s, %d lines stored unanswered, %d stored twice: %s)"
                % (took, len(inflight), twice, msg[:60]))


def down(b, why=("refused", "connect")):
    """Connection refused while lugger retries in backoff. `why`: words
    one of which the output's warning at the stop must say (what the
    last attempt met)."""
    n, shut = 300, 2.0
    px = b.proxy
    with it.WorkDir("%s-shutdown-down" % b.name) as wd:
        b.fresh("down")
        px.clear()
        px.mode = "pass"
        px.down()
        conf = config(wd, b.out(px.url), "2s")
        log = wd.p("logs", "a.log")
        write_lines(log, n)
        try:
            with it.Lugger(conf) as lug:
                lug.wait_started()
                port = HTTP_PORT[conf]
                it.wait_for(lambda: it.metric_sum(port, "lugger_output_retries_total") >= 2
                            and it.metric_sum(port, "lugger_output_retrying") >= 1, 30,
                            "retries in backoff", proc=lug)
                took = stop_timed(lug, shut, conf, n)
                cpl, msg = check_left(lug, b, log, n, 2000)
        finally:
            px.up()
        it.check(cpl == 0, "checkpoint at line %d with the server down" % cpl)
        it.check(any(w in msg.lower() for w in why),
                 "output.out's warning at the stop does not say why the records were "
                 "not delivered (%s): %s" % ("/".join(why), msg))
        restart_deliver(conf, b, n, "down")
        check_once(b, n, what="down")
        check_order(b, "down")
        return "down ok (exit %.2f s in backoff: %s)" % (took, msg[:200])



def back_up(b, rounds=8):
    """The server down long enough for the retry backoff to grow past the
    shutdown timeout (`rounds` failed attempts: the next waits 1.3 to
    12.8 s), then back up just before the SIGTERM: the drain tries again
    at once and delivers everything, instead of waiting out a backoff
    longer than the drain and leaving every record for the next start."""
    n, shut = 300, 1.5
    px = b.proxy
    with it.WorkDir("%s-shutdown-back-up" % b.name) as wd:
        b.fresh("back_up")
        px.clear()
        px.mode = "pass"
        px.down()
        # One request at a time: each failed attempt is one round, one
        # step of the backoff.
        out = dict(b.out(px.url), max_in_flight=1, max_batch_size=1000)
        conf = config(wd, out, "1500ms")
        log = wd.p("logs", "a.log")
        write_lines(log, n)
        done = "lugger_output_request_duration_seconds_count"
        try:
            with it.Lugger(conf) as lug:
                lug.wait_started()
                port = HTTP_PORT[conf]
                it.wait_for(lambda: it.metric_sum(port, done) >= rounds, 60,
                            "%d failed attempts" % rounds, proc=lug,
                            detail=lambda: "%d" % it.metric_sum(port, done))
                px.up()
                took = stop_timed(lug, shut, conf, n)
                logged = unacked_log(lug)
                err = lug.stderr_tail()
        finally:
            if px.ls is None:
                px.up()
        it.check(not logged, "the server was back before the SIGTERM, yet records were "
                 "left unacked (the drain waited out the retry backoff): %s\n%s"
                 % (logged, err))
        cp = it.checkpoint_offsets(wd.state).get(log, 0)
        it.check(cp == n * LINE, "checkpoint %d, want %d" % (cp, n * LINE))
        check_once(b, n, what="back_up")
        check_order(b, "back_up")
        return "back_up ok (%d failed rounds, delivered in the drain, exit %.2f s)" % (
            rounds, took)
