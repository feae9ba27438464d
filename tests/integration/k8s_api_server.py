"""A test stand-in for the Kubernetes API server: pods only.

No Kubernetes API server can be installed on the test machines, so this
serves what lugger's kubernetes source asks of the real one, written from
the official API documentation (kubernetes.io, "API Concepts": collections,
"Efficient detection of changes", "Watch bookmarks", "410 Gone responses",
"Retrieving large results sets in chunks"; the Pod v1 reference):

  GET /api/v1/pods?fieldSelector=spec.nodeName=<node>[&limit=N&continue=T]
      -> a PodList: {"kind":"PodList","apiVersion":"v1",
         "metadata":{"resourceVersion":"<rv>","continue":"<token>"?},
         "items":[Pod...]}
  GET /api/v1/pods?fieldSelector=...&watch=1&resourceVersion=<rv>
      &allowWatchBookmarks=true&timeoutSeconds=N
      -> a chunked stream of JSON lines {"type":"ADDED"|"MODIFIED"|"DELETED"|
         "BOOKMARK"|"ERROR","object":{...}}: every change after <rv>, then
         new ones as they happen, BOOKMARKs now and then, until the timeout.
         A <rv> older than the compaction point gets one ERROR event whose
         object is a Status with code 410 (reason "Expired"), as the real
         server does for an expired watch.

Pods carry the real shape (apiVersion, kind, metadata.resourceVersion,
labels, annotations, ownerReferences, spec.nodeName, spec.containers,
status.podIP, status.containerStatuses with containerID, image,
restartCount, lastState). With `token`, requests without
"Authorization: Bearer <token>" get 401 and a Status. With `tls=True`, the
server speaks HTTPS with a self-signed certificate made by `openssl` for
127.0.0.1 (its path is `ca_file`), to exercise lugger's CA option.

The test drives it in-process: add_pod / modify_pod / delete_pod, expire()
(compaction: open watches get the 410 ERROR, old versions stay expired),
stop() and start() (the API down and up again on the same port), and the
counters `lists` and `watches`.
"""

import copy
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_pod(ns, name, uid, node, labels=None, annotations=None, owner=None,
             ip="10.0.0.1", containers=(("app", "example/app:1.0"),),
             statuses=None, volumes=None, mounts=None):
    """A v1 Pod. `owner` = (kind, name); `containers` = [(name, image)];
    `statuses` = {container: (containerID, restartCount, lastContainerID)};
    `volumes` = spec.volumes as the API has them; `mounts` = {container:
    its volumeMounts}."""
    md = {"name": name, "namespace": ns, "uid": uid,
          "creationTimestamp": "2024-05-01T12:00:00Z",
          "labels": dict(labels or {}),
          "annotations": dict(annotations or {})}
    if owner:
        md["ownerReferences"] = [{
            "apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
            "uid": "owner-" + uid, "controller": True,
            "blockOwnerDeletion": True}]
    cs = []
    for cname, image in containers:
        cid, restarts, last = (statuses or {}).get(
            cname, ("containerd://%s-%s" % (uid[:8], cname), 0, None))
        st = {"name": cname, "image": image, "imageID": image + "@sha256:00",
              "containerID": cid, "ready": True, "restartCount": restarts,
              "started": True, "state": {"running": {
                  "startedAt": "2024-05-01T12:00:01Z"}}, "lastState": {}}
        if last:
            st["lastState"] = {"terminated": {"containerID": last,
                                              "exitCode": 1}}
        cs.append(st)
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": md,
        "spec": {"nodeName": node, "containers": [
            dict({"name": c, "image": i},
                 **({"volumeMounts": mounts[c]} if mounts and c in mounts
                    else {}))
            for c, i in containers],
            **({"volumes": volumes} if volumes else {})},
        "status": {"phase": "Running", "podIP": ip, "hostIP": "192.168.0.1",
                   "containerStatuses": cs},
    }


def status_obj(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason,
            "code": code}


def make_cert(dirpath, ips=("127.0.0.1",)):
    """A self-signed certificate for the IP addresses `ips`; returns (cert,
    key)."""
    cert = os.path.join(dirpath, "api.crt")
    key = os.path.join(dirpath, "api.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj",
         "/CN=%s" % ips[0], "-addext",
         "subjectAltName=" + ",".join("IP:" + ip for ip in ips)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


class FakeApiServer:
    def __init__(self, token=None, tls=False, workdir=None,
                 bookmark_interval=1.0, host="127.0.0.1", cert_ips=None):
        """`host`: the address to listen on; `cert_ips`: the addresses the
        TLS certificate names (default: `host`), e.g. a bridge gateway a
        pod reaches the server at."""
        self.token = token
        self.host = host
        self.tls = tls
        self.bookmark_interval = bookmark_interval
        self.cond = threading.Condition()
        self.rv = 100
        self.pods = {}         # uid -> Pod object
        self.events = []       # (rv, type, Pod object)
        self.compacted = 0     # versions <= this are expired (410)
        self.epoch = 0         # bumped by stop(), end_watches(): watches end
        self.expiry = 0        # bumped by expire(): watches get the 410
        self.lists = 0
        self.watches = 0
        self.requests = []     # (path, Authorization header)
        self.httpd = None
        self.thread = None
        self.port = 0
        self.ca_file = None
        self.cert = self.key = None
        if tls:
            self.cert, self.key = make_cert(
                workdir, tuple(cert_ips or (host,)))
            self.ca_file = self.cert

    # -- control (test thread)

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http",
                                      self.port)

    def start(self):
        """Starts serving (again on the same port after stop())."""
        handler = self._handler()
        srv = ThreadingHTTPServer((self.host, self.port), handler,
                                  bind_and_activate=False)
        srv.allow_reuse_address = True
        srv.daemon_threads = True
        srv.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.server_bind()
        srv.server_activate()
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.cert, self.key)
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        self.port = srv.server_address[1]
        self.httpd = srv
        self.thread = threading.Thread(target=srv.serve_forever,
                                       kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self):
        """The API goes down: no new connections, open watches end."""
        if self.httpd is None:
            return
        with self.cond:
            self.epoch += 1
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.httpd = None

    def reserve_port(self):
        """Picks a free port without serving yet (for an API that is down
        at lugger's start)."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def _event(self, typ, pod):
        self.rv += 1
        pod["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append((self.rv, typ, copy.deepcopy(pod)))
        self.cond.notify_all()

    def add_pod(self, pod):
        with self.cond:
            self.pods[pod["metadata"]["uid"]] = pod
            self._event("ADDED", pod)

    def modify_pod(self, uid, fn):
        with self.cond:
            fn(self.pods[uid])
            self._event("MODIFIED", self.pods[uid])

    def delete_pod(self, uid):
        with self.cond:
            pod = self.pods.pop(uid)
            self._event("DELETED", pod)

    def end_watches(self):
        """Ends open watches normally (as the server's timeout would)."""
        with self.cond:
            self.epoch += 1
            self.cond.notify_all()

    def expire(self):
        """Compaction: every version seen so far is too old now."""
        with self.cond:
            self.compacted = self.rv
            self.rv += 1
            self.expiry += 1
            self.cond.notify_all()

    # -- serving (server threads)

    def _handler(self):
        api = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _json(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(u.query))
                auth = self.headers.get("Authorization")
                with api.cond:
                    api.requests.append((self.path, auth))
                if api.token is not None and auth != "Bearer " + api.token:
                    return self._json(401, status_obj(
                        401, "Unauthorized", "Unauthorized"))
                if u.path != "/api/v1/pods":
                    return self._json(404, status_obj(
                        404, "NotFound", "the server could not find the "
                        "requested resource"))
                node = None
                fs = q.get("fieldSelector", "")
                if fs.startswith("spec.nodeName="):
                    node = fs[len("spec.nodeName="):]
                elif fs:
                    return self._json(400, status_obj(
                        400, "BadRequest", "unsupported field selector"))
                if q.get("watch") in ("1", "true"):
                    return self._watch(node, q)
                return self._list(node, q)

            def _list(self, node, q):
                with api.cond:
                    api.lists += 1
                    items = [copy.deepcopy(p) for p in api.pods.values()
                             if node is None or p["spec"]["nodeName"] == node]
                    rv = api.rv
                items.sort(key=lambda p: p["metadata"]["uid"])
                start = int(q.get("continue") or 0)
                limit = int(q.get("limit") or 0)
                md = {"resourceVersion": str(rv)}
                if limit and start + limit < len(items):
                    md["continue"] = str(start + limit)
                    items = items[start:start + limit]
                else:
                    items = items[start:]
                self._json(200, {"kind": "PodList", "apiVersion": "v1",
                                 "metadata": md, "items": items})

            def _chunk(self, obj):
                data = (json.dumps(obj) + "\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _watch(self, node, q):
                since = int(q.get("resourceVersion") or 0)
                timeout = float(q.get("timeoutSeconds") or 1800)
                bookmarks = q.get("allowWatchBookmarks") == "true"
                with api.cond:
                    api.watches += 1
                    epoch, expiry = api.epoch, api.expiry
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                deadline = time.monotonic() + timeout
                last_bm = time.monotonic()
                try:
                    while True:
                        with api.cond:
                            if since <= api.compacted or \
                                    api.expiry != expiry:
                                out = [{"type": "ERROR", "object": status_obj(
                                    410, "Expired",
                                    "too old resource version: %d (%d)" % (
                                        since, api.compacted + 1))}]
                                done = True
                            else:
                                out = [{"type": t, "object": o}
                                       for rv, t, o in api.events
                                       if rv > since and (
                                           node is None or
                                           o["spec"]["nodeName"] == node)]
                                if api.events:
                                    since = max(since, api.events[-1][0])
                                # stop() ends open watches.
                                done = api.epoch != epoch
                                if not out and not done:
                                    api.cond.wait(0.1)
                                    now = time.monotonic()
                                    # A bookmark says every event up to its
                                    # version was sent: not while one that
                                    # came during the wait is still to go
                                    # (it would be skipped for good).
                                    if bookmarks and now - last_bm >= \
                                            api.bookmark_interval and \
                                            not (api.events and
                                                 api.events[-1][0] > since):
                                        last_bm = now
                                        out = [{"type": "BOOKMARK", "object": {
                                            "kind": "Pod", "apiVersion": "v1",
                                            "metadata": {"resourceVersion":
                                                         str(api.rv)}}}]
                                        since = max(since, api.rv)
                        for ev in out:
                            self._chunk(ev)
                        if done or time.monotonic() >= deadline:
                            break
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError,
                        OSError):
                    pass
                self.close_connection = True

        return H
