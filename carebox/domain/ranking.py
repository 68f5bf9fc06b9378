"""The work queue: which conversation needs an answer first. Pure; ``now`` is passed in."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from carebox.domain.models import ThreadState

__all__ = ["QueueItem", "format_countdown", "rank", "seconds_overdue", "time_left"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueItem:
    """One conversation in the queue (keyword-only construction)."""

    thread_id: str
    due_at: datetime | None
    state: ThreadState
    urgent: bool = False
    last_date: datetime


def _micros(dt: datetime) -> int:
    return (dt - _EPOCH) // _MICRO


def rank(items: Iterable[QueueItem], now: datetime, include_all: bool = False) -> list[QueueItem]:
    """The queue in working order.

    WAITING threads: urgent ones first; then by due time ascending, which puts overdue threads on
    top, most overdue first; a WAITING item without a due time sorts as due ``now``. Ties by
    ``last_date`` (older first), then ``thread_id``. The order is total and does not depend on the
    input order. With ``include_all`` the other threads follow, newest ``last_date`` first.
    """
    now_us = _micros(now)
    waiting: list[tuple[tuple, QueueItem]] = []
    others: list[tuple[tuple, QueueItem]] = []
    for item in items:
        if item.state == ThreadState.WAITING:
            due = now_us if item.due_at is None else _micros(item.due_at)
            key = (not item.urgent, due, _micros(item.last_date), item.thread_id, item.due_at is None)
            waiting.append((key, item))
        elif include_all:
            due_key = (1, 0) if item.due_at is None else (0, _micros(item.due_at))
            key = (-_micros(item.last_date), item.thread_id, str(item.state), item.urgent, due_key)
            others.append((key, item))
    waiting.sort(key=lambda pair: pair[0])
    others.sort(key=lambda pair: pair[0])
    return [item for _, item in waiting] + [item for _, item in others]


def seconds_overdue(item: QueueItem, now: datetime) -> int:
    """Whole seconds past the due time; 0 when not overdue or without a due time."""
    if item.due_at is None or now <= item.due_at:
        return 0
    return (now - item.due_at) // _SECOND


def time_left(due_at: datetime, now: datetime) -> timedelta:
    """Time until ``due_at``; negative when overdue."""
    return due_at - now


def _span(seconds: int) -> str:
    minutes_total = seconds // 60
    days, rest = divmod(minutes_total, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return "<1m"


def format_countdown(due_at: datetime | None, now: datetime) -> str:
    """A short countdown: "due in 5h", "due in 2d 3h", "due in 12m", "overdue 3h", "overdue 1d 2h".

    Units are truncated (never rounded up): days+hours from one day on, hours+minutes below a
    day, minutes below an hour, "<1m" below a minute; "due now" exactly at the due time.
    Returns "" without a due time.
    """
    if due_at is None:
        return ""
    left = time_left(due_at, now)
    if left == timedelta(0):
        return "due now"
    if left > timedelta(0):
        return f"due in {_span(left // _SECOND)}"
    return f"overdue {_span(-left // _SECOND)}"
