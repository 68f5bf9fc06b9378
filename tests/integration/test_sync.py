"""carebox sync end to end against a real Dovecot (no mocked IMAP): initial and incremental sync,
flags both ways, expunges, IDLE, cut connections, killed processes, UIDVALIDITY resets, a hostile
server, the sync lock and the `carebox sync` command."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import format_datetime
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy import select

from carebox.config import Config, load_config
from carebox.mail.imap import (
    ImapClient,
    ImapConnectionError,
    ImapError,
    ImapProtocolError,
    ImapSettings,
    ImapTlsError,
)
from carebox.services import sync as sync_mod
from carebox.services.session import Session
from carebox.services.sync import BackgroundSync, MessageParser, SyncBusy, SyncReport, sync_once
from carebox.services.synclock import SyncLock
from carebox.services.threads import policy_from_config
from carebox.store import tables as T
from carebox.store.crypto import Cipher
from carebox.store.store import Store
from tests.factories import BASE
from tests.servers.dovecot import ImapAccount
from tests.servers.hostile_imap import HostileImapServer, sample_message
from tests.servers.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CRASH_SCRIPT = ROOT / "tests" / "sync_crash.py"
KEY = bytes(range(32))
DOCTOR = "doctor@practice.example"
LIMIT = 30.0


async def bounded(coro, limit: float = LIMIT):
    return await asyncio.wait_for(coro, limit)


# ---- building blocks ---------------------------------------------------------------------------------


def mail(i: int, *, body_bytes: int = 300, sender: str = "", to: str = DOCTOR, reply_to_id: str = "") -> bytes:
    """A plain message with Message-ID <sync-i@test.example>, padded to about ``body_bytes``."""
    sender = sender or f"Patient {i % 4} <patient{i % 4}@mail.example>"
    line = f"message {i} line of text to pad the body out a little further\r\n"
    body = line * max(1, body_bytes // len(line))
    head = [
        f"Message-ID: <sync-{i}@test.example>",
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {'Re: ' if reply_to_id else ''}Question {i % 4}",
        f"Date: {format_datetime(BASE)}",
    ]
    if reply_to_id:
        head += [f"In-Reply-To: <{reply_to_id}>", f"References: <{reply_to_id}>"]
    head += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "", ""]
    return "\r\n".join(head).encode() + body.encode()


def write_config(
    path: Path,
    *,
    host: str,
    port: int,
    username: str,
    ca_file: Path | None,
    tls: str = "implicit",
    sent: str = "Sent",
    extra: tuple[str, ...] = (),
    password_command: str | None = None,
    store_dir: Path | None = None,
) -> Path:
    lines = [
        "[account]",
        f'address = "{DOCTOR}"',
        f'username = "{username}"',
    ]
    if password_command:
        lines.append(f"password_command = '{password_command}'")
    lines += ["", "[account.imap]", f'host = "{host}"', f"port = {port}", f'tls = "{tls}"']
    if ca_file is not None:
        lines.append(f'ca_file = "{ca_file}"')
    lines += ["", "[account.smtp]", 'host = "127.0.0.1"', "port = 465", ""]
    lines += ["[account.folders]", f'sent = "{sent}"', "extra = [" + ", ".join(f'"{x}"' for x in extra) + "]"]
    if store_dir is not None:
        lines += ["", "[store]", f'path = "{store_dir}"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def open_session(store_dir: Path, config_path: Path, password: str) -> Session:
    config = load_config(config_path)
    store = Store.open(store_dir, Cipher(KEY), professional=DOCTOR, create=True)
    if store.get_secret(f"account:{DOCTOR}") != password:
        store.set_secret(f"account:{DOCTOR}", password)
    return Session(config=config, store=store, policy=policy_from_config(config.policy))


@dataclass
class Env:
    account: ImapAccount
    root: Path
    config_path: Path
    store_dir: Path
    session: Session

    @property
    def store(self) -> Store:
        return self.session.store

    def reopen(self) -> None:
        self.session.close()
        self.session = open_session(self.store_dir, self.config_path, self.account.password)

    def configure(self, **kw) -> None:
        a = self.account
        write_config(self.config_path, host=a.host, port=a.port, username=a.username, ca_file=a.ca_file, **kw)
        self.reopen()


@pytest.fixture
def env(tmp_path: Path, imap_account: ImapAccount) -> Iterator[Env]:
    a = imap_account
    config_path = write_config(
        tmp_path / "carebox.toml", host=a.host, port=a.port, username=a.username, ca_file=a.ca_file
    )
    store_dir = tmp_path / "store"
    e = Env(a, tmp_path, config_path, store_dir, open_session(store_dir, config_path, a.password))
    yield e
    e.session.close()


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sync_mod, "BATCH", 3)
    return 3


def factory(**overrides) -> Callable[[ImapSettings], ImapClient]:
    return lambda s: ImapClient(dataclasses.replace(s, **overrides))


class PlainImapClient(ImapClient):
    """A real client that behaves as if the server had neither QRESYNC nor CONDSTORE."""

    async def connect(self) -> None:
        await super().connect()
        self.qresync_enabled = False
        self.condstore_enabled = False


async def server_messages(account: ImapAccount, folder: str = "INBOX") -> dict[int, tuple[str, frozenset[str]]]:
    """UID -> (Message-ID, flags) on the server, through a second connection."""
    from carebox.mail.parse import parse_message

    async with ImapClient(account.settings()) as imap:
        await imap.select(folder, readonly=True)
        uids = await imap.all_uids()
        flags = {f.uid: f.flags for f in await imap.uid_flags(uids)} if uids else {}
        out = {}
        async for batch in imap.fetch_batches(uids):
            for m in batch:
                out[m.uid] = (parse_message(m.raw).message_id, frozenset(flags[m.uid]) - {"\\Recent"})
        return out


@dataclass(frozen=True)
class Row:
    folder: str
    uid: int | None
    message_id: str
    flags: frozenset[str]
    deleted: bool
    thread: bool


def rows(store: Store) -> list[Row]:
    out = []
    with store.engine.connect() as conn:
        for mid, uid, flags, deleted, tid, blob, folder in conn.execute(
            select(
                T.Message.id,
                T.Message.uid,
                T.Message.flags,
                T.Message.deleted_on_server,
                T.Message.thread_id,
                T.Message.message_id_enc,
                T.Folder.name,
            ).join(T.Folder, T.Folder.id == T.Message.folder_id)
        ):
            msgid = store.open_text("message", "message_id", mid, blob)
            out.append(Row(folder, uid, msgid, frozenset(flags.split()), bool(deleted), tid is not None))
    return sorted(out, key=lambda r: (r.folder, r.uid or 0, r.message_id))


def live(store: Store, folder: str) -> dict[int, tuple[str, frozenset[str]]]:
    return {r.uid: (r.message_id, r.flags) for r in rows(store) if r.folder == folder and not r.deleted and r.uid}


async def assert_store_equals_server(store: Store, account: ImapAccount, folders=("INBOX", "Sent")) -> None:
    for folder in folders:
        server = await server_messages(account, folder)
        assert live(store, folder) == server, folder
    all_rows = rows(store)
    ids = [r.message_id for r in all_rows if not r.deleted]
    assert len(ids) == len(set(ids)), "a Message-ID is stored twice"
    assert all(r.thread for r in all_rows), "a message was left without a conversation"


def db_dump(store_dir: Path) -> dict[str, list[tuple]]:
    """Every row of every table, to prove a failed sync wrote nothing."""
    conn = sqlite3.connect(store_dir / "carebox.db")
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}  # noqa: S608
    finally:
        conn.close()


async def append(account: ImapAccount, raw: bytes, folder: str = "INBOX") -> int:
    async with ImapClient(account.settings()) as imap:
        uid = await imap.append(folder, raw)
        assert uid is not None
        return uid


async def set_server_flags(account: ImapAccount, uid: int, add=(), remove=(), folder: str = "INBOX") -> None:
    async with ImapClient(account.settings()) as imap:
        await imap.select(folder)
        await imap.store_flags([uid], add=add, remove=remove)


def expunge(account: ImapAccount, uid: int, folder: str = "INBOX") -> None:
    account.server.doveadm("expunge", "-u", account.username, "mailbox", folder, "uid", str(uid))


def message_key(store: Store, folder: str, uid: int) -> str:
    with store.engine.connect() as conn:
        return conn.execute(
            select(T.Message.id)
            .join(T.Folder, T.Folder.id == T.Message.folder_id)
            .where(T.Folder.name == folder, T.Message.uid == uid)
        ).scalar_one()


def pending_journal(store: Store) -> int:
    with store.engine.connect() as conn:
        return len(conn.execute(select(T.FlagChange.id).where(T.FlagChange.done.is_(False))).all())


# ---- initial and incremental sync, flags both ways ----------------------------------------------------


@pytest.mark.parametrize("mode", ["qresync", "plain"])
async def test_initial_and_incremental_sync_with_flags_both_ways(env: Env, small_batches: int, mode: str) -> None:
    a = env.account
    make = ImapClient if mode == "qresync" else PlainImapClient
    for i in range(1, 8):
        a.deliver(mail(i), flags="\\Seen" if i == 1 else "")
    reply = mail(
        100, sender=f"Dr. Test <{DOCTOR}>", to="Patient 1 <p1@mail.example>", reply_to_id="sync-1@test.example"
    )
    a.deliver(reply, folder="Sent")
    progress: list[sync_mod.SyncProgress] = []

    report = await bounded(sync_once(env.session, client_factory=make, progress=progress.append))
    assert report.added == 8 and report.folders[0].added == 7
    await assert_store_equals_server(env.store, a)
    assert [p.done for p in progress if p.phase == "downloading" and p.folder == "INBOX"] == [0, 3, 6, 7]
    assert live(env.store, "INBOX")[1][1] == frozenset({"\\Seen"})
    # the reply in Sent joined the patient's conversation
    by_id = {m.message_id: m for t in env.store.all_thread_ids() for m in env.store.thread_messages(t)}
    assert by_id["sync-100@test.example"].thread_id == by_id["sync-1@test.example"].thread_id

    before = rows(env.store)
    again = await bounded(sync_once(env.session, client_factory=make))
    assert not again.changed and again.added == 0
    assert rows(env.store) == before

    # the server changes (new mail, a flag, an expunge) while a flag changes locally
    a.deliver(mail(8))
    await append(a, mail(9))
    await set_server_flags(a, 2, add=("\\Flagged",))
    await set_server_flags(a, 1, remove=("\\Seen",))
    expunge(a, 3)
    env.store.set_flags([message_key(env.store, "INBOX", 4)], add=("\\Seen", "\\Answered"))
    assert pending_journal(env.store) == 1

    report = await bounded(sync_once(env.session, client_factory=make))
    inbox = report.folders[0]
    assert (inbox.added, inbox.flags_changed, inbox.deleted_on_server, inbox.pushed) == (2, 2, 1, 1)
    assert pending_journal(env.store) == 0
    server = await server_messages(a)
    assert server[4][1] == frozenset({"\\Seen", "\\Answered"})  # the local change reached the server
    local = live(env.store, "INBOX")
    assert local[2][1] == frozenset({"\\Flagged"}) and local[1][1] == frozenset()
    gone = [r for r in rows(env.store) if r.uid == 3 and r.folder == "INBOX"]
    assert len(gone) == 1 and gone[0].deleted  # expunged on the server, kept here
    await assert_store_equals_server(env.store, a)

    before = rows(env.store)
    last = await bounded(sync_once(env.session, client_factory=make))
    assert last.added == 0 and last.folders[0].deleted_on_server == 0 and last.folders[0].pushed == 0
    assert rows(env.store) == before


def autocheckpoint(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())


async def test_long_download_checkpoints_the_wal_in_the_background(
    env: Env, small_batches: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from carebox.store import syncstate

    monkeypatch.setattr(sync_mod, "DRAIN_MIN", 5)  # a "long" download: the drain runs
    drains: list[syncstate.WalDrain] = []

    class Recorded(syncstate.WalDrain):
        def start(self) -> None:
            drains.append(self)
            super().start()

    monkeypatch.setattr(syncstate, "WalDrain", Recorded)
    a = env.account
    for i in range(1, 11):
        a.deliver(mail(i))
    before = autocheckpoint(env.store)
    during: list[int] = []

    def look(p: sync_mod.SyncProgress) -> None:  # on the loop, between commits: what a commit would do
        if p.phase == "downloading" and p.done:
            during.append(autocheckpoint(env.store))

    report = await bounded(sync_once(env.session, progress=look))
    assert report.added == 10
    await assert_store_equals_server(env.store, a)
    assert len(drains) == 1 and drains[0].checkpoints >= 1
    assert during and set(during) == {0}  # the store's commits left the WAL to the drain
    assert autocheckpoint(env.store) == before > 0  # and checkpoint on commit again afterwards
    with env.store.engine.connect() as conn:  # everything committed reached the database file
        busy, log, done = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    assert busy == 0 and log == done
    # a short download: no drain
    a.deliver(mail(11))
    assert (await bounded(sync_once(env.session))).added == 1
    assert len(drains) == 1


async def test_local_change_wins_over_an_older_server_state_until_pushed(env: Env) -> None:
    a = env.account
    for i in range(1, 4):
        a.deliver(mail(i))
    await bounded(sync_once(env.session))
    # offline: the physician reads message 2; meanwhile another client flags it on the server
    env.store.set_flags([message_key(env.store, "INBOX", 2)], add=("\\Seen",))
    await set_server_flags(a, 2, add=("\\Flagged",))
    await bounded(sync_once(env.session))
    assert live(env.store, "INBOX")[2][1] == frozenset({"\\Seen", "\\Flagged"})
    assert (await server_messages(a))[2][1] == frozenset({"\\Seen", "\\Flagged"})


# ---- parsing: hostile messages do not stall the sync ------------------------------------------------


@pytest.mark.parametrize("mode", ["process", "thread"])
async def test_slow_message_is_stored_raw_and_flagged(env: Env, mode: str) -> None:
    a = env.account
    slow = (
        b"Message-ID: <slow@test.example>\r\nFrom: p@mail.example\r\nSubject: big\r\n"
        b"Content-Type: text/html\r\n\r\n" + b"<p>x</p>" * 400_000
    )
    a.deliver(mail(1))
    a.deliver(slow)
    a.deliver(mail(2))
    parser = MessageParser(mode, budget=0.02)
    try:
        started = time.monotonic()
        report = await bounded(sync_once(env.session, parser=parser))
        assert time.monotonic() - started < 20
    finally:
        parser.close()
    assert report.added == 3 and report.folders[0].malformed == 1
    stored = {m.message_id: m for t in env.store.all_thread_ids() for m in env.store.thread_messages(t)}
    assert stored["slow@test.example"].malformed and "longer than" in stored["slow@test.example"].problem
    assert env.store.raw_message(stored["slow@test.example"].id) == slow  # kept byte for byte
    assert not stored["sync-1@test.example"].malformed and "message 1 line" in stored["sync-1@test.example"].body


async def test_threads_inspected_during_the_download_are_those_threading_computes(
    env: Env, small_batches: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With worker processes, threads are inspected while the download goes on (safety.EarlyInspection
    in the low-priority worker); the stored rows are what a fresh inspector computes afterwards,
    also for conversations that got another message after they were inspected early."""
    from carebox.services import safety as safety_mod

    monkeypatch.setattr(safety_mod, "EARLY_SETTLE", 1)
    settled: list[safety_mod.EarlyInspection] = []
    real_settle = safety_mod.EarlyInspection.settle

    def settle(self: safety_mod.EarlyInspection, **kw: bool) -> set:
        running = real_settle(self, **kw)
        settled.append(self)
        return running

    monkeypatch.setattr(safety_mod.EarlyInspection, "settle", settle)
    a = env.account
    deliver_conversations(a, 30, again=lambda i: i % 7 == 3, again_uid=200)  # again: much later in the mailbox
    parser = MessageParser("process")
    try:
        report = await bounded(sync_once(env.session, parser=parser))
    finally:
        parser.close()
    assert report.added == 30 + 4 + 8
    await assert_store_equals_server(env.store, a)
    assert settled and settled[0].answered > 0

    store = env.store
    ids = store.all_thread_ids()
    got = {t: (f.urgent, f.sender_status, f.suggested_tag, f.category) for t, f in store.thread_facts(ids).items()}
    keys = store.thread_message_keys(ids)
    refs = {r.key: r for r in store.refs_of_threads(ids)}
    fresh = safety_mod.safety_inspector(store, env.session.config)
    want = {}
    for t in ids:
        out = fresh(store, t, [refs[k] for k in keys[t]], {})
        want[t] = (out["urgent"], out["sender_status"], out["suggested_tag"], out.get("category"))
    assert got == want
    assert sum(1 for x in want.values() if x[0]) == 4  # chest pain in 6 conversations, 2 of them answered


def shown_threads(store: Store) -> list[tuple]:
    """Every thread row as the inbox shows it (decrypted, the safety columns too), keyed by the
    (folder, UID) of its messages: thread ids are random."""
    ids = store.all_thread_ids()
    members = {t: tuple(sorted((m.folder, m.uid or 0) for m in store.thread_messages(t))) for t in ids}
    facts = store.thread_facts(ids)
    return sorted(
        (members[r.id], repr(dataclasses.replace(r, id="")), repr(dataclasses.replace(facts[r.id], id="")))
        for r in store.thread_rows(ids)
    )


def rethreaded_from_scratch(store_dir: Path, config_path: Path, password: str) -> list[tuple]:
    """The threads of a copy of the store, every row threaded again by a plain rethread."""
    from carebox.services.safety import safety_inspector
    from carebox.services.threads import rethread

    copy = store_dir.parent / (store_dir.name + "-rethreaded")
    shutil.copytree(store_dir, copy)
    session = open_session(copy, config_path, password)
    try:
        with session.store.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE message SET thread_id = NULL")
            conn.exec_driver_sql("DELETE FROM thread")
        rethread(session.store, session.policy, [safety_inspector(session.store, session.config)])
        return shown_threads(session.store)
    finally:
        session.close()


@pytest.mark.parametrize("crash_after", [0, 6, 11])
async def test_threads_of_a_sync_are_those_of_threading_its_rows_afresh(
    env: Env, small_batches: int, crash_after: int
) -> None:
    """A sync threads the rows it wrote from what it holds in memory (threads.AddedMessages), and
    reads back only the rows of an interrupted earlier pass: the threads, their rows and their
    safety columns are those of threading the stored rows from scratch."""
    a = env.account
    deliver_conversations(a, 16, again=lambda i: i % 6 == 1, again_uid=300, seen=lambda i: i % 3 == 0)
    a.deliver(
        mail(200, sender=f"Dr. Test <{DOCTOR}>", to="New Patient <new@mail.example>"), folder="Sent"
    )  # practice first
    if crash_after:
        env.session.close()
        proc = run_crash(env.config_path, env.store_dir, crash_after)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err.decode(errors="replace")[-2000:]
        env.reopen()
        assert unsummarised(env.store) > 0  # the killed pass left rows to thread
    frozen: list[int] = []  # the collector skips what the pass began with, until it ends

    def progress(p: sync_mod.SyncProgress) -> None:
        if p.phase in ("downloading", "threading"):
            frozen.append(gc.get_freeze_count())

    report = await bounded(sync_once(env.session, progress=progress))
    assert report.added == 16 + 3 + 5 or crash_after
    assert frozen and all(n > 0 for n in frozen) and gc.get_freeze_count() == 0
    await assert_store_equals_server(env.store, a)
    assert unsummarised(env.store) == 0
    got = shown_threads(env.store)
    env.session.close()
    assert got == rethreaded_from_scratch(env.store_dir, env.config_path, a.password)
    assert any("urgent=True" in row for _, row, _ in got) and any("unread=0" in row for _, row, _ in got)
    env.reopen()


# ---- interruptions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut_in_batch", ["0", "1", "half", "all_but_one"])
async def test_cut_connection_mid_batch_then_clean_sync(env: Env, monkeypatch, cut_in_batch: str) -> None:
    batch = 6
    monkeypatch.setattr(sync_mod, "BATCH", batch)
    a = env.account
    for i in range(1, 2 * batch + 1):
        a.deliver(mail(i, body_bytes=20_000))  # equal sizes: byte offsets map to message counts
    a.server.status(a.username)  # let Dovecot index the folder before we measure
    async with TcpProxy(a.host, a.port) as proxy:
        via_proxy = factory(port=proxy.port)
        # calibrate on a throwaway store: bytes before the first body and bytes per message
        marks: list[int] = []

        def mark(p: sync_mod.SyncProgress) -> None:
            if p.phase == "downloading" and p.folder == "INBOX":
                marks.append(proxy.bytes_down)

        probe = open_session(env.root / "probe", env.config_path, a.password)
        try:
            await bounded(sync_once(probe, client_factory=via_proxy, progress=mark))
        finally:
            probe.close()
        async with ImapClient(a.settings(port=proxy.port)) as imap:
            await imap.select("INBOX")
            start = proxy.bytes_down
            await imap.message_sizes(range(1, 2 * batch + 1))
            sizes_len = proxy.bytes_down - start
            start = proxy.bytes_down
            async for _ in imap.fetch_batches(list(range(1, batch + 1)), batch):
                pass
            per = (proxy.bytes_down - start) / batch
        # bytes before the first body: what came before "downloading 0", plus the sizes answer
        base = marks[0] + sizes_len
        k = {"0": 0, "1": 1, "half": batch // 2, "all_but_one": batch - 1}[cut_in_batch]
        # cut in the SECOND batch, in the middle of its (k+1)-th message
        proxy.cut_after(int(base + (batch + k + 0.5) * per))
        with pytest.raises(ImapConnectionError):
            await bounded(sync_once(env.session, client_factory=via_proxy))
        assert proxy.cuts == 1
        # data before state: the first batch is committed, nothing of the second
        assert sorted(live(env.store, "INBOX")) == list(range(1, batch + 1))
        assert env.store.folder("INBOX").uidnext == batch + 1
        report = await bounded(sync_once(env.session, client_factory=via_proxy))
    assert report.folders[0].added == batch
    await assert_store_equals_server(env.store, a)


# ---- killed at every commit point ---------------------------------------------------------------------


def run_crash(config: Path, store_dir: Path, crash_after: int) -> subprocess.Popen:
    environ = dict(os.environ, CAREBOX_SYNC_CRASH_AFTER=str(crash_after), CAREBOX_SYNC_BATCH="3")
    return subprocess.Popen(
        [sys.executable, str(CRASH_SCRIPT), str(config), str(store_dir), KEY.hex()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environ,
        cwd=ROOT,
    )


def unsummarised(store: Store) -> int:
    """Messages whose thread has no summary row, plus summary rows without messages, plus a
    download's provisional-threads mark left set: 0 once threading has finished."""
    from carebox.store.syncstate import threads_pending_after

    with store.engine.connect() as conn:
        orphans = conn.exec_driver_sql(
            "SELECT count(*) FROM message m LEFT JOIN thread t ON t.id = m.thread_id WHERE t.id IS NULL"
        ).scalar_one()
        empty = conn.exec_driver_sql(
            "SELECT count(*) FROM thread t WHERE NOT EXISTS (SELECT 1 FROM message m WHERE m.thread_id = t.id)"
        ).scalar_one()
    return int(orphans) + int(empty) + (threads_pending_after(store) is not None)


def final_state(store: Store) -> tuple[list[Row], int, int]:
    return rows(store), pending_journal(store), unsummarised(store)


async def test_killed_at_every_commit_point_then_restarted(env: Env, small_batches: int) -> None:
    a = env.account
    for i in range(1, 5):
        a.deliver(mail(i))
    await bounded(sync_once(env.session))
    # offline change waiting to be pushed, then the server moves on
    env.store.set_flags([message_key(env.store, "INBOX", 3)], add=("\\Flagged",))
    env.session.close()
    snapshot = env.root / "snapshot"
    shutil.copytree(env.store_dir, snapshot)
    for i in range(5, 12):
        a.deliver(mail(i))
    reply = mail(50, sender=f"Dr. Test <{DOCTOR}>", to="p1@mail.example", reply_to_id="sync-1@test.example")
    a.deliver(reply, folder="Sent")
    for i in range(60, 63):
        a.deliver(mail(i), folder="Archive")  # a new folder: its first batch has no position yet
    await set_server_flags(a, 1, add=("\\Seen",))
    expunge(a, 2)
    env.configure(extra=("Archive",))
    env.session.close()

    def fresh(name: str) -> Path:
        target = env.root / name
        shutil.copytree(snapshot, target)
        return target

    ref_dir = fresh("reference")
    ref = run_crash(env.config_path, ref_dir, 0)
    out, err = ref.communicate(timeout=120)
    assert ref.returncode == 0, err.decode(errors="replace")[-2000:]
    commits = int(out.decode().split("commits=")[1].split()[0])
    assert commits >= 10
    ref_session = open_session(ref_dir, env.config_path, a.password)
    try:
        expected = final_state(ref_session.store)
        assert expected[1] == 0 and expected[2] == 0
        await assert_store_equals_server(ref_session.store, a, ("INBOX", "Sent", "Archive"))
    finally:
        ref_session.close()

    # every crash point, a few processes at a time
    dirs = {n: fresh(f"crash-{n}") for n in range(1, commits + 1)}
    results: dict[int, int] = {}
    pending = list(dirs)
    running: dict[int, subprocess.Popen] = {}
    while pending or running:
        while pending and len(running) < 3:
            n = pending.pop(0)
            running[n] = run_crash(env.config_path, dirs[n], n)
        for n, proc in list(running.items()):
            if proc.poll() is not None:
                proc.communicate()
                results[n] = proc.returncode
                del running[n]
        await asyncio.sleep(0.05)
    assert all(rc == 1 for rc in results.values()), results

    for n, store_dir in dirs.items():
        session = open_session(store_dir, env.config_path, a.password)
        try:
            await bounded(sync_once(session))
            assert final_state(session.store) == expected, f"after a crash at commit {n}"
            second = await bounded(sync_once(session))
            assert second.added == 0 and not any(f.deleted_on_server or f.pushed for f in second.folders)
            assert final_state(session.store) == expected, f"second sync after a crash at commit {n}"
        finally:
            session.close()


# ---- UIDVALIDITY reset -----------------------------------------------------------------------------


async def test_uidvalidity_reset_rematches_and_deletes_nothing(env: Env) -> None:
    a = env.account
    paths = [a.deliver(mail(i)) for i in range(1, 7)]
    await bounded(sync_once(env.session))
    env.store.set_flags([message_key(env.store, "INBOX", 5)], add=("\\Flagged",))  # waiting to be pushed
    before = rows(env.store)
    old_ids = {r.message_id for r in before}
    paths[1].unlink()  # the server loses message 2 in its rebuild
    a.deliver(mail(20))  # and has a new one
    new_validity = a.server.recreate_mailbox(a.username)

    report = await bounded(sync_once(env.session))
    inbox = report.folders[0]
    assert inbox.reset and inbox.refound == 5 and inbox.not_refound == 1 and inbox.added == 1
    assert report.notice is not None and "\n" not in report.notice
    assert "renumbered" in report.notice and "Nothing was deleted" in report.notice
    after = rows(env.store)
    assert old_ids <= {r.message_id for r in after}  # no local copy deleted
    assert len(after) == len(before) + 1
    lost = [r for r in after if r.message_id == "sync-2@test.example"]
    assert len(lost) == 1 and lost[0].deleted and lost[0].uid is None
    assert env.store.folder("INBOX").uidvalidity == new_validity
    await assert_store_equals_server(env.store, a)
    uid5 = next(u for u, v in live(env.store, "INBOX").items() if v[0] == "sync-5@test.example")
    assert (await server_messages(a))[uid5][1] == frozenset({"\\Flagged"})  # the journaled change followed it
    # the notice is given once; the next sync is quiet and changes nothing
    snapshot = rows(env.store)
    quiet = await bounded(sync_once(env.session))
    assert quiet.notice is None and rows(env.store) == snapshot


# ---- background sync: IDLE, half-open connections, offline changes -----------------------------------


def deliver_conversations(
    a: ImapAccount,
    n: int,
    *,
    again: Callable[[int], bool],
    again_uid: int,
    seen: Callable[[int], bool] = lambda i: False,
) -> None:
    """Patient messages 1..n (every 5th mentions chest pain; ``seen`` ones flagged \\Seen); where
    ``again(i)``, the same patient writes again (``again_uid + i``, in reply); the practice answers
    every 4th, from Sent (``100 + i``)."""
    for i in range(1, n + 1):
        raw = mail(i)
        if i % 5 == 0:
            raw = raw.replace(b"line of text", b"line, I have chest pain and")
        a.deliver(raw, flags="\\Seen" if seen(i) else "")
        if again(i):
            a.deliver(
                mail(
                    again_uid + i,
                    sender=f"Patient {i % 4} <patient{i % 4}@mail.example>",
                    reply_to_id=f"sync-{i}@test.example",
                )
            )
    for i in range(1, n + 1, 4):
        a.deliver(
            mail(
                100 + i,
                sender=f"Dr. Test <{DOCTOR}>",
                to="Patient <p@mail.example>",
                reply_to_id=f"sync-{i}@test.example",
            ),
            folder="Sent",
        )


async def wait_for(predicate: Callable[[], bool], limit: float = LIMIT) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_background_sync_sees_mail_appended_while_idling(env: Env) -> None:
    a = env.account
    a.deliver(mail(1))
    statuses: list[str] = []
    bg = BackgroundSync(env.session, on_status=lambda s: statuses.append(s.line()), resync_every=60)
    bg.start()
    try:
        await wait_for(lambda: bg.syncs >= 1 and bg.status.state == "connected")
        assert len(live(env.store, "INBOX")) == 1
        await asyncio.sleep(0.3)  # inside IDLE now
        await append(a, mail(2))
        await wait_for(lambda: len(live(env.store, "INBOX")) == 2 and bg.syncs >= 2, 15)
        assert "connected" in statuses and any(s.startswith("syncing") for s in statuses)
        # a local change is pushed by the next sync, which wake() starts at once
        env.store.set_flags([message_key(env.store, "INBOX", 1)], add=("\\Flagged",))
        bg.wake()
        await wait_for(lambda: pending_journal(env.store) == 0, 15)
        assert (await server_messages(a))[1][1] == frozenset({"\\Flagged"})
    finally:
        await bg.stop()
    assert bg.status.line() == "sync stopped"
    await assert_store_equals_server(env.store, a)
    await append(a, mail(3))  # it can be started again after stop()
    bg.start()
    try:
        await wait_for(lambda: len(live(env.store, "INBOX")) == 3 and bg.status.state == "connected")
    finally:
        await bg.stop()


async def test_background_sync_detects_a_dead_connection_and_reconnects(env: Env) -> None:
    a = env.account
    a.deliver(mail(1))
    async with TcpProxy(a.host, a.port) as proxy:
        bg = BackgroundSync(
            env.session,
            client_factory=factory(port=proxy.port, timeout=1.5),
            resync_every=1.0,
            backoff=(0.2, 0.5),
        )
        bg.start()
        try:
            await wait_for(lambda: bg.status.state == "connected")
            proxy.stall()  # half-open: nothing gets through, no socket closes
            await wait_for(lambda: bg.status.state == "offline", 15)
            line = bg.status.line()
            assert line.startswith("offline since ") and len(line.split(":")[0]) > 0
            assert "\n" not in line and bg.status.last_error
            # offline: the physician flags a message; new mail arrives on the server
            env.store.set_flags([message_key(env.store, "INBOX", 1)], add=("\\Flagged",))
            a.deliver(mail(2))
            await proxy.cut()
            proxy.resume()
            await wait_for(lambda: bg.status.state == "connected" and len(live(env.store, "INBOX")) == 2, 20)
            await wait_for(lambda: pending_journal(env.store) == 0, 10)
            assert bg.status.offline_since is None and bg.status.last_error is None
        finally:
            await bg.stop()
    assert (await server_messages(a))[1][1] == frozenset({"\\Flagged"})


async def test_background_sync_waits_while_another_process_syncs(env: Env) -> None:
    env.account.deliver(mail(1))
    other = SyncLock(env.store_dir).acquire()
    bg = BackgroundSync(env.session, backoff=(0.2,))
    bg.start()
    try:
        await wait_for(lambda: bg.status.state == "busy")
        assert bg.status.line() == "not syncing: another carebox is syncing this store"
        assert live(env.store, "INBOX") == {}
        other.release()
        await wait_for(lambda: len(live(env.store, "INBOX")) == 1)
    finally:
        other.release()
        await bg.stop()


async def test_background_sync_stop_ends_a_task_that_lost_a_cancellation(env: Env) -> None:
    """Python 3.11's wait_for can lose a cancellation (CPython gh-86296): stop() must still end the task."""
    bg = BackgroundSync(env.session)
    lost: list[bool] = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost.append(True)  # the first cancellation is lost, as wait_for may lose it

    bg._main = stubborn  # type: ignore[method-assign]
    bg.start()
    await asyncio.sleep(0.1)
    task = bg._task
    stopping = asyncio.ensure_future(bg.stop())
    await asyncio.wait({stopping}, timeout=20)  # unlike wait_for, does not cancel stop() (nor the task through it)
    ended = stopping.done()
    if not ended:  # stop() hangs: end it all, then fail
        stopping.cancel()
        assert task is not None
        task.cancel()
        await asyncio.wait({stopping, task})
    assert ended, "stop() did not end a task that lost a cancellation"
    assert lost == [True]
    assert not bg.running and bg.status.state == "stopped"


async def test_background_sync_pauses_while_the_store_is_locked(env: Env) -> None:
    a = env.account
    a.deliver(mail(1))
    bg = BackgroundSync(env.session, resync_every=60, backoff=(0.2,))
    bg.start()
    try:
        await wait_for(lambda: bg.status.state == "connected")
        env.store.cipher.forget()  # auto-lock: the key is gone from memory
        a.deliver(mail(2))
        bg.wake()
        await wait_for(lambda: bg.status.state == "paused")
        assert bg.status.line() == "sync paused while carebox is locked"
        env.store.cipher = Cipher(KEY)  # unlocked again
        bg.wake()
        await wait_for(lambda: bg.status.state == "connected" and len(live(env.store, "INBOX")) == 2)
    finally:
        await bg.stop()


async def test_too_large_message_and_missing_folder_are_reported_not_fatal(env: Env) -> None:
    a = env.account
    a.deliver(mail(1))
    a.deliver(mail(2, body_bytes=50_000))
    a.deliver(mail(3))
    env.configure(extra=("Nowhere",))
    report = await bounded(sync_once(env.session, client_factory=factory(max_literal_bytes=20_000)))
    inbox = report.folders[0]
    assert inbox.added == 2 and inbox.too_large == {2: len(mail(2, body_bytes=50_000))}
    assert [f.folder for f in report.folders if f.missing] == ["Nowhere"]
    assert report.notice is not None and "\n" not in report.notice
    assert "UID 2 (49 KB) is larger than the 20 KB download limit and was not downloaded" in report.notice
    assert "'Nowhere' does not exist on the server" in report.notice
    assert sorted(live(env.store, "INBOX")) == [1, 3]


# ---- a hostile server: clear errors, untouched store ------------------------------------------------


@dataclass
class Hostile:
    env: Env
    certs: object

    async def presync(self) -> None:
        """Messages 1-3 synced from a well-behaved server first, so "untouched" means something."""
        async with HostileImapServer(cert=self.certs.cert, key=self.certs.key) as srv:
            self.point_at(srv.port, self.certs.cert)
            await bounded(sync_once(self.env.session))
        assert len(live(self.env.store, "INBOX")) == 3

    def point_at(self, port: int, ca_file: Path | None, tls: str = "implicit") -> None:
        write_config(self.env.config_path, host="127.0.0.1", port=port, username="user", ca_file=ca_file, tls=tls)
        self.env.session.close()
        self.env.session = open_session(self.env.store_dir, self.env.config_path, "pw")


@pytest.fixture
async def hostile(env: Env, tls_certs) -> Hostile:
    h = Hostile(env, tls_certs)
    await h.presync()
    return h


SIX = {u: sample_message(u) for u in range(1, 7)}


@pytest.mark.parametrize(
    ("fault", "error", "expected"),
    [
        ("literal_too_long", ImapProtocolError, "malformed"),
        ("huge_literal", ImapProtocolError, "10.0 GB"),
        ("expunge_inside_item", ImapProtocolError, "malformed"),
    ],
)
async def test_hostile_fetch_faults_leave_the_store_untouched(hostile: Hostile, fault, error, expected) -> None:
    env = hostile.env
    before = db_dump(env.store_dir)
    async with HostileImapServer(
        fault=fault, cert=hostile.certs.cert, key=hostile.certs.key, messages=dict(SIX)
    ) as srv:
        hostile.point_at(srv.port, hostile.certs.cert)
        tracemalloc.start()
        try:
            with pytest.raises(error) as err:
                await bounded(sync_once(env.session))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, peak  # the 10 GB announcement was refused, not buffered
    msg = str(err.value)
    assert expected in msg and "\n" not in msg and "urgent" not in msg
    assert db_dump(env.store_dir) == before


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("starttls_refused", "refused STARTTLS"),
        ("starttls_absent", "does not offer STARTTLS"),
        ("untrusted", "not trusted"),
        ("wrong_host", "does not match host name 127.0.0.1"),
    ],
)
async def test_hostile_tls_faults_leave_the_store_untouched(hostile: Hostile, case: str, expected: str) -> None:
    env, certs = hostile.env, hostile.certs
    before = db_dump(env.store_dir)
    kwargs: dict = {"cert": certs.cert, "key": certs.key, "messages": dict(SIX)}
    tls, ca_file = "implicit", certs.cert
    if case.startswith("starttls"):
        kwargs.update(fault=case, tls=False)
        tls = "starttls"
    elif case == "untrusted":
        ca_file = env.account.ca_file  # a CA that did not sign this server's certificate
    else:
        kwargs.update(cert=certs.wrong_cert, key=certs.wrong_key)
        ca_file = certs.wrong_cert
    async with HostileImapServer(**kwargs) as srv:
        hostile.point_at(srv.port, ca_file, tls=tls)
        with pytest.raises(ImapTlsError) as err:
            await bounded(sync_once(env.session))
        assert srv.logins == []
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert db_dump(env.store_dir) == before


async def test_unsolicited_expunge_and_exists_mid_fetch_do_not_mix_up_messages(hostile: Hostile) -> None:
    env, certs = hostile.env, hostile.certs
    fault = "unsolicited_mid_fetch"
    async with HostileImapServer(fault=fault, cert=certs.cert, key=certs.key, messages=dict(SIX)) as srv:
        hostile.point_at(srv.port, certs.cert)
        report = await bounded(sync_once(env.session))
    assert report.folders[0].added == 3
    stored = {m.uid: m for t in env.store.all_thread_ids() for m in env.store.thread_messages(t) if m.folder == "INBOX"}
    assert sorted(stored) == [1, 2, 3, 4, 5, 6]
    for uid, m in stored.items():  # each body belongs to its own UID
        assert m.message_id == f"hostile-{uid}@example.org" and f"Body of message {uid}." in m.body
        assert env.store.raw_message(m.id) == sample_message(uid)


# ---- the sync lock and the command --------------------------------------------------------------------


async def test_sync_lock_held_elsewhere_means_nothing_happens(env: Env) -> None:
    env.account.deliver(mail(1))
    before = db_dump(env.store_dir)
    with SyncLock(env.store_dir), pytest.raises(SyncBusy) as err:
        await bounded(sync_once(env.session))
    assert "another carebox is already syncing this store" in str(err.value)
    assert db_dump(env.store_dir) == before
    await bounded(sync_once(env.session))
    assert len(live(env.store, "INBOX")) == 1


def carebox_cli(
    config: Path,
    *args: str,
    home: Path,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    argv: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CAREBOX_") and k != "PYTHON_KEYRING_BACKEND"}
    environ.update(
        CAREBOX_PASSPHRASE="correct horse battery staple",
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
    )
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, *(argv or ["-m", "carebox", "--config", str(config), *args])],
        capture_output=True,
        text=True,
        env=environ,
        cwd=ROOT,
        timeout=timeout,
    )


async def test_carebox_sync_command(tmp_path: Path, imap_account: ImapAccount) -> None:
    a = imap_account
    for i in range(1, 4):
        a.deliver(mail(i))
    pw = tmp_path / "pw"
    pw.write_text(a.password)
    store_dir = tmp_path / "store"
    config = write_config(
        tmp_path / "c.toml",
        host=a.host,
        port=a.port,
        username=a.username,
        ca_file=a.ca_file,
        password_command=f"cat {pw}",
        store_dir=store_dir,
    )
    first = carebox_cli(config, "sync", home=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "INBOX: downloading 3 messages" in first.stdout and "INBOX: 3 new" in first.stdout
    assert first.stderr == ""
    second = carebox_cli(config, "sync", home=tmp_path)  # nothing changed: answered without the store
    assert second.returncode == 0 and "INBOX: up to date" in second.stdout, second.stderr
    a.deliver(mail(4))
    third = carebox_cli(config, "sync", home=tmp_path)
    assert third.returncode == 0 and "INBOX: 1 new" in third.stdout, third.stderr

    with SyncLock(store_dir):
        busy = carebox_cli(config, "sync", home=tmp_path)
    assert busy.returncode == 1
    assert busy.stderr.startswith("carebox: another carebox is already syncing this store")
    assert busy.stderr.count("\n") == 1 and "Traceback" not in busy.stderr

    bad = write_config(
        tmp_path / "bad.toml",
        host=a.host,
        port=a.port,
        username=a.username,
        ca_file=None,
        password_command=f"cat {pw}",
        store_dir=store_dir,
    )
    untrusted = carebox_cli(bad, "sync", home=tmp_path)
    assert untrusted.returncode == 1 and untrusted.stderr.count("\n") == 1
    assert "is not trusted" in untrusted.stderr and "Traceback" not in untrusted.stderr


def test_report_lines_are_one_line_each() -> None:
    r = SyncReport(folders=[sync_mod.FolderReport("INBOX", added=2), sync_mod.FolderReport("Sent", missing=True)])
    r.notices += ["a", "b"]
    assert "\n" not in r.line() and r.notice == "a | b"
    status = sync_mod.SyncStatus(state="syncing", done=5, total=250)
    assert status.line() == "syncing 5 of 250"
    assert isinstance(ImapError("x"), Exception)


# ---- the first sync of a new store: login, key and store overlap ---------------------------------------


def _first_client() -> Recorded:
    """The client ``sync_new_store`` made (it is made once ``ready`` runs), once its connect ended."""
    deadline = time.monotonic() + LIMIT
    while not Recorded.made and time.monotonic() < deadline:
        time.sleep(0.005)
    assert Recorded.made and Recorded.made[0].done.wait(LIMIT)
    return Recorded.made[0]


class Recorded(ImapClient):
    """A real client that notes when its connect ended (``connected_or_failed``)."""

    made: ClassVar[list[Recorded]] = []

    def __init__(self, settings: ImapSettings) -> None:
        super().__init__(settings)
        self.done = threading.Event()
        Recorded.made.append(self)

    async def connect(self) -> None:
        try:
            await super().connect()
        finally:
            self.done.set()


@dataclass
class FirstSync:
    """What ``sync_new_store`` is given by ``carebox sync``, with hooks to order it."""

    config: Config
    store_dir: Path
    made_store: list[str] = dataclasses.field(default_factory=list)  # calls of make_store
    ready_done: list[float] = dataclasses.field(default_factory=list)

    def key(self):
        from concurrent.futures import Future

        from carebox.store.keys import new_data_key

        fut: Future = Future()
        fut.set_result(new_data_key(passphrase="correct horse battery", scrypt_n=2**12))
        return fut

    def make_store(self, key) -> Callable[[], Session]:
        def make() -> Session:
            self.made_store.append("made")
            data_key = key.result().save(self.store_dir)
            store = Store.open(self.store_dir, Cipher(data_key), professional=DOCTOR, create=True)
            return Session(config=self.config, store=store, policy=policy_from_config(self.config.policy))

        return make


@pytest.fixture
def first(tmp_path: Path, imap_account: ImapAccount) -> FirstSync:
    Recorded.made = []
    a = imap_account
    pw = tmp_path / "pw"
    pw.write_text(a.password)
    store_dir = tmp_path / "store"
    path = write_config(
        tmp_path / "c.toml",
        host=a.host,
        port=a.port,
        username=a.username,
        ca_file=a.ca_file,
        password_command=f"cat {pw}",
        store_dir=store_dir,
    )
    return FirstSync(load_config(path), store_dir)


def _wrong_password(first: FirstSync, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("not the password")


async def test_first_sync_login_refused_while_the_key_is_made_leaves_no_store(first: FirstSync, tmp_path) -> None:
    _wrong_password(first, tmp_path)
    key = first.key()

    def ready() -> None:  # still "making the key" when the login is refused
        assert not _first_client().connected
        time.sleep(0.2)
        first.ready_done.append(time.monotonic())

    with pytest.raises(ImapError, match="refused the login") as err:
        await bounded(
            sync_mod.sync_new_store(
                first.config, first.make_store(key), ready=ready, new_key=key, client_factory=Recorded
            )
        )
    assert "\n" not in str(err.value)
    assert first.ready_done, "the failure was raised before the key thread had finished"
    assert first.made_store == [] and not first.store_dir.exists()
    assert not Recorded.made[0].connected


async def test_first_sync_key_failure_with_the_connection_open_closes_it_and_writes_nothing(
    first: FirstSync, imap_account: ImapAccount
) -> None:
    from carebox.store.keys import WrongPassphrase

    imap_account.deliver(mail(1))
    key = first.key()

    def ready() -> None:  # the key fails once the connection is open and logged in
        assert _first_client().connected
        raise WrongPassphrase("wrong passphrase in CAREBOX_PASSPHRASE / CAREBOX_PASSCOMMAND")

    with pytest.raises(WrongPassphrase, match="wrong passphrase") as err:
        await bounded(
            sync_mod.sync_new_store(
                first.config, first.make_store(key), ready=ready, new_key=key, client_factory=Recorded
            )
        )
    assert "\n" not in str(err.value)
    assert first.made_store == [] and not first.store_dir.exists()
    assert not Recorded.made[0].connected  # logged out and closed


@pytest.mark.parametrize("ahead", [1, 2])
async def test_first_sync_downloads_while_the_store_opens_and_stores_everything(
    first: FirstSync, imap_account: ImapAccount, small_batches: int, ahead: int
) -> None:
    """With parse workers, batches are fetched, parsed and sealed before the store exists; they are
    committed first and nothing is lost or doubled (BATCH 3: the first slice is two batches)."""
    for i in range(1, 21):
        imap_account.deliver(mail(i, reply_to_id="sync-1@test.example" if i % 5 == 0 else ""))
    key = first.key()
    parsed = threading.Event()
    calls: list[int] = []

    class Counting(MessageParser):
        async def parse_sealed(self, raws, dates, sealing, *, pool=False):
            calls.append(len(raws))
            if len(calls) >= ahead:
                parsed.set()
            return await super().parse_sealed(raws, dates, sealing, pool=pool)

    def ready() -> None:  # the store's modules "load" until `ahead` batches were handed to the workers
        assert parsed.wait(LIMIT)

    made_after: list[int] = []
    make = first.make_store(key)

    def make_store() -> Session:
        made_after.append(len(calls))
        return make()

    seen: list[str] = []
    parser = Counting(mode="process")
    try:
        report = await bounded(
            sync_mod.sync_new_store(
                first.config,
                make_store,
                ready=ready,
                new_key=key,
                parser=parser,
                progress=lambda p: seen.append(p.phase),
            ),
            60,
        )
    finally:
        parser.close()
    assert made_after and made_after[0] >= ahead  # downloaded and parsed before the store was made
    assert report.folders[0].added == 20
    assert seen.index("downloading") < seen.index("threading")
    key_bytes = key.result().data_key
    store = Store.open(first.store_dir, Cipher(key_bytes), professional=DOCTOR)
    try:
        await assert_store_equals_server(store, imap_account)
    finally:
        store.close()


@pytest.mark.parametrize("case", ["login", "down", "untrusted", "passcommand"])
def test_first_sync_command_failures_are_one_line_and_leave_no_store(
    tmp_path: Path, imap_account: ImapAccount, case: str
) -> None:
    a = imap_account
    pw = tmp_path / "pw"
    pw.write_text("not the password" if case == "login" else a.password)
    store_dir = tmp_path / "store"
    port = a.port
    if case == "down":
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    config = write_config(
        tmp_path / "c.toml",
        host=a.host,
        port=port,
        username=a.username,
        ca_file=None if case == "untrusted" else a.ca_file,
        password_command=f"cat {pw}",
        store_dir=store_dir,
    )
    extra = {"CAREBOX_PASSPHRASE": "", "CAREBOX_PASSCOMMAND": "false"} if case == "passcommand" else {}
    res = carebox_cli(config, "sync", home=tmp_path, env=extra)
    expected = {
        "login": "refused the login",
        "down": "connection refused",
        "untrusted": "is not trusted",
        "passcommand": "CAREBOX_PASSCOMMAND failed",
    }[case]
    assert res.returncode == 1 and expected in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert sorted(p.name for p in store_dir.iterdir()) == ["sync.lock"]  # no key, no database


def test_no_change_sync_uses_the_remembered_settings_until_the_config_changes(
    tmp_path: Path, imap_account: ImapAccount
) -> None:
    """A no-change sync after a first one reads the settings it needs from the store folder and
    never imports pydantic; any change to the config file is validated again (and a mistake in
    it is reported as before, not hidden by the remembered settings)."""
    a = imap_account
    a.deliver(mail(1))
    pw = tmp_path / "pw"
    pw.write_text(a.password)
    store_dir = tmp_path / "store"
    config = write_config(
        tmp_path / "c.toml",
        host=a.host,
        port=a.port,
        username=a.username,
        ca_file=a.ca_file,
        password_command=f"cat {pw}",
        store_dir=store_dir,
    )
    assert carebox_cli(config, "sync", home=tmp_path).returncode == 0
    remembered = json.loads((store_dir / "sync-settings.json").read_text())
    assert remembered["username"] == a.username and a.password not in json.dumps(remembered)

    probe = (
        "import sys; from carebox.cli import main; code = main(['--config', sys.argv[1], 'sync']); "
        "print('pydantic loaded' if 'pydantic' in sys.modules else 'no pydantic'); sys.exit(code)"
    )
    again = carebox_cli(config, home=tmp_path, argv=["-c", probe, str(config)])
    assert again.returncode == 0 and "INBOX: up to date" in again.stdout and "no pydantic" in again.stdout

    a.deliver(mail(2))  # a change: the full sync runs (validating the config) and says so
    third = carebox_cli(config, "sync", home=tmp_path)
    assert third.returncode == 0 and "INBOX: 1 new" in third.stdout, third.stderr

    a.deliver(mail(3))  # a change, and a wrong passphrase: one line, the store as it was
    before = db_dump(store_dir)
    wrong = carebox_cli(config, "sync", home=tmp_path, env={"CAREBOX_PASSPHRASE": "not the passphrase"})
    assert wrong.returncode == 1 and wrong.stderr.startswith("carebox: wrong passphrase"), wrong.stderr
    assert wrong.stderr.count("\n") == 1 and db_dump(store_dir) == before

    config.write_text(config.read_text() + "\n[unknown]\nkey = 1\n")
    broken = carebox_cli(config, "sync", home=tmp_path)
    assert broken.returncode == 2 and "unknown key 'unknown'" in broken.stderr, broken.stderr
