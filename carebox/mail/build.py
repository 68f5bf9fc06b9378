"""Building outgoing mail: replies and new messages as RFC 5322 bytes, ready for SMTP.

Everything that came from mail (subjects, display names, message ids) is untrusted: it is
sanitised *before* it reaches the email package, so no value can break out of its header
(CR, LF, NUL, other C0/C1 controls and Unicode line separators become spaces). Non-ASCII names
and subjects are RFC 2047 encoded by ``email.policy.SMTP``; the body is UTF-8 quoted-printable
(7-bit on the wire, so the server needs neither 8BITMIME nor SMTPUTF8) with CRLF line ends.

Addresses must be ASCII addr-specs (an IDN domain is converted to its ASCII form): carebox does
not send with SMTPUTF8. Errors are ``ValueError`` with one line that never contains the
address or subject itself (patient data).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from email.headerregistry import Address as HeaderAddress
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage

from carebox.domain.models import Address, ParsedMessage

__all__ = [
    "MAX_REFERENCES",
    "Identity",
    "build_new",
    "build_reply",
    "make_message_id",
    "quote",
    "sanitize_header_text",
]

MAX_REFERENCES = 20
_MAX_ID_LEN = 250  # RFC 5322 sets no limit; anything longer is junk or an attack
_MAX_NAME_LEN = 200
_MAX_SUBJECT_LEN = 500

# C0 controls (CR, LF, NUL, TAB, ESC ...), DEL, C1 controls (incl. NEL U+0085), the Unicode
# line/paragraph separators (str.splitlines() breaks on them) and bidi overrides/isolates.
_HEADER_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# In a body we keep TAB and LF (CR is normalised away before this runs).
_BODY_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"\s+")
_REPLY_PREFIX = re.compile(r"re\s*:", re.IGNORECASE)
# What survives as a message id: printable ASCII without space, '<' or '>'.
_ID_OK = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]+")
_LOCAL_OK = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL_OK = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class Identity:
    """Who sends: the physician's display name and the practice's professional address."""

    name: str
    address: str
    practice: str = ""


# ---------------------------------------------------------------------------------------------
# sanitising


def sanitize_header_text(value: str, *, limit: int = _MAX_SUBJECT_LEN) -> str:
    """One safe header line from untrusted text: controls and line breaks become spaces,
    runs of white space collapse to one, the ends are trimmed, the length is capped."""
    value = _HEADER_UNSAFE.sub(" ", value)
    value = _SPACES.sub(" ", value).strip()
    return value[:limit].rstrip()


def _settled_text(value: str, *, limit: int = _MAX_SUBJECT_LEN) -> str:
    """Sanitised text that the email package will not decode any further.

    Assigning a header *decodes* RFC 2047 encoded-words found in the value, and on Python 3.11.7
    a decoded CR LF is then written to the wire unchanged: a subject that literally contains
    ``=?utf-8?q?=0D=0ABcc:...?=`` adds a header. So decode, sanitise again, until stable."""
    for _ in range(4):
        value = sanitize_header_text(value, limit=limit)
        decoded = str(_POLICY.header_factory("subject", value))
        if decoded == value:
            return value
        value = decoded
    return sanitize_header_text(value.replace("=?", "= ?"), limit=limit)


def _settled_name(name: str) -> str:
    """A display name that comes out of an address header exactly as it went in (see above)."""
    for _ in range(4):
        name = sanitize_header_text(name, limit=_MAX_NAME_LEN)
        try:
            probe = _POLICY.header_factory("to", str(HeaderAddress(display_name=name, addr_spec="x@example.org")))
        except ValueError:  # an encoded-word in it decodes to a line break
            name = name.replace("=?", "= ?")
            continue
        decoded = probe.addresses[0].display_name if len(probe.addresses) == 1 else ""
        if decoded == name:
            return name
        name = decoded
    return sanitize_header_text(name.replace("=?", "= ?"), limit=_MAX_NAME_LEN)


def _clean_id(value: str) -> str | None:
    """A message id without angle brackets, or None when it is not usable in a header."""
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    if not value or len(value) > _MAX_ID_LEN or not _ID_OK.fullmatch(value):
        return None
    return value


def _ascii_domain(domain: str) -> str | None:
    domain = domain.strip().rstrip(".")
    if not domain:
        return None
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return None
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or not all(_LABEL_OK.fullmatch(label) for label in labels):
        return None
    return ascii_domain.lower()


def _addr_spec(addr: str, what: str) -> str:
    """A validated ASCII addr-spec. ``what`` names the role in the error, never the address."""
    addr = addr.strip()
    local, at, domain = addr.rpartition("@")
    if not at or not local or len(local) > 64:
        raise ValueError(f"the {what} address is not a valid e-mail address")
    if not local.isascii():
        raise ValueError(f"the {what} address has a non-ASCII local part, which carebox cannot send (SMTPUTF8)")
    if not _LOCAL_OK.fullmatch(local):
        raise ValueError(f"the {what} address is not a valid e-mail address")
    ascii_domain = _ascii_domain(domain)
    if ascii_domain is None or "." not in ascii_domain:
        raise ValueError(f"the {what} address has an invalid domain")
    return f"{local}@{ascii_domain}"


# ---------------------------------------------------------------------------------------------
# headers


class _MsgIdHeader(UnstructuredHeader):
    """Message-ID, In-Reply-To, References: space-separated ``<id>`` tokens, folded between
    tokens and never RFC 2047 encoded (the stock unstructured header encodes a long id)."""

    max_count = 1

    @classmethod
    def parse(cls, value: str, kwds: dict) -> None:
        tokens = value.split()
        for token in tokens:
            if not (token.startswith("<") and token.endswith(">") and _clean_id(token) is not None):
                raise ValueError("a message id header holds something that is not a message id")
        kwds["parse_tree"] = cls.value_parser(" ".join(tokens))
        kwds["decoded"] = " ".join(tokens)

    def fold(self, *, policy: email_policy.EmailPolicy) -> str:
        maxlen = policy.max_line_length or 998
        lines: list[str] = []
        line = f"{self.name}:"
        has_token = False
        for token in str(self).split():
            if has_token and len(line) + 1 + len(token) > maxlen:
                lines.append(line)
                line = ""
            line += " " + token
            has_token = True
        lines.append(line)
        return policy.linesep.join(lines) + policy.linesep


_REGISTRY = HeaderRegistry()
for _name in ("message-id", "in-reply-to", "references"):
    _REGISTRY.map_to_type(_name, _MsgIdHeader)
_POLICY = email_policy.SMTP.clone(header_factory=_REGISTRY)


def make_message_id(domain: str) -> str:
    """A fresh random Message-ID ``<hex.carebox@domain>``. ``domain`` may be the professional
    address itself (the part after the last ``@`` is used); an unusable domain gives
    ``carebox.invalid``."""
    _, _, domain = domain.rpartition("@")
    return f"<{uuid.uuid4().hex}.carebox@{_ascii_domain(domain) or 'carebox.invalid'}>"


def _own_message_id(message_id: str) -> str:
    cleaned = _clean_id(message_id)
    if cleaned is None or "@" not in cleaned:
        raise ValueError("the message id of the outgoing message is not valid (use make_message_id)")
    return f"<{cleaned}>"


def _reply_subject(subject: str) -> str:
    subject = _settled_text(subject)
    if _REPLY_PREFIX.match(subject):
        return subject
    return f"Re: {subject}" if subject else "Re:"


def _references(original: ParsedMessage) -> list[str]:
    """RFC 5322 3.6.4: the parent's References (or its single In-Reply-To) plus its Message-ID;
    unusable ids dropped, duplicates removed, the last ``MAX_REFERENCES`` kept."""
    base = original.references
    if not base and len(original.in_reply_to) == 1:
        base = original.in_reply_to
    ids: list[str] = []
    for raw in (*base, original.message_id):
        cleaned = _clean_id(raw)
        if cleaned is None:
            continue
        if cleaned in ids:
            ids.remove(cleaned)
        ids.append(cleaned)
    return ids[-MAX_REFERENCES:]


def _message(
    *, identity: Identity, to: Address, subject: str, body: str, message_id: str, date: datetime
) -> EmailMessage:
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("the date of an outgoing message must carry a time zone")
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = HeaderAddress(
        display_name=_settled_name(identity.name),
        addr_spec=_addr_spec(identity.address, "sender"),
    )
    msg["To"] = HeaderAddress(
        display_name=_settled_name(to.name),
        addr_spec=_addr_spec(to.addr, "recipient"),
    )
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = _own_message_id(message_id)
    return msg


def _set_body(msg: EmailMessage, body: str) -> bytes:
    text = body.replace("\r\n", "\n").replace("\r", "\n")
    text = _BODY_UNSAFE.sub("", text)
    if not text.endswith("\n"):
        text += "\n"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    return msg.as_bytes(policy=_POLICY)


def build_reply(
    *,
    identity: Identity,
    to: Address,
    original: ParsedMessage,
    body: str,
    message_id: str,
    date: datetime,
) -> bytes:
    """The reply to ``original`` as RFC 5322 bytes with CRLF line ends.

    From is ``identity`` (physician's name, professional address); To is exactly ``to`` (the
    caller decides which address is verified: Reply-To is never used here). Subject gets
    ``Re: `` unless it already starts with it; In-Reply-To and References thread the reply.
    Raises ``ValueError`` (one line, no patient data) for an unusable address, id or date."""
    msg = _message(
        identity=identity,
        to=to,
        subject=_reply_subject(original.subject),
        body=body,
        message_id=message_id,
        date=date,
    )
    parent = _clean_id(original.message_id)
    if parent is not None:
        msg["In-Reply-To"] = f"<{parent}>"
    refs = _references(original)
    if refs:
        msg["References"] = " ".join(f"<{ref}>" for ref in refs)
    return _set_body(msg, body)


def build_new(
    *,
    identity: Identity,
    to: Address,
    subject: str,
    body: str,
    message_id: str,
    date: datetime,
) -> bytes:
    """A message that starts a conversation (no In-Reply-To/References); same rules as
    :func:`build_reply`."""
    msg = _message(
        identity=identity,
        to=to,
        subject=_settled_text(subject),
        body=body,
        message_id=message_id,
        date=date,
    )
    return _set_body(msg, body)


def _format_date(date: datetime) -> str:
    """``Mon, 3 Mar 2025 14:05 +0100``, independent of the locale."""
    text = f"{_DAYS[date.weekday()]}, {date.day} {_MONTHS[date.month - 1]} {date.year} {date:%H:%M}"
    offset = date.strftime("%z")
    return f"{text} {offset}" if offset else text


def quote(original_body: str, author: str, date: datetime | None) -> str:
    """The attribution line and the quoted original for the composer (LF line ends).

    ``On Mon, 3 Mar 2025 14:05 +0100, Jane Doe wrote:`` then every line prefixed with ``> ``
    (``>`` alone for an empty line, ``>`` before a line that is already quoted). Control
    characters from the original are removed; trailing blank lines are dropped."""
    author = sanitize_header_text(author, limit=_MAX_NAME_LEN) or "the sender"
    head = f"On {_format_date(date)}, {author} wrote:" if date is not None else f"{author} wrote:"
    text = original_body.replace("\r\n", "\n").replace("\r", "\n")
    text = _BODY_UNSAFE.sub("", text).rstrip()
    lines = []
    for line in text.split("\n") if text else []:
        line = line.rstrip()
        if not line:
            lines.append(">")
        elif line.startswith(">"):
            lines.append(">" + line)
        else:
            lines.append("> " + line)
    return "\n".join([head, *lines]) + "\n"
