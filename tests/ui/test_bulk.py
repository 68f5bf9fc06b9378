"""Bulk actions: select, one template, a preview per recipient, confirm, progress, summary,
failures kept selected, and undo of the whole batch."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import OptionList, Static, TextArea

from carebox.domain.models import Address
from carebox.services import inbox, outbox
from carebox.ui.screens.bulk import BulkPreviewScreen
from carebox.ui.screens.compose import ComposeScreen
from carebox.ui.screens.dialogs import ConfirmScreen, SummaryScreen
from carebox.ui.screens.inbox import InboxScreen
from tests.factories import DOC, message, patient
from tests.ui.helpers import NOW, build_store, many, settle
from tests.ui.screen_text import screen_text

SIZE = (120, 36)


async def test_bulk_reply_to_fifty_threads_then_undo(tmp_path: Path, make_app) -> None:
    session = many(tmp_path / "store", 50)
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        box = app.screen
        assert box.total == 50
        await pilot.press("asterisk", "r")
        assert isinstance(app.screen, ComposeScreen) and app.screen.spec.bulk
        assert "To: 50 conversations" in screen_text(app)
        app.screen.query_one(TextArea).text = "Dear {patient_first_name},\n\nThe practice is closed on Friday.\n"
        await pilot.press("ctrl+s")
        await settle(app)
        await pilot.pause()
        preview = app.screen
        assert isinstance(preview, BulkPreviewScreen)
        assert len(preview.previews) == 50 and not preview.failed
        recipients = preview.query_one(OptionList)
        assert recipients.option_count == 50
        body = str(preview.query_one("#preview-body", Static).render())
        assert "Dear Patient," in body and "{" not in body and "Re: Question" in body
        assert "50 replies ready" in screen_text(app)
        await pilot.press("down")
        assert "patient10" in str(preview.query_one("#preview-body", Static).render())
        await pilot.press("y")
        await pilot.pause()
        await settle(app)
        await pilot.pause()
        assert isinstance(app.screen, SummaryScreen)
        assert "50 of 50 queued." in screen_text(app)
        queued = outbox.list_entries(session.store)
        assert len(queued) == 50 and {e.kind for e in queued} == {"reply"}
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, InboxScreen)
        assert inbox.ranked_ids(session.store, NOW, "due") == [] and app.screen.rows == []
        assert not app.screen.selected
        await pilot.press("u")
        await pilot.pause()
        assert outbox.list_entries(session.store) == []
        assert len(inbox.ranked_ids(session.store, NOW, "due")) == 50
        assert len(app.screen.rows) == 50
    session.close()


async def test_bulk_failures_stay_selected(tmp_path: Path, make_app) -> None:
    msgs = [
        message(f"q{i}@x", sender=patient(200 + i), to=DOC, subject=f"Q{i}", hours=i, uid=i + 1, body="hi")
        for i in range(3)
    ]
    msgs.append(message("bad@x", sender=Address("No Address", ""), to=DOC, subject="Broken", hours=5, uid=9))
    session = build_store(tmp_path / "store", msgs, directory=range(200, 203))
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        box = app.screen
        bad = next(r.id for r in box.rows if r.subject == "Broken")
        await pilot.press("asterisk", "V")  # send at once, several: the preview comes first
        await settle(app)
        await pilot.pause()
        preview = app.screen
        assert isinstance(preview, BulkPreviewScreen)
        assert set(preview.failed) == {bad} and len(preview.previews) == 3
        assert "1 cannot be sent" in screen_text(app)
        await pilot.press("y")
        await settle(app)
        await pilot.pause()
        assert isinstance(app.screen, SummaryScreen)
        assert "3 of 4 queued." in screen_text(app) and "stay selected" in screen_text(app)
        await pilot.press("enter")
        await pilot.pause()
        assert list(app.screen.selected) == [bad]
        assert [e.kind for e in outbox.list_entries(session.store)] == ["redirect_visit"] * 3
    session.close()


async def test_bulk_out_of_scope_tags_after_confirming(tmp_path: Path, make_app) -> None:
    session = many(tmp_path / "store", 6)
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        box = app.screen
        await pilot.press("space", "space", "space", "o")
        await pilot.press("down", "enter")  # the second category: billing
        assert isinstance(app.screen, ConfirmScreen)
        assert "Tag 3 conversations as Billing?" in screen_text(app)
        await pilot.press("y")
        await settle(app)
        await pilot.pause()
        assert "3 of 3 tagged." in screen_text(app)
        await pilot.press("enter")
        await pilot.pause()
        assert len(box.rows) == 3 and outbox.list_entries(session.store) == []
        await pilot.press("u")
        await pilot.pause()
        assert len(box.rows) == 6
    session.close()
