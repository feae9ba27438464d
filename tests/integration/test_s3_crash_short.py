#!/usr/bin/env python3
"""The s3 output: a request in flight at a kill -9 whose records were read
while their file was shorter than 1 KiB, made again after the restart
without waiting, once the file has grown past 1 KiB.

A file's fingerprint (part of every record id) is the hash of its first
KiB, or of all of it while it is shorter: records read then have ids under
a shorter fingerprint than the same records read again after the file
grew. The request journal names records by those ids.

1. b.log gets 5 lines (500 bytes); their request R is held by the S3
   stand-in (never answered), journaled under the 500-byte fingerprint.
2. kill -9; b.log grows to 25 lines (2,500 bytes) while lugger is down.
3. Restart: b.log is read again from 0 under its 1 KiB fingerprint. R must
   be made again from its 5 records, under the key it was journaled with:
   had its PUT landed before the kill (an answer lost), that object is
   overwritten, not joined by a second copy of its lines. Without knowing
   that R's old fingerprint is the hash of b.log's first 500 bytes, R
   waited 30 s for records that come under another id, then was dropped,
   and its records went into a new object under a new key.
Checked: b.log's checkpoint reaches its end within 20 s of the restart, R
made again whole (5 records) under its journaled key, nothing given up,
every line in exactly one object.
"""

import os

import lugger_it as it
from test_s3_crash import object_bodies
from test_s3_crash_rotated import (S3Case, append, check_once, check_rebuilt,
                                   entry, journal, lines, s3_output, LINE_LEN)


def main():
    it.require_binary()
    with S3Case("s3short") as k:
        wd, peers = k.wd, k.peers
        conf = it.simple_config(wd, [os.path.join(wd.logs, "*.log")],
                                output=s3_output(peers))
        b = os.path.join(wd.logs, "b.log")
        append(b, lines(1, 0, 5))
        peers.hold(1)
        k.lug = lug = it.Lugger(conf)
        lug.wait_started()
        it.wait_for(lambda: peers.counts()["held"] == 1, 30,
                    "the stand-in to hold b.log's request", proc=lug)
        reqs = journal(wd.state)
        it.check(len(reqs) == 1 and reqs[0]["runs"][0][3] == 5,
                 "R not journaled with b.log's 5 records: %r" % reqs)
        lug.kill9()
        old_fp = reqs[0]["runs"][0][0]
        r_key = reqs[0]["note"].split("\t")[2]
        append(b, lines(1, 5, 20))
        size = os.path.getsize(b)
        idb = (os.stat(b).st_dev, os.stat(b).st_ino)
        k.lug = lug = it.Lugger(conf)
        lug.wait_started()

        def b_acked():
            e = entry(wd.state, idb)
            return e is not None and e["offset"] == size

        it.wait_for(b_acked, 20, "b.log's checkpoint at its end after the "
                    "restart", proc=lug, detail=lug.stderr_tail)
        it.check(entry(wd.state, idb)["fingerprint"] != old_fp,
                 "b.log's fingerprint did not grow")
        lug.stop()
        check_rebuilt(lug, 5, False)
        first5 = set(it.make_line(1, s, LINE_LEN)[:-1].decode()
                     for s in range(5))
        keys = [key for key, _ in peers.list()]
        it.check(r_key in keys and
                 set(object_bodies(peers.get(r_key)[0])) == first5,
                 "b.log's first 5 lines not in R's object %s (objects: %r)"
                 % (r_key, keys))
        check_once(peers, set(it.make_line(1, s, LINE_LEN)[:-1].decode()
                              for s in range(25)))
        return ("R (5 records under a 500-byte fingerprint) made again "
                "after b.log grew to %d bytes; every line once" % size)


if __name__ == "__main__":
    it.main("test_s3_crash_short", main)
