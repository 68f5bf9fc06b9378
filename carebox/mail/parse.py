"""MIME parsing of untrusted mail into :class:`ParsedMessage`. Never raises.

Built for speed and for hostile input:

* ``email`` with the compat32 policy does the MIME splitting (about 7x faster than
  ``policy.default``, and free of its quadratic encoded-word handling, CPython gh-136063);
  headers, encoded words, charsets and HTML are decoded here, each with errors replaced.
* Every cost is bounded before the standard library sees the input: top-level headers are
  capped at ``max_header_bytes`` each, MIME parameter headers (which ``email`` parses in
  quadratic time) at 4 KiB, multipart/message containers at 40 per message (the feed
  parser is quadratic in nesting depth and overflows the stack near 1,000), the walk at 20
  levels and 1,000 parts, attachments at 100, the body at ``max_body_chars``.
* HTML becomes plain text through lxml (libxml2's HTML parser, linear on hostile input; see
  carebox.mail.htmltext). Nothing is ever fetched; links keep their text, images are dropped.

Header values keep their characters as sent (after unfolding and decoding): stripping
control and bidi characters for display is the UI's job. Problem lines never quote content.
"""

from __future__ import annotations

import binascii
import codecs
import contextlib
import functools
import itertools
import re
from datetime import UTC, datetime
from email import errors as email_errors
from email.message import Message, _unquotevalue
from email.parser import BytesParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime

from carebox.domain.models import Address, Attachment, ParsedMessage

__all__ = ["decode_words", "html_to_text", "parse_message", "safe_filename"]

MAX_REFERENCES = 100  # Message-IDs kept from References (the first and the last 99)
MAX_ATTACHMENTS = 100
MAX_DEPTH = 20  # MIME nesting levels walked
MAX_PARTS = 1_000  # MIME parts walked
_MAX_CONTAINERS = 40  # multipart/message headers handed to the feed parser as containers
_MAX_PARAM_HEADER = 4_096  # chars of a Content-Type/-Disposition value parsed for parameters
_HEADER_BLOCK_FACTOR = 4  # the whole header block may be this many times max_header_bytes
_HEADER_SCAN_FACTOR = 64  # beyond this many times max_header_bytes the header block is cut
_HTML_INPUT_FACTOR = 1  # HTML chars converted per body char allowed (about 0.5 s per 1M dense tags)

_WANTED = frozenset(
    {"from", "to", "cc", "reply-to", "subject", "date", "message-id", "in-reply-to", "references"}
    | {"authentication-results"}
)
# Headers kept even when the header block is over its size cap (first occurrence each).
_ESSENTIAL = frozenset(
    {
        "from",
        "to",
        "cc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "authentication-results",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
    }
)


# --------------------------------------------------------------------------- problems


class _Problems:
    """Collects one-line, content-free descriptions of what was wrong."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)

    def line(self) -> str:
        if not self.items:
            return ""
        text = "; ".join(self.items[:3])
        if len(self.items) > 3:
            text += f" (and {len(self.items) - 3} more)"
        return text


class _OversizedParamsDefect(email_errors.MessageDefect):
    """A Content-Type or Content-Disposition too long to parse for parameters in full."""


_DEFECT_TEXT: dict[type, str] = {
    email_errors.NoBoundaryInMultipartDefect: "a multipart part has no boundary",
    email_errors.StartBoundaryNotFoundDefect: "a multipart boundary never appears in its body",
    email_errors.CloseBoundaryNotFoundDefect: "the message ends before its closing MIME boundary (truncated?)",
    email_errors.FirstHeaderLineIsContinuationDefect: "the first header line is a continuation line",
    email_errors.MisplacedEnvelopeHeaderDefect: "an mbox 'From ' line inside the headers",
    email_errors.MissingHeaderBodySeparatorDefect: "a line in a header block is not a header",
    email_errors.MultipartInvariantViolationDefect: "a multipart part has no subparts",
    email_errors.InvalidMultipartContentTransferEncodingDefect: "a multipart part has a transfer encoding",
    email_errors.InvalidBase64PaddingDefect: "damaged base64 content (truncated?)",
    email_errors.InvalidBase64CharactersDefect: "damaged base64 content (invalid characters)",
    email_errors.InvalidBase64LengthDefect: "damaged base64 content (truncated?)",
    _OversizedParamsDefect: f"a MIME header over {_MAX_PARAM_HEADER} characters was cut",
}


def _note_defects(part: Message, problems: _Problems) -> None:
    for defect in part.defects:
        problems.add(_DEFECT_TEXT.get(type(defect), f"MIME defect: {type(defect).__name__}"))


# --------------------------------------------------------------------------- email glue


class _RawCompat32(type(compat32)):  # type: ignore[misc]
    """compat32, but header values come back as the raw strings the parser stored.

    Stock compat32 wraps values holding 8-bit bytes in ``Header`` objects; the raw string
    (8-bit bytes as surrogate escapes) is what the decoding below wants.
    """

    def header_fetch_parse(self, name: str, value: str) -> str:  # type: ignore[override]
        return value


_POLICY = _RawCompat32()


class _Part(Message):
    """A Message whose parameter parsing is bounded (email's ``_parseparam`` is quadratic), and
    done once per header: the walk asks one Content-Type for a boundary, a name and a charset."""

    _param_cache: dict[str, tuple[str, list]] | None = None

    def get_param(self, param, failobj=None, header="content-type", unquote=True):  # type: ignore[override]
        value = self.get(header)
        if isinstance(value, str) and len(value) > _MAX_PARAM_HEADER:
            if not any(isinstance(d, _OversizedParamsDefect) for d in self.defects):
                self.defects.append(_OversizedParamsDefect())
            clipped = Message(policy=self.policy)
            clipped[header] = value[:_MAX_PARAM_HEADER]
            return clipped.get_param(param, failobj, header, unquote)
        if not isinstance(value, str):  # no such header (Message.get_param: `header not in self`)
            return super().get_param(param, failobj, header, unquote)
        # Message.get_param, with _get_params_preserve's result kept for the next parameter
        key = header.lower()
        cache = self._param_cache
        if cache is None:
            cache = self._param_cache = {}
        hit = cache.get(key)
        if hit is None or hit[0] is not value:
            hit = cache[key] = (value, self._get_params_preserve(failobj, header))
        wanted = param.lower()
        for k, v in hit[1]:
            if k.lower() == wanted:
                return _unquotevalue(v) if unquote else v
        return failobj


_PARSER = BytesParser(_Part, policy=_POLICY)


# --------------------------------------------------------------------------- the MIME tree, fast
#
# email's feed parser reads every line through a generator (about 0.15 ms for a 10 KB message,
# most of the parsing time). For the common shapes, _fast_tree builds the very same tree (same
# classes, headers, payload strings, preamble, epilogue, defects) with str.find: header blocks
# as the feed parser's _parse_headers splits them, bodies cut at the boundary lines, and the
# line break before a boundary dropped as it drops it. Anything unusual (lone CRs, message/*
# parts, multipart/digest, no boundary, no blank line after the headers, a nameless header, a
# leading continuation line, doubled boundary lines, a multipart that does not close, a "From "
# line, a transfer encoding on a multipart) returns None and the feed parser does it all.
# Every step is linear in the part's size; the depth is capped. (Checked against the feed parser
# tree for tree on the test messages, 10,000 bench messages and 150,000 fuzzed ones.)

# The feed parser's own patterns (email.feedparser), applied to the same lines.
_FP_HEADER = re.compile(r"(From |[\041-\071\073-\176]*:|[\t ])")  # headerRE, anchored by match()
_FAST_MAX_DEPTH = 8  # multipart levels handled here; deeper trees go to the feed parser


def _fast_tree(data: bytes) -> Message | None:
    """The tree ``_PARSER.parsebytes(data)`` returns, or None where only the feed parser will do."""
    text = data.decode("ascii", "surrogateescape")  # as BytesParser.parsebytes
    if "\r" in text and text.count("\r") != text.count("\r\n"):
        return None  # lone CRs end lines too: leave the line splitting to email
    try:
        return _fast_part(text, 0, len(text), 0)
    except Exception:  # _NotFast, or whatever email raises: the feed parser decides (and raises) alike
        return None


class _NotFast(Exception):
    pass


def _fast_headers(text: str, start: int, end: int) -> tuple[Message, int]:
    """The part whose header block starts at ``start``, with the headers the feed parser would
    give it (its ``_parse_headers`` without the defect branches), and where its body starts."""
    lines: list[str] = []
    pos = start
    while True:
        if pos >= end:
            raise _NotFast  # no blank line before the end of the part
        nl = text.find("\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        first = text[pos]
        if first == "\n" or first == "\r":  # the blank line (no lone CRs: it is "\r\n" or "\n")
            break
        if first == ":" or not _FP_HEADER.match(text, pos, line_end) or text.startswith("From ", pos):
            raise _NotFast  # a nameless header, a body line with no blank line before it, an mbox "From "
        lines.append(text[pos:line_end])
        pos = line_end
    part = _Part(policy=_POLICY)
    source: list[str] = []
    for line in lines:
        if line[0] in " \t":
            if not source:
                raise _NotFast  # the first header line is a continuation line
            source.append(line)
            continue
        if source:
            part.set_raw(*_POLICY.header_source_parse(source))
        source = [line]
    if source:
        part.set_raw(*_POLICY.header_source_parse(source))
    return part, line_end


def _strip_eol(value: str) -> str:
    """``value`` without the line break it ends with (what email's NLCRE_eol strips)."""
    if value.endswith("\r\n"):
        return value[:-2]
    if value.endswith(("\r", "\n")):
        return value[:-1]
    return value


def _fast_part(text: str, start: int, end: int, depth: int) -> Message:
    """The part whose text is ``text[start:end]`` (for a subpart: up to its closing boundary line)."""
    part, body = _fast_headers(text, start, end)
    ctype = part.get_content_type()
    maintype = ctype.partition("/")[0]
    if maintype == "message":
        raise _NotFast
    if maintype != "multipart":
        part._payload = text[body:end]
        return part
    boundary = part.get_boundary()
    if (
        not boundary
        or ctype == "multipart/digest"
        or depth >= _FAST_MAX_DEPTH
        or str(part.get("content-transfer-encoding", "8bit")).lower() not in ("7bit", "8bit", "binary")
    ):
        raise _NotFast
    separator = "--" + boundary
    boundary_re = re.compile(
        "(?P<sep>" + re.escape(separator) + r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
    )
    # every line that is a boundary of this part: (line start, line end, is the closing one)
    lines: list[tuple[int, int, bool]] = []
    pos = body
    while True:
        at = text.find(separator, pos, end)
        if at < 0:
            break
        nl = text.find("\n", at, end)
        line_end = end if nl < 0 else nl + 1
        if at == body or text[at - 1] == "\n":
            mo = boundary_re.match(text[at:line_end])
            if mo:
                lines.append((at, line_end, bool(mo.group("end"))))
                if mo.group("end"):
                    break
        pos = line_end
    # the shape the feed parser reads without a defect: an opening boundary, parts separated by
    # single boundary lines, and a closing one
    if len(lines) < 2 or lines[0][2] or not lines[-1][2]:
        raise _NotFast
    if lines[0][0] > body:  # the preamble, without the line break that belongs to the boundary
        part.preamble = _strip_eol(text[body : lines[0][0]])
    for (_, child_start, _), (next_start, _, _) in itertools.pairwise(lines):
        if child_start == next_start:
            raise _NotFast  # two boundary lines in a row
        child = _fast_part(text, child_start, next_start, depth + 1)
        if child.get_content_maintype() == "multipart":
            if child.epilogue == "":
                child.epilogue = None
            elif child.epilogue is not None:
                child.epilogue = _strip_eol(child.epilogue)
        elif isinstance(child._payload, str):
            child._payload = _strip_eol(child._payload)
        part.attach(child)
    part.epilogue = text[lines[-1][1] : end]
    return part


def _mime_tree(data: bytes) -> Message:
    tree = _fast_tree(data)
    return tree if tree is not None else _PARSER.parsebytes(data)


# --------------------------------------------------------------------------- charsets


# Decode with a superset of what the label says, as mail clients do.
_SUPERSET = {"ascii": "utf-8", "latin-1": "cp1252", "iso8859-1": "cp1252", "gb2312": "gb18030", "gbk": "gb18030"}
# Text codecs that are no charsets: quadratic (punycode), or that interpret escapes.
_REFUSED_CODECS = frozenset({"punycode", "idna", "unicode-escape", "raw-unicode-escape", "undefined"})


@functools.lru_cache(maxsize=256)
def _codec(charset: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None when unknown or unsafe."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").split("*", 1)[0].lower()
    if not label or len(label) > 40:
        return None
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True):
        return None
    name = info.name.replace("_", "-")
    if name in _REFUSED_CODECS:
        return None
    return _SUPERSET.get(name, name)


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes to text in the declared charset, else UTF-8, else replacement characters."""
    codec = _codec(charset)
    if codec is None:
        if charset:  # a label we do not know: UTF-8 with replacement
            return data.decode("utf-8", "replace")
        try:  # no label at all: UTF-8 if it is, else the Windows Latin most mail uses
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", "replace")
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        pass
    except Exception:  # a codec that fails in another way (LookupError, UnicodeError)
        return data.decode("utf-8", "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode(codec, "replace")


# --------------------------------------------------------------------------- header values

_LINE_BREAKS = re.compile(r"[\r\n]+")
# RFC 2047 encoded word. Text without "?" or white space keeps the scan linear.
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?([^?\s]*)\?=")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def _header_text(value: str, problems: _Problems) -> str:
    """A raw compat32 header value as text: unfolded, 8-bit bytes decoded (UTF-8 first)."""
    text = _LINE_BREAKS.sub("", value)
    if text.isascii():
        return text
    try:
        raw = text.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return text
    try:
        return raw.decode("utf-8")  # RFC 6532 UTF-8 headers are fine
    except UnicodeDecodeError:
        problems.add("raw 8-bit bytes in the headers that are not UTF-8")
        return raw.decode("cp1252", "replace")


def _word_bytes(encoding: str, payload: str) -> bytes | None:
    data = payload.encode("utf-8", "surrogateescape")
    if encoding in "qQ":
        return binascii.a2b_qp(data, header=True)
    data = _NOT_BASE64.sub(b"", data)
    if len(data) % 4 == 1:  # a lone trailing character carries no whole byte
        data = data[:-1]
    data += b"=" * (-len(data) % 4)
    try:
        decoded = binascii.a2b_base64(data)
    except binascii.Error:
        return None
    return decoded if decoded or not payload else None  # nothing usable: keep the word as sent


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded words in ``text``; undecodable words stay as they are.

    Adjacent words of one charset are joined before decoding (senders split multi-byte
    characters across words); white space between encoded words is dropped.
    """
    if "=?" not in text:
        return text
    parts: list[str] = []
    run = bytearray()
    run_charset: str | None = None
    pos = 0

    def flush() -> None:
        nonlocal run_charset
        if run_charset is not None:
            parts.append(_decode_bytes(bytes(run), run_charset))
            run.clear()
            run_charset = None

    for match in _ENCODED_WORD.finditer(text):
        gap = text[pos : match.start()]
        if gap and not (run_charset is not None and gap.isspace()):
            flush()
            parts.append(gap)
        charset = match.group(1).split("*", 1)[0].lower()
        data = _word_bytes(match.group(2), match.group(3))
        if data is None:
            flush()
            parts.append(match.group(0))
        else:
            if run_charset is not None and charset != run_charset:
                flush()
            run_charset = charset
            run += data
        pos = match.end()
    flush()
    parts.append(text[pos:])
    return "".join(parts)


# One address in its plainest forms: "quoted name" <addr>, name <addr>, or addr. Anything
# else (lists, comments, groups, escapes, route addresses) goes to email.utils.getaddresses.
_ATOM = r"[^\s\"<>,;:()\\@\[\]]"
_SIMPLE_ADDRESS = re.compile(
    rf'[ \t]*(?:(?:"([^"\\]*)"|((?:{_ATOM}|[ \t])*?))[ \t]*<({_ATOM}+@{_ATOM}+)>|({_ATOM}+@{_ATOM}+))[ \t]*\Z'
)


def _addresses(values: list[str], problems: _Problems) -> tuple[Address, ...]:
    """Addresses from header texts; names decoded after splitting (a name may hold commas)."""
    if not values:
        return ()
    simple = _SIMPLE_ADDRESS.match(values[0]) if len(values) == 1 else None
    if simple:  # the common single "Name <addr>" or bare addr: skip the slow general parser
        name = simple.group(1) if simple.group(1) is not None else " ".join((simple.group(2) or "").split())
        pairs = [(name, simple.group(3) or simple.group(4))]
    else:
        try:
            pairs = getaddresses(values)
        except Exception:  # RecursionError on deeply nested comments, and whatever else
            problems.add("an address header could not be parsed")
            return ()
    result = []
    for name, addr in pairs:
        if not name and not addr:
            continue
        name = decode_words(name).strip()
        addr = addr.strip()
        if "@" not in addr:
            name, addr = name or addr, ""
        result.append(Address(name=name, addr=addr.lower()))
    return tuple(result)


_ANGLE_ID = re.compile(r"<([^<>]*)>")


def _message_ids(text: str, limit: int) -> tuple[str, ...]:
    """``<...>`` tokens, brackets stripped, in order, deduplicated; the first and last kept."""
    found: dict[str, None] = {}
    for match in _ANGLE_ID.finditer(text):
        token = "".join(match.group(1).split())
        if token:
            found.setdefault(token)
    if not found and "<" not in text:  # brackets left out by a broken mailer
        for token in text.split():
            if "@" in token:
                found.setdefault(token)
    ids = list(found)
    if len(ids) > limit:
        ids = ids[:1] + ids[len(ids) - (limit - 1) :]
    return tuple(ids)


def _date(text: str) -> datetime | None:
    if not text.strip():
        return None
    try:
        value = parsedate_to_datetime(text)
    except Exception:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


# --------------------------------------------------------------------------- caps before parsing

_BLANK_LINE = re.compile(rb"\n\r?\n")
# What the feed parser accepts as a header line (email.feedparser.headerRE).
_HEADER_LINE = re.compile(rb"(From |[\041-\071\073-\176]*:|[\t ])")
_HEADER_NAME = re.compile(rb"([\041-\071\073-\176]+):")
_CONTAINER_TYPE = re.compile(rb"(?i)(content-type:\s*)((?:multipart|message)/)")


def _header_name(field: bytes) -> str:
    match = _HEADER_NAME.match(field)
    return match.group(1).decode("ascii").lower() if match else ""


def _cap_headers(raw: bytes, limit: int, problems: _Problems) -> bytes:
    """Truncate headers over ``limit`` bytes and drop non-essential ones past the block cap."""
    match = _BLANK_LINE.search(raw)
    head_end = match.start() + 1 if match else len(raw)
    if head_end <= limit:  # nothing can be over: the common case costs one search
        return raw
    tail = raw[head_end:]  # the blank line and the body, or nothing
    scan_cap = limit * _HEADER_SCAN_FACTOR
    head = raw[:head_end]
    if len(head) > scan_cap:
        problems.add("header block too large; its end was dropped")
        head = head[:scan_cap]
    fields: list[bytes] = []
    rest = b""
    lines = head.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1] += line
                continue
        elif _HEADER_LINE.match(line):
            fields.append(line)
            continue
        # not a header: the body starts here, without the blank line it should follow
        problems.add("a line in a header block is not a header")
        rest = b"".join(lines[index:])
        break
    block_cap = limit * _HEADER_BLOCK_FACTOR
    kept: list[bytes] = []
    seen_over: set[str] = set()
    total = 0
    for field in fields:
        name = _header_name(field)
        if len(field) > limit:
            label = name.title() if name in _ESSENTIAL else "A"
            problems.add(f"{label} header longer than {limit} bytes was truncated")
            field = field[:limit].rstrip(b"\r\n") + b"\r\n"
        if total + len(field) > block_cap:
            problems.add(f"header block over {block_cap} bytes; some headers were dropped")
            if name not in _ESSENTIAL or name in seen_over:
                continue
            seen_over.add(name)
        kept.append(field)
        total += len(field)
    if rest:
        return b"".join(kept) + b"\r\n" + rest + tail
    return b"".join(kept) + (tail or b"\r\n")


def _cap_containers(raw: bytes, problems: _Problems) -> bytes:
    """Turn multipart/message types past the first few into opaque leaves (depth bombs)."""
    lowered = raw.lower()
    if lowered.count(b"multipart/") + lowered.count(b"message/") <= _MAX_CONTAINERS:
        return raw
    seen = 0

    def neutralise(match: re.Match[bytes]) -> bytes:
        nonlocal seen
        seen += 1
        if seen <= _MAX_CONTAINERS:
            return match.group(0)
        return match.group(1) + b"x-deep-" + match.group(2)

    capped = _CONTAINER_TYPE.sub(neutralise, raw)
    if seen > _MAX_CONTAINERS:
        problems.add(f"more than {_MAX_CONTAINERS} nested MIME containers; the rest kept unparsed")
    return capped


# --------------------------------------------------------------------------- HTML


def html_to_text(html: str) -> str:
    """Plain text from an HTML part (lxml: see carebox.mail.htmltext). Nothing is fetched."""
    from carebox.mail.htmltext import html_to_text as convert

    return convert(html)


# --------------------------------------------------------------------------- parts

_FILENAME_JUNK = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_EXTENSIONS = {
    "application/pdf": ".pdf",
    "application/pgp-signature": ".asc",
    "application/pkcs7-signature": ".p7s",
    "image/gif": ".gif",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "message/delivery-status": ".txt",
    "message/rfc822": ".eml",
    "text/calendar": ".ics",
    "text/csv": ".csv",
    "text/html": ".html",
    "text/plain": ".txt",
}


def safe_filename(name: str) -> str:
    """A file name with no path separators, control or bidi characters; "" when nothing is left."""
    name = _FILENAME_JUNK.sub("", name).replace("/", "_").replace("\\", "_")
    name = name.strip().strip(".").strip()
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = stem[:190] + dot + ext[:9] if dot and len(ext) <= 9 else name[:200]
    return name


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


class _Walk:
    """State of one walk over the MIME tree."""

    def __init__(self, problems: _Problems) -> None:
        self.problems = problems
        self.parts = 0
        self.attachments: list[Attachment] = []
        self.fallback_text: list[str] = []  # inline text/plain parts that carry a file name

    def collect(self, part: Message, depth: int) -> list[tuple[str, str]]:
        """Body segments (``("plain"|"html", text)``) of ``part``; attachments on the side."""
        self.parts += 1
        if self.parts > MAX_PARTS:
            self.problems.add(f"more than {MAX_PARTS} MIME parts; the rest were skipped")
            return []
        try:
            return self._collect(part, depth)
        finally:  # after decoding, which adds base64 defects
            _note_defects(part, self.problems)

    def _collect(self, part: Message, depth: int) -> list[tuple[str, str]]:
        declared = part.get_content_type()
        deep = declared.startswith("x-deep-")
        ctype = declared.removeprefix("x-deep-")
        maintype = ctype.partition("/")[0]
        if deep or maintype == "message":
            self.attach(part, ctype, _filename(part, self.problems))
            return []
        if part.is_multipart():
            if depth >= MAX_DEPTH:
                self.problems.add(f"MIME parts nested deeper than {MAX_DEPTH} levels were skipped")
                return []
            children = part.get_payload()
            if ctype == "multipart/alternative":
                options = [self.collect(child, depth + 1) for child in children]
                for kind in ("plain", "html"):
                    for segments in options:
                        if any(k == kind for k, _ in segments):
                            return segments
                return []
            segments: list[tuple[str, str]] = []
            for child in children:
                segments.extend(self.collect(child, depth + 1))
            return segments
        if maintype == "multipart":  # a multipart whose parts could not be found
            return [("plain", _part_text(part))]
        disposition = part.get_content_disposition()
        filename = _filename(part, self.problems)
        if disposition == "attachment" or filename or ctype not in ("text/plain", "text/html"):
            self.attach(part, ctype, filename)
            if ctype == "text/plain" and disposition != "attachment":
                self.fallback_text.append(_part_text(part))
            return []
        return [("plain" if ctype == "text/plain" else "html", _part_text(part))]

    def attach(self, part: Message, ctype: str, filename: str) -> None:
        if len(self.attachments) >= MAX_ATTACHMENTS:
            self.problems.add(f"more than {MAX_ATTACHMENTS} attachments; the rest were skipped")
            return
        data = _part_bytes(part)
        name = filename or f"attachment-{len(self.attachments) + 1}{_EXTENSIONS.get(ctype, '.bin')}"
        self.attachments.append(Attachment(filename=name, content_type=ctype, size=len(data), data=data))


def _filename(part: Message, problems: _Problems) -> str:
    ctype = part.get("content-type")
    if "content-disposition" not in part and (
        ctype is None or (isinstance(ctype, str) and len(ctype) <= _MAX_PARAM_HEADER and "name" not in ctype.lower())
    ):
        return ""  # get_filename reads a "filename" or "name" parameter of exactly these headers: neither can hold one
    try:
        name = part.get_filename()
    except Exception:
        problems.add("an attachment's file name could not be read")
        return ""
    if not name:
        return ""
    return safe_filename(decode_words(_header_text(str(name), problems)))


def _part_bytes(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("ascii", "surrogateescape")
    if isinstance(raw, list):  # message/*: the enclosed message(s), serialised again
        chunks = []
        for sub in raw:
            with contextlib.suppress(Exception):
                chunks.append(sub.as_bytes(policy=_POLICY.clone(max_line_length=0)))
        return b"".join(chunks)
    return b""


def _part_text(part: Message) -> str:
    data = _part_bytes(part)
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return _normalise_newlines(_decode_bytes(data, charset))


def _body(msg: Message, walk: _Walk, max_body_chars: int) -> str:
    segments = walk.collect(msg, 0)
    plain = [text for kind, text in segments if kind == "plain"]
    if not plain and not any(kind == "html" for kind, _ in segments):
        plain = walk.fallback_text[:1]
    if plain:
        body = plain[0] if len(plain) == 1 else "\n\n".join(t.rstrip("\n") for t in plain)
    else:
        html_cap = max_body_chars * _HTML_INPUT_FACTOR
        converted = []
        for kind, text in segments:
            if kind == "html":
                if len(text) > html_cap:
                    walk.problems.add(f"HTML body longer than {html_cap} characters was cut")
                    text = text[:html_cap]
                converted.append(html_to_text(text))
        body = "\n\n".join(converted)
    if len(body) > max_body_chars:
        walk.problems.add(f"body longer than {max_body_chars} characters was cut")
        body = body[:max_body_chars]
    return body


# --------------------------------------------------------------------------- entry point


def parse_message(raw: bytes, *, max_header_bytes: int = 64_000, max_body_chars: int = 2_000_000) -> ParsedMessage:
    """Parse one raw RFC 5322 message. Never raises: what goes wrong sets ``malformed``."""
    problems = _Problems()
    fields: dict = {}
    try:
        _parse_into(fields, raw, max_header_bytes, max_body_chars, problems)
    except Exception as exc:  # last resort: never let mail crash the caller
        problems.add(f"parser failure ({type(exc).__name__})")
    return ParsedMessage(
        message_id=fields.get("message_id", ""),
        in_reply_to=fields.get("in_reply_to", ()),
        references=fields.get("references", ()),
        subject=fields.get("subject", ""),
        sender=fields.get("sender", Address("", "")),
        to=fields.get("to", ()),
        cc=fields.get("cc", ()),
        reply_to=fields.get("reply_to", ()),
        date=fields.get("date"),
        body=fields.get("body", ""),
        attachments=fields.get("attachments", ()),
        auth_results=fields.get("auth_results", ""),
        malformed=bool(problems.items),
        problem=problems.line(),
    )


def _parse_into(fields: dict, raw: bytes, max_header_bytes: int, max_body_chars: int, problems: _Problems) -> None:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    raw = bytes(raw)
    if not raw.strip():
        problems.add("empty message")
        return
    data = _cap_headers(raw, max(1, max_header_bytes), problems)
    data = _cap_containers(data, problems)
    msg = _mime_tree(data)
    headers: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        key = name.lower()
        if key in _WANTED and isinstance(value, str):
            headers.setdefault(key, []).append(_header_text(value, problems))
    if not msg.keys():
        problems.add("no mail headers found")

    def first(name: str) -> str:
        values = headers.get(name)
        return values[0] if values else ""

    ids = _message_ids(first("message-id"), 1)
    fields["message_id"] = ids[0] if ids else ""
    fields["in_reply_to"] = _message_ids(first("in-reply-to"), MAX_REFERENCES)
    fields["references"] = _message_ids(" ".join(headers.get("references", ())), MAX_REFERENCES)
    fields["subject"] = decode_words(first("subject")).strip()
    senders = _addresses(headers.get("from", [])[:1], problems)
    fields["sender"] = senders[0] if senders else Address("", "")
    fields["to"] = _addresses(headers.get("to", []), problems)
    fields["cc"] = _addresses(headers.get("cc", []), problems)
    fields["reply_to"] = _addresses(headers.get("reply-to", [])[:1], problems)
    fields["date"] = _date(first("date"))
    fields["auth_results"] = first("authentication-results").strip()

    walk = _Walk(problems)
    try:
        fields["body"] = _body(msg, walk, max(0, max_body_chars))
    finally:
        fields["attachments"] = tuple(walk.attachments)
