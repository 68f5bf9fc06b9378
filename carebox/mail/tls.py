"""TLS settings shared by the IMAP and SMTP clients.

Certificates and host names are always verified and TLS 1.2 is the floor. Plaintext is a separate,
explicit mode (``TlsMode.NONE``) that each client refuses unless the config allows it.
"""

from __future__ import annotations

import ssl
from enum import StrEnum
from pathlib import Path

__all__ = ["TlsMode", "client_context", "describe_tls_error", "is_tls_error"]


class TlsMode(StrEnum):
    """How a client secures its connection to the mail server."""

    IMPLICIT = "implicit"  # TLS from the first byte (IMAPS 993, SMTPS 465): preferred
    STARTTLS = "starttls"  # plaintext greeting, then upgrade; fails closed if the upgrade fails
    NONE = "none"  # plaintext: only with an explicit allow_insecure in the config


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """A verifying client context: system CAs (or only ``ca_file`` when given), TLS 1.2+, host check."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 10:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def is_tls_error(exc: BaseException) -> bool:
    """True when ``exc`` (or its cause) is an SSL/certificate failure."""
    return any(isinstance(e, ssl.SSLError | ssl.CertificateError) for e in _chain(exc))


def describe_tls_error(exc: BaseException, host: str) -> str:
    """One line for the user: what went wrong with TLS and how to fix it. No traceback, no mail data."""
    for e in _chain(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            code = getattr(e, "verify_code", None)
            msg = (getattr(e, "verify_message", None) or str(e)).strip()
            low = msg.lower()
            if "hostname mismatch" in low or "ip address mismatch" in low or "doesn't match" in low:
                return (
                    f"the certificate does not match host name {host}: use the host name the certificate was issued for"
                )
            if "expired" in low or code == 10:
                return f"the certificate of {host} has expired: the server's certificate must be renewed"
            if "not yet valid" in low or code == 9:
                return f"the certificate of {host} is not yet valid: check this computer's clock"
            if (
                "self-signed" in low
                or "self signed" in low
                or "unable to get local issuer" in low
                or "unable to get issuer" in low
                or code in (18, 19, 20, 21)
            ):
                return (
                    f"the certificate of {host} is not trusted (self-signed or unknown CA): "
                    "set ca_file in [account] to your server's CA"
                )
            return f"the certificate of {host} could not be verified: {msg}"
        if isinstance(e, ssl.CertificateError):
            return f"the certificate does not match host name {host}: use the host name the certificate was issued for"
        if isinstance(e, ssl.SSLError):
            reason = getattr(e, "reason", None) or ""
            text = str(reason or e).strip() or type(e).__name__
            low = text.lower()
            if "wrong_version_number" in low or "wrong version number" in low:
                return (
                    f"TLS handshake with {host} failed: the port does not speak TLS "
                    "(is it a STARTTLS or plaintext port? check port and tls in [account])"
                )
            if "unsupported_protocol" in low or "no protocols available" in low or "protocol version" in low:
                return f"TLS handshake with {host} failed: the server does not offer TLS 1.2 or newer"
            return f"TLS handshake with {host} failed: {text}"
    text = str(exc).strip() or type(exc).__name__
    return f"TLS handshake with {host} failed: {text}"
