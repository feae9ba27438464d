#!/usr/bin/env python3
"""The kubernetes source's filters follow pod changes (test API server
k8s_api_server.py over a fake /var/log/pods tree), while lines keep being
written to every pod's log:

1. The API up from the start; include.labels = { tier = "front" }, and
   select() picks pipeline "p_" .. the pod's `route` label.
   - pod A's tier label changes to "back" (no longer included), then back
     to "front": lugger stops reading its file, then reads it again from
     its end at that moment; select() is not asked again (its records stay
     in pipeline p_one although `route` became "two").
   - pod B gets the annotation lugger.io/exclude = "true", then loses it.
   - pod C does not match at first (never read), then does: read from its
     end then, select() runs once then (p_two).
2. The API down at start (fail-open): pod D, annotated lugger.io/exclude,
   is read with path metadata after api_wait; when the API comes up, the
   annotation stops it; when it is removed, D is read again from its end.
3. Pod R's log is rotated (kubelet: rename, new file) while R is excluded,
   and again after it is included: one stream, in order, nothing of the
   excluded time.

Each file's delivered records are checked exactly against its bytes: every
line that ends before the offset lugger logged when it stopped, none in
between, every line from the offset it logged when it started again; no
duplicates; the checkpoints end at the file sizes.
"""

import os
import re
import threading
import time

import lugger_it as it
from k8s_api_server import FakeApiServer, make_pod
from k8s_node import Node, cri_line

NODE = "node-a"

STOP_RE = re.compile(r"^(?P<path>\S+): pod (?P<pod>\S+) is excluded now "
                     r"\((?P<why>.*)\); stopped reading at offset "
                     r"(?P<off>\d+) ")
START_RE = re.compile(r"^(?P<path>\S+): following it at its end \(pod "
                      r"(?P<pod>\S+) matches the source's filters again; .*"
                      r"\(offset (?P<off>\d+)\)$")


class Writer(threading.Thread):
    """Appends numbered CRI lines ("<tag> <n>") to each file in turn, one
    write(2) per line, until stopped; counts lines per file."""

    def __init__(self, files, interval=0.002):
        super().__init__(daemon=True)
        self.files = dict(files)  # tag -> path
        self.n = {t: 0 for t in self.files}
        self.interval = interval
        self.halt = threading.Event()
        self.fds = {t: os.open(p, os.O_WRONLY | os.O_APPEND)
                    for t, p in self.files.items()}
        self.lock = threading.Lock()
        self.rotations = []  # (tag, new name, done Event)

    def rotate(self, tag, stamp):
        """The kubelet's rotation of `tag`'s file, between two lines:
        rename it to <path>.<stamp>, write on at a new file at <path>.
        Returns the rotated file's path once done."""
        done = threading.Event()
        dst = self.files[tag] + "." + stamp
        with self.lock:
            self.rotations.append((tag, dst, done))
        it.check(done.wait(10), "the writer did not rotate %s" % tag)
        return dst

    def run(self):
        while not self.halt.is_set():
            with self.lock:
                todo, self.rotations = self.rotations, []
            for tag, dst, done in todo:
                os.rename(self.files[tag], dst)
                fd = os.open(self.files[tag],
                             os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.close(self.fds[tag])
                self.fds[tag] = fd
                done.set()
            for t, fd in self.fds.items():
                os.write(fd, cri_line("%s %06d" % (t, self.n[t])).encode())
                self.n[t] += 1
            time.sleep(self.interval)

    def stop(self):
        self.halt.set()
        self.join(10)
        for fd in self.fds.values():
            os.close(fd)

    def wait_more(self, lines, proc):
        """Waits until every file got `lines` more lines."""
        base = dict(self.n)
        it.wait_for(lambda: all(self.n[t] - base[t] >= lines
                                for t in self.n), 20,
                    "%d more lines per file" % lines, proc=proc)


def file_lines(path):
    """[(start offset, end offset, body)] of a CRI file written by Writer."""
    out, off = [], 0
    with open(path, "rb") as f:
        data = f.read()
    for raw in data.split(b"\n")[:-1]:
        end = off + len(raw) + 1
        body = raw.decode().split(" ", 3)[3]
        out.append((off, end, body))
        off = end
    return out


def log_events(lg, regex):
    """{path: [match]} of lugger's log messages matching `regex`."""
    out = {}
    for r in lg.log_records():
        m = regex.match(str(r.get("msg", "")))
        if m:
            out.setdefault(m.group("path"), []).append(m)
    return out


def wait_event(lg, regex, path, count, what):
    def ok():
        return len(log_events(lg, regex).get(path, [])) >= count
    it.wait_for(ok, 20, what, proc=lg)
    return log_events(lg, regex)[path][count - 1]


def expected(path, windows):
    """Bodies of the lines of `path` lugger must deliver: `windows` is a
    list of (from, to) byte ranges read (to = None: the end); a line is
    read when it lies wholly in one."""
    want = []
    for s, e, body in file_lines(path):
        for lo, hi in windows:
            if s >= lo and (hi is None or e <= hi):
                want.append(body)
                break
    return want


def check_exact(tag, got, path, windows):
    want = expected(path, windows)
    n_all = len(file_lines(path))
    it.check(len(got) == len(set(got)), "%s: %d duplicate records" % (
        tag, len(got) - len(set(got))))
    if got != want:
        missing = [b for b in want if b not in set(got)]
        extra = [b for b in got if b not in set(want)]
        it.fail("%s: %d records delivered, %d expected (windows %r of %d "
                "lines): missing %r..., not expected %r..." % (
                    tag, len(got), len(want), windows, n_all, missing[:3],
                    extra[:3]))
    skipped = n_all - len(want)
    it.check(skipped > 0, "%s: no line was written while it was excluded "
             "(the test did not exercise the gap)" % tag)
    return len(want), skipped


def settings(wd):
    return {"state_dir": wd.state, "workers": 2,
            "checkpoint_interval": "200ms", "rescan_interval": "1s"}


def bodies_of(recs, tag):
    return [r["body"] for r in recs if r["body"].startswith(tag + " ")]


def part_changes():
    with it.WorkDir("k8s-refilter") as wd:
        node = Node(wd.path)
        api = FakeApiServer(bookmark_interval=0.5)
        pa = node.pod("shop", "a-1")
        pb = node.pod("shop", "b-1")
        pc = node.pod("shop", "c-1")
        front = {"tier": "front", "route": "one"}
        api.add_pod(make_pod("shop", pa.name, pa.uid, NODE, labels=front))
        api.add_pod(make_pod("shop", pb.name, pb.uid, NODE, labels=front))
        api.add_pod(make_pod("shop", pc.name, pc.uid, NODE,
                             labels={"tier": "back", "route": "one"}))
        api.start()
        out1, out2 = wd.p("one.jsonl"), wd.p("two.jsonl")
        select = ("function(src)\n"
                  "  return 'p_' .. (src['k8s.pod.label.route'] or 'one')\n"
                  "end")
        cfgp = it.write_config(
            wd.p("lugger.lua"), settings(wd),
            {"pods": {"type": "kubernetes", "pods_dir": node.pods,
                      "docker_dir": "", "kube_api": api.url,
                      "node_name": NODE, "read_from": "head",
                      "api_wait": "30s",
                      "include": {"labels": {"tier": "front"}},
                      "select": "@SELECT@"}},
            {"p_one": {"sources": ["pods"], "outputs": ["o1"]},
             "p_two": {"sources": ["pods"], "outputs": ["o2"]}},
            {"o1": {"type": "file", "path": out1, "fsync": "never"},
             "o2": {"type": "file", "path": out2, "fsync": "never"}})
        with open(cfgp) as f:
            text = f.read()
        with open(cfgp, "w") as f:
            f.write(text.replace('"@SELECT@"', select))
        r1, r2 = [], []
        f1 = it.JsonlFollower(out1, on_record=r1.append)
        f2 = it.JsonlFollower(out2, on_record=r2.append)

        def poll():
            f1.poll()
            f2.poll()

        la, lb, lc = pa.log("app"), pb.log("app"), pc.log("app")
        w = Writer({"A": la, "B": lb, "C": lc})
        with it.Lugger(cfgp) as lg:
            w.start()
            try:
                def some(tag):
                    poll()
                    return len(bodies_of(r1, tag)) >= 20
                it.wait_for(lambda: some("A") and some("B"), 20,
                            "records of A and B", proc=lg)
                # Exclude A (label) and B (annotation) while they write.
                api.modify_pod(pa.uid, lambda p: p["metadata"][
                    "labels"].update(tier="back", route="two"))
                api.modify_pod(pb.uid, lambda p: p["metadata"][
                    "annotations"].update({"lugger.io/exclude": "true"}))
                sa = wait_event(lg, STOP_RE, la, 1, "A stopped")
                sb = wait_event(lg, STOP_RE, lb, 1, "B stopped")
                it.check("include.labels" in sa.group("why") and
                         sa.group("pod") == "shop/a-1", "A's stop: %r" %
                         sa.group(0))
                it.check("lugger.io/exclude" in sb.group("why"),
                         "B's stop: %r" % sb.group(0))
                w.wait_more(300, lg)
                # Include them again, and C for the first time.
                api.modify_pod(pa.uid, lambda p: p["metadata"][
                    "labels"].update(tier="front"))
                api.modify_pod(pb.uid, lambda p: p["metadata"][
                    "annotations"].pop("lugger.io/exclude"))
                api.modify_pod(pc.uid, lambda p: p["metadata"][
                    "labels"].update(tier="front", route="two"))
                ga = wait_event(lg, START_RE, la, 1, "A read again")
                gb = wait_event(lg, START_RE, lb, 1, "B read again")
                gc = wait_event(lg, START_RE, lc, 1, "C read")
                w.wait_more(300, lg)
            finally:
                w.stop()
            last = {t: "%s %06d" % (t, w.n[t] - 1) for t in w.n}

            def all_in():
                poll()
                return (last["A"] in bodies_of(r1, "A") and
                        last["B"] in bodies_of(r1, "B") and
                        last["C"] in bodies_of(r2, "C"))
            it.wait_for(all_in, 20, "the last lines", proc=lg,
                        detail=lambda: repr(last))
            # Checkpoints follow the acks (written every 200 ms).
            sizes = {p: os.path.getsize(p) for p in (la, lb, lc)}
            it.wait_for(lambda: all(it.checkpoint_offsets(wd.state).get(p) ==
                                    s for p, s in sizes.items()), 10,
                        "checkpoints at the file ends", proc=lg,
                        detail=lambda: "%r vs %r" % (
                            it.checkpoint_offsets(wd.state), sizes))
            lg.stop()
            lg.check_sanitizers()
            n_stop = len(log_events(lg, STOP_RE))
            n_start = len(log_events(lg, START_RE))
        poll()
        it.check(n_stop == 2 and n_start == 3,
                 "%d stop and %d start log lines, want 2 and 3" % (
                     n_stop, n_start))
        # select() chose once per file: A stays in p_one (route became
        # "two" while it was excluded); C got p_two when first read.
        it.check(not bodies_of(r2, "A") and not bodies_of(r2, "B") and
                 not bodies_of(r1, "C"), "a file changed pipeline")
        stats = {}
        for tag, recs, path, stop, start in [
                ("A", r1, la, sa, ga), ("B", r1, lb, sb, gb),
                ("C", r2, lc, None, gc)]:
            windows = [(int(start.group("off")), None)]
            if stop is not None:
                it.check(int(stop.group("off")) <= int(start.group("off")),
                         "%s: started at %s before its stop at %s" % (
                             tag, start.group("off"), stop.group("off")))
                windows.insert(0, (0, int(stop.group("off"))))
            stats[tag] = check_exact(tag, bodies_of(recs, tag), path,
                                     windows)
        # Metadata after the change.
        a_after = [r for r in r1 if r["body"].startswith("A ")][-1]
        it.check(a_after.get("k8s.pod.label.tier") == "front" and
                 a_after.get("k8s.pod.label.route") == "two",
                 "A's last record's labels: %r" % a_after)
        api.stop()
        return stats


def part_api_late():
    with it.WorkDir("k8s-refilter-late") as wd:
        node = Node(wd.path)
        api = FakeApiServer(bookmark_interval=0.5)
        port = api.reserve_port()
        pd = node.pod("shop", "d-1")
        pe = node.pod("shop", "e-1")
        api.add_pod(make_pod("shop", pd.name, pd.uid, NODE,
                             labels={"app": "d"},
                             annotations={"lugger.io/exclude": "true"}))
        api.add_pod(make_pod("shop", pe.name, pe.uid, NODE,
                             labels={"app": "e"}))
        out = wd.p("out.jsonl")
        cfg = it.write_config(
            wd.p("lugger.lua"), settings(wd),
            {"pods": {"type": "kubernetes", "pods_dir": node.pods,
                      "docker_dir": "", "read_from": "head",
                      "kube_api": "http://127.0.0.1:%d" % port,
                      "node_name": NODE, "api_wait": "1s"}},
            {"main": {"sources": ["pods"], "outputs": ["out"]}},
            {"out": {"type": "file", "path": out, "fsync": "never"}})
        recs = []
        fo = it.JsonlFollower(out, on_record=recs.append)
        ld, le = pd.log("app"), pe.log("app")
        w = Writer({"D": ld, "E": le})
        with it.Lugger(cfg) as lg:
            w.start()
            try:
                # The API does not answer: D is read (path metadata only).
                it.wait_for(lambda: fo.poll() >= 0 and
                            len(bodies_of(recs, "D")) >= 20, 20,
                            "D's records while the API is down", proc=lg)
                it.check(all("k8s.pod.label.app" not in r for r in recs),
                         "API metadata while the API is down")
                api.start()
                sd = wait_event(lg, STOP_RE, ld, 1, "D stopped")
                it.check("lugger.io/exclude" in sd.group("why"),
                         "D's stop: %r" % sd.group(0))
                w.wait_more(300, lg)
                api.modify_pod(pd.uid, lambda p: p["metadata"][
                    "annotations"].pop("lugger.io/exclude"))
                gd = wait_event(lg, START_RE, ld, 1, "D read again")
                w.wait_more(300, lg)
            finally:
                w.stop()
            last = {t: "%s %06d" % (t, w.n[t] - 1) for t in w.n}
            it.wait_for(lambda: fo.poll() >= 0 and
                        last["D"] in bodies_of(recs, "D") and
                        last["E"] in bodies_of(recs, "E"), 20,
                        "the last lines", proc=lg)
            lg.stop()
            lg.check_sanitizers()
        fo.poll()
        stats = check_exact("D", bodies_of(recs, "D"), ld,
                            [(0, int(sd.group("off"))),
                             (int(gd.group("off")), None)])
        e = bodies_of(recs, "E")
        it.check(e == [b for _, _, b in file_lines(le)],
                 "E: %d of %d lines, or out of order" % (
                     len(e), len(file_lines(le))))
        d_last = [r for r in recs if r["body"] == last["D"]][0]
        it.check(d_last.get("k8s.pod.label.app") == "d",
                 "D's records after the API came up lack its labels: %r" %
                 d_last)
        api.stop()
        return stats


def part_rotation():
    """The kubelet rotates a pod's log while the pod is excluded, and again
    after it is included: the stream's records are exactly the lines read
    before the stop, then those from the new file's end at the start, then
    all of the file after the second rotation, in order."""
    with it.WorkDir("k8s-refilter-rot") as wd:
        node = Node(wd.path)
        api = FakeApiServer(bookmark_interval=0.5)
        pr = node.pod("shop", "r-1")
        api.add_pod(make_pod("shop", pr.name, pr.uid, NODE,
                             labels={"app": "r"}))
        api.start()
        out = wd.p("out.jsonl")
        cfg = it.write_config(
            wd.p("lugger.lua"), settings(wd),
            {"pods": {"type": "kubernetes", "pods_dir": node.pods,
                      "docker_dir": "", "read_from": "head",
                      "kube_api": api.url, "node_name": NODE,
                      "api_wait": "30s"}},
            {"main": {"sources": ["pods"], "outputs": ["out"]}},
            {"out": {"type": "file", "path": out, "fsync": "never"}})
        recs = []
        fo = it.JsonlFollower(out, on_record=recs.append)
        live = pr.log("app")
        w = Writer({"R": live})
        with it.Lugger(cfg) as lg:
            w.start()
            try:
                it.wait_for(lambda: fo.poll() >= 0 and
                            len(bodies_of(recs, "R")) >= 20, 20,
                            "R's first records", proc=lg)
                api.modify_pod(pr.uid, lambda p: p["metadata"][
                    "annotations"].update({"lugger.io/exclude": "true"}))
                stop = wait_event(lg, STOP_RE, live, 1, "R stopped")
                w.wait_more(100, lg)
                rot1 = w.rotate("R", "20240501-120000")
                w.wait_more(100, lg)
                api.modify_pod(pr.uid, lambda p: p["metadata"][
                    "annotations"].pop("lugger.io/exclude"))
                start = wait_event(lg, START_RE, live, 1, "R read again")
                w.wait_more(100, lg)
                rot2 = w.rotate("R", "20240501-130000")
                w.wait_more(100, lg)
            finally:
                w.stop()
            last = "R %06d" % (w.n["R"] - 1)
            it.wait_for(lambda: fo.poll() >= 0 and
                        last in bodies_of(recs, "R"), 20, "R's last line",
                        proc=lg)
            lg.stop()
            lg.check_sanitizers()
        fo.poll()
        want = (expected(rot1, [(0, int(stop.group("off")))]) +
                expected(rot2, [(int(start.group("off")), None)]) +
                expected(live, [(0, None)]))
        got = bodies_of(recs, "R")
        n_all = sum(len(file_lines(p)) for p in (rot1, rot2, live))
        it.check(got == want, "R through two rotations: %d records, %d "
                 "expected (of %d lines); first difference at %r" % (
                     len(got), len(want), n_all,
                     next((i for i, (a, b) in enumerate(zip(got, want))
                           if a != b), min(len(got), len(want)))))
        it.check(n_all > len(want), "R: no line written while excluded")
        api.stop()
        return len(want), n_all - len(want)


def run():
    it.require_binary()
    t0 = time.monotonic()
    s1 = part_changes()
    s2 = part_api_late()
    s3 = part_rotation()
    return ("filters follow pod changes: A %d read / %d skipped, B %d / %d, "
            "C %d / %d; API late: D %d / %d; rotations: R %d / %d; %.1f s" % (
                s1["A"] + s1["B"] + s1["C"] + s2 + s3 +
                (time.monotonic() - t0,)))


if __name__ == "__main__":
    it.main("k8s_refilter", run)
