#!/usr/bin/env python3
"""deploy/monitoring/: the PodMonitor, the alert rules and the Grafana
dashboard, against a running lugger and a real Prometheus.

1. Names: every `lugger_*` metric the rules and the dashboard's queries
   name is a family on the /metrics of a running lugger with a file
   source, a kubernetes source, file outputs, a Kafka output (its broker
   unreachable: its metrics exist from the start) and a script; every
   label a query matches on or groups by is a label of that family (or
   one the PodMonitor's scrape adds: namespace, pod, instance, job). No
   invented names.
2. The PodMonitor selects the DaemonSet's pods (labels, namespace) on
   its container port's name, at the path lugger serves.
3. The rules run in Prometheus itself (Debian's `prometheus` 2.42; its
   `promtool check rules` passes first): Prometheus scrapes the running
   lugger every second as the PodMonitor's job would (job
   "logging/lugger", labels namespace and pod), with the rules' `for:`
   set to 0 so the test need not wait minutes. A healthy lugger fires no
   alert; a script error fires LuggerDeadLetterGrowing; a config that
   fails to reload fires LuggerReloadFailed; 20 MB for an output that
   never answers (a Kafka broker that is not there) with a 1 MiB budget
   fire LuggerMemoryBudgetSaturated and LuggerFilesFallingBehind (and
   lugger_source_unread_bytes holds what was not read); lugger stopped
   fires LuggerDown; started again, it reads again the records it had
   sent to Kafka and never got acked, which fires LuggerRecordsReread for
   that source. Alerts that need minutes of real backpressure are checked
   by name and expression only (1.). promtool's rule tests
   (ops/alerts_test.yaml, on the rules as shipped) check what needs real
   windows: LuggerRecordsReread after a container restart and for a
   replaced pod, and resolved 15 minutes later.
4. The dashboard: valid JSON, every panel has queries on the
   `${datasource}` variable, ids of panels distinct by position.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import yaml

import lugger_it as it

MON = os.path.join(it.SOURCE_DIR, "deploy", "monitoring")
OPS_TESTS = os.path.join(it.SOURCE_DIR, "tests", "integration", "ops")
SCRAPE_LABELS = {"namespace", "pod", "instance", "job"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left",
                "group_right", "and", "or", "unless", "offset", "bool"}


def metric_families(text):
    """{family: set of label keys} from Prometheus text format."""
    fams = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            fams.setdefault(line.split()[2], set())
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s", line)
            it.check(m is not None, "/metrics line %r" % line)
            keys = set(re.findall(r"(\w+)=\"", m.group(3) or ""))
            fams.setdefault(m.group(1), set()).update(keys)
    return fams


def query_names(expr):
    """The lugger_* names an expression uses, and the label keys it
    matches on ({k="v"}) or groups by (by/on/without/ignoring (...))."""
    names = set(re.findall(r"\blugger_\w+", expr))
    labels = set()
    for sel in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", sel))
    for grp in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)",
                          expr):
        labels |= {g.strip() for g in grp.split(",") if g.strip()}
    return names, labels


def rules_doc():
    with open(os.path.join(MON, "alerts.yaml")) as f:
        doc = yaml.safe_load(f)
    it.check(doc["kind"] == "PrometheusRule" and
             doc["apiVersion"] == "monitoring.coreos.com/v1",
             "alerts.yaml: %s %s" % (doc.get("apiVersion"), doc.get("kind")))
    return doc


def dashboard():
    with open(os.path.join(MON, "grafana-dashboard.json")) as f:
        d = json.load(f)
    exprs = []
    seen = set()
    for p in d["panels"]:
        it.check(p.get("targets"), "panel %r has no queries" % p.get("title"))
        it.check(p["datasource"]["uid"] == "${datasource}",
                 "panel %r: datasource %r" % (p["title"], p["datasource"]))
        pos = (p["gridPos"]["x"], p["gridPos"]["y"])
        it.check(pos not in seen, "two panels at %r" % (pos,))
        seen.add(pos)
        exprs += [t["expr"] for t in p["targets"]]
    for v in d["templating"]["list"]:
        if v.get("query") and v["type"] == "query":
            exprs.append(v["query"])
    return d, exprs


def check_podmonitor():
    with open(os.path.join(MON, "podmonitor.yaml")) as f:
        pm = yaml.safe_load(f)
    with open(os.path.join(it.SOURCE_DIR, "deploy", "daemonset.yaml")) as f:
        ds = [d for d in yaml.safe_load_all(f) if d and
              d.get("kind") == "DaemonSet"][0]
    it.check(pm["kind"] == "PodMonitor", "podmonitor.yaml: %s" % pm["kind"])
    tmpl = ds["spec"]["template"]
    sel = pm["spec"]["selector"]["matchLabels"]
    it.check(all(tmpl["metadata"]["labels"].get(k) == v
                 for k, v in sel.items()),
             "PodMonitor selector %r does not match the DaemonSet's pods %r"
             % (sel, tmpl["metadata"]["labels"]))
    it.check(ds["metadata"]["namespace"] in
             pm["spec"]["namespaceSelector"]["matchNames"],
             "PodMonitor looks in %r, the DaemonSet is in %s" % (
                 pm["spec"]["namespaceSelector"], ds["metadata"]["namespace"]))
    ports = {p["name"] for c in tmpl["spec"]["containers"]
             for p in c.get("ports", [])}
    for ep in pm["spec"]["podMetricsEndpoints"]:
        it.check(ep["port"] in ports, "PodMonitor port %r, the pods have %r"
                 % (ep["port"], ports))
        it.check(ep.get("path", "/metrics") == "/metrics", "path %r" %
                 ep.get("path"))
    # The job label the rules use is the one the operator gives a
    # PodMonitor's targets: <namespace>/<name>.
    return "%s/%s" % (pm["metadata"]["namespace"], pm["metadata"]["name"])


class Prometheus:
    def __init__(self, wd, rules_path, target_port, job):
        self.port = it.free_port()
        self.dir = wd.mk("prom")
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            yaml.safe_dump({
                "global": {"scrape_interval": "1s",
                           "evaluation_interval": "1s"},
                "rule_files": [rules_path],
                "scrape_configs": [{
                    "job_name": job, "scrape_timeout": "1s",
                    "static_configs": [{
                        "targets": ["127.0.0.1:%d" % target_port],
                        "labels": {"namespace": "logging",
                                   "pod": "lugger-test"}}]}]}, f)
        self.log = open(os.path.join(self.dir, "prometheus.log"), "wb")
        self.proc = subprocess.Popen(
            ["prometheus", "--config.file=" + cfg,
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        it.wait_for(lambda: self.get("/-/ready") is not None, 30,
                    "Prometheus ready", detail=self.log_tail)

    def log_tail(self):
        with open(self.log.name, "rb") as f:
            return f.read()[-3000:].decode("utf-8", "replace")

    def get(self, path):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (
                    self.port, path), timeout=5) as r:
                return r.read().decode()
        except OSError:
            return None

    def alerts(self):
        """The firing alerts: [{"labels": ..., "value": ...}]."""
        body = self.get("/api/v1/alerts")
        if body is None:
            return []
        return [a for a in json.loads(body)["data"]["alerts"]
                if a["state"] == "firing"]

    def firing(self):
        return {a["labels"]["alertname"] for a in self.alerts()}

    def rule_health(self):
        data = json.loads(self.get("/api/v1/rules"))["data"]
        return {r["name"]: (r.get("health"), r.get("lastError"))
                for g in data["groups"] for r in g["rules"]}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main():
    it.require_binary()
    for tool in ("prometheus", "promtool"):
        it.check(shutil.which(tool), "%s is not installed (scripts/setup "
                 "installs Debian's prometheus)" % tool)
    job = check_podmonitor()
    doc = rules_doc()
    d, dash_exprs = dashboard()
    rules = [r for g in doc["spec"]["groups"] for r in g["rules"]]
    with it.WorkDir("ops-kit") as wd:
        # A lugger with every kind of metric the kit names.
        http_port = it.free_port()
        logs = wd.mk("logs")
        wd.mk("pods")
        app = os.path.join(logs, "app.log")
        open(app, "w").close()
        cfg = wd.p("lugger.lua")
        state = wd.mk("state")
        idle_dir = wd.mk("none")

        def config(extra=""):
            it.write_config(
                cfg,
                {"state_dir": state,
                 "http": "127.0.0.1:%d" % http_port, "workers": 1,
                 "rescan_interval": "1s", "memory_budget": "1MiB",
                 "shutdown_timeout": "2s"},
                {"app": {"type": "file", "paths": [logs + "/*.log"],
                         "read_from": "head"},
                 "pods": {"type": "kubernetes", "pods_dir": wd.p("pods"),
                          "docker_dir": "", "kube_api": "off"},
                 "idle": {"type": "file", "paths": [wd.p("none") + "/*.log"]}},
                {"main": {"sources": ["app", "pods"], "scripts": ["s.lua"],
                          "outputs": ["out"]},
                 "k": {"sources": ["idle"], "outputs": ["kafka"]}},
                {"out": {"type": "file", "path": wd.p("out.jsonl"),
                         "fsync": "never"},
                 "kafka": {"type": "kafka", "brokers": "127.0.0.1:1",
                           "topic": "logs"}},
                scripts={"s.lua": 'function process(rec)\n'
                         '  if rec.body == "boom" then error("boom") end\n'
                         'end\n' + extra})

        config()
        lg = it.Lugger(cfg)
        prom = None
        try:
            lg.wait_started()
            it.wait_for(lambda: it.http_get(http_port, "/readyz")[0] == 200,
                        20, "/readyz", proc=lg, detail=lg.stderr_tail)
            _, text = it.http_get(http_port, "/metrics")
            fams = metric_families(text)
            used = {}
            for r in rules:
                n, l = query_names(r["expr"])
                used["alert " + r["alert"]] = (n, l)
            for i, e in enumerate(dash_exprs):
                used["dashboard query %d (%s)" % (i, e[:60])] = \
                    query_names(e)
            names = set()
            for where, (ns, ls) in used.items():
                for n in ns:
                    it.check(n in fams, "%s uses %s, which lugger's /metrics "
                             "does not have (it has %s)" % (
                                 where, n, sorted(fams)))
                    names.add(n)
                known = set().union(*(fams[n] for n in ns)) | SCRAPE_LABELS \
                    if ns else SCRAPE_LABELS
                for lab in ls - PROMQL_WORDS:
                    it.check(lab in known, "%s: label %r is on none of %s "
                             "(their labels: %s)" % (where, lab, sorted(ns),
                                                     sorted(known)))
            it.log("%d metric names in the kit, all on /metrics: %s" % (
                len(names), ", ".join(sorted(names))))

            # The rules in Prometheus: syntax first, then live.
            rules_path = wd.p("rules.yaml")
            live = json.loads(json.dumps(doc["spec"]))
            for g in live["groups"]:
                g["interval"] = "1s"
                for r in g["rules"]:
                    r["for"] = "0s"
            with open(rules_path, "w") as f:
                yaml.safe_dump(live, f)
            r = subprocess.run(["promtool", "check", "rules", rules_path],
                               capture_output=True, text=True)
            it.check(r.returncode == 0, "promtool check rules:\n%s%s" % (
                r.stdout, r.stderr))
            # promtool's rule tests, on the rules as shipped (real `for:`).
            with open(wd.p("alerts.rules.yaml"), "w") as f:
                yaml.safe_dump(doc["spec"], f)
            shutil.copy(os.path.join(OPS_TESTS, "alerts_test.yaml"), wd.p())
            r = subprocess.run(["promtool", "test", "rules",
                                wd.p("alerts_test.yaml")],
                               capture_output=True, text=True)
            it.check(r.returncode == 0, "promtool test rules:\n%s%s" % (
                r.stdout, r.stderr))
            prom = Prometheus(wd, rules_path, http_port, job)
            it.wait_for(lambda: '"value"' in (prom.get(
                "/api/v1/query?query=up") or ""), 30,
                "Prometheus's first scrape", detail=prom.log_tail)
            time.sleep(3)  # a few evaluations of a healthy lugger
            health = prom.rule_health()
            bad = {k: v for k, v in health.items() if v[0] not in ("ok",)}
            it.check(not bad, "rules not evaluating: %s" % bad)
            it.check(prom.firing() == set(), "a healthy lugger fires %s" %
                     prom.firing())
            # A script error: the record goes to the dead-letter output.
            with open(app, "a") as f:
                f.write("fine\nboom\n")
            it.wait_for(lambda: "LuggerDeadLetterGrowing" in prom.firing(),
                        30, "LuggerDeadLetterGrowing",
                        detail=lambda: "%s\n%s" % (prom.firing(),
                                                   lg.stderr_tail()))
            # A ConfigMap edit that does not load.
            with open(cfg, "a") as f:
                f.write("this is not Lua\n")
            it.wait_for(lambda: "LuggerReloadFailed" in prom.firing(), 30,
                        "LuggerReloadFailed", detail=lambda: "%s\n%s" % (
                            prom.firing(), lg.stderr_tail()))
            # An output that never answers (no Kafka broker there): 20 MB
            # written to the source routed to it fill the memory budget,
            # reading pauses, and the file's unread bytes stay.
            with open(os.path.join(idle_dir, "big.log"), "w") as f:
                line = "x" * 99 + "\n"
                for _ in range(200000):
                    f.write(line)
            for name in ("LuggerMemoryBudgetSaturated",
                         "LuggerFilesFallingBehind"):
                it.wait_for(lambda: name in prom.firing(), 30, name,
                            detail=lambda: "%s\n%s" % (
                                prom.firing(), lg.stderr_tail()))
            _, text = it.http_get(http_port, "/metrics")
            m = re.search(r'^lugger_source_unread_bytes\{source="idle"\} '
                          r'(\d+)$', text, re.M)
            it.check(m and 16 << 20 < int(m.group(1)) <= 20_000_000,
                     "unread bytes of the idle source: %s" % (
                         m and m.group(1)))
            unread = int(m.group(1))
            it.check("LuggerDown" not in prom.firing(), "LuggerDown while "
                     "up")
            it.check("LuggerRecordsReread" not in prom.firing(),
                     "LuggerRecordsReread before any restart")
            # Records of the idle source handed to the Kafka producer: the
            # "sent" mark the next lugger counts re-reads up to.
            it.wait_for(lambda: re.search(
                r'^lugger_output_requests_in_flight\{output="kafka"\} [1-9]',
                it.http_get(http_port, "/metrics")[1], re.M), 60,
                "a request in flight to the Kafka output", proc=lg,
                detail=lg.stderr_tail)
            lg.stop()
            it.wait_for(lambda: "LuggerDown" in prom.firing(), 30,
                        "LuggerDown", detail=prom.firing)
            # The records of the idle source that were sent to the Kafka
            # output (into its producer's queue) and never acked are read
            # again by the next lugger: possible duplicates.
            config()
            first = lg
            lg = it.Lugger(cfg)
            lg.wait_started()
            it.wait_for(lambda: "LuggerRecordsReread" in prom.firing(), 30,
                        "LuggerRecordsReread", detail=lambda: "%s\n%s\n%s\n%s" % (
                            prom.firing(), first.stderr_text()[-3000:],
                            lg.stderr_text()[-6000:],
                            os.popen("tail -c 3000 %s/*" % state).read()))
            reread = it.metric_sum(http_port, "lugger_records_reread_total")
            alert = [a for a in prom.alerts() if a["labels"]["alertname"] ==
                     "LuggerRecordsReread"]
            it.check(reread > 0 and len(alert) == 1 and
                     alert[0]["labels"]["source"] == "idle",
                     "LuggerRecordsReread %r, lugger_records_reread_total "
                     "%s" % (alert, reread))
            fired = ["LuggerDeadLetterGrowing", "LuggerReloadFailed",
                     "LuggerMemoryBudgetSaturated",
                     "LuggerFilesFallingBehind (%d bytes unread)" % unread,
                     "LuggerDown",
                     "LuggerRecordsReread (%d records)" % reread]
        finally:
            lg.kill9()
            if prom:
                prom.stop()
    return ("%d alerts and %d dashboard queries use %d metric names, all "
            "served; Prometheus ran the rules on a live lugger: none when "
            "healthy, then %s in turn" % (len(rules), len(dash_exprs),
                                       len(names), ", ".join(fired)))


if __name__ == "__main__":
    it.main("test_ops_kit", main)
