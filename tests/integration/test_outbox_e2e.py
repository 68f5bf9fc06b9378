"""The outbox end to end: a real aiosmtpd server (implicit TLS + AUTH) and a real Dovecot for the
Sent folder and the \\Answered flag, with faults injected at the SMTP server and processes killed
between state changes."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from carebox.config import load_config
from carebox.domain.models import Address, ParsedMessage
from carebox.mail.imap import ImapClient
from carebox.services import outbox as ob
from carebox.services.session import Session
from carebox.services.threads import policy_from_config, rethread
from carebox.store.crypto import Cipher
from carebox.store.outbox import OutboxStore
from carebox.store.store import NewMessage, Store
from tests.factories import DOCTOR, message, patient, raw_message
from tests.servers.dovecot import ImapAccount
from tests.servers.smtp_server import (  # noqa: F401  (fixtures)
    SmtpTestServer,
    smtp_cert_fixture,
    smtp_server_fixture,
)
from tests.services.test_outbox import IDENTITY, KEY, NOW

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).with_name("outbox_flush_script.py")
DOC_ADDR = Address("Dr. Anna Berg", DOCTOR)


@dataclass
class Live:
    session: Session
    server: SmtpTestServer
    account: ImapAccount
    config_path: Path
    store_dir: Path

    def reopen(self) -> None:
        self.session.close()
        self.session = open_live_session(self.store_dir, self.config_path)


def write_config(path: Path, server: SmtpTestServer, account: ImapAccount, sent: str = "Sent") -> Path:
    path.write_text(
        f"""
[account]
address = "{DOCTOR}"
username = "{account.username}"

[account.imap]
host = "127.0.0.1"
port = {account.port}
ca_file = "{account.ca_file}"

[account.smtp]
host = "127.0.0.1"
port = {server.port}
ca_file = "{server.ca_file}"

[account.folders]
sent = "{sent}"

[identity]
physician_name = "{IDENTITY.physician_name}"
practice_name = "{IDENTITY.practice_name}"
phone = "{IDENTITY.phone}"
booking = "{IDENTITY.booking}"
""",
        encoding="utf-8",
    )
    return path


def open_live_session(store_dir: Path, config_path: Path) -> Session:
    config = load_config(config_path)
    store = Store.open(store_dir, Cipher(KEY), professional=DOCTOR, create=True)
    return Session(config=config, store=store, policy=policy_from_config(config.policy))


@pytest.fixture
def live(tmp_path: Path, smtp_server: Callable[..., SmtpTestServer], imap_account: ImapAccount):
    made: list[Live] = []

    def make(sent: str = "Sent", account: ImapAccount | None = None, name: str = "live") -> Live:
        acc = account or imap_account
        server = smtp_server("implicit", username=acc.username, password=acc.password)
        directory = tmp_path / name
        directory.mkdir()
        config_path = write_config(directory / "carebox.toml", server, acc, sent)
        session = open_live_session(directory / "store", config_path)
        session.store.set_secret(f"account:{DOCTOR}", acc.password)  # no keychain entry: sealed in the store
        item = Live(session, server, acc, config_path, directory / "store")
        made.append(item)
        return item

    yield make
    for item in made:
        item.session.close()


async def patient_mail(live: Live, items: list[NewMessage]) -> list[str]:
    """Put each patient message on the server's INBOX (APPEND, to learn its UID) and into the
    store with that UID; returns their thread ids."""
    stored = []
    async with ImapClient(live.account.settings()) as imap:
        for it in items:
            uid = await imap.append("INBOX", it.raw)
            assert uid is not None
            stored.append(NewMessage(raw=it.raw, parsed=it.parsed, uid=uid))
    live.session.store.add_messages("INBOX", stored, role="inbox")
    rethread(live.session.store, live.session.policy)
    tids = []
    for it in stored:
        (m,) = [
            m
            for t in live.session.store.all_thread_ids()
            for m in live.session.store.thread_messages(t)
            if m.message_id == it.parsed.message_id
        ]
        tids.append(m.thread_id)
    return tids


async def sent_copies(account: ImapAccount, message_id: str, folder: str = "Sent") -> list[bytes]:
    """The copies of a message in ``folder`` on the server, seen through a second connection."""
    async with ImapClient(account.settings()) as imap:
        uids = await imap.search_header(folder, "Message-ID", message_id)
        out: list[bytes] = []
        async for batch in imap.fetch_batches(uids):
            out.extend(m.raw for m in batch)
        return out


async def server_flags(account: ImapAccount, uid: int, folder: str = "INBOX") -> frozenset[str]:
    async with ImapClient(account.settings()) as imap:
        await imap.select(folder, readonly=True)
        (update,) = await imap.uid_flags([uid])
        return update.flags


def entry(session: Session, entry_id: str):
    row = OutboxStore(session.store).get(entry_id, with_raw=True)
    assert row is not None
    return row


# --- the happy path -----------------------------------------------------------------------------


async def test_reply_arrives_once_is_filed_once_and_answered(live) -> None:
    lv = live()
    pat = Address("Erika Mustermann", "erika@mail.example")
    original = message("first@mail.example", sender=pat, to=DOC_ADDR, subject="Blood test", body="Values?")
    (tid,) = await patient_mail(lv, [original])
    entry_id = ob.queue_reply(lv.session, tid, "Your values are fine.\n.\nBest", now=NOW)
    fixed_id = entry(lv.session, entry_id).envelope.message_id

    report = await ob.flush(lv.session)
    assert report.sent == [entry_id] and report.filed == [entry_id] and report.ok, report.line()

    (received,) = lv.server.messages
    assert received.mail_from == DOCTOR and received.rcpt_tos == [pat.addr]
    assert received.content == entry(lv.session, entry_id).raw
    msg = email.message_from_bytes(received.content, policy=email.policy.default)
    assert msg["From"].addresses[0].addr_spec == DOCTOR and msg["From"].addresses[0].display_name == "Dr. Anna Berg"
    assert [a.addr_spec for a in msg["To"].addresses] == [pat.addr]
    assert msg["Subject"] == "Re: Blood test"
    assert msg["In-Reply-To"] == "<first@mail.example>" and msg["References"] == "<first@mail.example>"
    assert msg["Message-ID"] == fixed_id
    assert msg["Date"].datetime == NOW
    body = msg.get_body().get_content()  # type: ignore[union-attr]
    assert body.replace("\r\n", "\n") == "Your values are fine.\n.\nBest\n"

    copies = await sent_copies(lv.account, fixed_id)
    assert copies == [received.content]
    (inbox_msg,) = [m for m in lv.session.store.thread_messages(tid) if not m.outgoing]
    assert "\\Answered" in await server_flags(lv.account, inbox_msg.uid)
    assert "\\Answered" in inbox_msg.flags

    again = await ob.flush(lv.session)
    assert again.sent == [] and again.filed == [] and len(lv.server.messages) == 1
    assert len(await sent_copies(lv.account, fixed_id)) == 1
    assert lv.server.connections == 1


# --- faults -------------------------------------------------------------------------------------


async def test_connection_refused_waits_in_order_then_delivers_exactly_once(live) -> None:
    lv = live()
    tids = await patient_mail(lv, [message(f"o{i}@mail.example", sender=patient(i), to=DOC_ADDR) for i in range(3)])
    ids = [ob.queue_reply(lv.session, t, f"Reply {i}", now=NOW) for i, t in enumerate(tids)]
    lv.server.stop()
    report = await ob.flush(lv.session)
    assert report.stopped and "cannot reach the mail server" in report.stopped and report.sent == []
    assert [(e.id, e.state) for e in ob.list_entries(lv.session.store)] == [(i, "queued") for i in ids]
    lv.server.start()
    report = await ob.flush(lv.session)
    assert report.sent == ids and report.filed == ids
    assert [m.rcpt_tos for m in lv.server.messages] == [[patient(i).addr] for i in range(3)]
    await ob.flush(lv.session)
    assert len(lv.server.messages) == 3


async def test_wrong_password_or_untrusted_certificate_stops_with_one_line(live, tmp_path: Path) -> None:
    lv = live()
    (tid,) = await patient_mail(lv, [message("w@mail.example", sender=patient(1), to=DOC_ADDR)])
    entry_id = ob.queue_reply(lv.session, tid, "Reply", now=NOW)
    lv.session.store.set_secret(f"account:{DOCTOR}", "wrong password")
    report = await ob.flush(lv.session)
    assert report.stopped and "refused the user name or password" in report.stopped
    assert "\n" not in report.line() and lv.server.messages == []
    assert entry(lv.session, entry_id).state == "queued" and entry(lv.session, entry_id).attempts == 0

    lv.session.store.set_secret(f"account:{DOCTOR}", lv.account.password)
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(Path(lv.account.ca_file).read_bytes())  # Dovecot's cert: not the SMTP server's
    text = lv.config_path.read_text().replace(f'ca_file = "{lv.server.ca_file}"', f'ca_file = "{other_ca}"')
    lv.config_path.write_text(text)
    lv.reopen()
    report = await ob.flush(lv.session)
    assert report.stopped and "certificate" in report.stopped and lv.server.messages == []
    assert entry(lv.session, entry_id).state == "queued"


async def test_421_before_data_is_retried_later_and_delivered_exactly_once(live) -> None:
    lv = live()
    (tid,) = await patient_mail(lv, [message("r@mail.example", sender=patient(1), to=DOC_ADDR)])
    entry_id = ob.queue_reply(lv.session, tid, "Reply", now=NOW)
    lv.server.faults.refuse_mail = 2  # the sender's own reconnect gets a 421 too
    report = await ob.flush(lv.session, now=NOW)
    assert report.retrying == [entry_id] and lv.server.messages == []
    row = entry(lv.session, entry_id)
    assert row.state == "queued" and row.attempts == 1 and row.next_attempt == NOW + timedelta(seconds=30)
    assert "421" in (row.error or "")
    report = await ob.flush(lv.session, now=NOW + timedelta(seconds=5))  # not due yet
    assert report.sent == [] and lv.server.messages == []
    report = await ob.flush(lv.session, now=NOW + timedelta(seconds=31))
    assert report.sent == [entry_id] and report.filed == [entry_id]
    await ob.flush(lv.session, now=NOW + timedelta(hours=2))
    assert len(lv.server.messages) == 1
    assert len(await sent_copies(lv.account, row.envelope.message_id)) == 1


async def test_550_on_rcpt_fails_with_the_servers_text(live) -> None:
    lv = live()
    (tid,) = await patient_mail(lv, [message("n@mail.example", sender=patient(1), to=DOC_ADDR)])
    entry_id = ob.queue_reply(lv.session, tid, "Reply", now=NOW)
    lv.server.faults.reject_rcpt = {patient(1).addr}
    report = await ob.flush(lv.session)
    assert report.failed == [entry_id] and lv.server.messages == []
    (e,) = ob.list_entries(lv.session.store)
    assert e.state == "failed" and "550 5.1.1" in (e.error or "") and "User unknown" in (e.error or "")
    assert lv.session.store.thread_rows([tid])[0].state.value == "waiting"  # due again, visibly
    lv.server.faults.reject_rcpt = set()
    await ob.flush(lv.session, now=NOW + timedelta(hours=5))
    assert lv.server.messages == [] and entry(lv.session, entry_id).state == "failed"


async def test_drop_after_data_is_uncertain_and_never_resent(live) -> None:
    lv = live()
    tids = await patient_mail(lv, [message(f"d{i}@mail.example", sender=patient(i), to=DOC_ADDR) for i in range(2)])
    first, second = (ob.queue_reply(lv.session, t, "Reply", now=NOW) for t in tids)
    lv.server.faults.drop_after_data = 1
    report = await ob.flush(lv.session)
    assert report.uncertain == [first] and report.sent == [second]
    assert len(lv.server.messages) == 2  # the server did get the first one
    for hours in (1, 5, 30):
        await ob.flush(lv.session, now=NOW + timedelta(hours=hours))
    assert len(lv.server.messages) == 2
    (e,) = ob.list_entries(lv.session.store)
    assert e.id == first and e.state == "uncertain" and "may or may not have been delivered" in (e.error or "")
    ob.retry(lv.session, first)  # the physician's explicit decision
    report = await ob.flush(lv.session)
    assert report.sent == [first] and len(lv.server.messages) == 3


async def test_filing_failure_is_retried_and_leaves_exactly_one_copy(live) -> None:
    lv = live(sent="Gesendet")  # the configured Sent folder does not exist on the server yet
    (tid,) = await patient_mail(lv, [message("f@mail.example", sender=patient(1), to=DOC_ADDR)])
    entry_id = ob.queue_reply(lv.session, tid, "Reply", now=NOW)
    report = await ob.flush(lv.session)
    assert report.sent == [entry_id] and report.filed == []
    assert report.filing_problem and "Gesendet" in report.filing_problem and "\n" not in report.filing_problem
    assert entry(lv.session, entry_id).state == "sent"
    lv.account.server.doveadm("mailbox", "create", "-u", lv.account.username, "Gesendet")
    report = await ob.flush(lv.session)
    assert report.sent == [] and report.filed == [entry_id] and report.ok
    message_id = entry(lv.session, entry_id).envelope.message_id
    assert len(await sent_copies(lv.account, message_id, "Gesendet")) == 1
    assert len(lv.server.messages) == 1


async def test_hostile_subject_and_name_cannot_inject_a_header(live) -> None:
    lv = live()
    evil = "evil@attacker.example"
    items = []
    for n, (subject_raw, subject_parsed, name) in enumerate(
        [
            (f"=?utf-8?q?Hi=0D=0ABcc:_{evil}?=", f"Hi\r\nBcc: {evil}", "Eve"),
            (
                f"=?utf-8?q?=3D=3Futf-8=3Fq=3FHi=3D0D=3D0ABcc=3A_{evil}=3F=3D?=",
                f"=?utf-8?q?Hi=0D=0ABcc:_{evil}?=",
                "Eve",
            ),
            ("Plain", "Plain", f"Eve\r\nBcc: {evil}"),
        ]
    ):
        sender = Address(name, f"eve{n}@mail.example")
        raw = raw_message(f"h{n}@mail.example", f"Eve <{sender.addr}>", DOCTOR, subject_raw, "hello", NOW)
        parsed = ParsedMessage(
            message_id=f"h{n}@mail.example",
            in_reply_to=(),
            references=(),
            subject=subject_parsed,
            sender=sender,
            to=(DOC_ADDR,),
            cc=(),
            reply_to=(),
            date=NOW - timedelta(hours=1),
            body="hello",
        )
        items.append(NewMessage(raw=raw, parsed=parsed))
    tids = await patient_mail(lv, items)
    for tid in tids:
        ob.queue_reply(lv.session, tid, "Reply", now=NOW)
    report = await ob.flush(lv.session)
    assert len(report.sent) == 3 and report.ok, report.line()
    for n, received in enumerate(lv.server.messages):
        assert received.rcpt_tos == [f"eve{n}@mail.example"]
        head = received.content.split(b"\r\n\r\n", 1)[0]
        assert not any(line.lower().startswith(b"bcc") for line in head.split(b"\r\n")), head
        msg = email.message_from_bytes(received.content, policy=email.policy.default)
        assert msg["Bcc"] is None and "\n" not in str(msg["Subject"]) and "\r" not in str(msg["Subject"])
        assert [a.addr_spec for a in msg["To"].addresses] == [f"eve{n}@mail.example"]


# --- killed between state changes ---------------------------------------------------------------


@dataclass
class CrashCase:
    name: str
    env: dict[str, str]
    delivered: int  # messages the SMTP server holds after the crash and a normal flush
    final: str  # the entry's state at the end
    copies: int  # copies in Sent at the end


CRASHES = [
    CrashCase("before 1st (queued->sending)", {"CAREBOX_CRASH_BEFORE": "1"}, 1, "filed", 1),
    CrashCase("after 1st (sending committed)", {"CAREBOX_CRASH_AFTER": "1"}, 0, "uncertain", 0),
    CrashCase("before 2nd (data accepted, sent not committed)", {"CAREBOX_CRASH_BEFORE": "2"}, 1, "uncertain", 0),
    CrashCase("after 2nd (sent committed)", {"CAREBOX_CRASH_AFTER": "2"}, 1, "filed", 1),
    CrashCase("before 3rd (appended, filed not committed)", {"CAREBOX_CRASH_BEFORE": "3"}, 1, "filed", 1),
    CrashCase("after 3rd (filed committed)", {"CAREBOX_CRASH_AFTER": "3"}, 1, "filed", 1),
    CrashCase("killed while the server holds the data", {"KILL_IN_DATA": "1"}, 1, "uncertain", 0),
]


async def _run_script(lv: Live, env: dict[str, str]) -> int:
    full_env = {
        **os.environ,
        "CAREBOX_TEST_KEY": KEY.hex(),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        **{k: v for k, v in env.items() if k.startswith("CAREBOX_")},
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        str(lv.store_dir),
        str(lv.config_path),
        env=full_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    if "KILL_IN_DATA" in env:
        while not lv.server.messages:  # the server has the data and stalls before its 250
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    return await asyncio.wait_for(proc.wait(), 60)


async def test_killed_between_state_changes_nothing_lost_nothing_twice(live, dovecot) -> None:
    cases = []
    for n, case in enumerate(CRASHES):
        lv = live(account=dovecot.new_account(hint=f"crash{n}"), name=f"crash{n}")
        (tid,) = await patient_mail(lv, [message(f"c{n}@mail.example", sender=patient(n), to=DOC_ADDR)])
        entry_id = ob.queue_reply(lv.session, tid, f"Reply {n}", now=NOW)
        if "KILL_IN_DATA" in case.env:
            lv.server.faults.stall_after_data = 10.0
        lv.session.close()  # the subprocess owns the store now
        cases.append((case, lv, entry_id))

    codes = await asyncio.gather(*(_run_script(lv, case.env) for case, lv, _ in cases))
    assert codes == [1, 1, 1, 1, 1, 1, -signal.SIGKILL]

    for case, lv, entry_id in cases:
        lv.server.faults.stall_after_data = 0.0
        lv.session = open_live_session(lv.store_dir, lv.config_path)
        first = await ob.flush(lv.session)  # the restart
        second = await ob.flush(lv.session)
        row = OutboxStore(lv.session.store).get(entry_id)
        assert row is not None, case.name  # nothing lost
        assert len(lv.server.messages) == case.delivered, case.name
        assert row.state == case.final, (case.name, first.line(), second.line())
        if case.final == "uncertain":
            assert "may or may not have been delivered" in (row.error or ""), case.name
        assert len(await sent_copies(lv.account, row.envelope.message_id)) == case.copies, case.name
        assert second.sent == [] and second.filed == [], case.name
