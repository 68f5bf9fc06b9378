"""The status bar follows the background sync (services.sync.BackgroundSync, the real one):
an unreachable server shows "offline since"; `s` asks for a sync; quitting stops it."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import keyring

from carebox.config import AccountConfig, ServerConfig
from carebox.store.keys import ACCOUNT_SERVICE
from tests.factories import DOCTOR
from tests.ui.helpers import practice, settle


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_offline_sync_shows_in_the_status_bar_and_stops_on_quit(tmp_path: Path, make_app) -> None:
    session = practice(tmp_path / "store")
    port = closed_port()
    account = AccountConfig(
        address=DOCTOR,
        username="doctor",
        imap=ServerConfig(host="127.0.0.1", port=port),
        smtp=ServerConfig(host="127.0.0.1", port=port),
    )
    session.config = session.config.model_copy(update={"account": account})
    keyring.set_password(ACCOUNT_SERVICE, DOCTOR, "secret")
    app = make_app(session, background_sync=True)
    async with app.run_test(size=(140, 30)) as pilot:
        for _ in range(60):
            await pilot.pause(0.1)
            if "offline since" in app.status_text.plain:
                break
        assert app.sync is not None
        assert "offline since" in app.status_text.plain
        await pilot.press("s")
        assert any("Syncing now" in str(n.message) for n in app._notifications)
        sync = app.sync
    await asyncio.sleep(0)
    assert sync.status.state == "stopped"
    session.close()


async def test_s_without_background_sync_reports_one_line(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.pause()
        assert "sync: off" in app.status_text.plain
        await pilot.press("s")
        await settle(app)
        await pilot.pause()
        messages = [str(n.message) for n in app._notifications]
        assert messages and all("\n" not in m and "Traceback" not in m for m in messages)
        assert app.is_running


async def test_demo_has_no_sync(session, make_app) -> None:
    session.demo = True
    app = make_app(session, background_sync=True)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.pause()
        await settle(app)
        await pilot.pause()
        assert app.sync is None
        assert app.status_text.plain.startswith(" DEMO ") and "demo: no mail server" in app.status_text.plain
        await pilot.press("s")
        await settle(app)
        assert any("no mail server" in str(n.message) for n in app._notifications)
