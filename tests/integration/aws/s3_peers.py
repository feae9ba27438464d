#!/usr/bin/env python3
"""Starts the S3 test peers for the output conformance suite: npm s3rver
(bucket `logs`, keys S3RVER/S3RVER) on a free loopback port in a temporary
directory, and sigv4_verify.js forwarding to it (every request's signature
checked with npm aws4; /_fake/faults and /_fake/records for the suite).
Prints "PORT <verifier port>" and runs until killed (its children die with
it: PR_SET_PDEATHSIG).
"""
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def pdeathsig():
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)


def main():
    # usage: s3_peers.py [DIR]  (s3rver's store; default a temporary one)
    d = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="lugger-s3rver-")
    os.makedirs(d, exist_ok=True)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    s3 = subprocess.Popen(
        [os.path.join(HERE, "node_modules", ".bin", "s3rver"), "-d", d, "-a",
         "127.0.0.1", "-p", str(port), "--configure-bucket", "logs",
         "--silent"], stdout=subprocess.DEVNULL, preexec_fn=pdeathsig)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    v = subprocess.Popen(
        ["node", os.path.join(HERE, "sigv4_verify.js"), "--region",
         "us-east-1", "--service", "s3", "--key", "S3RVER", "--secret",
         "S3RVER", "--forward", "http://127.0.0.1:%d" % port],
        stdout=subprocess.PIPE, preexec_fn=pdeathsig)
    line = v.stdout.readline().decode()
    m = re.match(r"PORT (\d+)", line)
    if not m:
        sys.exit("verifier did not start: %r" % line)
    print("PORT %s" % m.group(1), flush=True)

    def stop(*_):
        for p in (v, s3):
            p.kill()
        shutil.rmtree(d, ignore_errors=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        v.wait()
    finally:
        stop()


if __name__ == "__main__":
    main()
