#!/usr/bin/env python3
"""Hot reload (issue 5, "Hot reload"; DESIGN.md "Configuration").

1. Reload under load, the kubelet's way: a ConfigMap-style directory
   (`lugger.lua -> ..data/lugger.lua`, `stamp.lua -> ..data/stamp.lua`,
   `..data -> ..<timestamp>`) is swapped ten times while 200k lines flow
   from four files: new timestamped dir, symlink `..data_tmp` to it,
   rename over `..data`, old dir removed. Four swaps are broken (a script
   syntax error, an error in init, a config syntax error, an unknown
   config key). The script stamps each record with its version
   (`rec.v`) and appends it to `rec.vs`, and init sets the version it saw
   (`rec.iv`). Then: every line arrives exactly once with its exact body;
   each record has one version in `vs` (no record was processed twice)
   equal to `v` and `iv` (init ran in the state that processed it); no
   broken version appears; per file, versions never go back; the lines
   written after the last swap carry the last version; each broken swap is
   reported on stderr naming the file and line (or key), and the old
   version keeps running meanwhile.
2. A plain (non-symlinked) config: editing the script in place reloads it;
   SIGHUP with nothing changed still reloads (a new generation) and
   reopens the output file (the file renamed away is not written again);
   then a script whose init never returns: lines still flow with the old
   version, and SIGTERM still exits 0 with the checkpoint at the end; no
   line lost or duplicated.
3. Changing the topology by reload: a new pipeline with a new output
   takes one source over; then that pipeline, output and source are
   removed (the output drains and closes: its descriptor goes away; the
   source's new lines are not read, its file is closed); then the source
   is added back (it resumes at its checkpoint: no line twice) with a new
   source. The unchanged output is never re-created (the same descriptor
   stays open on its file); no line lost or duplicated.
"""

import json
import os
import shutil
import signal
import time

import lugger_it as it

LINE_LEN = 100
NFILES = 4
PER_FILE = 50000          # 4 x 50k = 200k lines in part 1
TAIL_LINES = 1000         # of those, written per file after the last swap
SWAP_TIMEOUT = 30.0

CONFIG_TMPL = """return {
  settings = { state_dir = %(state)s, workers = 2, memory_budget = "32MiB",
               checkpoint_interval = "200ms", rescan_interval = "1s" },
  sources = { app = { type = "file", paths = { %(glob)s },
                      read_from = "head", format = "line" } },
  pipelines = { main = { sources = { "app" },
                         scripts = { { path = "stamp.lua",
                                       params = { v = %(v)d } } },
                         outputs = { "out" }%(stateless)s } },
  outputs = { out = { type = "file", path = %(out)s, fsync = "never" } },
}
"""

# Lines of a good stamp.lua: init keeps the version its params give, and
# process stamps it three ways (see the module docstring).
STAMP = """local V = %d
local IV
function init(params) IV = params.v end
function process(rec)
  rec.v = V
  rec.iv = IV
  rec.vs = (rec.vs or "") .. V .. ","
end
"""


def kubelet_swap(cfg, n, files):
    """Publishes `files` ({name: text}) as version `n` of the ConfigMap
    volume at `cfg` exactly as the kubelet's atomic writer does."""
    ts = "..2026_11_21_10_00_%02d.%09d" % (n, 123456789 + n)
    d = os.path.join(cfg, ts)
    os.mkdir(d)
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    old = None
    data = os.path.join(cfg, "..data")
    if os.path.islink(data):
        old = os.path.join(cfg, os.readlink(data))
    tmp = os.path.join(cfg, "..data_tmp")
    os.symlink(ts, tmp)
    os.rename(tmp, data)
    for name in files:
        link = os.path.join(cfg, name)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", name), link)
    if old is not None:
        shutil.rmtree(old)


def reload_msgs(proc):
    """(successes, failures): reload log messages so far."""
    ok, bad = [], []
    for r in proc.log_records():
        if r.get("component") != "reload":
            continue
        msg = r.get("msg", "")
        if "reload failed" in msg:
            bad.append(msg)
        elif "config generation" in msg and "running" in msg:
            ok.append(msg)
    return ok, bad


def reload_counts(proc):
    ok, bad = reload_msgs(proc)
    return len(ok), len(bad)


def wait_reload(proc, ok0, bad0, expect_ok, what):
    """Waits until one more reload succeeded (expect_ok) or failed."""
    def done():
        ok, bad = reload_msgs(proc)
        if expect_ok:
            return len(ok) > ok0 or len(bad) > bad0
        return len(bad) > bad0 or len(ok) > ok0
    it.wait_for(done, SWAP_TIMEOUT, what, proc=proc)
    ok, bad = reload_msgs(proc)
    if expect_ok:
        it.check(len(bad) == bad0 and len(ok) == ok0 + 1,
                 "%s: expected the reload to succeed; failures: %s" % (
                     what, bad[bad0:]))
    else:
        it.check(len(ok) == ok0 and len(bad) == bad0 + 1,
                 "%s: expected the reload to fail, but it was applied" % what)
    return len(ok), len(bad)


def check_records(recs, expected, what, good_versions=None):
    """Every expected line exactly once with its exact body. Returns
    {fid: [(seq, rec)]} sorted by seq."""
    by_file = {}
    seen = set()
    dups = 0
    for r in recs:
        p = it.parse_line(r.get("body", ""))
        it.check(p is not None, "%s: foreign record %r" % (what, r))
        fid, seq = p
        if (fid, seq) in seen:
            dups += 1
            continue
        seen.add((fid, seq))
        want = it.make_line(fid, seq, LINE_LEN)[:-1].decode()
        it.check(r["body"] == want, "%s: body of f%d s%d changed: %r" % (
            what, fid, seq, r["body"]))
        by_file.setdefault(fid, []).append((seq, r))
    it.check(dups == 0, "%s: %d duplicated records" % (what, dups))
    lost = [(f, s) for f, n in expected.items() for s in range(n)
            if (f, s) not in seen]
    it.check(not lost, "%s: %d records lost, e.g. %s" % (
        what, len(lost), lost[:5]))
    extra = len(seen) - sum(expected.values())
    it.check(extra == 0, "%s: %d unexpected records" % (what, extra))
    for fid in by_file:
        by_file[fid].sort(key=lambda x: x[0])
    return by_file


def part_kubelet():
    with it.WorkDir("reload-k8s") as wd:
        cfg = wd.mk("cfg")
        out = wd.p("out.jsonl")
        paths = [os.path.join(wd.logs, "app-%d.log" % i) for i in range(NFILES)]
        for p in paths:
            open(p, "wb").close()

        def config(v, broken=None):
            text = CONFIG_TMPL % {"state": it.lua_str(wd.state),
                                  "glob": it.lua_str(wd.logs + "/*.log"),
                                  "out": it.lua_str(out), "v": v,
                                  "stateless": ", stateless = true"
                                  if it.parallel_pipelines() else ""}
            if broken == "config-syntax":
                text = text.replace("workers = 2,", "workers = 2,,")
            elif broken == "bad-key":
                text = text.replace('fsync = "never"',
                                    'fsync = "never", pathh = "x"')
            return text

        def script(v, broken=None):
            text = STAMP % v
            if broken == "script-syntax":
                text = text.replace("rec.v = V", "rec.v = = V")
            elif broken == "init-error":
                text = text.replace("function init(params) IV = params.v end",
                                    "function init(params)\n"
                                    "  error(\"boom in init\")\nend")
            return text

        kubelet_swap(cfg, 1, {"lugger.lua": config(1),
                              "stamp.lua": script(1)})
        conf_path = os.path.join(cfg, "lugger.lua")
        # Versions 2..11; the broken ones must never show up.
        plan = {3: "script-syntax", 5: "init-error", 7: "config-syntax",
                9: "bad-key"}
        good = {1} | {v for v in range(2, 12) if v not in plan}
        lug = it.Lugger(conf_path)
        writer = it.PacedWriter(paths, rate=24000, line_len=LINE_LEN,
                                lines_per_file=PER_FILE - TAIL_LINES)
        recs = []
        follower = it.JsonlFollower(out, on_record=recs.append)
        try:
            it.wait_for(lambda: "running" in lug.stderr_text(), 20,
                        "lugger to start", proc=lug)
            writer.start()
            ok, bad = reload_counts(lug)
            t_swaps = time.monotonic()
            for v in range(2, 12):
                time.sleep(0.25)
                kind = plan.get(v)
                files = {
                    "lugger.lua": config(v, kind),
                    "stamp.lua": script(v, kind),
                }
                kubelet_swap(cfg, v, files)
                ok, bad = wait_reload(lug, ok, bad, kind is None,
                                      "swap to version %d (%s)" % (
                                          v, kind or "good"))
                follower.poll()
                it.log("version %d (%s): %d records so far, writer at %d" % (
                    v, kind or "applied", len(recs),
                    sum(writer.written.values())))
            swaps_s = time.monotonic() - t_swaps
            # The writer may still be writing the first part: let it end.
            writer.join()
            it.check(writer.error is None, "writer: %r" % writer.error)
            written_during = sum(writer.written.values())
            # The last version runs: these lines must all carry it.
            tail = it.PacedWriter(paths, rate=50000, line_len=LINE_LEN,
                                  lines_per_file=PER_FILE,
                                  start_seq=dict(writer.written))
            tail.start()
            tail.join()
            total = NFILES * PER_FILE
            it.wait_for(lambda: follower.poll() >= 0 and len(recs) >= total,
                        60, "all %d records" % total, proc=lug,
                        detail=lambda: "%d arrived" % len(recs))
            time.sleep(0.5)
            follower.poll()
            lug.stop()
        finally:
            writer.halt()
            lug.kill9()
        follower.poll()

        by_file = check_records(recs, {f: PER_FILE for f in range(NFILES)},
                                "kubelet swaps")
        versions = {}
        for fid, lst in by_file.items():
            last_v = 0
            for seq, r in lst:
                v, iv, vs = r.get("v"), r.get("iv"), r.get("vs")
                it.check(vs == "%s," % v, "f%d s%d was processed by more "
                         "than one version, or by none: vs=%r v=%r" % (
                             fid, seq, vs, v))
                it.check(iv == v, "f%d s%d: process() of version %r ran in "
                         "a state whose init saw version %r" % (fid, seq, v,
                                                                 iv))
                it.check(v in good, "f%d s%d: stamped by version %r, which "
                         "is broken or unknown (good: %s)" % (
                             fid, seq, v, sorted(good)))
                it.check(v >= last_v, "f%d: version went back from %d to %d "
                         "at line %d" % (fid, last_v, v, seq))
                last_v = v
                versions[v] = versions.get(v, 0) + 1
                if seq >= PER_FILE - TAIL_LINES:
                    it.check(v == 11, "f%d s%d: written after the last swap "
                             "but stamped %r, not 11" % (fid, seq, v))
        it.check(len(versions) >= 4, "only versions %s processed records: "
                 "the swaps did not happen under load" % sorted(versions))

        # Each broken swap is reported, naming the file and line or key.
        _, fails = reload_msgs(lug)
        it.check(len(fails) == 4, "expected 4 reload failures, got %d: %s" % (
            len(fails), fails))
        wants = [("script syntax error", "stamp.lua:5:"),
                 ("init error", "boom in init"),
                 ("config syntax error", "lugger.lua:2:"),
                 ("bad key", "outputs.out.pathh: unknown key")]
        for (what, needle), msg in zip(wants, fails):
            it.check(needle in msg, "%s: the failure message does not say "
                     "%r: %s" % (what, needle, msg))
        it.check("stamp.lua:4:" in fails[1] or "stamp.lua:5:" in fails[1],
                 "init error: no script line in %s" % fails[1])
        return ("%d records from %d files exactly once across 10 kubelet "
                "swaps in %.1f s (%d written during the swaps); versions %s; "
                "4 broken swaps rejected and reported" % (
                    len(recs), NFILES, swaps_s, written_during,
                    ", ".join("v%d:%d" % kv for kv in sorted(versions.items()))))


def part_plain_sighup():
    with it.WorkDir("reload-hup") as wd:
        out = wd.p("out.jsonl")
        paths = [os.path.join(wd.logs, "a.log")]
        conf = it.simple_config(wd, paths, out_path=out,
                                scripts=["stamp.lua"],
                                script_files={"stamp.lua": STAMP % 1})
        with open(paths[0], "wb") as f:
            f.write(b"".join(it.make_line(0, s) for s in range(1000)))
        lug = it.Lugger(conf)
        recs = []
        try:
            it.wait_for(lambda: os.path.exists(out) and
                        sum(1 for _ in open(out, "rb")) >= 1000, 20,
                        "the first 1000 lines", proc=lug)
            ok, bad = reload_counts(lug)
            # A plain edit in place (no rename): reloads by itself.
            with open(wd.p("stamp.lua"), "w") as f:
                f.write((STAMP % 2).replace("IV = params.v", "IV = 2"))
            ok, bad = wait_reload(lug, ok, bad, True, "plain edit")
            with open(paths[0], "ab") as f:
                f.write(b"".join(it.make_line(0, s) for s in range(1000, 2000)))
            it.wait_for(lambda: sum(1 for _ in open(out, "rb")) >= 2000, 20,
                        "lines after the edit", proc=lug)
            # SIGHUP, nothing changed: a reload anyway, and the output
            # file is reopened.
            os.rename(out, out + ".1")
            lug.proc.send_signal(signal.SIGHUP)
            ok, bad = wait_reload(lug, ok, bad, True, "SIGHUP")
            it.wait_for(lambda: os.path.exists(out), 10,
                        "the output file reopened after SIGHUP", proc=lug)
            with open(paths[0], "ab") as f:
                f.write(b"".join(it.make_line(0, s) for s in range(2000, 3000)))
            it.wait_for(lambda: sum(1 for _ in open(out, "rb")) >= 1000, 20,
                        "lines after SIGHUP", proc=lug)
            # An init that never returns: the reload hangs off the hot
            # path, the running version goes on, and SIGTERM still ends
            # the process cleanly.
            with open(wd.p("stamp.lua"), "w") as f:
                f.write("function init(p) while true do end end\n"
                        "function process(rec) rec.v = 3 end\n")
            time.sleep(0.2 + 0.5)  # debounce, then the reload is stuck
            with open(paths[0], "ab") as f:
                f.write(b"".join(it.make_line(0, s) for s in range(3000, 3500)))
            it.wait_for(lambda: sum(1 for _ in open(out, "rb")) >= 1500, 20,
                        "lines while a reload is stuck in init", proc=lug)
            took = lug.stop(timeout=15)
        finally:
            lug.kill9()
        first = it.read_jsonl(out + ".1")
        second = it.read_jsonl(out)
        by_file = check_records(first + second, {0: 3500}, "plain/SIGHUP")
        it.check(any("still running its scripts' init" in r.get("msg", "")
                     for r in lug.log_records()),
                 "no log line about the reload stuck in init at exit")
        offs = it.checkpoint_offsets(wd.state)
        it.check(offs.get(paths[0]) == 3500 * 100, "checkpoint %r, expected "
                 "the end of line 3499" % offs.get(paths[0]))
        vs = [r["v"] for _, r in by_file[0]]
        it.check(vs[:1000] == [1] * 1000 and vs[1000:] == [2] * 2500,
                 "versions by line: expected 1000 x v1 then 2500 x v2, got "
                 "%s" % sorted(set((i // 1000, v) for i, v in enumerate(vs))))
        it.check(len(second) == 1500 and all(
            it.parse_line(r["body"])[1] >= 2000 for r in second),
            "after SIGHUP the old file was written again or the new one "
            "got old lines")
        hups = [r for r in lug.log_records()
                if "SIGHUP: reopening outputs and reloading" in
                r.get("msg", "")]
        it.check(len(hups) == 1, "no SIGHUP log line")
        return ("plain edit and SIGHUP reloads; a reload stuck in init does "
                "not stop the flow, SIGTERM exits in %.1f s; 3500 lines "
                "exactly once" % took)


TOPO_TMPL = """return {
  settings = { state_dir = %(state)s, workers = 2,
               checkpoint_interval = "200ms", rescan_interval = "1s" },
  sources = %(sources)s,
  pipelines = %(pipelines)s,
  outputs = %(outputs)s,
}
"""


def fds_of(proc, path):
    """lugger's descriptor numbers open on `path`."""
    d = "/proc/%d/fd" % proc.pid
    out = []
    for n in os.listdir(d):
        try:
            if os.readlink(os.path.join(d, n)) == path:
                out.append(int(n))
        except OSError:
            pass
    return sorted(out)


def part_topology():
    with it.WorkDir("reload-topo") as wd:
        out, out2 = wd.p("out.jsonl"), wd.p("out2.jsonl")
        pa, pb, pc = (os.path.join(wd.logs, n + ".log") for n in "abc")
        conf = wd.p("lugger.lua")
        src = {n: '%s = { type = "file", paths = { %s }, read_from = "head",'
                  ' format = "line" }' % (n, it.lua_str(p))
               for n, p in (("a", pa), ("b", pb), ("c", pc))}
        o1 = 'out = { type = "file", path = %s }' % it.lua_str(out)
        o2 = 'out2 = { type = "file", path = %s }' % it.lua_str(out2)

        def write(sources, pipelines, outputs):
            text = TOPO_TMPL % {
                "state": it.lua_str(wd.state),
                "sources": "{ %s }" % ", ".join(src[n] for n in sources),
                "pipelines": pipelines,
                "outputs": "{ %s }" % ", ".join(outputs)}
            with open(conf + ".tmp", "w") as f:
                f.write(text)
            os.rename(conf + ".tmp", conf)  # an editor's atomic save

        def lines(path, fid, lo, hi):
            with open(path, "ab") as f:
                f.write(b"".join(it.make_line(fid, s) for s in range(lo, hi)))

        def count(p):
            return sum(1 for _ in open(p, "rb")) if os.path.exists(p) else 0

        write("ab", '{ main = { sources = { "a", "b" }, outputs = { "out" } } }',
              [o1])
        lines(pa, 0, 0, 500)
        lines(pb, 1, 0, 500)
        lines(pc, 2, 0, 300)  # no source reads it yet
        lug = it.Lugger(conf)
        try:
            it.wait_for(lambda: count(out) >= 1000, 20, "first lines",
                        proc=lug)
            ok, bad = reload_counts(lug)
            # The kept output must not be re-created: the same descriptor
            # stays open on its file throughout.
            fd_before = fds_of(lug, out)
            it.check(len(fd_before) == 1, "out open as %r" % fd_before)

            # 1. A new pipeline with a new output takes source b over.
            write("ab", '{ main = { sources = { "a" }, outputs = { "out" } },'
                  ' extra = { sources = { "b" }, outputs = { "out2" } } }',
                  [o1, o2])
            ok, bad = wait_reload(lug, ok, bad, True, "add pipeline+output")
            lines(pa, 0, 500, 1000)
            lines(pb, 1, 500, 1000)
            it.wait_for(lambda: count(out2) >= 500 and count(out) >= 1500, 20,
                        "lines through the new pipeline", proc=lug)
            it.check(len(fds_of(lug, out2)) == 1, "out2 is not open")

            # 2. Pipeline, output and source b removed: out2 drains and
            # closes; b's new lines are not read.
            write("a", '{ main = { sources = { "a" }, outputs = { "out" } } }',
                  [o1])
            ok, bad = wait_reload(lug, ok, bad, True, "remove pipeline, output "
                                  "and source")
            it.wait_for(lambda: not fds_of(lug, out2), 10,
                        "the removed output to be closed", proc=lug)
            lines(pa, 0, 1000, 1500)
            lines(pb, 1, 1000, 1500)
            it.wait_for(lambda: count(out) >= 2000, 20,
                        "a's lines after removing b", proc=lug)
            time.sleep(1.0)
            it.check(count(out) == 2000, "the removed source b was still "
                     "read: %d lines in out, expected 2000" % count(out))
            it.check(not any(f == pb for f in lug.open_files()),
                     "the removed source's file is still open")

            # 3. b added back (resumes at its checkpoint: lines 1000..1499
            # only) and a new source c (from its head).
            write("abc", '{ main = { sources = { "a", "b", "c" }, '
                  'outputs = { "out" } } }', [o1])
            ok, bad = wait_reload(lug, ok, bad, True, "add sources")
            it.wait_for(lambda: count(out) >= 2800, 20,
                        "b's and c's lines after adding them", proc=lug)
            time.sleep(0.5)
            it.check(fds_of(lug, out) == fd_before, "the kept output was "
                     "re-created by a reload")
            msgs = [r["msg"] for r in lug.log_records()
                    if "by a reload" in r.get("msg", "") and
                    r.get("component") == "engine"]
            want = ["output out2: added", "source b: removed",
                    "output out2: removed", "source b: added",
                    "source c: added"]
            for w in want:
                it.check(any(m.startswith(w) for m in msgs),
                         "no log %r by a reload in %s" % (w, msgs))
            it.check(not any(m.startswith("output out:") for m in msgs),
                     "output out was touched by a reload: %s" % msgs)
            lug.stop()
        finally:
            lug.kill9()
        kept = it.read_jsonl(out)
        new = it.read_jsonl(out2)
        check_records(kept + new, {0: 1500, 1: 1500, 2: 300}, "topology")
        it.check(len(new) == 500 and all(
            it.parse_line(r["body"])[0] == 1 and
            500 <= it.parse_line(r["body"])[1] < 1000 for r in new),
            "out2 should hold exactly b's lines 500..999")
        return ("pipeline+output added then removed (drained, closed), "
                "source removed and added back at its checkpoint, new source; "
                "kept output never re-created; 3300 lines exactly once")


def run():
    it.require_binary()
    parts = [part_kubelet(), part_plain_sighup(), part_topology()]
    return "; ".join(parts)


if __name__ == "__main__":
    it.main("test_reload", run)
