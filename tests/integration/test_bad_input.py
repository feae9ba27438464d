#!/usr/bin/env python3
"""Bad input: one lugger, run as an unprivileged user (uid/gid 65534, so
file permissions apply), over a directory of awkward files:

  good.log        plain lines, before and after the errors below
  binary.log      random bytes (every value but LF) per line
  utf8.log        NUL bytes, valid multi-byte UTF-8, and invalid UTF-8
                  (overlong forms, encoded surrogates, code points over
                  U+10FFFF, lone continuation bytes, truncated sequences):
                  the output must stay valid UTF-8 JSON, invalid bytes
                  becoming U+FFFD and every valid character kept
  big.log         one 50 MiB line (written after the start): with the
                  default max_record_bytes (1 MiB) it becomes records of at
                  most 1 MiB, each flagged "lugger.truncated": true, whose
                  bodies concatenated equal the line; RSS stays bounded
  empty.log       empty at the start, one line appended later
  deleted.log     30 MB, deleted as soon as its first record is out: lugger
                  drains it through its fd (every line arrives), then
                  closes the fd
  dir.log/        a directory whose name matches the glob
  unreadable.log  mode 0600, owned by root: a clear error on stderr naming
                  the file, and the collector keeps going; made readable
                  later, its lines arrive (lugger retries it)
"""

import os
import random
import signal
import threading
import time

import lugger_it as it

LINE_LEN = 100
GOOD = 2000
DELETED = 300_000
BIG = 50 * it.MiB
MAX_RECORD = it.MiB

UTF8_LINES = [
    # (raw line without LF, valid UTF-8?)
    (b"nul \x00 in \x00\x00 the middle", True),
    (b"\x00", True),
    (b"caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e \xe4\xb8\xad\xe6\x96\x87", True),
    (b"ctl \x01\x02\x1b[31m \x7f tab\there", True),
    (b"quote \" backslash \\ slash /", True),
    (b"overlong \xc0\xaf and \xe0\x80\xaf", False),
    (b"surrogate \xed\xa0\x80 \xed\xbf\xbf", False),
    (b"too big \xf4\x90\x80\x80 \xf5\x80", False),
    (b"lone continuation \x80 \xbf end", False),
    (b"truncated \xe2\x82 then ascii", False),
    (b"bad bytes \xfe\xff\xc1", False),
    (b"ends in a truncated sequence \xf0\x9f\x98", False),
    (b"\xff", False),
    (b"mixed \xc3\xa9\xc3 \xe2\x82\xac\xe2\x82", False),
]


def check_body(raw, body, where):
    """`body` (decoded JSON string) must be `raw` with invalid UTF-8 bytes
    replaced by U+FFFD: the valid characters all kept, in order, and one
    U+FFFD per maximal invalid subpart up to one per invalid byte."""
    ref = raw.decode("utf-8", "replace")
    if body == ref:
        return True
    it.check(body.replace("\ufffd", "") == ref.replace("\ufffd", ""),
             "%s: body %r does not keep the valid characters of %r "
             "(expected %r)" % (where, body, raw, ref))
    valid_bytes = len(ref.replace("\ufffd", "").encode("utf-8"))
    invalid = len(raw) - valid_bytes
    n = body.count("\ufffd")
    it.check(ref.count("\ufffd") <= n <= invalid,
             "%s: %d U+FFFD in %r for %d invalid bytes in %r" % (
                 where, n, body, invalid, raw))
    return False


def random_lines(rng, n):
    out = []
    for _ in range(n):
        k = rng.randint(1, 300)
        b = bytearray(rng.randrange(256) for _ in range(k))
        for i, c in enumerate(b):
            if c == 0x0A:
                b[i] = 0x0B
        if b[-1] == 0x0D:  # a CR before LF is removed by the framer
            b[-1] = 0x0C
        out.append(bytes(b))
    return out


def big_chunk(i):
    """Chunk i (1 MiB) of the 50 MiB line: distinct per chunk, no LF."""
    head = ("<chunk %05d>" % i).encode()
    body = bytes(range(0x20, 0x7f)) * (it.MiB // 95 + 1)
    return (head + body)[:it.MiB]


def run():
    it.require_binary()
    seed = int(os.environ.get("LUGGER_IT_SEED", time.time()))
    it.log("seed %d (set LUGGER_IT_SEED to repeat)" % seed)
    rng = random.Random(seed)
    rss_bound = it.rss_limit(96, 160)
    # Holding the whole 50 MiB line would grow RSS by at least that much.
    growth_bound = 32 * 1024
    with it.WorkDir("badinput") as wd:
        L = wd.logs
        good = os.path.join(L, "good.log")
        binary = os.path.join(L, "binary.log")
        utf8 = os.path.join(L, "utf8.log")
        big = os.path.join(L, "big.log")
        empty = os.path.join(L, "empty.log")
        deleted = os.path.join(L, "deleted.log")
        dirlog = os.path.join(L, "dir.log")
        unreadable = os.path.join(L, "unreadable.log")

        with open(good, "wb") as f:
            f.write(b"".join(it.make_line(0, s) for s in range(GOOD)))
        bin_lines = random_lines(rng, 300)
        with open(binary, "wb") as f:
            f.write(b"".join(x + b"\n" for x in bin_lines))
        with open(utf8, "wb") as f:
            f.write(b"".join(x + b"\n" for x, _ in UTF8_LINES))
        open(empty, "wb").close()
        with open(deleted, "wb") as f:
            for s0 in range(0, DELETED, 10_000):
                f.write(b"".join(it.make_line(1, s)
                                 for s in range(s0, s0 + 10_000)))
        os.mkdir(dirlog)
        with open(os.path.join(dirlog, "inner.log"), "wb") as f:
            f.write(b"inside a directory named like a log\n")
        with open(unreadable, "wb") as f:
            f.write(b"".join(it.make_line(9, s) for s in range(10)))
        os.chmod(unreadable, 0o600)

        outdir = wd.mk("out")
        out = os.path.join(outdir, "out.jsonl")
        conf = it.simple_config(wd, [os.path.join(L, "*.log")], out)
        wd.chown_tree(it.NOBODY, it.NOBODY, only=["state", "out"])
        check_exec = os.access(it.LUGGER, os.X_OK)
        it.check(check_exec, "binary not executable")

        by_path = {}
        lock = threading.Lock()

        def on_record(r):
            with lock:
                by_path.setdefault(r.get("log.file.path"), []).append(r)

        def count(p):
            with lock:
                return len(by_path.get(p, ()))

        follower = it.JsonlFollower(out, on_record=on_record)
        stop_follow = threading.Event()
        follow_err = []

        def follow():
            try:
                while not stop_follow.is_set():
                    if follower.poll() == 0:
                        time.sleep(0.02)
                while follower.poll():
                    pass
            except BaseException as e:
                follow_err.append(e)

        lug = it.Lugger(conf, user=it.NOBODY)
        sampler = it.RssSampler(lug.pid)
        ft = threading.Thread(target=follow, daemon=True)
        notes = []
        try:
            sampler.start()
            ft.start()
            it.wait_for(lambda: count(deleted) > 0 or follow_err, 30,
                        "the first record of deleted.log", proc=lug)
            os.unlink(deleted)
            at_unlink = count(deleted)
            notes.append("deleted.log unlinked after %d of %d records" % (
                at_unlink, DELETED))
            it.log(notes[-1])

            def first_wave():
                if follow_err:
                    raise follow_err[0]
                return (count(good) >= GOOD and
                        count(binary) >= len(bin_lines) and
                        count(utf8) >= len(UTF8_LINES))
            it.wait_for(first_wave, 60, "good, binary and utf8 lines",
                        proc=lug, detail=lambda: "good %d/%d binary %d/%d "
                        "utf8 %d/%d" % (count(good), GOOD, count(binary),
                                        len(bin_lines), count(utf8),
                                        len(UTF8_LINES)))

            def unreadable_error():
                for r in lug.log_records():
                    if unreadable in str(r.get("msg", "")) and \
                            r.get("level") in ("error", "warn"):
                        return r
                return None
            err = it.wait_for(unreadable_error, 15,
                              "a log line naming %s" % unreadable, proc=lug)
            notes.append("unreadable: %s %r" % (err.get("level"),
                                                err.get("msg")))
            it.log(notes[-1])

            # The collector keeps going: more lines, a line in the empty
            # file, the unreadable file made readable, and a 50 MiB line in
            # a new file.
            os.chmod(unreadable, 0o644)
            with open(good, "ab") as f:
                f.write(b"".join(it.make_line(0, s)
                                 for s in range(GOOD, 2 * GOOD)))
            with open(empty, "ab") as f:
                f.write(b"late line in empty.log\n")
            time.sleep(0.5)
            rss_before_big = lug.rss_kib() or 0
            t_big = time.monotonic()
            with open(big, "wb") as f:
                for i in range(BIG // it.MiB):
                    f.write(big_chunk(i))
                f.write(b"\nafter the big line\n")

            def big_done():
                if follow_err:
                    raise follow_err[0]
                with lock:
                    recs = by_path.get(big, [])
                    return recs and recs[-1].get("body") == \
                        "after the big line"
            it.wait_for(big_done, 180, "the records of the 50 MiB line",
                        proc=lug, interval=0.2,
                        detail=lambda: "%d records of big.log" % count(big))
            big_samples = [r for (ts, r) in sampler.samples if ts >= t_big]
            rss_big = max(big_samples) if big_samples else 0
            it.wait_for(lambda: count(deleted) >= DELETED and
                        count(good) >= 2 * GOOD and count(empty) >= 1 and
                        count(unreadable) >= 10, 60,
                        "the rest of deleted.log, good.log, empty.log and "
                        "unreadable.log (now readable)",
                        proc=lug, detail=lambda: "deleted %d/%d good %d/%d "
                        "empty %d/1 unreadable %d/10" % (
                            count(deleted), DELETED, count(good), 2 * GOOD,
                            count(empty), count(unreadable)))

            def closed_deleted():
                return not any(x.startswith(deleted)
                               for x in lug.open_files())
            it.wait_for(closed_deleted, 20, "lugger to close deleted.log "
                        "after draining it", proc=lug,
                        detail=lambda: repr([x for x in lug.open_files()
                                             if "deleted" in x]))
            time.sleep(1.0)
            lug.check_running()
            lug.stop(signal.SIGTERM)
        finally:
            stop_follow.set()
            sampler.stop()
            lug.kill9()
            ft.join(timeout=30)
            follower.close()
        if follow_err:
            raise follow_err[0]

        # The whole output again: every line complete, valid UTF-8 JSON.
        recs = it.read_jsonl(out)
        it.check(len(recs) == follower.count,
                 "output has %d lines, %d seen while following" % (
                     len(recs), follower.count))
        paths_seen = set(by_path)
        allowed = {good, binary, utf8, big, empty, deleted, unreadable}
        it.check(paths_seen <= allowed,
                 "records from unexpected files: %s" % sorted(
                     str(x) for x in paths_seen - allowed))

        # good.log and deleted.log: every line exactly once, in order.
        for p, fid, n in ((good, 0, 2 * GOOD), (deleted, 1, DELETED),
                          (unreadable, 9, 10)):
            tr = it.SeqTracker(expected_len=LINE_LEN)
            for r in by_path.get(p, []):
                tr.add(r)
            lost, dups, missing, extra = tr.summary({fid: n})
            it.check(lost == 0 and dups == 0 and extra == 0 and
                     not tr.order_errors and not tr.foreign,
                     "%s: %d lost (first %s), %d duplicated, %d extra, "
                     "order errors %s" % (p, lost, missing, dups, extra,
                                          tr.order_errors[:3]))

        # Binary and UTF-8 lines: one record each, in order, bodies with
        # invalid bytes replaced.
        exact = 0
        for p, lines in ((binary, bin_lines),
                         (utf8, [x for x, _ in UTF8_LINES])):
            got = by_path.get(p, [])
            it.check(len(got) == len(lines), "%s: %d records for %d lines"
                     % (p, len(got), len(lines)))
            for i, (raw, r) in enumerate(zip(lines, got)):
                exact += check_body(raw, r.get("body"),
                                    "%s line %d" % (p, i + 1))
        for (raw, valid), r in zip(UTF8_LINES, by_path.get(utf8, [])):
            if valid:
                it.check(r.get("body") == raw.decode("utf-8"),
                         "utf8.log: valid line %r came out as %r" % (
                             raw, r.get("body")))

        # empty.log: just the line appended later.
        bodies = [r.get("body") for r in by_path.get(empty, [])]
        it.check(bodies == ["late line in empty.log"],
                 "empty.log: expected the one late line, got %r" % bodies)

        # big.log: pieces of at most 1 MiB, flagged, equal to the line.
        brecs = by_path.get(big, [])
        it.check(brecs and brecs[-1].get("body") == "after the big line" and
                 not brecs[-1].get("lugger.truncated"),
                 "big.log: the line after the big one is missing or flagged")
        pieces = brecs[:-1]
        sizes = [len(r.get("body", "")) for r in pieces]
        it.check(pieces and all(0 < s <= MAX_RECORD for s in sizes),
                 "big.log: %d pieces, sizes %s (each must be 1..%d bytes)" %
                 (len(pieces), sorted(set(sizes))[:10], MAX_RECORD))
        unflagged = [i for i, r in enumerate(pieces)
                     if r.get("lugger.truncated") is not True]
        it.check(not unflagged, "big.log: pieces %s of %d are not flagged "
                 "\"lugger.truncated\": true" % (unflagged[:10], len(pieces)))
        joined = "".join(r["body"] for r in pieces).encode("ascii")
        expect = b"".join(big_chunk(i) for i in range(BIG // it.MiB))
        if joined != expect:
            i = next((k for k in range(min(len(joined), len(expect)))
                      if joined[k] != expect[k]), min(len(joined),
                                                      len(expect)))
            it.fail("big.log: the %d pieces joined (%d bytes) differ from "
                    "the %d-byte line at byte %d" % (
                        len(pieces), len(joined), len(expect), i))

        # RSS bounded, and the 50 MiB line did not need 50 MiB.
        it.check(rss_big - rss_before_big <= growth_bound,
                 "RSS grew by %d MiB while reading the 50 MiB line (from %d "
                 "to %d MiB; bound +%d MiB)" % (
                     (rss_big - rss_before_big) // 1024,
                     rss_before_big // 1024, rss_big // 1024,
                     growth_bound // 1024))
        it.check(sampler.max_kib <= rss_bound,
                 "max RSS %d MiB over the bound %d MiB%s (during the 50 MiB "
                 "line: %d MiB, before it %d MiB)" % (
                     sampler.max_kib // 1024, rss_bound // 1024,
                     " (ASan build)" if it.sanitized() else "",
                     rss_big // 1024, rss_before_big // 1024))
        return ("%d records, output valid UTF-8 JSON; 50 MiB line -> %d "
                "flagged pieces, joined equal; %d binary + %d UTF-8 lines "
                "checked (%d replaced exactly as Python's maximal-subpart "
                "U+FFFD rule); %s; %s; max RSS %d MiB (%d MiB before the big "
                "line, %d MiB during it; bound %d%s)" % (
                    len(recs), len(pieces), len(bin_lines), len(UTF8_LINES),
                    exact,
                    notes[0], notes[1], sampler.max_kib // 1024,
                    rss_before_big // 1024, rss_big // 1024,
                    rss_bound // 1024, ", ASan" if it.sanitized() else ""))


if __name__ == "__main__":
    it.main("bad_input", run)
