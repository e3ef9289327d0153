"""A stand-in webhook receiver for tests/delivery_log.rs.

Usage: webhook_receiver.py PORT OUT_FILE FAIL_FIRST SECRET_FILE

Answers 500 to the first FAIL_FIRST calls; every later call's Postern-Signature is
checked with Python's own hmac (t=UNIX,v1=HEX over t + "." + body), and one JSON
line {"valid": bool, "body": {...}} per call is appended to OUT_FILE (200 when
valid, 400 when not). Every call, failed or not, adds a line {"call": n}.
"""
import hashlib
import hmac
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port, out, fail_first, secret_file = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
secret = open(secret_file, "rb").read().rstrip(b"\r\n")
calls = 0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global calls
        calls += 1
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with open(out, "a") as f:
            f.write(json.dumps({"call": calls}) + "\n")
        if calls <= fail_first:
            self.send_response(500)
            self.end_headers()
            return
        parts = dict(p.split("=", 1) for p in self.headers.get("Postern-Signature", "").split(","))
        want = hmac.new(secret, parts.get("t", "").encode() + b"." + body, hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(want, parts.get("v1", ""))
        with open(out, "a") as f:
            f.write(json.dumps({"valid": valid, "body": json.loads(body)}) + "\n")
        self.send_response(200 if valid else 400)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", port), Handler).serve_forever()
