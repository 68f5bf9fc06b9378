"""A real SMTP server for integration tests: aiosmtpd on 127.0.0.1, TLS, AUTH, fault injection.

The server runs in its own thread (aiosmtpd's ``Controller``), so the client under test can use
the test's own event loop. Modes:

* ``"implicit"``: TLS from the first byte (SMTPS), AUTH PLAIN/LOGIN offered inside TLS;
* ``"starttls"``: plaintext greeting, STARTTLS offered and required before anything else,
  AUTH offered only after it;
* ``"plain"``: no TLS at all, AUTH offered in plaintext (a server that does not offer STARTTLS).

Every mode requires AUTH before MAIL (``530``) with one user and password. Every accepted
message is kept in ``server.messages`` (``Received(mail_from, rcpt_tos, content)``); ``content``
is the bytes as received after un-dot-stuffing (CRLF line ends, final CRLF included).

Fault switches on ``server.faults`` (set them from the test, they take effect on the next
command): ``refuse_mail = N`` (421 to the next N MAIL), ``drop_on_mail = N`` (close the
connection without a reply on the next N MAIL), ``reject_rcpt = {"addr"}`` (550 to RCPT for
these), ``drop_on_data_command = N`` / ``refuse_data_command = N`` (hang up / 451 on the DATA
command itself, before 354), ``fail_after_data = N`` (451 after the next N messages' data; not recorded as received),
``drop_after_data = N`` (record the message, then drop the connection without a final reply),
``stall_after_data = seconds`` (record, then wait before replying 250). ``server.stop()`` closes
the port (connection refused); ``server.start()`` opens it again on the same port.

Fixtures (import them into a test module or re-export them from a conftest)::

    from tests.servers.smtp_server import smtp_cert_fixture, smtp_server_fixture  # noqa: F401

    async def test_x(smtp_server):
        server = smtp_server("implicit")          # started; stopped after the test
        ... connect to server.host:server.port with ca_file=server.ca_file,
            username=server.username, password=server.password ...
        assert [m.rcpt_tos for m in server.messages] == [["pat@example.org"]]
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Mode = Literal["implicit", "starttls", "plain"]

USERNAME = "praxis@berg.example"
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class SmtpCert:
    """A self-signed certificate for CN=localhost, SAN DNS:localhost, IP:127.0.0.1."""

    cert_file: Path
    key_file: Path

    @property
    def ca_file(self) -> Path:  # self-signed: the certificate is its own CA
        return self.cert_file


def make_smtp_cert(directory: Path) -> SmtpCert:
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return SmtpCert(cert_file=cert, key_file=key)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (also what a test uses for 'connection refused')."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


@dataclass
class Faults:
    refuse_mail: int = 0
    drop_on_mail: int = 0
    reject_rcpt: set[str] = field(default_factory=set)
    drop_on_data_command: int = 0
    refuse_data_command: int = 0
    fail_after_data: int = 0
    drop_after_data: int = 0
    stall_after_data: float = 0.0


class _Handler:
    def __init__(self, server: SmtpTestServer) -> None:
        self.server = server

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses):
        session.host_name = hostname
        self.server.ehlo_names.append(hostname)
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        faults = self.server.faults
        self.server.mail_commands += 1
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        if faults.drop_on_mail > 0:
            faults.drop_on_mail -= 1
            await _hang_up(server)
        if faults.refuse_mail > 0:
            faults.refuse_mail -= 1
            return "421 4.3.2 Service not available, closing transmission channel"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.server.faults.reject_rcpt:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        faults = self.server.faults
        received = Received(
            mail_from=envelope.mail_from or "", rcpt_tos=list(envelope.rcpt_tos), content=bytes(envelope.content or b"")
        )
        if faults.fail_after_data > 0:
            faults.fail_after_data -= 1
            self.server.deferred.append(received)
            return "451 4.3.0 Temporary local problem, try again later"
        with self.server.lock:
            self.server.messages.append(received)
            number = len(self.server.messages)
        if faults.drop_after_data > 0:
            faults.drop_after_data -= 1
            await _hang_up(server)
        if faults.stall_after_data:
            await asyncio.sleep(faults.stall_after_data)
        return f"250 2.0.0 OK queued as {number}"


async def _hang_up(server: SMTP) -> None:
    """Drop the connection without another byte; never returns (the session's task is
    cancelled when the connection is lost, so no reply is ever written)."""
    assert server.transport is not None
    server.transport.abort()
    await asyncio.sleep(3600)


class _FaultySMTP(SMTP):
    """aiosmtpd's SMTP with faults on the DATA command itself (before its 354)."""

    def __init__(self, handler: Any, *, owner: SmtpTestServer, **kwargs: Any) -> None:
        self.owner = owner
        super().__init__(handler, **kwargs)

    async def smtp_DATA(self, arg: str) -> None:
        faults = self.owner.faults
        if self.session is not None and self.session.authenticated:
            if faults.drop_on_data_command > 0:
                faults.drop_on_data_command -= 1
                await _hang_up(self)
            if faults.refuse_data_command > 0:
                faults.refuse_data_command -= 1
                await self.push("451 4.3.0 Not now, try again later")
                return
        await super().smtp_DATA(arg)


class _Controller(Controller):
    def __init__(self, owner: SmtpTestServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.owner = owner

    def factory(self) -> SMTP:
        smtpd = _FaultySMTP(self.handler, owner=self.owner, **self.SMTP_kwargs)
        self.owner.sessions.append(smtpd)
        return smtpd


class SmtpTestServer:
    """One aiosmtpd server on 127.0.0.1 (see the module doc)."""

    def __init__(
        self,
        mode: Mode,
        cert: SmtpCert,
        *,
        username: str = USERNAME,
        password: str = PASSWORD,
        port: int | None = None,
    ) -> None:
        self.mode = mode
        self.cert = cert
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.username = username
        self.password = password
        self.faults = Faults()
        self.lock = threading.Lock()
        self.messages: list[Received] = []
        self.deferred: list[Received] = []  # answered 451 after their data
        self.sessions: list[SMTP] = []
        self.ehlo_names: list[str] = []
        self.auth_attempts = 0
        self.logins = 0
        self.mail_commands = 0
        self._probes = 0
        self._controller: _Controller | None = None

    @property
    def ca_file(self) -> Path:
        return self.cert.ca_file

    @property
    def connections(self) -> int:
        """Client connections accepted (not counting the controller's own start-up probe)."""
        return max(0, len(self.sessions) - self._probes)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
    ) -> AuthResult:
        self.auth_attempts += 1
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.username.encode()
            and auth_data.password == self.password.encode()
        )
        if ok:
            self.logins += 1
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def _server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert.cert_file, self.cert.key_file)
        return ctx

    def start(self) -> SmtpTestServer:
        assert self._controller is None, "already running"
        kwargs: dict[str, Any] = {
            "handler": _Handler(self),
            "hostname": self.host,
            "port": self.port,
            "server_hostname": "localhost",
            "authenticator": self._authenticate,
            "ready_timeout": 5.0,
        }
        if self.mode == "implicit":
            # The connection is TLS from the start, which aiosmtpd does not know: let it offer AUTH,
            # and require AUTH in handle_MAIL instead of auth_required (which would warn).
            kwargs.update(ssl_context=self._server_context(), auth_require_tls=False)
        elif self.mode == "starttls":
            kwargs.update(
                tls_context=self._server_context(), require_starttls=True, auth_required=True, auth_require_tls=True
            )
        elif self.mode == "plain":
            kwargs.update(auth_require_tls=False)
        else:
            raise ValueError(f"unknown mode {self.mode!r}")
        before = len(self.sessions)
        self._controller = _Controller(self, **kwargs)
        self._controller.start()
        self._probes += len(self.sessions) - before
        return self

    def stop(self) -> None:
        """Stop listening: connecting now gives 'connection refused'. Open sessions are cut."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def drop_connections(self) -> None:
        """Cut every open session (as a server's idle timeout would), from the server side."""
        controller = self._controller
        assert controller is not None

        async def cut() -> None:
            for smtpd in self.sessions:
                if smtpd.transport is not None:
                    smtpd.transport.close()

        asyncio.run_coroutine_threadsafe(cut(), controller.loop).result(timeout=5)

    def __enter__(self) -> SmtpTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session", name="smtp_cert")
def smtp_cert_fixture() -> Iterator[SmtpCert]:
    """The self-signed certificate every test SMTP server uses (made once per session)."""
    directory = Path(tempfile.mkdtemp(prefix="carebox-smtp-"))
    try:
        yield make_smtp_cert(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(name="smtp_server")
def smtp_server_fixture(smtp_cert: SmtpCert) -> Iterator[Callable[..., SmtpTestServer]]:
    """A factory: ``smtp_server(mode="implicit", username=..., password=...)`` returns a started
    :class:`SmtpTestServer`; all are stopped after the test."""
    servers: list[SmtpTestServer] = []

    def make(mode: Mode = "implicit", **kwargs: Any) -> SmtpTestServer:
        server = SmtpTestServer(mode, smtp_cert, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
