#!/usr/bin/env python3
"""Signals, --once and script errors.

1. SIGTERM and SIGINT while lines flow: lugger exits 0 within the shutdown
   timeout (default 10 s); checkpoints.json exists, is valid JSON, and each
   file's offset is exactly the end of the lines delivered from it (the
   drain delivered what was in flight and checkpointed it: nothing skipped,
   nothing left to send twice). A restart continues after the checkpoint:
   at the end no line is lost and none is duplicated.
2. `run --once` reads every file to its end (including a last line without
   LF, emitted after the flush timeout), delivers, writes checkpoints at
   the end of every file and exits 0; a second `--once` delivers nothing.
3. SIGTERM while the output is blocked (stdout into a pipe the test has
   stopped reading) and settings.shutdown_timeout = "2s": lugger exits 0
   within about that timeout, no checkpoint passes what reached the pipe,
   and a restart delivers every line not delivered before.
4. A filter that calls error() on lines containing "boom": exactly those
   records go to the dead-letter file (<state_dir>/dead-letter.jsonl) with
   "lugger.error" naming the script and the line of the error() call;
   every other record flows, changed by the script.
5. SIGTERM and SIGINT while lugger loads its config (before the engine
   has its handlers): they wait, blocked, until the engine starts, which
   then stops cleanly (exit 0), as a user stopping it during start-up
   expects; the default action would kill it (-15).
"""

import datetime
import os
import signal
import subprocess
import threading
import time

import lugger_it as it

LINE_LEN = 100
SHUTDOWN_TIMEOUT = 10.0  # settings.shutdown_timeout default


def check_clean_stop(wd, paths, tracker, what):
    """After a clean stop: every checkpoint ends exactly after the last
    delivered line of its file, and the output has no gaps."""
    cp = it.read_checkpoints(wd.state)
    offs = it.checkpoint_offsets(wd.state)
    for fid, p in enumerate(paths):
        got = tracker.delivered(fid)
        last = tracker.last.get(fid, -1)
        it.check(got == last + 1, "%s: output of %s has a gap: lines up to "
                 "%d arrived but line %d did not" % (what, p, last, got))
        it.check(p in offs, "%s: checkpoints.json has no entry for %s: %r"
                 % (what, p, cp))
        it.check(offs[p] == got * LINE_LEN,
                 "%s: checkpoint of %s is at byte %d (line %.2f) but lines "
                 "0..%d were delivered (end at byte %d): %s" % (
                     what, p, offs[p], offs[p] / LINE_LEN, got - 1,
                     got * LINE_LEN,
                     "lines would be skipped" if offs[p] > got * LINE_LEN
                     else "delivered lines would be sent again"))


def part_signals():
    with it.WorkDir("signals") as wd:
        paths = [os.path.join(wd.logs, "app-%d.log" % i) for i in range(3)]
        for p in paths:
            open(p, "wb").close()
        out = wd.p("out.jsonl")
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")], out)
        tracker = it.SeqTracker(expected_len=LINE_LEN)
        follower = it.JsonlFollower(out, on_record=tracker.add)
        writer = it.PacedWriter(paths, rate=6000, line_len=LINE_LEN)
        lug = None
        stops = []
        try:
            writer.start()
            for sig in (signal.SIGTERM, signal.SIGINT):
                lug = it.Lugger(conf)
                base = [tracker.delivered(i) for i in range(3)]

                def flowing():
                    follower.poll()
                    return all(tracker.delivered(i) >= base[i] + 1000
                               for i in range(3))
                it.wait_for(flowing, 30, "lines to flow", proc=lug)
                took = lug.stop(sig, timeout=SHUTDOWN_TIMEOUT + 5)
                it.check(took <= SHUTDOWN_TIMEOUT,
                         "exit took %.1f s after %s, over the %.0f s "
                         "shutdown timeout" % (took, sig.name,
                                               SHUTDOWN_TIMEOUT))
                while follower.poll():
                    pass
                check_clean_stop(wd, paths, tracker, sig.name)
                stops.append("%s exit 0 in %.2f s" % (sig.name, took))
                it.log("%s: exit 0 in %.2f s, %d lines so far, checkpoints "
                       "at the delivered ends" % (sig.name, took,
                                                  tracker.total))
            # Restart, let the writer finish, deliver everything, stop.
            lug = it.Lugger(conf)
            time.sleep(1.0)
            writer.stop()
            written = dict(writer.written)

            def all_in():
                follower.poll()
                return all(tracker.delivered(i) >= written[i]
                           for i in range(3))
            it.wait_for(all_in, 60, "every line after the restarts",
                        proc=lug)
            time.sleep(1.0)
            lug.stop(signal.SIGTERM, timeout=SHUTDOWN_TIMEOUT + 5)
            while follower.poll():
                pass
            check_clean_stop(wd, paths, tracker, "final SIGTERM")
        finally:
            writer.halt()
            if lug is not None:
                lug.kill9()
            follower.close()
        final = it.SeqTracker(expected_len=LINE_LEN)
        for r in it.read_jsonl(out):
            final.add(r)
        lost, dups, missing, extra = final.summary(written)
        total = sum(written.values())
        it.check(lost == 0, "%d of %d lines lost across SIGTERM/SIGINT "
                 "restarts (first: %s)" % (lost, total, missing))
        it.check(dups == 0, "%d lines duplicated across clean "
                 "SIGTERM/SIGINT restarts (nothing is in flight after a "
                 "drain)" % dups)
        it.check(not final.order_errors, "out of order: %s" %
                 final.order_errors[:5])
        it.check(extra == 0 and not final.foreign and not final.bad_body,
                 "unexpected records: %r %r" % (final.foreign[:3],
                                               final.bad_body[:3]))
        return "%s; %d lines across 3 runs, 0 lost, 0 duplicated" % (
            ", ".join(stops), total)


def part_once():
    with it.WorkDir("once") as wd:
        n = 100_000
        paths = [os.path.join(wd.logs, "app-%d.log" % i) for i in range(4)]
        for fid, p in enumerate(paths):
            with open(p, "wb") as f:
                f.write(b"".join(it.make_line(fid, s, LINE_LEN)
                                 for s in range(n)))
        nolf = os.path.join(wd.logs, "nolf.log")
        with open(nolf, "wb") as f:
            f.write(b"first\nlast line without LF")
        out = wd.p("out.jsonl")
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")], out,
                                settings={"memory_budget": "64MiB"})
        t0 = time.monotonic()
        lug = it.Lugger(conf, once=True)
        rc = lug.wait(120)
        took = time.monotonic() - t0
        if rc is None:
            lug.kill9()
            it.fail("--once did not exit within 120 s\n" + lug.stderr_tail())
        lug.check_sanitizers()
        it.check(rc == 0, "--once exited %d\n%s" % (rc, lug.stderr_tail()))
        recs = it.read_jsonl(out)
        tr = it.SeqTracker(expected_len=LINE_LEN)
        for r in recs:
            tr.add(r)
        expected = {i: n for i in range(4)}
        lost, dups, missing, extra = tr.summary(expected)
        it.check(lost == 0 and dups == 0 and extra == 0,
                 "--once: %d lost (first %s), %d duplicated, %d extra" % (
                     lost, missing, dups, extra))
        it.check(not tr.order_errors, "--once: out of order: %s" %
                 tr.order_errors[:5])
        others = sorted(r.get("body") for r in tr.foreign if r)
        it.check(others == ["first", "last line without LF"],
                 "--once: from nolf.log expected bodies 'first' and 'last "
                 "line without LF', got %r" % others)
        offs = it.checkpoint_offsets(wd.state)
        for p in paths + [nolf]:
            it.check(offs.get(p) == os.path.getsize(p),
                     "--once: checkpoint of %s is %r, file size %d" % (
                         p, offs.get(p), os.path.getsize(p)))
        size1 = os.path.getsize(out)
        lug2 = it.Lugger(conf, once=True)
        rc2 = lug2.wait(60)
        if rc2 is None:
            lug2.kill9()
            it.fail("second --once did not exit within 60 s\n" +
                    lug2.stderr_tail())
        lug2.check_sanitizers()
        it.check(rc2 == 0, "second --once exited %d\n%s" % (
            rc2, lug2.stderr_tail()))
        it.check(os.path.getsize(out) == size1,
                 "second --once wrote %d more bytes: the checkpoints were "
                 "not used" % (os.path.getsize(out) - size1))
        total = 4 * n + 2
        return "--once %d lines in %.2f s (%.0f lines/s incl. start-up), " \
            "exact; rerun adds 0" \
            % (total, took, total / took)


def read_pipe(fd, tracker, stop_after=None):
    """Reads JSON lines from `fd` into `tracker` until EOF, or until at
    least `stop_after` records. Returns the unterminated rest."""
    buf = b""
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return buf
        lines = (buf + chunk).split(b"\n")
        buf = lines.pop()
        for raw in lines:
            tracker.add(it.parse_json_line(raw, "stdout"))
        if stop_after is not None and tracker.total >= stop_after:
            return buf


def log_time(rec):
    """Seconds since the epoch of a lugger log record's RFC 3339 `time`."""
    t = rec["time"].rstrip("Z")
    whole, _, frac = t.partition(".")
    base = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def drain_seconds(lug):
    """From lugger's log: seconds between "stopping; draining" and the
    "shutdown timeout" warning."""
    start = end = None
    for r in lug.log_records():
        msg = str(r.get("msg", ""))
        if start is None and r.get("component") == "engine" and \
                "stopping; draining" in msg:
            start = log_time(r)
        if end is None and msg.startswith("shutdown timeout:"):
            end = log_time(r)
    it.check(start is not None and end is not None,
             "no drain start or shutdown-timeout line in the log\n" +
             lug.stderr_tail())
    return end - start


def part_blocked_shutdown():
    with it.WorkDir("blockedstop") as wd:
        n = 100_000
        paths = [os.path.join(wd.logs, "app-%d.log" % i) for i in range(2)]
        for fid, p in enumerate(paths):
            with open(p, "wb") as f:
                f.write(b"".join(it.make_line(fid, s, LINE_LEN)
                                 for s in range(n)))
        conf = it.simple_config(
            wd, [os.path.join(wd.logs, "*.log")],
            settings={"shutdown_timeout": "2s"}, output={"type": "stdout"})
        tr = it.SeqTracker(expected_len=LINE_LEN)
        lug = it.Lugger(conf, stdout=subprocess.PIPE)
        try:
            fd = lug.proc.stdout.fileno()
            rest = read_pipe(fd, tr, stop_after=20_000)
            time.sleep(1.5)  # the pipe fills; lugger blocks
            lug.check_running()
            took = lug.stop(signal.SIGTERM, timeout=15)
        finally:
            lug.kill9()
        # Whatever reached the pipe was delivered (a partial last line,
        # abandoned at the timeout, is not a record).
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            rest += chunk
        lines = rest.split(b"\n")
        partial = lines.pop()
        for raw in lines:
            tr.add(it.parse_json_line(raw, "stdout"))
        lug.proc.stdout.close()
        # The exit takes the 2 s drain, then 1 s for a blocked write to
        # give up (engine hard stop), then the sanitizers' exit: ~3 s, more
        # on a loaded machine. What must hold: the drain lasted the 2 s
        # the setting says, measured by lugger's own log times (timers fire
        # late under load, never early), and the exit came well before the
        # default shutdown_timeout (10 s) would have allowed.
        it.check(took < SHUTDOWN_TIMEOUT - 1.0, "exit took %.1f s after "
                 "SIGTERM with a blocked output and shutdown_timeout 2s" % took)
        drain = drain_seconds(lug)
        it.check(1.95 <= drain < SHUTDOWN_TIMEOUT - 1.0,
                 "blocked stop: the drain gave up %.2f s after the SIGTERM, "
                 "not after shutdown_timeout 2s" % drain)
        offs = it.checkpoint_offsets(wd.state)
        for fid, p in enumerate(paths):
            it.check(offs.get(p, 0) <= tr.delivered(fid) * LINE_LEN,
                     "blocked stop: checkpoint of %s at %d but only lines "
                     "0..%d reached the pipe" % (
                         p, offs.get(p, 0), tr.delivered(fid) - 1))
        first = tr.total
        in_flight = sum(tr.last.get(fid, -1) + 1 - offs.get(p, 0) // LINE_LEN
                        for fid, p in enumerate(paths))
        # Restart, reading everything this time.
        lug = it.Lugger(conf, stdout=subprocess.PIPE)
        try:
            fd = lug.proc.stdout.fileno()
            done = threading.Event()
            errs = []

            def reader():
                try:
                    read_pipe(fd, tr)
                except BaseException as e:
                    errs.append(e)
                done.set()
            threading.Thread(target=reader, daemon=True).start()
            it.wait_for(lambda: errs or all(tr.delivered(i) >= n
                                            for i in range(2)),
                        60, "every line after the restart", proc=lug)
            if errs:
                raise errs[0]
            time.sleep(0.5)
            lug.stop(signal.SIGTERM)
            done.wait(10)
        finally:
            lug.kill9()
        lost, dups, missing, extra = tr.summary({0: n, 1: n})
        it.check(lost == 0, "blocked stop + restart: %d lines lost (first "
                 "%s)" % (lost, missing))
        it.check(dups <= in_flight, "blocked stop + restart: %d duplicates, "
                 "more than the %d delivered past the checkpoints" % (
                     dups, in_flight))
        return ("SIGTERM with a blocked output: exit 0 in %.2f s "
                "(shutdown_timeout 2s; drain gave up after %.2f s), %d records "
                "out before, %s; restart: 0 lost, %d duplicated (bound %d)" % (
                    took, drain, first, "a partial last line" if partial else
                    "no partial line", dups, in_flight))


FILTER = """-- error() on lines containing "boom"
function process(rec)
  if rec.body:find("boom", 1, true) then
    error("boom in the line")
  end
  rec.seen = true
end
"""
ERROR_LINE = 4  # the line of error() above


def part_dead_letter():
    with it.WorkDir("deadletter") as wd:
        n = 5000
        p = os.path.join(wd.logs, "app.log")
        boom = set()
        with open(p, "wb") as f:
            for s in range(n):
                line = bytearray(it.make_line(0, s, LINE_LEN))
                if s % 97 == 13:
                    line[20:24] = b"boom"
                    boom.add(s)
                f.write(line)
        out = wd.p("out.jsonl")
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")], out,
                                scripts=["filter.lua"],
                                script_files={"filter.lua": FILTER})
        lug = it.Lugger(conf, once=True)
        rc = lug.wait(60)
        if rc is None:
            lug.kill9()
            it.fail("--once with a failing filter did not exit in 60 s\n" +
                    lug.stderr_tail())
        lug.check_sanitizers()
        it.check(rc == 0, "--once with a failing filter exited %d\n%s" % (
            rc, lug.stderr_tail()))
        recs = it.read_jsonl(out)
        tr = it.SeqTracker(expected_len=LINE_LEN)
        for r in recs:
            it.check(r.get("seen") is True,
                     "record passed the filter without its field seen=true:"
                     " %r" % r)
            it.check("lugger.error" not in r, "record with lugger.error in "
                     "the main output: %r" % r)
            tr.add(r)
        good = {s for s in range(n) if s not in boom}
        got = set()
        for s in range(n):
            arr = tr.seen.get(0, b"")
            if s < len(arr) and arr[s]:
                got.add(s)
        it.check(got == good, "main output: %d records missing (first %s), "
                 "%d boom records present (first %s)" % (
                     len(good - got), sorted(good - got)[:5],
                     len(got & boom), sorted(got & boom)[:5]))
        it.check(tr.dups == 0, "%d duplicated records" % tr.dups)
        dlp = os.path.join(wd.state, "dead-letter.jsonl")
        it.check(os.path.exists(dlp), "no dead-letter file at %s\n%s" % (
            dlp, lug.stderr_tail()))
        dl = it.read_jsonl(dlp)
        dseq = []
        for r in dl:
            err = r.get("lugger.error")
            it.check(isinstance(err, str), "dead-letter record without a "
                     "lugger.error string: %r" % r)
            it.check("filter.lua" in err and (":%d:" % ERROR_LINE) in err,
                     "lugger.error does not name the script and line "
                     "(filter.lua:%d): %r" % (ERROR_LINE, err))
            it.check("boom in the line" in err, "lugger.error lacks the "
                     "error text: %r" % err)
            it.check(r.get("log.file.path") == p, "dead-letter record "
                     "without its log.file.path: %r" % r)
            pl = it.parse_line(r.get("body", ""))
            it.check(pl is not None and pl[0] == 0, "dead-letter record "
                     "with an unexpected body: %r" % r)
            dseq.append(pl[1])
        it.check(sorted(dseq) == sorted(boom),
                 "dead letters: expected the %d boom lines exactly once, got "
                 "%d records (missing %s, extra %s)" % (
                     len(boom), len(dseq), sorted(boom - set(dseq))[:5],
                     sorted(set(dseq) - boom)[:5]))
        logs = [x for x in lug.log_records()
                if "filter.lua" in str(x.get("msg", ""))]
        it.check(logs, "no log line on stderr names filter.lua\n" +
                 lug.stderr_tail())
        return "filter error: %d records to dead-letter with filter.lua:%d," \
            " %d others flowed" % (len(dseq), ERROR_LINE, len(got))


# A config that takes a while to evaluate (about 6e7 of the 1e8 Lua
# instructions a config may use), so that the test can see lugger in it.
SLOW_CONFIG_HEAD = """local x = 0
for i = 1, 30000000 do x = x + i end
"""


def sig_blocked(pid, sig):
    """True if `sig` is in the blocked mask of `pid`'s main thread."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("SigBlk:"):
                    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except OSError:
        pass
    return False


def part_startup_signal():
    with it.WorkDir("startsig") as wd:
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")])
        with open(conf) as f:
            text = f.read()
        with open(conf, "w") as f:
            f.write(SLOW_CONFIG_HEAD + text)
        done = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Catch lugger with the signal blocked (while its config
            # loads); on a loaded machine the poll may miss the window, so
            # a few tries.
            for attempt in range(5):
                lug = it.Lugger(conf)
                try:
                    caught = False
                    while lug.alive() and not lug.has_started():
                        if sig_blocked(lug.pid, sig):
                            caught = True
                            break
                        time.sleep(0.001)
                    if caught:
                        lug.proc.send_signal(sig)
                        rc = lug.wait(30)
                        lug.check_sanitizers()
                        it.check(rc == 0, "%s during start-up: exit %r, "
                                 "not 0\n%s" % (sig.name, rc,
                                                lug.stderr_tail()))
                        it.check(any(sig.name + ": stopping" in
                                     str(r.get("msg", ""))
                                     for r in lug.log_records()),
                                 "%s during start-up: no clean stop in the "
                                 "log\n%s" % (sig.name, lug.stderr_tail()))
                        done.append("%s (try %d)" % (sig.name, attempt + 1))
                        break
                    lug.stop(signal.SIGTERM)
                finally:
                    lug.kill9()
            else:
                it.fail("never saw lugger with %s blocked while it loads "
                        "its config (5 tries): one sent then takes the "
                        "default action and kills it" % sig.name)
        return "signals during config load: %s held until the engine " \
            "started, then exit 0" % ", ".join(done)


def run():
    it.require_binary()
    parts = [part_signals(), part_once(), part_blocked_shutdown(),
             part_dead_letter(), part_startup_signal()]
    return "; ".join(parts)


if __name__ == "__main__":
    it.main("signals", run)
