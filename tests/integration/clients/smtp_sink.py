"""A real SMTP server (aiosmtpd) on loopback for the mail tests.

usage: smtp_sink.py PORT DIR MODE [USER:PASSWORD]
  MODE: plain | starttls | tls
Writes each message to DIR/<n>.json (envelope, decoded subject, text and
HTML parts, attachments as text) and prints "ready" once listening. For
starttls/tls it first writes DIR/ca.pem (a CA) and a server certificate
for 127.0.0.1 signed by it.
"""
import datetime
import email
import email.policy
import ipaddress
import json
import os
import ssl
import sys
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def make_certs(d):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flagsync test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    with open(os.path.join(d, "ca.pem"), "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(os.path.join(d, "cert.pem"), "wb") as f:
        f.write(cert.public_bytes(pem))
    with open(os.path.join(d, "key.pem"), "wb") as f:
        f.write(
            key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


def strict_headers(content):
    """Parses the message again with Python's strict policy (any defect
    raises) and reads the headers RFC 5322 wants: Date and Message-ID."""
    try:
        msg = email.message_from_bytes(content, policy=email.policy.strict)
        for part in msg.walk():
            part.get_content_type()
        date = msg["date"]
        return {
            "strict": "ok",
            "message_id": str(msg["message-id"]) if msg["message-id"] else None,
            "date": date.datetime.isoformat() if date is not None and date.datetime else None,
            "mime_version": str(msg["mime-version"]) if msg["mime-version"] else None,
        }
    except Exception as e:  # every defect is a finding for the test
        return {"strict": f"{type(e).__name__}: {e}", "message_id": None, "date": None}


class Sink:
    def __init__(self, d):
        self.d = d
        # A restarted sink goes on numbering after the messages it has.
        self.n = len([f for f in os.listdir(d) if f.endswith(".json")])
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        out = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(msg["subject"]),
            "to": str(msg["to"]),
            "text": "",
            "html": "",
            "attachments": [],
            "authenticated": bool(session.authenticated),
            # Whether this connection is encrypted (implicit TLS or after
            # STARTTLS): the transport's own answer.
            "tls": server.transport.get_extra_info("ssl_object") is not None,
        }
        out.update(strict_headers(envelope.content))
        for part in msg.walk():
            if part.is_multipart():
                continue
            name = part.get_filename()
            if name:
                out["attachments"].append(
                    {"name": name, "content": part.get_payload(decode=True).decode("utf-8", "replace")}
                )
            elif part.get_content_type() == "text/plain":
                out["text"] = part.get_content()
            elif part.get_content_type() == "text/html":
                out["html"] = part.get_content()
        with self.lock:
            self.n += 1
            path = os.path.join(self.d, f"{self.n:04}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(out, f)
        os.rename(path + ".tmp", path)
        return "250 OK queued as test-%d" % self.n


def main():
    port, d, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    creds = sys.argv[4] if len(sys.argv) > 4 else None
    os.makedirs(d, exist_ok=True)
    kwargs = {}
    ctx = None
    if mode in ("starttls", "tls"):
        if not os.path.exists(os.path.join(d, "cert.pem")):
            make_certs(d)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"))
    if creds:
        user, password = creds.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
            return AuthResult(success=ok)

        kwargs["authenticator"] = authenticator
        kwargs["auth_required"] = True
        # aiosmtpd only counts STARTTLS as TLS: with implicit TLS it would
        # hide AUTH although the connection is encrypted.
        kwargs["auth_require_tls"] = mode == "starttls"
    server_kwargs = {}
    if mode == "starttls":
        kwargs["tls_context"] = ctx
        kwargs["require_starttls"] = True
    if mode == "tls":
        server_kwargs["ssl_context"] = ctx
    controller = Controller(Sink(d), hostname="127.0.0.1", port=port, **server_kwargs, **kwargs)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
