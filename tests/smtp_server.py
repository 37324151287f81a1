"""A real SMTP server for the email-alert tests (aiosmtpd): STARTTLS required, AUTH required.

Usage: smtp_server.py PORT CERT KEY USER PASSWORD OUT
Every message received is appended to OUT as a JSON line; "ready" is printed once it listens.
"""
import asyncio
import json
import signal
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    port, cert, key, user, password, out = sys.argv[1:7]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        # A failure not "handled" here: aiosmtpd answers it with 535.
        return AuthResult(success=ok, handled=ok, auth_data=auth_data if ok else None)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            with open(out, "a") as f:
                f.write(json.dumps({
                    "from": envelope.mail_from,
                    "to": envelope.rcpt_tos,
                    "tls": session.ssl is not None,
                    "login": session.auth_data.login.decode()
                    if session.authenticated and session.auth_data else None,
                    "data": envelope.content.decode("utf8", "replace"),
                }) + "\n")
            return "250 OK"

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=int(port),
        tls_context=ctx,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    controller.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


if __name__ == "__main__":
    main()
