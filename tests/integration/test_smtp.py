"""carebox.mail.smtp against a real aiosmtpd server (TLS, AUTH, injected faults)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from carebox.domain.models import Address
from carebox.mail.build import Identity, build_new, make_message_id
from carebox.mail.smtp import Outcome, SmtpSender, SmtpSettings
from carebox.mail.tls import TlsMode
from tests.servers.smtp_server import (  # noqa: F401  (fixtures)
    Received,
    SmtpTestServer,
    free_port,
    smtp_cert_fixture,
    smtp_server_fixture,
)

pytestmark = pytest.mark.integration

FROM = "praxis@berg.example"
TO = "max@example.org"
_TLS = {"implicit": TlsMode.IMPLICIT, "starttls": TlsMode.STARTTLS, "plain": TlsMode.NONE}


def settings_for(server: SmtpTestServer, **overrides) -> SmtpSettings:
    fields = {
        "host": server.host,
        "port": server.port,
        "username": server.username,
        "password": server.password,
        "tls": _TLS[server.mode],
        "ca_file": server.ca_file,
        "allow_insecure": server.mode == "plain",
        "timeout": 5.0,
        "data_timeout": 5.0,
    }
    fields.update(overrides)
    return SmtpSettings(**fields)


def message(n: int = 0, to: str = TO) -> bytes:
    return build_new(
        identity=Identity("Dr. Anna Berg", FROM),
        to=Address("Max Muster", to),
        subject=f"Your results #{n}",
        body=f"Message {n}.\n.\n.leading dot\nÄrztin\n",
        message_id=make_message_id(FROM),
        date=datetime(2025, 3, 3, 14, 5, tzinfo=UTC),
    )


def one_line(text: str) -> bool:
    return bool(text) and "\n" not in text and "\r" not in text and "Traceback" not in text


# --- success --------------------------------------------------------------------------------------


async def test_send_delivers_exactly_the_bytes_once(smtp_server) -> None:
    server = smtp_server("implicit")
    raw = message()
    async with SmtpSender(settings_for(server)) as sender:
        result = await sender.send(raw, FROM, [TO])
    assert result.outcome is Outcome.SENT
    assert result.code == 250
    assert result.detail.startswith("250 ")
    assert server.messages == [Received(FROM, [TO], raw)]
    assert server.logins == 1
    assert server.ehlo_names[-1] == "[127.0.0.1]"  # no host name revealed


async def test_200_messages_over_one_connection(smtp_server) -> None:
    server = smtp_server("implicit")
    raws = [message(n) for n in range(200)]
    async with SmtpSender(settings_for(server)) as sender:
        results = [await sender.send(raw, FROM, [TO]) for raw in raws]
    assert [r.outcome for r in results] == [Outcome.SENT] * 200
    assert [m.content for m in server.messages] == raws
    assert server.connections == 1
    assert server.logins == 1


async def test_starttls_mode_works(smtp_server) -> None:
    server = smtp_server("starttls")
    raw = message()
    async with SmtpSender(settings_for(server)) as sender:
        assert await sender.open() is None
        result = await sender.send(raw, FROM, [TO, "second@example.org"])
    assert result.outcome is Outcome.SENT
    assert server.messages == [Received(FROM, [TO, "second@example.org"], raw)]


async def test_plaintext_only_when_allowed(smtp_server) -> None:
    server = smtp_server("plain")
    with pytest.raises(ValueError, match="allow_insecure"):
        settings_for(server, allow_insecure=False)
    async with SmtpSender(settings_for(server)) as sender:
        assert (await sender.send(message(), FROM, [TO])).outcome is Outcome.SENT
    assert len(server.messages) == 1


# --- configuration problems ---------------------------------------------------------------------------


async def test_wrong_password_is_auth_failed_with_a_clear_line(smtp_server) -> None:
    server = smtp_server("implicit")
    async with SmtpSender(settings_for(server, password="wrong password")) as sender:
        assert (await sender.open()).outcome is Outcome.AUTH_FAILED
        result = await sender.send(message(), FROM, [TO])
    assert result.outcome is Outcome.AUTH_FAILED
    assert result.code == 535
    assert one_line(result.detail)
    assert "refused the user name or password" in result.detail
    assert "535" in result.detail
    assert "wrong password" not in result.detail
    assert server.auth_attempts >= 1
    assert server.mail_commands == 0
    assert server.messages == []


async def test_untrusted_certificate_is_a_clear_tls_error(smtp_server) -> None:
    server = smtp_server("implicit")
    async with SmtpSender(settings_for(server, ca_file=None)) as sender:
        result = await sender.send(message(), FROM, [TO])
    assert result.outcome is Outcome.TLS_ERROR
    assert one_line(result.detail)
    assert "not trusted" in result.detail
    assert "127.0.0.1" in result.detail
    assert server.auth_attempts == 0
    assert server.messages == []


async def test_untrusted_certificate_on_starttls_fails_before_auth(smtp_server) -> None:
    server = smtp_server("starttls")
    async with SmtpSender(settings_for(server, ca_file=None)) as sender:
        result = await sender.send(message(), FROM, [TO])
    assert result.outcome is Outcome.TLS_ERROR
    assert "not trusted" in result.detail
    assert server.auth_attempts == 0


async def test_starttls_required_but_not_offered_fails_before_auth(smtp_server) -> None:
    server = smtp_server("plain")  # offers AUTH in plaintext, no STARTTLS
    async with SmtpSender(settings_for(server, tls=TlsMode.STARTTLS, allow_insecure=False)) as sender:
        result = await sender.send(message(), FROM, [TO])
    assert result.outcome is Outcome.TLS_ERROR
    assert one_line(result.detail)
    assert "does not offer STARTTLS" in result.detail
    assert server.auth_attempts == 0
    assert server.mail_commands == 0
    assert server.messages == []


async def test_implicit_tls_against_a_plaintext_port_is_a_clear_tls_error(smtp_server) -> None:
    server = smtp_server("starttls")
    async with SmtpSender(settings_for(server, tls=TlsMode.IMPLICIT)) as sender:
        result = await sender.send(message(), FROM, [TO])
    assert result.outcome is Outcome.TLS_ERROR
    assert one_line(result.detail)
    assert "does not speak TLS" in result.detail


async def test_missing_ca_file_is_a_clear_tls_error(smtp_server, tmp_path) -> None:
    server = smtp_server("implicit")
    async with SmtpSender(settings_for(server, ca_file=tmp_path / "missing.pem")) as sender:
        result = await sender.send(message(), FROM, [TO])
    assert result.outcome is Outcome.TLS_ERROR
    assert "ca_file" in result.detail and one_line(result.detail)
    assert server.connections == 0


# --- nothing delivered: RETRY -----------------------------------------------------------------------


async def test_connection_refused_is_retry() -> None:
    settings = SmtpSettings(host="127.0.0.1", port=free_port(), username="u", password="p", timeout=5.0)
    async with SmtpSender(settings) as sender:
        result = await sender.send(message(), FROM, [TO])
    assert result.outcome is Outcome.RETRY
    assert one_line(result.detail)
    assert "cannot connect" in result.detail and "refused" in result.detail.lower()


async def test_server_down_then_back(smtp_server) -> None:
    server = smtp_server("implicit")
    first, second, third = message(1), message(2), message(3)
    async with SmtpSender(settings_for(server)) as sender:
        assert (await sender.send(first, FROM, [TO])).outcome is Outcome.SENT
        server.stop()
        result = await sender.send(second, FROM, [TO])
        assert result.outcome is Outcome.RETRY
        assert one_line(result.detail)
        server.start()
        assert (await sender.send(third, FROM, [TO])).outcome is Outcome.SENT
    assert [m.content for m in server.messages] == [first, third]


async def test_421_before_data_is_retry_and_nothing_received(smtp_server) -> None:
    server = smtp_server("implicit")
    server.faults.refuse_mail = 1
    async with SmtpSender(settings_for(server)) as sender:
        result = await sender.send(message(1), FROM, [TO])
        assert result.outcome is Outcome.RETRY
        assert result.code == 421
        assert "421" in result.detail and one_line(result.detail)
        assert server.messages == []
        # the server hung up with its 421: the next send reconnects and goes through
        raw = message(2)
        assert (await sender.send(raw, FROM, [TO])).outcome is Outcome.SENT
    assert [m.content for m in server.messages] == [raw]
    assert server.connections == 2


async def test_failure_on_the_data_command_itself_is_retry(smtp_server) -> None:
    """DATA sent, 354 never came: the message data was not transmitted."""
    server = smtp_server("implicit")
    server.faults.drop_on_data_command = 1
    server.faults.refuse_data_command = 1
    async with SmtpSender(settings_for(server)) as sender:
        dropped = await sender.send(message(1), FROM, [TO])
        assert dropped.outcome is Outcome.RETRY
        assert "nothing was delivered" in dropped.detail
        refused = await sender.send(message(2), FROM, [TO])
        assert refused.outcome is Outcome.RETRY
        assert refused.code == 451
        raw = message(3)
        assert (await sender.send(raw, FROM, [TO])).outcome is Outcome.SENT
    assert [m.content for m in server.messages] == [raw]


async def test_451_after_data_is_retry(smtp_server) -> None:
    server = smtp_server("implicit")
    server.faults.fail_after_data = 1
    async with SmtpSender(settings_for(server)) as sender:
        result = await sender.send(message(), FROM, [TO])
        assert result.outcome is Outcome.RETRY
        assert result.code == 451
        assert "451" in result.detail
        assert server.messages == []
        assert len(server.deferred) == 1
        assert (await sender.send(message(), FROM, [TO])).outcome is Outcome.SENT
    assert len(server.messages) == 1
    assert server.connections == 1


# --- refused for good: REJECTED -------------------------------------------------------------------------


async def test_550_on_rcpt_is_rejected_with_the_servers_text(smtp_server) -> None:
    server = smtp_server("implicit")
    server.faults.reject_rcpt = {"nobody@example.org"}
    async with SmtpSender(settings_for(server)) as sender:
        result = await sender.send(message(), FROM, ["nobody@example.org"])
        assert result.outcome is Outcome.REJECTED
        assert result.code == 550
        assert "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown" in result.detail
        # all or nothing: one bad recipient stops the message for everyone
        result = await sender.send(message(), FROM, [TO, "nobody@example.org"])
        assert result.outcome is Outcome.REJECTED
        assert server.messages == []
        # the same connection carries on after RSET
        raw = message(3)
        assert (await sender.send(raw, FROM, [TO])).outcome is Outcome.SENT
    assert server.messages == [Received(FROM, [TO], raw)]
    assert server.connections == 1


async def test_bad_envelope_is_rejected_before_any_network(smtp_server) -> None:
    server = smtp_server("implicit")
    async with SmtpSender(settings_for(server)) as sender:
        for mail_from, rcpt in [
            (FROM, []),
            (FROM, ["a@b.org\r\nRCPT TO:<evil@x.org>"]),
            (FROM, ["<a@b.org>"]),
            ("x y@b.org", [TO]),
            (FROM, ["jürgen@example.org"]),
        ]:
            result = await sender.send(message(), mail_from, rcpt)
            assert result.outcome is Outcome.REJECTED
            assert one_line(result.detail)
    assert server.connections == 0


# --- maybe delivered: UNCERTAIN -------------------------------------------------------------------------


async def test_drop_after_data_is_uncertain_and_the_server_has_it_once(smtp_server) -> None:
    server = smtp_server("implicit")
    server.faults.drop_after_data = 1
    raw = message()
    async with SmtpSender(settings_for(server)) as sender:
        result = await sender.send(raw, FROM, [TO])
        assert result.outcome is Outcome.UNCERTAIN
        assert one_line(result.detail)
        assert "may or may not have been delivered" in result.detail
        assert server.messages == [Received(FROM, [TO], raw)]
        # the sender itself never resends; the next message goes out on a new connection
        assert (await sender.send(message(2), FROM, [TO])).outcome is Outcome.SENT
    assert len(server.messages) == 2
    assert server.messages[0].content == raw
    assert server.connections == 2


async def test_no_final_reply_in_time_is_uncertain(smtp_server) -> None:
    server = smtp_server("implicit")
    server.faults.stall_after_data = 3.0
    async with SmtpSender(settings_for(server, data_timeout=0.3)) as sender:
        result = await sender.send(message(), FROM, [TO])
    assert result.outcome is Outcome.UNCERTAIN
    assert "did not answer in time" in result.detail
    assert len(server.messages) == 1


# --- reconnecting --------------------------------------------------------------------------------------


async def test_reconnects_when_the_server_dropped_the_idle_connection(smtp_server) -> None:
    server = smtp_server("implicit")
    async with SmtpSender(settings_for(server)) as sender:
        assert (await sender.send(message(1), FROM, [TO])).outcome is Outcome.SENT
        server.drop_connections()
        assert (await sender.send(message(2), FROM, [TO])).outcome is Outcome.SENT
    assert len(server.messages) == 2
    assert server.connections == 2


async def test_reconnects_when_a_reused_connection_dies_on_the_first_command(smtp_server) -> None:
    """The client has not noticed the drop yet: MAIL finds the connection dead. Nothing was
    sent, so the sender reconnects and sends once."""
    server = smtp_server("starttls")
    async with SmtpSender(settings_for(server)) as sender:
        assert (await sender.send(message(1), FROM, [TO])).outcome is Outcome.SENT
        server.faults.drop_on_mail = 1
        raw = message(2)
        assert (await sender.send(raw, FROM, [TO])).outcome is Outcome.SENT
    assert [m.content for m in server.messages][-1] == raw
    assert len(server.messages) == 2
    assert server.connections == 2


async def test_a_fresh_connection_dying_on_mail_is_retry_not_a_loop(smtp_server) -> None:
    server = smtp_server("implicit")
    server.faults.drop_on_mail = 5
    async with SmtpSender(settings_for(server)) as sender:
        result = await sender.send(message(), FROM, [TO])
    assert result.outcome is Outcome.RETRY
    assert server.connections == 1
    assert server.messages == []


# --- privacy ----------------------------------------------------------------------------------------------


async def test_no_addresses_in_carebox_logs(smtp_server, caplog) -> None:
    server = smtp_server("implicit")
    server.faults.reject_rcpt = {"secret.patient@example.org"}
    caplog.set_level(logging.DEBUG)
    async with SmtpSender(settings_for(server)) as sender:
        await sender.send(message(), FROM, ["secret.patient@example.org"])
        await sender.send(message(), FROM, [TO])
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("carebox")]
    assert ours, "the sender logs outcomes"
    assert not any("@" in line or "Your results" in line for line in ours)


def test_settings_repr_hides_the_password() -> None:
    s = SmtpSettings(host="smtp.example.org", port=465, username="u", password="hunter2")
    assert "hunter2" not in repr(s)
    with pytest.raises(ValueError, match="port"):
        SmtpSettings(host="smtp.example.org", port=0, username="u", password="p")
