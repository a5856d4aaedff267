"""A real SMTP server for the alert tests (Debian's python3-aiosmtpd), run with Debian's own
/usr/bin/python3. Each message received is written to DIR/<n>.json: the envelope, the raw
message, and whether the client authenticated and used TLS.

usage: smtp_sink.py PORT DIR [--auth USER:PASSWORD] [--starttls CERT KEY]
"""
import argparse
import json
import os
import signal
import ssl
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Sink:
    def __init__(self, out):
        self.out = out
        self.n = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.n += 1
            n = self.n
        record = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                  "data": envelope.original_content.decode("utf-8", "replace"),
                  "authenticated": bool(session.authenticated),
                  "tls": session.ssl is not None}
        tmp = os.path.join(self.out, f".{n}.json")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.out, f"{n}.json"))
        return "250 OK"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("dir")
    p.add_argument("--auth")
    p.add_argument("--starttls", nargs=2)
    a = p.parse_args()
    kw = {}
    if a.auth:
        user, password = a.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login.decode() == user and auth_data.password.decode() == password
            return AuthResult(success=ok)
        kw.update(authenticator=authenticator, auth_required=True, auth_require_tls=bool(a.starttls))
    if a.starttls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*a.starttls)
        kw.update(tls_context=ctx, require_starttls=True)
    c = Controller(Sink(a.dir), hostname="127.0.0.1", port=a.port, **kw)
    c.start()
    open(os.path.join(a.dir, ".ready"), "w").close()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    c.stop()


if __name__ == "__main__":
    main()
