"""Triage keys driven by Pilot: reply, redirects, out of scope, suggestions, undo, drafts,
$EDITOR, attachments, export."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from textual.widgets import Input, TextArea

from carebox.services import inbox, outbox
from carebox.ui.screens.compose import ComposeScreen
from carebox.ui.screens.dialogs import CategoryScreen, ConfirmScreen, PathScreen
from carebox.ui.screens.inbox import InboxScreen
from carebox.ui.screens.thread import ThreadScreen
from tests.ui.helpers import NOW, settle
from tests.ui.screen_text import screen_text

SIZE = (120, 32)


def entries(session):
    return outbox.list_entries(session.store)


def row_of(box: InboxScreen, subject: str) -> int:
    return next(i for i, r in enumerate(box.rows) if r.subject == subject)


async def goto(pilot, subject: str) -> str:
    box = pilot.app.screen
    assert isinstance(box, InboxScreen)
    box.table.move_cursor(row=row_of(box, subject), animate=False)
    await pilot.pause()
    return box.current_id()


async def test_reply_queues_leaves_due_and_undo_brings_it_back(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        tid = await goto(pilot, "Blood pressure medication")
        await pilot.press("r")
        assert isinstance(app.screen, ComposeScreen)
        area = app.screen.query_one(TextArea)
        assert "> should I keep taking 5 mg in the morning?" in area.text
        assert "Patient Number1 <patient1@mail.example>" in screen_text(app)
        await pilot.press(*"Yes, keep taking it.")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, InboxScreen)  # verified address: no question asked
        (entry,) = entries(session)
        assert entry.thread_id == tid and entry.kind == "reply" and entry.state == "queued"
        assert tid not in inbox.ranked_ids(session.store, NOW, "due")
        assert tid not in [r.id for r in app.screen.rows]
        await pilot.press("u")
        await pilot.pause()
        assert entries(session) == []
        assert tid in inbox.ranked_ids(session.store, NOW, "due")
        assert tid in [r.id for r in app.screen.rows]


async def test_reply_to_an_unverified_address_asks_first(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await goto(pilot, "Since this morning")  # Maria is not in the directory
        await pilot.press("r", *"Please call 112 now.", "ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "maria@mail.example" in screen_text(app) and "not a verified address" in screen_text(app)
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, ComposeScreen) and entries(session) == []  # text kept, nothing sent
        await pilot.press("ctrl+s", "y")
        await pilot.pause()
        assert [e.kind for e in entries(session)] == ["reply"]
        assert isinstance(app.screen, InboxScreen)


async def test_p_fills_the_phone_template_for_a_last_look(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        tid = await goto(pilot, "Lab results")
        await pilot.press("p")
        assert isinstance(app.screen, ComposeScreen)
        text = app.screen.query_one(TextArea).text
        assert text.startswith("Dear Patient,") and "+1 555 0100" in text and "{" not in text
        await pilot.press("ctrl+s")
        await pilot.pause()
        (entry,) = entries(session)
        assert entry.kind == "redirect_phone" and entry.thread_id == tid
        await pilot.press("2")
        assert app.screen.by_id[tid].tag == "redirect:phone"


async def test_capital_v_sends_at_once_and_u_takes_it_back(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        tid = await goto(pilot, "Blood pressure medication")
        await pilot.press("V")
        await pilot.pause()
        assert isinstance(app.screen, InboxScreen)
        (entry,) = entries(session)
        assert entry.kind == "redirect_visit" and entry.state == "queued" and entry.thread_id == tid
        await pilot.press("u")
        await pilot.pause()
        assert entries(session) == []
        assert tid in [r.id for r in app.screen.rows]
        await pilot.press("u")  # nothing left to undo
        await pilot.pause()


async def test_capital_p_goes_out_after_the_undo_window(tmp_path, make_app) -> None:
    from tests.ui.helpers import practice

    session = practice(tmp_path / "store")
    session.demo = True  # demo sending writes to a local mbox: a real flush, no network
    session.extras["demo_outbox"] = tmp_path / "sent.mbox"
    # A window long enough that a busy CI machine can't run past it before the first check.
    app = make_app(session, undo_seconds=2.0)
    async with app.run_test(size=SIZE) as pilot:
        await goto(pilot, "Lab results")
        await pilot.press("P")
        assert not (tmp_path / "sent.mbox").exists()  # not inside the undo window
        for _ in range(200):
            await pilot.pause(0.05)
            await settle(app)
            if [e.state for e in outbox.list_entries(session.store, None)] == ["filed"]:
                break
        assert (tmp_path / "sent.mbox").exists()
        assert b"Dear Patient," in (tmp_path / "sent.mbox").read_bytes()
        assert [e.state for e in outbox.list_entries(session.store, None)] == ["filed"]
        await pilot.press("u")  # too late: it was sent
        await pilot.pause()
        assert [e.state for e in outbox.list_entries(session.store, None)] == ["filed"]
        assert " DEMO " in screen_text(app)
    session.close()


async def test_o_tags_out_of_scope_and_u_untags(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        tid = await goto(pilot, "Question about my invoice")
        await pilot.press("o")
        assert isinstance(app.screen, CategoryScreen)
        await pilot.press("enter")  # the suggested category (billing) is highlighted
        await pilot.pause()
        assert isinstance(app.screen, InboxScreen)
        assert tid not in [r.id for r in app.screen.rows]
        assert entries(session) == []  # tag only
        await pilot.press("3")
        assert [(r.id, r.tag) for r in app.screen.rows] == [(tid, "billing")]
        await pilot.press("u")
        await pilot.pause()
        assert app.screen.rows == []
        await pilot.press("1")
        assert tid in [r.id for r in app.screen.rows]


async def test_o_then_r_replies_with_the_category_template(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        tid = await goto(pilot, "Question about my invoice")
        await pilot.press("o", "r")
        assert isinstance(app.screen, ComposeScreen)
        assert "For billing questions please call +1 555 0100." in app.screen.query_one(TextArea).text
        await pilot.press("ctrl+s")
        await pilot.pause()
        (entry,) = entries(session)
        assert entry.kind == "out_of_scope" and entry.thread_id == tid
        await pilot.press("3")
        assert [r.tag for r in app.screen.rows] == ["billing"]


async def test_t_accepts_the_suggested_tag(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        tid = await goto(pilot, "Appointment next week?")
        await pilot.press("t")
        await pilot.pause()
        assert tid not in [r.id for r in app.screen.rows]
        await pilot.press("3")
        assert [(r.id, r.tag) for r in app.screen.rows] == [(tid, "appointment")]


async def test_actions_from_the_thread_screen_return_to_the_inbox(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        tid = await goto(pilot, "Question about my invoice")
        await pilot.press("enter")
        assert isinstance(app.screen, ThreadScreen)
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, InboxScreen)
        assert tid not in [r.id for r in app.screen.rows]


async def test_cancel_asks_when_text_was_written_and_drafts_are_kept(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        tid = await goto(pilot, "Blood pressure medication")
        await pilot.press("r", "escape")  # nothing written: closes at once
        assert isinstance(app.screen, InboxScreen)
        await pilot.press("r", *"Half a thought", "escape")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert isinstance(app.screen, ComposeScreen)
        await pilot.press("f2")
        await pilot.pause()
        assert isinstance(app.screen, InboxScreen) and entries(session) == []
        await pilot.press("r")
        assert app.screen.query_one(TextArea).text.startswith("Half a thought")
        assert "Draft restored" in screen_text(app)
        await pilot.press("escape", "y")
        assert isinstance(app.screen, InboxScreen)
        assert session.store.get_secret(f"draft:{tid}")  # discarding the edit keeps the saved draft


def _fake_editor(tmp_path: Path) -> Path:
    script = tmp_path / "fake-editor"
    log = tmp_path / "editor.log"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, stat, sys\n"
        "p = sys.argv[1]\n"
        f"open({str(log)!r}, 'w').write(p + '\\n' + oct(stat.S_IMODE(os.stat(p).st_mode))"
        " + ' ' + oct(stat.S_IMODE(os.stat(os.path.dirname(p)).st_mode)))\n"
        "open(p, 'a').write('Written in the editor.\\n')\n"
    )
    script.chmod(0o700)
    return script


async def test_editor_edits_a_private_temp_file_that_is_removed(session, make_app, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDITOR", str(_fake_editor(tmp_path)))
    monkeypatch.delenv("VISUAL", raising=False)
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await goto(pilot, "Blood pressure medication")
        await pilot.press("r", "ctrl+o")
        await pilot.pause()
        text = app.screen.query_one(TextArea).text
        assert "> should I keep taking 5 mg" in text and text.rstrip().endswith("Written in the editor.")
    path, modes = (tmp_path / "editor.log").read_text().splitlines()
    assert modes == "0o600 0o700"
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))


async def test_attachment_saved_on_request_to_a_private_file(hostile, make_app, tmp_path) -> None:
    app = make_app(hostile)
    async with app.run_test(size=SIZE) as pilot:
        await goto(pilot, "Lab results")
        await pilot.press("enter")
        assert "results.pdf" in screen_text(app)
        await pilot.press("a")
        assert isinstance(app.screen, PathScreen)
        field = app.screen.query_one(Input)
        assert field.value.endswith("results.pdf")
        field.value = str(tmp_path / "saved.pdf")
        await pilot.press("enter")
        await pilot.pause()
        saved = tmp_path / "saved.pdf"
        assert saved.read_bytes() == b"%PDF-1.4 lab results"
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        await pilot.press("a")  # again to the same path: refused, never overwritten
        app.screen.query_one(Input).value = str(saved)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ThreadScreen)
        # a hostile file name is offered without folders or escapes
        await pilot.press("escape")
        box = app.screen
        box.table.move_cursor(row=next(i for i, r in enumerate(box.rows) if r.patient_addr == "eve@mail.example"))
        await pilot.press("enter", "a")
        default = app.screen.query_one(Input).value
        assert default.endswith("/passwd") and ".." not in default and "\x1b" not in default


async def test_export_writes_the_record_files(session, make_app, tmp_path) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await goto(pilot, "Lab results")
        await pilot.press("enter", "e")
        app.screen.query_one(Input).value = str(tmp_path / "export")
        await pilot.press("enter")
        await pilot.pause()
    names = sorted(p.suffix for p in (tmp_path / "export").iterdir())
    assert names == [".json", ".pdf", ".txt"]


async def test_outbox_view_lists_entries_and_discard_or_retry_them(session, make_app) -> None:
    from carebox.store.outbox import OutboxStore

    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        tid = await goto(pilot, "Blood pressure medication")
        await pilot.press("V")
        await goto(pilot, "Lab results")
        await pilot.press("P")
        await pilot.pause()
        _first, second = entries(session)
        OutboxStore(session.store).transition(second.id, "uncertain", expect=("queued",), now=NOW, error="dropped")
        await pilot.press("5")
        await pilot.pause()
        text = screen_text(app)
        assert "queued" in text and "uncertain" in text and "redirect visit" in text and "Patient Number1" in text
        assert "x Discard" not in text  # outbox keys are hidden from the footer, listed in help
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await pilot.pause()
        assert [e.id for e in entries(session)] == [second.id]
        assert tid in inbox.ranked_ids(session.store, NOW, "due")  # never sent: due again
        await pilot.press("R")  # the uncertain one: the physician decides to send it again
        await pilot.pause()
        assert [e.state for e in entries(session)] == ["queued"]
        assert "Outbox 1 waiting" in app.status_text.plain
