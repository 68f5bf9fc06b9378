"""The values ``Store.add_messages`` writes for a new message, sealed, without the database: any
process holding the sealing keys (``Cipher.sealing_keys``) can compute them, so a sync's parse
workers seal the rows of the messages they parse and the store thread only inserts them.

Imports are light on purpose (no SQLAlchemy): the parse workers import this module.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from carebox.domain.models import Address, ParsedMessage, pickled_by_fields
from carebox.domain.subjects import has_reply_prefix, normalize_subject
from carebox.store.crypto import Cipher

__all__ = ["SealedMessage", "counterpart", "db_time", "is_outgoing", "new_id", "parent_ids", "seal_message", "utc"]


def new_id() -> str:
    return secrets.token_hex(8)


def utc(dt: datetime | None) -> datetime | None:
    """Aware UTC from a stored naive-UTC value."""
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def db_time(dt: datetime | None) -> datetime | None:
    """Aware UTC for storing (SQLModel's column type keeps UTC). Naive input is taken as UTC."""
    if dt is None:
        return None
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


def stored_time(value: Any) -> datetime:
    """A stored datetime column read through the driver, as the typed column gives it (aware UTC)."""
    if isinstance(value, datetime):
        return utc(value)  # type: ignore[return-value]
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def read_back(value: Any) -> datetime | None:
    """A datetime column value as a later read gives it (None if it would not read back)."""
    try:
        return stored_time(value)
    except (TypeError, ValueError):
        return None


def driver_value(value: Any) -> Any:
    if isinstance(value, datetime):
        value = value.astimezone(UTC)
        if value.year >= 1000:  # the same text as the strftime below, at a third of its cost
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite format
    return value


def content_key(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def parent_ids(p: ParsedMessage) -> list[str]:
    """The parent Message-IDs of a message as threading links them: References then In-Reply-To, once each."""
    seen: set[str] = set()
    out: list[str] = []
    for ref in (*p.references, *p.in_reply_to):
        if ref and ref not in seen and ref != p.message_id:
            seen.add(ref)
            out.append(ref)
    return out


def addr_json(addrs: Iterable[Address]) -> list[list[str]]:
    return [[a.name, a.addr] for a in addrs]


def is_outgoing(parsed: ParsedMessage, professional: str) -> bool:
    return bool(professional) and parsed.sender.addr == professional


def counterpart(parsed: ParsedMessage, outgoing: bool) -> Address:
    """The patient side of a message: the sender if incoming, the first recipient if outgoing."""
    if outgoing:
        return parsed.to[0] if parsed.to else Address("", "")
    return parsed.sender


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class SealedMessage:
    """A new message's row values that do not depend on the batch or the folder (``seal_message``)."""

    id: str
    msgid_token: str
    subject_token: str
    counterpart_token: str
    content_token: str
    reply_prefix: bool
    date: Any  # as the driver stores it
    internal_date: Any
    size: int
    outgoing: bool
    malformed: bool
    sealed: tuple[bytes, ...]  # raw, message_id, subject, from_name, from_addr, body, extra
    parents: tuple[tuple[str, int, str], ...]  # message_parent rows
    attachments: tuple[tuple[str, str, int, int, bytes, bytes], ...]  # attachment rows
    date_read_back: datetime | None  # the date as a later read gives it


def seal_message(
    cipher: Cipher,
    professional: str,
    raw: bytes,
    parsed: ParsedMessage,
    internal_date: datetime | None,
    *,
    content_token: str | None = None,
    msgid_token: str | None = None,
) -> SealedMessage:
    """Everything ``Store.add_messages`` writes for a new message apart from its folder, UID,
    source, flags, modseq, thread and time added: a new row id, the tokens, the sealed values
    (associated data ``table:column:row``), the parent and attachment rows."""
    p = parsed
    mid = new_id()
    seal = cipher.seal
    token = cipher.token
    outgoing = is_outgoing(p, professional)
    other = counterpart(p, outgoing)
    date = driver_value(db_time(p.date or internal_date or datetime.now(UTC)))
    extra = {
        "to": addr_json(p.to),
        "cc": addr_json(p.cc),
        "reply_to": addr_json(p.reply_to),
        "auth_results": p.auth_results,
        "problem": p.problem,
        "references": list(p.references),
        "in_reply_to": list(p.in_reply_to),
    }
    attachments = []
    for pos, att in enumerate(p.attachments):
        aid = new_id()
        info = json.dumps({"filename": att.filename, "content_type": att.content_type})
        attachments.append(
            (
                aid,
                mid,
                pos,
                att.size,
                seal(info, f"attachment:info:{aid}"),
                seal(att.data, f"attachment:data:{aid}"),
            )
        )
    return SealedMessage(
        id=mid,
        msgid_token=token("msgid", p.message_id) if msgid_token is None else msgid_token,
        subject_token=token("subject", normalize_subject(p.subject)),
        counterpart_token=token("addr", other.addr),
        content_token=token("content", content_key(raw)) if content_token is None else content_token,
        reply_prefix=has_reply_prefix(p.subject),
        date=date,
        internal_date=driver_value(db_time(internal_date)),
        size=len(raw),
        outgoing=outgoing,
        malformed=p.malformed,
        sealed=(
            seal(raw, f"message:raw:{mid}"),
            seal(p.message_id, f"message:message_id:{mid}"),
            seal(p.subject, f"message:subject:{mid}"),
            seal(p.sender.name, f"message:from_name:{mid}"),
            seal(p.sender.addr, f"message:from_addr:{mid}"),
            seal(p.body, f"message:body:{mid}"),
            seal(json.dumps(extra), f"message:extra:{mid}"),
        ),
        parents=tuple((mid, pos, token("msgid", ref)) for pos, ref in enumerate(parent_ids(p))),
        attachments=tuple(attachments),
        date_read_back=read_back(date),
    )
