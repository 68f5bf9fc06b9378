"""The patient directory screen driven by Pilot: list and filter, add, edit (the inbox badge
follows), delete with a confirmation, validation in the form, plain-text display, audit
entries with opaque ids only, and the lock."""

from __future__ import annotations

from textual.widgets import Input

from carebox.domain.safety import DirectoryPatient
from carebox.services.safety import patients, verify_audit
from carebox.store import audit
from carebox.store import patients as patient_store
from carebox.ui.actions import ACTIONS, PATIENTS
from carebox.ui.commands import CareboxCommands
from carebox.ui.screens.dialogs import ConfirmScreen
from carebox.ui.screens.inbox import InboxScreen
from carebox.ui.screens.lock import LockScreen
from carebox.ui.screens.patients import PatientFormScreen, PatientsScreen
from tests.ui.helpers import PASSPHRASE, settle
from tests.ui.screen_text import screen_text

SIZE = (120, 32)
MARIA = "maria@mail.example"  # writes in the practice inbox, not in the directory


def audit_entries(session) -> list[tuple[str, str]]:
    return [(e.action, e.ref) for e in audit.entries(session.store)]


def maria_row(app) -> object:
    box = app.inbox_screen
    assert box is not None
    return next(r for r in box.rows if r.patient_addr == MARIA)


def inbox_line(app, name: str) -> str:
    return next(line for line in screen_text(app).splitlines() if name in line)


async def open_directory(pilot) -> PatientsScreen:
    await pilot.pause()
    await pilot.press("D")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, PatientsScreen)
    return screen


async def fill(pilot, **values: str) -> None:
    """Type into the form's fields (what a user types; the field is emptied first)."""
    form = pilot.app.screen
    assert isinstance(form, PatientFormScreen)
    for key, text in values.items():
        field = form.query_one(f"#pf-{key}", Input)
        field.focus()
        field.value = ""
        await pilot.press(*text)
    await pilot.pause()


async def test_d_lists_the_directory_filters_and_escape_closes(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        assert "D Patients" in screen_text(app).splitlines()[-1]  # in the inbox's footer
        screen = await open_directory(pilot)
        text = screen_text(app)
        assert "Patient directory  7 patients" in text
        line = next(x for x in text.splitlines() if "Patient Number3" in x)
        assert "patient3@mail.example" in line and "2026-01-05" in line and "2026-10-01" in line
        assert "a Add" in text and "e Edit" in text and "d Delete" in text
        await pilot.press("slash", *"number3")
        await pilot.pause()
        assert [p.name for p in screen.shown] == ["Patient Number3"]
        assert "1 shown" in screen_text(app)
        await pilot.press("escape")  # clears the filter first
        assert len(screen.shown) == 7 and isinstance(app.screen, PatientsScreen)
        helps = [help_text for _, _, help_text, _ in CareboxCommands(screen)._commands()]
        listed = {h.rsplit("id ", 1)[1] for h in helps if "id " in h}
        assert {a.id for a in ACTIONS if PATIENTS in a.scopes} <= listed  # the palette lists them
        await pilot.press("escape")
        assert isinstance(app.screen, InboxScreen)


async def test_add_then_add_consent_turns_the_inbox_badge_verified(session, make_app) -> None:
    app = make_app(session)
    before = len(audit_entries(session))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert maria_row(app).sender_status == "unknown"
        screen = await open_directory(pilot)
        await pilot.press("a")
        assert isinstance(app.screen, PatientFormScreen)
        await fill(pilot, name="Maria Lopez", emails=f"{MARIA}, m.lopez@work.example", phone="+1 555 0199")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen
        maria = next(p for p in patients(session.store) if p.name == "Maria Lopez")
        assert maria.emails == (MARIA, "m.lopez@work.example") and maria.consent_date is None
        assert maria_row(app).sender_status == "no_consent"  # the inbox below was rechecked
        assert "no consent" in next(x for x in screen_text(app).splitlines() if "Maria Lopez" in x)
        assert screen.current_id() == maria.id
        await pilot.press("enter")  # edit: enter on the row
        assert isinstance(app.screen, PatientFormScreen)
        assert app.screen.query_one("#pf-emails", Input).value == f"{MARIA}, m.lopez@work.example"
        await fill(pilot, consent_date="2026-11-02")
        await pilot.press("enter")  # enter in a field saves too
        await pilot.pause()
        assert app.screen is screen
        assert next(p for p in patients(session.store) if p.id == maria.id).consent_date.isoformat() == "2026-11-02"
        assert maria_row(app).sender_status == "verified"
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, InboxScreen)
        line = inbox_line(app, "Maria Lopez")
        assert "verified" in line and "no consent" not in line and "unknown" not in line
    added = audit_entries(session)[before:]
    assert added == [("patient_add", maria.id), ("patient_edit", maria.id)]
    assert verify_audit(session.store).ok
    for _, ref in added:  # opaque ids only
        assert "maria" not in ref.casefold() and "lopez" not in ref.casefold() and "@" not in ref


async def test_delete_asks_naming_the_patient_no_keeps_yes_deletes(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_directory(pilot)
        number1 = screen.current()
        assert number1.name == "Patient Number1"
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Delete Patient Number1 from the patient directory?" in screen_text(app)
        await pilot.press("n")
        assert app.screen is screen and len(patients(session.store)) == 7
        await pilot.press("d", "escape")  # escape answers no as well
        assert app.screen is screen and len(patients(session.store)) == 7
        await pilot.press("d", "y")
        await pilot.pause()
        assert app.screen is screen
        assert [p.name for p in patients(session.store)].count("Patient Number1") == 0
        assert len(screen.shown) == 6 and "Patient Number1" not in screen_text(app)
        box = app.inbox_screen
        row = next(r for r in box.rows if r.patient_addr == "patient1@mail.example")
        # no longer verified: off file, its address now looks like patient2's, which is on file
        assert row.sender_status == "warning"
    assert audit_entries(session)[-1] == ("patient_delete", number1.id)


async def test_invalid_fields_show_one_line_and_save_nothing(session, make_app) -> None:
    app = make_app(session)
    before = (patients(session.store), len(audit_entries(session)))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_directory(pilot)
        await pilot.press("a")
        await fill(pilot, name="Zoe New", emails="zoe@mail.example", consent_date="2026-13-45")
        await pilot.press("ctrl+s")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, PatientFormScreen)
        text = screen_text(app)
        assert "Email consent date: expected a date like 2026-03-31 (or 31.03.2026)" in text
        assert (patients(session.store), len(audit_entries(session))) == before
        await fill(pilot, consent_date="2026-10-01", emails="zoe@mail.example, zoe at home")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is form
        assert "Email addresses: address 2 is not an email address (separate several with ',' or ';')" in (
            screen_text(app)
        )
        await fill(pilot, emails="patient2@mail.example")  # Patient Number2's address
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is form and "already on file for another patient" in screen_text(app)
        assert (patients(session.store), len(audit_entries(session))) == before
        # cancel with changes asks; n keeps the form, y discards
        await pilot.press("escape")
        assert isinstance(app.screen, ConfirmScreen) and "Discard the changes" in screen_text(app)
        await pilot.press("n")
        assert app.screen is form
        await pilot.press("escape", "y")
        await pilot.pause()
        assert app.screen is screen
        # unchanged form: escape closes at once
        await pilot.press("e")
        assert isinstance(app.screen, PatientFormScreen)
        await pilot.press("escape")
        assert app.screen is screen
    assert (patients(session.store), len(audit_entries(session))) == before


async def test_markup_and_escapes_in_a_name_show_literally(session, make_app) -> None:
    # written past the service's cleaning, as an older or damaged record could hold it
    hostile = "[red]Eve[/] [@click=app.quit]x[/] \x1b]0;pwned\x07\u202eevil"
    patient_store.save_patient(session.store, DirectoryPatient("", hostile, ("eve@mail.example",)))
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_directory(pilot)
        text = screen_text(app)
        assert "[red]Eve[/] [@click=app…" in text  # literally, cut to the column's width
        assert "pwned" not in text and "\x1b" not in text and "\x07" not in text and "\u202e" not in text
        eve = next(i for i, p in enumerate(screen.shown) if "Eve" in p.name)
        screen.table.move_cursor(row=eve, animate=False)
        await pilot.pause()
        await pilot.press("d")
        assert "Delete [red]Eve[/] [@click=app.quit]x[/] evil from" in screen_text(app)
        await pilot.press("n", "e")
        form = app.screen
        assert isinstance(form, PatientFormScreen)
        assert "Edit patient [red]Eve[/] [@click=app.quit]x[/] evil" in screen_text(app)
        assert "\x1b" not in form.query_one("#pf-name", Input).value
        # markup typed into the form is kept as text
        await fill(pilot, name="[bold]Zed[/bold]")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen
        assert "[bold]Zed[/bold]" in [p.name for p in patients(session.store)]
        assert "[bold]Zed[/bold]" in screen_text(app)


async def test_lock_drops_the_directory_screen(session, make_app) -> None:
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_directory(pilot)
        await pilot.press("a")
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert isinstance(app.screen, LockScreen)
        assert screen.everyone == [] and screen.shown == []
        assert not any(isinstance(s, (PatientsScreen, PatientFormScreen)) for s in app.screen_stack)
        await pilot.press("D")  # nothing opens behind the lock
        assert isinstance(app.screen, LockScreen)
        app.screen.query_one(Input).value = PASSPHRASE
        await pilot.press("enter")
        await settle(app)
        await pilot.pause()
        assert isinstance(app.screen, InboxScreen)
