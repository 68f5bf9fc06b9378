"""carebox.mail.build: headers exactly right, nothing from mail can add a header."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carebox.domain.models import Address, ParsedMessage
from carebox.mail.build import (
    MAX_REFERENCES,
    Identity,
    build_new,
    build_reply,
    make_message_id,
    quote,
    sanitize_header_text,
)

DOC = Identity(name="Dr. Anna Berg", address="praxis@berg.example", practice="Praxis Berg")
PATIENT = Address(name="Max Muster", addr="max@example.org")
WHEN = datetime(2025, 3, 3, 14, 5, tzinfo=timezone(timedelta(hours=1)))
MID = "<0123456789abcdef0123456789abcdef.carebox@berg.example>"
REPLY_HEADERS = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
]


def original(**overrides) -> ParsedMessage:
    fields = {
        "message_id": "orig-1@example.org",
        "in_reply_to": (),
        "references": ("r1@example.org",),
        "subject": "Knee pain",
        "sender": PATIENT,
        "to": (Address("", "praxis@berg.example"),),
        "cc": (),
        "reply_to": (),
        "date": WHEN - timedelta(days=1),
        "body": "Hello doctor",
    }
    fields.update(overrides)
    return ParsedMessage(**fields)


def reply(orig: ParsedMessage | None = None, **kw) -> bytes:
    args = {
        "identity": DOC,
        "to": PATIENT,
        "original": orig or original(),
        "body": "Dear Mr Muster,\nplease call us.\n",
        "message_id": MID,
        "date": WHEN,
    }
    args.update(kw)
    return build_reply(**args)


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def header_names(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return [line.split(b":", 1)[0].decode() for line in head.split(b"\r\n") if line and line[:1] not in b" \t"]


def assert_wire_safe(raw: bytes) -> None:
    """7-bit, CRLF only, no line longer than 998, no smuggled Bcc/Cc/To line."""
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    lines = raw.split(b"\r\n")
    assert all(len(line) <= 998 for line in lines)
    assert not any(re.match(rb"(?i)bcc\s*:", line) for line in lines)


# --- headers -----------------------------------------------------------------------------------


def test_reply_headers_are_exactly_right() -> None:
    raw = reply()
    assert_wire_safe(raw)
    assert sorted(header_names(raw)) == sorted(REPLY_HEADERS)
    msg = parse(raw)
    assert msg["From"].addresses[0].display_name == "Dr. Anna Berg"
    assert msg["From"].addresses[0].addr_spec == "praxis@berg.example"
    assert len(msg["From"].addresses) == 1
    assert msg["To"].addresses[0].display_name == "Max Muster"
    assert msg["To"].addresses[0].addr_spec == "max@example.org"
    assert len(msg["To"].addresses) == 1
    assert msg["Subject"] == "Re: Knee pain"
    assert msg["In-Reply-To"] == "<orig-1@example.org>"
    assert msg["References"] == "<r1@example.org> <orig-1@example.org>"
    assert msg["Message-ID"] == MID
    assert msg["Date"].datetime == WHEN
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_content() == "Dear Mr Muster,\r\nplease call us.\r\n"
    assert msg.defects == []


def test_reply_goes_to_the_given_address_never_reply_to() -> None:
    orig = original(reply_to=(Address("Someone Else", "elsewhere@evil.example"),))
    msg = parse(reply(orig))
    assert [a.addr_spec for a in msg["To"].addresses] == ["max@example.org"]
    assert b"evil.example" not in reply(orig)
    assert "Reply-To" not in msg and "Cc" not in msg and "Bcc" not in msg


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Knee pain", "Re: Knee pain"),
        ("Re: Knee pain", "Re: Knee pain"),
        ("RE: Knee pain", "RE: Knee pain"),
        ("re:Knee pain", "re:Knee pain"),
        ("Reminder: results", "Re: Reminder: results"),
        ("Fwd: lab", "Re: Fwd: lab"),
        ("", "Re:"),
        ("  Knee \t pain  ", "Re: Knee pain"),
    ],
)
def test_re_prefix_is_added_once(subject: str, expected: str) -> None:
    assert parse(reply(original(subject=subject)))["Subject"] == expected


def test_unicode_names_and_subject_are_rfc2047_encoded() -> None:
    ident = Identity(name="Dr. Zoë Müller", address="praxis@berg.example")
    to = Address(name="Jürgen Ärzteblatt", addr="j@example.org")
    raw = reply(original(subject="Grüße, Schmerzen im Knie"), identity=ident, to=to)
    assert_wire_safe(raw)
    from_line = next(line for line in raw.split(b"\r\n") if line.startswith(b"From:"))
    assert b"=?utf-8?" in from_line
    msg = parse(raw)
    assert msg["From"].addresses[0].display_name == "Dr. Zoë Müller"
    assert msg["To"].addresses[0].display_name == "Jürgen Ärzteblatt"
    assert msg["Subject"] == "Re: Grüße, Schmerzen im Knie"


def test_special_characters_in_a_name_are_quoted_not_parsed() -> None:
    to = Address(name='Muster, Max "the patient" <boss@evil.example>', addr="max@example.org")
    msg = parse(reply(to=to))
    assert len(msg["To"].addresses) == 1
    assert msg["To"].addresses[0].addr_spec == "max@example.org"
    assert msg["To"].addresses[0].display_name == 'Muster, Max "the patient" <boss@evil.example>'


# --- injection -----------------------------------------------------------------------------------

HOSTILE = [
    # what the parser hands over after decoding =?utf-8?q?Hello=0D=0ABcc=3A_victim=40example=2Eorg?=
    "Hello\r\nBcc: victim@example.org",
    "Hello\nBcc: victim@example.org",
    "Hello\rBcc: victim@example.org",
    "Hello\x00\r\nBcc: victim@example.org",
    # a subject that still holds an encoded-word (double-encoded mail): the email package would
    # decode it on assignment and, on Python 3.11.7, write the CR LF to the wire
    "=?utf-8?q?Hello=0D=0ABcc=3A_victim=40example=2Eorg?=",
    "Hi =?utf-8?b?DQpCY2M6IHZpY3RpbUBleGFtcGxlLm9yZw==?= there",
    "=?utf-8?q?=3D=3Futf-8=3Fq=3F=3D0D=3D0ABcc=3A_victim=40example=2Eorg=3F=3D?=",
    "Hello\u2028Bcc: victim@example.org",
    "Hello\x85Bcc: victim@example.org",
    "Hello\x0bBcc: victim@example.org\x0c",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_subject_cannot_add_a_header(hostile: str) -> None:
    raw = reply(original(subject=hostile))
    assert_wire_safe(raw)
    msg = parse(raw)
    assert "Bcc" not in msg
    assert len(msg.get_all("Subject")) == 1
    assert sorted(header_names(raw)) == sorted(REPLY_HEADERS)
    assert "\r" not in msg["Subject"] and "\n" not in msg["Subject"]
    assert [a.addr_spec for a in msg["To"].addresses] == ["max@example.org"]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_display_names_cannot_add_a_header(hostile: str) -> None:
    raw = reply(identity=Identity(name=hostile, address="praxis@berg.example"), to=Address(hostile, "max@example.org"))
    assert_wire_safe(raw)
    msg = parse(raw)
    assert "Bcc" not in msg
    assert sorted(header_names(raw)) == sorted(REPLY_HEADERS)
    assert [a.addr_spec for a in msg["To"].addresses] == ["max@example.org"]
    assert [a.addr_spec for a in msg["From"].addresses] == ["praxis@berg.example"]
    assert "\n" not in msg["To"].addresses[0].display_name


def test_hostile_subject_in_a_new_message() -> None:
    raw = build_new(identity=DOC, to=PATIENT, subject=HOSTILE[0], body="x", message_id=MID, date=WHEN)
    assert_wire_safe(raw)
    msg = parse(raw)
    assert "Bcc" not in msg
    assert msg["Subject"] == "Hello Bcc: victim@example.org"


@settings(max_examples=150, deadline=None)
@given(subject=st.text(max_size=120), name=st.text(max_size=60))
def test_no_text_whatsoever_adds_a_header(subject: str, name: str) -> None:
    raw = reply(original(subject=subject), to=Address(name, "max@example.org"))
    assert_wire_safe(raw)
    assert sorted(header_names(raw)) == sorted(REPLY_HEADERS)
    msg = parse(raw)
    assert [a.addr_spec for a in msg["To"].addresses] == ["max@example.org"]


# --- threading headers ---------------------------------------------------------------------------


def test_references_are_capped_to_the_last_twenty() -> None:
    refs = tuple(f"r{i}@example.org" for i in range(30))
    msg = parse(reply(original(references=refs)))
    ids = msg["References"].split()
    assert len(ids) == MAX_REFERENCES
    assert ids[-1] == "<orig-1@example.org>"
    assert ids[0] == "<r11@example.org>"
    assert ids[-2] == "<r29@example.org>"


def test_unusable_ids_are_dropped() -> None:
    refs = ("good@example.org", "has space@example.org", "<x>y@example.org", "a\r\nb@example.org", "", "é@x.org")
    msg = parse(reply(original(references=refs)))
    assert msg["References"] == "<good@example.org> <orig-1@example.org>"


def test_unusable_original_message_id_gives_no_in_reply_to() -> None:
    raw = reply(original(message_id="bad id\r\nBcc: victim@example.org"))
    msg = parse(raw)
    assert "In-Reply-To" not in msg
    assert msg["References"] == "<r1@example.org>"
    assert_wire_safe(raw)


def test_no_ids_at_all_gives_no_threading_headers() -> None:
    msg = parse(reply(original(message_id="", references=())))
    assert "In-Reply-To" not in msg and "References" not in msg


def test_single_in_reply_to_stands_in_for_missing_references() -> None:
    msg = parse(reply(original(references=(), in_reply_to=("parent@example.org",))))
    assert msg["References"] == "<parent@example.org> <orig-1@example.org>"


def test_long_ids_are_folded_between_ids_never_encoded() -> None:
    long_id = "CA+" + "x" * 120 + "@mail.gmail.com"
    raw = reply(original(message_id=long_id, references=tuple(f"r{i}@example.org" for i in range(19))))
    head = raw.split(b"\r\n\r\n")[0]
    assert b"=?" not in head
    msg = parse(raw)
    assert msg["In-Reply-To"] == f"<{long_id}>"
    assert msg["References"].split()[-1] == f"<{long_id}>"
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if long_id.encode() not in line)


# --- new messages, ids, addresses, body --------------------------------------------------------------


def test_build_new_has_no_threading_headers() -> None:
    raw = build_new(identity=DOC, to=PATIENT, subject="Your results", body="Hi", message_id=MID, date=WHEN)
    assert_wire_safe(raw)
    msg = parse(raw)
    assert msg["Subject"] == "Your results"
    assert "In-Reply-To" not in msg and "References" not in msg
    assert sorted(header_names(raw)) == sorted(set(REPLY_HEADERS) - {"In-Reply-To", "References"})


def test_make_message_id() -> None:
    a, b = make_message_id("praxis@berg.example"), make_message_id("praxis@berg.example")
    assert a != b
    assert re.fullmatch(r"<[0-9a-f]{32}\.carebox@berg\.example>", a)
    assert make_message_id("berg.example").endswith("@berg.example>")
    assert make_message_id("x@bad domain\r\n").endswith("@carebox.invalid>")
    assert make_message_id("x@bücher.example").endswith("@xn--bcher-kva.example>")
    assert parse(reply(message_id=a))["Message-ID"] == a


def test_message_id_without_brackets_is_accepted_and_a_bad_one_refused() -> None:
    assert parse(reply(message_id="abc@berg.example"))["Message-ID"] == "<abc@berg.example>"
    with pytest.raises(ValueError, match="message id"):
        reply(message_id="<a b@berg.example>")


@pytest.mark.parametrize(
    "addr", ["max", "max@", "@example.org", "max@exa mple.org", "m<x>@example.org", "a@b\r\nc.org"]
)
def test_invalid_recipient_is_refused_without_echoing_it(addr: str) -> None:
    with pytest.raises(ValueError) as err:
        reply(to=Address("Max", addr))
    assert "recipient" in str(err.value)
    assert addr not in str(err.value)


def test_non_ascii_local_part_is_refused_and_idn_domain_converted() -> None:
    with pytest.raises(ValueError, match="SMTPUTF8"):
        reply(to=Address("Max", "jürgen@example.org"))
    msg = parse(reply(to=Address("Max", "max@bücher.example")))
    assert msg["To"].addresses[0].addr_spec == "max@xn--bcher-kva.example"


def test_naive_date_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        reply(date=datetime(2025, 3, 3, 14, 5))
    assert parse(reply(date=WHEN.astimezone(UTC)))["Date"].datetime == WHEN


def test_body_is_quoted_printable_with_crlf_lines() -> None:
    body = "Line one\r\nline two\rline three\n.\n.dot\nFrom here\n" + "é" * 100 + "\nend\x00"
    raw = reply(body=body)
    assert_wire_safe(raw)
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    msg = parse(raw)
    assert msg.get_content() == (
        "Line one\r\nline two\r\nline three\r\n.\r\n.dot\r\nFrom here\r\n" + "é" * 100 + "\r\nend\r\n"
    )


def test_sanitize_header_text() -> None:
    assert sanitize_header_text("a\r\n\tb\x00c\x1b[2Jd\u202eé") == "a b c [2Jd é"
    assert sanitize_header_text("x" * 600) == "x" * 500


# --- quoting ----------------------------------------------------------------------------------------


def test_quote() -> None:
    text = quote("Hello doctor,\r\n\r\n> earlier text\nmy knee hurts.  \n\n\n", "Max Muster", WHEN)
    assert text == (
        "On Mon, 3 Mar 2025 14:05 +0100, Max Muster wrote:\n> Hello doctor,\n>\n>> earlier text\n> my knee hurts.\n"
    )


def test_quote_strips_controls_and_handles_missing_date_and_author() -> None:
    text = quote("a\x1b]0;title\x07b\r\n", "\x1b[31mEvil\r\nBcc: x", None)
    assert text == "[31mEvil Bcc: x wrote:\n> a]0;titleb\n"
    assert quote("", "", None) == "the sender wrote:\n"
