"""Outbox throughput: 200 replies to a local SMTP server (aiosmtpd, implicit TLS + AUTH).

1. SmtpSender over ONE connection for all 200 vs a new connection (TLS handshake + AUTH) for
   each: messages per second and the ratio.
2. The whole outbox path: 200 replies queued (sealed, local Sent copies, rethreaded), then one
   ``flush`` that sends them over one connection and files them in a private Dovecot's Sent
   folder (search + APPEND) with \\Answered set on the patients' messages. Target: sent AND filed
   in under 10 s. Needs root and dovecot-imapd (tests/servers/dovecot.py); skipped otherwise.

    .venv/bin/python bench/outbox.py [N]

Prints figures only; no assertions.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from carebox.config import AccountConfig, Config, IdentityConfig, ServerConfig
from carebox.domain.models import Address
from carebox.mail.build import Identity, build_new, make_message_id
from carebox.mail.imap import ImapClient
from carebox.mail.smtp import Outcome, SmtpSender, SmtpSettings
from carebox.mail.tls import TlsMode
from carebox.services import outbox
from carebox.services.accounts import imap_settings
from carebox.services.session import Session
from carebox.services.threads import policy_from_config, rethread
from carebox.store.crypto import Cipher
from carebox.store.store import NewMessage, Store
from tests.factories import message
from tests.servers.dovecot import Dovecot, dovecot_available
from tests.servers.smtp_server import SmtpTestServer, make_smtp_cert

DOCTOR = "doctor@practice.example"
FROM = Identity("Dr. Anna Berg", DOCTOR)


def smtp_settings_for(server: SmtpTestServer) -> SmtpSettings:
    return SmtpSettings(
        host=server.host,
        port=server.port,
        username=server.username,
        password=server.password,
        tls=TlsMode.IMPLICIT,
        ca_file=server.ca_file,
    )


def raws(n: int) -> list[bytes]:
    return [
        build_new(
            identity=FROM,
            to=Address(f"Patient {i}", f"patient{i}@mail.example"),
            subject=f"Your results {i}",
            body="Dear patient,\n\nyour results are fine.\n\nKind regards\n" * 3,
            message_id=make_message_id(DOCTOR),
            date=datetime.now(UTC),
        )
        for i in range(n)
    ]


async def one_connection(server: SmtpTestServer, messages: list[bytes]) -> float:
    start = time.perf_counter()
    async with SmtpSender(smtp_settings_for(server)) as sender:
        for i, raw in enumerate(messages):
            result = await sender.send(raw, DOCTOR, [f"patient{i}@mail.example"])
            assert result.outcome is Outcome.SENT, result.detail
    return time.perf_counter() - start


async def connection_each(server: SmtpTestServer, messages: list[bytes]) -> float:
    start = time.perf_counter()
    for i, raw in enumerate(messages):
        async with SmtpSender(smtp_settings_for(server)) as sender:
            result = await sender.send(raw, DOCTOR, [f"patient{i}@mail.example"])
            assert result.outcome is Outcome.SENT, result.detail
    return time.perf_counter() - start


class TimedFiler:
    def __init__(self, inner: outbox.ImapFiler) -> None:
        self.inner = inner
        self.seconds = 0.0

    async def file(self, items):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return await self.inner.file(items)
        finally:
            self.seconds += time.perf_counter() - start


async def full_path(n: int, cert_dir: Path) -> None:
    if not dovecot_available():
        print("sent+filed: skipped (needs root and dovecot-imapd for the private Dovecot)")
        return
    work = Path(tempfile.mkdtemp(prefix="carebox-bench-outbox-"))
    with Dovecot() as dc:
        account = dc.new_account("bench")
        server = SmtpTestServer(
            "implicit", make_smtp_cert(cert_dir), username=account.username, password=account.password
        )
        server.start()
        try:
            config = Config(
                account=AccountConfig(
                    address=DOCTOR,
                    username=account.username,
                    imap=ServerConfig(host="127.0.0.1", port=account.port, ca_file=account.ca_file),
                    smtp=ServerConfig(host="127.0.0.1", port=server.port, ca_file=server.ca_file),
                ),
                identity=IdentityConfig(physician_name="Dr. Anna Berg", practice_name="Berg Practice"),
            )
            store = Store.open(work / "store", Cipher(b"b" * 32), professional=DOCTOR, create=True)
            store.set_secret(f"account:{DOCTOR}", account.password)
            session = Session(config=config, store=store, policy=policy_from_config(config.policy))
            # The patients' messages: on the server (APPEND gives their UIDs) and in the store.
            doc = Address("Dr. Anna Berg", DOCTOR)
            items = [
                message(f"p{i}@mail.example", sender=Address(f"Patient {i}", f"patient{i}@mail.example"), to=doc)
                for i in range(n)
            ]
            stored = []
            async with ImapClient(account.settings()) as imap:
                for it in items:
                    uid = await imap.append("INBOX", it.raw)
                    stored.append(NewMessage(raw=it.raw, parsed=it.parsed, uid=uid))
            store.add_messages("INBOX", stored, role="inbox")
            rethread(store, session.policy)
            thread_ids = store.all_thread_ids()

            now = datetime.now(UTC)
            start = time.perf_counter()
            result = outbox.queue_bulk(
                session, thread_ids, "Dear {patient_first_name},\n\nyour results are fine.\n\n{physician_name}", now=now
            )
            queued_s = time.perf_counter() - start
            assert len(result.queued) == n, result.failed

            filer = TimedFiler(outbox.ImapFiler(imap_settings(config, store), "Sent"))
            start = time.perf_counter()
            report = await outbox.flush(session, filer=filer, now=now + timedelta(seconds=1))
            flush_s = time.perf_counter() - start
            print(f"queue {n} replies (sealed, local Sent copy, rethread): {queued_s:.2f} s ({n / queued_s:.0f} per s)")
            print(
                f"flush: {len(report.sent)} sent and {len(report.filed)} filed in {flush_s:.2f} s "
                f"(SMTP part {flush_s - filer.seconds:.2f} s, filing part {filer.seconds:.2f} s; "
                f"{server.connections} SMTP connection(s)); target < 10 s: {'met' if flush_s < 10 else 'MISSED'}"
            )
            print(f"report: {report.line()}")
            store.close()
        finally:
            server.stop()
            shutil.rmtree(work, ignore_errors=True)


async def main(n: int) -> None:
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    cert_dir = Path(tempfile.mkdtemp(prefix="carebox-bench-cert-"))
    try:
        cert = make_smtp_cert(cert_dir)
        messages = raws(n)
        with SmtpTestServer("implicit", cert) as server:
            await one_connection(server, messages[:5])  # warm up
            one = await one_connection(server, messages)
            each = await connection_each(server, messages)
        print(f"{n} messages, one connection:      {one:6.2f} s  {n / one:7.1f} msg/s")
        print(f"{n} messages, a connection each:   {each:6.2f} s  {n / each:7.1f} msg/s")
        print(f"one connection is {each / one:.1f}x faster")
        await full_path(n, cert_dir)
    finally:
        shutil.rmtree(cert_dir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
