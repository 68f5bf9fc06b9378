"""carebox.mail.imap against a real Dovecot, a cuttable proxy and a hostile scripted server."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from carebox.mail.imap import (
    FetchedMessage,
    ImapAuthError,
    ImapClient,
    ImapConnectionError,
    ImapError,
    ImapMessageTooLarge,
    ImapProtocolError,
    ImapSettings,
    ImapTlsError,
    decode_mailbox_name,
    encode_mailbox_name,
    format_uid_set,
    parse_uid_set,
)
from carebox.mail.tls import TlsMode
from tests.servers.dovecot import ImapAccount
from tests.servers.hostile_imap import HostileImapServer, sample_message
from tests.servers.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

LIMIT = 15.0  # no test may hang: every scenario runs under this bound


async def bounded(coro, limit: float = LIMIT):
    return await asyncio.wait_for(coro, limit)


def make_message(i: int, body_size: int = 200) -> bytes:
    """A CRLF message with the things that trip IMAP parsers: '* ' inside lines, a {N} at a line end,
    a line that looks like a tagged response, parentheses, 8-bit bytes."""
    filler = (f"line {i} " * 12 + "\r\n").encode()
    body = filler * max(1, body_size // len(filler))
    return (
        (
            f"From: Patient {i} <p{i}@example.org>\r\n"
            f"To: practice@example.org\r\n"
            f"Subject: Re: * urgent * ({i}\r\n"
            f"Message-ID: <msg-{i}@example.org>\r\n"
            f"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n"
            f"\r\n"
        ).encode()
        + "Grüße {5}\r\n* 3 EXPUNGE\r\nA1 OK fake\r\n)\r\n".encode()
        + body
    )


async def fetch_all(client: ImapClient, uids: list[int], batch_size: int = 250) -> list[list[FetchedMessage]]:
    return [batch async for batch in client.fetch_batches(uids, batch_size=batch_size)]


# ---- pure helpers -------------------------------------------------------------------------------------


def test_uid_set_round_trip_and_clamp() -> None:
    assert format_uid_set([9, 1, 2, 3, 7, 10]) == "1:3,7,9:10"
    assert parse_uid_set("1:3,7,9:10") == [1, 2, 3, 7, 9, 10]
    assert parse_uid_set("5:1") == [1, 2, 3, 4, 5]
    assert parse_uid_set("1:4294967295", upper=4) == [1, 2, 3, 4]
    with pytest.raises(ImapProtocolError):
        parse_uid_set("1:4294967295")
    with pytest.raises(ImapProtocolError):
        parse_uid_set("1:x")


def test_mailbox_name_modified_utf7() -> None:
    for name in ("INBOX", "Gesendete Objekte", "Entwürfe", "A&B", "日本語", "x/ü/y"):
        assert decode_mailbox_name(encode_mailbox_name(name)) == name
    assert encode_mailbox_name("Entwürfe") == "Entw&APw-rfe"
    assert encode_mailbox_name("A&B") == "A&-B"


# ---- Dovecot: connecting --------------------------------------------------------------------------------


async def test_login_over_implicit_tls(imap_account: ImapAccount) -> None:
    async def run() -> None:
        async with ImapClient(imap_account.settings()) as imap:
            assert imap.connected
            assert {"IMAP4REV1", "IDLE", "UIDPLUS", "QRESYNC"} <= imap.capabilities
            assert "AUTH=PLAIN" not in imap.capabilities or "LOGINDISABLED" not in imap.capabilities
            assert imap.qresync_enabled
        assert not imap.connected

    await bounded(run())


async def test_wrong_password_is_an_auth_error(imap_account: ImapAccount) -> None:
    with pytest.raises(ImapAuthError) as err:
        await bounded(ImapClient(imap_account.settings(password="not-the-password")).connect())
    msg = str(err.value)
    assert imap_account.username in msg and "password" in msg
    assert "\n" not in msg and "not-the-password" not in msg


async def test_untrusted_certificate_without_ca_file(imap_account: ImapAccount) -> None:
    with pytest.raises(ImapTlsError) as err:
        await bounded(ImapClient(imap_account.settings(ca_file=None)).connect())
    assert str(err.value) == (
        "the certificate of 127.0.0.1 is not trusted (self-signed or unknown CA): "
        "set ca_file in [account] to your server's CA"
    )


async def test_implicit_tls_on_a_plaintext_port_says_so(imap_account: ImapAccount) -> None:
    with pytest.raises(ImapTlsError) as err:
        await bounded(ImapClient(imap_account.settings(port=imap_account.starttls_port)).connect())
    assert "does not speak TLS" in str(err.value) or "TLS handshake" in str(err.value)


async def test_starttls_upgrades_before_login(imap_account: ImapAccount) -> None:
    # From 127.0.0.2 Dovecot says LOGINDISABLED on the plaintext port: logging in proves the upgrade
    # happened and that the capabilities were read again after it.
    settings = imap_account.settings(port=imap_account.starttls_port, tls=TlsMode.STARTTLS, source_address="127.0.0.2")

    async def run() -> None:
        async with ImapClient(settings) as imap:
            assert "STARTTLS" not in imap.capabilities and "LOGINDISABLED" not in imap.capabilities
            info = await imap.select("INBOX")
            assert info.exists == 0

    await bounded(run())


async def test_plaintext_refused_unless_explicitly_allowed(imap_account: ImapAccount) -> None:
    plain = imap_account.settings(port=imap_account.starttls_port, tls=TlsMode.NONE, source_address="127.0.0.2")
    with pytest.raises(ImapTlsError) as err:
        await bounded(ImapClient(plain).connect())
    assert "refusing plaintext" in str(err.value) and "allow_insecure" in str(err.value)

    # explicitly allowed, but the server itself refuses a plaintext login (LOGINDISABLED)
    allowed = imap_account.settings(
        port=imap_account.starttls_port, tls=TlsMode.NONE, source_address="127.0.0.2", allow_insecure=True
    )
    with pytest.raises(ImapTlsError) as err:
        await bounded(ImapClient(allowed).connect())
    assert "LOGINDISABLED" in str(err.value)

    # explicitly allowed and accepted by the server (Dovecot trusts 127.0.0.1 as a secure peer)
    local = imap_account.settings(port=imap_account.starttls_port, tls=TlsMode.NONE, allow_insecure=True)

    async def run() -> None:
        async with ImapClient(local) as imap:
            assert (await imap.select("INBOX")).exists == 0

    await bounded(run())


async def test_connection_refused_is_a_connection_error(imap_account: ImapAccount) -> None:
    from tests.servers.dovecot import free_port

    with pytest.raises(ImapConnectionError) as err:
        await bounded(ImapClient(imap_account.settings(port=free_port())).connect())
    assert "connection refused" in str(err.value)


# ---- Dovecot: reading ------------------------------------------------------------------------------------


async def test_select_reports_uidvalidity_uidnext_highestmodseq(imap_account: ImapAccount) -> None:
    for i in range(3):
        imap_account.deliver(make_message(i))
    status = imap_account.server.status(imap_account.username)

    async def run() -> None:
        async with ImapClient(imap_account.settings()) as imap:
            info = await imap.select("INBOX")
            assert info.exists == 3
            assert info.uidvalidity == status["uidvalidity"] > 0
            assert info.uidnext == 4
            assert info.highestmodseq is not None and info.highestmodseq >= 1
            assert info.vanished == [] and info.changed == []
            assert imap.selected == "INBOX" and imap.uidvalidity == info.uidvalidity
            assert await imap.all_uids() == [1, 2, 3]
            ro = await imap.select("INBOX", readonly=True)
            assert ro.readonly and imap.selected_readonly

    await bounded(run())


async def test_fetch_in_batches_returns_exact_bytes(imap_account: ImapAccount) -> None:
    sent = {}
    for i in range(12):
        raw = make_message(i, body_size=300 + 2000 * i)
        imap_account.deliver(raw, flags="\\Seen" if i % 3 == 0 else "")
        sent[i + 1] = raw

    async def run() -> None:
        async with ImapClient(imap_account.settings()) as imap:
            await imap.select("INBOX")
            batches = await fetch_all(imap, [*sent, 99], batch_size=5)
            assert [len(b) for b in batches] == [5, 5, 2]
            got = {m.uid: m for b in batches for m in b}
            assert sorted(got) == sorted(sent)  # 99 does not exist: skipped
            for uid, raw in sent.items():
                assert got[uid].raw == raw
                assert got[uid].size == len(raw)
                assert got[uid].flags == (frozenset({"\\Seen"}) if (uid - 1) % 3 == 0 else frozenset())
                assert got[uid].internaldate.tzinfo is not None
            # BODY.PEEK[] does not set \Seen
            flags = {f.uid: f.flags for f in await imap.uid_flags()}
            assert "\\Seen" not in flags[2]

    await bounded(run())


async def test_big_responses_do_not_hit_aioimaplib_recursion(imap_account: ImapAccount) -> None:
    # 2,500 short FETCH lines arrive in few TCP reads: aioimaplib's recursive parser would raise
    # RecursionError and never complete the command.
    server = imap_account.server
    for i in range(2500):
        server.deliver(imap_account.username, b"Subject: %d\r\n\r\nx\r\n" % i)

    async def run() -> None:
        async with ImapClient(imap_account.settings()) as imap:
            await imap.select("INBOX")
            flags = await imap.uid_flags()
            assert [f.uid for f in flags] == list(range(1, 2501))
            sizes = await imap.message_sizes(list(range(1, 2501)))
            assert len(sizes) == 2500
            batches = await fetch_all(imap, list(range(1, 2501)), batch_size=2500)
            assert len(batches) == 1 and len(batches[0]) == 2500
            # Dovecot numbers Maildir files in directory order: compare contents, not positions
            assert sorted(m.raw for m in batches[0]) == sorted(b"Subject: %d\r\n\r\nx\r\n" % i for i in range(2500))

    await bounded(run(), 25)


async def test_flags_round_trip(imap_account: ImapAccount) -> None:
    for i in range(3):
        imap_account.deliver(make_message(i))

    async def run() -> None:
        async with ImapClient(imap_account.settings()) as imap:
            info = await imap.select("INBOX")
            await imap.store_flags([1, 2], add={"\\Seen", "\\Flagged", "$CareboxOutOfScope"})
            await imap.store_flags([2], remove={"\\Flagged"})
            changed = await imap.uid_flags(changedsince=info.highestmodseq)
            assert {f.uid: f.flags for f in changed} == {
                1: frozenset({"\\Seen", "\\Flagged", "$CareboxOutOfScope"}),
                2: frozenset({"\\Seen", "$CareboxOutOfScope"}),
            }
            assert all(f.modseq and f.modseq > info.highestmodseq for f in changed)
            with pytest.raises(ValueError):
                await imap.store_flags([1], add={"bad flag)"})
        # another session sees the same flags
        async with ImapClient(imap_account.settings()) as other:
            await other.select("INBOX", readonly=True)
            flags = {f.uid: f.flags for f in await other.uid_flags([1, 2, 3])}
            assert flags[3] == frozenset()
            assert "\\Flagged" in flags[1] and "\\Flagged" not in flags[2]

    await bounded(run())


async def test_qresync_select_reports_vanished_and_changed(imap_account: ImapAccount) -> None:
    for i in range(5):
        imap_account.deliver(make_message(i))

    async def run() -> None:
        async with ImapClient(imap_account.settings()) as imap:
            first = await imap.select("INBOX")
        assert first.highestmodseq is not None
        # another client changes flags and expunges while we are away
        async with ImapClient(imap_account.settings()) as other:
            await other.select("INBOX")
            await other.store_flags([2], add={"\\Answered"})
            await other.store_flags([3, 4], add={"\\Deleted"})
        imap_account.server.doveadm("expunge", "-u", imap_account.username, "mailbox", "INBOX", "DELETED")
        async with ImapClient(imap_account.settings()) as imap:
            again = await imap.select("INBOX", qresync=(first.uidvalidity, first.highestmodseq))
            assert again.qresync_applied
            assert again.uidvalidity == first.uidvalidity
            assert again.vanished == [3, 4]
            assert {f.uid: f.flags for f in again.changed} == {2: frozenset({"\\Answered"})}
            assert again.exists == 3
            assert again.highestmodseq is not None and again.highestmodseq > first.highestmodseq
            # nothing changed since: empty lists
            quiet = await imap.select("INBOX", qresync=(again.uidvalidity, again.highestmodseq))
            assert quiet.vanished == [] and quiet.changed == []

    await bounded(run())


async def test_uidvalidity_change_is_visible(imap_account: ImapAccount) -> None:
    imap_account.deliver(make_message(1))

    async def run() -> None:
        async with ImapClient(imap_account.settings()) as imap:
            first = await imap.select("INBOX")
        new_validity = imap_account.server.recreate_mailbox(imap_account.username)
        async with ImapClient(imap_account.settings()) as imap:
            again = await imap.select("INBOX", qresync=(first.uidvalidity, first.highestmodseq or 1))
            assert again.uidvalidity == new_validity != first.uidvalidity
            assert not again.qresync_applied and again.vanished == [] and again.changed == []

    await bounded(run())


async def test_append_and_search_by_message_id(imap_account: ImapAccount) -> None:
    raw = make_message(42)
    date = datetime(2024, 3, 5, 14, 30, 0, tzinfo=timezone(timedelta(hours=1)))

    async def run() -> None:
        async with ImapClient(imap_account.settings()) as imap:
            sent = await imap.sent_folder()
            assert sent == "Sent"
            folders = {f.name: f for f in await imap.list_folders()}
            assert folders["Sent"].special_use == "\\Sent" and "INBOX" in folders
            uid = await imap.append(sent, raw, flags={"\\Seen"}, date=date)
            assert isinstance(uid, int)
            assert await imap.search_header(sent, "Message-ID", "<msg-42@example.org>") == [uid]
            assert await imap.search_header(sent, "Message-ID", "<nope@example.org>") == []
            assert imap.selected == "Sent" and imap.selected_readonly
            (batch,) = await fetch_all(imap, [uid])
            assert batch[0].raw == raw and batch[0].flags == frozenset({"\\Seen"})
            assert batch[0].internaldate == date
            with pytest.raises(ImapProtocolError):
                await imap.append("No Such Folder", raw)
            assert imap.connected  # a refused command does not break the connection

    await bounded(run())


async def test_folders_with_non_ascii_names(imap_account: ImapAccount) -> None:
    server, user = imap_account.server, imap_account.username
    server.doveadm("mailbox", "create", "-u", user, "Entwürfe", "A&B")
    raw = make_message(5)

    async def run() -> None:
        async with ImapClient(imap_account.settings()) as imap:
            names = {f.name for f in await imap.list_folders()}
            assert {"Entwürfe", "A&B", "INBOX", "Sent"} <= names
            uid = await imap.append("Entwürfe", raw)
            info = await imap.select("Entwürfe")
            assert info.exists == 1 and imap.selected == "Entwürfe"
            (batch,) = await fetch_all(imap, [uid or 1])
            assert batch[0].raw == raw
            assert (await imap.status("A&B"))["MESSAGES"] == 0
            with pytest.raises(ImapProtocolError) as err:
                await imap.select("Gibt es nicht")
            assert "does not exist" in str(err.value) and imap.selected is None
            assert (await imap.select("INBOX")).exists == 0  # still usable

    await bounded(run())


# ---- Dovecot: waiting for changes ------------------------------------------------------------------------


async def test_idle_wakes_on_new_message(imap_account: ImapAccount) -> None:
    async def run() -> None:
        async with ImapClient(imap_account.settings()) as imap, ImapClient(imap_account.settings()) as other:
            await imap.select("INBOX")
            waiting = asyncio.ensure_future(imap.idle(timeout=10))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            t0 = time.monotonic()
            await other.append("INBOX", make_message(7))
            events = await waiting
            assert time.monotonic() - t0 < 5  # not the 10 s timeout
            assert any(e.endswith("EXISTS") for e in events), events
            info = await imap.select("INBOX")
            assert info.exists == 1

    await bounded(run())


async def test_idle_wakes_on_a_message_written_into_the_maildir(imap_account: ImapAccount) -> None:
    # the harness sets mailbox_idle_check_interval = 1 s, so a direct Maildir delivery wakes IDLE too
    async def run() -> None:
        async with ImapClient(imap_account.settings()) as imap:
            await imap.select("INBOX")
            waiting = asyncio.ensure_future(imap.idle(timeout=10))
            await asyncio.sleep(0.2)
            imap_account.deliver(make_message(8))
            events = await asyncio.wait_for(waiting, 5)
            assert any(e.endswith("EXISTS") for e in events), events

    await bounded(run())


async def test_idle_timeout_wake_and_interrupt(imap_account: ImapAccount) -> None:
    async def run() -> None:
        async with ImapClient(imap_account.settings()) as imap:
            await imap.select("INBOX")
            assert await imap.idle(timeout=0.3) == []
            wake = asyncio.Event()
            waiting = asyncio.ensure_future(imap.idle(timeout=10, wake=wake))
            await asyncio.sleep(0.2)
            wake.set()
            assert await asyncio.wait_for(waiting, 3) == []
            # a command from another task ends the IDLE and runs
            waiting = asyncio.ensure_future(imap.idle(timeout=10))
            await asyncio.sleep(0.2)
            assert await asyncio.wait_for(imap.all_uids(), 3) == []
            assert await asyncio.wait_for(waiting, 3) == []
            assert imap.connected

    await bounded(run())


async def test_dead_connection_is_detected(imap_account: ImapAccount) -> None:
    async def run() -> None:
        async with TcpProxy("127.0.0.1", imap_account.port) as proxy:
            settings = imap_account.settings(port=proxy.port, timeout=1.0)
            imap = ImapClient(settings)
            await imap.connect()
            await imap.select("INBOX")
            proxy.stall()
            with pytest.raises(ImapConnectionError) as err:
                await imap.idle(timeout=0.3)  # IDLE starts... and never gets an answer
            assert "did not" in str(err.value)
            assert imap.broken
            with pytest.raises(ImapConnectionError):
                await imap.noop()
            await imap.logout()
            proxy.resume()
            async with ImapClient(settings) as fresh:  # after the network came back
                assert await fresh.noop() == []

    await bounded(run())


async def test_cut_mid_fetch_then_reconnect(imap_account: ImapAccount) -> None:
    sent = [make_message(i, body_size=20_000) for i in range(20)]
    for raw in sent:
        imap_account.deliver(raw)

    async def run() -> None:
        async with TcpProxy("127.0.0.1", imap_account.port) as proxy:
            settings = imap_account.settings(port=proxy.port)
            proxy.cut_after(150_000)  # the TLS handshake, login and part of the first FETCH batch
            got: list[FetchedMessage] = []
            imap = ImapClient(settings)
            await imap.connect()
            await imap.select("INBOX")
            with pytest.raises(ImapConnectionError):
                async for batch in imap.fetch_batches(list(range(1, 21)), batch_size=4):
                    got.extend(batch)
            assert proxy.cuts == 1 and imap.broken
            assert 0 < len(got) < 20 and all(m.raw == sent[m.uid - 1] for m in got)
            await imap.logout()
            async with ImapClient(settings) as again:  # cut_after fired once: the retry goes through
                await again.select("INBOX")
                rest = [m for b in await fetch_all(again, [u for u in range(1, 21) if u > len(got)]) for m in b]
            assert [m.raw for m in got + rest] == sent

    await bounded(run())


# ---- hostile server --------------------------------------------------------------------------------------


def hostile_settings(srv: HostileImapServer, cert: Path, **kw) -> ImapSettings:
    values = {"host": "127.0.0.1", "port": srv.port, "username": "doc", "password": "pw", "ca_file": cert}
    values.update(timeout=2.0)
    values.update(kw)
    return ImapSettings(**values)


async def test_hostile_literal_longer_than_announced(tls_certs) -> None:
    async with HostileImapServer(fault="literal_too_long", cert=tls_certs.cert, key=tls_certs.key) as srv:
        imap = ImapClient(hostile_settings(srv, tls_certs.cert))
        await bounded(imap.connect())
        await bounded(imap.select("INBOX"))
        with pytest.raises(ImapProtocolError) as err:
            await bounded(fetch_all(imap, [1, 2, 3]))
        assert "connection was closed" in str(err.value)
        assert imap.broken
        await imap.logout()


async def test_hostile_ten_gigabyte_literal_is_refused_unread(tls_certs) -> None:
    async with HostileImapServer(fault="huge_literal", cert=tls_certs.cert, key=tls_certs.key) as srv:
        imap = ImapClient(hostile_settings(srv, tls_certs.cert))
        await bounded(imap.connect())
        await bounded(imap.select("INBOX"))
        tracemalloc.start()
        try:
            with pytest.raises(ImapProtocolError) as err:
                await bounded(fetch_all(imap, [1, 2, 3]))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert "10.0 GB" in str(err.value) and "50.0 MB" in str(err.value)
        assert peak < 20 * 1024 * 1024, peak
        await bounded(srv.disconnected.wait())  # the client hung up on the streaming server
        assert srv.bytes_sent < srv.huge_stream_limit


async def test_hostile_unsolicited_responses_between_fetch_items(tls_certs) -> None:
    async with (
        HostileImapServer(fault="unsolicited_mid_fetch", cert=tls_certs.cert, key=tls_certs.key) as srv,
        ImapClient(hostile_settings(srv, tls_certs.cert)) as imap,
    ):
        await bounded(imap.select("INBOX"))
        (batch,) = await bounded(fetch_all(imap, [1, 2, 3]))
        assert [m.uid for m in batch] == [1, 2, 3]
        assert [m.raw for m in batch] == [sample_message(u) for u in (1, 2, 3)]
        assert b"Re: * urgent * question" in batch[0].raw  # the '* ' trap does not touch literals
        assert batch[0].internaldate == datetime(2024, 1, 1, 10, 0, tzinfo=UTC)
        # the unsolicited responses are kept: an IDLE call returns them at once
        events = await bounded(imap.idle(timeout=30), 2)
        assert events == ["7 EXPUNGE", "12 EXISTS", "3 FETCH (UID 3)"]
        assert imap.pending_events() == []


async def test_hostile_endless_line_is_cut_off(tls_certs) -> None:
    async with HostileImapServer(fault="endless_line", cert=tls_certs.cert, key=tls_certs.key) as srv:
        imap = ImapClient(hostile_settings(srv, tls_certs.cert, max_line_bytes=2 * 1024 * 1024))
        await bounded(imap.connect())
        await bounded(imap.select("INBOX"))
        with pytest.raises(ImapProtocolError) as err:
            await bounded(fetch_all(imap, [1, 2, 3]))
        assert "line longer than 2.0 MB" in str(err.value)
        await bounded(srv.disconnected.wait())
        assert srv.bytes_sent < 16 * 1024 * 1024


async def test_hostile_untagged_line_inside_a_fetch_item(tls_certs) -> None:
    async with HostileImapServer(fault="expunge_inside_item", cert=tls_certs.cert, key=tls_certs.key) as srv:
        imap = ImapClient(hostile_settings(srv, tls_certs.cert))
        await bounded(imap.connect())
        await bounded(imap.select("INBOX"))
        with pytest.raises(ImapProtocolError):
            await bounded(fetch_all(imap, [1, 2, 3]))
        await imap.logout()


async def test_oversized_message_is_named_and_connection_survives(tls_certs) -> None:
    big = b"Subject: x\r\n\r\n" + b"y" * 5000 + b"\r\n"
    messages = {1: sample_message(1), 2: big, 3: sample_message(3)}
    async with (
        HostileImapServer(cert=tls_certs.cert, key=tls_certs.key, messages=messages) as srv,
        ImapClient(hostile_settings(srv, tls_certs.cert, max_literal_bytes=4096)) as imap,
    ):
        await bounded(imap.select("INBOX"))
        with pytest.raises(ImapMessageTooLarge) as err:
            await bounded(fetch_all(imap, [1, 2, 3]))
        assert err.value.oversized == {2: len(big)} and err.value.uid == 2
        assert "UID 2" in str(err.value)
        assert imap.connected
        (batch,) = await bounded(fetch_all(imap, [1, 3]))
        assert [m.uid for m in batch] == [1, 3]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("starttls_refused", "refused STARTTLS"),
        ("starttls_absent", "does not offer STARTTLS"),
        ("preauth", "PREAUTH"),
    ],
)
async def test_hostile_starttls_fails_closed(tls_certs, fault: str, expected: str) -> None:
    async with HostileImapServer(fault=fault, tls=False, cert=tls_certs.cert, key=tls_certs.key) as srv:
        settings = hostile_settings(srv, tls_certs.cert, tls=TlsMode.STARTTLS)
        with pytest.raises(ImapTlsError) as err:
            await bounded(ImapClient(settings).connect())
        assert expected in str(err.value)
        assert srv.logins == []  # no credentials left the machine
        assert not any(" LOGIN " in c for c in srv.commands)


async def test_hostile_starttls_injection_is_discarded(tls_certs) -> None:
    async with (
        HostileImapServer(fault="starttls_inject", tls=False, cert=tls_certs.cert, key=tls_certs.key) as srv,
        ImapClient(hostile_settings(srv, tls_certs.cert, tls=TlsMode.STARTTLS)) as imap,
    ):
        assert srv.logins == [("doc", True)]
        assert imap.pending_events() == []  # the plaintext "* 99 EXISTS" was dropped
        assert "STARTTLS" not in imap.capabilities


async def test_hostile_certificate_for_another_host(tls_certs) -> None:
    async with HostileImapServer(cert=tls_certs.wrong_cert, key=tls_certs.wrong_key) as srv:
        with pytest.raises(ImapTlsError) as err:
            await bounded(ImapClient(hostile_settings(srv, tls_certs.wrong_cert)).connect())
        assert "does not match host name 127.0.0.1" in str(err.value)
        assert srv.logins == []


@pytest.mark.parametrize(
    ("fault", "expected"),
    [("silent", "no IMAP greeting"), ("bye_greeting", "refused the connection")],
)
async def test_hostile_greeting_faults(tls_certs, fault: str, expected: str) -> None:
    async with HostileImapServer(fault=fault, cert=tls_certs.cert, key=tls_certs.key) as srv:
        with pytest.raises(ImapConnectionError) as err:
            await bounded(ImapClient(hostile_settings(srv, tls_certs.cert, timeout=0.5)).connect())
        assert expected in str(err.value)


async def test_hostile_stalled_fetch_times_out(tls_certs) -> None:
    async with HostileImapServer(fault="stall_fetch", cert=tls_certs.cert, key=tls_certs.key) as srv:
        imap = ImapClient(hostile_settings(srv, tls_certs.cert, timeout=0.5))
        await bounded(imap.connect())
        await bounded(imap.select("INBOX"))
        with pytest.raises(ImapConnectionError) as err:
            await bounded(fetch_all(imap, [1, 2, 3]), 5)
        assert "FETCH" in str(err.value)
        assert imap.broken
        await imap.logout()


async def test_hostile_idle_without_answer_to_done(tls_certs) -> None:
    async with HostileImapServer(fault="no_idle_answer", cert=tls_certs.cert, key=tls_certs.key) as srv:
        imap = ImapClient(hostile_settings(srv, tls_certs.cert, timeout=0.5))
        await bounded(imap.connect())
        await bounded(imap.select("INBOX"))
        with pytest.raises(ImapConnectionError) as err:
            await bounded(imap.idle(timeout=0.2), 5)
        assert "IDLE" in str(err.value)
        await imap.logout()


async def test_errors_are_single_lines_without_mail_content(tls_certs) -> None:
    async with HostileImapServer(fault="literal_too_long", cert=tls_certs.cert, key=tls_certs.key) as srv:
        imap = ImapClient(hostile_settings(srv, tls_certs.cert))
        await bounded(imap.connect())
        await bounded(imap.select("INBOX"))
        with pytest.raises(ImapError) as err:
            await bounded(fetch_all(imap, [1, 2, 3]))
        text = str(err.value)
        assert "\n" not in text and "urgent" not in text and "example.org" not in text
        await imap.logout()
