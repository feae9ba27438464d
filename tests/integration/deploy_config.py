"""Runs a deploy/<backend>/configmap.yaml the way the DaemonSet would, on
a test node: its files written out as the kubelet mounts a ConfigMap, with
only what differs on a test machine substituted (the node's paths, the
stand-in API server, the backend's URL, a free port for settings.http, the
state directory), then checked with `lugger check` and returned for
`lugger run`."""

import os
import re
import subprocess

import yaml

import lugger_it as it


def materialise(wd, backend, backend_url, api_url, pods_dir, node, port):
    path = os.path.join(it.SOURCE_DIR, "deploy", backend, "configmap.yaml")
    with open(path) as f:
        cm = yaml.safe_load(f)
    etc = wd.mk("etc-lugger")
    for name, text in cm["data"].items():
        if name == "lugger.lua":
            text = text.replace('"/var/lib/lugger"', repr(wd.state).replace("'", '"'))
            text = text.replace('"0.0.0.0:2020"', '"127.0.0.1:%d"' % port)
            text = text.replace('read_from = "tail"', 'read_from = "head"')
            text = re.sub(r'type = "kubernetes",',
                          'type = "kubernetes", pods_dir = "%s", docker_dir = "", '
                          'kube_api = "%s", node_name = "%s",' % (pods_dir, api_url, node),
                          text, count=1)
            text = re.sub(r'hosts = \{ "[^"]*" \}', 'hosts = { "%s" }' % backend_url, text,
                          count=1)
        with open(os.path.join(etc, name), "w") as f:
            f.write(text)
    conf = os.path.join(etc, "lugger.lua")
    r = subprocess.run([it.LUGGER, "check", "-c", conf], capture_output=True, text=True,
                       env=it.asan_env())
    it.check(r.returncode == 0, "lugger check -c deploy/%s/configmap.yaml's lugger.lua: "
             "%s %s" % (backend, r.stdout, r.stderr))
    return conf
