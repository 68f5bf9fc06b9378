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
        assert isinstance(app.screen, InboxScreen) and not app.screen.rows  # laid out, empty
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


async def test_open_paints_the_first_page_then_opens_the_store_behind_it(session, make_app) -> None:
    """`carebox open`: the first page, read through the driver, is painted while the store (the
    ORM's import) opens after that frame; keys move the cursor meanwhile, and reading a thread
    works once it is open."""
    from carebox.services import inbox
    from carebox.services.session import Session, defer_open
    from carebox.services.threads import ensure_policy
    from carebox.ui.screens.thread import ThreadScreen
    from tests.ui.helpers import NOW

    ensure_policy(session.store, session.policy)
    expected = inbox.page(session.store, NOW, "due", 0, 200).rows
    pending = Session(config=session.config, store=None, policy=session.policy)  # type: ignore[arg-type]
    assert defer_open(pending, data_key=session.store.cipher.data_key(), limit=200, store_dir=session.store.directory)
    release = threading.Event()
    real_opener = pending.opener
    assert real_opener is not None

    def slow_opener():
        assert release.wait(10)
        return real_opener()

    pending.opener = slow_opener
    app = make_app(pending)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(50):
            await pilot.pause(0.02)
            if isinstance(app.screen, InboxScreen) and app.screen.rows:
                break
        assert isinstance(app.screen, InboxScreen)
        assert app.screen.rows == expected and not pending.is_open  # painted before the store opened
        assert expected[0].patient_name in screen_text(app)
        await pilot.press("j")
        assert app.screen.table.cursor_row == 1  # moving needs no store
        release.set()
        for _ in range(100):
            await pilot.pause(0.02)
            if pending.is_open:
                break
        assert pending.is_open and pending.first_page is None  # the decrypted page is dropped
        await settle(app)
        await pilot.press("enter")
        await settle(app)
        assert isinstance(app.screen, ThreadScreen)
        assert expected[1].subject in screen_text(app)


async def test_reading_the_store_before_it_opened_opens_it_there(session) -> None:
    from carebox.services.session import Session, defer_open
    from carebox.services.threads import ensure_policy

    ensure_policy(session.store, session.policy)
    pending = Session(config=session.config, store=None, policy=session.policy)  # type: ignore[arg-type]
    assert defer_open(pending, data_key=session.store.cipher.data_key(), limit=5, store_dir=session.store.directory)
    assert not pending.is_open and len(pending.first_page.rows) == 5
    assert set(pending.store.all_thread_ids()) == set(session.store.all_thread_ids())  # opened on use
    assert pending.is_open and pending.opener is None
    pending.close()
