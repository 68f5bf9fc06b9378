"""Outbox rows over a :class:`~carebox.store.store.Store`: the durable queue of outgoing mail.

An entry holds the finished message (raw RFC 5322 bytes), its envelope and, after a failure,
the server's reason: all three sealed (AES-GCM with associated data ``outbox:COLUMN:ID``). The
clear columns are ids, the state, counters and times only.

States (see services/outbox.py for who moves them)::

    queued -> sending -> sent -> filed
                      -> queued       (RETRY: attempts + 1, next_attempt later)
                      -> failed       (REJECTED, the server's text kept)
                      -> uncertain    (the data may have reached the server; never resent by itself)
    sending -> uncertain              (found at the start of a flush: the process died mid-send)
    uncertain, failed -> queued       (the physician's explicit retry)
    queued, uncertain, failed -> discarded

Every state change is one committed transaction made by :meth:`OutboxStore.transition`, and
only from the states the caller expects (``UPDATE ... WHERE state IN (...)``): two processes can
never both take the same entry from "queued" to "sending". ``seq`` gives the send order; it is
assigned in the inserting statement itself, so concurrent writers cannot share a number.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text, update

from carebox.store import tables as T
from carebox.store.store import Store, db_time, new_id, utc

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "STATES",
    "Envelope",
    "OutboxRow",
    "OutboxStore",
]

STATES = ("queued", "sending", "sent", "filed", "failed", "uncertain", "discarded")
ACTIVE_STATES = ("queued", "sending", "sent", "failed", "uncertain")  # need attention or work
FINAL_STATES = ("filed", "discarded")
LOCK_FILE = "outbox.lock"

_NO_CHANGE: Any = object()


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the outbox needs besides the raw bytes; sealed as JSON in ``envelope_enc``.

    ``mail_from``/``rcpt_to`` go on the SMTP envelope; ``message_id`` is the Message-ID with its
    angle brackets. ``recipient_name``/``recipient_addr``/``subject`` are for display.
    ``sent_folder`` is where the local copy lives and the server copy goes. ``tag`` is the thread
    tag this entry set (redirects, out of scope), ``prev_tag``/``prev_tagged_at`` what it replaced
    (restored by undo, discard or a rejection)."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    message_id: str
    recipient_name: str = ""
    recipient_addr: str = ""
    subject: str = ""
    sent_folder: str = "Sent"
    tag: str | None = None
    prev_tag: str | None = None
    prev_tagged_at: str | None = None  # ISO time

    def to_json(self) -> str:
        data = {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]
        data["rcpt_to"] = list(self.rcpt_to)
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Envelope:
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__slots__}  # type: ignore[attr-defined]
        known["rcpt_to"] = tuple(known.get("rcpt_to") or ())
        return cls(**known)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox entry, decrypted (``raw`` only when asked for)."""

    id: str
    seq: int
    kind: str
    state: str
    thread_id: str | None
    reply_to_message: str | None
    created: datetime
    updated: datetime
    attempts: int
    next_attempt: datetime | None
    envelope: Envelope
    error: str | None
    raw: bytes = field(default=b"", repr=False)


class OutboxStore:
    """Outbox rows of one store. Cheap to create; holds no connection of its own."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # --- sealing ---------------------------------------------------------------------------------

    def _seal(self, column: str, row: str, value: str | bytes) -> bytes:
        return self.store.seal("outbox", column, row, value)

    def msgid_token(self, message_id: str) -> str:
        """The keyed token of a Message-ID as the message table keeps it (no angle brackets)."""
        return self.store.token("msgid", message_id.strip().strip("<>"))

    # --- writing ---------------------------------------------------------------------------------

    def add(
        self,
        *,
        kind: str,
        raw: bytes,
        envelope: Envelope,
        now: datetime,
        thread_id: str | None = None,
        reply_to_message: str | None = None,
    ) -> str:
        """Insert a queued entry (one committed transaction). Returns its id."""
        entry_id = new_id()
        values = {
            "id": entry_id,
            "kind": kind,
            "state": "queued",
            "thread_id": thread_id,
            "reply_to_message": reply_to_message,
            "created": db_time(now),
            "updated": db_time(now),
            "attempts": 0,
            "next_attempt": None,
            "msgid_token": self.msgid_token(envelope.message_id),
            "raw_enc": self._seal("raw", entry_id, raw),
            "envelope_enc": self._seal("envelope", entry_id, envelope.to_json()),
            "error_enc": None,
        }
        cols = ", ".join(values)
        params = ", ".join(f":{k}" for k in values)
        # seq computed inside the INSERT: atomic even with another process inserting.
        stmt = text(
            f"INSERT INTO outbox (seq, {cols}) "  # noqa: S608 - column names are ours, values bound
            f"SELECT COALESCE(MAX(seq), 0) + 1, {params} FROM outbox"
        )
        with self.store.engine.begin() as conn:
            conn.execute(stmt, values)
        return entry_id

    def transition(
        self,
        entry_id: str,
        to: str,
        *,
        expect: Iterable[str],
        now: datetime,
        attempts: int | None = None,
        next_attempt: datetime | None = _NO_CHANGE,
        error: str | None = _NO_CHANGE,
        drop_local_copy: bool = False,
    ) -> bool:
        """Move one entry to ``to`` if it is in one of the ``expect`` states; one committed
        transaction. ``error`` replaces the sealed reason (None clears it). With
        ``drop_local_copy`` the UID-less local copy of the message in its Sent folder is deleted
        in the same transaction (the reply did not go out). True when the entry moved."""
        if to not in STATES:
            raise ValueError(f"unknown outbox state {to!r}")
        expected = list(expect)
        values: dict[str, Any] = {"state": to, "updated": db_time(now)}
        if attempts is not None:
            values["attempts"] = attempts
        if next_attempt is not _NO_CHANGE:
            values["next_attempt"] = db_time(next_attempt)
        if error is not _NO_CHANGE:
            values["error_enc"] = None if error is None else self._seal("error", entry_id, error)
        with self.store.engine.begin() as conn:
            result = conn.execute(
                update(T.Outbox)
                .where(T.Outbox.id == entry_id, T.Outbox.state.in_(expected))  # type: ignore[attr-defined]
                .values(**values)
            )
            moved = result.rowcount == 1
            if moved and drop_local_copy:
                row = conn.execute(
                    select(T.Outbox.msgid_token, T.Outbox.envelope_enc).where(T.Outbox.id == entry_id)
                ).one()
                envelope = Envelope.from_json(self.store.open_text("outbox", "envelope", entry_id, row[1]))
                self._delete_local_copy(conn, envelope.sent_folder, row[0])
        return moved

    def _delete_local_copy(self, conn: Any, folder: str, token: str) -> list[str]:
        fid = conn.execute(select(T.Folder.id).where(T.Folder.name == folder)).scalar_one_or_none()
        if fid is None or not token:
            return []
        ids = [
            r[0]
            for r in conn.execute(
                select(T.Message.id).where(
                    T.Message.folder_id == fid,
                    T.Message.uid.is_(None),  # type: ignore[union-attr]
                    T.Message.msgid_token == token,
                )
            )
        ]
        if ids:
            conn.execute(delete(T.Attachment).where(T.Attachment.message_id.in_(ids)))  # type: ignore[attr-defined]
            conn.execute(delete(T.MessageParent).where(T.MessageParent.message_id.in_(ids)))  # type: ignore[attr-defined]
            conn.execute(delete(T.FlagChange).where(T.FlagChange.message_id.in_(ids)))  # type: ignore[attr-defined]
            conn.execute(delete(T.Message).where(T.Message.id.in_(ids)))  # type: ignore[attr-defined]
        return ids

    def has_local_copy(self, entry_id: str) -> bool:
        """True when the entry's message is in its Sent folder locally (UID-less or claimed)."""
        row = self.get(entry_id)
        if row is None:
            return False
        with self.store.engine.connect() as conn:
            fid = conn.execute(
                select(T.Folder.id).where(T.Folder.name == row.envelope.sent_folder)
            ).scalar_one_or_none()
            if fid is None:
                return False
            n = conn.execute(
                select(func.count())
                .select_from(T.Message)
                .where(T.Message.folder_id == fid, T.Message.msgid_token == self.msgid_token(row.envelope.message_id))
            ).scalar_one()
        return int(n) > 0

    # --- reading ---------------------------------------------------------------------------------

    def _row(self, r: Any, with_raw: bool) -> OutboxRow:
        eid = r.id
        return OutboxRow(
            id=eid,
            seq=int(r.seq),
            kind=r.kind,
            state=r.state,
            thread_id=r.thread_id,
            reply_to_message=r.reply_to_message,
            created=utc(r.created),  # type: ignore[arg-type]
            updated=utc(r.updated),  # type: ignore[arg-type]
            attempts=int(r.attempts),
            next_attempt=utc(r.next_attempt),
            envelope=Envelope.from_json(self.store.open_text("outbox", "envelope", eid, r.envelope_enc)),
            error=self.store.open_text("outbox", "error", eid, r.error_enc) if r.error_enc is not None else None,
            raw=self.store.open_bytes("outbox", "raw", eid, r.raw_enc) if with_raw else b"",
        )

    def get(self, entry_id: str, *, with_raw: bool = False) -> OutboxRow | None:
        with self.store.engine.connect() as conn:
            r = conn.execute(select(T.Outbox).where(T.Outbox.id == entry_id)).first()
        return self._row(r, with_raw) if r is not None else None

    def rows(self, states: Sequence[str] | None = None, *, with_raw: bool = False) -> list[OutboxRow]:
        """Entries in send order (``seq``), optionally only those in ``states``."""
        q = select(T.Outbox).order_by(T.Outbox.seq)
        if states is not None:
            q = q.where(T.Outbox.state.in_(list(states)))  # type: ignore[attr-defined]
        with self.store.engine.connect() as conn:
            found = conn.execute(q).all()
        return [self._row(r, with_raw) for r in found]

    def ids_with_prefix(self, prefix: str) -> list[str]:
        prefix = prefix.strip().lower()
        if not prefix or not all(c in "0123456789abcdef" for c in prefix):
            return []
        with self.store.engine.connect() as conn:
            return [
                r[0]
                for r in conn.execute(
                    select(T.Outbox.id).where(T.Outbox.id.like(prefix + "%"))  # type: ignore[attr-defined]
                )
            ]

    def counts(self) -> dict[str, int]:
        with self.store.engine.connect() as conn:
            return {s: int(n) for s, n in conn.execute(select(T.Outbox.state, func.count()).group_by(T.Outbox.state))}

    # --- one sender at a time ----------------------------------------------------------------------

    @contextlib.contextmanager
    def flush_lock(self) -> Iterator[bool]:
        """Hold the store's outbox lock (an flock on ``outbox.lock``) for one flush. Yields False,
        without waiting, when another flush (this process or another) holds it. The OS drops the
        lock when the process dies, so a crash never leaves it stuck."""
        path = self.store.directory / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
