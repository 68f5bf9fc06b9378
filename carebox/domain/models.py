"""Plain data shared by every layer. No IO, no Textual, no SQL.

Two views of a message exist on purpose:

* ``ParsedMessage`` is what the MIME parser makes of raw bytes: full content, handled only
  in memory and stored encrypted.
* ``MessageRef`` is the content-free view that threading, deadlines and ranking need: opaque
  tokens (keyed hashes of Message-IDs, addresses and subjects), dates and direction. It can sit
  in clear in the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from operator import attrgetter
from typing import TypeVar

_T = TypeVar("_T")


def pickled_by_fields(cls: type[_T]) -> type[_T]:
    """Pickle a frozen slotted dataclass as ``cls(*values)``. The default for ``slots=True``
    (dataclasses' ``__getstate__``/``__setstate__``) calls ``fields()`` for every object: a sync's
    parsed batches cost about 25% more to pickle and 30% more to unpickle, the latter in the process
    that runs the event loop. Put it above ``@dataclass``; every field must be an ``__init__``
    argument (they are passed in order)."""
    all_fields = fields(cls)  # type: ignore[arg-type]
    if not all(f.init for f in all_fields):
        raise TypeError(f"{cls.__name__}: every field must be an __init__ argument")
    names = [f.name for f in all_fields]
    get = attrgetter(*names)
    if len(names) == 1:

        def __reduce__(self: object) -> tuple[type, tuple[object, ...]]:
            return (cls, (get(self),))
    else:

        def __reduce__(self: object) -> tuple[type, tuple[object, ...]]:
            return (cls, get(self))

    cls.__reduce__ = __reduce__  # type: ignore[method-assign,assignment]
    return cls


class ThreadState(StrEnum):
    """Where a conversation stands from the physician's side."""

    WAITING = "waiting"  # the patient wrote last: a reply is due
    ANSWERED = "answered"  # the practice wrote last
    REDIRECTED = "redirected"  # answered by a redirect to phone or visit
    OUT_OF_SCOPE = "out_of_scope"  # tagged out of scope (appointment, billing, ...)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    size: int
    data: bytes = field(repr=False, default=b"")


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Address:
    name: str
    addr: str  # lower-cased addr-spec, "" when unparseable


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """What carebox keeps of one message after parsing. ``malformed`` is True when the parser
    had to give up on part of it; the raw bytes are always kept beside it."""

    message_id: str  # without angle brackets; "" when absent
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    sender: Address  # From (first address)
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    date: datetime | None  # aware; None when absent or unparseable
    body: str  # plain text (HTML converted to text), never markup
    attachments: tuple[Attachment, ...] = ()
    auth_results: str = ""  # Authentication-Results header as received, "" when absent
    malformed: bool = False
    problem: str = ""  # one line: what was wrong, when malformed


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class MessageRef:
    """The content-free view of a message used by threading, deadlines and ranking.

    Tokens are opaque strings (the store uses keyed hashes); the domain only compares them.
    """

    key: str  # the store's id of the message
    message_id: str  # token of the Message-ID; "" when the message had none
    parents: tuple[str, ...]  # tokens of References then In-Reply-To, oldest first
    subject_key: str  # token of the normalised subject; "" when empty
    counterpart: str  # token of the patient's address (From if incoming, To if outgoing)
    date: datetime  # aware
    outgoing: bool  # written by the practice
    reply_prefix: bool = False  # the subject started with Re:/AW:/... (fallback threading only)


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    """The result of looking at one thread's messages under a policy."""

    state: ThreadState
    waiting_since: datetime | None  # oldest unanswered patient message
    due_at: datetime | None  # waiting_since + response window; None unless WAITING
    last_date: datetime
    message_count: int
