"""Async IMAP client for the sync service, on top of aioimaplib 2.0.3.

What aioimaplib 2.0.3 does that matters here (read in its source, aioimaplib/aioimaplib.py), and what this
module does about it:

* Literals are buffered whole: ``Command.begin_literal_data(size)`` starts a ``bytearray`` that grows until
  ``size`` bytes arrived, with no limit. A server announcing ``{10737418240}`` would make it buffer 10 GB.
  ``_Protocol`` checks every announced literal size *before* any of it is buffered and closes the connection
  (``ImapProtocolError``) when it is above ``ImapSettings.max_literal_bytes``. ``fetch_batches`` also asks
  for ``RFC822.SIZE`` first and refuses oversized messages by name (``ImapMessageTooLarge``) without
  dropping the connection, and caps the bytes per batch (``max_batch_bytes``). Lines without CRLF are
  capped as well (``max_line_bytes``).
* ``_handle_responses`` recurses once per response line (RecursionError on big responses, after which the
  command never completes) and re-slices the rest of the buffer for every line. ``_Protocol`` replaces it
  with a loop over an index: same semantics, no recursion, no quadratic copying.
* ``FetchCommand.wait_data`` rescans the whole response for every line (quadratic). ``_FetchCommand``
  tracks the parenthesis depth incrementally.
* ``_untagged_response`` removes *every* ``b"* "`` in a line (so ``Re: * urgent`` becomes ``Re: urgent``).
  ``_Protocol`` strips only the leading ``"* "``. Message content is still only ever taken from
  ``BODY.PEEK[]`` literals, which never pass through that code.
* Untagged EXISTS/EXPUNGE/VANISHED/FETCH that no pending command claims are dropped with an INFO log line.
  ``_Protocol`` keeps them (``pending events``); ``idle()`` returns them at once.
* ``data_received`` logs every received byte at DEBUG (eagerly formatted, mail bodies included) and some
  lines at INFO. ``_Protocol`` does not call it, and a filter on the ``aioimaplib.aioimaplib`` logger drops
  its records below ERROR, so no message content reaches logs.
* A lost connection wakes no pending command (``IMAP4_SSL`` passes no ``conn_lost_cb``): callers would
  wait for their timeout. ``_Protocol.connection_lost`` fails every pending command at once.
* No STARTTLS, no source address, LOGIN sends the user name unquoted: done here on the protocol object.

Every command runs under ``asyncio.wait_for`` (``ImapSettings.timeout``; fetches also get an inactivity
timer). A timeout, a cancellation in the middle of a command or a protocol error closes the connection:
the client is then ``broken`` and the caller reconnects with a new ``ImapClient``.

Error messages (``str(exc)``) are one line for the user and never contain message content, subjects or
addresses: only host, port, user name, folder names, counts and server response codes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aioimaplib
from aioimaplib import (
    AUTH,
    CONNECTED,
    CRLF,
    NONAUTH,
    SELECTED,
    Command,
    CommandTimeout,
    FetchCommand,
    IdleCommand,
    IncompleteRead,
    quoted,
)

from carebox.mail.tls import TlsMode, client_context, describe_tls_error, is_tls_error

__all__ = [
    "FetchedMessage",
    "FlagUpdate",
    "FolderInfo",
    "ImapAuthError",
    "ImapClient",
    "ImapConnectionError",
    "ImapError",
    "ImapMessageTooLarge",
    "ImapProtocolError",
    "ImapSettings",
    "ImapTlsError",
    "SelectInfo",
    "TlsMode",
    "decode_mailbox_name",
    "encode_mailbox_name",
    "format_uid_set",
    "parse_uid_set",
]

log = logging.getLogger(__name__)

MB = 1024 * 1024
IDLE_REISSUE_SECONDS = 24 * 60  # RFC 2177: re-issue IDLE at least every 29 minutes; we stay under 25
POLL_SECONDS = 30.0  # NOOP polling when the server has no IDLE
_MAX_UNSOLICITED = 10_000
_MAX_UID_SET_MEMBERS = 5_000_000


class _QuietAioImapLib(logging.Filter):
    """aioimaplib logs raw protocol data (message bodies, search terms) at DEBUG/INFO: drop those."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


logging.getLogger("aioimaplib.aioimaplib").addFilter(_QuietAioImapLib())


# ---- public data -------------------------------------------------------------------------------------


@dataclass
class ImapSettings:
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    tls: TlsMode = TlsMode.IMPLICIT
    ca_file: Path | None = None
    allow_insecure: bool = False
    timeout: float = 30.0
    source_address: str | None = None  # bind the local side (tests connect from 127.0.0.2)
    max_literal_bytes: int = 50 * MB  # the largest message carebox downloads
    max_batch_bytes: int = 64 * MB  # bytes of messages per FETCH batch (one big message may exceed it alone)
    max_line_bytes: int = 16 * MB  # the longest response line accepted


class ImapError(Exception):
    """An IMAP failure; ``str(e)`` is one line for the user, with no mail content in it."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class ImapAuthError(ImapError):
    """The server refused the user name or password."""


class ImapTlsError(ImapError):
    """TLS could not be set up (certificate, host name, handshake, STARTTLS refused, plaintext refused)."""


class ImapConnectionError(ImapError):
    """The connection could not be made, was lost, or the server stopped answering."""


class ImapProtocolError(ImapError):
    """The server answered something carebox cannot accept (malformed, oversized, refused command)."""


class ImapMessageTooLarge(ImapProtocolError):
    """Messages above ``max_literal_bytes`` were asked for; nothing of them was downloaded.

    ``oversized`` maps UID -> size for every such message in the request; the connection stays usable:
    exclude these UIDs and call ``fetch_batches`` again.
    """

    def __init__(self, oversized: dict[int, int], limit: int) -> None:
        self.oversized = dict(sorted(oversized.items()))
        self.limit = limit
        uid, size = next(iter(self.oversized.items()))
        more = f" (and {len(oversized) - 1} more)" if len(oversized) > 1 else ""
        super().__init__(
            f"message UID {uid} is {_human(size)}, above the {_human(limit)} download limit{more}: "
            "it was not downloaded"
        )

    @property
    def uid(self) -> int:
        return next(iter(self.oversized))

    @property
    def size(self) -> int:
        return next(iter(self.oversized.values()))


@dataclass(frozen=True, slots=True)
class FlagUpdate:
    uid: int
    flags: frozenset[str]
    modseq: int | None = None


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    uid: int
    flags: frozenset[str]
    internaldate: datetime  # timezone-aware
    size: int  # len(raw)
    raw: bytes = field(repr=False)  # the exact RFC 5322 bytes from BODY[]


@dataclass(frozen=True, slots=True)
class SelectInfo:
    exists: int
    uidvalidity: int
    uidnext: int
    highestmodseq: int | None  # None when the server has no CONDSTORE or the folder says NOMODSEQ
    vanished: list[int] = field(default_factory=list)  # QRESYNC: UIDs expunged since the given modseq
    changed: list[FlagUpdate] = field(default_factory=list)  # QRESYNC: flags changed since the given modseq
    folder: str = "INBOX"
    readonly: bool = False
    qresync_applied: bool = False  # True when the server answered the QRESYNC parameters (same UIDVALIDITY)


@dataclass(frozen=True, slots=True)
class FolderInfo:
    name: str  # decoded (modified UTF-7 -> str)
    delimiter: str | None
    flags: frozenset[str]  # e.g. {"\\HasNoChildren", "\\Sent"}

    @property
    def special_use(self) -> str | None:
        for f in ("\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All", "\\Flagged"):
            if any(x.lower() == f.lower() for x in self.flags):
                return f
        return None

    @property
    def selectable(self) -> bool:
        return not any(x.lower() in ("\\noselect", "\\nonexistent") for x in self.flags)


# ---- small helpers -----------------------------------------------------------------------------------


def _human(n: int) -> str:
    if n >= 1024 * MB:
        return f"{n / (1024 * MB):.1f} GB"
    if n >= MB:
        return f"{n / MB:.1f} MB"
    return f"{n / 1024:.0f} KB" if n >= 1024 else f"{n} bytes"


def _response_code(text: bytes | str | None) -> str:
    """The ``[CODE ...]`` atom of a status text (``TRYCREATE``, ``OVERQUOTA``...), never its free text."""
    if text is None:
        return ""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("ascii", "replace")
    m = re.match(r"\s*\[([A-Za-z0-9.\-]+)", text)
    return m.group(1).upper() if m else ""


def _clean_server_text(text: bytes | str, limit: int = 160) -> str:
    """Server status text, made safe for one line in a message (control chars removed, truncated)."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def format_uid_set(uids: Iterable[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1:3,7,9:10"``."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("empty UID set")
    parts: list[str] = []
    start = prev = ordered[0]
    for u in ordered[1:]:
        if u == prev + 1:
            prev = u
            continue
        parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = u
    parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)


def parse_uid_set(text: str, upper: int | None = None) -> list[int]:
    """``"1:3,7"`` -> ``[1, 2, 3, 7]``. Ranges are clamped to ``upper`` (no UID >= UIDNEXT exists); ``*``
    needs ``upper``. Raises ImapProtocolError on garbage or on absurdly large sets."""
    out: list[int] = []
    text = text.strip()
    if not text:
        return out
    for part in text.split(","):
        lo_s, _, hi_s = part.partition(":")
        try:
            if lo_s == "*" or hi_s == "*":
                if upper is None:
                    raise ValueError
                lo = upper if lo_s == "*" else int(lo_s)
                hi = upper if (hi_s == "*" or not hi_s) else int(hi_s)
            else:
                lo = int(lo_s)
                hi = int(hi_s) if hi_s else lo
        except ValueError:
            raise ImapProtocolError("the server sent a malformed UID set") from None
        if lo > hi:
            lo, hi = hi, lo
        if upper is not None:
            hi = min(hi, upper)
        if lo < 1 or hi < lo:
            continue
        if len(out) + (hi - lo + 1) > _MAX_UID_SET_MEMBERS:
            raise ImapProtocolError("the server sent an implausibly large UID set")
        out.extend(range(lo, hi + 1))
    return sorted(set(out))


def encode_mailbox_name(name: str) -> str:
    """str -> IMAP modified UTF-7 (RFC 3501 5.1.3)."""
    out: list[str] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            b64 = base64.b64encode("".join(buf).encode("utf-16-be")).rstrip(b"=").replace(b"/", b",")
            out.append("&" + b64.decode("ascii") + "-")
            buf.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            buf.append(ch)
    flush()
    return "".join(out)


def decode_mailbox_name(name: str) -> str:
    """IMAP modified UTF-7 -> str (invalid sequences are left as they are)."""

    def repl(m: re.Match[str]) -> str:
        inner = m.group(1)
        if not inner:
            return "&"
        try:
            data = base64.b64decode(inner.replace(",", "/") + "=" * (-len(inner) % 4))
            return data.decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            return m.group(0)

    return re.sub(r"&([A-Za-z0-9+,]*)-", repl, name)


def _quote_mailbox(name: str) -> str:
    return quoted(encode_mailbox_name(name))


_MONTHS = {
    m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}
_INTERNALDATE_RE = re.compile(r"\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\s*$")


def _parse_internaldate(text: str) -> datetime:
    m = _INTERNALDATE_RE.match(text)
    if not m or m.group(2).title() not in _MONTHS:
        raise ImapProtocolError("the server sent a malformed INTERNALDATE")
    day, mon, year, hh, mm, ss, sign, oh, om = m.groups()
    offset = timedelta(hours=int(oh), minutes=int(om))
    tz = timezone(-offset if sign == "-" else offset)
    try:
        return datetime(int(year), _MONTHS[mon.title()], int(day), int(hh), int(mm), int(ss), tzinfo=tz)
    except ValueError:
        raise ImapProtocolError("the server sent a malformed INTERNALDATE") from None


# ---- response tokenizer ------------------------------------------------------------------------------
#
# A response is a list of parts as aioimaplib collects them: bytes segments of one line, and after a
# segment ending in {N} a bytearray holding exactly N literal bytes. Tokens: atoms -> str, quoted strings
# and literals -> bytes, NIL -> None, parenthesised lists -> list.

_LITERAL_TAIL_RE = re.compile(rb"~?\{(\d+)\}$")


class _Malformed(Exception):
    pass


def _tokenize(parts: Sequence[bytes | bytearray]) -> list[Any]:
    root: list[Any] = []
    stack: list[list[Any]] = [root]
    i_part = 0
    while i_part < len(parts):
        seg = parts[i_part]
        i_part += 1
        if isinstance(seg, bytearray):
            raise _Malformed("literal without announcement")
        lit = _LITERAL_TAIL_RE.search(seg)
        body = seg[: lit.start()] if lit else seg
        _tokenize_segment(body, stack)
        if lit:
            size = int(lit.group(1))
            if i_part >= len(parts) or not isinstance(parts[i_part], bytearray) or len(parts[i_part]) != size:
                raise _Malformed("literal size mismatch")
            stack[-1].append(bytes(parts[i_part]))
            i_part += 1
    if len(stack) != 1:
        raise _Malformed("unbalanced parentheses")
    return root


_TOKEN_RE = re.compile(
    rb" *(?:"
    rb"(\()"  # 1: open list
    rb"|(\))"  # 2: close list
    rb'|"((?:[^"\\\r\n]|\\.)*)"'  # 3: quoted string
    rb"|((?:[^ ()\"{\[\]\x00-\x1f\x7f]|\[[^\]\r\n]*\])+)"  # 4: atom; [..] may hold spaces: BODY[HEADER.FIELDS (A)]
    rb")"
)
_UNESCAPE_RE = re.compile(rb"\\(.)")


def _tokenize_segment(seg: bytes, stack: list[list[Any]]) -> None:
    pos, n = 0, len(seg)
    match = _TOKEN_RE.match
    while pos < n:
        m = match(seg, pos)
        if m is None:
            if seg[pos:].strip(b" "):
                raise _Malformed("unexpected character")
            return
        pos = m.end()
        if m.group(1) is not None:
            new: list[Any] = []
            stack[-1].append(new)
            stack.append(new)
        elif m.group(2) is not None:
            if len(stack) == 1:
                raise _Malformed("unbalanced parentheses")
            stack.pop()
        elif m.group(3) is not None:
            text = m.group(3)
            stack[-1].append(_UNESCAPE_RE.sub(rb"\1", text) if b"\\" in text else text)
        else:
            atom = m.group(4).decode("utf-8", "replace")
            stack[-1].append(None if atom.upper() == "NIL" else atom)


def _fetch_attributes(tokens: list[Any]) -> dict[str, Any]:
    """``[seq, "FETCH", [name, value, ...]]`` -> {NAME: value}."""
    if len(tokens) != 3 or not isinstance(tokens[0], str) or not tokens[0].isdigit():
        raise _Malformed("not a FETCH response")
    if not isinstance(tokens[1], str) or tokens[1].upper() != "FETCH" or not isinstance(tokens[2], list):
        raise _Malformed("not a FETCH response")
    items = tokens[2]
    if len(items) % 2:
        raise _Malformed("odd FETCH item list")
    attrs: dict[str, Any] = {}
    for k in range(0, len(items), 2):
        name = items[k]
        if not isinstance(name, str):
            raise _Malformed("FETCH item name is not an atom")
        attrs[name.upper()] = items[k + 1]
    return attrs


# The two FETCH answers a download reads 10,000 times each, in the shape Dovecot (and most
# servers) send them: read with one regex instead of the general tokenizer (which cost about 2 s of
# CPU per 10,000 messages). Anything else (another order, quoted or odd flags, literal8, NIL) goes
# through _tokenize, so the result is always what _tokenize + _fetch_attributes would give.
_FLAG_ATOMS = rb"(?:\\?[A-Za-z0-9$_.\-]+(?: \\?[A-Za-z0-9$_.\-]+)*)?"
_FAST_BODY_RE = re.compile(
    rb"([0-9]+) FETCH \(UID ([0-9]+) FLAGS \((" + _FLAG_ATOMS + rb")\) "
    rb'INTERNALDATE "([^"\\\r\n\x00-\x1f\x7f]*)" RFC822\.SIZE ([0-9]+) BODY\[\] \{([0-9]+)\}'
)
_FAST_SIZE_RE = re.compile(rb"([0-9]+) FETCH \(UID ([0-9]+) RFC822\.SIZE ([0-9]+)\)")


def _fast_fetch_item(group: Sequence[bytes | bytearray]) -> tuple[int, dict[str, Any]] | None:
    """(seq, attrs) of a FETCH item in one of the two common shapes, or None (use _tokenize)."""
    first = group[0]
    if len(group) == 1:
        m = _FAST_SIZE_RE.fullmatch(first)
        if m is None:
            return None
        return int(m[1]), {"UID": m[2].decode(), "RFC822.SIZE": m[3].decode()}
    if len(group) != 3 or type(group[1]) is not bytearray or group[2] != b")":
        return None
    m = _FAST_BODY_RE.fullmatch(first)
    if m is None or int(m[6]) != len(group[1]):
        return None
    flags = m[3].decode().split(" ") if m[3] else []
    if any(f.upper() == "NIL" for f in flags):
        return None
    return int(m[1]), {
        "UID": m[2].decode(),
        "FLAGS": flags,
        "INTERNALDATE": m[4],
        "RFC822.SIZE": m[5].decode(),
        "BODY[]": bytes(group[1]),
    }


def _as_int(value: Any) -> int:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or not value.isdigit():
        raise _Malformed("expected a number")
    return int(value)


def _as_flags(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise _Malformed("malformed FLAGS")
    return frozenset(f for f in value if f.lower() != "\\recent")


# ---- the protocol: aioimaplib's, with its traps fixed ------------------------------------------------

_literal_announce_re = re.compile(rb".*\{(?P<size>\d+)\}$")
_tagged_status_re = re.compile(rb"[A-Za-z0-9]+ (OK|NO|BAD)\b")
_message_data_re = re.compile(rb"[0-9]+ (FETCH|EXPUNGE)")
_event_re = re.compile(rb"^(\d+ (EXISTS|EXPUNGE|FETCH)\b|VANISHED\b)", re.IGNORECASE)


class _Inactive(Exception):
    pass


class _LiteralTooLarge(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


class _FetchCommand(FetchCommand):
    """FetchCommand with an incremental parenthesis count instead of a rescan per line."""

    def __init__(self, tag: str, *args: Any, **kw: Any) -> None:
        self._depth = 0
        super().__init__(tag, *args, **kw)

    def append_to_resp(self, line: bytes, result: str = "Pending") -> None:
        Command.append_to_resp(self, line, result)
        if type(line) is bytes:
            delta = line.count(b"(") - line.count(b")")
            if self.FETCH_MESSAGE_DATA_RE.match(line):
                self._depth = delta
            else:
                self._depth += delta

    def wait_data(self) -> bool:
        return self._depth != 0


class _Protocol(aioimaplib.IMAP4ClientProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, settings: ImapSettings) -> None:
        super().__init__(loop)
        self.host = host
        self.max_literal = settings.max_literal_bytes
        self.max_line = settings.max_line_bytes
        self.fatal: ImapError | None = None
        self.greeting: bytes | None = None
        self.hello: asyncio.Future[bytes] = loop.create_future()
        self.events: list[bytes] = []
        self.events_overflow = False
        self.closing = False
        self.starttls_tag: str | None = None
        self.tls_switching = False
        self.discarded_before_tls = 0
        self.last_rx = loop.time()  # when data last arrived (inactivity timeouts)

    # -- failure -----------------------------------------------------------------------------------

    def fail(self, err: ImapError) -> None:
        """Mark the connection dead: close it, wake every waiter with ``err``."""
        if self.fatal is None:
            self.fatal = err
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.abort()
        if not self.hello.done():
            self.hello.set_exception(err)
            self.hello.exception()  # mark retrieved: no "exception never retrieved" noise
        cmds = list(self.pending_async_commands.values())
        if self.pending_sync_command is not None:
            cmds.append(self.pending_sync_command)
        self.pending_async_commands = {}
        self.pending_sync_command = None
        for cmd in cmds:
            if cmd is not None and not cmd._event.is_set():
                cmd._exception = err
                cmd.close(b"", "KO")
        self.idle_queue.put_nowait([])

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closing:
            self.fail(ImapConnectionError(f"the connection to {self.host} was closed"))
        elif exc is not None and is_tls_error(exc):
            self.fail(ImapTlsError(describe_tls_error(exc, self.host)))
        else:
            self.fail(ImapConnectionError(f"the connection to {self.host} was lost"))

    async def execute(self, command: Command, scrub: str | None = None) -> aioimaplib.Response:
        if self.fatal is not None:
            raise self.fatal
        return await super().execute(command, scrub=scrub)

    # -- receiving ---------------------------------------------------------------------------------

    def data_received(self, d: bytes) -> None:
        # replaces aioimaplib's, which logs every byte at DEBUG
        if self.fatal is not None:
            return
        self.last_rx = self.loop.time()
        if self.tls_switching:
            self.discarded_before_tls += len(d)
            return
        if self.incomplete_line and b"\n" not in d:
            # still inside one long line: accumulate without re-parsing (avoids quadratic copying)
            if not isinstance(self.incomplete_line, bytearray):
                self.incomplete_line = bytearray(self.incomplete_line)
            self.incomplete_line += d
            if len(self.incomplete_line) > self.max_line:
                self.fail(
                    ImapProtocolError(
                        f"the server sent a response line longer than {_human(self.max_line)}: "
                        "the connection was closed"
                    )
                )
            return
        data = bytes(self.incomplete_line) + d if self.incomplete_line else d
        try:
            self._handle_responses(data, self._handle_line, self.current_command)
            self.incomplete_line = b""
            self.current_command = None
        except IncompleteRead as incomplete:
            self.current_command = incomplete.cmd
            self.incomplete_line = incomplete.data
            if len(self.incomplete_line) > self.max_line:
                self.fail(
                    ImapProtocolError(
                        f"the server sent a response line longer than {_human(self.max_line)}: "
                        "the connection was closed"
                    )
                )
        except _LiteralTooLarge as big:
            self.fail(
                ImapProtocolError(
                    f"the server announced {_human(big.size)} of data, above the {_human(self.max_literal)} "
                    "limit: the connection was closed before downloading it"
                )
            )
        except ImapError as err:
            self.fail(err)
        except Exception as err:  # aioimaplib's Abort/Error or anything unexpected: desynchronised
            self.fail(ImapProtocolError(f"the server sent a response carebox cannot read ({type(err).__name__})"))

    def _handle_responses(self, data: bytes, line_handler: Any, current_cmd: Command | None = None) -> None:
        """aioimaplib's recursive parser as a loop over an index (same behaviour, plus the literal cap)."""
        pos, n = 0, len(data)
        while True:
            if pos >= n:
                if self.pending_sync_command is not None:
                    self.pending_sync_command.flush()
                if current_cmd is not None and current_cmd.wait_data():
                    raise IncompleteRead(current_cmd)
                return
            if current_cmd is not None and current_cmd.wait_literal_data():
                need = current_cmd._expected_size - len(current_cmd._resp_literal_data)
                chunk = data[pos : pos + need] if (pos or n - pos > need) else data
                current_cmd.append_literal_data(chunk)
                pos += len(chunk)
                if current_cmd.wait_literal_data():
                    raise IncompleteRead(current_cmd)
                if pos >= n:
                    raise IncompleteRead(current_cmd, b"")
            end = data.find(CRLF, pos)
            if end < 0:
                raise IncompleteRead(current_cmd, data[pos:])
            line = data[pos:end]
            pos = end + 2
            cmd = line_handler(line, current_cmd)
            if self.tls_switching:  # STARTTLS answered: whatever follows in plaintext is discarded
                self.discarded_before_tls += n - pos
                return
            begin_literal = _literal_announce_re.match(line)
            if begin_literal:
                size = int(begin_literal.group("size"))
                if size > self.max_literal:
                    raise _LiteralTooLarge(size)
                if cmd is None:
                    cmd = Command("NIL", "unused", loop=self.loop)
                cmd.begin_literal_data(size)
                current_cmd = cmd
            elif cmd is not None and cmd.wait_data():
                current_cmd = cmd
            else:
                current_cmd = None

    def _handle_line(self, line: bytes, current_cmd: Command | None) -> Command | None:
        if not line:
            return None
        if self.state == CONNECTED:
            if self.greeting is None:
                self.greeting = line
                self._welcome(line)
            return None
        if _tagged_status_re.match(line):
            self._response_done(line)
            return None
        if current_cmd is not None:
            current_cmd.append_to_resp(line)
            return current_cmd
        if line.startswith(b"*"):
            return self._untagged_response(line)
        if line.startswith(b"+"):
            self._continuation(line)
            return None
        raise ImapProtocolError("the server sent malformed data (out of sequence): the connection was closed")

    def _welcome(self, line: bytes) -> None:
        upper = line.upper()
        if upper.startswith(b"* PREAUTH"):
            self.state = AUTH
        elif upper.startswith(b"* OK"):
            self.state = NONAUTH
        elif upper.startswith(b"* BYE"):
            raise ImapConnectionError(f"{self.host} refused the connection: {_clean_server_text(line[5:])}")
        else:
            raise ImapProtocolError(f"{self.host} does not greet like an IMAP server")
        if not self.hello.done():
            self.hello.set_result(line)

    def _untagged_response(self, line: bytes) -> Command | None:
        # aioimaplib removes every b"* " in the line; only the leading one is syntax
        line = line[2:] if line.startswith(b"* ") else line[1:]
        if self.pending_sync_command is not None:
            self.pending_sync_command.append_to_resp(line)
            return self.pending_sync_command
        match = _message_data_re.match(line)
        if match:
            cmd_name, text = match.group(1), line
        else:
            cmd_name, _, text = line.partition(b" ")
        command = self.pending_async_commands.get(cmd_name.decode("ascii", "replace").upper())
        if command is not None:
            command.append_to_resp(text)
            return command
        command = self.pending_async_commands.get("NOOP")
        if command is not None:
            command.append_to_resp(line)
            return command
        self.note_event(line)
        return None

    def note_event(self, line: bytes) -> None:
        if _event_re.match(line):
            if len(self.events) < _MAX_UNSOLICITED:
                self.events.append(bytes(line))
            else:
                self.events_overflow = True

    def _response_done(self, line: bytes) -> None:
        tag, _, response = line.partition(b" ")
        super()._response_done(line)
        if self.starttls_tag is not None and tag.decode("ascii", "replace") == self.starttls_tag:
            self.starttls_tag = None
            if response.upper().startswith(b"OK"):
                self.tls_switching = True


# ---- the client --------------------------------------------------------------------------------------


def _event_text(line: bytes | bytearray) -> str:
    return _clean_server_text(bytes(line), limit=300)


class ImapClient:
    """One IMAP connection for the sync service. Use ``async with ImapClient(settings) as imap: ...``.

    Commands are serialised on the connection (a lock); a command issued while ``idle()`` waits ends the
    IDLE first. After any ``ImapConnectionError`` / ``ImapProtocolError`` raised from a command (other
    than ``ImapMessageTooLarge``) the client is ``broken``: open a new one.
    """

    def __init__(self, settings: ImapSettings) -> None:
        self.settings = settings
        self._proto: _Protocol | None = None
        self._lock = asyncio.Lock()
        self._idle_wake = asyncio.Event()
        self._idling = False
        self.selected: str | None = None
        self.selected_readonly = False
        self.uidvalidity: int | None = None
        self._select_gen = 0
        self.qresync_enabled = False
        self.condstore_enabled = False
        self.preauth = False

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> ImapClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.logout()

    @property
    def capabilities(self) -> set[str]:
        return set(self._proto.capabilities) if self._proto is not None else set()

    @property
    def connected(self) -> bool:
        return self._proto is not None and self._proto.fatal is None and not self._proto.closing

    @property
    def broken(self) -> bool:
        return self._proto is not None and self._proto.fatal is not None and not self._proto.closing

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    async def connect(self) -> None:
        s = self.settings
        if self._proto is not None:
            raise RuntimeError("ImapClient.connect() called twice; use a new client to reconnect")
        if s.tls == TlsMode.NONE and not s.allow_insecure:
            raise ImapTlsError(
                f"refusing plaintext IMAP to {s.host}: set tls = implicit (port 993) or starttls in [account], "
                "or allow_insecure = true if you really mean to send your password unencrypted"
            )
        ctx = client_context(s.ca_file) if s.tls != TlsMode.NONE else None
        loop = asyncio.get_running_loop()
        proto = _Protocol(loop, s.host, s)
        self._proto = proto
        implicit = s.tls == TlsMode.IMPLICIT
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: proto,
                    s.host,
                    s.port,
                    ssl=ctx if implicit else None,
                    server_hostname=s.host if implicit else None,
                    ssl_handshake_timeout=s.timeout if implicit else None,
                    local_addr=(s.source_address, 0) if s.source_address else None,
                ),
                s.timeout,
            )
        except (ssl.SSLError, ssl.CertificateError) as exc:
            proto.closing = True
            raise ImapTlsError(describe_tls_error(exc, s.host)) from None
        except TimeoutError:
            proto.closing = True
            raise ImapConnectionError(
                f"no answer from {self._where()} within {s.timeout:.0f} s: check host and port in [account]"
            ) from None
        except OSError as exc:
            proto.closing = True
            if is_tls_error(exc):
                raise ImapTlsError(describe_tls_error(exc, s.host)) from None
            reason = exc.strerror or type(exc).__name__
            if isinstance(exc, ConnectionRefusedError):
                reason = "connection refused (is the server running? check host and port in [account])"
            elif exc.__class__.__name__ == "gaierror":
                reason = "the host name cannot be resolved (check host in [account] and the network)"
            raise ImapConnectionError(f"cannot connect to {self._where()}: {reason}") from None
        try:
            await self._connect_session(loop, ctx)
        except BaseException:
            self._close_transport()
            raise

    async def _connect_session(self, loop: asyncio.AbstractEventLoop, ctx: ssl.SSLContext | None) -> None:
        s = self.settings
        proto = self._require()
        try:
            await asyncio.wait_for(asyncio.shield(proto.hello), s.timeout)
        except TimeoutError:
            proto.fail(ImapConnectionError(f"{self._where()} sent no IMAP greeting within {s.timeout:.0f} s"))
            raise proto.fatal from None  # type: ignore[misc]
        self.preauth = proto.state == AUTH
        greeting = proto.greeting or b""
        await self._refresh_capabilities()

        if s.tls == TlsMode.STARTTLS:
            if self.preauth:
                raise ImapTlsError(
                    f"{s.host} sent PREAUTH on a STARTTLS connection, so the connection cannot be secured: "
                    "refusing it (use tls = implicit, port 993)"
                )
            if "STARTTLS" not in proto.capabilities:
                raise ImapTlsError(
                    f"{s.host} does not offer STARTTLS on port {s.port}: "
                    "use tls = implicit (port 993), the connection was not secured"
                )
            proto.starttls_tag = tag = proto.new_tag()
            resp = await self._exec(Command("STARTTLS", tag, loop=loop))
            if resp.result != "OK" or not proto.tls_switching:
                raise ImapTlsError(
                    f"{s.host} refused STARTTLS ({resp.result}): the connection was not secured, "
                    "no password was sent; use tls = implicit (port 993)"
                )
            assert ctx is not None
            try:
                new_transport = await asyncio.wait_for(
                    loop.start_tls(
                        proto.transport, proto, ctx, server_hostname=s.host, ssl_handshake_timeout=s.timeout
                    ),
                    s.timeout + 1,
                )
            except (ssl.SSLError, ssl.CertificateError, OSError, TimeoutError) as exc:
                if isinstance(exc, TimeoutError) and not is_tls_error(exc):
                    msg = f"TLS handshake with {s.host} after STARTTLS did not finish within {s.timeout:.0f} s"
                else:
                    msg = describe_tls_error(exc, s.host)
                proto.fail(ImapTlsError(msg))
                raise ImapTlsError(msg) from None
            proto.transport = new_transport
            proto.incomplete_line = b""
            proto.current_command = None
            proto.tls_switching = False
            if proto.discarded_before_tls:
                log.warning("discarded %d bytes the server sent before the TLS switch", proto.discarded_before_tls)
            proto.capabilities = set()
            await self._refresh_capabilities()

        if not self.preauth:
            if "LOGINDISABLED" in proto.capabilities or (
                b"LOGINDISABLED" in greeting.upper() and s.tls == TlsMode.NONE
            ):
                raise ImapTlsError(
                    f"{s.host} refuses to log in without TLS (LOGINDISABLED): "
                    "use tls = implicit (port 993) or starttls in [account]"
                )
            await self._login()

        if "QRESYNC" in proto.capabilities and "ENABLE" in proto.capabilities:
            resp = await self._exec(Command("ENABLE", proto.new_tag(), "QRESYNC", loop=loop))
            enabled = b" ".join(bytes(x) for x in resp.lines if isinstance(x, bytes)).upper()
            self.qresync_enabled = resp.result == "OK" and b"QRESYNC" in enabled
            self.condstore_enabled = self.qresync_enabled
        if not self.condstore_enabled and "CONDSTORE" in proto.capabilities:
            self.condstore_enabled = True  # CONDSTORE is enabled by the first MODSEQ / CHANGEDSINCE use
        log.debug("IMAP session open on %s (tls=%s, qresync=%s)", self._where(), s.tls.value, self.qresync_enabled)

    async def _refresh_capabilities(self) -> None:
        proto = self._require()
        resp = await self._exec(Command("CAPABILITY", proto.new_tag(), loop=proto.loop))
        caps: set[str] = set()
        for line in resp.lines[:-1]:
            if isinstance(line, bytes):
                text = line.decode("ascii", "replace")
                if text.upper().startswith("CAPABILITY "):
                    text = text[len("CAPABILITY ") :]
                caps.update(tok.upper() for tok in text.split())
        if resp.result != "OK" or not caps & {"IMAP4REV1", "IMAP4REV2"}:
            raise ImapProtocolError(f"{self.settings.host} does not announce IMAP4rev1 capabilities")
        proto.capabilities = caps
        proto.imap_version = "IMAP4REV1"

    async def _login(self) -> None:
        s = self.settings
        proto = self._require()
        try:
            cmd = Command("LOGIN", proto.new_tag(), quoted(s.username), quoted(s.password), loop=proto.loop)
        except ValueError:
            raise ImapAuthError("the user name or password contains a line break or NUL character") from None
        resp = await self._exec(cmd, scrub=s.password)
        if resp.result != "OK":
            text = resp.lines[-1] if resp.lines else b""
            code = _response_code(text)
            if code in ("UNAVAILABLE", "INUSE", "LIMIT"):
                raise ImapConnectionError(
                    f"{s.host} cannot log you in right now ({code}): {_clean_server_text(text)}; try again later"
                )
            raise ImapAuthError(
                f"{s.host} refused the login for {s.username}: {_clean_server_text(text) or resp.result}. "
                "Check username and password in [account]"
            )
        proto.state = AUTH
        last = resp.lines[-1] if resp.lines else b""
        m = re.match(rb"\s*\[CAPABILITY ([^\]]*)\]", bytes(last))
        if m:
            proto.capabilities = {c.upper() for c in m.group(1).decode("ascii", "replace").split()}
        else:
            await self._refresh_capabilities()

    async def logout(self) -> None:
        """Say LOGOUT (best effort, short timeout) and close. Safe to call more than once."""
        proto = self._proto
        if proto is None or proto.closing:
            return
        if proto.fatal is None and proto.transport is not None and not self._lock.locked():
            with contextlib.suppress(Exception):
                async with self._lock:
                    await asyncio.wait_for(
                        proto.execute(Command("LOGOUT", proto.new_tag(), loop=proto.loop)),
                        min(self.settings.timeout, 5.0),
                    )
        self._close_transport()

    def _close_transport(self) -> None:
        proto = self._proto
        if proto is None:
            return
        proto.closing = True
        if proto.transport is not None:
            with contextlib.suppress(Exception):
                proto.transport.close()
        proto.fail(ImapConnectionError(f"the connection to {self.settings.host} was closed"))

    # -- command plumbing --------------------------------------------------------------------------

    def _require(self) -> _Protocol:
        if self._proto is None:
            raise ImapConnectionError("not connected: call connect() first")
        if self._proto.fatal is not None:
            raise self._proto.fatal
        return self._proto

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[_Protocol]:
        if self._idling:
            self._idle_wake.set()
        async with self._lock:
            yield self._require()

    async def _exec(
        self,
        command: Command,
        *,
        scrub: str | None = None,
        timeout: float | None = None,
        inactivity: float | None = None,
    ) -> aioimaplib.Response:
        """Run one command under ``wait_for(timeout)``; with ``inactivity``, also fail when the server
        sends nothing for that long (for long transfers whose total time is hard to bound)."""
        proto = self._require()
        t = timeout if timeout is not None else self.settings.timeout
        try:
            if inactivity is None:
                resp = await asyncio.wait_for(proto.execute(command, scrub=scrub), t)
            else:
                resp = await asyncio.wait_for(self._watch(proto, proto.execute(command, scrub=scrub), inactivity), t)
        except TimeoutError:
            err = ImapConnectionError(
                f"{self.settings.host} did not answer {command.name} within {t:.0f} s: the connection was closed"
            )
            proto.fail(err)
            raise err from None
        except (CommandTimeout, _Inactive):
            err = ImapConnectionError(
                f"{self.settings.host} stopped sending during {command.name} for "
                f"{self.settings.timeout:.0f} s: the connection was closed"
            )
            proto.fail(err)
            raise err from None
        except asyncio.CancelledError:
            # the reply is still on its way: the connection is out of step, close it
            proto.fail(ImapConnectionError(f"{command.name} was cancelled: the connection was closed"))
            raise
        except ImapError:
            raise
        except aioimaplib.Abort as exc:
            raise ImapProtocolError(f"carebox cannot send {command.name} now ({exc})") from None
        except aioimaplib.AioImapException as exc:
            err = ImapProtocolError(f"{command.name} failed: {type(exc).__name__}")
            proto.fail(err)
            raise err from None
        if command.name not in ("SELECT", "EXAMINE", "IDLE", "FETCH", "STORE", "NOOP"):
            for line in resp.lines[:-1]:
                if type(line) is bytes:
                    proto.note_event(line)
        return resp

    async def _watch(self, proto: _Protocol, coro: Any, inactivity: float) -> aioimaplib.Response:
        loop = asyncio.get_running_loop()
        proto.last_rx = loop.time()
        task = asyncio.ensure_future(coro)
        try:
            while True:
                wait = proto.last_rx + inactivity - loop.time()
                if wait <= 0:
                    raise _Inactive
                done, _ = await asyncio.wait({task}, timeout=wait)
                if done:
                    return task.result()
        finally:
            if not task.done():
                task.cancel()

    def _check(self, resp: aioimaplib.Response, what: str) -> None:
        if resp.result != "OK":
            code = _response_code(resp.lines[-1] if resp.lines else b"")
            raise ImapProtocolError(f"{self.settings.host} refused {what} ({resp.result}{' ' + code if code else ''})")

    def _need_selected(self) -> None:
        if self.selected is None:
            raise ImapProtocolError("no folder is selected: call select() first")

    # -- folders -----------------------------------------------------------------------------------

    async def select(
        self, folder: str = "INBOX", *, qresync: tuple[int, int] | None = None, readonly: bool = False
    ) -> SelectInfo:
        """SELECT (or EXAMINE when ``readonly``) ``folder``.

        ``qresync=(uidvalidity, modseq)`` from the last sync: when the server has QRESYNC and the
        UIDVALIDITY still matches, ``vanished`` lists UIDs expunged since ``modseq`` (clamped below
        UIDNEXT) and ``changed`` the flag changes since then; ``qresync_applied`` tells whether that
        happened. If UIDVALIDITY differs, both lists are empty and the caller must resync from scratch.
        """
        async with self._locked() as proto:
            name = "EXAMINE" if readonly else "SELECT"
            args = [_quote_mailbox(folder)]
            use_qresync = qresync is not None and self.qresync_enabled
            if use_qresync:
                assert qresync is not None
                v, m = int(qresync[0]), int(qresync[1])
                if v > 0 and m > 0:
                    args.append(f"(QRESYNC ({v} {m}))")
                else:
                    use_qresync = False
            self.selected = None
            self.uidvalidity = None
            self._select_gen += 1
            proto.events.clear()  # change notes were about the previous folder; SELECT gives the new state
            proto.events_overflow = False
            resp = await self._exec(Command(name, proto.new_tag(), *args, loop=proto.loop))
            if resp.result != "OK":
                proto.state = AUTH
                text = bytes(resp.lines[-1]).lower() if resp.lines else b""
                code = _response_code(text)
                missing = code == "NONEXISTENT" or any(w in text for w in (b"doesn't exist", b"does not exist"))
                hint = ": it does not exist on the server" if missing else ""
                raise ImapProtocolError(
                    f"cannot open folder {folder!r} ({resp.result}{' ' + code if code else ''}){hint}"
                )
            proto.state = SELECTED
            info = self._parse_select(resp.lines, folder, readonly, qresync if use_qresync else None)
            if info.uidnext == 0:
                st = await self._status_locked(proto, folder, ("UIDNEXT",))
                info = _replace(info, uidnext=st.get("UIDNEXT", 0))
            self.selected = folder
            self.selected_readonly = readonly or b"[READ-ONLY]" in bytes(resp.lines[-1]).upper()
            self.uidvalidity = info.uidvalidity
            log.debug("selected a folder: %d messages", info.exists)
            return info

    def _parse_select(
        self, lines: list[bytes | bytearray], folder: str, readonly: bool, qresync: tuple[int, int] | None
    ) -> SelectInfo:
        exists = 0
        uidvalidity = uidnext = 0
        highestmodseq: int | None = None
        vanished_sets: list[str] = []
        changed: list[FlagUpdate] = []
        for raw in lines[:-1]:
            if type(raw) is not bytes:
                continue
            line = raw.strip()
            up = line.upper()
            try:
                if up.startswith(b"OK ["):
                    m = re.match(rb"OK \[([A-Z\-]+)(?: (\d+))?\]", up)
                    if not m:
                        continue
                    code, num = m.group(1), m.group(2)
                    if code == b"UIDVALIDITY" and num:
                        uidvalidity = int(num)
                    elif code == b"UIDNEXT" and num:
                        uidnext = int(num)
                    elif code == b"HIGHESTMODSEQ" and num:
                        highestmodseq = int(num)
                    elif code == b"NOMODSEQ":
                        highestmodseq = None
                elif re.match(rb"\d+ EXISTS$", up):
                    exists = int(up.split()[0])
                elif up.startswith(b"VANISHED"):
                    rest = line[len(b"VANISHED") :].strip()
                    if rest.upper().startswith(b"(EARLIER)"):
                        rest = rest[len(b"(EARLIER)") :].strip()
                    vanished_sets.append(rest.decode("ascii", "replace"))
                elif re.match(rb"\d+ FETCH ", up):
                    attrs = _fetch_attributes(_tokenize([line]))
                    if "UID" in attrs and "FLAGS" in attrs:
                        modseq = _as_int(attrs["MODSEQ"]) if "MODSEQ" in attrs else None
                        changed.append(FlagUpdate(_as_int(attrs["UID"]), _as_flags(attrs["FLAGS"]), modseq))
            except (_Malformed, ValueError):
                raise ImapProtocolError(f"the server's answer to SELECT {folder!r} is malformed") from None
        if uidvalidity <= 0:
            raise ImapProtocolError(f"the server gave no UIDVALIDITY for folder {folder!r}")
        vanished: list[int] = []
        upper = uidnext - 1 if uidnext else None
        for text in vanished_sets:
            vanished.extend(parse_uid_set(text, upper))
        return SelectInfo(
            exists=exists,
            uidvalidity=uidvalidity,
            uidnext=uidnext,
            highestmodseq=highestmodseq,
            vanished=sorted(set(vanished)),
            changed=sorted(changed, key=lambda f: f.uid),
            folder=folder,
            readonly=readonly,
            qresync_applied=qresync is not None and int(qresync[0]) == uidvalidity,
        )

    async def status(
        self, folder: str, items: Sequence[str] = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "HIGHESTMODSEQ")
    ) -> dict[str, int]:
        """STATUS of a folder without selecting it. HIGHESTMODSEQ is dropped if the server lacks CONDSTORE."""
        async with self._locked() as proto:
            return await self._status_locked(proto, folder, items)

    async def _status_locked(self, proto: _Protocol, folder: str, items: Sequence[str]) -> dict[str, int]:
        wanted = [i.upper() for i in items if i.upper() != "HIGHESTMODSEQ" or "CONDSTORE" in proto.capabilities]
        resp = await self._exec(
            Command("STATUS", proto.new_tag(), _quote_mailbox(folder), f"({' '.join(wanted)})", loop=proto.loop)
        )
        self._check(resp, f"STATUS of folder {folder!r}")
        out: dict[str, int] = {}
        for line in resp.lines[:-1]:
            if type(line) is bytes:
                m = re.search(rb"\(([^()]*)\)\s*$", line)
                if m:
                    toks = m.group(1).decode("ascii", "replace").split()
                    for k in range(0, len(toks) - 1, 2):
                        if toks[k + 1].isdigit():
                            out[toks[k].upper()] = int(toks[k + 1])
        return out

    async def list_folders(self) -> list[FolderInfo]:
        """All folders (LIST "" "*"), with special-use flags when the server supports them."""
        async with self._locked() as proto:
            args = ['""', '"*"']
            if "SPECIAL-USE" in proto.capabilities:
                args += ["RETURN", "(SPECIAL-USE)"]
            resp = await self._exec(Command("LIST", proto.new_tag(), *args, loop=proto.loop))
            self._check(resp, "LIST")
            return _parse_list(resp.lines[:-1])

    async def sent_folder(self) -> str | None:
        """The folder flagged ``\\Sent`` (RFC 6154), else a folder with a usual Sent name, else None."""
        folders = await self.list_folders()
        for f in folders:
            if f.special_use == "\\Sent" and f.selectable:
                return f.name
        by_name = {f.name.lower(): f.name for f in folders if f.selectable}
        for guess in ("sent", "sent items", "sent messages", "inbox.sent", "inbox/sent", "gesendet"):
            if guess in by_name:
                return by_name[guess]
        return None

    # -- reading -----------------------------------------------------------------------------------

    async def search_uids(self, criteria: str = "ALL") -> list[int]:
        """UID SEARCH in the selected folder; ``criteria`` is raw IMAP search syntax (trusted caller input)."""
        async with self._locked() as proto:
            self._need_selected()
            return await self._search_locked(proto, criteria.split())

    async def all_uids(self) -> list[int]:
        return await self.search_uids("ALL")

    async def _search_locked(self, proto: _Protocol, args: Sequence[str]) -> list[int]:
        resp = await self._exec(Command("SEARCH", proto.new_tag(), *args, prefix="UID", loop=proto.loop))
        self._check(resp, "SEARCH")
        uids: list[int] = []
        for line in resp.lines[:-1]:
            if type(line) is bytes:
                for tok in line.split():
                    if tok.isdigit():
                        uids.append(int(tok))
                    elif tok.upper() != b"SEARCH":
                        raise ImapProtocolError("the server's SEARCH answer is malformed")
        return sorted(set(uids))

    async def search_header(self, folder: str, header: str, value: str) -> list[int]:
        """UIDs in ``folder`` whose ``header`` contains ``value`` (e.g. ``"Message-ID"``, ``"<id@host>"``).

        Leaves ``folder`` selected (read-only via EXAMINE if it was not the selected folder).
        """
        if not re.fullmatch(r"[A-Za-z0-9\-]+", header):
            raise ValueError("header name must be an RFC 5322 field name")
        if any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
            raise ValueError("header value to search must be printable ASCII")
        if self.selected != folder:
            await self.select(folder, readonly=True)
        async with self._locked() as proto:
            return await self._search_locked(proto, ["HEADER", header, quoted(value)])

    async def uid_flags(
        self, uid_range: str | Sequence[int] = "1:*", changedsince: int | None = None
    ) -> list[FlagUpdate]:
        """Flags (and MODSEQ with CONDSTORE) of the messages in ``uid_range``; with ``changedsince`` only
        those changed after that modseq (ignored, i.e. all returned, when the server lacks CONDSTORE)."""
        uid_set = uid_range if isinstance(uid_range, str) else format_uid_set(uid_range)
        async with self._locked() as proto:
            self._need_selected()
            condstore = self.condstore_enabled
            items = "(UID FLAGS MODSEQ)" if condstore else "(UID FLAGS)"
            args = [uid_set, items]
            if changedsince is not None and condstore:
                args.append(f"(CHANGEDSINCE {int(changedsince)})")
            resp = await self._fetch_cmd(proto, args, timeout_bytes=0)
            out: dict[int, FlagUpdate] = {}
            for attrs in self._fetch_items(resp):
                if "UID" in attrs and "FLAGS" in attrs:
                    try:
                        uid = _as_int(attrs["UID"])
                        modseq = _as_int(attrs["MODSEQ"]) if "MODSEQ" in attrs else None
                        out[uid] = FlagUpdate(uid, _as_flags(attrs["FLAGS"]), modseq)
                    except _Malformed:
                        raise ImapProtocolError("the server's FETCH FLAGS answer is malformed") from None
            return [out[u] for u in sorted(out)]

    async def message_sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """UID -> RFC822.SIZE for the given UIDs that still exist."""
        sizes: dict[int, int] = {}
        ordered = sorted(set(uids))
        for start in range(0, len(ordered), 5000):
            chunk = ordered[start : start + 5000]
            async with self._locked() as proto:
                self._need_selected()
                resp = await self._fetch_cmd(proto, [format_uid_set(chunk), "(UID RFC822.SIZE)"], timeout_bytes=0)
                wanted = set(chunk)
                for attrs in self._fetch_items(resp):
                    if "UID" in attrs and "RFC822.SIZE" in attrs:
                        try:
                            uid, size = _as_int(attrs["UID"]), _as_int(attrs["RFC822.SIZE"])
                        except _Malformed:
                            raise ImapProtocolError("the server's FETCH RFC822.SIZE answer is malformed") from None
                        if uid in wanted:
                            sizes[uid] = size
        return sizes

    async def fetch_batches(
        self, uids: Sequence[int], batch_size: int = 250, *, sizes: dict[int, int] | None = None
    ) -> AsyncIterator[list[FetchedMessage]]:
        """Download whole messages (``BODY.PEEK[]``: the \\Seen flag is not touched) in UID order, in
        batches of at most ``batch_size`` messages and about ``max_batch_bytes`` bytes.

        UIDs that no longer exist are skipped (compare the UIDs you get with the ones you asked for).
        Raises ``ImapMessageTooLarge`` before downloading anything if a message is above
        ``max_literal_bytes`` (the connection stays usable). The selected folder must not change while
        iterating. ``sizes``: what ``message_sizes(uids)`` answered in this selection, if already asked.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        ordered = sorted(set(uids))
        if not ordered:
            return
        self._need_selected()
        gen = self._select_gen
        if sizes is None:
            sizes = await self.message_sizes(ordered)
        limit = self.settings.max_literal_bytes
        oversized = {u: n for u, n in sizes.items() if n > limit}
        if oversized:
            raise ImapMessageTooLarge(oversized, limit)
        batch: list[int] = []
        batch_bytes = 0
        for uid in ordered:
            if uid not in sizes:
                continue
            if batch and (len(batch) >= batch_size or batch_bytes + sizes[uid] > self.settings.max_batch_bytes):
                yield await self._fetch_full(batch, batch_bytes, gen)
                batch, batch_bytes = [], 0
            batch.append(uid)
            batch_bytes += sizes[uid]
        if batch:
            yield await self._fetch_full(batch, batch_bytes, gen)

    async def _fetch_full(self, batch: list[int], batch_bytes: int, gen: int) -> list[FetchedMessage]:
        async with self._locked() as proto:
            if gen != self._select_gen or self.selected is None:
                raise ImapProtocolError("the selected folder changed while messages were being downloaded")
            resp = await self._fetch_cmd(
                proto,
                [format_uid_set(batch), "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])"],
                timeout_bytes=batch_bytes,
            )
            wanted = set(batch)
            found: dict[int, FetchedMessage] = {}
            for seq, attrs in self._fetch_items(resp, with_seq=True):
                try:
                    if "UID" not in attrs:
                        continue
                    uid = _as_int(attrs["UID"])
                    body = attrs.get("BODY[]")
                    if uid not in wanted or not isinstance(body, bytes):
                        if "FLAGS" in attrs and "BODY[]" not in attrs:  # an unsolicited flag change
                            proto.note_event(f"{seq} FETCH (UID {uid})".encode())
                        continue
                    if "FLAGS" not in attrs or "INTERNALDATE" not in attrs:
                        raise _Malformed("missing FLAGS or INTERNALDATE")
                    date = attrs["INTERNALDATE"]
                    if not isinstance(date, bytes):
                        raise _Malformed("INTERNALDATE is not a string")
                    found[uid] = FetchedMessage(
                        uid=uid,
                        flags=_as_flags(attrs["FLAGS"]),
                        internaldate=_parse_internaldate(date.decode("ascii", "replace")),
                        size=len(body),
                        raw=body,
                    )
                except _Malformed:
                    raise ImapProtocolError("the server's FETCH answer is malformed: the batch was not used") from None
            return [found[u] for u in sorted(found)]

    async def _fetch_cmd(self, proto: _Protocol, args: list[str], timeout_bytes: int) -> aioimaplib.Response:
        t = self.settings.timeout
        cmd = _FetchCommand(proto.new_tag(), *args, prefix="UID", loop=proto.loop)
        # silence for `timeout` s fails it; overall bound: `timeout` plus the bytes at a slow 64 KB/s
        resp = await self._exec(cmd, timeout=t + timeout_bytes / (64 * 1024), inactivity=t)
        if resp.result != "OK":
            code = _response_code(resp.lines[-1] if resp.lines else b"")
            raise ImapProtocolError(f"{self.settings.host} refused FETCH ({resp.result}{' ' + code if code else ''})")
        return resp

    def _fetch_items(self, resp: aioimaplib.Response, with_seq: bool = False) -> Iterable[Any]:
        """Group the response parts into FETCH items (a FETCH line, its literals, their continuation
        lines) and parse each; anything that does not parse is a protocol error."""
        proto = self._require()
        groups: list[list[bytes | bytearray]] = []
        current: list[bytes | bytearray] | None = None
        for part in resp.lines[:-1]:
            if type(part) is bytes and FetchCommand.FETCH_MESSAGE_DATA_RE.match(part):
                current = [part]
                groups.append(current)
            elif current is not None:
                current.append(part)
            elif type(part) is bytes:
                proto.note_event(part)
            else:
                raise ImapProtocolError("the server's FETCH answer is malformed (stray literal)")
        for g in groups:
            fast = _fast_fetch_item(g)
            if fast is not None:
                yield fast if with_seq else fast[1]
                continue
            try:
                toks = _tokenize(g)
                attrs = _fetch_attributes(toks)
            except _Malformed:
                err = ImapProtocolError("the server's FETCH answer is malformed: the connection was closed")
                proto.fail(err)
                raise err from None
            yield (int(toks[0]), attrs) if with_seq else attrs

    # -- writing -----------------------------------------------------------------------------------

    async def store_flags(self, uids: Sequence[int], add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        """Add and/or remove flags on messages of the selected folder (``+FLAGS.SILENT`` / ``-FLAGS.SILENT``)."""
        add_s, remove_s = _check_flags(add), _check_flags(remove)
        if not uids or not (add_s or remove_s):
            return
        uid_set = format_uid_set(uids)
        async with self._locked() as proto:
            self._need_selected()
            if self.selected_readonly:
                raise ImapProtocolError(f"folder {self.selected!r} is open read-only: select it to change flags")
            for op, flags in (("+FLAGS.SILENT", add_s), ("-FLAGS.SILENT", remove_s)):
                if flags:
                    cmd = Command(
                        "STORE",
                        proto.new_tag(),
                        uid_set,
                        op,
                        f"({' '.join(sorted(flags))})",
                        prefix="UID",
                        untagged_resp_name="FETCH",
                        loop=proto.loop,
                    )
                    self._check(await self._exec(cmd), "STORE")

    async def append(
        self, folder: str, raw: bytes, flags: Iterable[str] = (), date: datetime | None = None
    ) -> int | None:
        """APPEND a message; returns its UID from APPENDUID (UIDPLUS) or None if the server gives none."""
        if date is not None and date.tzinfo is None:
            raise ValueError("date must be timezone-aware")
        flag_s = _check_flags(flags)
        async with self._locked() as proto:
            resp = await asyncio.wait_for(
                self._append_locked(proto, folder, raw, flag_s, date),
                self.settings.timeout + len(raw) / (64 * 1024),
            )
            self._check(resp, f"APPEND to folder {folder!r}")
            m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", bytes(resp.lines[-1]).upper())
            return int(m.group(2)) if m else None

    async def _append_locked(
        self, proto: _Protocol, folder: str, raw: bytes, flags: set[str], date: datetime | None
    ) -> aioimaplib.Response:
        args = [_quote_mailbox(folder)]
        if flags:
            args.append(f"({' '.join(sorted(flags))})")
        if date is not None:
            args.append(aioimaplib.time2internaldate(date))
        args.append(f"{{{len(raw)}}}")
        proto.literal_data = raw
        cmd = Command("APPEND", proto.new_tag(), *args, loop=proto.loop)
        return await self._exec(cmd, timeout=self.settings.timeout + len(raw) / (64 * 1024))

    # -- waiting for changes -----------------------------------------------------------------------

    def pending_events(self) -> list[str]:
        """Take the change notifications (EXISTS/EXPUNGE/VANISHED/FETCH lines) the server sent unasked."""
        proto = self._proto
        if proto is None:
            return []
        lines, proto.events = proto.events, []
        out = [_event_text(x) for x in lines]
        if proto.events_overflow:
            proto.events_overflow = False
            out.append("OVERFLOW")
        return out

    async def noop(self) -> list[str]:
        """NOOP: proves the connection is alive (ImapConnectionError after ``timeout``), returns events."""
        async with self._locked() as proto:
            resp = await self._exec(Command("NOOP", proto.new_tag(), loop=proto.loop))
            for line in resp.lines[:-1]:
                if type(line) is bytes:
                    proto.note_event(line)
            self._check_bye(resp.lines)
            return self.pending_events()

    def _check_bye(self, lines: Iterable[Any]) -> None:
        for line in lines:
            if type(line) is bytes and line.upper().startswith(b"BYE"):
                err = ImapConnectionError(f"{self.settings.host} is closing the connection")
                self._require().fail(err)
                raise err

    async def idle(self, timeout: float = 600.0, wake: asyncio.Event | None = None) -> list[str]:
        """Wait up to ``timeout`` s for a change in the selected folder; returns the server's event lines
        (``"3 EXISTS"``, ``"VANISHED 7"``, ``"4 FETCH (UID 9 FLAGS (\\Seen) MODSEQ (12))"``...), or ``[]``
        on timeout, when ``wake`` is set, or when another command of this client needs the connection.

        Uses IDLE (re-issued every 24 minutes at most) or, without IDLE, a NOOP every 30 s. Every IDLE ends
        with DONE and the server's OK within ``timeout`` of the settings: a dead connection raises
        ImapConnectionError there. Cancelling ``idle()`` closes the connection; prefer ``wake``.
        """
        events = self.pending_events()
        if events:
            return events
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._locked() as proto:
            self._need_selected()
            self._idle_wake.clear()
            self._idling = True
            try:
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0 or self._idle_wake.is_set() or (wake is not None and wake.is_set()):
                        return self.pending_events()
                    if "IDLE" in proto.capabilities:
                        events = await self._idle_once(proto, min(remaining, IDLE_REISSUE_SECONDS), wake)
                    else:
                        events = await self._poll_once(proto, min(remaining, POLL_SECONDS), wake)
                    events += self.pending_events()
                    if events:
                        return events
            finally:
                self._idling = False

    async def _wait_any(self, aws: set[asyncio.Future[Any]], timeout: float) -> set[asyncio.Future[Any]]:
        done, _ = await asyncio.wait(aws, timeout=max(timeout, 0), return_when=asyncio.FIRST_COMPLETED)
        return done

    async def _poll_once(self, proto: _Protocol, slot: float, wake: asyncio.Event | None) -> list[str]:
        resp = await self._exec(Command("NOOP", proto.new_tag(), loop=proto.loop))
        for line in resp.lines[:-1]:
            if type(line) is bytes:
                proto.note_event(line)
        self._check_bye(resp.lines)
        events = self.pending_events()
        if events:
            return events
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._idle_wake.wait())}
        if wake is not None:
            waiters.add(asyncio.ensure_future(wake.wait()))
        try:
            await self._wait_any(waiters, slot)
        finally:
            for w in waiters:
                w.cancel()
        return []

    async def _idle_once(self, proto: _Protocol, slot: float, wake: asyncio.Event | None) -> list[str]:
        loop = asyncio.get_running_loop()
        t = self.settings.timeout
        while not proto.idle_queue.empty():
            proto.idle_queue.get_nowait()
        proto._idle_event.clear()
        cmd = IdleCommand(proto.new_tag(), proto.idle_queue, loop=loop)
        task = asyncio.ensure_future(proto.execute(cmd))
        ack = asyncio.ensure_future(proto.wait_for_idle_response())
        helpers: set[asyncio.Future[Any]] = {ack}
        collected: list[bytes] = []
        try:
            done = await self._wait_any({task, ack}, t)
            if not done:
                err = ImapConnectionError(f"{self.settings.host} did not answer IDLE within {t:.0f} s")
                proto.fail(err)
                raise err
            if task in done:
                resp = task.result()  # raises the connection error if it failed
                raise ImapProtocolError(f"{self.settings.host} refused IDLE ({resp.result})")
            end = loop.time() + slot
            wake_w = asyncio.ensure_future(self._idle_wake.wait())
            helpers.add(wake_w)
            user_w = asyncio.ensure_future(wake.wait()) if wake is not None else None
            if user_w is not None:
                helpers.add(user_w)
            while True:
                remaining = end - loop.time()
                if remaining <= 0:
                    break
                getter = asyncio.ensure_future(proto.idle_queue.get())
                helpers.add(getter)
                done = await self._wait_any({getter, task, wake_w} | ({user_w} if user_w else set()), remaining)
                if getter in done:
                    lines = getter.result()
                    if proto.fatal is not None:
                        raise proto.fatal
                    self._check_bye(lines)
                    events = [x for x in lines if type(x) is bytes and _event_re.match(x)]
                    if events:
                        collected.extend(events)
                        break
                    continue
                getter.cancel()
                if task in done:  # the server ended IDLE on its own
                    task.result()
                    break
                if done:  # wake
                    break
            if not task.done():
                proto.idle_done()
                try:
                    await asyncio.wait_for(asyncio.shield(task), t)
                except TimeoutError:
                    err = ImapConnectionError(
                        f"{self.settings.host} did not end IDLE within {t:.0f} s: the connection seems dead"
                    )
                    proto.fail(err)
                    raise err from None
            task.result()
            # pushes that came with the tagged OK stay in the command's buffer
            collected.extend(x for x in cmd.buffer if type(x) is bytes and _event_re.match(x))
            cmd.buffer.clear()
            while not proto.idle_queue.empty():
                collected.extend(x for x in proto.idle_queue.get_nowait() if type(x) is bytes and _event_re.match(x))
            return [_event_text(x) for x in collected]
        except asyncio.CancelledError:
            proto.fail(ImapConnectionError("IDLE was cancelled: the connection was closed"))
            raise
        finally:
            for h in helpers:
                h.cancel()
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved


# ---- module helpers ----------------------------------------------------------------------------------

_FLAG_RE = re.compile(r"\\?[A-Za-z0-9$_.\-]+")


def _check_flags(flags: Iterable[str]) -> set[str]:
    out = set()
    for f in flags:
        if not _FLAG_RE.fullmatch(f) or f.lower() == "\\recent":
            raise ValueError(f"not a settable IMAP flag: {f!r}")
        out.add(f)
    return out


def _replace(info: SelectInfo, **changes: Any) -> SelectInfo:
    import dataclasses

    return dataclasses.replace(info, **changes)


def _parse_list(lines: Sequence[bytes | bytearray]) -> list[FolderInfo]:
    groups: list[list[bytes | bytearray]] = []
    for part in lines:
        if type(part) is bytes and part.startswith(b"("):
            groups.append([part])
        elif groups and isinstance(part, bytearray):
            groups[-1].append(part)
        elif groups and type(part) is bytes and not part.strip():
            continue
    out: list[FolderInfo] = []
    for g in groups:
        try:
            toks = _tokenize(g)
        except _Malformed:
            raise ImapProtocolError("the server's LIST answer is malformed") from None
        if len(toks) < 3 or not isinstance(toks[0], list):
            raise ImapProtocolError("the server's LIST answer is malformed")
        flags = frozenset(f for f in toks[0] if isinstance(f, str))
        delim_tok = toks[1]
        delimiter = delim_tok.decode("ascii", "replace") if isinstance(delim_tok, bytes) else None
        name_tok = toks[2]
        if isinstance(name_tok, bytes):
            name = name_tok.decode("utf-8", "replace")
        elif isinstance(name_tok, str):
            name = name_tok
        else:
            raise ImapProtocolError("the server's LIST answer is malformed")
        out.append(FolderInfo(decode_mailbox_name(name), delimiter, flags))
    return out
