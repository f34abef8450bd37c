"""An SMTP server on loopback (aiosmtpd), with STARTTLS on a self-signed certificate and AUTH.

The certificate (for 127.0.0.1 and localhost) is generated per server with `cryptography`; a
test trusts it by pointing `SSL_CERT_FILE` at `SmtpServer.cert_file`, which OpenSSL's default
verify paths (and so `ssl.create_default_context()`) read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.servers import free_port


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    tls: bool
    login: str | None


@dataclass
class SmtpServer:
    host: str
    port: int
    cert_file: Path | None
    received: list[Received] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)
    """Every AUTH attempt: the user name and whether it succeeded."""


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data if session.authenticated else None  # what `authenticate` returned
        self.server.received.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                message_from_bytes(envelope.original_content or envelope.content),
                session.ssl is not None,
                login,
            )
        )
        return "250 Message accepted for delivery"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


@contextlib.contextmanager
def smtp_server(*, tls: bool = True, users: dict[str, str] | None = None) -> Iterator[SmtpServer]:
    """An SMTP server; with `tls`, STARTTLS is offered (and required before AUTH and mail)."""
    with tempfile.TemporaryDirectory(prefix="shipyard-smtp-") as directory:
        cert_file: Path | None = None
        kwargs: dict[str, Any] = {}
        if tls:
            cert_file, key_file = _self_signed(Path(directory))
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert_file, key_file)
            kwargs.update(tls_context=context, require_starttls=True)
        server = SmtpServer("127.0.0.1", free_port(), cert_file)
        accounts = users or {}

        def authenticate(_smtp: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any) -> AuthResult:
            if not isinstance(data, LoginPassword):
                return AuthResult(success=False, handled=False)
            user, password = data.login.decode(), data.password.decode()
            ok = accounts.get(user) == password
            server.logins.append((user, ok))
            return AuthResult(success=ok, handled=False, auth_data=user)

        controller = Controller(
            _Handler(server),
            hostname=server.host,
            port=server.port,
            authenticator=authenticate,
            auth_required=bool(accounts),
            auth_require_tls=True,
            **kwargs,
        )
        controller.start()
        try:
            yield server
        finally:
            controller.stop()
