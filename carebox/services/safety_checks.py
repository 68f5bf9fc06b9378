"""The clinical safety checks of one thread, without the store: what ``SafetyInspector`` (in
services/safety.py) runs per thread, kept importable with the domain alone (no SQLAlchemy, no
pydantic) so that a sync's parse worker processes can run it too.

``SafetyChecks.answer`` is the whole decision for a thread's row; a worker builds its own
``SafetyChecks`` from the same patients (in the same order), settings and clock, and reads
``CheckMessage`` copies of exactly the fields the checks read, so it answers what the parent would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from carebox.domain.models import Address, pickled_by_fields
from carebox.domain.safety import (
    DirectoryPatient,
    PatientDirectory,
    Practice,
    RedFlagHit,
    RedFlagMatcher,
    ReplyTarget,
    SenderCheck,
    SenderChecker,
    SenderFacts,
    SenderStatus,
    mentions_personal_account,
    merge_status,
    reply_target,
    result_category,
    strip_quoted,
    suggest_tag,
)

if TYPE_CHECKING:
    from carebox.config import Config

VISIT_WINDOW_DAYS = 365  # default until the config has policy.visit_window_days


@dataclass(frozen=True)
class SafetySettings:
    practice: Practice = field(default_factory=Practice)
    red_flags: tuple[str, ...] = ()  # extra phrases / "re:" patterns on top of the built-in list
    categories: tuple[str, ...] | None = None  # out-of-scope category ids allowed (None: all)
    visit_window_days: int = VISIT_WINDOW_DAYS

    @classmethod
    def from_config(cls, config: Config | None, professional: str = "") -> SafetySettings:
        if config is None:
            return cls(practice=Practice(address=professional.lower()))
        ident = config.identity
        return cls(
            practice=Practice(
                address=(config.professional_address or professional).lower(),
                physician_name=ident.physician_name,
                practice_name=ident.practice_name,
                personal_addresses=tuple(a.lower() for a in getattr(ident, "personal_addresses", ())),
                domains=tuple(getattr(ident, "practice_domains", ())),
            ),
            red_flags=tuple(config.triage.red_flags),
            categories=tuple(config.triage.categories),
            visit_window_days=int(getattr(config.policy, "visit_window_days", VISIT_WINDOW_DAYS)),
        )


class Checked(Protocol):
    """What the checks read of a message (a store.StoredMessage, or a CheckMessage copy)."""

    @property
    def sender(self) -> Address: ...
    @property
    def to(self) -> tuple[Address, ...]: ...
    @property
    def cc(self) -> tuple[Address, ...]: ...
    @property
    def reply_to(self) -> tuple[Address, ...]: ...
    @property
    def auth_results(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def body(self) -> str: ...


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class CheckMessage:
    """The fields of a stored message the checks read, copied for a worker process."""

    sender: Address
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    auth_results: str
    subject: str
    body: str

    @classmethod
    def of(cls, m: Checked) -> CheckMessage:
        return cls(m.sender, m.to, m.cc, m.reply_to, m.auth_results, m.subject, m.body)


@dataclass(frozen=True)
class Evaluation:
    status: SenderStatus | None
    checks: tuple[SenderCheck, ...]
    hits: tuple[RedFlagHit, ...]
    suggested_tag: str | None
    template: str | None
    reason: str
    category: str | None
    reply: ReplyTarget | None
    patient: DirectoryPatient | None


def sender_facts(m: Checked) -> SenderFacts:
    return SenderFacts(sender=m.sender, reply_to=m.reply_to, auth_results=m.auth_results, recipients=m.to + m.cc)


class SafetyChecks:
    """The checks for one directory, settings and clock (sender checks cached per sender)."""

    def __init__(self, directory: PatientDirectory, settings: SafetySettings, now: datetime | None = None) -> None:
        self.directory = directory
        self.settings = settings
        self.now = now or datetime.now(UTC)
        self.matcher = RedFlagMatcher(settings.red_flags)
        self.senders = SenderChecker(directory, settings.practice)

    def evaluate(self, msgs: Sequence[Checked], *, pending: bool) -> Evaluation:
        """Checks over the messages still waiting for an answer (``pending``), or over the latest
        patient message of an answered thread (sender status only)."""
        if not msgs:
            return Evaluation(None, (), (), None, None, "", None, None, None)
        practice = self.settings.practice
        checks = tuple(self.senders.check(sender_facts(m)) for m in msgs)
        status = merge_status(c.status for c in checks)
        latest = msgs[-1]
        reply = reply_target(sender_facts(latest), self.directory)
        patient = checks[-1].patient
        if not pending:
            return Evaluation(status, checks, (), None, None, "", None, reply, patient)
        text = "\n".join(f"{m.subject}\n{strip_quoted(m.body)}" for m in msgs)
        view = self.matcher.view(text)  # normalised once for every check below
        hits = tuple(self.matcher.find_in(view))
        own = {a.lower() for a in practice.personal_addresses}
        # (only read by suggest_tag when nothing is urgent)
        personal = not hits and (
            mentions_personal_account(text, normalized=view)
            or any(m.sender.addr.lower() in own or any(a.addr.lower() in own for a in (*m.to, *m.cc)) for m in msgs)
        )
        sug = suggest_tag(
            urgent=bool(hits),
            status=status,
            text=text,
            patient=patient,
            now=self.now,
            window_days=self.settings.visit_window_days,
            personal_route=personal,
            categories=self.settings.categories,
            normalized=view,
        )
        return Evaluation(
            status,
            checks,
            hits,
            sug.tag,
            sug.template,
            sug.reason,
            result_category(text, normalized=view),
            reply,
            patient,
        )

    def answer(self, msgs: Sequence[Checked], pending: bool) -> dict[str, Any]:
        """The thread row's safety columns."""
        ev = self.evaluate(msgs, pending=pending)
        out = {
            "urgent": bool(ev.hits),
            "sender_status": ev.status.value if ev.status else "",
            "suggested_tag": ev.suggested_tag,
        }
        if ev.category:
            out["category"] = ev.category
        return out


_WORKER_CHECKS: dict[str, SafetyChecks] = {}  # in a worker process: the checks of the current state


def worker_checks(state_id: str, state: bytes) -> SafetyChecks:
    """In a worker process: checks built from the same patients (in the same order), settings and
    clock as the parent's inspector (``SafetyInspector.worker_state``), built once per state."""
    checks = _WORKER_CHECKS.get(state_id)
    if checks is None:
        import pickle

        patients, settings, now = pickle.loads(state)  # noqa: S301 (our own parent process's data)
        checks = SafetyChecks(PatientDirectory(patients), settings, now)
        _WORKER_CHECKS.clear()
        _WORKER_CHECKS[state_id] = checks
    return checks


def warm_worker(state_id: str, state: bytes) -> None:
    """Build the checks in a worker process ahead of time, their pattern analysis made (it takes a while)."""
    worker_checks(state_id, state).matcher.prepare()


def evaluate_window(state_id: str, state: bytes, items: list[tuple[bool, list[CheckMessage]]]) -> list[dict[str, Any]]:
    """In a worker process: the answers for a window of threads ((pending, messages) each)."""
    checks = worker_checks(state_id, state)
    return [checks.answer(msgs, pending) for pending, msgs in items]
