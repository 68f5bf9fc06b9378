"""The app started before its store is ready (`carebox demo` builds the store in another process
meanwhile): a "preparing" line, only quitting possible, then the inbox; a failure ends the app
with the error kept for the caller's one line."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from carebox.ui.screens.inbox import InboxScreen
from tests.ui.helpers import settle
from tests.ui.screen_text import screen_text

SIZE = (120, 36)


async def test_the_inbox_shows_once_prepare_has_opened_the_store(session, make_app) -> None:
    store = session.store
    pending = replace(session, store=None)
    release = threading.Event()

    def prepare() -> None:
        assert release.wait(10)
        pending.store = store

    app = make_app(pending, prepare=prepare)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.preparing and "Preparing the mailbox" in screen_text(app)
        assert not isinstance(app.screen, InboxScreen)
        await pilot.press("j", "ctrl+l", "s", "question_mark")  # nothing to act on yet: no crash, no lock
        await pilot.pause()
        assert app.preparing and not app.locked and app.is_running
        release.set()
        for _ in range(100):
            await pilot.pause(0.02)
            if isinstance(app.screen, InboxScreen) and app.screen.rows:
                break
        assert not app.preparing
        assert isinstance(app.screen, InboxScreen) and app.screen.rows
        assert "Preparing the mailbox" not in screen_text(app)
        await settle(app)
        await pilot.press("j")  # keys work from now on
        assert app.screen.table.cursor_row == 1


async def test_a_failing_prepare_ends_the_app_with_its_error(tmp_path: Path, session, make_app) -> None:
    pending = replace(session, store=None)

    def prepare() -> None:
        raise RuntimeError("the store could not be built")

    app = make_app(pending, prepare=prepare)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            await pilot.pause(0.02)
            if not app.is_running:
                break
    assert isinstance(app.prepare_error, RuntimeError)
    assert app.return_code == 1
