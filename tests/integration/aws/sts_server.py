#!/usr/bin/env python3
"""A stand-in for AWS STS AssumeRoleWithWebIdentity, for lugger's tests.

No STS emulator exists here, so this speaks the Query API as the STS API
reference describes it: POST / with an application/x-www-form-urlencoded
body (Action=AssumeRoleWithWebIdentity, Version=2011-06-15, RoleArn,
RoleSessionName, WebIdentityToken, optional DurationSeconds), unsigned; the
answer is the AssumeRoleWithWebIdentityResponse XML document with
Credentials (AccessKeyId, SecretAccessKey, SessionToken, Expiration), and
errors are HTTP 400 ErrorResponse documents (Error/Type, Code, Message).

usage: sts_server.py --accept FILE --role-arn ARN [--duration SECONDS]
  FILE holds the token currently valid (re-read at each request, so a test
  can rotate it); Expiration is now + SECONDS (default 3600). Prints
  "PORT n". Issued keys are ASIASTAND<n>, secret<n>, token<n>+/= .
  GET /__sts answers {"requests": [...form fields...], "issued": n}.
"""
import argparse
import json
import sys
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NS = "https://sts.amazonaws.com/doc/2011-06-15/"


def esc(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, ctype="text/xml"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, typ, code, msg):
        self.reply(status, '<ErrorResponse xmlns="%s"><Error><Type>%s</Type>'
                   '<Code>%s</Code><Message>%s</Message></Error>'
                   '<RequestId>%s</RequestId></ErrorResponse>'
                   % (NS, typ, code, esc(msg), uuid.uuid4()))

    def do_GET(self):
        if self.path == "/__sts":
            st = self.server.st
            return self.reply(200, json.dumps(st), "application/json")
        self.error(400, "Sender", "InvalidAction", "GET is not used here")

    def do_POST(self):
        st = self.server.st
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n).decode()
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("application/x-www-form-urlencoded"):
            return self.error(400, "Sender", "InvalidParameterValue",
                              "Content-Type must be application/x-www-form-urlencoded")
        form = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
        st["requests"].append(form)
        if form.get("Action") != "AssumeRoleWithWebIdentity":
            return self.error(400, "Sender", "InvalidAction",
                              "Could not find operation %s" % form.get("Action"))
        if form.get("Version") != "2011-06-15":
            return self.error(400, "Sender", "InvalidParameterValue", "Version")
        for k in ("RoleArn", "RoleSessionName", "WebIdentityToken"):
            if not form.get(k):
                return self.error(400, "Sender", "MissingParameter",
                                  "The request must contain the parameter %s" % k)
        if form["RoleArn"] != self.server.role_arn:
            return self.error(403, "Sender", "AccessDenied",
                              "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        with open(self.server.accept) as f:
            valid = f.read().strip()
        if form["WebIdentityToken"] != valid:
            return self.error(400, "Sender", "InvalidIdentityToken",
                              "Couldn't retrieve verification key from your identity provider")
        st["issued"] += 1
        i = st["issued"]
        exp = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                            time.gmtime(time.time() + self.server.duration))
        self.reply(200, (
            '<AssumeRoleWithWebIdentityResponse xmlns="%s">'
            '<AssumeRoleWithWebIdentityResult>'
            '<SubjectFromWebIdentityToken>system:serviceaccount:logging:lugger</SubjectFromWebIdentityToken>'
            '<Audience>sts.amazonaws.com</Audience>'
            '<AssumedRoleUser><Arn>%s/%s</Arn><AssumedRoleId>AROASTAND:%s</AssumedRoleId></AssumedRoleUser>'
            '<Credentials><SessionToken>%s</SessionToken>'
            '<SecretAccessKey>secret%d</SecretAccessKey>'
            '<Expiration>%s</Expiration><AccessKeyId>ASIASTAND%d</AccessKeyId></Credentials>'
            '<Provider>oidc.eks.example</Provider>'
            '</AssumeRoleWithWebIdentityResult>'
            '<ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata>'
            '</AssumeRoleWithWebIdentityResponse>')
            % (NS, esc(form["RoleArn"]), esc(form["RoleSessionName"]),
               esc(form["RoleSessionName"]), esc("token%d+/=&" % i), i, exp, i,
               uuid.uuid4()))


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that closes with a request in flight (lugger shutting
        # down) is not an error of the stand-in.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--accept", required=True)
    ap.add_argument("--role-arn", required=True)
    ap.add_argument("--duration", type=float, default=3600)
    a = ap.parse_args()
    srv = Server(("127.0.0.1", 0), Handler)
    srv.accept, srv.role_arn, srv.duration = a.accept, a.role_arn, a.duration
    srv.st = {"requests": [], "issued": 0}
    print("PORT %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
