#!/usr/bin/env python3
"""The kafka output with a finite `message.timeout.ms` against a real Apache
Kafka 0.9.0.1 broker (and its ZooKeeper) that this script starts on free
loopback ports (kafka_broker.py); messages are read back with kcat.

While the broker does not answer, librdkafka's timeout scan fails the
records that waited longer than message.timeout.ms (2 s here), and only
those: the newer ones are still queued when the broker is back. Before the
fix those went out at once, ahead of the older records lugger produces
again, so a partition held a file's lines out of order.

Scenarios (two files, key = the file's path, so one file is one
partition; writers append all along):
  sigstop   the broker paused with SIGSTOP for 7 s (its connections stay
            open: requests in flight time out, and those it had read
            before the pause may still be written when it resumes), then
            SIGCONT;
  restart   the broker stopped (SIGTERM) for 7 s, then started again.
Each: every line reaches the topic, and per file the first copy of every
line comes in file order; duplicates are counted (requests the broker
wrote while lugger had given up on them: produced again).

Prints one line of numbers per scenario.
"""

import os
import signal
import subprocess
import time

import kafka_broker as kb
import lugger_it as it

LINE_LEN = 100
TIMEOUT_MS = 2000
DOWN_S = 7
RATE = 3000  # lines/s over both files
SOURCE = {"flush_timeout": "1h"}


class workdir(it.WorkDir):
    def __exit__(self, *a):
        it._kill_all()
        return super().__exit__(*a)


def kafka_output(b, topic):
    rk = dict(kb.LEGACY)
    rk["message.timeout.ms"] = str(TIMEOUT_MS)
    out = {"type": "kafka", "brokers": b.addr, "topic": topic,
           "key": "field:log.file.path", "linger": "5ms"}
    out.update(kb.LUGGER_OPTS)
    out["librdkafka"] = rk
    return out


def has_leaders(b, topic):
    r = subprocess.run(b.kcat_base() + ["-L", "-t", topic, "-m", "5"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = r.stdout.decode(errors="replace")
    return r.returncode == 0 and out.count("leader 0") == b.partitions


def metric(port, name):
    try:
        return it.metric_sum(port, name)
    except OSError:
        return None


def scenario(b, name, pause, resume):
    with workdir("kafka-tmo-" + name) as wd:
        nfiles, seconds = 2, 16
        per = RATE * seconds // nfiles
        paths = [os.path.join(wd.logs, "app-%d.log" % i) for i in range(nfiles)]
        for p in paths:
            open(p, "wb").close()
        port = it.free_port()
        conf = it.simple_config(
            wd, [os.path.join(wd.logs, "*.log")],
            settings={"memory_budget": "64MiB",
                      "http": "127.0.0.1:%d" % port},
            source=SOURCE, output=kafka_output(b, "order-" + name))
        topic = "order-" + name
        # Created and led before lugger starts: an auto-created topic has
        # no leader for a while, which times records out too.
        b.create_topic(topic)
        it.wait_for(lambda: b.consume(topic, timeout=10, missing_ok=True) == []
                    and has_leaders(b, topic), 60, "topic %s to have leaders" % topic)
        lg = it.Lugger(conf)
        writer = it.PacedWriter(paths, RATE, LINE_LEN, lines_per_file=per)
        writer.start()
        time.sleep(3)
        lg.check_running()
        pause()
        t0 = time.monotonic()
        it.log("%s: broker paused" % name)
        time.sleep(DOWN_S)
        timed_out = metric(port, "lugger_kafka_errors_total")
        backlog = dict(writer.written)
        resume()
        t_back = time.monotonic()
        it.log("%s: broker back after %.1f s" % (name, t_back - t0))
        # How long until what was written while it was away is delivered.
        it.wait_for(lambda: all(it.checkpoint_offsets(wd.state).get(p, 0) >=
                                backlog[i] * LINE_LEN
                                for i, p in enumerate(paths)),
                    180, "the backlog delivered", proc=lg,
                    interval=0.1)
        caught_up = time.monotonic() - t_back
        writer.join(120)
        it.check(not writer.is_alive(), "the writer did not finish")
        it.check(all(n == per for n in writer.written.values()),
                 "writer wrote %r" % writer.written)
        it.wait_for(lambda: all(it.checkpoint_offsets(wd.state).get(p) ==
                                per * LINE_LEN for p in paths),
                    180, "checkpoints at the end of every file", proc=lg,
                    detail=lambda: repr(it.checkpoint_offsets(wd.state)))
        retries = metric(port, "lugger_kafka_retries_total")
        lg.stop()
        lg.check_sanitizers()
        log = lg.stderr_text()
        it.check("_MSG_TIMED_OUT" in log,
                 "%s: no record timed out (the case is not reached)\n%s" % (
                     name, lg.stderr_tail()))
        tr = it.SeqTracker(expected_len=LINE_LEN)
        part_of = {}
        for p, o, k, v in b.consume("order-" + name):
            rec = it.parse_json_line(v.encode(), "partition %d offset %d" % (p, o))
            it.check(part_of.setdefault(k, p) == p,
                     "key %s in partitions %d and %d" % (k, part_of[k], p))
            tr.add(rec)
        lost, dups, ex, extra = tr.summary({i: per for i in range(nfiles)})
        line = ("%s: %d lines, broker away %d s, message.timeout.ms %d: %d "
                "lost, %d first copies out of order, %d duplicates, backlog "
                "(%d lines) delivered %.1f s after the broker was back, "
                "errors %s, retries %s" % (
                    name, nfiles * per, DOWN_S, TIMEOUT_MS, lost,
                    len(tr.order_errors), dups, sum(backlog.values()),
                    caught_up, timed_out, retries))
        it.log(line)
        it.check(lost == 0, "%s: %d lines lost, e.g. %r" % (name, lost, ex))
        it.check(not tr.order_errors,
                 "%s: %d lines reached Kafka before earlier lines of their "
                 "file (file, last seen, then): %r" % (
                     name, len(tr.order_errors), tr.order_errors[:5]))
        return line


def run():
    it.require_binary()
    with it.WorkDir("kafka-tmo") as wd:
        b = kb.Broker(wd.p("kafka"))
        try:
            try:
                took = b.start()
            except kb.BrokerError as e:
                it.fail(str(e))
            it.log("Kafka 0.9.0.1 at %s (up in %.1f s)" % (b.addr, took))

            def stop():
                b.kafka.send_signal(signal.SIGSTOP)

            def cont():
                b.kafka.send_signal(signal.SIGCONT)
            only = os.environ.get("LUGGER_KAFKA_SCENARIOS")
            for name, pause, resume in (("sigstop", stop, cont),
                                        ("restart", b.stop_kafka,
                                         b.start_kafka)):
                if not only or name in only.split(","):
                    print(scenario(b, name, pause, resume))
            return "ok"
        finally:
            if b.kafka is not None and b.kafka.poll() is None:
                b.kafka.send_signal(signal.SIGCONT)
            b.kill()


if __name__ == "__main__":
    it.main("test_kafka_timeout_order", run)
