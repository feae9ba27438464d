#!/usr/bin/env python3
"""`lugger repl`: driven through a pipe (exact output, exit status) and
through a pseudo-terminal (libedit: prompt, echo, history recall with the
up arrow across sessions, cursor keys, Tab completion, Ctrl-C stopping a
runaway line, Ctrl-D).

Uses the fixture scripts and samples of tests/fixtures/scripts/ (parse.lua
over sample.cri, whose CRI times make the output deterministic; the
parsing helpers with helpers.lua over helpers.log).
"""
import errno
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lugger_it as it  # noqa: E402

FIX = os.path.join(it.SOURCE_DIR, "tests", "fixtures", "scripts")

REC1_IN = ('{"time":"2024-05-01T12:00:00.000000001Z","body":"INFO user=dan",'
           '"log.iostream":"stdout","log.file.path":"sample.cri"}')
REC2_IN = ('{"time":"2024-05-01T12:00:01.000000000Z","body":"ERROR user=eve code=503",'
           '"log.iostream":"stderr","log.file.path":"sample.cri"}')
REC2_OUT = REC2_IN[:-1] + ',"level":"ERROR","user":"eve","code":503'


def repl_pipe(script_lines, *args, timeout=60):
    return subprocess.run([it.LUGGER, "repl"] + list(args),
                          input="".join(l + "\n" for l in script_lines),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, cwd=FIX, env=it.asan_env())


def test_pipe_exact():
    res = repl_pipe(["rec.body", ":next", "rec.code + 1", "rec.x = 1", "", ":show",
                     "nil + 1", ":prev", "rec.level", ":quit", "rec.body"],
                    "parse.lua", "--sample", "sample.cri")
    want = "\n".join([
        '"INFO user=dan"',
        "record 2/2 (sample.cri offset 54)",
        REC2_IN,
        "-> kept, routes: errors, audit",
        REC2_OUT + "}",
        "504",
        "record 2/2 (sample.cri offset 54)",
        REC2_IN,
        "-> kept, routes: errors, audit",
        REC2_OUT + ',"x":1}',
        "error: repl:1: attempt to perform arithmetic on a nil value",
        "record 1/2 (sample.cri offset 0)",
        REC1_IN,
        "-> kept, routes: default",
        REC1_IN[:-1] + ',"level":"INFO","user":"dan"}',
        '"INFO"',
    ]) + "\n"
    it.check(res.stdout == want, "pipe output:\n%s\nwanted:\n%s" % (res.stdout, want))
    it.check(res.returncode == 1, "a failed line makes exit 1, got %d" % res.returncode)
    it.check(res.stderr == "", "nothing on stderr: %r" % res.stderr)


def test_pipe_status():
    res = repl_pipe(["rec.body", ":next", "rec.user"], "parse.lua", "--sample", "sample.cri")
    it.check(res.returncode == 0, "no failure, exit 0; got %d: %s %s"
             % (res.returncode, res.stdout, res.stderr))
    it.check(res.stdout == '"INFO user=dan"\n%s\n"eve"\n' % "\n".join(
        ["record 2/2 (sample.cri offset 54)", REC2_IN, "-> kept, routes: errors, audit",
         REC2_OUT + "}"]), res.stdout)
    it.check("\x1b" not in res.stdout and "lugger>" not in res.stdout, "no prompt or escapes")
    # a script error on the record shown, an unknown command, a bad script
    res = repl_pipe([":goto 2"], "error.lua", "--sample", "errors.log", "--format", "line")
    it.check(res.returncode == 1 and "-> error: error.lua:4: cannot parse boom here" in res.stdout,
             "script error: %d %s" % (res.returncode, res.stdout))
    res = repl_pipe([":frobnicate"], "parse.lua")
    it.check(res.returncode == 1 and "unknown command :frobnicate" in res.stdout, res.stdout)
    res = repl_pipe(["1 + 1"], "broken.lua")
    it.check(res.returncode == 1 and res.stdout.startswith("error: broken.lua:3:")
             and res.stdout.endswith("\n2\n"), "load error then 2: %r" % res.stdout)
    # usage errors
    res = repl_pipe([], "parse.lua", "--sample", "/nonexistent.log")
    it.check(res.returncode == 2 and "/nonexistent.log" in res.stderr, res.stderr)
    res = repl_pipe([], "--bogus")
    it.check(res.returncode == 2, "unknown option: %d" % res.returncode)
    res = repl_pipe([], "--compat", "fluent-bit")
    it.check(res.returncode == 2 and "--call" in res.stderr, res.stderr)
    # EOF ends the session like :quit
    res = repl_pipe([], "parse.lua", "--sample", "sample.cri")
    it.check(res.returncode == 0 and res.stdout == "", "empty input: %r" % res.stdout)


def test_pipe_helpers():
    """The parsing helpers at the repl's prompt, on the records of
    helpers.lua over helpers.log (which the script parsed with them)."""
    res = repl_pipe([
        "rec.status + 1", "rec.time", ":next", 'rec["req.ms"]',
        r'lugger.regex("(\\d+)-(\\d+)"):match("12-34")',
        'rec.extra = "a=1 b=x"', 'rec:parse_logfmt("extra")', "rec.b",
        'rec:parse_kv("extra", " ", "=")', 'rec:parse_csv({ "c1", "c2" }, " ", "extra")',
        "rec.c2",
        'lugger.parse_time("01/May/2024:12:00:01 +0000", "nginx") == 1714564801e9',
        'rec:set_time("2024-05-01 12:00:00 +0200", "%Y-%m-%d %H:%M:%S %z")', "rec.time",
        'rec:parse_json("extra")', 'lugger.regex("(a")', "rec:parse_json({ flatten = 1 })",
    ], "helpers.lua", "--sample", "helpers.log", "--format", "line")
    body2 = (r'"json: {\"time\":\"2024-05-01T12:00:02Z\",\"level\":\"info\",'
             r'\"req\":{\"id\":18446744073709551615,\"ms\":3.5}}"')
    want = [
        "201",
        '"2024-05-01T10:00:01.000000000Z"',
        "record 2/6 (helpers.log offset 83)",
        '{"time":READ,"body":%s,"log.file.path":"helpers.log"}' % body2,
        "-> kept, routes: default",
        '{"time":"2024-05-01T12:00:02.000000000Z","body":%s,"log.file.path":"helpers.log",'
        '"kind":"json","level":"info","req.id":18446744073709551615,"req.ms":3.5}' % body2,
        "3.5",
        '"12"\t"34"',
        "2", '"x"', "2", "2", '"b=x"', "true", "true",
        '"2024-05-01T10:00:00.000000000Z"',
        'nil\t"not a JSON object (starts with \'a\')"',
        "error: lugger.regex: missing closing parenthesis at offset 2 of the pattern",
        "error: rec:parse_json: flatten is true or a separator string",
    ]
    pattern = "\n".join(re.escape(w).replace("READ", '"[0-9T:.-]+Z"') for w in want) + "\n"
    it.check(re.fullmatch(pattern, res.stdout) is not None,
             "helpers at the repl:\n%s\nwanted:\n%s" % (res.stdout, "\n".join(want)))
    it.check(res.returncode == 1, "two failed lines make exit 1, got %d" % res.returncode)


def test_pipe_compat():
    with tempfile.TemporaryDirectory() as d:
        fb = os.path.join(d, "fb.lua")
        with open(fb, "w") as f:
            f.write("function cb(tag, ts, record)\n"
                    "  record.tag = tag\n  record.n = record.n + 1\n"
                    "  return 2, ts, record\nend\n")
        sample = os.path.join(d, "s.jsonl")
        with open(sample, "w") as f:
            f.write('{"log":"x","n":1,"time":"2024-05-01T12:00:00Z"}\n')
        res = repl_pipe(["rec.n", "rec.tag"], fb, "--sample", sample, "--format", "json",
                        "--compat", "fluent-bit", "--call", "cb", "--tag", "kube.a")
        it.check(res.returncode == 0 and res.stdout == '2\n"kube.a"\n',
                 "compat: %d %r %r" % (res.returncode, res.stdout, res.stderr))


def test_pipe_stuck_script():
    """A script stuck on a record (a loop LuaJIT would compile, too) fails
    that record after the time limit, settings.script_timeout's default of
    1 s of CPU time, and the repl goes on with the next line (it once hung
    for ever)."""
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "spin.lua")
        with open(script, "w") as f:
            f.write("function process(rec)\n"
                    "  local i = 0\n"
                    "  while rec.body == \"spin\" do i = i + 1 end\n"
                    "  rec.seen = true\n"
                    "end\n")
        sample = os.path.join(d, "spin.log")
        with open(sample, "w") as f:
            f.write("a\nspin\nb\n")
        t0 = time.monotonic()
        res = repl_pipe([":next", "rec.body", ":next", "rec.seen", ":goto 2", "1 + 1"],
                        script, "--sample", sample, "--format", "line")
        took = time.monotonic() - t0
        want = ("-> error: %s:3: script_timeout: exceeded the time limit of 1000 ms of "
                "CPU time on this record (file %s offset 2)" % (script, sample))
        lines = res.stdout.splitlines()
        it.check(lines.count(want) == 2, "the stuck record failed, twice:\n%s" % res.stdout)
        it.check(lines[3] == '"spin"' and lines[8] == "true" and lines[-1] == "2",
                 "the lines after it ran:\n%s" % res.stdout)
        it.check(res.returncode == 1, "a failed line makes exit 1, got %d" % res.returncode)
        it.check(took < 30, "took %.1f s" % took)


def test_pipe_stuck_line():
    """A Lua line typed from a pipe that loops for ever (no Ctrl-C there)
    fails after the same time limit as a stuck record, 1 s of CPU time, with
    the timeout error; so does one inside the sandbox's pcall, which passes
    the timeout on. The session goes on: the state the loop left is there
    and the next lines run (the repl once hung for ever)."""
    t0 = time.monotonic()
    try:
        res = repl_pipe(["n = 0 while true do n = n + 1 end", "n > 0, rec.user",
                         "pcall(function() while true do end end)", ":next", "1 + 1"],
                        "parse.lua", "--sample", "sample.cri", timeout=30)
    except subprocess.TimeoutExpired:
        it.fail("lugger repl hung on a line stuck in a loop (killed after 30 s)")
    took = time.monotonic() - t0
    want = ("error: repl:1: script_timeout: exceeded the time limit of 1000 ms of "
            "CPU time on this line")
    lines = res.stdout.splitlines()
    it.check(lines.count(want) == 2, "both stuck lines failed with %r:\n%s"
             % (want, res.stdout))
    it.check(lines[0] == want and lines[1] == 'true\t"dan"' and lines[2] == want
             and lines[3] == "record 2/2 (sample.cri offset 54)" and lines[-1] == "2",
             "the lines after them ran:\n%s" % res.stdout)
    it.check(res.returncode == 1, "a failed line makes exit 1, got %d" % res.returncode)
    it.check(took < 20, "took %.1f s" % took)


class Pty:
    """lugger repl on a pseudo-terminal, read like a user watching it."""

    def __init__(self, args, home):
        env = it.asan_env({"HOME": home, "TERM": "xterm", "LUGGER_HISTORY": ""})
        env.pop("XDG_STATE_HOME", None)
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(FIX)
            os.execve(it.LUGGER, [it.LUGGER, "repl"] + args, env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        self.out = b""
        self.pos = 0

    def read_some(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError as e:
            if e.errno == errno.EIO:  # the child closed the terminal
                return None
            raise
        if not data:
            return None
        self.out += data
        return True

    def expect(self, text, timeout=20):
        """Waits until `text` appears after what earlier expects matched."""
        want = text.encode()
        deadline = time.monotonic() + timeout
        while True:
            k = self.out.find(want, self.pos)
            if k >= 0:
                self.pos = k + len(want)
                return
            left = deadline - time.monotonic()
            if left <= 0 or self.read_some(left) is None:
                it.fail("terminal: %r did not appear; screen after the last match:\n%r"
                        % (text, self.out[self.pos:][-3000:]))

    def send(self, s, raw=True):
        """Types `s`. libedit prints the prompt before it puts the terminal
        in raw mode; a Ctrl-D typed in between would be the kernel's EOF,
        not libedit's, so by default wait for raw mode (ICANON off: the
        master side reads the terminal's modes)."""
        deadline = time.monotonic() + 10
        while raw and termios.tcgetattr(self.fd)[3] & termios.ICANON:
            if time.monotonic() > deadline:
                it.fail("the terminal never left canonical mode")
            time.sleep(0.01)
        os.write(self.fd, s.encode())

    def wait(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            self.read_some(0.05)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        it.fail("lugger repl did not exit; screen after the last match:\n%r"
                % self.out[self.pos:][-3000:])


def test_terminal():
    with tempfile.TemporaryDirectory() as home:
        t = Pty(["parse.lua", "--sample", "sample.cri"], home)
        t.expect("lugger repl ")
        t.expect("record 1/2 (sample.cri offset 0)")
        t.expect("-> kept, routes: default")
        t.expect("lugger> ")
        t.send("rec.user\r")
        t.expect('"dan"')
        t.expect("lugger> ")
        t.send(":next\r")
        t.expect("record 2/2")
        t.expect("lugger> ")
        # up arrow twice: back past ":next" to "rec.user", now on record 2
        t.send("\x1b[A\x1b[A\r")
        t.expect('"eve"')
        t.expect("lugger> ")
        # editing: a typo removed with backspace, then Ctrl-A and an insert
        # at the start of the line, a cursor-left and an insert in the middle
        t.send("rec.bodX\x7fy\r")
        t.expect('"ERROR user=eve code=503"')
        t.expect("lugger> ")
        t.send("code + 1\x01rec.\r")
        t.expect("504")
        t.expect("lugger> ")
        t.send("rec.cde\x1b[D\x1b[Do\r")
        t.expect("503")
        t.expect("lugger> ")
        # Tab completes a command
        t.send(":hel\t\r")
        t.expect("Commands:")
        t.expect(":reload")
        t.expect("lugger> ")
        # Ctrl-C stops a line stuck in a loop, not the repl
        t.send("n = 0 while true do n = n + 1 end\r")
        time.sleep(0.5)
        t.send("\x03", raw=False)  # the line runs: the terminal is cooked
        t.expect("interrupted")
        t.expect("lugger> ")
        t.send("n > 0, rec.user\r")
        t.expect('true\t"eve"')
        t.expect("lugger> ")
        # and a file name after :load
        t.send(":load bro\t\r")
        t.expect("error: broken.lua:3: ")
        t.expect("lugger> ")
        t.send("nil + 1\r")
        t.expect("error: repl:1: attempt to perform arithmetic on a nil value")
        t.expect("lugger> ")
        t.send("\x04")  # Ctrl-D at an empty line
        rc = t.wait()
        it.check(rc == 0, "Ctrl-D exits 0 in a terminal, got %r" % rc)
        os.close(t.fd)

        hist = os.path.join(home, ".lugger_history")
        it.check(os.path.exists(hist), "history written to ~/.lugger_history")
        with open(hist, "rb") as f:
            h = f.read()
        it.check(b"rec.user" in h and b":next" in h, "history holds the lines: %r" % h)

        # a new session recalls the last session's lines
        t = Pty(["parse.lua", "--sample", "sample.cri"], home)
        t.expect("lugger> ")
        # the last session's last line, one step back: "nil + 1"
        t.send("\x1b[A\r")
        t.expect("error: repl:1: attempt to perform arithmetic on a nil value")
        t.expect("lugger> ")
        t.send(":quit\r")
        rc = t.wait()
        it.check(rc == 0, ":quit exits 0, got %r" % rc)
        os.close(t.fd)


def run_all():
    it.require_binary()
    tests = [test_pipe_exact, test_pipe_status, test_pipe_compat, test_pipe_helpers,
             test_pipe_stuck_script, test_pipe_stuck_line, test_terminal]
    for t in tests:
        it.log(t.__name__)
        t()
    return "%d check groups passed" % len(tests)


if __name__ == "__main__":
    it.main("test_repl", run_all)
