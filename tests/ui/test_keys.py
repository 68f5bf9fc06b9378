"""Every binding has an id, shows in the footer/help/palette, and can be remapped in the config;
a bad ui.keys entry is a notice, never a crash."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from textual.widgets import Input

from carebox.ui.actions import ACTIONS, BY_ID, INBOX, THREAD, check_keymap
from carebox.ui.commands import CareboxCommands
from carebox.ui.screens.compose import ComposeScreen
from carebox.ui.screens.dialogs import HelpScreen
from carebox.ui.screens.inbox import InboxScreen
from carebox.ui.screens.thread import ThreadScreen
from tests.ui.helpers import practice
from tests.ui.screen_text import screen_text

SIZE = (140, 36)


def test_every_binding_has_a_unique_id_and_help() -> None:
    assert len({a.id for a in ACTIONS}) == len(ACTIONS)
    for a in ACTIONS:
        assert a.id and a.key and a.help and a.label and a.scopes


def test_check_keymap_reports_unknown_ids_empty_keys_and_clashes() -> None:
    km = check_keymap({"reply": "e", "nonsense": "x", "undo": " ", "send_phone": "?"})
    assert km.overrides == {"reply": "e", "send_phone": "question_mark"}
    assert any("unknown binding id 'nonsense'" in p for p in km.problems)
    assert any("undo has no key" in p for p in km.problems)
    assert any("'e'" in p and "export" in p and "reply" in p for p in km.problems)  # e exports on a thread
    assert any("'question_mark'" in p and "help" in p for p in km.problems)
    assert check_keymap({}).problems == []


async def test_remapped_key_works_and_shows_and_unknown_id_is_a_notice(tmp_path: Path, make_app) -> None:
    session = practice(tmp_path / "store", ui={"keys": {"reply": "w", "no_such_action": "z"}})
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert any("no_such_action" in str(n.message) for n in app._notifications)
        assert "w Reply" in screen_text(app) and "r Reply" not in screen_text(app)
        await pilot.press("r")
        assert isinstance(app.screen, InboxScreen)
        await pilot.press("w")
        assert isinstance(app.screen, ComposeScreen)
        await pilot.press("escape", "enter", "w")  # on the thread too
        assert isinstance(app.screen, ComposeScreen)
        await pilot.press("escape", "question_mark")  # help shows the remapped key and the problem
        assert isinstance(app.screen, HelpScreen)
        await pilot.pause()
        text = screen_text(app)
        assert "reply" in text and "Keys" in text
    session.close()


async def test_help_lists_every_key_with_its_id(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
        console.print(app.screen._table())
        listing = console.export_text()
        for a in ACTIONS:
            assert a.id in listing, a.id
            assert a.help in listing, a.id
        assert "ctrl+s" in listing.replace("^s", "ctrl+s")
        await pilot.press("escape")
        assert isinstance(app.screen, InboxScreen)


async def test_footer_shows_the_main_keys(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        footer = screen_text(app).splitlines()[-1]
        for label in ("Filter", "Select", "Reply", "Phone", "Visit", "Out of scope", "Undo", "Keys"):
            assert label in footer


async def test_palette_lists_every_action_of_the_screen_and_runs_them(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for screen_type, scope in ((InboxScreen, INBOX), (ThreadScreen, THREAD)):
            assert isinstance(app.screen, screen_type)
            provider = CareboxCommands(app.screen)
            names = {help_text for _, _, help_text, _ in provider._commands()}
            wanted = {a.id for a in ACTIONS if a.palette and (scope in a.scopes or "app" in a.scopes)}
            if scope == INBOX:  # outbox-only actions appear in the Outbox view
                wanted -= {"outbox_retry", "outbox_discard"}
            else:  # this thread has no attachment
                wanted -= {"save_attachment"}
            listed = {h.rsplit("id ", 1)[1] for h in names if "id " in h}
            assert wanted <= listed, wanted - listed
            themes = [d for d, *_ in provider._commands() if d.startswith("Theme: ")]
            assert themes == ["Theme: carebox-contrast", "Theme: carebox-dark", "Theme: carebox-light"]
            await pilot.press("enter")
        await pilot.press("escape", "ctrl+p")
        await pilot.pause()
        await pilot.press(*"reply")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ComposeScreen)
        await pilot.press("escape", "ctrl+p", *"light")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.theme == "carebox-light"


async def test_keys_inside_the_filter_are_text_not_actions(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", "r", "p", "o")
        assert isinstance(app.screen, InboxScreen)
        assert app.screen.query_one("#filter", Input).value == "rpo"
    assert BY_ID["filter"].key == "slash"
