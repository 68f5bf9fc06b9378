"""The outbox use cases (services/outbox.py) over a real encrypted store.

The network side here is a scripted transport that answers each send with a given outcome (the
real aiosmtpd server and Dovecot are in tests/integration/test_outbox.py), plus the real demo
transport (an mbox file) and the real local filer.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import mailbox
import stat
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from carebox.config import AccountConfig, Config, FoldersConfig, IdentityConfig, ServerConfig
from carebox.domain.models import Address, ThreadState
from carebox.mail.smtp import Outcome, SendResult
from carebox.services import outbox as ob
from carebox.services.session import Session
from carebox.services.threads import policy_from_config, rethread, set_tag
from carebox.store.crypto import Cipher
from carebox.store.outbox import OutboxStore
from carebox.store.store import Store
from tests.factories import BASE, DOCTOR, message, patient

KEY = b"o" * 32
DOC_ADDR = Address("Dr. Anna Berg", DOCTOR)
NOW = BASE + timedelta(hours=2)
IDENTITY = IdentityConfig(
    physician_name="Dr. Anna Berg",
    practice_name="Berg Family Practice",
    phone="+49 30 1234567",
    booking="https://berg.example/book",
)


def make_config(
    *,
    imap: ServerConfig | None = None,
    smtp: ServerConfig | None = None,
    username: str = "doctor",
    sent: str = "Sent",
    templates: dict[str, str] | None = None,
) -> Config:
    account = AccountConfig(
        address=DOCTOR,
        username=username,
        imap=imap or ServerConfig(host="imap.invalid"),
        smtp=smtp or ServerConfig(host="smtp.invalid"),
        folders=FoldersConfig(sent=sent),
    )
    extra = {"templates": templates} if templates else {}
    return Config(account=account, identity=IDENTITY, **extra)


def make_session(directory: Path, config: Config | None = None, *, demo: bool = False) -> Session:
    config = config or make_config()
    store = Store.open(directory, Cipher(KEY), professional=DOCTOR, create=True)
    session = Session(config=config, store=store, policy=policy_from_config(config.policy), demo=demo)
    if demo:
        session.extras["demo_outbox"] = directory.parent / "demo-outbox.mbox"
    return session


def seed(session: Session, patients: list[Address], *, uid_base: int = 1, **kwargs: object) -> dict[str, str]:
    """One incoming message per patient into INBOX (UIDs from ``uid_base``); patient addr -> thread id."""
    items = [
        message(f"q{uid_base + i}@mail.example", sender=p, to=DOC_ADDR, uid=uid_base + i, **kwargs)  # type: ignore[arg-type]
        for i, p in enumerate(patients)
    ]
    session.store.add_messages("INBOX", items, role="inbox")
    rethread(session.store, session.policy)
    out = {}
    for tid in session.store.all_thread_ids():
        (row,) = session.store.thread_rows([tid])
        out[row.patient_addr] = tid
    return out


def thread_state(session: Session, tid: str) -> ThreadState:
    (row,) = session.store.thread_rows([tid])
    return row.state


@dataclass
class ScriptedTransport:
    """Answers each send with the next scripted outcome (SENT when the script is empty)."""

    script: list[Outcome] = field(default_factory=list)
    open_failure: SendResult | None = None
    sends: list[tuple[bytes, str, list[str]]] = field(default_factory=list)
    opened: int = 0
    connected: bool = False

    @property
    def is_connected(self) -> bool:
        return self.connected

    async def open(self) -> SendResult | None:
        self.opened += 1
        if self.open_failure is not None:
            return self.open_failure
        self.connected = True
        return None

    async def send(self, raw: bytes, mail_from: str, rcpt_to: list[str]) -> SendResult:
        self.sends.append((raw, mail_from, rcpt_to))
        outcome = self.script.pop(0) if self.script else Outcome.SENT
        if outcome in (Outcome.UNCERTAIN, Outcome.RETRY):
            self.connected = False
        return SendResult(outcome, f"scripted {outcome.value} 550 5.1.1 <x@y.example> no such user", 550)

    async def close(self) -> None:
        self.connected = False


@pytest.fixture
def session(tmp_path: Path):
    s = make_session(tmp_path / "store")
    yield s
    s.close()


def headers(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


# --- queueing ---------------------------------------------------------------------------------


def test_queue_reply_commits_a_sealed_entry_and_answers_the_thread_locally(session: Session) -> None:
    tids = seed(session, [patient(1)], subject="Blood test MARKERSUBJ", body="My values MARKERBODY")
    tid = tids[patient(1).addr]
    assert thread_state(session, tid) is ThreadState.WAITING

    entry_id = ob.queue_reply(session, tid, "Your values are fine. MARKERREPLY", now=NOW)

    row = OutboxStore(session.store).get(entry_id, with_raw=True)
    assert row is not None and row.state == "queued" and row.kind == "reply" and row.thread_id == tid
    msg = headers(row.raw)
    assert msg["From"].addresses[0].addr_spec == DOCTOR
    assert [a.addr_spec for a in msg["To"].addresses] == [patient(1).addr]
    assert str(msg["Subject"]) == "Re: Blood test MARKERSUBJ"
    assert msg["In-Reply-To"] == "<q1@mail.example>"
    assert msg["References"] == "<q1@mail.example>"
    assert msg["Message-ID"] == row.envelope.message_id and row.envelope.message_id.endswith("@practice.example>")
    assert msg["Date"] is not None
    assert row.envelope.rcpt_to == (patient(1).addr,) and row.envelope.mail_from == DOCTOR
    # The local Sent copy puts the thread out of the Due queue at once.
    assert session.store.message_count("Sent") == 1
    assert thread_state(session, tid) is ThreadState.ANSWERED
    (sent_copy,) = [m for m in session.store.thread_messages(tid) if m.folder == "Sent"]
    assert sent_copy.uid is None and sent_copy.outgoing and sent_copy.message_id == row.envelope.message_id.strip("<>")
    # Nothing readable on disk.
    for p in session.store.directory.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            for marker in (b"MARKERREPLY", b"MARKERSUBJ", patient(1).addr.encode()):
                assert marker not in data, p.name


def test_reply_goes_to_the_sender_never_to_a_differing_reply_to(session: Session) -> None:
    from carebox.domain.models import ParsedMessage
    from carebox.store.store import NewMessage

    item = message("rt@mail.example", sender=patient(1), to=Address("", DOCTOR), uid=1)
    parsed = ParsedMessage(**{**{f: getattr(item.parsed, f) for f in item.parsed.__slots__}, "reply_to": (patient(9),)})
    session.store.add_messages("INBOX", [NewMessage(raw=item.raw, parsed=parsed, uid=1)])
    rethread(session.store, session.policy)
    (tid,) = session.store.all_thread_ids()
    entry = ob.queue_reply(session, tid, "Hello", now=NOW)
    assert OutboxStore(session.store).get(entry).envelope.rcpt_to == (patient(1).addr,)  # type: ignore[union-attr]
    # An explicit, confirmed address is honoured.
    ob.undo(session, entry)
    entry = ob.queue_reply(session, tid, "Hello", now=NOW, to=patient(9))
    assert OutboxStore(session.store).get(entry).envelope.rcpt_to == (patient(9).addr,)  # type: ignore[union-attr]


def test_empty_reply_and_unknown_thread_are_one_line_errors(session: Session) -> None:
    tid = seed(session, [patient(1)])[patient(1).addr]
    with pytest.raises(ob.OutboxError, match="empty"):
        ob.queue_reply(session, tid, "  \n ", now=NOW)
    with pytest.raises(ob.OutboxError, match="no conversation"):
        ob.queue_reply(session, "nope", "Hi", now=NOW)
    with pytest.raises(ob.OutboxError, match="unknown kind"):
        ob.queue_reply(session, tid, "Hi", kind="fax", now=NOW)
    assert OutboxStore(session.store).rows() == []
    assert thread_state(session, tid) is ThreadState.WAITING


def test_redirect_renders_the_template_tags_and_undo_restores_everything(session: Session) -> None:
    tid = seed(session, [Address("Dr. Maria Keller", "maria@mail.example")])["maria@mail.example"]
    set_tag(session.store, session.policy, tid, None)
    text = ob.render_template(session, "phone", tid)
    assert text.startswith("Dear Maria,") and "+49 30 1234567" in text and "Dr. Anna Berg" in text

    entry = ob.queue_reply(session, tid, None, kind="redirect_phone", now=NOW)
    raw = OutboxStore(session.store).get(entry, with_raw=True).raw  # type: ignore[union-attr]
    body = headers(raw).get_body().get_content()  # type: ignore[union-attr]
    assert body.startswith("Dear Maria,")
    (row,) = session.store.thread_rows([tid])
    assert row.tag == "redirect:phone" and row.state is ThreadState.REDIRECTED

    ob.undo(session, entry, now=NOW)
    (row,) = session.store.thread_rows([tid])
    assert row.tag is None and row.state is ThreadState.WAITING
    assert session.store.message_count("Sent") == 0
    assert OutboxStore(session.store).get(entry).state == "discarded"  # type: ignore[union-attr]


def test_redirect_visit_with_an_edited_body_and_a_custom_template(tmp_path: Path) -> None:
    cfg = make_config(templates={"visit": "Hello {patient_first_name}, see {booking}. {physician_name}"})
    s = make_session(tmp_path / "s", cfg)
    try:
        tid = seed(s, [patient(3)])[patient(3).addr]
        assert ob.render_template(s, "visit", tid) == "Hello Patient, see https://berg.example/book. Dr. Anna Berg"
        with pytest.raises(ob.OutboxError, match="no reply template named 'fax'"):
            ob.render_template(s, "fax", tid)
        entry = ob.queue_reply(s, tid, "Edited by hand", kind="redirect_visit", now=NOW)
        assert s.store.thread_rows([tid])[0].tag == "redirect:visit"
        assert b"Edited by hand" in OutboxStore(s.store).get(entry, with_raw=True).raw  # type: ignore[union-attr]
    finally:
        s.close()


def test_out_of_scope_tags_with_or_without_a_reply(session: Session) -> None:
    tids = seed(session, [patient(1), patient(2)])
    assert ob.mark_out_of_scope(session, tids[patient(1).addr], "billing", now=NOW) is None
    (row,) = session.store.thread_rows([tids[patient(1).addr]])
    assert row.tag == "billing" and row.state is ThreadState.OUT_OF_SCOPE
    assert OutboxStore(session.store).rows() == []
    entry = ob.mark_out_of_scope(session, tids[patient(2).addr], "refill", now=NOW, body="Please call the pharmacy.")
    assert entry is not None
    assert OutboxStore(session.store).get(entry).kind == "out_of_scope"  # type: ignore[union-attr]
    assert session.store.thread_rows([tids[patient(2).addr]])[0].tag == "refill"
    with pytest.raises(ob.OutboxError, match="category"):
        ob.queue_reply(session, tids[patient(1).addr], "x", kind="out_of_scope", now=NOW)


async def test_undo_is_refused_once_sending_began(session: Session) -> None:
    tid = seed(session, [patient(1)])[patient(1).addr]
    entry = ob.queue_reply(session, tid, "Hi", now=NOW)
    await ob.flush(session, transport=ScriptedTransport(), filer=ob.LocalFiler(), now=NOW)
    with pytest.raises(ob.OutboxError, match="too late to undo: the reply is already filed"):
        ob.undo(session, entry)
    assert session.store.message_count("Sent") == 1


# --- flushing -----------------------------------------------------------------------------------


async def test_flush_sends_in_order_over_one_connection_and_files(session: Session) -> None:
    tids = seed(session, [patient(i) for i in range(5)])
    order = [ob.queue_reply(session, tids[patient(i).addr], f"Reply {i}", now=NOW) for i in (3, 1, 4, 0, 2)]
    transport = ScriptedTransport()
    report = await ob.flush(session, transport=transport, filer=ob.LocalFiler(), now=NOW)
    assert report.sent == order and report.filed == order and report.ok
    assert transport.opened == 1
    assert [s[2] for s in transport.sends] == [[patient(i).addr] for i in (3, 1, 4, 0, 2)]
    assert {r.state for r in OutboxStore(session.store).rows()} == {"filed"}
    # \Answered locally on each patient's message; nothing journaled (the filer set it on the server).
    for i in range(5):
        (incoming,) = [m for m in session.store.thread_messages(tids[patient(i).addr]) if not m.outgoing]
        assert "\\Answered" in incoming.flags
    again = await ob.flush(session, transport=transport, filer=ob.LocalFiler(), now=NOW)
    assert again.sent == [] and len(transport.sends) == 5
    assert report.line().startswith("sent 5, filed 5")


async def test_retry_backs_off_and_keeps_a_conversations_order(session: Session) -> None:
    tids = seed(session, [patient(1), patient(2)])
    first = ob.queue_reply(session, tids[patient(1).addr], "first", now=NOW)
    second = ob.queue_reply(session, tids[patient(1).addr], "second", now=NOW)
    other = ob.queue_reply(session, tids[patient(2).addr], "other", now=NOW)
    transport = ScriptedTransport(script=[Outcome.RETRY])
    report = await ob.flush(session, transport=transport, filer=ob.LocalFiler(), now=NOW)
    assert report.retrying == [first] and report.sent == [other]  # `second` waits behind `first`
    rows = {r.id: r for r in OutboxStore(session.store).rows()}
    assert rows[first].state == "queued" and rows[first].attempts == 1
    assert rows[first].next_attempt == NOW + timedelta(seconds=30)
    assert "scripted retry" in (rows[first].error or "")
    assert rows[second].state == "queued" and rows[second].attempts == 0
    # Not due yet: nothing of that conversation goes.
    report = await ob.flush(session, transport=transport, filer=ob.LocalFiler(), now=NOW + timedelta(seconds=10))
    assert report.sent == [] and report.waiting == 2
    report = await ob.flush(session, transport=transport, filer=ob.LocalFiler(), now=NOW + timedelta(seconds=31))
    assert report.sent == [first, second]
    assert [s[0] for s in transport.sends].count(transport.sends[0][0]) == 2  # `first` twice: RETRY then SENT
    assert len(transport.sends) == 4


def test_backoff_doubles_and_is_capped() -> None:
    assert [ob.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert ob.backoff(8) == timedelta(hours=1) and ob.backoff(500) == timedelta(hours=1)


async def test_rejected_fails_with_the_reason_and_the_thread_is_due_again(session: Session) -> None:
    tid = seed(session, [patient(1)])[patient(1).addr]
    entry = ob.queue_reply(session, tid, None, kind="redirect_visit", now=NOW)
    assert thread_state(session, tid) is ThreadState.REDIRECTED
    report = await ob.flush(session, transport=ScriptedTransport([Outcome.REJECTED]), filer=ob.LocalFiler(), now=NOW)
    assert report.failed == [entry] and not report.ok
    (e,) = ob.list_entries(session.store)
    assert e.state == "failed" and e.error is not None and "550 5.1.1" in e.error
    assert session.store.message_count("Sent") == 0
    (row,) = session.store.thread_rows([tid])
    assert row.state is ThreadState.WAITING and row.tag is None
    # The physician retries: local copy and tag come back, and it goes out.
    ob.retry(session, entry, now=NOW)
    assert thread_state(session, tid) is ThreadState.REDIRECTED and session.store.message_count("Sent") == 1
    report = await ob.flush(session, transport=ScriptedTransport(), filer=ob.LocalFiler(), now=NOW)
    assert report.filed == [entry]


async def test_uncertain_is_never_resent_until_the_physician_decides(session: Session) -> None:
    tids = seed(session, [patient(1), patient(2)])
    a = ob.queue_reply(session, tids[patient(1).addr], "A", now=NOW)
    b = ob.queue_reply(session, tids[patient(2).addr], "B", now=NOW)
    transport = ScriptedTransport([Outcome.UNCERTAIN])
    report = await ob.flush(session, transport=transport, filer=ob.LocalFiler(), now=NOW)
    assert report.uncertain == [a] and report.sent == [b]
    assert transport.opened == 2  # reconnected after the drop
    for later in range(3):
        await ob.flush(session, transport=transport, filer=ob.LocalFiler(), now=NOW + timedelta(hours=later + 1))
    assert len(transport.sends) == 2
    entry = OutboxStore(session.store).get(a)
    assert entry is not None and entry.state == "uncertain"
    assert session.store.message_count("Sent") == 2  # it may have been delivered: the copy stays
    with pytest.raises(ob.OutboxError, match="only uncertain or failed"):
        ob.retry(session, b)
    ob.discard(session, a)
    assert OutboxStore(session.store).get(a).state == "discarded"  # type: ignore[union-attr]
    assert session.store.message_count("Sent") == 2


@pytest.mark.parametrize("outcome", [Outcome.AUTH_FAILED, Outcome.TLS_ERROR])
async def test_login_or_tls_failure_stops_the_flush_and_keeps_everything_queued(
    session: Session, outcome: Outcome
) -> None:
    tids = seed(session, [patient(1), patient(2)])
    ids = [ob.queue_reply(session, tids[p.addr], "x", now=NOW) for p in (patient(1), patient(2))]
    failure = SendResult(outcome, "the server refused the user name or password: check them")
    transport = ScriptedTransport(open_failure=failure)
    report = await ob.flush(session, transport=transport, filer=ob.LocalFiler(), now=NOW)
    assert report.stopped == failure.detail and transport.sends == []
    assert [(r.id, r.state, r.attempts) for r in OutboxStore(session.store).rows()] == [(i, "queued", 0) for i in ids]
    # Mid-flush (after a reconnect) the entry goes back to queued untouched as well.
    transport = ScriptedTransport([Outcome.SENT, outcome])
    report = await ob.flush(session, transport=transport, filer=ob.LocalFiler(), now=NOW)
    assert report.sent == [ids[0]] and report.stopped
    assert OutboxStore(session.store).get(ids[1]).state == "queued"  # type: ignore[union-attr]
    assert "\n" not in report.line()


async def test_offline_leaves_entries_queued_in_order(session: Session) -> None:
    tids = seed(session, [patient(1), patient(2)])
    ids = [ob.queue_reply(session, tids[p.addr], "x", now=NOW) for p in (patient(1), patient(2))]
    refused = SendResult(Outcome.RETRY, "cannot connect to smtp:465: Connection refused")
    offline = ScriptedTransport(open_failure=refused)
    report = await ob.flush(session, transport=offline, filer=ob.LocalFiler(), now=NOW)
    assert report.stopped and "Connection refused" in report.stopped and report.waiting == 2
    rows = OutboxStore(session.store).rows()
    assert [(r.id, r.state, r.attempts, r.next_attempt) for r in rows] == [(i, "queued", 0, None) for i in ids]
    transport = ScriptedTransport()
    report = await ob.flush(session, transport=transport, filer=ob.LocalFiler(), now=NOW)
    assert report.sent == ids


async def test_an_entry_left_sending_becomes_uncertain(session: Session) -> None:
    tid = seed(session, [patient(1)])[patient(1).addr]
    entry = ob.queue_reply(session, tid, "x", now=NOW)
    assert OutboxStore(session.store).transition(entry, "sending", expect=("queued",), now=NOW)
    transport = ScriptedTransport()
    report = await ob.flush(session, transport=transport, filer=ob.LocalFiler(), now=NOW)
    assert report.recovered == [entry] and report.uncertain == [entry] and transport.sends == []
    (e,) = ob.list_entries(session.store)
    assert e.state == "uncertain" and "stopped while sending" in (e.error or "")


async def test_filing_failure_keeps_the_entry_sent_and_is_retried(session: Session) -> None:
    tid = seed(session, [patient(1)])[patient(1).addr]
    entry = ob.queue_reply(session, tid, "x", now=NOW)

    class FlakyFiler:
        calls: list[list[str]] = []  # noqa: RUF012

        async def file(self, items):
            self.calls.append([it.entry_id for it in items])
            if len(self.calls) == 1:
                return ob.FilingResult(problem="could not file: the server is down")
            assert items[0].answered == ("INBOX", 1) and items[0].message_id.startswith("<")
            return ob.FilingResult(done=[it.entry_id for it in items])

    filer = FlakyFiler()
    transport = ScriptedTransport()
    report = await ob.flush(session, transport=transport, filer=filer, now=NOW)
    assert report.sent == [entry] and report.filed == [] and report.filing_problem
    assert OutboxStore(session.store).get(entry).state == "sent"  # type: ignore[union-attr]
    report = await ob.flush(session, transport=transport, filer=filer, now=NOW)
    assert report.sent == [] and report.filed == [entry] and len(transport.sends) == 1
    assert filer.calls == [[entry], [entry]]


async def test_one_flush_at_a_time(session: Session) -> None:
    tid = seed(session, [patient(1)])[patient(1).addr]
    ob.queue_reply(session, tid, "x", now=NOW)
    gate = asyncio.Event()

    class SlowTransport(ScriptedTransport):
        async def send(self, raw, mail_from, rcpt_to):
            await gate.wait()
            return await super().send(raw, mail_from, rcpt_to)

    slow = SlowTransport()
    first = asyncio.create_task(ob.flush(session, transport=slow, filer=ob.LocalFiler(), now=NOW))
    while not slow.opened:
        await asyncio.sleep(0.01)
    second = await ob.flush(session, transport=ScriptedTransport(), filer=ob.LocalFiler(), now=NOW)
    assert second.busy and "another carebox" in second.line()
    gate.set()
    assert (await first).sent and len(slow.sends) == 1


async def test_no_patient_data_in_logs(session: Session, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tid = seed(session, [Address("Erika Mustermann", "erika@mail.example")], subject="Rash MARKER1")[
        "erika@mail.example"
    ]
    ob.queue_reply(session, tid, "Body MARKER2", now=NOW)
    await ob.flush(session, transport=ScriptedTransport([Outcome.REJECTED]), filer=ob.LocalFiler(), now=NOW)
    text = caplog.text
    for secret in ("Erika", "erika@", "MARKER1", "MARKER2", "550 5.1.1"):
        assert secret not in text


# --- bulk ---------------------------------------------------------------------------------------


def test_bulk_renders_per_patient_and_reports_failures(session: Session) -> None:
    people = [Address("Jonas Weber", "jonas@mail.example"), Address("Weber, Lena", "lena@mail.example")]
    tids = seed(session, people)
    ids = [tids["jonas@mail.example"], tids["lena@mail.example"], "missing-thread"]
    template = "Dear {patient_first_name},\nthe practice is closed on Friday.\n{physician_name}"

    preview = ob.preview_bulk(session, ids, template)
    assert list(preview.failed) == ["missing-thread"]
    assert preview.previews[ids[0]].body.startswith("Dear Jonas,")
    assert preview.previews[ids[1]].body.startswith("Dear Lena,")
    assert preview.previews[ids[1]].recipient == "Weber, Lena <lena@mail.example>"
    assert preview.previews[ids[0]].subject == "Re: Question"
    assert OutboxStore(session.store).rows() == []  # a preview queues nothing

    result = ob.queue_bulk(session, ids, template, kind="reply", now=NOW, tag="closure")
    assert set(result.queued) == set(ids[:2]) and list(result.failed) == ["missing-thread"]
    bodies = {
        r.envelope.rcpt_to[0]: headers(r.raw).get_body().get_content()  # type: ignore[union-attr]
        for r in OutboxStore(session.store).rows(with_raw=True)
    }
    assert bodies["jonas@mail.example"].startswith("Dear Jonas,")
    assert bodies["lena@mail.example"].startswith("Dear Lena,")
    assert all(session.store.thread_rows([t])[0].tag == "closure" for t in ids[:2])


def test_bulk_with_a_bad_template_queues_nothing(session: Session) -> None:
    tids = seed(session, [patient(1)])
    with pytest.raises(ob.OutboxError, match=r"unknown placeholder \{diagnosis\}"):
        ob.queue_bulk(session, list(tids.values()), "Hi {diagnosis}", kind="reply", now=NOW)
    with pytest.raises(ob.OutboxError, match="not allowed"):
        ob.queue_bulk(session, list(tids.values()), "Hi {a.b}", kind="reply", now=NOW)
    assert OutboxStore(session.store).rows() == []


def test_bulk_redirect_uses_the_configured_template(session: Session) -> None:
    tids = seed(session, [patient(1), patient(2)])
    result = ob.queue_bulk(session, list(tids.values()), None, kind="redirect_phone", now=NOW)
    assert len(result.queued) == 2
    assert all(session.store.thread_rows([t])[0].state is ThreadState.REDIRECTED for t in tids.values())


# --- listing and ids ----------------------------------------------------------------------------


def test_list_entries_and_find_entry(session: Session) -> None:
    tids = seed(session, [patient(1), patient(2)])
    a = ob.queue_reply(session, tids[patient(1).addr], "x", now=NOW)
    b = ob.queue_reply(session, tids[patient(2).addr], "y", now=NOW + timedelta(minutes=5))
    entries = ob.list_entries(session.store)
    assert [e.id for e in entries] == [a, b] and [e.seq for e in entries] == [1, 2]
    assert entries[0].recipient_addr == patient(1).addr and entries[0].subject == "Re: Question"
    assert entries[1].age(NOW + timedelta(minutes=7)) == timedelta(minutes=2)
    assert ob.find_entry(session.store, a) == a
    assert ob.find_entry(session.store, a[:8].upper()) == a
    with pytest.raises(ob.OutboxError, match="at least the first 4"):
        ob.find_entry(session.store, "ab")
    with pytest.raises(ob.OutboxError, match="no outbox entry"):
        ob.find_entry(session.store, "zzzzzz")
    assert ob.outbox_counts(session.store) == {"queued": 2}


# --- demo ---------------------------------------------------------------------------------------


async def test_demo_mode_writes_an_mbox_and_files_locally(tmp_path: Path) -> None:
    s = make_session(tmp_path / "demo" / "store", demo=True)
    try:
        tid = seed(s, [patient(1)])[patient(1).addr]
        entry = ob.queue_reply(s, tid, "Demo reply", now=NOW)
        report = await ob.flush(s, now=NOW)  # no transport given: the demo one, no network
        assert report.filed == [entry]
        path = tmp_path / "demo" / "demo-outbox.mbox"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        box = mailbox.mbox(path)
        (only,) = list(box)
        assert only["To"].endswith(f"<{patient(1).addr}>") and only["Subject"] == "Re: Question"
        box.close()
        (incoming,) = [m for m in s.store.thread_messages(tid) if not m.outgoing]
        assert "\\Answered" in incoming.flags
    finally:
        s.close()


# --- the `carebox outbox` command ---------------------------------------------------------------


def test_cli_outbox_list_send_retry_discard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.setenv("CAREBOX_NOW", (NOW + timedelta(minutes=5)).isoformat())
    from carebox.cli import main
    from carebox.services.session import open_session

    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config_path = tmp_path / "carebox.toml"
    config_path.write_text(
        f'[account]\naddress = "{DOCTOR}"\nusername = "doctor"\n'
        f'[account.imap]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[account.smtp]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[store]\npath = "{tmp_path / "store"}"\n'
    )
    from carebox.config import load_config

    session = open_session(load_config(config_path), create=True)
    try:
        session.store.set_secret(f"account:{DOCTOR}", "pw")
        hostile = Address("Eve \x1b]0;owned\x07Evil", "eve@mail.example")
        tids = seed(session, [hostile, patient(2)], subject="Rash \x1b[2J now")
        first = ob.queue_reply(session, tids["eve@mail.example"], "x", now=NOW)
        second = ob.queue_reply(session, tids[patient(2).addr], "y", now=NOW)
    finally:
        session.close()

    assert main(["--config", str(config_path), "outbox"]) == 0
    out = capsys.readouterr().out
    assert first[:8] in out and second[:8] in out and "queued" in out
    assert "Re: Rash [2J now" in out and "eve@mail.example" in out and " 5 min " in out
    assert "\x1b" not in out and "\x07" not in out

    assert main(["--config", str(config_path), "outbox", "send"]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "cannot reach the mail server" in out and "2 waiting" in out

    assert main(["--config", str(config_path), "outbox", "retry", first[:6]]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "only uncertain or failed entries can be retried" in err

    assert main(["--config", str(config_path), "outbox", "discard", first[:6]]) == 0
    assert "discarded" in capsys.readouterr().out
    assert main(["--config", str(config_path), "outbox", "discard", "ffffffff"]) == 1
    assert "no outbox entry" in capsys.readouterr().err

    assert main(["--config", str(config_path), "outbox"]) == 0
    out = capsys.readouterr().out
    assert first[:8] not in out and second[:8] in out
    assert main(["--config", str(config_path), "outbox", "--all"]) == 0
    assert "discarded" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("Müller, Jörg", "Befund: Blutbild ✓ und Ärztin"),
        ("Weber, Lena", "x" * 300),
        ("", "=?utf-8?q?literal_encoded_word?= and ümlaut " + "long " * 40),
        ('Ève "the" O\'Neil (Patientin)', "Re: AW: Fwd: Frage"),
    ],
)
def test_local_copy_and_envelope_match_what_the_email_package_reads(session: Session, name: str, subject: str) -> None:
    """The fast compat32 read-back of carebox's own message agrees with policy.default."""
    tid = seed(session, [Address(name, "joerg@mail.example")], subject=subject, body="Frage")["joerg@mail.example"]
    entry = ob.queue_reply(session, tid, "Grüße\nzweite Zeile", now=NOW)
    row = OutboxStore(session.store).get(entry, with_raw=True)
    assert row is not None
    msg = headers(row.raw)
    (copy,) = [m for m in session.store.thread_messages(tid) if m.folder == "Sent"]
    assert copy.subject == str(msg["Subject"]) == row.envelope.subject
    assert [(a.name, a.addr) for a in copy.to] == [(a.display_name, a.addr_spec) for a in msg["To"].addresses]
    assert copy.sender == Address(msg["From"].addresses[0].display_name, DOCTOR)
    assert copy.body == msg.get_body().get_content().replace("\r\n", "\n") == "Grüße\nzweite Zeile\n"  # type: ignore[union-attr]
    assert copy.date == msg["Date"].datetime
    assert copy.references == tuple(t.strip("<>") for t in msg["References"].split())


async def test_hold_keeps_young_entries_for_the_undo_window(session: Session) -> None:
    tids = seed(session, [patient(1), patient(2)])
    old = ob.queue_reply(session, tids[patient(1).addr], "old", now=NOW)
    young = ob.queue_reply(session, tids[patient(2).addr], "young", now=NOW + timedelta(seconds=8))
    transport = ScriptedTransport()
    hold = timedelta(seconds=10)
    report = await ob.flush(
        session, transport=transport, filer=ob.LocalFiler(), now=NOW + timedelta(seconds=10), hold=hold
    )
    assert report.sent == [old] and report.waiting == 1
    assert report.next_due == NOW + timedelta(seconds=18)
    ob.undo(session, young)  # still possible: it was held back
    report = await ob.flush(
        session, transport=transport, filer=ob.LocalFiler(), now=NOW + timedelta(seconds=30), hold=hold
    )
    assert report.sent == [] and report.next_due is None and len(transport.sends) == 1
