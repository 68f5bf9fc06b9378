"""Auto-lock: the lock screen shows no patient data, the key is dropped, unlocking asks for the
passphrase (or the keychain's consent), and both are in the audit trail."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Button, Input

from carebox.services import lock
from carebox.services.safety import audit_lines
from carebox.store.crypto import Cipher, Locked
from carebox.store.keys import create_data_key
from carebox.store.store import Store
from carebox.ui.screens.compose import ComposeScreen
from carebox.ui.screens.inbox import InboxScreen
from carebox.ui.screens.lock import LockScreen
from tests.factories import DOC, DOCTOR, message, patient
from tests.ui.helpers import NOW, PASSPHRASE, config, practice, settle
from tests.ui.screen_text import screen_text

SIZE = (120, 32)
PATIENT_STRINGS = ("Maria", "Patient Number", "mail.example", "Blood pressure", "invoice", "URGENT")


class FakeIdle:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def assert_no_patient_data(text: str) -> None:
    for s in PATIENT_STRINGS:
        assert s not in text, s


async def test_idle_locks_and_the_passphrase_unlocks(tmp_path: Path, make_app) -> None:
    session = practice(tmp_path / "store", ui={"auto_lock_minutes": 0.01})  # 0.6 s
    idle = FakeIdle()
    app = make_app(session, idle_clock=idle)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        box = app.screen
        await pilot.press("2")  # the All view and the selection are kept across the lock
        box.selected["keep"] = None
        await pilot.press("enter")  # a thread open
        idle.t += 0.3
        await pilot.pause(0.3)
        assert not app.locked  # not idle long enough
        idle.t += 1.0
        for _ in range(100):
            await pilot.pause(0.05)
            await settle(app)
            if isinstance(app.screen, LockScreen):
                break
        await pilot.pause()
        assert app.locked and isinstance(app.screen, LockScreen)
        assert session.store.cipher.locked
        with pytest.raises(Locked):
            session.store.thread_rows(session.store.all_thread_ids())
        assert box.rows == [] and box.by_id == {} and not box.is_attached
        text = screen_text(app)
        assert "carebox is locked" in text and "idle" in text
        assert_no_patient_data(text)
        assert [type(s).__name__ for s in app.screen_stack] == ["Screen", "LockScreen"]
        assert app.status_text.plain == ""
        await pilot.press("?", "2", "r")  # nothing works behind the lock
        assert isinstance(app.screen, LockScreen)
        await pilot.press(*"wrong")
        await pilot.press("enter")
        await settle(app)
        await pilot.pause()
        assert "Wrong passphrase" in screen_text(app) and app.locked
        app.screen.query_one(Input).value = PASSPHRASE
        await pilot.press("enter")
        await settle(app)
        await pilot.pause()
        assert not app.locked and isinstance(app.screen, InboxScreen)
        assert app.screen.view == "all" and "keep" in app.screen.selected
        assert "Maria Lopez" in screen_text(app)
    lines = audit_lines(session.store)
    assert any(" lock " in line and "auto" in line for line in lines)
    assert any(" unlock " in line and "failed=1" in line for line in lines)
    session.close()


async def test_lock_keeps_the_reply_being_written_as_a_draft(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        tid = app.screen.current_id()
        await pilot.press("r", *"unsent", "ctrl+l")
        await pilot.pause()
        assert isinstance(app.screen, LockScreen)
        assert not any(isinstance(s, ComposeScreen) for s in app.screen_stack)
        assert "The reply you were writing was kept" in screen_text(app)
        app.screen.query_one(Input).value = PASSPHRASE
        await pilot.press("enter")
        await settle(app)
        await pilot.pause()
        await pilot.press("r")
        assert "unsent" in app.screen.query_one("#editor").text
        assert tid == app.inbox_screen.current_id()


async def test_keychain_store_unlocks_with_a_confirmation(tmp_path: Path, make_app) -> None:
    from carebox.services.session import Session
    from carebox.services.threads import policy_from_config, rethread

    d = tmp_path / "store"
    key = create_data_key(d, use_keychain=True)  # the in-memory test keychain
    store = Store.open(d, Cipher(key), professional=DOCTOR, create=True)
    store.add_messages("INBOX", [message("k@x", sender=patient(1), to=DOC, subject="Keychain", uid=1)])
    cfg = config(d)
    policy = policy_from_config(cfg.policy)
    rethread(store, policy)
    session = Session(config=cfg, store=store, policy=policy)
    assert not lock.needs_passphrase(session)
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert isinstance(app.screen, LockScreen)
        assert not app.screen.query(Input)
        assert app.focused is app.screen.query_one(Button)
        assert "Locked." in screen_text(app)
        await pilot.press("enter")
        await settle(app)
        await pilot.pause()
        assert not app.locked and "Keychain" in screen_text(app)
    session.close()


def test_lock_service_drops_and_restores_the_key(tmp_path: Path) -> None:
    session = practice(tmp_path / "store")
    tid = session.store.all_thread_ids()[0]
    assert lock.lock(session, now=NOW) is True
    assert lock.is_locked(session) and lock.lock(session) is False
    with pytest.raises(Locked):
        session.store.thread_rows([tid])
    with pytest.raises(lock.WrongPassphrase):
        lock.unlock(session, "nope")
    assert lock.is_locked(session)
    assert lock.unlock(session, PASSPHRASE, now=NOW) is True
    assert session.store.thread_rows([tid])[0].id == tid
    assert lock.unlock(session, PASSPHRASE) is False  # not locked: nothing to do
    session.close()
