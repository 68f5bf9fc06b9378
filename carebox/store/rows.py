"""What the store hands out, and the inbox's two page queries, with no ORM import.

``carebox open`` paints its first page through ``store.peek`` (the sqlite3 driver) before
SQLAlchemy is imported; ``Store`` runs the same SQL and builds its rows with the same function,
so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from carebox.domain.models import Address, ThreadState
from carebox.store.sealing import stored_time, utc  # noqa: F401 - utc is re-exported

DB_FILE = "carebox.db"  # the store's database, in its folder


class StoreError(Exception):
    """A store problem, worded as one line for the user."""


def _stored_time(value: Any) -> datetime | None:
    """A DATETIME column as the driver gives it (text, as SQLAlchemy wrote it) in aware UTC."""
    return None if value is None else stored_time(value)


@dataclass(frozen=True, slots=True)
class ThreadRow:
    """One line of the inbox, decrypted."""

    id: str
    state: ThreadState
    tag: str | None
    due_at: datetime | None
    waiting_since: datetime | None
    last_date: datetime
    message_count: int
    unread: int
    urgent: bool
    sender_status: str
    suggested_tag: str | None
    patient_name: str
    patient_addr: str
    subject: str


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message, decrypted, for reading."""

    id: str
    thread_id: str | None
    folder: str
    uid: int | None
    date: datetime
    outgoing: bool
    flags: frozenset[str]
    malformed: bool
    deleted_on_server: bool
    message_id: str
    subject: str
    sender: Address
    body: str
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    references: tuple[str, ...] = ()
    in_reply_to: tuple[str, ...] = ()
    auth_results: str = ""
    problem: str = ""
    attachments: tuple[tuple[str, str, int], ...] = field(default=())  # (id, filename, size)


# The Due view: waiting threads, urgent first, then by due time (none last), last activity and id:
# the order of domain.ranking.rank (a test checks it page by page).
DUE_COUNT_SQL = "SELECT count(*) FROM thread WHERE state = ?"
DUE_PAGE_SQL = (
    "SELECT id FROM thread WHERE state = ? ORDER BY urgent DESC, due_at IS NULL, due_at, last_date, id LIMIT ? OFFSET ?"
)
DUE_STATE = ThreadState.WAITING.value

THREAD_COLUMNS = (
    "id, state, tag, due_at, waiting_since, last_date, message_count, unread, urgent, "
    "sender_status, suggested_tag, patient_name_enc, patient_addr_enc, subject_enc"
)
MAX_VARIABLES = 900  # ids per IN (...) query


def thread_rows_sql(n: int) -> str:
    return f"SELECT {THREAD_COLUMNS} FROM thread WHERE id IN ({', '.join('?' * n)})"  # noqa: S608 - placeholders only


def thread_row(values: Sequence[Any], open_text: Callable[[str, str, str, bytes], str]) -> ThreadRow:
    """A ThreadRow from the columns of ``THREAD_COLUMNS``; ``open_text(table, column, row, blob)``."""
    (tid, state, tag, due_at, waiting_since, last_date, count, unread, urgent, sender, suggested, name, addr, subj) = (
        values
    )
    return ThreadRow(
        id=tid,
        state=ThreadState(state),
        tag=tag,
        due_at=_stored_time(due_at),
        waiting_since=_stored_time(waiting_since),
        last_date=_stored_time(last_date),  # type: ignore[arg-type]
        message_count=count,
        unread=unread,
        urgent=bool(urgent),
        sender_status=sender,
        suggested_tag=suggested,
        patient_name=open_text("thread", "patient_name", tid, name),
        patient_addr=open_text("thread", "patient_addr", tid, addr),
        subject=open_text("thread", "subject", tid, subj),
    )


def read_thread_rows(
    execute: Callable[[str, Sequence[Any]], Any],
    thread_ids: Sequence[str],
    open_text: Callable[[str, str, str, bytes], str],
) -> list[ThreadRow]:
    """Decrypted rows in the order of ``thread_ids``; ``execute(sql, params)`` returns rows."""
    found: dict[str, ThreadRow] = {}
    ids = list(thread_ids)
    for at in range(0, len(ids), MAX_VARIABLES):
        chunk = ids[at : at + MAX_VARIABLES]
        for values in execute(thread_rows_sql(len(chunk)), chunk):
            row = thread_row(values, open_text)
            found[row.id] = row
    return [found[t] for t in ids if t in found]


def read_due_page(execute: Callable[[str, Sequence[Any]], Any], offset: int, limit: int) -> tuple[list[str], int]:
    """(ids of the Due view from ``offset``, how many waiting threads in all)."""
    total = int(next(iter(execute(DUE_COUNT_SQL, (DUE_STATE,))))[0])
    ids = [r[0] for r in execute(DUE_PAGE_SQL, (DUE_STATE, limit, offset))]
    return ids, total
