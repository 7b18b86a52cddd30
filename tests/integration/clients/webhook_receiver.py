"""A webhook receiver for the tests: verifies each request's Standard
Webhooks signature with the independent `standardwebhooks` package and
appends what it got to a JSON-lines log.

usage: webhook_receiver.py PORT LOG SECRET [http|https DIR]

Answers 401 to a bad signature, 302 to any path under /redirect, 200
otherwise. With https it writes DIR/ca.pem, cert.pem and key.pem (a CA
and a certificate for 127.0.0.1 it signed) and serves TLS with them.
Prints "ready" once it listens.
"""
import json
import os
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

port, log_path, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
mode = sys.argv[4] if len(sys.argv) > 4 else "http"
verifier = Webhook(secret)


def record(entry):
    with open(log_path, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        entry = {
            "path": self.path,
            "id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "content_type": headers.get("content-type"),
            "body": body.decode("utf-8", "replace"),
        }
        if self.path.startswith("/redirect"):
            entry["answer"] = 302
            record(entry)
            self.send_response(302)
            self.send_header("location", "http://127.0.0.1:1/elsewhere")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        try:
            verifier.verify(body, headers)
        except Exception as e:  # WebhookVerificationError and malformed headers
            entry["answer"] = 401
            entry["error"] = str(e)
            record(entry)
            self.send_response(401)
            text = b"bad signature"
            self.send_header("content-length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
            return
        entry["answer"] = 200
        record(entry)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
if mode == "https":
    from smtp_sink import make_certs

    cert_dir = sys.argv[5]
    make_certs(cert_dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(cert_dir, "cert.pem"), os.path.join(cert_dir, "key.pem"))
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
