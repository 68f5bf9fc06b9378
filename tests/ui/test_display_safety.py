"""Mail text is shown literally: no markup, no click actions, no escape sequences, no bidi
overrides; the terminal title never carries patient data."""

from __future__ import annotations

from textual.widgets import DataTable

from carebox.ui.screens.inbox import InboxScreen
from carebox.ui.screens.thread import ThreadScreen
from tests.ui.screen_text import screen_text

SIZE = (140, 36)
FORBIDDEN = ("\x1b", "\x07", "\x9b", "\u202e", "\u202c", "pwned\x07")


def segments_with_actions(app) -> list[str]:
    """Any rendered segment carrying a click action or a link (there must be none from mail)."""
    found = []
    for strip in app.screen._compositor.render_strips():
        for seg in strip:
            style = seg.style
            if style is None:
                continue
            meta = style.meta or {}
            if "@click" in meta or style.link:
                found.append(seg.text)
    return found


def eve_row(box: InboxScreen) -> int:
    return next(i for i, r in enumerate(box.rows) if r.patient_addr == "eve@mail.example")


async def test_hostile_subject_stays_text_in_the_inbox_and_clicking_does_nothing(hostile, make_app) -> None:
    app = make_app(hostile)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "[@click=app.quit]x[/]" in text  # shown literally
        assert "[/] Eve evil" in text
        for bad in FORBIDDEN:
            assert bad not in text
        assert [s for s in segments_with_actions(app) if "x[/]" in s or "@click" in s] == []
        box = app.screen
        row = eve_row(box)
        table = box.query_one("#threads", DataTable)
        y = table.region.y + 1 + row  # header line, then rows
        x = table.region.x + 1 + 6 + 14 + 24 + 12 + 5 * 2 + 3  # inside the subject cell
        await pilot.click(offset=(x, y))
        await pilot.pause()
        assert app.is_running and app.return_code is None
        assert box.current_id() == box.rows[row].id


async def test_hostile_thread_renders_without_markup_or_escapes(hostile, make_app) -> None:
    app = make_app(hostile)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        box = app.screen
        box.table.move_cursor(row=eve_row(box))
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ThreadScreen)
        text = screen_text(app)
        assert "[bold]not bold[/bold] [/] [@click=app.quit]click me[/]" in text
        assert "title" in text and "link" in text and "override end" in text
        assert "\ufffd" in text  # a lone control shows as a visible placeholder
        for bad in (*FORBIDDEN, "http://evil.example"):
            assert bad not in text
        assert segments_with_actions(app) == []
        await pilot.click(offset=(30, 12))
        await pilot.pause()
        assert app.is_running
        assert app.title == "carebox" and app.screen.title in (None, "", "carebox")
        assert app.sub_title == ""


async def test_title_is_never_patient_data(hostile, make_app) -> None:
    app = make_app(hostile)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for keys in (("enter",), ("escape", "r"), ("escape",), ("slash", "e", "v", "e")):
            await pilot.press(*keys)
            await pilot.pause()
            titles = {app.title, app.sub_title, app.screen.title or "", app.screen.sub_title or ""}
            assert titles <= {"carebox", ""}
