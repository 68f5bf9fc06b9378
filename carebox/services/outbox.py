"""Sending: replies, redirects and bulk replies through a durable outbox.

Every outgoing message is built and committed (sealed) to the outbox *before* any network step,
with its Message-ID fixed at that moment; a local copy goes into the Sent folder at once, so the
conversation leaves the Due queue immediately (sync later claims that copy by Message-ID).

:func:`flush` sends what is due, in ``seq`` order, over one SMTP connection::

    queued -> sending (commit) -> SMTP -> sent (commit) -> file in Sent, set \\Answered -> filed

* RETRY (nothing was delivered): back to queued, attempts + 1, next try after an exponential
  backoff (30 s doubling, at most 1 h); later entries of the same conversation wait behind it.
* REJECTED: failed, the server's reason kept (sealed); the local copy and any tag the entry set
  are withdrawn, so the conversation is due again.
* UNCERTAIN (the data may have reached the server): uncertain, never resent automatically; the
  physician checks and calls :func:`retry` or :func:`discard`.
* AUTH_FAILED / TLS_ERROR / offline: the flush stops, entries stay queued in order, and the
  report carries one line saying why.
* An entry found in "sending" when a flush starts (the process died mid-send) becomes uncertain.
* Filing (search Sent for the Message-ID, APPEND only if absent, then ``\\Answered`` on the
  patient's message on the server and locally) is its own step: a failure leaves the entry in
  "sent" and the next flush tries again without ever making a second copy.

Only one flush runs at a time per store (a file lock): a second one returns at once with
``busy``. In demo mode messages are written to a local mbox file and filing is local only.

Errors for the user are :class:`OutboxError` with one line that never holds patient data; logs
hold ids, states and counts only.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import email.utils
import logging
import mailbox
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from pathlib import Path
from typing import Protocol

from carebox.domain.models import Address, ParsedMessage
from carebox.domain.sanitize import clean_line
from carebox.domain.templates import TemplateError, first_name, placeholders, render
from carebox.mail.build import Identity, build_reply, make_message_id
from carebox.mail.imap import ImapClient, ImapError, ImapProtocolError, ImapSettings
from carebox.mail.smtp import Outcome, SendResult, SmtpSender
from carebox.services.session import Session
from carebox.services.threads import refresh_threads, rethread, set_tag
from carebox.store.outbox import ACTIVE_STATES, Envelope, OutboxRow, OutboxStore
from carebox.store.store import NewMessage, Store, StoredMessage

__all__ = [
    "KINDS",
    "BulkPreview",
    "BulkResult",
    "FilingItem",
    "FilingResult",
    "FlushReport",
    "ImapFiler",
    "LocalFiler",
    "MboxTransport",
    "OutboxEntry",
    "OutboxError",
    "PreviewResult",
    "backoff",
    "discard",
    "find_entry",
    "flush",
    "list_entries",
    "mark_out_of_scope",
    "outbox_counts",
    "preview_bulk",
    "queue_bulk",
    "queue_reply",
    "render_template",
    "retry",
    "template_values",
    "undo",
]

log = logging.getLogger(__name__)

KINDS = ("reply", "redirect_phone", "redirect_visit", "out_of_scope")
REDIRECT_TAGS = {"redirect_phone": "redirect:phone", "redirect_visit": "redirect:visit"}
REDIRECT_TEMPLATES = {"redirect_phone": "phone", "redirect_visit": "visit"}
BACKOFF_FIRST = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=1)
DEMO_OUTBOX_FILE = "demo-outbox.mbox"


class OutboxError(Exception):
    """A sending problem worded for the user (one line, no patient data)."""


def backoff(attempts: int) -> timedelta:
    """The wait before try number ``attempts + 1``: 30 s, 60 s, 120 s ... at most 1 h."""
    if attempts <= 0:
        return timedelta(0)
    return min(BACKOFF_FIRST * (2 ** min(attempts - 1, 20)), BACKOFF_MAX)


# ---------------------------------------------------------------------------------------------
# composing


@dataclass(frozen=True)
class _Target:
    thread_id: str
    patient: Address
    original: StoredMessage  # the message answered (latest patient message)


@dataclass(frozen=True)
class _Composed:
    target: _Target
    raw: bytes
    envelope: Envelope
    body: str
    copy: NewMessage  # the local Sent copy


def _identity(session: Session) -> Identity:
    cfg = session.config
    if cfg.account is None:
        raise OutboxError("no [account] in the config, so there is no sender address: fill in [account]")
    return Identity(
        name=cfg.identity.physician_name, address=cfg.professional_address, practice=cfg.identity.practice_name
    )


def _sent_folder(session: Session) -> str:
    account = session.config.account
    return account.folders.sent if account is not None else "Sent"


def _as_address(to: Address | str) -> Address:
    if isinstance(to, Address):
        return Address(to.name, to.addr.strip().lower())
    parsed = email.utils.parseaddr(to)
    return Address(parsed[0], parsed[1].strip().lower())


def _target(session: Session, thread_id: str, to: Address | str | None) -> _Target:
    messages = session.store.thread_messages(thread_id)
    if not messages:
        raise OutboxError(f"no conversation {thread_id} in the store: refresh the list and try again")
    incoming = [m for m in messages if not m.outgoing]
    if incoming:
        patient = incoming[0].sender  # the thread's first patient message: never a Reply-To
        original = incoming[-1]
    else:  # a conversation the practice started: write to its first recipient
        rows = session.store.thread_rows([thread_id])
        patient = Address(rows[0].patient_name, rows[0].patient_addr) if rows else Address("", "")
        original = messages[-1]
    if to is not None:
        patient = _as_address(to)  # an explicit, confirmed address from the caller
    if not patient.addr:
        raise OutboxError("this conversation has no usable patient address: nothing was queued")
    return _Target(thread_id, patient, original)


def _parsed_original(m: StoredMessage) -> ParsedMessage:
    return ParsedMessage(
        message_id=m.message_id,
        in_reply_to=m.in_reply_to,
        references=m.references,
        subject=m.subject,
        sender=m.sender,
        to=m.to,
        cc=m.cc,
        reply_to=m.reply_to,
        date=m.date,
        body=m.body,
    )


def _compose(session: Session, target: _Target, body: str, *, now: datetime, tag: str | None) -> _Composed:
    if now.tzinfo is None:
        raise OutboxError("internal: the clock given to the outbox has no time zone")
    if not body or not body.strip():
        raise OutboxError("the reply is empty: write something before sending")
    identity = _identity(session)
    message_id = make_message_id(identity.address)
    try:
        raw = build_reply(
            identity=identity,
            to=target.patient,
            original=_parsed_original(target.original),
            body=body,
            message_id=message_id,
            date=now.astimezone(session.policy.tz),
        )
    except ValueError as exc:  # build.py's messages name the field, never its value
        raise OutboxError(f"cannot write this reply: {exc}") from None
    parsed = _own_message(raw, message_id, now)
    facts = session.store.thread_facts([target.thread_id]).get(target.thread_id) if tag else None
    prev_tag = facts.tag if facts else None
    prev_at = facts.tagged_at.isoformat() if (facts and facts.tagged_at) else None
    envelope = Envelope(
        mail_from=parsed.sender.addr,
        rcpt_to=tuple(a.addr for a in parsed.to),
        message_id=message_id,
        recipient_name=target.patient.name,
        recipient_addr=parsed.to[0].addr,
        subject=parsed.subject,
        sent_folder=_sent_folder(session),
        tag=tag,
        prev_tag=prev_tag,
        prev_tagged_at=prev_at,
    )
    copy = NewMessage(raw=raw, parsed=parsed, uid=None, flags=frozenset({"\\Seen"}), source="outbox")
    return _Composed(target, raw, envelope, body, copy)


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _unfold(value: object) -> str:
    return _FOLD.sub("", str(value))


def _decoded(value: str) -> str:
    return str(make_header(decode_header(value))) if "=?" in value else value


def _own_message(raw: bytes, message_id: str, fallback_date: datetime) -> ParsedMessage:
    """A message carebox built itself (build.py: one text/plain UTF-8 part), parsed back for its
    local copy and envelope. compat32 plus explicit RFC 2047 decoding: several times faster than
    the default policy, and the input is ours."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)

    def addresses(name: str) -> tuple[Address, ...]:
        pairs = email.utils.getaddresses([_unfold(v) for v in msg.get_all(name, [])])
        return tuple(Address(_decoded(n), a.lower()) for n, a in pairs if a)

    def ids(name: str) -> tuple[str, ...]:
        return tuple(t.strip("<>") for t in _unfold(msg.get(name, "")).split() if t.strip("<>"))

    senders = addresses("From")
    to = addresses("To")
    if not senders or not to:
        raise OutboxError("internal: the built reply has no sender or recipient")
    date_text = msg.get("Date")
    date = email.utils.parsedate_to_datetime(_unfold(date_text)) if date_text else fallback_date
    payload = msg.get_payload(decode=True)
    body = payload.decode(msg.get_content_charset() or "utf-8", "replace") if isinstance(payload, bytes) else ""
    return ParsedMessage(
        message_id=message_id.strip("<>"),
        in_reply_to=ids("In-Reply-To"),
        references=ids("References"),
        subject=_decoded(_unfold(msg.get("Subject", ""))),
        sender=senders[0],
        to=to,
        cc=(),
        reply_to=(),
        date=date,
        body=body.replace("\r\n", "\n"),
    )


def _local_copy(row: OutboxRow) -> NewMessage:
    """The entry's message as a UID-less message for the local Sent folder."""
    parsed = _own_message(row.raw, row.envelope.message_id, row.created)
    return NewMessage(raw=row.raw, parsed=parsed, uid=None, flags=frozenset({"\\Seen"}), source="outbox")


def _apply(session: Session, items: Sequence[tuple[str | None, Envelope, NewMessage]], now: datetime) -> None:
    """Make entries visible in their conversations: the local Sent copies (one batch, one
    rethread), and the tags they set."""
    store = session.store
    by_folder: dict[str, list[NewMessage]] = {}
    for _, envelope, copy in items:
        by_folder.setdefault(envelope.sent_folder, []).append(copy)
    for folder, copies in by_folder.items():
        store.add_messages(folder, copies, role="sent")
    rethread(store, session.policy)
    wanted = {tid: env.tag for tid, env, _ in items if tid and env.tag}
    if not wanted:
        return
    facts = store.thread_facts(list(wanted))
    tagged = [tid for tid, tag in wanted.items() if tid in facts and facts[tid].tag != tag]
    for tid in tagged:
        store.set_thread_fields(tid, tag=wanted[tid], tagged_at=now)
    if tagged:
        refresh_threads(store, session.policy, thread_ids=tagged)


def _withdraw(session: Session, row: OutboxRow) -> None:
    """After the local copy was dropped: give back the thread's earlier tag (if the tag is still
    the one this entry set) and recompute the thread, which is due again."""
    if not row.thread_id:
        return
    store = session.store
    facts = store.thread_facts([row.thread_id]).get(row.thread_id)
    if facts is None:
        return
    if row.envelope.tag and facts.tag == row.envelope.tag:
        at = datetime.fromisoformat(row.envelope.prev_tagged_at) if row.envelope.prev_tagged_at else None
        set_tag(store, session.policy, row.thread_id, row.envelope.prev_tag, at=at)
    else:
        refresh_threads(store, session.policy, thread_ids=[row.thread_id])


# ---------------------------------------------------------------------------------------------
# templates


def template_values(session: Session, patient: Address) -> dict[str, str]:
    """The placeholders a reply template may use, for one patient.

    ``patient_first_name`` falls back to the whole name ("Dr. Meier"), then to "patient"."""
    ident = session.config.identity
    name = clean_line(patient.name)
    return {
        "patient_first_name": first_name(name) or name or "patient",
        "patient_name": name,
        "physician_name": ident.physician_name,
        "practice_name": ident.practice_name,
        "practice_phone": ident.phone,
        "booking": ident.booking,
    }


def _render(session: Session, template: str, patient: Address) -> str:
    try:
        return render(template, template_values(session, patient))
    except TemplateError as exc:
        raise OutboxError(f"the template cannot be used: {exc}") from None


def _template_text(session: Session, name: str) -> str:
    text = session.config.templates.get(name)
    if text is None:
        known = ", ".join(sorted(session.config.templates)) or "none"
        raise OutboxError(f"no reply template named {name!r} (known: {known}): add it under [templates]")
    return text


def render_template(session: Session, name: str, thread_id: str) -> str:
    """The template ``name`` ("phone", "visit" or another key of ``[templates]``) filled in for
    the patient of ``thread_id``, for the composer to show and edit."""
    return _render(session, _template_text(session, name), _target(session, thread_id, None).patient)


# ---------------------------------------------------------------------------------------------
# queueing


def _tag_for(kind: str, tag: str | None) -> str | None:
    if kind in REDIRECT_TAGS:
        return REDIRECT_TAGS[kind]
    if kind == "out_of_scope" and not (tag and tag.strip()):
        raise OutboxError("an out-of-scope reply needs its category: choose one")
    return tag.strip() if tag and tag.strip() else None


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise OutboxError(f"unknown kind of reply {kind!r} (known: {', '.join(KINDS)})")


def queue_reply(
    session: Session,
    thread_id: str,
    body: str | None = None,
    *,
    kind: str = "reply",
    now: datetime,
    to: Address | str | None = None,
    tag: str | None = None,
) -> str:
    """Queue a reply to the conversation ``thread_id``; returns the outbox entry id.

    The reply goes to the thread's patient (the sender of its first incoming message; ``to``
    replaces that only when given explicitly, e.g. an address the physician confirmed). It is
    committed to the outbox before anything else, then copied into the local Sent folder so the
    thread leaves the Due queue. ``kind``: "reply"; "redirect_phone"/"redirect_visit" (tag the
    thread ``redirect:phone``/``redirect:visit``; with no ``body`` the configured template is
    used); "out_of_scope" (tag the thread with the category ``tag``). ``tag`` on a plain reply
    tags the thread too. Raises :class:`OutboxError` (nothing queued) for bad input."""
    _check_kind(kind)
    set_to = _tag_for(kind, tag)
    target = _target(session, thread_id, to)
    if (body is None or not body.strip()) and kind in REDIRECT_TEMPLATES:
        body = _render(session, _template_text(session, REDIRECT_TEMPLATES[kind]), target.patient)
    composed = _compose(session, target, body or "", now=now, tag=set_to)
    entry_id = _enqueue(session, composed, kind, now)
    _apply(session, [(thread_id, composed.envelope, composed.copy)], now)
    log.info("outbox: queued %s (%s)", entry_id, kind)
    return entry_id


def _enqueue(session: Session, composed: _Composed, kind: str, now: datetime) -> str:
    """The one commit that makes a reply durable."""
    original = composed.target.original
    return OutboxStore(session.store).add(
        kind=kind,
        raw=composed.raw,
        envelope=composed.envelope,
        now=now,
        thread_id=composed.target.thread_id,
        reply_to_message=None if original.outgoing else original.id,
    )


def mark_out_of_scope(
    session: Session, thread_id: str, category: str, *, now: datetime, body: str | None = None
) -> str | None:
    """Tag a conversation out of scope with ``category``; with a non-empty ``body`` also queue a
    reply (kind "out_of_scope") and return its outbox id, else None."""
    if not category or not category.strip():
        raise OutboxError("choose an out-of-scope category")
    if body and body.strip():
        return queue_reply(session, thread_id, body, kind="out_of_scope", now=now, tag=category)
    _target(session, thread_id, None)  # the conversation exists
    set_tag(session.store, session.policy, thread_id, category.strip(), at=now)
    return None


@dataclass
class BulkResult:
    queued: dict[str, str] = field(default_factory=dict)  # thread id -> outbox id
    failed: dict[str, str] = field(default_factory=dict)  # thread id -> one-line reason


@dataclass(frozen=True)
class BulkPreview:
    thread_id: str
    recipient_name: str
    recipient_addr: str
    subject: str
    body: str

    @property
    def recipient(self) -> str:
        return f"{self.recipient_name} <{self.recipient_addr}>" if self.recipient_name else self.recipient_addr


@dataclass
class PreviewResult:
    previews: dict[str, BulkPreview] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def _bulk_template(session: Session, body_template: str | None, kind: str) -> str:
    _check_kind(kind)
    if (body_template is None or not body_template.strip()) and kind in REDIRECT_TEMPLATES:
        body_template = _template_text(session, REDIRECT_TEMPLATES[kind])
    if body_template is None or not body_template.strip():
        raise OutboxError("the bulk reply is empty: write something before sending")
    try:
        names = placeholders(body_template)
    except TemplateError as exc:
        raise OutboxError(f"the template cannot be used: {exc}") from None
    known = template_values(session, Address("", ""))
    unknown = sorted(names - set(known))
    if unknown:
        raise OutboxError(f"unknown placeholder {{{unknown[0]}}} in the bulk reply (known: {', '.join(sorted(known))})")
    return body_template


def preview_bulk(
    session: Session,
    thread_ids: Sequence[str],
    body_template: str | None,
    *,
    kind: str = "reply",
    now: datetime | None = None,
) -> PreviewResult:
    """What :func:`queue_bulk` would send, per thread (recipient, subject, rendered body), and
    why some threads would fail; nothing is queued or changed."""
    template = _bulk_template(session, body_template, kind)
    now = now or datetime.now(UTC)
    out = PreviewResult()
    for tid in thread_ids:
        try:
            target = _target(session, tid, None)
            body = _render(session, template, target.patient)
            composed = _compose(session, target, body, now=now, tag=None)
        except OutboxError as exc:
            out.failed[tid] = str(exc)
            continue
        out.previews[tid] = BulkPreview(
            tid, composed.envelope.recipient_name, composed.envelope.recipient_addr, composed.envelope.subject, body
        )
    return out


def queue_bulk(
    session: Session,
    thread_ids: Sequence[str],
    body_template: str | None,
    *,
    kind: str = "reply",
    now: datetime,
    tag: str | None = None,
) -> BulkResult:
    """Queue one reply per thread, the template filled in for each patient. A template problem
    fails the whole call before anything is queued; a problem with one thread is reported in
    ``failed`` and the others are queued."""
    template = _bulk_template(session, body_template, kind)
    set_to = _tag_for(kind, tag)
    result = BulkResult()
    made: list[tuple[str | None, Envelope, NewMessage]] = []
    for tid in dict.fromkeys(thread_ids):
        try:
            target = _target(session, tid, None)
            composed = _compose(session, target, _render(session, template, target.patient), now=now, tag=set_to)
        except OutboxError as exc:
            result.failed[tid] = str(exc)
            continue
        result.queued[tid] = _enqueue(session, composed, kind, now)
        made.append((tid, composed.envelope, composed.copy))
    if made:
        _apply(session, made, now)
    log.info("outbox: bulk queued %d, failed %d", len(result.queued), len(result.failed))
    return result


# ---------------------------------------------------------------------------------------------
# the physician's decisions


def _need(ob: OutboxStore, entry_id: str) -> OutboxRow:
    row = ob.get(entry_id)
    if row is None:
        raise OutboxError(f"no outbox entry {entry_id}: see `carebox outbox` for the ids")
    return row


def undo(session: Session, outbox_id: str, *, now: datetime | None = None) -> None:
    """Take back a reply that is still queued (the UI's undo window): the entry is discarded,
    its local Sent copy removed and a tag it set given back. Raises :class:`OutboxError` once
    sending has begun."""
    now = now or datetime.now(UTC)
    ob = OutboxStore(session.store)
    row = _need(ob, outbox_id)
    if not ob.transition(outbox_id, "discarded", expect=("queued",), now=now, drop_local_copy=True):
        current = _need(ob, outbox_id).state
        raise OutboxError(f"too late to undo: the reply is already {current}")
    _withdraw(session, row)
    log.info("outbox: undone %s", outbox_id)


def retry(session: Session, outbox_id: str, *, now: datetime | None = None) -> None:
    """The physician's decision to send an uncertain or failed entry again (same message, same
    Message-ID, so a receiving client can tell a duplicate)."""
    now = now or datetime.now(UTC)
    ob = OutboxStore(session.store)
    row = _need(ob, outbox_id)
    if row.state not in ("uncertain", "failed"):
        raise OutboxError(f"entry {outbox_id} is {row.state}: only uncertain or failed entries can be retried")
    if not ob.transition(outbox_id, "queued", expect=("uncertain", "failed"), now=now, next_attempt=None):
        raise OutboxError(f"entry {outbox_id} changed meanwhile: look again with `carebox outbox`")
    full = ob.get(outbox_id, with_raw=True)
    assert full is not None
    _apply(session, [(full.thread_id, full.envelope, _local_copy(full))], now)
    log.info("outbox: retry %s", outbox_id)


def discard(session: Session, outbox_id: str, *, now: datetime | None = None) -> None:
    """Give up an entry that is queued, uncertain or failed. For queued and failed ones (never
    delivered) the local Sent copy and the tag are withdrawn, so the conversation is due again;
    an uncertain one may have been delivered, so its copy stays."""
    now = now or datetime.now(UTC)
    ob = OutboxStore(session.store)
    row = _need(ob, outbox_id)
    if row.state not in ("queued", "uncertain", "failed"):
        raise OutboxError(
            f"entry {outbox_id} is {row.state}: only queued, uncertain or failed entries can be discarded"
        )
    withdraw = row.state in ("queued", "failed")
    if not ob.transition(outbox_id, "discarded", expect=(row.state,), now=now, drop_local_copy=withdraw):
        raise OutboxError(f"entry {outbox_id} changed meanwhile: look again with `carebox outbox`")
    if withdraw:
        _withdraw(session, row)
    log.info("outbox: discarded %s", outbox_id)


# ---------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class OutboxEntry:
    """One entry for display (decrypted). ``error`` is the server's reason for failed and
    uncertain entries, or the last retry reason."""

    id: str
    seq: int
    kind: str
    state: str
    thread_id: str | None
    attempts: int
    created: datetime
    updated: datetime
    next_attempt: datetime | None
    recipient_name: str
    recipient_addr: str
    subject: str
    message_id: str
    error: str | None

    def age(self, now: datetime) -> timedelta:
        return max(now - self.created, timedelta(0))


def _entry(row: OutboxRow) -> OutboxEntry:
    return OutboxEntry(
        id=row.id,
        seq=row.seq,
        kind=row.kind,
        state=row.state,
        thread_id=row.thread_id,
        attempts=row.attempts,
        created=row.created,
        updated=row.updated,
        next_attempt=row.next_attempt,
        recipient_name=row.envelope.recipient_name,
        recipient_addr=row.envelope.recipient_addr,
        subject=row.envelope.subject,
        message_id=row.envelope.message_id,
        error=row.error,
    )


def list_entries(store: Store, states: Sequence[str] | None = ACTIVE_STATES) -> list[OutboxEntry]:
    """Entries in send order; by default those that are not finished (filed or discarded).
    ``states=None`` lists every entry."""
    return [_entry(r) for r in OutboxStore(store).rows(states)]


def outbox_counts(store: Store) -> dict[str, int]:
    """Entries per state (the UI's "N waiting": ``queued`` + ``sending``)."""
    return OutboxStore(store).counts()


def find_entry(store: Store, id_or_prefix: str) -> str:
    """The full id of the entry whose id is or starts with ``id_or_prefix`` (at least 4 chars)."""
    ob = OutboxStore(store)
    text = id_or_prefix.strip().lower()
    if ob.get(text) is not None:
        return text
    if len(text) < 4:
        raise OutboxError("give at least the first 4 characters of the outbox id")
    found = ob.ids_with_prefix(text)
    if not found:
        raise OutboxError(f"no outbox entry starts with {text}: see `carebox outbox` for the ids")
    if len(found) > 1:
        raise OutboxError(f"{len(found)} outbox entries start with {text}: give more characters")
    return found[0]


# ---------------------------------------------------------------------------------------------
# transports and filers


class Transport(Protocol):
    """What :func:`flush` sends with; :class:`~carebox.mail.smtp.SmtpSender` is one."""

    @property
    def is_connected(self) -> bool: ...

    async def open(self) -> SendResult | None: ...

    async def send(self, raw: bytes, mail_from: str, rcpt_to: list[str]) -> SendResult: ...

    async def close(self) -> None: ...


class MboxTransport:
    """Demo mode: every sent message is appended to a local mbox file (mode 0600); no network."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._open = False

    @property
    def is_connected(self) -> bool:
        return self._open

    async def open(self) -> SendResult | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        self._open = True
        return None

    async def send(self, raw: bytes, mail_from: str, rcpt_to: list[str]) -> SendResult:
        if not self._open:
            await self.open()
        box = mailbox.mbox(self.path, create=True)
        try:
            box.lock()
            try:
                box.add(raw)
                box.flush()
            finally:
                box.unlock()
        finally:
            box.close()
        os.chmod(self.path, 0o600)
        return SendResult(Outcome.SENT, "written to the demo outbox file")

    async def close(self) -> None:
        self._open = False


@dataclass(frozen=True)
class FilingItem:
    entry_id: str
    message_id: str  # with angle brackets
    raw: bytes = field(repr=False)
    date: datetime
    answered: tuple[str, int] | None  # (folder, UID) of the patient's message on the server


@dataclass
class FilingResult:
    done: list[str] = field(default_factory=list)  # entry ids filed (copy in Sent, \Answered set)
    problem: str | None = None  # one line when some could not be filed


class Filer(Protocol):
    async def file(self, items: Sequence[FilingItem]) -> FilingResult: ...


class LocalFiler:
    """Demo mode (or no server copy wanted): nothing to do on a server."""

    async def file(self, items: Sequence[FilingItem]) -> FilingResult:
        return FilingResult(done=[it.entry_id for it in items])


class ImapFiler:
    """Files sent messages over one IMAP connection: for each, SEARCH the Sent folder for its
    Message-ID and APPEND it only when absent (so a retry never makes a second copy); then set
    ``\\Answered`` on the patients' messages, one UID STORE per folder."""

    def __init__(self, settings: ImapSettings, sent_folder: str) -> None:
        self.settings = settings
        self.sent_folder = sent_folder

    async def file(self, items: Sequence[FilingItem]) -> FilingResult:
        result = FilingResult()
        if not items:
            return result
        copied: list[FilingItem] = []
        step = f"file the sent replies in {self.sent_folder!r}"
        try:
            async with ImapClient(self.settings) as imap:
                for it in items:
                    if not await imap.search_header(self.sent_folder, "Message-ID", it.message_id):
                        await imap.append(self.sent_folder, it.raw, flags=("\\Seen",), date=it.date)
                    copied.append(it)
                step = "mark the patients' messages answered"
                by_folder: dict[str, list[FilingItem]] = {}
                for it in copied:
                    if it.answered is None:
                        result.done.append(it.entry_id)
                    else:
                        by_folder.setdefault(it.answered[0], []).append(it)
                for folder, group in by_folder.items():
                    try:
                        await imap.select(folder)
                    except ImapProtocolError as exc:  # the folder is gone: nothing left to flag
                        log.info("outbox: cannot flag answered messages (%s)", type(exc).__name__)
                        result.done.extend(it.entry_id for it in group)
                        continue
                    await imap.store_flags(sorted({it.answered[1] for it in group if it.answered}), add=("\\Answered",))
                    result.done.extend(it.entry_id for it in group)
        except ImapError as exc:
            result.problem = f"could not {step}: {exc}; will try again on the next send"
        except (OSError, TimeoutError) as exc:
            result.problem = f"could not {step}: {type(exc).__name__}; will try again on the next send"
        return result


# ---------------------------------------------------------------------------------------------
# flushing


@dataclass
class FlushReport:
    """What one :func:`flush` did. Lists hold outbox ids; ``stopped`` is one line when sending
    stopped early (login, TLS, offline, config); ``filing_problem`` one line when filing failed."""

    sent: list[str] = field(default_factory=list)
    filed: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)  # found "sending": now uncertain
    waiting: int = 0  # queued after this flush
    next_due: datetime | None = None  # when the earliest waiting entry becomes due
    stopped: str | None = None
    filing_problem: str | None = None
    busy: bool = False

    @property
    def ok(self) -> bool:
        return not (self.stopped or self.filing_problem or self.failed or self.uncertain or self.busy)

    def line(self) -> str:
        if self.busy:
            return "another carebox is sending right now; nothing was done, try again in a moment"
        parts = [f"sent {len(self.sent)}", f"filed {len(self.filed)}"]
        if self.waiting:
            parts.append(f"{self.waiting} waiting")
        if self.retrying:
            parts.append(f"{len(self.retrying)} will be retried")
        if self.failed:
            parts.append(f"{len(self.failed)} failed (see `carebox outbox`)")
        n_unc = len(self.uncertain)
        if n_unc:
            parts.append(f"{n_unc} uncertain: check, then `carebox outbox retry ID` or `discard ID`")
        text = ", ".join(parts)
        if self.stopped:
            text += f"; stopped: {self.stopped}"
        if self.filing_problem:
            text += f"; {self.filing_problem}"
        return text


def _default_transport(session: Session) -> Transport:
    if session.demo:
        path = session.extras.get("demo_outbox")
        return MboxTransport(Path(str(path)) if path else session.store_dir.parent / DEMO_OUTBOX_FILE)
    from carebox.services.accounts import smtp_settings

    return SmtpSender(smtp_settings(session.config, session.store))


def _default_filer(session: Session) -> Filer:
    if session.demo:
        return LocalFiler()
    from carebox.services.accounts import imap_settings

    return ImapFiler(imap_settings(session.config, session.store), _sent_folder(session))


def _config_problem(exc: Exception) -> str | None:
    from carebox.services.accounts import AccountProblem
    from carebox.store.keys import KeyProblem

    if isinstance(exc, AccountProblem | KeyProblem):
        return str(exc)
    return None


async def flush(
    session: Session,
    *,
    transport: Transport | None = None,
    filer: Filer | None = None,
    now: datetime | None = None,
    hold: timedelta = timedelta(0),
) -> FlushReport:
    """Send what is due and file what was sent (see the module doc). A ``transport`` or
    ``filer`` given by the caller is used as is and left open; the ones made here (from the
    config and the stored password, or the demo ones) are closed at the end.

    ``hold`` keeps entries younger than that (the UI's undo window) in the queue; they and
    anything in backoff make ``report.next_due``, the time to flush again."""
    now = now or datetime.now(UTC)
    report = FlushReport()
    ob = OutboxStore(session.store)
    with ob.flush_lock() as got:
        if not got:
            report.busy = True
            return report
        for row in ob.rows(("sending",)):
            if ob.transition(
                row.id,
                "uncertain",
                expect=("sending",),
                now=now,
                error="carebox stopped while sending this reply: it may or may not have been delivered; "
                "check the Sent folder or ask the patient before sending again",
            ):
                report.recovered.append(row.id)
                report.uncertain.append(row.id)
        await _send_due(session, ob, report, transport, now, hold)
        await _file_sent(session, ob, report, filer, now)
        waiting = ob.rows(("queued",))
        report.waiting = len(waiting)
        report.next_due = min((_due_at(r, hold) for r in waiting), default=None)
    log.info(
        "outbox: flush sent=%d filed=%d retry=%d failed=%d uncertain=%d waiting=%d%s",
        len(report.sent),
        len(report.filed),
        len(report.retrying),
        len(report.failed),
        len(report.uncertain),
        report.waiting,
        " (stopped)" if report.stopped else "",
    )
    return report


def _due_at(row: OutboxRow, hold: timedelta) -> datetime:
    held = row.created + hold
    return max(held, row.next_attempt) if row.next_attempt is not None else held


async def _send_due(
    session: Session,
    ob: OutboxStore,
    report: FlushReport,
    transport: Transport | None,
    now: datetime,
    hold: timedelta,
) -> None:
    queued = ob.rows(("queued",))
    if not queued:
        return
    own = transport is None
    if transport is None:
        try:
            transport = _default_transport(session)
        except Exception as exc:
            problem = _config_problem(exc)
            if problem is None:
                raise
            report.stopped = problem
            return
    blocked: set[str] = set()  # conversations with an earlier reply still waiting
    try:
        for row in queued:
            key = row.thread_id or row.id
            if key in blocked:
                continue
            if _due_at(row, hold) > now:  # in backoff, or still inside the undo window
                blocked.add(key)
                continue
            if not transport.is_connected:
                failure = await transport.open()
                if failure is not None:
                    report.stopped = _stop_line(failure)
                    return
            if not ob.transition(row.id, "sending", expect=("queued",), now=now):
                continue  # taken or changed meanwhile
            full = ob.get(row.id, with_raw=True)
            assert full is not None
            result = await transport.send(full.raw, full.envelope.mail_from, list(full.envelope.rcpt_to))
            outcome = result.outcome
            if outcome is Outcome.SENT:
                ob.transition(row.id, "sent", expect=("sending",), now=now, error=None, next_attempt=None)
                report.sent.append(row.id)
            elif outcome is Outcome.RETRY:
                attempts = row.attempts + 1
                ob.transition(
                    row.id,
                    "queued",
                    expect=("sending",),
                    now=now,
                    attempts=attempts,
                    next_attempt=now + backoff(attempts),
                    error=result.detail,
                )
                report.retrying.append(row.id)
                blocked.add(key)
            elif outcome is Outcome.REJECTED:
                ob.transition(row.id, "failed", expect=("sending",), now=now, error=result.detail, drop_local_copy=True)
                _withdraw(session, full)
                report.failed.append(row.id)
            elif outcome is Outcome.UNCERTAIN:
                ob.transition(row.id, "uncertain", expect=("sending",), now=now, error=result.detail)
                report.uncertain.append(row.id)
            else:  # AUTH_FAILED, TLS_ERROR: a configuration problem, nothing was sent
                ob.transition(row.id, "queued", expect=("sending",), now=now)
                report.stopped = _stop_line(result)
                return
    finally:
        if own:
            with contextlib.suppress(Exception):
                await transport.close()


def _stop_line(result: SendResult) -> str:
    if result.outcome is Outcome.RETRY:
        return f"cannot reach the mail server now ({result.detail}); the replies wait in the outbox"
    return result.detail


async def _file_sent(
    session: Session, ob: OutboxStore, report: FlushReport, filer: Filer | None, now: datetime
) -> None:
    rows = ob.rows(("sent",), with_raw=True)
    if not rows:
        return
    if filer is None:
        try:
            filer = _default_filer(session)
        except Exception as exc:
            problem = _config_problem(exc)
            if problem is None:
                raise
            report.filing_problem = f"cannot file the sent replies: {problem}"
            return
    store = session.store
    items: list[FilingItem] = []
    for row in rows:
        answered: tuple[str, int] | None = None
        if row.reply_to_message:
            original = store.message(row.reply_to_message)
            if original is not None and original.uid is not None and not original.deleted_on_server:
                answered = (original.folder, original.uid)
        items.append(FilingItem(row.id, row.envelope.message_id, row.raw, row.created, answered))
    result = await filer.file(items)
    by_id = {row.id: row for row in rows}
    done = [i for i in result.done if i in by_id]
    answered_ids = [by_id[i].reply_to_message for i in done if by_id[i].reply_to_message]
    if answered_ids:
        store.set_flags(answered_ids, add=("\\Answered",), journal=False)
    for entry_id in done:
        if ob.transition(entry_id, "filed", expect=("sent",), now=now):
            report.filed.append(entry_id)
    report.filing_problem = result.problem
