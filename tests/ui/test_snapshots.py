"""Snapshots of the main screens in each theme, with a frozen clock (CareboxApp's ``clock``).
Update after an intended change with ``pytest tests/ui/test_snapshots.py --snapshot-update``
and look at the SVGs under tests/ui/__snapshots__ before committing them."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, TextArea

from carebox.ui.app import CareboxApp
from tests.ui.helpers import clock, practice
from tests.ui.helpers import settle as settle_workers

THEMES = ("carebox-dark", "carebox-light", "carebox-contrast")
SIZE = (110, 30)


def make(tmp_path: Path, theme: str) -> CareboxApp:
    session = practice(tmp_path / "store", ui={"theme": theme})
    return CareboxApp(session, clock=clock, undo_seconds=3600, background_sync=False)


async def settle(pilot: Pilot) -> None:
    app = pilot.app
    for _ in range(100):  # the status bar is filled by a worker after the first frame
        await pilot.pause()
        await settle_workers(app)
        if app.status_text.plain or app.locked:
            break
    for area in pilot.app.screen.query(TextArea):
        area.cursor_blink = False
    await pilot.pause()


@pytest.mark.parametrize("theme", THEMES)
def test_inbox(snap_compare, tmp_path: Path, theme: str) -> None:
    assert snap_compare(make(tmp_path, theme), terminal_size=SIZE, run_before=settle)


@pytest.mark.parametrize("theme", THEMES)
def test_thread(snap_compare, tmp_path: Path, theme: str) -> None:
    async def run_before(pilot: Pilot) -> None:
        await pilot.press("enter")  # the urgent thread: banner and sender explanation
        await settle(pilot)

    assert snap_compare(make(tmp_path, theme), terminal_size=SIZE, run_before=run_before)


@pytest.mark.parametrize("theme", THEMES)
def test_composer(snap_compare, tmp_path: Path, theme: str) -> None:
    async def run_before(pilot: Pilot) -> None:
        await pilot.press("down", "down", "r", *"Yes.")
        await settle(pilot)

    assert snap_compare(make(tmp_path, theme), terminal_size=SIZE, run_before=run_before)


@pytest.mark.parametrize("theme", THEMES)
def test_bulk_preview(snap_compare, tmp_path: Path, theme: str) -> None:
    async def run_before(pilot: Pilot) -> None:
        await pilot.press("down", "space", "space", "space", "r")
        pilot.app.screen.query_one(TextArea).text = "Dear {patient_first_name},\n\nThe practice is closed on Friday.\n"
        await pilot.press("ctrl+s")
        await settle(pilot)

    assert snap_compare(make(tmp_path, theme), terminal_size=SIZE, run_before=run_before)


@pytest.mark.parametrize("theme", THEMES)
def test_lock_screen(snap_compare, tmp_path: Path, theme: str) -> None:
    async def run_before(pilot: Pilot) -> None:
        await pilot.press("ctrl+l")
        await settle(pilot)

    assert snap_compare(make(tmp_path, theme), terminal_size=SIZE, run_before=run_before)


@pytest.mark.parametrize("theme", THEMES)
def test_patient_form_with_an_error(snap_compare, tmp_path: Path, theme: str) -> None:
    async def run_before(pilot: Pilot) -> None:
        await pilot.press("D")  # the patient directory, then a new patient with a bad date
        await settle(pilot)
        await pilot.press("a", *"Zoe New", "tab", *"zoe@mail.example", "tab", "tab", *"2026-13-01", "ctrl+s")
        await settle(pilot)
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False
        await pilot.pause()

    assert snap_compare(make(tmp_path, theme), terminal_size=SIZE, run_before=run_before)
