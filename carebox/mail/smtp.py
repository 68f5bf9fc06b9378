"""Sending over SMTP (aiosmtplib), with an outcome the outbox can act on without losing or
doubling a message.

One :class:`SmtpSender` keeps one connection open for many messages and reconnects when it
dropped in between. The SMTP dialogue is driven step by step (EHLO, STARTTLS or implicit TLS,
AUTH, MAIL, RCPT, DATA) so that the sender always knows whether the message data may have
reached the server:

========================  ===================================================================
``Outcome.SENT``          250 after the message data: the server took responsibility.
``Outcome.RETRY``         nothing was delivered, for sure: connect failed or timed out, a
                          transient TLS/AUTH failure, 421 or another 4xx to MAIL/RCPT/DATA,
                          the connection dropped *before* the message data was handed to the
                          socket, or a 4xx *final* reply after the data (the server said
                          explicitly that it did not accept the message: RFC 5321 4.2.5).
                          The outbox may send again later.
``Outcome.REJECTED``      a 5xx: the server said no for good (550 on RCPT, 554 after data...).
                          ``detail`` keeps the server's text. Do not resend unchanged.
``Outcome.UNCERTAIN``     the connection dropped, timed out or answered nonsense *after* the
                          message data began to be written and before the final reply: it may
                          or may not have been delivered. Never resend automatically; ask.
``Outcome.AUTH_FAILED``   the server refused the user name/password (5xx), or offers no AUTH
                          method: a configuration problem, nothing was sent.
``Outcome.TLS_ERROR``     certificate or TLS set-up failure, or STARTTLS configured but not
                          offered (fails closed, before AUTH): a configuration problem.
========================  ===================================================================

Where the DATA boundary lies: aiosmtplib 5.1.3's ``SMTP.data()`` sends ``DATA``, awaits 354,
writes the whole message and awaits the final reply inside one call, raising the same
``SMTPServerDisconnected``/``SMTPReadTimeoutError``/``SMTPDataError`` for a failure before 354
and after it. That cannot tell RETRY from UNCERTAIN, so :meth:`SmtpSender.send` sends ``DATA``
with ``execute_command`` and then writes the dot-stuffed message and reads the final reply on
the connection's protocol itself (``SMTPProtocol.write``/``read_response``, what ``data()``
does internally).

Cancellation: if the task running :meth:`SmtpSender.send` is cancelled, the connection is
closed and ``CancelledError`` propagates. Whether the message went out is then unknown once
the data was written: the outbox must treat a send it did not see finish as UNCERTAIN (mark the
message "sending" before calling ``send``).

Privacy: nothing here logs or raises with an address, a subject or message content. ``detail``
holds our one-line explanation and, where there is one, the server's reply text (which may name
an address; the outbox stores it encrypted).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPException,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from carebox.mail.tls import TlsMode, client_context, describe_tls_error, is_tls_error

__all__ = ["Outcome", "SendResult", "SmtpSender", "SmtpSettings"]

log = logging.getLogger(__name__)

_LINE_ENDS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_REPLY_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")
# What we put on MAIL FROM / RCPT TO: a plain ASCII addr-spec, nothing that could be parsed
# differently by the server (no space, brackets, quotes, controls, route syntax).
_ENVELOPE_ADDR = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+")
# Transient TLS failures (the peer went away mid-handshake) as opposed to configuration ones.
_TRANSIENT_TLS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    REJECTED = "rejected"
    UNCERTAIN = "uncertain"
    AUTH_FAILED = "auth_failed"
    TLS_ERROR = "tls_error"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What happened to one message (or to the attempt to connect, for :meth:`SmtpSender.open`).

    ``detail`` is one line for the user; ``code`` is the server's reply code when there was one."""

    outcome: Outcome
    detail: str
    code: int | None = None


@dataclass
class SmtpSettings:
    """Where and how to send. ``tls = NONE`` (plaintext) is refused unless ``allow_insecure``.

    ``timeout`` bounds connecting and each command; ``data_timeout`` bounds the wait for the
    final reply after the message data (RFC 5321 suggests up to 10 minutes: a timeout there is
    UNCERTAIN, so it is generous). ``local_hostname`` is the EHLO name; by default the address
    literal of our end of the connection (``[192.0.2.1]``), which reveals no host name.
    An empty ``username`` skips AUTH."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    tls: TlsMode = TlsMode.IMPLICIT
    ca_file: Path | None = None
    allow_insecure: bool = False
    timeout: float = 30.0
    data_timeout: float = 120.0
    local_hostname: str | None = None

    def __post_init__(self) -> None:
        self.tls = TlsMode(self.tls)
        if self.ca_file is not None:
            self.ca_file = Path(self.ca_file)
        if not self.host or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in self.host):
            raise ValueError("the SMTP host name is empty or contains spaces or control characters")
        if not 0 < int(self.port) < 65536:
            raise ValueError(f"the SMTP port {self.port} is not between 1 and 65535")
        if self.timeout <= 0 or self.data_timeout <= 0:
            raise ValueError("SMTP timeouts must be positive")
        if self.tls is TlsMode.NONE and not self.allow_insecure:
            raise ValueError(
                "SMTP without TLS sends the password and the mail in clear: "
                "use tls = implicit (port 465) or starttls (port 587), "
                "or set allow_insecure = true if this is really wanted"
            )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class _Phase(StrEnum):
    """How far the current transaction got; decides RETRY versus UNCERTAIN."""

    RSET = "rset"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # DATA command sent, 354 not yet received
    WRITING = "writing"  # 354 received, the message not yet handed to the socket
    WRITTEN = "written"  # the message (with its final dot) handed to the socket


class _StaleConnection(Exception):
    """The first command on a reused connection found it dead: reconnect and start over."""


def _reply_text(code: int | None, message: str) -> str:
    text = _REPLY_UNSAFE.sub(" ", message or "").strip()
    text = " ".join(text.split())[:500]
    if code is None or code < 0:
        return text
    return f"{code} {text}".strip()


def _reason(exc: BaseException) -> str:
    """A short reason for a network error (no host, the caller adds it)."""
    cause = exc.__cause__ or exc.__context__
    for e in (cause, exc):
        if isinstance(e, OSError) and e.errno:
            return os.strerror(e.errno)  # asyncio's own strerror ("Connect call failed ...") says less
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
    text = str(cause or exc).strip()
    return text or type(exc).__name__


def _data_payload(raw: bytes) -> bytes:
    """The message as it goes on the wire after 354: CRLF line ends, dot-stuffed, final dot
    (what aiosmtplib's ``execute_data_command`` does)."""
    data = _LINE_ENDS.sub(b"\r\n", raw)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return _LEADING_DOT.sub(b"..", data) + b".\r\n"


def _address_literal(sockname: object) -> str | None:
    if not isinstance(sockname, tuple) or not sockname:
        return None
    try:
        ip = ipaddress.ip_address(str(sockname[0]).split("%")[0])
    except ValueError:
        return None
    return f"[{ip}]" if ip.version == 4 else f"[IPv6:{ip}]"


def _envelope_problem(mail_from: str, rcpt_to: Sequence[str]) -> str | None:
    if isinstance(rcpt_to, str):
        return "rcpt_to must be a list of addresses"
    if not rcpt_to:
        return "the message has no recipient"
    if not _ENVELOPE_ADDR.fullmatch(mail_from):
        return "the sender address is not a plain ASCII e-mail address"
    if not all(_ENVELOPE_ADDR.fullmatch(r) for r in rcpt_to):
        return "a recipient address is not a plain ASCII e-mail address"
    return None


class SmtpSender:
    """One SMTP connection reused for many messages::

        async with SmtpSender(settings) as smtp:
            result = await smtp.send(raw, "praxis@example.org", ["patient@example.net"])

    Connects on demand (or with :meth:`open`), reconnects when the connection dropped between
    messages, sends one message at a time (concurrent calls queue). :meth:`send` does not raise
    for anything the network or the server does: every such failure is a :class:`SendResult`.
    """

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._smtp: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()
        self._needs_rset = False

    async def __aenter__(self) -> SmtpSender:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def is_connected(self) -> bool:
        return self._smtp is not None and self._smtp.is_connected

    async def open(self) -> SendResult | None:
        """Connect and log in now. ``None`` when ready, else why not (RETRY, AUTH_FAILED,
        TLS_ERROR); useful to check settings. :meth:`send` calls it when needed."""
        async with self._lock:
            if self.is_connected:
                return None
            return await self._connect()

    async def close(self) -> None:
        """QUIT politely (briefly) and close; safe to call at any time."""
        async with self._lock:
            smtp, self._smtp = self._smtp, None
            if smtp is None:
                return
            try:
                if smtp.is_connected:
                    await smtp.quit(timeout=min(5.0, self.settings.timeout))
            except (TimeoutError, SMTPException, OSError):
                pass
            finally:
                smtp.close()

    async def send(self, raw: bytes, mail_from: str, rcpt_to: list[str]) -> SendResult:
        """Send ``raw`` (RFC 5322 bytes) from ``mail_from`` to every address in ``rcpt_to``.

        All or nothing: if any recipient is refused, the transaction is abandoned before DATA
        (so a later retry cannot double the message for the others)."""
        problem = _envelope_problem(mail_from, rcpt_to)
        if problem is not None:
            return self._done(SendResult(Outcome.REJECTED, problem))
        async with self._lock:
            for attempt in range(2):
                reused = self.is_connected
                if not reused:
                    failure = await self._connect()
                    if failure is not None:
                        return self._done(failure)
                try:
                    return self._done(await self._transaction(raw, mail_from, list(rcpt_to), reused and attempt == 0))
                except _StaleConnection:
                    log.info("SMTP connection to %s had gone away; reconnecting", self.settings.where)
            raise AssertionError("unreachable: a second attempt is never stale")

    # --- internals ------------------------------------------------------------------------------

    def _done(self, result: SendResult) -> SendResult:
        log.info("SMTP send: %s%s", result.outcome.value, f" ({result.code})" if result.code else "")
        return result

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
        self._smtp = None
        self._needs_rset = False

    def _tls_failure(self, exc: BaseException) -> SendResult:
        text = describe_tls_error(exc, self.settings.host)
        chain: list[BaseException] = []
        cur: BaseException | None = exc
        while cur is not None and len(chain) < 10:
            chain.append(cur)
            cur = cur.__cause__ or cur.__context__
        if any(isinstance(e, _TRANSIENT_TLS) for e in chain):
            return SendResult(Outcome.RETRY, text)
        return SendResult(Outcome.TLS_ERROR, text)

    async def _connect(self) -> SendResult | None:
        """Connect, secure, log in. ``None`` on success; the connection is kept in ``_smtp``."""
        self._drop()
        s = self.settings
        context: ssl.SSLContext | None = None
        if s.tls is not TlsMode.NONE:
            try:
                context = client_context(s.ca_file)
            except (OSError, ssl.SSLError) as exc:
                return SendResult(
                    Outcome.TLS_ERROR, f"cannot load the CA file {s.ca_file}: {_reason(exc)}: check ca_file"
                )
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout,
            use_tls=s.tls is TlsMode.IMPLICIT,
            start_tls=False,
            tls_context=context if s.tls is TlsMode.IMPLICIT else None,
            local_hostname=s.local_hostname or "localhost",
        )
        try:
            result = await self._open(smtp, context)
        except asyncio.CancelledError:
            smtp.close()
            raise
        except Exception as exc:
            result = self._connect_failure(exc)
        if result is not None:
            smtp.close()
            log.info("SMTP connection to %s failed: %s", s.where, result.outcome.value)
            return result
        self._smtp = smtp
        log.info("SMTP connected to %s (%s)", s.where, s.tls.value)
        return None

    async def _open(self, smtp: aiosmtplib.SMTP, context: ssl.SSLContext | None) -> SendResult | None:
        s = self.settings
        await smtp.connect()
        if s.local_hostname is None:
            literal = _address_literal(smtp.get_transport_info("sockname"))
            if literal is not None:
                smtp.local_hostname = literal
        await smtp.ehlo()
        if s.tls is TlsMode.STARTTLS:
            if not smtp.supports_extension("starttls"):
                return SendResult(
                    Outcome.TLS_ERROR,
                    f"the server at {s.where} does not offer STARTTLS, so carebox will not log in: "
                    "check the port, or use tls = implicit (usually port 465)",
                )
            try:
                await smtp.starttls(tls_context=context)
            except SMTPResponseException as exc:
                outcome = Outcome.RETRY if 400 <= exc.code < 500 else Outcome.TLS_ERROR
                return SendResult(
                    outcome, f"the server at {s.where} refused STARTTLS: {_reply_text(exc.code, exc.message)}", exc.code
                )
            await smtp.ehlo()
        if s.tls is not TlsMode.NONE and smtp.get_transport_info("sslcontext") is None:
            return SendResult(Outcome.TLS_ERROR, f"the connection to {s.where} is not encrypted; refusing to log in")
        if s.username:
            try:
                await smtp.login(s.username, s.password)
            except SMTPAuthenticationError as exc:
                text = _reply_text(exc.code, exc.message)
                if 400 <= exc.code < 500:
                    return SendResult(
                        Outcome.RETRY, f"the server at {s.where} could not check the login right now: {text}", exc.code
                    )
                return SendResult(
                    Outcome.AUTH_FAILED,
                    f"the server at {s.where} refused the user name or password ({text}): "
                    "check username and password for SMTP",
                    exc.code,
                )
            except (SMTPServerDisconnected, SMTPTimeoutError):
                raise
            except SMTPException:
                return SendResult(
                    Outcome.AUTH_FAILED,
                    f"the server at {s.where} offers no login method carebox can use (AUTH PLAIN or LOGIN) "
                    "on this connection: check the port and tls settings",
                )
        return None

    def _connect_failure(self, exc: Exception) -> SendResult:
        where = self.settings.where
        if is_tls_error(exc):
            return self._tls_failure(exc)
        if isinstance(exc, SMTPConnectTimeoutError):
            return SendResult(Outcome.RETRY, f"timed out connecting to {where}")
        if isinstance(exc, SMTPConnectResponseError):
            return SendResult(
                Outcome.RETRY,
                f"the server at {where} turned the connection away: {_reply_text(exc.code, exc.message)}",
                exc.code,
            )
        if isinstance(exc, SMTPConnectError):
            return SendResult(Outcome.RETRY, f"cannot connect to {where}: {_reason(exc)}")
        if isinstance(exc, TimeoutError):
            return SendResult(Outcome.RETRY, f"the server at {where} did not answer in time")
        if isinstance(exc, SMTPServerDisconnected | ConnectionError):
            return SendResult(Outcome.RETRY, f"the server at {where} closed the connection while setting up")
        if isinstance(exc, SMTPResponseException):  # e.g. EHLO refused: about the session, not the message
            return SendResult(
                Outcome.RETRY, f"the server at {where} answered {_reply_text(exc.code, exc.message)}", exc.code
            )
        if isinstance(exc, OSError | SMTPException):
            return SendResult(Outcome.RETRY, f"cannot talk to {where}: {_reason(exc)}")
        raise exc

    def _refused(self, code: int, message: str, what: str) -> SendResult:
        """A non-success reply before the message data: nothing was delivered."""
        text = _reply_text(code, message)
        if 400 <= code < 500:
            return SendResult(Outcome.RETRY, f"the server deferred the {what}: {text}", code)
        if 500 <= code < 600:
            return SendResult(Outcome.REJECTED, f"the server rejected the {what}: {text}", code)
        return SendResult(Outcome.RETRY, f"unexpected reply to the {what}: {text}", code)

    async def _command(self, *args: bytes) -> aiosmtplib.SMTPResponse:
        assert self._smtp is not None
        return await self._smtp.execute_command(*args)

    async def _transaction(self, raw: bytes, mail_from: str, rcpt_to: list[str], may_be_stale: bool) -> SendResult:
        smtp = self._smtp
        assert smtp is not None
        phase = _Phase.MAIL
        first = True
        try:
            if self._needs_rset:
                phase = _Phase.RSET
                reply = await self._command(b"RSET")
                if reply.code != 250:  # a confused session: start a fresh one (nothing was sent)
                    self._drop()
                    if may_be_stale:
                        raise _StaleConnection
                    return SendResult(
                        Outcome.RETRY, f"the server refused RSET: {_reply_text(reply.code, reply.message)}"
                    )
                self._needs_rset = False
                first = False

            phase = _Phase.MAIL
            options: list[bytes] = []
            if smtp.supports_extension("size"):
                limit = smtp.esmtp_extensions.get("size", "").strip()
                if limit.isdigit() and int(limit) > 0 and len(raw) > int(limit):
                    return SendResult(
                        Outcome.REJECTED,
                        f"the message is {len(raw)} bytes, more than the server accepts ({limit} bytes)",
                    )
                options.append(f"SIZE={len(raw)}".encode())
            if not raw.isascii() and smtp.supports_extension("8bitmime"):
                options.append(b"BODY=8BITMIME")
            reply = await self._command(b"MAIL", b"FROM:<" + mail_from.encode("ascii") + b">", *options)
            if reply.code != 250:
                if may_be_stale and first and reply.code == 421:
                    self._drop()
                    raise _StaleConnection
                self._after_refusal()
                return self._refused(reply.code, reply.message, "sender")
            first = False

            phase = _Phase.RCPT
            for rcpt in rcpt_to:
                reply = await self._command(b"RCPT", b"TO:<" + rcpt.encode("ascii") + b">")
                if reply.code not in (250, 251):
                    self._after_refusal()
                    if reply.code == 552:  # RFC 5321 4.5.3.1.10: 552 on RCPT means 452
                        return SendResult(
                            Outcome.RETRY, f"the server deferred a recipient: {_reply_text(552, reply.message)}", 552
                        )
                    return self._refused(reply.code, reply.message, "recipient")

            phase = _Phase.DATA
            reply = await self._command(b"DATA")
            if reply.code != 354:
                self._after_refusal()
                return self._refused(reply.code, reply.message, "DATA command")

            phase = _Phase.WRITING
            protocol = smtp.protocol
            if protocol is None:
                raise SMTPServerDisconnected("Connection lost")
            protocol.write(_data_payload(raw))  # raises, writing nothing, if the connection is gone
            phase = _Phase.WRITTEN
            reply = await protocol.read_response(timeout=self.settings.data_timeout)
        except _StaleConnection:
            raise
        except asyncio.CancelledError:
            self._drop()
            raise
        except (SMTPServerDisconnected, ConnectionError) as exc:
            self._drop()
            if may_be_stale and first:
                raise _StaleConnection from exc
            return self._lost(phase, "the server closed the connection")
        except TimeoutError:  # SMTPTimeoutError included
            self._drop()
            return self._lost(phase, "the server did not answer in time")
        except SMTPResponseException as exc:  # a reply that is not SMTP at all
            self._drop()
            return self._lost(phase, f"the server sent a malformed reply ({_reply_text(None, exc.message)})")
        except (SMTPException, OSError) as exc:
            self._drop()
            return self._lost(phase, f"the connection failed: {_reason(exc)}")

        # The final reply to the message data.
        text = _reply_text(reply.code, reply.message)
        if 200 <= reply.code < 300:
            return SendResult(Outcome.SENT, text, reply.code)
        if 400 <= reply.code < 500:
            # The server explicitly did not take responsibility (RFC 5321 4.2.5): send again later.
            return SendResult(Outcome.RETRY, f"the server did not accept the message for now: {text}", reply.code)
        if 500 <= reply.code < 600:
            return SendResult(Outcome.REJECTED, f"the server rejected the message: {text}", reply.code)
        self._drop()
        return SendResult(
            Outcome.UNCERTAIN,
            f"unexpected final reply after the message data ({text}): it may or may not have been delivered",
            reply.code,
        )

    def _after_refusal(self) -> None:
        """A refused transaction leaves the session mid-transaction: RSET before the next one
        (or reconnect, if the server hung up as with 421)."""
        if self.is_connected:
            self._needs_rset = True
        else:
            self._drop()

    def _lost(self, phase: _Phase, what: str) -> SendResult:
        where = self.settings.where
        if phase is _Phase.WRITTEN:
            return SendResult(
                Outcome.UNCERTAIN,
                f"{what} after the message data was sent to {where}: it may or may not have been "
                "delivered; check the Sent folder or ask the recipient before sending again",
            )
        return SendResult(Outcome.RETRY, f"{what} ({where}, during {phase.value}); nothing was delivered")
