"""Response windows and thread state. Pure: the clock and the policy are passed in.

Which time counts towards a response window:

* ``business_hours is None``, all seven days working, no holidays: plain elapsed hours.
* ``business_hours is None`` otherwise: only whole working, non-holiday days count (local
  midnight to midnight in ``policy.tz``); time stands still on the other days.
* ``business_hours`` set: only that span of each working, non-holiday day counts. A start outside
  it begins counting at the next opening.

Counted time is real elapsed time, so a counted day with a DST change counts 23 or 25 hours.
Days, hours and holidays are judged in ``policy.tz``; results are returned in UTC.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from types import MappingProxyType

from carebox.domain.models import MessageRef, ThreadState, ThreadSummary

__all__ = ["Policy", "add_response_window", "summarize"]

_ALL_DAYS = frozenset(range(7))
_ZERO = timedelta(0)
_ONE_DAY = timedelta(days=1)


def _check_hours(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number of hours, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number of hours >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Policy:
    """The practice's promise: answer within ``response_hours`` of counted time.

    ``category_hours`` overrides the window per category (e.g. ``{"results": 24}``).
    Invalid values raise ``ValueError`` with one line saying what is wrong.
    """

    response_hours: float = 48.0
    business_hours: tuple[time, time] | None = None
    working_days: frozenset[int] = frozenset({0, 1, 2, 3, 4})  # Monday = 0
    holidays: frozenset[date] = frozenset()
    tz: tzinfo = UTC
    category_hours: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _check_hours(self.response_hours, "response_hours")
        if self.business_hours is not None:
            try:
                opening, closing = self.business_hours
            except (TypeError, ValueError):
                raise ValueError("business_hours must be a pair (opening, closing) of times") from None
            if not (isinstance(opening, time) and isinstance(closing, time)):
                raise ValueError("business_hours must be a pair (opening, closing) of datetime.time")
            if opening.tzinfo is not None or closing.tzinfo is not None:
                raise ValueError("business_hours must be naive times; the policy's tz applies")
            if not opening < closing:
                raise ValueError(f"business_hours: opening {opening} must be before closing {closing}")
            object.__setattr__(self, "business_hours", (opening, closing))
        days = frozenset(self.working_days)
        if not days or not days <= _ALL_DAYS:
            raise ValueError(f"working_days must be a non-empty set of weekdays 0-6 (Monday=0), got {days!r}")
        object.__setattr__(self, "working_days", days)
        holidays = frozenset(self.holidays)
        for d in holidays:
            if isinstance(d, datetime) or not isinstance(d, date):
                raise ValueError(f"holidays must be dates (not datetimes), got {d!r}")
        object.__setattr__(self, "holidays", holidays)
        if not isinstance(self.tz, tzinfo):
            raise ValueError(f"tz must be a tzinfo (e.g. zoneinfo.ZoneInfo('Europe/Berlin')), got {self.tz!r}")
        hours = {str(k): _check_hours(v, f"category_hours[{k!r}]") for k, v in self.category_hours.items()}
        object.__setattr__(self, "category_hours", MappingProxyType(hours))

    @property
    def plain_hours(self) -> bool:
        """True when every hour counts (no business hours, no closed days)."""
        return self.business_hours is None and self.working_days == _ALL_DAYS and not self.holidays

    def hours_for(self, category: str | None = None) -> float:
        """The response window in hours for a category (the default window when unknown or None)."""
        if category is not None and category in self.category_hours:
            return self.category_hours[category]
        return self.response_hours

    def counts_on(self, day: date) -> bool:
        """Does time count on this local date at all?"""
        return day.weekday() in self.working_days and day not in self.holidays


def _day_span_uncached(day: date, tz: tzinfo, hours: tuple[time, time] | None) -> tuple[datetime, datetime] | None:
    if hours is None:
        lo = datetime.combine(day, time(0), tzinfo=tz)
        hi = datetime.combine(day + _ONE_DAY, time(0), tzinfo=tz)
    else:
        lo = datetime.combine(day, hours[0], tzinfo=tz)
        hi = datetime.combine(day, hours[1], tzinfo=tz)
    lo_utc, hi_utc = lo.astimezone(UTC), hi.astimezone(UTC)
    return (lo_utc, hi_utc) if lo_utc < hi_utc else None


_day_span_cached = lru_cache(maxsize=8192)(_day_span_uncached)


def _day_span(day: date, tz: tzinfo, hours: tuple[time, time] | None) -> tuple[datetime, datetime] | None:
    """The counted span of one local day, in UTC; None if it is empty."""
    try:
        return _day_span_cached(day, tz, hours)
    except TypeError:  # an unhashable custom tzinfo
        return _day_span_uncached(day, tz, hours)


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got naive {value.isoformat()}")


def add_response_window(start: datetime, policy: Policy, category: str | None = None) -> datetime:
    """When a reply to a message received at ``start`` is due, in UTC.

    ``start`` must be aware. A zero window is due at ``start`` itself.
    """
    _require_aware(start, "start")
    remaining = timedelta(hours=policy.hours_for(category))
    cur = start.astimezone(UTC)
    if remaining <= _ZERO:
        return cur
    if policy.plain_hours:
        return cur + remaining
    day = cur.astimezone(policy.tz).date()
    while True:
        if policy.counts_on(day):
            span = _day_span(day, policy.tz, policy.business_hours)
            if span is not None:
                lo, hi = span
                if cur < lo:
                    cur = lo
                if cur < hi:
                    available = hi - cur
                    if remaining <= available:
                        return cur + remaining
                    remaining -= available
                    cur = hi
        day += _ONE_DAY


def _chronological(ref: MessageRef) -> tuple:
    # At equal dates an outgoing message counts as after the incoming one.
    return (ref.date, ref.outgoing, ref.key)


def summarize(
    msgs: Sequence[MessageRef],
    policy: Policy,
    tag: str | None = None,
    category: str | None = None,
    *,
    tagged_at: datetime | None = None,
) -> ThreadSummary:
    """Where one thread stands.

    WAITING when a patient message follows the practice's last message; ``waiting_since`` is
    the oldest such message and ``due_at`` its response window (``category`` picks the window).
    ANSWERED when the practice wrote last. A tag overrides both: ``redirect...`` gives REDIRECTED,
    any other non-empty tag OUT_OF_SCOPE. If ``tagged_at`` is given, patient messages after it
    reopen the thread (WAITING again, counted from the first of them): a new question is never
    hidden by an old tag. ``waiting_since`` and ``due_at`` are None unless WAITING.

    Raises ``ValueError`` for an empty thread.
    """
    if not msgs:
        raise ValueError("summarize needs at least one message")
    ordered = sorted(msgs, key=_chronological)
    last_date = max(m.date for m in ordered)

    if tagged_at is not None:
        _require_aware(tagged_at, "tagged_at")
    # Index of the oldest incoming message after the last outgoing one (len(ordered) if none).
    first_open = len(ordered)
    while first_open > 0 and not ordered[first_open - 1].outgoing:
        first_open -= 1
    open_msgs = ordered[first_open:]
    unanswered: MessageRef | None = open_msgs[0] if open_msgs else None

    state = ThreadState.WAITING if unanswered is not None else ThreadState.ANSWERED
    if tag:
        after_tag = None
        if tagged_at is not None:
            after_tag = next((m for m in open_msgs if m.date > tagged_at), None)
        if after_tag is not None:
            unanswered = after_tag  # reopened by a patient message newer than the tag
        else:
            state = ThreadState.REDIRECTED if tag.startswith("redirect") else ThreadState.OUT_OF_SCOPE
            unanswered = None

    if state is ThreadState.WAITING and unanswered is not None:
        waiting_since = unanswered.date
        due_at: datetime | None = add_response_window(waiting_since, policy, category)
    else:
        waiting_since = due_at = None
    return ThreadSummary(
        state=state,
        waiting_since=waiting_since,
        due_at=due_at,
        last_date=last_date,
        message_count=len(ordered),
    )
