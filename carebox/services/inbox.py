"""Reading the inbox: the ranked queue (the one order used by the UI, `carebox queue` and
scripts) and the store's status."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from carebox.domain.models import ThreadState
from carebox.domain.ranking import QueueItem, rank, seconds_overdue
from carebox.store.rows import StoredMessage, ThreadRow

if TYPE_CHECKING:  # the UI imports this module before the ORM is loaded (see store.peek)
    from carebox.store.store import Store

# view name -> thread states shown (None: every state)
VIEWS: dict[str, tuple[str, ...] | None] = {
    "due": (ThreadState.WAITING.value,),
    "all": None,
    "out_of_scope": (ThreadState.OUT_OF_SCOPE.value,),
    "answered": (ThreadState.ANSWERED.value, ThreadState.REDIRECTED.value),
}


def ranked_ids(store: Store, now: datetime, view: str = "due") -> list[str]:
    """Every thread id of a view, in inbox order. Reads clear columns only (fast)."""
    states = VIEWS[view]
    items = [
        QueueItem(thread_id=tid, due_at=due, state=ThreadState(state), urgent=urgent, last_date=last)
        for tid, state, due, urgent, last, _tag in store.queue_facts(states)
    ]
    return [i.thread_id for i in rank(items, now, include_all=view != "due")]


def due_ids(store: Store, offset: int = 0, limit: int = 200) -> tuple[list[str], int]:
    """(thread ids of the Due view from ``offset``, in inbox order; how many in all), ordered and
    limited in SQL: the same order as ``ranked_ids(store, now, "due")``."""
    return store.due_page(offset, limit)


@dataclass(frozen=True)
class Page:
    rows: list[ThreadRow]
    total: int
    offset: int


def page(store: Store, now: datetime, view: str = "due", offset: int = 0, limit: int = 200) -> Page:
    """One page of the ranked queue, decrypted: only these rows are ever opened.

    The Due view is ordered by SQL with a LIMIT (the same order as ``domain.ranking.rank``, which a
    test checks), so the first page of a 100,000-message store costs milliseconds."""
    if view == "due":
        ids, total = due_ids(store, offset, limit)
        return Page(store.thread_rows(ids), total, offset)
    ids = ranked_ids(store, now, view)
    return Page(store.thread_rows(ids[offset : offset + limit]), len(ids), offset)


def rows(store: Store, thread_ids: Sequence[str]) -> list[ThreadRow]:
    """Decrypted inbox rows for these thread ids, in that order."""
    return store.thread_rows(list(thread_ids))


def attachment(store: Store, attachment_id: str) -> tuple[str, bytes]:
    """(file name, bytes) of a stored attachment, for saving on request."""
    return store.attachment_data(attachment_id)


def overdue_seconds(row: ThreadRow, now: datetime) -> int:
    if row.state is not ThreadState.WAITING or row.due_at is None:
        return 0
    return seconds_overdue(
        QueueItem(thread_id=row.id, due_at=row.due_at, state=row.state, urgent=row.urgent, last_date=row.last_date),
        now,
    )


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def queue_json(store: Store, now: datetime, *, include_all: bool = False) -> list[dict[str, Any]]:
    ids = ranked_ids(store, now, "all" if include_all else "due")
    rows = store.thread_rows(ids)
    msgids = store.message_ids_by_thread(ids)
    out = []
    for row in rows:
        tags = [row.tag] if row.tag else []
        flags = ["unread"] if row.unread else []
        out.append(
            {
                "thread_id": row.id,
                "state": row.state.value,
                "message_ids": msgids.get(row.id, []),
                "due": _iso(row.due_at),
                "waiting_since": _iso(row.waiting_since),
                "seconds_overdue": overdue_seconds(row, now),
                "patient_name": row.patient_name,
                "patient_address": row.patient_addr,
                "subject": row.subject,
                "message_count": row.message_count,
                "unread": row.unread,
                "tags": tags,
                "flags": flags,
                "urgent": row.urgent,
                "suggested_tag": row.suggested_tag,
                "sender": row.sender_status or None,
            }
        )
    return out


def status(store: Store, now: datetime) -> dict[str, Any]:
    counts = store.status_counts()
    waiting = [f for f in store.queue_facts((ThreadState.WAITING.value,))]
    overdue = sum(1 for f in waiting if f[2] is not None and f[2] <= now)
    next_due = min((f[2] for f in waiting if f[2] is not None and f[2] > now), default=None)
    outbox = counts["outbox"]
    return {
        "folders": counts["folders"],
        "messages": sum(counts["folders"].values()),
        "malformed": counts["malformed"],
        "threads": counts["threads"],
        "due": len(waiting),
        "overdue": overdue,
        "next_due": _iso(next_due),
        "outbox_waiting": outbox.get("queued", 0) + outbox.get("sending", 0),
        "outbox_uncertain": outbox.get("uncertain", 0),
        "outbox_failed": outbox.get("failed", 0),
        "last_sync": _iso(counts["last_sync"]),
    }


def thread(store: Store, thread_id: str) -> list[StoredMessage]:
    return store.thread_messages(thread_id)
