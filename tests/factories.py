"""Small builders for test messages (raw bytes and their ParsedMessage) without the parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from carebox.domain.models import Address, ParsedMessage
from carebox.store.store import NewMessage

DOCTOR = "doctor@practice.example"
BASE = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday


def raw_message(
    msgid: str,
    sender: str,
    to: str,
    subject: str,
    body: str,
    date: datetime,
    in_reply_to: str = "",
    references: tuple[str, ...] = (),
) -> bytes:
    lines = [
        f"Message-ID: <{msgid}>",
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {format_datetime(date)}",
    ]
    if in_reply_to:
        lines.append(f"In-Reply-To: <{in_reply_to}>")
    if references:
        lines.append("References: " + " ".join(f"<{r}>" for r in references))
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "", body, ""]
    return "\r\n".join(lines).encode("utf-8")


def message(
    msgid: str,
    *,
    sender: Address,
    to: Address,
    subject: str = "Question",
    body: str = "Hello",
    hours: float = 0,
    in_reply_to: str = "",
    references: tuple[str, ...] = (),
    uid: int | None = None,
    flags: frozenset[str] = frozenset(),
) -> NewMessage:
    date = BASE + timedelta(hours=hours)
    raw = raw_message(
        msgid, f"{sender.name} <{sender.addr}>", f"{to.name} <{to.addr}>", subject, body, date, in_reply_to, references
    )
    parsed = ParsedMessage(
        message_id=msgid,
        in_reply_to=(in_reply_to,) if in_reply_to else (),
        references=references,
        subject=subject,
        sender=sender,
        to=(to,),
        cc=(),
        reply_to=(),
        date=date,
        body=body,
    )
    return NewMessage(raw=raw, parsed=parsed, uid=uid, flags=flags)


def patient(n: int) -> Address:
    return Address(f"Patient Number{n}", f"patient{n}@mail.example")


DOC = Address("Dr. Test", DOCTOR)
