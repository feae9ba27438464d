#!/usr/bin/env python3
"""The kafka output against a real Apache Kafka 0.9.0.1 broker (and its
ZooKeeper) that this script starts on free loopback ports, once for every
scenario; the JVMs are killed at the end whatever happens. Messages are
read back with kcat.

Scenarios (issue 4):
  bulk        200k records from 8 files -> each exactly once in the topic,
              in file order per key (key = the file's path, so one key is
              one partition); checkpoints at the end of every file.
  topic_field a script sets `topic` on 2/3 of the records -> each record in
              the topic it named, the others in the static topic; with
              idempotence and headers at their defaults (on): the 0.9
              broker refuses idempotence, lugger warns and goes on
              without it, librdkafka drops the headers.
  kill9       lugger killed with SIGKILL twice while writers append, then
              restarted -> every record at least once; the duplicates are
              counted and bounded by what was delivered past the checkpoint
              at each kill.
  broker_down the broker stopped for 20 s while writers append, then
              restarted -> no loss; the checkpoint does not move while the
              broker is down; RSS stays within settings.memory_budget plus
              lugger's idle RSS plus a fixed allowance (KAFKA_OVERHEAD_MIB,
              librdkafka's per-message bookkeeping and buffers).
  dead_letter a record over message.max.bytes -> the dead-letter file in
              state_dir holds it, the log names MSG_SIZE_TOO_LARGE, the
              other records reach the topic.
  daemonset   examples/kafka: nginx access (stdout) and error (stderr)
              lines in CRI files under a kubelet-style /var/log/pods tree,
              parsed by examples/kafka/nginx_cri.lua -> topics access-log
              and error-log, every field of every record checked.

Prints one line of numbers per scenario.
"""

import json
import os
import shutil
import signal
import time

import kafka_broker as kb
import lugger_it as it

LINE_LEN = 100
# Every test line ends in LF: no partial line is ever waited for.
SOURCE = {"flush_timeout": "1h"}
# librdkafka keeps ~0.5 KiB of bookkeeping per queued message beyond the
# payload (which stays in lugger's chunk, counted in the budget), plus its
# buffers and threads; this is the allowance on top of memory_budget and
# the idle RSS.
KAFKA_OVERHEAD_MIB = 24


class workdir(it.WorkDir):
    """A WorkDir whose exit first kills the lugger processes still running
    (a failed check leaves them), so none writes into it after cleanup."""

    def __exit__(self, *a):
        it._kill_all()
        return super().__exit__(*a)


def kafka_output(b, topic, **kw):
    out = {"type": "kafka", "brokers": b.addr, "topic": topic,
           "linger": "5ms"}
    out.update(kb.LUGGER_OPTS)
    out.update(kw)
    return out


def write_lines(path, fid, n, start=0):
    with open(path, "ab") as f:
        for s in range(start, start + n, 10000):
            f.write(b"".join(it.make_line(fid, q, LINE_LEN)
                             for q in range(s, min(start + n, s + 10000))))


def track(msgs, check_keys=True):
    """SeqTracker over consumed messages; checks each key sits in one
    partition and equals the record's log.file.path."""
    tr = it.SeqTracker(expected_len=LINE_LEN)
    part_of = {}
    for p, o, k, v in msgs:
        rec = it.parse_json_line(v.encode(), "partition %d offset %d" % (p, o))
        if check_keys:
            it.check(k == rec.get("log.file.path"),
                     "key %r is not the record's log.file.path %r" % (
                         k, rec.get("log.file.path")))
            it.check(part_of.setdefault(k, p) == p,
                     "key %s in partitions %d and %d" % (k, part_of[k], p))
        tr.add(rec)
    return tr


def scenario_bulk(b):
    with workdir("kafka-bulk") as wd:
        nfiles, per = 8, 25000
        paths = [os.path.join(wd.logs, "app-%d.log" % i) for i in range(nfiles)]
        for i, p in enumerate(paths):
            write_lines(p, i, per)
        conf = it.simple_config(
            wd, [os.path.join(wd.logs, "*.log")],
            # A budget far below the input: reading pauses again and again
            # while records wait for Kafka's acks.
            settings={"memory_budget": "8MiB"},
            source=SOURCE, output=kafka_output(b, "bulk", key="field:log.file.path",
                                compression="lz4"))
        t0 = time.monotonic()
        lg = it.Lugger(conf, once=True)
        rc = lg.wait(180)
        took = time.monotonic() - t0
        it.check(rc == 0, "lugger --once exited %r\n%s" % (rc, lg.stderr_tail()))
        lg.check_sanitizers()
        cp = it.checkpoint_offsets(wd.state)
        for p in paths:
            it.check(cp.get(p) == per * LINE_LEN,
                     "checkpoint of %s is %r, not %d" % (p, cp.get(p), per * LINE_LEN))
        msgs = b.consume("bulk")
        tr = track(msgs)
        lost, dups, ex, extra = tr.summary({i: per for i in range(nfiles)})
        it.check(lost == 0, "bulk: %d records lost, e.g. %r" % (lost, ex))
        it.check(dups == 0, "bulk: %d duplicates" % dups)
        it.check(not tr.order_errors, "bulk: out of order per key: %r" % tr.order_errors[:5])
        it.check(len(msgs) == nfiles * per,
                 "bulk: %d messages for %d records" % (len(msgs), nfiles * per))
        parts = len(set(p for p, _, _, _ in msgs))
        return ("bulk: %d records in %.1f s (%.0f/s, %d partitions), 0 lost, "
                "0 dup, in order per key" % (
                    nfiles * per, took, nfiles * per / took, parts))


TOPIC_SCRIPT = """
function process(rec)
  local seq = tonumber(rec.body:match("^f%d+ s(%d+)"))
  if seq % 3 == 0 then return end
  rec.topic = (seq % 2 == 0) and "tf-even" or "tf-odd"
end
"""


def scenario_topic_field(b):
    with workdir("kafka-topic") as wd:
        n = 3000
        p = os.path.join(wd.logs, "t.log")
        write_lines(p, 0, n)
        conf = it.simple_config(
            wd, [p], scripts=["topic.lua"], script_files={"topic.lua": TOPIC_SCRIPT},
            # idempotence and headers left at their defaults: the 0.9
            # broker refuses idempotence, and lugger goes on without it.
            source=SOURCE,
            output={"type": "kafka", "brokers": b.addr, "topic": "tf-default",
                    "topic_field": "topic", "librdkafka": kb.LEGACY})
        lg = it.Lugger(conf, once=True)
        rc = lg.wait(60)
        it.check(rc == 0, "lugger --once exited %r\n%s" % (rc, lg.stderr_tail()))
        it.check("producing without idempotence" in lg.stderr_text(),
                 "no warning about idempotence on a 0.9 broker\n" + lg.stderr_tail())
        counts = {}
        for topic in ("tf-even", "tf-odd", "tf-default"):
            seqs = []
            for _, _, _, v in b.consume(topic):
                rec = json.loads(v)
                seq = it.parse_line(rec["body"])[1]
                want = "tf-default" if seq % 3 == 0 else \
                    ("tf-even" if seq % 2 == 0 else "tf-odd")
                it.check(want == topic, "record %d in %s, not %s" % (seq, topic, want))
                it.check(rec.get("topic", "tf-default") == topic,
                         "record %d names topic %r" % (seq, rec.get("topic")))
                seqs.append(seq)
            it.check(len(seqs) == len(set(seqs)), "%s: duplicates" % topic)
            counts[topic] = len(seqs)
        it.check(sum(counts.values()) == n, "topic_field: %r, want %d in all" % (counts, n))
        return "topic_field: %d records -> %s" % (
            n, ", ".join("%s %d" % kv for kv in sorted(counts.items())))


def in_flight_at_kill(b, topic, state, paths):
    """Records in the topic at or after the checkpoint of their file:
    delivered but not checkpointed, so read (and sent) again."""
    cp = it.checkpoint_offsets(state)
    n = 0
    for _, _, _, v in b.consume(topic):
        rec = json.loads(v)
        fid, seq = it.parse_line(rec["body"])
        if seq * LINE_LEN >= cp.get(paths[fid], 0):
            n += 1
    return n


def wait_running(lg):
    """Waits for lugger's "running" log line: a SIGTERM before its signal
    handlers are in place would end it with the default action."""
    it.wait_for(lambda: " running: " in lg.stderr_text(), 30,
                "lugger to be running", proc=lg)


def finish_writer(writer, per):
    """Waits until the writer has written all its lines (stop() would cut
    it short)."""
    writer.join(120)
    it.check(not writer.is_alive(), "the writer did not finish")
    if writer.error:
        raise writer.error
    it.check(all(n == per for n in writer.written.values()),
             "writer wrote %r, want %d per file" % (writer.written, per))


def wait_checkpointed(wd, paths, sizes, lg, timeout):
    it.wait_for(lambda: all(it.checkpoint_offsets(wd.state).get(p) == sizes[i]
                            for i, p in enumerate(paths)),
                timeout, "checkpoints at the end of every file", proc=lg,
                detail=lambda: "%r vs %r" % (it.checkpoint_offsets(wd.state), sizes))


def scenario_kill9(b):
    with workdir("kafka-kill") as wd:
        nfiles, rate, per = 2, 10000, 40000
        paths = [os.path.join(wd.logs, "app-%d.log" % i) for i in range(nfiles)]
        for p in paths:
            open(p, "wb").close()
        conf = it.simple_config(
            wd, [os.path.join(wd.logs, "*.log")],
            source=SOURCE, output=kafka_output(b, "kill", key="field:log.file.path"))
        writer = it.PacedWriter(paths, rate, LINE_LEN, lines_per_file=per)
        writer.start()
        lg = it.Lugger(conf)
        in_flight = []
        done = 0
        for _ in range(2):
            # Mid-stream: after this run has delivered (checkpointed) some.
            it.wait_for(lambda: sum(it.checkpoint_offsets(wd.state).values()) > done,
                        30, "a checkpoint move", proc=lg)
            time.sleep(0.4)
            lg.check_running()
            done = sum(it.checkpoint_offsets(wd.state).values())
            lg.kill9()
            in_flight.append(in_flight_at_kill(b, "kill", wd.state, paths))
            lg = it.Lugger(conf)
        finish_writer(writer, per)
        wait_checkpointed(wd, paths, [per * LINE_LEN] * nfiles, lg, 120)
        wait_running(lg)
        lg.stop()
        tr = track(b.consume("kill"))
        lost, dups, ex, extra = tr.summary({i: per for i in range(nfiles)})
        it.check(lost == 0, "kill9: %d records lost, e.g. %r" % (lost, ex))
        it.check(dups <= sum(in_flight),
                 "kill9: %d duplicates, more than the %d delivered past the "
                 "checkpoints at the kills" % (dups, sum(in_flight)))
        return ("kill9: %d records, 2 kills, %d duplicates (bound %d = %s "
                "delivered past the checkpoint at each kill), 0 lost" % (
                    nfiles * per, dups, sum(in_flight), "+".join(map(str, in_flight))))


def scenario_broker_down(b):
    with workdir("kafka-down") as wd:
        nfiles, rate, seconds, down_s = 2, 5000, 32, 20
        per = rate * seconds // nfiles
        budget_mib = 8
        paths = [os.path.join(wd.logs, "app-%d.log" % i) for i in range(nfiles)]
        for p in paths:
            open(p, "wb").close()
        conf = it.simple_config(
            wd, [os.path.join(wd.logs, "*.log")],
            settings={"memory_budget": "%dMiB" % budget_mib},
            source=SOURCE, output=kafka_output(b, "down", key="field:log.file.path"))
        lg = it.Lugger(conf)
        time.sleep(1.0)
        idle_kib = lg.rss_kib()
        rss = it.RssSampler(lg.pid, interval=0.1)
        rss.start()
        writer = it.PacedWriter(paths, rate, LINE_LEN, lines_per_file=per)
        writer.start()
        time.sleep(5)
        lg.check_running()
        t_down = time.monotonic()
        b.stop_kafka()
        it.log("broker stopped")
        # Acks of requests the broker answered before it stopped may still
        # land; after that nothing may move.
        time.sleep(2)
        cp0 = it.checkpoint_offsets(wd.state)
        moved = []

        def behind():
            # Bytes written but not checkpointed, per file exactly.
            return sum(writer.written[i] * LINE_LEN - cp0.get(p, 0)
                       for i, p in enumerate(paths))
        # Down for down_s at least, and until the writers have put more
        # than the budget behind the checkpoint (a loaded machine writes
        # slower than `rate`): the outage must fill the budget.
        while time.monotonic() - t_down < down_s or \
                behind() <= budget_mib * it.MiB * 1.25:
            if time.monotonic() - t_down > down_s + 90 or \
                    sum(writer.written.values()) >= per * nfiles:
                break
            time.sleep(0.5)
            cp = it.checkpoint_offsets(wd.state)
            if cp != cp0:
                moved.append(cp)
        written_at_restart = dict(writer.written)
        b.start_kafka()
        down_took = time.monotonic() - t_down
        it.log("broker back after %.1f s" % down_took)
        finish_writer(writer, per)
        wait_checkpointed(wd, paths, [per * LINE_LEN] * nfiles, lg, 120)
        lg.stop()
        rss.stop()
        it.check(not moved, "checkpoint moved while the broker was down: %r -> %r" % (
            cp0, moved[0] if moved else None))
        behind = sum(written_at_restart[i] * LINE_LEN - cp0.get(p, 0)
                     for i, p in enumerate(paths))
        it.check(behind > budget_mib * it.MiB,
                 "only %d bytes were waiting when the broker came back (the "
                 "outage did not fill the budget)" % behind)
        limit_kib = idle_kib + (budget_mib + KAFKA_OVERHEAD_MIB) * 1024
        if it.sanitized():
            limit_kib = idle_kib + (budget_mib * 3 + KAFKA_OVERHEAD_MIB * 3) * 1024
        it.check(rss.max_kib <= limit_kib,
                 "RSS reached %d KiB, over %d KiB (idle %d KiB + budget %d MiB + %d MiB)" % (
                     rss.max_kib, limit_kib, idle_kib, budget_mib, KAFKA_OVERHEAD_MIB))
        tr = track(b.consume("down"))
        lost, dups, ex, extra = tr.summary({i: per for i in range(nfiles)})
        it.check(lost == 0, "broker_down: %d records lost, e.g. %r" % (lost, ex))
        return ("broker_down: %d records, broker down %.1f s, checkpoint still "
                "for %.0f s (%.1f MB waiting at restart), 0 lost, %d duplicates, "
                "max RSS %.1f MiB (idle %.1f MiB, budget %d MiB, limit %.1f MiB)" % (
                    nfiles * per, down_took, down_took - 2, behind / 1e6, dups,
                    rss.max_kib / 1024, idle_kib / 1024, budget_mib, limit_kib / 1024))


def scenario_dead_letter(b):
    with workdir("kafka-dl") as wd:
        p = os.path.join(wd.logs, "dl.log")
        with open(p, "wb") as f:
            f.write(b"small 1\nsmall 2\n" + b"x" * 5000 + b"\nsmall 4\n")
        opts = dict(kb.LEGACY)
        opts["message.max.bytes"] = "3000"
        conf = it.simple_config(wd, [p], output=kafka_output(
            b, "dl", librdkafka=opts))
        lg = it.Lugger(conf, once=True)
        rc = lg.wait(60)
        it.check(rc == 0, "lugger --once exited %r\n%s" % (rc, lg.stderr_tail()))
        dl = os.path.join(wd.state, "dead-letter.jsonl")
        it.check(os.path.exists(dl), "no %s\n%s" % (dl, lg.stderr_tail()))
        dead = it.read_jsonl(dl)
        bodies = [r.get("body") for r in dead]
        it.check("x" * 5000 in bodies, "dead-letter lacks the big record: %r" % [
            (x or "")[:20] for x in bodies])
        # Only the rejected record goes there, not its neighbours.
        it.check(len(dead) == 1, "dead-letter holds %d records, want 1: %r" % (
            len(dead), [(x or "")[:20] for x in bodies]))
        for r in dead:  # each says why it is there
            why = r.get("lugger.error") or ""
            it.check(why.startswith("output out rejected the records for good"),
                     "dead-letter record without the output's error: %r" % r)
        it.check("MSG_SIZE_TOO_LARGE" in lg.stderr_text(),
                 "the log does not name MSG_SIZE_TOO_LARGE\n" + lg.stderr_tail())
        got = [json.loads(v)["body"] for _, _, _, v in b.consume("dl")]
        for s in ("small 1", "small 2", "small 4"):
            it.check(s in got, "%r not in the topic: %r" % (s, got))
        it.check(it.checkpoint_offsets(wd.state).get(p) == os.path.getsize(p),
                 "checkpoint not at the end after dead-lettering")
        return "dead_letter: 1 record over message.max.bytes -> dead-letter (%d record(s): only the rejected one), %d in the topic" % (
            len(bodies), len(got))


def run():
    it.require_binary()
    only = os.environ.get("LUGGER_KAFKA_SCENARIOS")
    with it.WorkDir("kafka-broker") as wd:
        b = kb.Broker(wd.p("kafka"))
        try:
            try:
                took = b.start()
            except kb.BrokerError as e:
                it.fail(str(e))
            it.log("Kafka 0.9.0.1 at %s (up in %.1f s)" % (b.addr, took))
            out = []
            for name, fn in (("bulk", scenario_bulk),
                             ("topic_field", scenario_topic_field),
                             ("dead_letter", scenario_dead_letter),
                             ("daemonset", scenario_daemonset),
                             ("kill9", scenario_kill9),
                             ("broker_down", scenario_broker_down)):
                if only and name not in only.split(","):
                    continue
                t0 = time.monotonic()
                line = fn(b)
                it.log("%s (%.1f s)" % (line, time.monotonic() - t0))
                print(line)
            return "ok"
        finally:
            b.kill()


def scenario_daemonset(b):
    import kafka_daemonset
    return kafka_daemonset.run(b)


if __name__ == "__main__":
    it.main("test_kafka_broker", run)
