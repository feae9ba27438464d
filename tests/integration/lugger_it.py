"""Shared helpers for lugger's end-to-end integration tests.

Python 3 standard library only. Each test_*.py script imports this module
(it sits next to them) and runs real lugger processes on real files:

    LUGGER            path of the lugger binary (set by CTest); defaults to
                      build/lugger under LUGGER_SOURCE_DIR
    LUGGER_SOURCE_DIR the source tree (defaults to two levels up)

What is here: temp work dirs (under /dev/shm when it exists) that are always
removed, a writer of Lua config files from Python values, a Lugger process
wrapper that is always killed (try/finally, atexit, and PR_SET_PDEATHSIG so
it dies with the test even when the test is SIGKILLed by a CTest timeout),
incremental readers of JSON-lines output, RSS sampling from /proc, and the
bookkeeping of "line <file id> <sequence>" test lines: lost, duplicated and
out-of-order counts.
"""

import atexit
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

SOURCE_DIR = os.environ.get(
    "LUGGER_SOURCE_DIR",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
LUGGER = os.environ.get("LUGGER") or os.path.join(SOURCE_DIR, "build", "lugger")

MiB = 1024 * 1024

# Uid/gid of "nobody", used to run lugger unprivileged (root ignores file
# permissions, so an unreadable file needs a non-root collector).
NOBODY = 65534


class TestFailure(Exception):
    """A check failed; the message says what was expected and what came."""


class TestSkip(Exception):
    """The machine cannot run this test (not a failure of lugger)."""


def skip(msg):
    """Ends the test as skipped: exit 77, CTest's SKIP_RETURN_CODE."""
    raise TestSkip(msg)


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def log(msg):
    """Progress on stderr (CTest shows it on failure)."""
    sys.stderr.write("[%7.2f] %s\n" % (time.monotonic() - _T0, msg))
    sys.stderr.flush()


_T0 = time.monotonic()


def main(name, fn):
    """Runs `fn()` as a test script: exit 0 when it returns, 1 with the
    message when a check fails, 1 with a traceback on any other error. `fn`
    returns the one-line summary printed on success."""
    try:
        summary = fn()
    except TestSkip as e:
        print("%s: SKIP: %s" % (name, e))
        sys.stdout.flush()
        _kill_all()
        sys.exit(77)
    except TestFailure as e:
        print("%s: FAIL: %s" % (name, e))
        sys.stdout.flush()
        _kill_all()
        sys.exit(1)
    except BaseException:
        import traceback
        traceback.print_exc()
        print("%s: FAIL: unexpected exception (see traceback)" % name)
        sys.stdout.flush()
        _kill_all()
        sys.exit(1)
    print("%s: %s" % (name, summary))
    sys.stdout.flush()
    _kill_all()
    sys.exit(0)


def require_binary():
    check(os.path.isfile(LUGGER) and os.access(LUGGER, os.X_OK),
          "LUGGER=%s is not an executable file" % LUGGER)


_sanitized = None


def sanitized():
    """True if the binary is built with AddressSanitizer (the test build).
    Its allocator keeps shadow memory, so RSS limits are scaled for it."""
    global _sanitized
    if _sanitized is None:
        with open(LUGGER, "rb") as f:
            data = f.read()
        _sanitized = b"AddressSanitizer" in data
    return _sanitized


def rss_limit(release_mib, asan_mib):
    """An RSS limit in KiB for this binary's build."""
    return (asan_mib if sanitized() else release_mib) * 1024


# --------------------------------------------------------------------------
# Work directories


class WorkDir:
    """A temp dir with logs/ and state/ inside, removed on exit. Under
    /dev/shm (tmpfs) so large inputs cost no disk I/O."""

    def __init__(self, name, base=None):
        if base is None:
            base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.path = tempfile.mkdtemp(prefix="lugger-it-%s-" % name, dir=base)
        os.chmod(self.path, 0o755)
        self.logs = self.mk("logs")
        self.state = self.mk("state")

    def mk(self, *parts):
        p = os.path.join(self.path, *parts)
        os.makedirs(p, exist_ok=True)
        return p

    def p(self, *parts):
        return os.path.join(self.path, *parts)

    def chown_tree(self, uid, gid, only=None):
        """Gives the tree (or the listed sub-paths) to uid:gid."""
        paths = [self.p(x) for x in only] if only else [self.path]
        for top in paths:
            os.chown(top, uid, gid)
            for root, dirs, files in os.walk(top):
                for n in dirs + files:
                    os.chown(os.path.join(root, n), uid, gid,
                             follow_symlinks=False)

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        if os.environ.get("LUGGER_IT_KEEP"):
            log("keeping %s (LUGGER_IT_KEEP)" % self.path)
        else:
            self.cleanup()


# --------------------------------------------------------------------------
# Lua config files

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LUA_KEYWORDS = set("""and break do else elseif end false for function goto if
in local nil not or repeat return then true until while""".split())


def lua_str(s):
    out = ['"']
    for ch in s.encode("utf-8"):
        c = chr(ch)
        if c == '"' or c == "\\":
            out.append("\\" + c)
        elif 32 <= ch < 127:
            out.append(c)
        else:
            out.append("\\%03d" % ch)
    out.append('"')
    return "".join(out)


def lua_value(v, indent=""):
    """Python value -> Lua constructor text (dicts become tables with keys,
    lists become sequences)."""
    if v is None:
        return "nil"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return lua_str(v)
    inner = indent + "  "
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = []
        for k, x in v.items():
            key = k if (_IDENT.match(k) and k not in _LUA_KEYWORDS) \
                else "[%s]" % lua_str(k)
            items.append("%s%s = %s" % (inner, key, lua_value(x, inner)))
        return "{\n" + ",\n".join(items) + ",\n" + indent + "}"
    if isinstance(v, (list, tuple)):
        return "{ " + ", ".join(lua_value(x, inner) for x in v) + " }"
    raise TypeError("no Lua form for %r" % (v,))


def write_config(path, settings, sources, pipelines, outputs, scripts=None):
    """Writes a lugger config file (DESIGN.md "Configuration") and the
    given scripts ({file name: Lua text}) next to it. Returns `path`."""
    d = os.path.dirname(path)
    for name, text in (scripts or {}).items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    conf = {"settings": settings, "sources": sources,
            "pipelines": pipelines, "outputs": outputs}
    with open(path, "w") as f:
        f.write("-- written by tests/integration/lugger_it.py\n")
        f.write("return " + lua_value(conf) + "\n")
    return path


def parallel_pipelines():
    """True when LUGGER_IT_STATELESS=1: simple_config's pipeline is then
    stateless, so one file's batches run on every worker at once (the
    *_parallel tests run the order and crash tests that way)."""
    return os.environ.get("LUGGER_IT_STATELESS") == "1"


def simple_config(wd, paths, out_path=None, settings=None, source=None,
                  output=None, scripts=None, script_files=None,
                  name="lugger.lua", pipeline=None):
    """A config with one file source `app` (read_from head, format line),
    one pipeline `main` and one output `out` (a file at out_path by default,
    fsync never). `settings`, `source`, `output` and `pipeline` override
    defaults."""
    s = {"state_dir": wd.state, "memory_budget": "16MiB", "workers": 2,
         "checkpoint_interval": "200ms", "rescan_interval": "1s"}
    s.update(settings or {})
    src = {"type": "file", "paths": list(paths), "read_from": "head",
           "format": "line"}
    src.update(source or {})
    out = output if output is not None else \
        {"type": "file", "path": out_path or wd.p("out.jsonl"),
         "fsync": "never"}
    pipe = {"sources": ["app"], "outputs": ["out"]}
    if scripts:
        pipe["scripts"] = list(scripts)
    if parallel_pipelines():
        pipe["stateless"] = True
    pipe.update(pipeline or {})
    return write_config(wd.p(name), s, {"app": src}, {"main": pipe},
                        {"out": out}, scripts=script_files)


# --------------------------------------------------------------------------
# lugger processes

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_live = set()
_live_lock = threading.Lock()


def _kill_all():
    with _live_lock:
        procs = list(_live)
    for p in procs:
        p.kill9()


atexit.register(_kill_all)


def _on_term(signum, frame):
    _kill_all()
    os._exit(128 + signum)


# CTest stops a test that runs over its timeout; make sure lugger goes too.
signal.signal(signal.SIGTERM, _on_term)


def _child_setup(uid, gid):
    def setup():
        if uid is not None:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        # After the credential change: changing uids clears the parent-death
        # signal. lugger dies with the test process.
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return setup


def asan_env(extra=None):
    """Environment for lugger: sanitizer options that keep RSS honest
    (ASan's quarantine would otherwise hold up to 256 MiB of freed memory)
    while keeping leak detection and aborts on errors."""
    env = dict(os.environ)
    asan = env.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env["ASAN_OPTIONS"] = asan + ":quarantine_size_mb=8:malloc_context_size=8"
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    env.pop("LUGGER_STATE_DIR", None)
    env.update(extra or {})
    return env


class Lugger:
    """One `lugger run` process. stderr goes to a file (never a pipe that
    could fill and block lugger); stdout to a file, DEVNULL, or a pipe when
    `stdout=subprocess.PIPE` (the caller then owns reading it)."""

    def __init__(self, config, once=False, stdout=None, user=None,
                 stderr_path=None, env=None, args=None):
        self.config = config
        base = os.path.splitext(config)[0]
        self.stderr_path = stderr_path or base + ".stderr.%d" % _next_run()
        self._err = open(self.stderr_path, "wb")
        if user is not None:
            os.chown(self.stderr_path, user, user)
        cmd = [LUGGER, "run", "-c", config] + (["--once"] if once else []) \
            + list(args or [])
        if stdout is None:
            stdout = subprocess.DEVNULL
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdout=stdout, stderr=self._err, stdin=subprocess.DEVNULL,
            env=asan_env(env), preexec_fn=_child_setup(
                user, user if user is not None else None),
            close_fds=True)
        self.pid = self.proc.pid
        self.returncode = None
        with _live_lock:
            _live.add(self)
        log("started lugger pid %d (%s%s)" % (
            self.pid, os.path.basename(config), " --once" if once else ""))

    # -- state

    def alive(self):
        return self.proc.poll() is None

    def _reap(self, rc):
        self.returncode = rc
        with _live_lock:
            _live.discard(self)
        try:
            self._err.close()
        except Exception:
            pass

    def poll(self):
        rc = self.proc.poll()
        if rc is not None and self.returncode is None:
            self._reap(rc)
        return rc

    def wait(self, timeout):
        """Waits for exit; returns the exit code or None on timeout."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reap(rc)
        return rc

    # -- stopping

    def kill9(self):
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        self._reap(rc)
        return rc

    def stop(self, sig=signal.SIGTERM, timeout=20.0, expect_rc=0):
        """Sends `sig` and waits for the exit. Fails (after killing it) if
        lugger does not exit within `timeout` s or exits with another code
        than `expect_rc`. Returns the seconds the exit took.

        The signal goes only once lugger has logged that it runs (or has
        exited): before its `main` even starts (the dynamic loader, the
        sanitizer runtime) a SIGTERM kills it with the default action, as
        it would any program, and on a loaded machine that window is long
        enough to hit."""
        self.wait_started()
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.wait(timeout)
        took = time.monotonic() - t0
        if rc is None:
            self.kill9()
            fail("lugger pid %d did not exit within %.0f s of %s\n%s" % (
                self.pid, timeout, signal.Signals(sig).name,
                self.stderr_tail()))
        self.check_sanitizers()
        if expect_rc is not None and rc != expect_rc:
            fail("lugger pid %d exited %d after %s (expected %d)\n%s" % (
                self.pid, rc, signal.Signals(sig).name, expect_rc,
                self.stderr_tail()))
        return took

    def has_started(self):
        """True once lugger has logged "lugger <version> running: ..." (its
        signal handlers, outputs, workers and sources are all up)."""
        if " running: " not in self.stderr_text():
            return False
        return any(r.get("component") == "engine" and
                   " running: " in str(r.get("msg", ""))
                   for r in self.log_records())

    def wait_started(self, timeout=60.0):
        """Waits until `has_started()` or lugger has exited (start-up failures
        are left to the caller's exit-code check). Fails after `timeout` s
        with the stderr tail."""
        wait_for(lambda: self.proc.poll() is not None or self.has_started(),
                 timeout, "lugger pid %d to log that it runs" % self.pid,
                 detail=self.stderr_tail)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.kill9()

    # -- stderr

    def stderr_text(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr_tail(self, n=40):
        lines = self.stderr_text().splitlines()
        return "--- lugger stderr (last %d of %d lines) ---\n%s" % (
            min(n, len(lines)), len(lines), "\n".join(lines[-n:]))

    def log_records(self):
        """lugger's own log: the stderr lines that are JSON objects."""
        out = []
        for line in self.stderr_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def check_sanitizers(self):
        text = self.stderr_text()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                       "runtime error:", "ERROR: ThreadSanitizer"):
            i = text.find(marker)
            if i >= 0:
                fail("sanitizer report in lugger pid %d stderr:\n%s" % (
                    self.pid, text[max(0, i - 200):i + 3000]))

    def check_running(self):
        """Fails with the stderr tail if lugger has exited."""
        rc = self.poll()
        if rc is not None:
            self.check_sanitizers()
            fail("lugger pid %d exited early with %d\n%s" % (
                self.pid, rc, self.stderr_tail()))

    # -- /proc

    def rss_kib(self):
        return rss_kib(self.pid)

    def io(self):
        """/proc/<pid>/io as a dict (rchar, read_bytes, ...)."""
        d = {}
        try:
            with open("/proc/%d/io" % self.pid) as f:
                for line in f:
                    k, v = line.split(":")
                    d[k.strip()] = int(v)
        except (OSError, ValueError):
            pass
        return d

    def open_files(self):
        """Targets of lugger's open fds (e.g. "/x/a.log (deleted)")."""
        out = []
        d = "/proc/%d/fd" % self.pid
        try:
            names = os.listdir(d)
        except OSError:
            return out
        for n in names:
            try:
                out.append(os.readlink(os.path.join(d, n)))
            except OSError:
                pass
        return out


_run_counter = [0]


def _next_run():
    _run_counter[0] += 1
    return _run_counter[0]


def rss_kib(pid):
    """VmRSS of `pid` in KiB, or None if it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every `interval` s in the background."""

    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples = []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            r = rss_kib(self.pid)
            if r is not None:
                self.samples.append((time.monotonic(), r))
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join()

    @property
    def max_kib(self):
        return max((r for _, r in self.samples), default=0)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(port, path, timeout=10):
    """GET http://127.0.0.1:<port><path>: (status, body text), or
    (None, error text) when nothing answers within `timeout` s."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def metric_sum(port, name):
    """The sum of every sample of metric `name` (all label sets) on
    lugger's /metrics (Prometheus text format)."""
    st, text = http_get(port, "/metrics")
    check(st == 200, "/metrics: %r" % st)
    total = 0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def delay_fsyncs(pid, trace, delay_us, fd_paths=False):
    """Attaches strace (Debian's) to every thread of `pid`, delaying each
    fsync(2) by `delay_us` microseconds and logging them to `trace` (with
    the files' paths when `fd_paths`): a slow node disk. Returns the strace
    process; SIGINT to it detaches, and the traced process runs on."""
    if shutil.which("strace") is None:
        skip("strace is not installed (scripts/setup installs it)")
    st = subprocess.Popen(
        ["strace", "-f", "-qq"] + (["-y"] if fd_paths else []) +
        ["-p", str(pid), "-o", trace, "-e", "trace=fsync",
         "-e", "inject=fsync:delay_enter=%d" % delay_us],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached to every thread
    check(st.poll() is None, "strace exited: %r" % st.returncode)
    return st


def wait_for(cond, timeout, what, interval=0.05, proc=None, detail=None):
    """Polls `cond()` until it is true; fails after `timeout` s saying
    `what` did not happen (with `detail()` and lugger's stderr tail). If
    `proc` is given, fails at once when it exits."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if proc is not None:
            proc.check_running()
        if time.monotonic() >= deadline:
            msg = "timed out after %.0f s waiting for %s" % (timeout, what)
            if detail is not None:
                msg += ": " + detail()
            if proc is not None:
                msg += "\n" + proc.stderr_tail()
            fail(msg)
        time.sleep(interval)


# --------------------------------------------------------------------------
# Output (JSON lines)


def parse_json_line(raw, where):
    """One output line (bytes, without LF) -> dict. Fails if the line is
    not valid UTF-8, not a JSON object, or holds a lone surrogate."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        fail("%s: output line is not valid UTF-8 (%s): %r" % (
            where, e, raw[:200]))
    try:
        obj = json.loads(text)
    except ValueError as e:
        fail("%s: output line is not JSON (%s): %r" % (where, e, raw[:200]))
    if not isinstance(obj, dict):
        fail("%s: output line is not a JSON object: %r" % (where, raw[:200]))
    if "\\ud" in text or "\\uD" in text:
        # Surrogate escapes are legal JSON only in valid pairs.
        _check_no_lone_surrogates(obj, raw, where)
    return obj


def _check_no_lone_surrogates(v, raw, where):
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            fail("%s: lone surrogate in output: %r" % (where, raw[:200]))
    elif isinstance(v, dict):
        for x in v.values():
            _check_no_lone_surrogates(x, raw, where)
    elif isinstance(v, list):
        for x in v:
            _check_no_lone_surrogates(x, raw, where)


def read_jsonl(path, allow_partial_tail=False):
    """Reads a whole JSON-lines file. Every line must be complete (end in
    LF) and parse, unless `allow_partial_tail` (a writer is still running):
    then an unterminated last line is ignored."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    tail = lines.pop()
    if tail and not allow_partial_tail:
        fail("%s: last line has no LF (a broken line): %r" % (path, tail[:200]))
    out = []
    for i, raw in enumerate(lines):
        out.append(parse_json_line(raw, "%s:%d" % (path, i + 1)))
    return out


class JsonlFollower:
    """Reads a JSON-lines file (or a pipe fd) incrementally, handing each
    complete line to `on_record(rec)`. `poll()` reads what is new."""

    def __init__(self, path=None, fd=None, on_record=None):
        self.path, self.fd = path, fd
        self.on_record = on_record
        self.f = None
        self.buf = b""
        self.count = 0
        self.bytes = 0

    def poll(self, max_bytes=64 * MiB):
        if self.fd is not None:
            try:
                chunk = os.read(self.fd, max_bytes)
            except BlockingIOError:
                return 0
        else:
            if self.f is None:
                try:
                    self.f = open(self.path, "rb")
                except FileNotFoundError:
                    return 0
            chunk = self.f.read(max_bytes)
        if not chunk:
            return 0
        self.bytes += len(chunk)
        data = self.buf + chunk
        lines = data.split(b"\n")
        self.buf = lines.pop()
        where = self.path or "pipe"
        for raw in lines:
            self.count += 1
            rec = parse_json_line(raw, "%s:%d" % (where, self.count))
            if self.on_record:
                self.on_record(rec)
        return len(lines)

    def close(self):
        if self.f:
            self.f.close()


# --------------------------------------------------------------------------
# Test lines: "f<fid> s<seq> <padding>", fixed length per test.

LINE_RE = re.compile(r"^f(\d+) s(\d+) ")


def make_line(fid, seq, length=100):
    """A test line of exactly `length` bytes including its LF, so a line's
    file offset is seq * length (when its file never rotates)."""
    head = "f%03d s%09d " % (fid, seq)
    pad = length - 1 - len(head)
    if pad < 0:
        raise ValueError("line length too small")
    filler = ("abcdefghijklmnopqrstuvwxyz0123456789" * (pad // 36 + 1))[:pad]
    return (head + filler + "\n").encode()


def parse_line(body):
    """(fid, seq) of a test line body, or None."""
    m = LINE_RE.match(body)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2))


class SeqTracker:
    """Counts test lines as they arrive: per file id the count of each
    sequence number, order violations (a sequence not above the last seen
    one, when not a duplicate), and records that are not test lines.
    Thread-safe; `wait_delivered(fid, n)` blocks until sequences 0..n-1 of
    file `fid` have all arrived."""

    def __init__(self, expected_len=None):
        self.cond = threading.Condition()
        self.seen = {}       # fid -> bytearray of counts (saturating at 255)
        self.contig = {}     # fid -> first sequence not yet seen
        self.last = {}       # fid -> last sequence seen
        self.total = 0
        self.dups = 0
        self.order_errors = []
        self.foreign = []
        self.bad_body = []
        self.expected_len = expected_len

    def add(self, rec):
        body = rec.get("body")
        p = parse_line(body) if isinstance(body, str) else None
        with self.cond:
            if p is None:
                if len(self.foreign) < 20:
                    self.foreign.append(rec)
                else:
                    self.foreign.append(None)
                return
            fid, seq = p
            if self.expected_len is not None and \
                    len(body) != self.expected_len - 1 and \
                    len(self.bad_body) < 20:
                self.bad_body.append(body)
            arr = self.seen.get(fid)
            if arr is None:
                arr = self.seen[fid] = bytearray(1024)
                self.contig[fid] = 0
            if seq >= len(arr):
                arr.extend(bytearray(max(seq + 1 - len(arr), len(arr))))
            self.total += 1
            if arr[seq]:
                self.dups += 1
            else:
                last = self.last.get(fid, -1)
                if seq < last and len(self.order_errors) < 1000:
                    self.order_errors.append((fid, last, seq))
                elif seq < last:
                    self.order_errors.append(None)
            if arr[seq] < 255:
                arr[seq] += 1
            self.last[fid] = max(seq, self.last.get(fid, -1))
            c = self.contig[fid]
            while c < len(arr) and arr[c]:
                c += 1
            self.contig[fid] = c
            self.cond.notify_all()

    def delivered(self, fid):
        with self.cond:
            return self.contig.get(fid, 0)

    def wait_delivered(self, fid, n, timeout, abort=None):
        """Waits until sequences 0..n-1 of `fid` have arrived. Returns False
        on timeout or when `abort()` turns true."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.contig.get(fid, 0) < n:
                left = deadline - time.monotonic()
                if left <= 0 or (abort is not None and abort()):
                    return False
                self.cond.wait(min(left, 0.2))
            return True

    def summary(self, expected):
        """`expected`: {fid: number of lines}. Returns (lost, dups, missing
        examples) where lost counts expected lines never seen and dups
        counts arrivals beyond the first."""
        with self.cond:
            lost = 0
            examples = []
            for fid, n in expected.items():
                arr = self.seen.get(fid, bytearray())
                for s in range(n):
                    if s >= len(arr) or not arr[s]:
                        lost += 1
                        if len(examples) < 10:
                            examples.append((fid, s))
            extra = 0
            for fid, arr in self.seen.items():
                n = expected.get(fid, 0)
                extra += sum(1 for s in range(n, len(arr)) if arr[s])
            return lost, self.dups, examples, extra


def check_records_exact(recs, want_bodies, meta):
    """Checks that the bodies of `recs` are `want_bodies` in order (no line
    lost, repeated or reordered) and that every record carries each
    key/value of `meta`."""
    bodies = [r["body"] for r in recs]
    check(bodies == want_bodies, "%d records for %d lines, %d duplicated, "
          "first differences %s" % (
              len(bodies), len(want_bodies), len(bodies) - len(set(bodies)),
              [(a, b) for a, b in zip(bodies, want_bodies) if a != b][:3]))
    for r in recs:
        for k, v in meta.items():
            check(r.get(k) == v, "%s = %r, want %r\n%s" % (
                k, r.get(k), v, json.dumps(r)))


@contextlib.contextmanager
def small_tmpfs(path, size="256k", name="lugger-it"):
    """A tmpfs of `size` mounted on the existing directory `path` for the
    block (unmounted after it, lazily, as lugger may still hold a file of
    it): a filesystem the test can fill. Skips the test when it is not
    root or the mount is refused (a container without CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        skip("this test mounts a tmpfs: run it as root")
    try:
        subprocess.check_call(["mount", "-t", "tmpfs", "-o", "size=" + size, name, path])
    except (OSError, subprocess.CalledProcessError) as e:
        skip("cannot mount a tmpfs here: %s" % e)
    try:
        yield path
    finally:
        subprocess.call(["umount", "-l", path])


def jsonl_count(path):
    """Whole records in the JSON-lines file `path` so far (0 before it
    exists)."""
    return len(read_jsonl(path, allow_partial_tail=True)) if os.path.exists(path) else 0


def delivered_all(path, upto, line_len):
    """Whether the JSON-lines file `path` (it may not exist yet) holds, for
    each file id of `upto` ({fid: n}), at least its first n lines of
    make_line()."""
    tr = SeqTracker(expected_len=line_len)
    if os.path.exists(path):
        for r in read_jsonl(path, allow_partial_tail=True):
            tr.add(r)
    return all(tr.delivered(fid) >= n for fid, n in upto.items())


def read_checkpoints(state_dir):
    """checkpoints.json as a dict (fails if it is missing or not JSON)."""
    p = os.path.join(state_dir, "checkpoints.json")
    check(os.path.exists(p), "%s does not exist" % p)
    with open(p, "rb") as f:
        raw = f.read()
    try:
        cp = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        fail("%s is not valid JSON (%s): %r" % (p, e, raw[:300]))
    check(isinstance(cp, dict) and isinstance(cp.get("files"), list),
          "%s has no \"files\" list: %r" % (p, raw[:300]))
    return cp


def rewrite_checkpoints(state_dir, fn):
    """Replaces every entry e of checkpoints.json by fn(e) (lugger must not
    be running): how a test sets a checkpoint back."""
    cp = read_checkpoints(state_dir)
    cp["files"] = [fn(e) for e in cp["files"]]
    p = os.path.join(state_dir, "checkpoints.json")
    with open(p + ".edit", "w") as f:
        json.dump(cp, f)
    os.replace(p + ".edit", p)


def checkpoint_offsets(state_dir):
    """{path: offset} from checkpoints.json ({} if the file is missing)."""
    p = os.path.join(state_dir, "checkpoints.json")
    if not os.path.exists(p):
        return {}
    out = {}
    for e in read_checkpoints(state_dir)["files"]:
        check(isinstance(e, dict) and isinstance(e.get("offset"), int) and
              isinstance(e.get("path"), str),
              "checkpoint entry without path/offset: %r" % (e,))
        out[e["path"]] = max(out.get(e["path"], 0), e["offset"])
    return out


class PacedWriter(threading.Thread):
    """Appends fixed-length test lines to files at about `rate` lines/s in
    total, in small bursts, until `stop()` or `lines_per_file` is reached.
    `written[fid]` is the count written so far (all of them flushed)."""

    def __init__(self, paths, rate, line_len=100, lines_per_file=None,
                 burst=50, start_seq=None):
        super().__init__(daemon=True)
        self.paths = list(paths)
        self.rate = rate
        self.line_len = line_len
        self.limit = lines_per_file
        self.burst = burst
        self.written = dict(start_seq or {i: 0 for i in range(len(paths))})
        self._halt = threading.Event()
        self.error = None

    def run(self):
        try:
            fds = [os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                   for p in self.paths]
            period = self.burst * len(self.paths) / float(self.rate)
            nxt = time.monotonic()
            while not self._halt.is_set():
                done = True
                for fid, fd in enumerate(fds):
                    n = self.written[fid]
                    k = self.burst if self.limit is None else \
                        min(self.burst, self.limit - n)
                    if k <= 0:
                        continue
                    done = False
                    data = b"".join(make_line(fid, s, self.line_len)
                                    for s in range(n, n + k))
                    os.write(fd, data)
                    self.written[fid] = n + k
                if done:
                    break
                nxt += period
                d = nxt - time.monotonic()
                if d > 0:
                    self._halt.wait(d)
                else:
                    nxt = time.monotonic()
            for fd in fds:
                os.close(fd)
        except BaseException as e:
            self.error = e

    def halt(self):
        """Asks the writer to stop (returns at once)."""
        self._halt.set()

    def stop(self):
        self._halt.set()
        self.join()
        if self.error:
            raise self.error
