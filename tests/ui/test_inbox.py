"""The inbox and thread screens driven by Pilot: navigation, views, filter, paging, selection."""

from __future__ import annotations

from pathlib import Path

from carebox.services import inbox
from carebox.ui.screens.inbox import InboxScreen
from carebox.ui.screens.thread import ThreadScreen
from tests.ui.helpers import NOW, many, settle
from tests.ui.screen_text import screen_text

SIZE = (120, 32)


async def test_open_move_down_open_thread_shows_it(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        box = app.screen
        assert isinstance(box, InboxScreen)
        ranked = inbox.ranked_ids(session.store, NOW, "due")
        assert [r.id for r in box.rows] == ranked
        text = screen_text(app)
        assert "URGENT" in text and "Maria Lopez" in text and "overdue 2d 14h" in text
        await pilot.press("down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ThreadScreen)
        assert app.screen.thread_id == ranked[1]
        text = screen_text(app)
        assert "Patient Number3 <patient3@mail.example>" in text
        assert "Can I book an appointment for next week?" in text
        assert "Appointment next week?" in text
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, InboxScreen)
        assert app.screen.current_id() == ranked[1]


async def test_urgent_thread_shows_banner_and_sender_explanation(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter")
        await pilot.pause()
        text = screen_text(app)
        assert "URGENT: possible emergency" in text
        assert "not in the patient directory" in text


async def test_views_switch_and_show_their_threads(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        box = app.screen
        assert box.view == "due" and len(box.rows) == 5
        await pilot.press("2")
        assert box.view == "all" and len(box.rows) == 6
        await pilot.press("4")
        assert box.view == "answered"
        assert [r.patient_name for r in box.rows] == ["Patient Number4"]
        await pilot.press("3")
        assert box.rows == [] and "No conversations in Out of scope" in screen_text(app)
        await pilot.press("5")
        await pilot.pause()
        assert box.view == "outbox" and "The outbox is empty" in screen_text(app)
        await pilot.press("1")
        assert box.view == "due" and len(box.rows) == 5


async def test_filter_matches_in_memory_and_writes_nothing(session, make_app, tmp_path: Path) -> None:
    store_dir = session.store_dir
    before = {p.name: p.read_bytes() for p in store_dir.iterdir() if p.is_file()}
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash")
        await pilot.press(*"invoice")
        await pilot.pause(0.2)
        await settle(app)
        await pilot.pause()
        box = app.screen
        assert [r.subject for r in box.rows] == ["Question about my invoice"]
        await pilot.press("enter")  # keep the filter, back to the list
        assert box.filter_text == "invoice" and app.focused is box.table
        await pilot.press("escape")  # clears it
        await pilot.pause()
        assert box.filter_text == "" and len(box.rows) == 5
        await pilot.press("slash", *"number5 lab")
        await pilot.pause(0.2)
        await settle(app)
        await pilot.pause()
        assert [r.patient_name for r in box.rows] == ["Patient Number5"]
    after = {p.name: p.read_bytes() for p in store_dir.iterdir() if p.is_file()}
    assert set(after) == set(before)  # no new file
    for data in after.values():
        assert b"invoice" not in data and b"Number5" not in data


async def test_pages_in_more_rows_on_scroll(tmp_path: Path, make_app) -> None:
    session = many(tmp_path / "store", 130)
    app = make_app(session, page_size=50)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        box = app.screen
        assert box.total == 130 and len(box.rows) == 50
        await pilot.press("ctrl+end")
        await settle(app)
        await pilot.pause()
        assert len(box.rows) == 100
        await pilot.press("ctrl+end")
        await settle(app)
        await pilot.pause()
        assert len(box.rows) == 130
        assert [r.id for r in box.rows] == inbox.ranked_ids(session.store, NOW, "due")
    session.close()


async def test_space_selects_and_star_selects_all(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        box = app.screen
        await pilot.press("space")
        assert list(box.selected) == [box.rows[0].id]
        assert box.current_id() == box.rows[1].id  # the cursor moved on
        assert "1 selected" in screen_text(app)
        await pilot.press("up", "space")  # unselect the first again
        assert not box.selected and box.current_id() == box.rows[1].id
        await pilot.press("space")
        assert list(box.selected) == [box.rows[1].id]
        await pilot.press("asterisk")
        assert set(box.selected) == {r.id for r in box.rows}
        assert box.targets() == [r.id for r in box.rows]
        await pilot.press("asterisk")  # again: unselects all
        assert not box.selected
        await pilot.press("space", "escape")
        assert not box.selected


async def test_star_in_a_filter_selects_only_the_matches(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", *"patient number")
        await pilot.pause(0.2)
        await settle(app)
        await pilot.pause()
        await pilot.press("enter", "asterisk")
        box = app.screen
        assert len(box.selected) == 4
        assert all(box.by_id[t].patient_name.startswith("Patient Number") for t in box.selected)


async def test_j_k_move_v_fills_the_visit_template_and_ctrl_q_quits(session, make_app) -> None:
    from textual.widgets import TextArea

    from carebox.ui.screens.compose import ComposeScreen

    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        box = app.screen
        await pilot.press("j", "j", "k")
        assert box.table.cursor_row == 1
        await pilot.press("v")
        assert isinstance(app.screen, ComposeScreen) and app.screen.spec.kind == "redirect_visit"
        text = app.screen.query_one(TextArea).text
        assert "Please book a visit: call +1 555 0100" in text
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert app.return_code == 0
