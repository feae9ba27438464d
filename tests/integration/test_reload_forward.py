#!/usr/bin/env python3
"""README "Hot reload" for a `forward` source: a reload that changes its
port moves the listener (the old port refuses connections, the new one
takes messages, delivered as before), and a reload that removes it closes
its port; the file source next to it reads on throughout.

Messages are Fluent forward "Message" mode entries ([tag, time, record],
the forward protocol v1 spec), encoded here by hand.
"""
import json
import os
import signal
import socket
import struct
import time

import lugger_it as it


def mp_str(s):
    b = s.encode()
    return bytes([0xa0 | len(b)]) + b


def message(tag, text):
    return (b"\x93" + mp_str(tag) + b"\xce" + struct.pack(">I", int(time.time()))
            + b"\x81" + mp_str("log") + mp_str(text))


def send(port, text):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(message("app.x", text))


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def config(wd, log, fw_port):
    sources = {"app": {"type": "file", "paths": [log], "read_from": "head",
                       "format": "line"}}
    if fw_port is not None:
        sources["fw"] = {"type": "forward", "host": "127.0.0.1",
                         "port": fw_port, "udp_heartbeat": False}
    return it.write_config(
        wd.p("lugger.lua"),
        {"state_dir": wd.state, "workers": 1, "checkpoint_interval": "200ms"},
        sources, {"main": {"sources": sorted(sources), "outputs": ["out"]}},
        {"out": {"type": "file", "path": wd.p("out.jsonl")}})


def run():
    it.require_binary()
    with it.WorkDir("reload_forward") as wd:
        log = os.path.join(wd.logs, "a.log")
        with open(log, "w") as f:
            f.write("file 1\n")
        out = wd.p("out.jsonl")

        def bodies():
            if not os.path.exists(out):
                return []
            return [r["body"] for r in it.read_jsonl(out, allow_partial_tail=True)]

        def reloaded(gen):
            return any("config generation %d running" % gen in r.get("msg", "")
                       for r in lug.log_records())

        a, b = it.free_port(), it.free_port()
        conf = config(wd, log, a)
        with it.Lugger(conf) as lug:
            lug.wait_started()
            send(a, "fwd 1")
            it.wait_for(lambda: sorted(bodies()) == ["file 1", "fwd 1"], 30,
                        "the first records", proc=lug, detail=lambda: repr(bodies()))

            config(wd, log, b)
            lug.proc.send_signal(signal.SIGHUP)
            it.wait_for(lambda: reloaded(1), 30, "generation 1", proc=lug)
            it.wait_for(lambda: refused(a), 10, "port %d closed" % a, proc=lug)
            send(b, "fwd 2")
            with open(log, "a") as f:
                f.write("file 2\n")
            it.wait_for(lambda: len(bodies()) == 4, 30, "fwd 2 and file 2",
                        proc=lug, detail=lambda: repr(bodies()))

            config(wd, log, None)
            lug.proc.send_signal(signal.SIGHUP)
            it.wait_for(lambda: reloaded(2), 30, "generation 2", proc=lug)
            it.wait_for(lambda: refused(b), 10, "port %d closed" % b, proc=lug)
            with open(log, "a") as f:
                f.write("file 3\n")
            it.wait_for(lambda: len(bodies()) == 5, 30, "file 3", proc=lug,
                        detail=lambda: repr(bodies()))
            lug.stop()
        got = bodies()
        it.check(sorted(got) == ["file 1", "file 2", "file 3", "fwd 1", "fwd 2"],
                 "records: %r" % got)
        with open(out) as f:
            tags = [json.loads(x).get("fluent.tag") for x in f]
        it.check(tags.count("app.x") == 2, "tags: %r" % tags)
        return ("a forward source moved to another port and removed by "
                "reloads: the old port closed each time, every record once")


if __name__ == "__main__":
    it.main("test_reload_forward", run)
