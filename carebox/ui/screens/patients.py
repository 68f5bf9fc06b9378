"""The patient directory: list, filter, add, edit, delete (the form is a modal screen).

Every value comes from the encrypted store and reaches the screen as sanitised ``Text``
(``safe_line``), never as markup. Saving and deleting go through ``ops`` to the safety service,
which validates, records the change in the audit trail by opaque id and recomputes the sender
badge of that patient's conversations; the inbox underneath is then reloaded.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Input, Static

from carebox.domain.sanitize import clean_line
from carebox.ui import ops
from carebox.ui.actions import APP, PATIENT_FORM, PATIENTS, bindings
from carebox.ui.render import safe_line
from carebox.ui.screens.dialogs import ConfirmScreen
from carebox.ui.widgets import KeyBar, StatusBar

if TYPE_CHECKING:
    from carebox.ui.app import CareboxApp

PATIENT_COLUMNS = (
    ("name", "Name", 24),
    ("emails", "Email addresses", None),
    ("phone", "Phone", 16),
    ("consent", "Email consent", 13),
    ("last", "Last visit", 10),
    ("next", "Next visit", 10),
)
FIXED_WIDTH = sum(w for _, _, w in PATIENT_COLUMNS if w) + 2 * len(PATIENT_COLUMNS) + 2

# (field, label, placeholder) of the form, in order; the field names are patient_from_form's.
FORM_FIELDS = (
    ("name", "Name", "first and last name"),
    ("emails", "Email addresses", "anna@example.org, anna.work@example.org"),
    ("phone", "Phone", "+1 555 0100 (optional)"),
    ("consent_date", "Email consent date", "YYYY-MM-DD; empty: no consent on file"),
    ("last_visit", "Last visit", "YYYY-MM-DD (optional)"),
    ("next_visit", "Next visit", "YYYY-MM-DD (optional)"),
)


def _day(value: date | None) -> str:
    return value.isoformat() if value else ""


def form_values(patient: Any | None) -> dict[str, str]:
    """The form's initial text for a patient (empty fields for a new one), sanitised."""
    if patient is None:
        return {key: "" for key, _, _ in FORM_FIELDS}
    return {
        "name": clean_line(patient.name, 200),
        "emails": ", ".join(clean_line(e, 200) for e in patient.emails),
        "phone": clean_line(patient.phone, 40),
        "consent_date": _day(patient.consent_date),
        "last_visit": _day(patient.last_visit),
        "next_visit": _day(patient.next_visit),
    }


class PatientTable(DataTable[Any]):
    def on_mount(self) -> None:
        self.cursor_type = "row"
        width = max(20, (self.app.size.width or 120) - FIXED_WIDTH)
        for key, label, w in PATIENT_COLUMNS:
            self.add_column(label, key=key, width=w or width)

    def emails_width(self) -> int:
        return max(20, (self.app.size.width or 120) - FIXED_WIDTH)


class PatientsScreen(Screen[None]):
    """The directory as a table. ``a`` adds, ``e``/enter edits, ``d`` deletes (asks first),
    ``/`` filters in memory, escape clears the filter and then closes."""

    SCOPE = PATIENTS
    BINDINGS: ClassVar[list[BindingType]] = bindings(PATIENTS)
    AUTO_FOCUS = "#patients"

    def __init__(self) -> None:
        super().__init__()
        self.everyone: list[Any] = []  # DirectoryPatient records, decrypted (dropped on lock)
        self.shown: list[Any] = []
        self.filter_text = ""

    @property
    def capp(self) -> CareboxApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static(id="patients-head")
        yield PatientTable(id="patients")
        yield Static(id="patients-empty")
        yield Input(placeholder="filter: name, address or phone (enter keeps it, escape clears)", id="patients-filter")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#patients-filter", Input).display = False
        self.load()

    @property
    def table(self) -> PatientTable:
        return self.query_one("#patients", PatientTable)

    # --- loading ------------------------------------------------------------------------------

    def load(self, select: str | None = None) -> None:
        """Read the directory again (after a change) and show it, the cursor on ``select`` or
        where it was."""
        if self.capp.locked:
            return
        try:
            self.everyone = ops.patients(self.capp.session)
        except Exception as exc:
            self.everyone = []
            self.notify(ops.message(exc), severity="error", markup=False)
        self._show(select)

    def _matches(self) -> list[Any]:
        words = self.filter_text.casefold().split()
        if not words:
            return list(self.everyone)
        out = []
        for p in self.everyone:
            text = clean_line(" ".join((p.name, *p.emails, p.phone))).casefold()
            if all(w in text for w in words):
                out.append(p)
        return out

    def _show(self, select: str | None = None) -> None:
        table = self.table
        current = select or self.current_id()
        index = table.cursor_row
        self.shown = self._matches()
        table.clear()
        palette = self.capp.palette
        width = table.emails_width()
        for p in self.shown:
            consent = Text(_day(p.consent_date)) if p.consent_date else Text("no consent", style=palette.caution)
            table.add_row(
                safe_line(p.name, 24),
                safe_line(", ".join(p.emails), width),
                safe_line(p.phone, 16),
                consent,
                Text(_day(p.last_visit)),
                Text(_day(p.next_visit)),
                key=p.id,
            )
        if self.shown:
            ids = [p.id for p in self.shown]
            row = ids.index(current) if current in ids else min(max(index, 0), len(ids) - 1)
            table.move_cursor(row=row, animate=False)
        head = Text(no_wrap=True, overflow="ellipsis")
        head.append("Patient directory", style="bold")
        count = len(self.everyone)
        head.append(f"  {count} patient{'s' if count != 1 else ''}")
        if self.filter_text:
            head.append(f"  ·  {len(self.shown)} shown  ·  filter: ")
            head.append_text(safe_line(self.filter_text, 40))
        self.query_one("#patients-head", Static).update(head)
        empty = self.query_one("#patients-empty", Static)
        empty.display = not self.shown
        if not self.shown:
            empty.update(
                Text(
                    "Nothing matches the filter. escape clears it."
                    if self.filter_text
                    else "The directory is empty. a adds a patient; `carebox patients import FILE.csv` loads many."
                )
            )

    def current(self) -> Any | None:
        row = self.table.cursor_row
        return self.shown[row] if self.shown and 0 <= row < len(self.shown) else None

    def current_id(self) -> str | None:
        p = self.current()
        return p.id if p is not None else None

    def forget(self) -> None:
        """Drop every decrypted value held by this screen (lock)."""
        self.everyone = []
        self.shown = []
        self.table.clear()

    # --- actions ------------------------------------------------------------------------------

    def action_add(self) -> None:
        self.app.push_screen(PatientFormScreen(None), self._saved)

    def action_edit(self) -> None:
        patient = self.current()
        if patient is None:
            self.notify("No patient here to edit: a adds one", markup=False)
            return
        self.app.push_screen(PatientFormScreen(patient), self._saved)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_edit()

    def _saved(self, change: Any | None) -> None:
        if change is None or change.patient is None:
            return
        n = len(change.thread_ids)
        what = "added" if change.added else "saved"
        self.notify(f"Patient {what}; {n} conversation{'s' if n != 1 else ''} rechecked", markup=False, timeout=4)
        self.load(select=change.patient.id)
        self.capp.after_change()  # the inbox below shows the new badges

    def action_delete(self) -> None:
        patient = self.current()
        if patient is None:
            self.notify("No patient here to delete", markup=False)
            return
        question = Text("Delete ")
        question.append_text(safe_line(patient.name, 60, style="bold"))
        question.append(" from the patient directory?")
        detail = Text("Their conversations stay; their sender badge no longer says 'verified' (it is checked again).")
        pid = patient.id

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(pid)

        self.app.push_screen(ConfirmScreen(question, detail), answered)

    def _delete(self, patient_id: str) -> None:
        app = self.capp
        try:
            change = ops.delete_patient(app.session, patient_id, now=app.clock())
        except Exception as exc:
            self.notify(ops.message(exc), severity="error", markup=False)
            return
        if change is None:
            self.notify("That patient was no longer on file", markup=False)
        else:
            n = len(change.thread_ids)
            self.notify(f"Patient deleted; {n} conversation{'s' if n != 1 else ''} rechecked", markup=False)
        self.load()
        app.after_change()

    def action_filter(self) -> None:
        field = self.query_one("#patients-filter", Input)
        field.display = True
        field.focus()

    def action_close(self) -> None:
        field = self.query_one("#patients-filter", Input)
        if self.filter_text or field.display:
            self.filter_text = ""
            field.value = ""
            field.display = False
            self.table.focus()
            self._show()
            return
        self.app.pop_screen()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "patients-filter":
            self.filter_text = event.value.strip()
            self._show()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "patients-filter":
            return
        event.stop()
        if not self.filter_text:
            event.input.display = False
        self.table.focus()


class PatientFormScreen(ModalScreen[Any]):
    """Add or edit one patient. ctrl+s (or enter in a field) validates and saves; an error is one
    line in the form and nothing is saved; escape asks first when something was changed.
    Dismissed with the service's PatientChange, or None when cancelled."""

    SCOPE = PATIENT_FORM
    # a modal screen does not see the app's bindings: lock (ctrl+l) is added here
    BINDINGS: ClassVar[list[BindingType]] = [
        *bindings(PATIENT_FORM),
        *(b for b in bindings(APP) if b.id == "lock"),
    ]

    def __init__(self, patient: Any | None) -> None:
        super().__init__()
        self.patient = patient
        self.initial = form_values(patient)

    @property
    def capp(self) -> CareboxApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="patient-form"):
            title = Text("Edit patient " if self.patient is not None else "Add a patient", style="bold")
            if self.patient is not None:
                title.append_text(safe_line(self.patient.name, 60, style="bold"))
            yield Static(title, classes="dialog-title")
            for key, label, placeholder in FORM_FIELDS:
                with Horizontal(classes="form-row"):
                    yield Static(Text(label), classes="form-label")
                    yield Input(value=self.initial[key], placeholder=placeholder, id=f"pf-{key}", compact=True)
            yield Static(id="patient-error")
            yield Static(Text("ctrl+s / enter  save      tab  next field      escape  cancel"), classes="dialog-keys")

    def on_mount(self) -> None:
        self.query_one("#patient-error", Static).display = False
        self.query_one("#pf-name", Input).focus()

    def values(self) -> dict[str, str]:
        return {key: self.query_one(f"#pf-{key}", Input).value for key, _, _ in FORM_FIELDS}

    def changed(self) -> bool:
        return self.values() != self.initial

    def show_error(self, line: str) -> None:
        """One line under the fields; a field named by the service is named as the form labels it."""
        for key, label, _ in FORM_FIELDS:
            if line.startswith(f"{key}:"):
                line = label + line[len(key) :]
                break
        widget = self.query_one("#patient-error", Static)
        widget.update(Text(clean_line(line, 200)))
        widget.display = bool(line)

    def action_save(self) -> None:
        app = self.capp
        pid = self.patient.id if self.patient is not None else ""
        try:
            change = ops.save_patient(app.session, self.values(), pid, now=app.clock())
        except Exception as exc:
            self.show_error(ops.message(exc))
            return
        self.dismiss(change)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    def action_cancel(self) -> None:
        if not self.changed():
            self.dismiss(None)
            return

        def answered(discard: bool | None) -> None:
            if discard:
                self.dismiss(None)

        self.app.push_screen(ConfirmScreen("Discard the changes to this patient?", "n keeps editing."), answered)
