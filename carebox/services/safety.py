"""Clinical safety use cases: the thread inspector (urgency, sender status, scope suggestion and
response-window category for every thread row), the explanation shown in the thread view, the
patient directory (CSV import, edits) and the audit trail.

Wiring: every path that threads new mail passes ``safety_inspector(store, config, now)`` to
``rethread`` / ``import_items`` / ``refresh_threads``. Build a new inspector after the
directory changes (it reads the directory once).
"""

from __future__ import annotations

import csv
import logging
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from carebox.config import Config
from carebox.domain.deadlines import Policy
from carebox.domain.models import MessageRef
from carebox.domain.safety import (
    DirectoryPatient,
    PatientDirectory,
    RedFlagHit,
    ReplyTarget,
    SenderStatus,
    urgent_banner,
)
from carebox.domain.sanitize import clean_line
from carebox.domain.senders import BADGES, badge  # noqa: F401 - re-exported
from carebox.services.safety_checks import (
    VISIT_WINDOW_DAYS,  # noqa: F401 (re-exported)
    CheckMessage,
    Evaluation,
    SafetyChecks,
    SafetySettings,
    evaluate_window,
)
from carebox.services.threads import recompute_all, refresh_threads
from carebox.store import audit as audit_store
from carebox.store import patients as patient_store
from carebox.store.store import Store, StoredMessage

_log = logging.getLogger(__name__)

PREFETCH_MESSAGES = 400  # messages read per query once the order of threads is known (prefetch)
PARALLEL_MIN = 200  # threads to inspect in one refresh before a worker process shares the work
IN_FLIGHT = 2  # windows handed to the worker processes at a time (one evaluated, one waiting)
EARLY_SETTLE = 2  # batches without a new message before a thread is inspected early (EarlyInspection)
EARLY_HOLD = 5000  # messages held in memory for threads not yet inspected early
EARLY_IN_FLIGHT = 2  # early windows handed to the worker at a time during a download

# --- what the UI shows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ThreadSafety:
    """Everything the thread view shows about safety. Holds patient data: display, never store."""

    thread_id: str
    status: SenderStatus | None  # None: no incoming message
    badge: tuple[str, str]
    sender_lines: tuple[str, ...]  # the explanation of the badge, one line each
    urgent: bool
    banner: str  # the URGENT banner text ("" when not urgent)
    red_flags: tuple[RedFlagHit, ...]
    suggested_tag: str | None  # "redirect:phone", an out-of-scope category id, or None
    suggested_template: str | None  # phone, consent, professional_address, or None
    suggestion: str  # one line explaining the suggestion ("" when none)
    category: str | None  # response-window category ("results") when detected
    reply: ReplyTarget | None  # where a reply goes, and the confirmation rule
    patient: DirectoryPatient | None = None


def _pending(refs: Sequence[MessageRef]) -> tuple[list[MessageRef], list[MessageRef]]:
    """(patient messages after the practice's last message, all patient messages), oldest first."""
    ordered = sorted(refs, key=lambda r: (r.date, r.outgoing, r.key))
    last_out = max((i for i, r in enumerate(ordered) if r.outgoing), default=-1)
    incoming = [r for r in ordered if not r.outgoing]
    return [r for r in ordered[last_out + 1 :] if not r.outgoing], incoming


class SafetyInspector:
    """A ``ThreadInspector`` for services.threads: returns ``urgent``, ``sender_status``,
    ``suggested_tag`` and, when a lab-result question is detected, ``category`` (so the
    per-category response window applies)."""

    def __init__(
        self,
        directory: PatientDirectory,
        settings: SafetySettings,
        now: datetime | None = None,
    ) -> None:
        self.directory = directory
        self.settings = settings
        self.now = now or datetime.now(UTC)
        self.checks = SafetyChecks(directory, settings, self.now)
        self.matcher = self.checks.matcher
        self.senders = self.checks.senders
        # Thread answers by the messages they were computed from: messages never change once
        # stored, and the directory, settings and clock are fixed for this inspector, so a thread
        # seen again with the same messages (a flag change, a second threading pass) gets the same
        # answer without decrypting or scanning anything.
        self._answers: dict[tuple[tuple[str, ...], bool], dict[str, Any]] = {}
        # What prefetch() announced, in inspection order, and messages read ahead of their turn.
        self._plan: list[tuple[tuple[str, ...], bool]] = []
        self._plan_at: dict[tuple[tuple[str, ...], bool], int] = {}
        self._ahead: dict[str, StoredMessage] = {}
        # Answers being computed during a download (EarlyInspection), taken in before a refresh
        # plans; the keys of the windows a worker is still computing then (taken in when needed).
        self.early: EarlyInspection | None = None
        self._running: set[tuple[tuple[str, ...], bool]] = set()
        # Optional: worker processes (a sync's parse pool) that share a big refresh. They run this
        # same evaluate() on the same messages with an inspector built from the same directory,
        # settings and clock, so every answer is the one this process would have computed.
        self.executor: Executor | None = None
        self._patients: list[DirectoryPatient] | None = None  # directory order, for the workers
        self._state: tuple[str, bytes] | None = None

    @classmethod
    def load(cls, store: Store, settings: SafetySettings, now: datetime | None = None) -> SafetyInspector:
        patients = patient_store.all_patients(store)
        inspector = cls(PatientDirectory(patients), settings, now)
        inspector._patients = list(patients)
        return inspector

    @staticmethod
    def _key(refs: Sequence[MessageRef]) -> tuple[tuple[str, ...], bool] | None:
        """(the messages the checks read, whether the thread waits for an answer); None when the
        thread has no patient message."""
        pending, incoming = _pending(refs)
        if not incoming:
            return None
        look = pending or incoming[-1:]
        return tuple(r.key for r in look), bool(pending)

    def prefetch(self, store: Store, by_thread: Mapping[str, Sequence[MessageRef]]) -> None:
        """Optional: the threads about to be inspected, in the order they will be. Their
        messages are then read ahead in windows of ``PREFETCH_MESSAGES`` (a few queries instead of
        one per thread, and never more than a window in memory). Without this call each thread
        is read on its own, with the same results."""
        self._ahead.clear()
        self._plan = []
        if self.early is not None:
            # the windows a worker is computing are not waited for here: the planned threads are
            # inspected meanwhile, and __call__ takes those answers in when it reaches one
            self._running = self.early.settle(wait=False)
        running = self._running
        for refs in by_thread.values():
            key = self._key(refs)
            if key is not None and key not in self._answers and key not in running:
                self._plan.append(key)
        self._plan_at = {key: i for i, key in enumerate(self._plan)}
        if self.executor is not None and len(self._plan) >= PARALLEL_MIN:
            self._evaluate_ahead(store, self.executor)

    def _windows(self, keys: Sequence[tuple[tuple[str, ...], bool]]) -> list[list[tuple[tuple[str, ...], bool]]]:
        out: list[list[tuple[tuple[str, ...], bool]]] = []
        count = PREFETCH_MESSAGES
        for k in keys:
            if count >= PREFETCH_MESSAGES:
                out.append([])
                count = 0
            out[-1].append(k)
            count += len(k[0])
        return out

    @staticmethod
    def _load_window(
        store: Store, window: Sequence[tuple[tuple[str, ...], bool]]
    ) -> list[tuple[tuple[tuple[str, ...], bool], list[StoredMessage]]]:
        loaded: dict[str, StoredMessage] = {}
        for with_bodies in (True, False):
            wanted = [i for k in window if k[1] == with_bodies for i in k[0]]
            if wanted:
                loaded.update(patient_store.load_messages(store, wanted, bodies=with_bodies))
        return [(k, [loaded[i] for i in k[0] if i in loaded]) for k in window]

    def _keep(self, key: tuple[tuple[str, ...], bool], n_msgs: int, out: dict[str, Any]) -> None:
        if n_msgs == len(key[0]) and len(self._answers) < 200_000:
            self._answers[key] = out

    def directory_changed(self, store: Store) -> bool:
        """Whether the patient directory in the store differs from the one this inspector read."""
        return self._patients is None or patient_store.all_patients(store) != self._patients

    def warm(self, executor: Executor) -> None:
        """Let the worker processes build these checks now (while a download runs), not when the
        first shared window reaches them."""
        from carebox.services.safety_checks import warm_worker

        self.executor = executor
        try:
            executor.submit(warm_worker, *self._worker_state()).add_done_callback(lambda f: f.exception())
        except Exception:  # a pool shut down or broken: the refresh falls back by itself
            return

    def _worker_state(self) -> tuple[str, bytes]:
        if self._state is None:
            import pickle
            import secrets

            patients = self._patients if self._patients is not None else list(self.directory.patients.values())
            self._state = (secrets.token_hex(8), pickle.dumps((patients, self.settings, self.now)))
        return self._state

    def _evaluate_ahead(self, store: Store, executor: Executor) -> None:
        """Answer every planned thread now, windows shared between this thread (from the end of
        the plan) and the worker processes (from its start, ``IN_FLIGHT`` windows at a time).
        A window a worker fails on is evaluated here. Same answers as one by one."""
        windows = self._windows(self._plan)
        state_id, state = self._worker_state()
        front, back = 0, len(windows)
        flight: list[tuple[Any, list[tuple[tuple[tuple[str, ...], bool], list[StoredMessage]]]]] = []

        def collect(block: bool) -> None:
            nonlocal flight
            while flight and (block or flight[0][0].done()):
                fut, items = flight.pop(0)
                block = False
                try:
                    answers = fut.result()
                except Exception:  # a broken or stopped pool: this process answers that window
                    answers = [self.checks.answer(msgs, key[1]) for key, msgs in items]
                for (key, msgs), out in zip(items, answers, strict=True):
                    self._keep(key, len(msgs), out)

        while front < back or flight:
            while len(flight) < IN_FLIGHT and front < back:
                items = self._load_window(store, windows[front])
                front += 1
                try:
                    packed = [(k[1], [CheckMessage.of(x) for x in m]) for k, m in items]
                    fut = executor.submit(evaluate_window, state_id, state, packed)
                except Exception:  # the pool is shut down or broken
                    for key, msgs in items:
                        self._keep(key, len(msgs), self.checks.answer(msgs, key[1]))
                    continue
                flight.append((fut, items))
            if front < back:
                back -= 1
                for key, msgs in self._load_window(store, windows[back]):
                    self._keep(key, len(msgs), self.checks.answer(msgs, key[1]))
                collect(block=False)
            else:
                # nothing left to take: windows still queued for a (busy) worker are answered
                # here rather than waited for; then the one it is working on is awaited
                waiting = [f for f in flight if f[0].cancel()]
                flight = [f for f in flight if f not in waiting]
                for _, items in waiting:
                    for key, msgs in items:
                        self._keep(key, len(msgs), self.checks.answer(msgs, key[1]))
                collect(block=True)

    def _messages(self, store: Store, key: tuple[tuple[str, ...], bool]) -> list[StoredMessage]:
        ids, bodies = key
        if any(i not in self._ahead for i in ids):
            at = self._plan_at.get(key)
            if at is None:  # not announced: this thread alone
                loaded = patient_store.load_messages(store, ids, bodies=bodies)
                return [loaded[i] for i in ids if i in loaded]
            self._ahead.clear()
            window: dict[bool, list[str]] = {True: [], False: []}
            count = 0
            for k in self._plan[at:]:
                if count >= PREFETCH_MESSAGES:
                    break
                window[k[1]] += k[0]
                count += len(k[0])
            for with_bodies, wanted in window.items():
                if wanted:
                    self._ahead.update(patient_store.load_messages(store, wanted, bodies=with_bodies))
        return [m for m in (self._ahead.pop(i, None) for i in ids) if m is not None]

    # ThreadInspector
    def __call__(self, store: Store, thread_id: str, refs: Sequence[MessageRef], row: dict[str, Any]) -> dict[str, Any]:
        key = self._key(refs)
        if key is None:
            return {"urgent": False, "sender_status": "", "suggested_tag": None}
        pending = key[1]
        out = self._answers.get(key)
        if out is None and key in self._running:
            self._running = set()
            if self.early is not None:
                self.early.wait()  # its window was being computed early: take the answers in
            out = self._answers.get(key)
        if out is None:
            msgs = self._messages(store, key)  # an answered thread: its latest sender only, no bodies
            out = self.checks.answer(msgs, pending)
            self._keep(key, len(msgs), out)
        return dict(out)

    def evaluate(self, msgs: Sequence[StoredMessage], *, pending: bool) -> Evaluation:
        """Checks over the messages still waiting for an answer (``pending``), or over the latest
        patient message of an answered thread (sender status only): see SafetyChecks."""
        return self.checks.evaluate(msgs, pending=pending)

    def assess(self, store: Store, thread_id: str) -> ThreadSafety:
        """The full explanation for the thread view."""
        refs = store.refs_of_threads([thread_id])
        pending, incoming = _pending(refs)
        look = pending or incoming[-1:]
        loaded = patient_store.load_messages(store, [r.key for r in look], bodies=bool(pending))
        ev = self.evaluate([loaded[r.key] for r in look if r.key in loaded], pending=bool(pending))
        lines: list[str] = []
        if ev.checks:
            lines = ev.checks[-1].lines()
            for c in ev.checks[:-1]:  # warnings from earlier unanswered messages too
                lines += [w.text for w in c.warnings if w.text not in lines]
        if ev.reply is not None and ev.reply.needs_confirmation:
            if ev.reply.verified:
                lines.append(
                    f"Replies go to the verified address {ev.reply.address}; sending to {ev.reply.requested} "
                    "needs a confirmation."
                )
            elif ev.reply.address:
                lines.append(f"{ev.reply.address} is not a verified address: sending a reply needs a confirmation.")
        status = ev.status
        return ThreadSafety(
            thread_id=thread_id,
            status=status,
            badge=badge(status.value if status else ""),
            sender_lines=tuple(clean_line(x) for x in lines),
            urgent=bool(ev.hits),
            banner=urgent_banner(ev.hits),
            red_flags=ev.hits,
            suggested_tag=ev.suggested_tag,
            suggested_template=ev.template,
            suggestion=ev.reason,
            category=ev.category,
            reply=ev.reply,
            patient=ev.patient,
        )


class EarlyInspection:
    """The inspector's answers for the threads of a download, computed by the worker processes
    while the download goes on, instead of all after it.

    After each committed batch, ``add`` gets its messages with their provisional thread ids
    (``threads.ProvisionalThreads``) and what the checks read of them (the parsed message, still
    in memory: nothing is read back or decrypted). A thread that got no new message for
    ``settle`` batches is sent to a worker as the inspector would see it (``SafetyInspector._key``
    of its messages: the ones waiting for an answer, or the latest patient message), and the
    answer is kept under that key. Threading later asks the inspector about the final threads:
    where a thread ended up with exactly those messages, the answer is taken (the same function
    of the same messages, directory, settings and clock), otherwise it is computed then as
    before, so a wrong guess costs time, never a different answer. ``finish`` sends the threads
    still held when every folder is downloaded; ``settle`` (at the start of the refresh) takes in
    what arrived and withdraws what no worker has started; the windows being computed are waited
    for then, or (``wait=False``) when one of their answers is needed (``wait``).

    A thread that gets a message after it was sent is not sent again (its earlier messages are no
    longer held). At most ``hold`` messages are held; beyond that the longest-quiet threads are
    left to threading."""

    def __init__(
        self, inspector: SafetyInspector, executor: Executor, *, settle: int | None = None, hold: int | None = None
    ) -> None:
        from collections import OrderedDict

        self.inspector = inspector
        self.executor: Executor | None = executor
        self.settle_batches = EARLY_SETTLE if settle is None else settle
        self.hold = EARLY_HOLD if hold is None else hold
        self._threads: dict[str, list[tuple[MessageRef, CheckMessage]]] = {}
        self._last: OrderedDict[str, int] = OrderedDict()  # thread -> batch of its last message, quietest first
        self._sent: set[str] = set()  # threads sent (or given up on): not sent again
        self._held = 0
        self._batch = 0
        self._flight: list[tuple[Any, list[tuple[tuple[str, ...], bool]]]] = []
        # windows made but not handed over yet (a few at a time: EARLY_IN_FLIGHT)
        self._backlog: deque[tuple[list[tuple[tuple[str, ...], bool]], list[Any], int]] = deque()
        self._backlog_msgs = 0
        self.sent = 0  # threads sent to a worker
        self.answered = 0  # answers taken in
        from carebox.services.safety_checks import warm_worker

        try:  # the worker builds its checks now, not when the first window reaches it
            executor.submit(warm_worker, *inspector._worker_state()).add_done_callback(lambda f: f.exception())
        except Exception:
            self.executor = None

    def add(self, messages: Iterable[tuple[str, str, datetime | None, bool, Any]]) -> None:
        """One committed batch: (message id, provisional thread id, date as stored, outgoing,
        the parsed message) each."""
        self._batch += 1
        for mid, tid, when, outgoing, m in messages:
            if tid in self._sent:
                continue
            if when is None:  # a date that does not read back as stored: leave the thread to threading
                self._held -= len(self._threads.pop(tid, ()))
                self._last.pop(tid, None)
                self._sent.add(tid)
                continue
            ref = MessageRef(mid, "", (), "", "", when, outgoing)
            self._threads.setdefault(tid, []).append((ref, CheckMessage.of(m)))
            self._last[tid] = self._batch
            self._last.move_to_end(tid)
            self._held += 1
        quiet = []
        for tid, last in self._last.items():
            if last > self._batch - self.settle_batches:
                break
            quiet.append(tid)
        self._send(quiet)
        while self._held > self.hold and self._last:
            tid, _ = self._last.popitem(last=False)
            self._held -= len(self._threads.pop(tid, ()))
            self._sent.add(tid)
        while self._backlog_msgs > self.hold and self._backlog:  # the workers fall behind: threading does those
            self._backlog_msgs -= self._backlog.popleft()[2]
        self._take(block=False)
        self._pump(EARLY_IN_FLIGHT)

    def finish(self) -> None:
        """Every folder is downloaded: hand the worker every window, and the threads still held."""
        self._send(list(self._last))
        self._pump(len(self._flight) + len(self._backlog))

    def settle(self, *, wait: bool = True) -> set[tuple[tuple[str, ...], bool]]:
        """Take in the answers that arrived, withdraw the windows no worker has started (threading
        computes those itself, shared with the workers), and wait for the ones being computed, or
        with ``wait=False`` leave them running (``wait`` takes them in). Returns the keys of the
        windows still running."""
        for fut, _keys in self._flight:
            fut.cancel()
        self._take(block=wait)
        self.executor = None
        self._backlog.clear()
        self._backlog_msgs = 0
        return {key for _fut, window in self._flight for key in window}

    def wait(self) -> None:
        """Take in the answers of the windows still being computed, waiting for them."""
        self._take(block=True)

    def _send(self, tids: Sequence[str]) -> None:
        if not tids:
            return
        inspector = self.inspector
        window: list[tuple[tuple[str, ...], bool]] = []
        packed: list[tuple[bool, list[CheckMessage]]] = []
        count = 0
        for tid in tids:
            entries = self._threads.pop(tid, [])
            self._last.pop(tid, None)
            self._sent.add(tid)
            self._held -= len(entries)
            key = inspector._key([ref for ref, _ in entries])
            if key is None or key in inspector._answers or self.executor is None:
                continue
            by_id = {ref.key: m for ref, m in entries}
            msgs = [by_id[i] for i in key[0]]
            if not key[1]:  # an answered thread: the sender checks only, as threading reads it (no subject, body)
                msgs = [CheckMessage(m.sender, m.to, m.cc, m.reply_to, m.auth_results, "", "") for m in msgs]
            window.append(key)
            packed.append((key[1], msgs))
            count += len(msgs)
            if count >= PREFETCH_MESSAGES:
                self._backlog.append((window, packed, count))
                self._backlog_msgs += count
                window, packed, count = [], [], 0
        if window:
            self._backlog.append((window, packed, count))
            self._backlog_msgs += count

    def _pump(self, limit: int) -> None:
        from carebox.services.safety_checks import evaluate_window

        while self._backlog and len(self._flight) < limit and self.executor is not None:
            window, packed, count = self._backlog.popleft()
            self._backlog_msgs -= count
            state_id, state = self.inspector._worker_state()
            try:
                fut = self.executor.submit(evaluate_window, state_id, state, packed)
            except Exception:  # the pool is shut down or broken: threading answers these itself
                self.executor = None
                break
            self.sent += len(window)
            self._flight.append((fut, window))

    def _take(self, *, block: bool) -> None:
        keep: list[tuple[Any, list[tuple[tuple[str, ...], bool]]]] = []
        for fut, window in self._flight:
            if fut.cancelled() or not (block or fut.done()):
                if not fut.cancelled():
                    keep.append((fut, window))
                continue
            try:
                answers = fut.result()
            except Exception as exc:  # a broken or stopped pool: threading answers these itself
                _log.info("an early inspection window failed (%s): threading answers it", type(exc).__name__)
                continue
            for key, out in zip(window, answers, strict=True):
                self.inspector._keep(key, len(key[0]), out)
                self.answered += 1
        self._flight = keep


def safety_inspector(store: Store, config: Config | None = None, now: datetime | None = None) -> SafetyInspector:
    """The inspector to pass to rethread / import_items / refresh_threads."""
    return SafetyInspector.load(store, SafetySettings.from_config(config, store.professional), now)


def thread_safety(
    store: Store, thread_id: str, config: Config | None = None, now: datetime | None = None
) -> ThreadSafety:
    """Badge, explanation, URGENT banner, suggestion and reply rule for one thread (thread view)."""
    return safety_inspector(store, config, now).assess(store, thread_id)


def refresh_safety(
    store: Store,
    policy: Policy,
    config: Config | None = None,
    now: datetime | None = None,
    thread_ids: Iterable[str] | None = None,
) -> int:
    """Recompute the safety columns (and deadlines) of the given threads, or of all threads.
    Needed after the directory changed. Returns the number of threads refreshed."""
    inspector = safety_inspector(store, config, now)
    if thread_ids is None:
        return recompute_all(store, policy, [inspector])
    ids = list(thread_ids)
    for i in range(0, len(ids), 2000):
        refresh_threads(store, policy, thread_ids=ids[i : i + 2000], inspectors=[inspector])
    return len(ids)


# --- patient directory ----------------------------------------------------------------------------

CSV_COLUMNS = ("name", "emails", "phone", "consent_date", "last_visit", "next_visit")
_ALIASES = {"email": "emails", "e-mail": "emails", "consent": "consent_date", "email_consent": "consent_date"}
_EMAIL = re.compile(r"[^@\s<>,;\"()\[\]\\]+@[^@\s<>,;\"()\[\]\\]+\.[^@\s<>,;\"()\[\]\\.]+")
_PHONE = re.compile(r"[0-9+()\-./ x]{3,40}", re.IGNORECASE)
_DMY = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")


class PatientsCsvError(Exception):
    """The whole file cannot be used (missing, not UTF-8, no usable header): one line."""


class PatientError(ValueError):
    """An invalid patient record (one line, naming the field, never its value)."""


@dataclass
class PatientImportReport:
    added: int = 0
    updated: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line number, what is wrong)

    def lines(self) -> list[str]:
        head = f"patients: {self.added} added, {self.updated} updated, {len(self.problems)} rows skipped"
        return [head, *(f"line {n}: {msg}" for n, msg in self.problems)]


def _parse_date(value: str, column: str) -> date | None:
    value = value.strip()
    if not value:
        return None
    try:
        m = _DMY.fullmatch(value)
        if m:
            return date(int(m[3]), int(m[2]), int(m[1]))
        return date.fromisoformat(value)
    except ValueError:
        raise PatientError(f"{column}: expected a date like 2026-03-31 (or 31.03.2026)") from None


def make_patient(
    name: str,
    emails: str | Sequence[str],
    phone: str = "",
    consent_date: str | date | None = None,
    last_visit: str | date | None = None,
    next_visit: str | date | None = None,
    patient_id: str = "",
    *,
    separators: str = ";",
) -> DirectoryPatient:
    """A validated record (CSV row or UI form). Raises ``PatientError`` naming the bad field.
    ``emails`` as one string holds several addresses separated by any of ``separators``."""
    clean_name = clean_line(name or "", 200)
    if not clean_name:
        raise PatientError("name: missing")
    parts = re.split(f"[{re.escape(separators)}]", emails) if isinstance(emails, str) else list(emails)
    addrs: list[str] = []
    for i, raw in enumerate(parts, 1):
        addr = raw.strip().lower()
        if not addr:
            continue
        if not _EMAIL.fullmatch(addr):
            hint = " or ".join(f"'{c}'" for c in separators)
            raise PatientError(f"emails: address {i} is not an email address (separate several with {hint})")
        addrs.append(addr)
    if not addrs:
        raise PatientError("emails: at least one address is needed")
    phone = (phone or "").strip()
    if phone and not _PHONE.fullmatch(phone):
        raise PatientError("phone: use digits, spaces and + ( ) - / . only")

    def d(value: str | date | None, column: str) -> date | None:
        return value if isinstance(value, date) or value is None else _parse_date(value, column)

    return DirectoryPatient(
        id=patient_id,
        name=clean_name,
        emails=tuple(dict.fromkeys(addrs)),
        phone=phone,
        consent_date=d(consent_date, "consent_date"),
        last_visit=d(last_visit, "last_visit"),
        next_visit=d(next_visit, "next_visit"),
    )


def _read_rows(path: Path) -> tuple[list[tuple[int, dict[str, str]]], list[tuple[int, str]]]:
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise PatientsCsvError(f"{path} does not exist: check the path") from None
    except OSError as exc:
        raise PatientsCsvError(f"cannot read {path}: {exc.strerror or exc.__class__.__name__}") from None
    rows: list[tuple[int, dict[str, str]]] = []
    problems: list[tuple[int, str]] = []
    with handle:
        try:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise PatientsCsvError(f"{path} is empty: the first line must name the columns {','.join(CSV_COLUMNS)}")
            cols = [_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
            missing = [c for c in ("name", "emails") if c not in cols]
            if missing:
                hint = (
                    " (the file seems to use ';' between columns: use ',')" if len(cols) == 1 and ";" in cols[0] else ""
                )
                raise PatientsCsvError(
                    f"{path}: the header line lacks the column(s) {', '.join(missing)}; "
                    f"expected {','.join(CSV_COLUMNS)}{hint}"
                )
            start = reader.line_num + 1
            while True:
                try:
                    values = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    problems.append((start, f"unreadable CSV ({exc}); rows after it were not read"))
                    break
                line, start = start, reader.line_num + 1
                if not any(v.strip() for v in values):
                    continue
                if len(values) > len(cols):
                    problems.append(
                        (line, f"{len(values)} fields but the header names {len(cols)}: quote fields with commas")
                    )
                    continue
                rows.append((line, {c: v for c, v in zip(cols, values, strict=False)}))
        except UnicodeDecodeError:
            raise PatientsCsvError(f"{path} is not UTF-8 text: save it as 'CSV UTF-8'") from None
    return rows, problems


def import_patients_csv(
    store: Store,
    path: Path,
    *,
    policy: Policy | None = None,
    config: Config | None = None,
    now: datetime | None = None,
) -> PatientImportReport:
    """Load a CSV (columns name,emails,phone,consent_date,last_visit,next_visit; several emails
    separated by ';'). A row whose address is already on file updates that patient (importing
    the same file twice changes nothing). Bad rows are reported by line number; good rows load.
    With ``policy`` every thread's safety columns are recomputed afterwards."""
    rows, problems = _read_rows(path)
    report = PatientImportReport(problems=problems)
    tokens = {}
    for _, values in rows:
        for e in (values.get("emails") or "").split(";"):
            if e.strip():
                tokens[e.strip().lower()] = store.token("addr", e.strip().lower())
    on_file = patient_store.patient_ids_for_tokens(store, tokens.values())
    seen: dict[str, int] = {}  # address -> line of the row that claimed it
    good: list[DirectoryPatient] = []
    for line, values in rows:
        try:
            p = make_patient(
                values.get("name", ""),
                values.get("emails", ""),
                values.get("phone", ""),
                values.get("consent_date", ""),
                values.get("last_visit", ""),
                values.get("next_visit", ""),
            )
        except PatientError as exc:
            report.problems.append((line, str(exc)))
            continue
        clash = next((i for i, e in enumerate(p.emails, 1) if e in seen), None)
        if clash is not None:
            report.problems.append(
                (
                    line,
                    f"emails: address {clash} is also on line {seen[p.emails[clash - 1]]}; "
                    "an address belongs to one patient",
                )
            )
            continue
        owners = {on_file[tokens[e]] for e in p.emails if tokens.get(e) in on_file}
        if len(owners) > 1:
            report.problems.append((line, "emails: the addresses belong to different patients already on file"))
            continue
        for e in p.emails:
            seen[e] = line
        if owners:
            p = DirectoryPatient(owners.pop(), p.name, p.emails, p.phone, p.consent_date, p.last_visit, p.next_visit)
            report.updated += 1
        else:
            report.added += 1
        good.append(p)
    if good:
        patient_store.save_patients(store, good)
    report.problems.sort()
    record(store, "patients_import", f"added={report.added},updated={report.updated}", now)
    if policy is not None:
        refresh_safety(store, policy, config, now)
    return report


@dataclass(frozen=True)
class PatientChange:
    """What a directory edit from the UI did: the patient as saved (None after a delete) and the
    conversations whose sender badge, suggestion and deadline were recomputed."""

    patient: DirectoryPatient | None
    added: bool
    thread_ids: tuple[str, ...]


def _refresh_addresses(
    store: Store, policy: Policy, config: Config | None, now: datetime | None, addrs: Iterable[str]
) -> tuple[str, ...]:
    ids = patient_store.thread_ids_for_addresses(store, addrs)
    if ids:
        refresh_safety(store, policy, config, now, ids)
    return tuple(ids)


def patient_from_form(
    name: str,
    emails: str,
    phone: str = "",
    consent_date: str = "",
    last_visit: str = "",
    next_visit: str = "",
    patient_id: str = "",
) -> DirectoryPatient:
    """``make_patient`` for the UI's form, where several addresses are separated by commas (or ';')."""
    return make_patient(
        name, emails, phone, consent_date, last_visit, next_visit, patient_id=patient_id, separators=",;"
    )


def apply_patient(
    store: Store,
    patient: DirectoryPatient,
    *,
    policy: Policy,
    config: Config | None = None,
    now: datetime | None = None,
) -> PatientChange:
    """Add (no id) or edit one patient, record it in the audit trail (its opaque id only), and
    recompute the safety columns of every thread of its old and new addresses, so the inbox
    badge follows at once (a consent date added turns "no consent" into "verified"). Raises
    ``PatientError`` when an address is on file for another patient (nothing is written)."""
    before = patient_store.get_patient(store, patient.id) if patient.id else None
    try:
        saved = patient_store.save_patient(store, patient)
    except patient_store.PatientConflict:
        raise PatientError("emails: an address is already on file for another patient") from None
    record(store, "patient_edit" if before is not None else "patient_add", saved.id, now)
    addrs = set(saved.emails) | set(before.emails if before else ())
    return PatientChange(saved, before is None, _refresh_addresses(store, policy, config, now, addrs))


def remove_patient(
    store: Store,
    patient_id: str,
    *,
    policy: Policy,
    config: Config | None = None,
    now: datetime | None = None,
) -> PatientChange | None:
    """Delete one patient (audit: its opaque id) and recompute its threads' safety columns
    (their badge becomes "unknown"). None when the patient is not on file."""
    before = patient_store.get_patient(store, patient_id)
    if before is None:
        return None
    patient_store.delete_patient(store, patient_id)
    record(store, "patient_delete", patient_id, now)
    return PatientChange(None, False, _refresh_addresses(store, policy, config, now, before.emails))


def save_patient(
    store: Store,
    patient: DirectoryPatient,
    *,
    policy: Policy | None = None,
    config: Config | None = None,
    now: datetime | None = None,
) -> DirectoryPatient:
    """Add or edit one patient. Raises ``PatientError`` when an address is on file for
    another patient. With ``policy`` the threads of the old and new addresses are refreshed
    (``apply_patient``, which also says which threads)."""
    if policy is not None:
        change = apply_patient(store, patient, policy=policy, config=config, now=now)
        assert change.patient is not None
        return change.patient
    before = patient_store.get_patient(store, patient.id) if patient.id else None
    try:
        saved = patient_store.save_patient(store, patient)
    except patient_store.PatientConflict:
        raise PatientError("emails: an address is already on file for another patient") from None
    record(store, "patient_edit" if before is not None else "patient_add", saved.id, now)
    return saved


def delete_patient(
    store: Store,
    patient_id: str,
    *,
    policy: Policy | None = None,
    config: Config | None = None,
    now: datetime | None = None,
) -> bool:
    if policy is not None:
        return remove_patient(store, patient_id, policy=policy, config=config, now=now) is not None
    if patient_store.get_patient(store, patient_id) is None:
        return False
    patient_store.delete_patient(store, patient_id)
    record(store, "patient_delete", patient_id, now)
    return True


def patients(store: Store) -> list[DirectoryPatient]:
    return patient_store.all_patients(store)


# --- audit trail ------------------------------------------------------------------------------------

AUDIT_ACTIONS = frozenset(
    {
        "view",
        "reply",
        "redirect",
        "tag",
        "untag",
        "bulk_reply",
        "export",
        "lock",
        "unlock",
        "sync",
        "import",
        "key_change",
        "patients_import",
        "patient_add",
        "patient_edit",
        "patient_delete",
        "outbox_discard",
    }
)
# Opaque ids only: no '@' (addresses), no spaces (subjects, names), no '/' (paths).
_OPAQUE = re.compile(r"[A-Za-z0-9:_,.=+\-]{0,200}")


def record(
    store: Store, action: str, ref: str | Sequence[str] = "", now: datetime | None = None
) -> audit_store.AuditRecord:
    """Append an audit entry. ``ref`` is an opaque id (thread id, outbox id) or a list of them;
    anything that could be patient data (an address, a subject, a path) is refused with
    ValueError, so a mistake shows up in tests rather than in the trail."""
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; known: {', '.join(sorted(AUDIT_ACTIONS))}")
    text = ref if isinstance(ref, str) else ",".join(ref)
    if not _OPAQUE.fullmatch(text):
        raise ValueError("audit refs must be opaque ids (letters, digits, ':_,.=+-'), never patient data")
    return audit_store.append(store, action, text, now)


def verify_audit(store: Store) -> audit_store.AuditCheck:
    return audit_store.verify(store)


def audit_lines(store: Store, limit: int | None = None) -> list[str]:
    """The trail as text lines, oldest first (the newest ``limit`` when given)."""
    rows = audit_store.entries(store, limit=limit, newest_first=limit is not None)
    if limit is not None:
        rows.reverse()
    return [f"{r.seq:>6}  {r.at.strftime('%Y-%m-%d %H:%M:%S')}Z  {r.action:<15} {r.ref}" for r in rows]
