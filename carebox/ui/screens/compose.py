"""The reply composer: in-app editing (TextArea) or ``$EDITOR``; send, save a draft, or cancel
(asking first when text was written). With several conversations it edits one template whose
placeholders are filled per patient, and sending goes through the bulk preview."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.screen import Screen
from textual.widgets import Static, TextArea

from carebox.ui import drafts
from carebox.ui.actions import COMPOSE, bindings
from carebox.ui.editor import EditorProblem, edit_text
from carebox.ui.screens.dialogs import ConfirmScreen
from carebox.ui.widgets import KeyBar, StatusBar

if TYPE_CHECKING:
    from carebox.ui.app import CareboxApp

KIND_TITLES = {
    "reply": "Reply",
    "redirect_phone": "Redirect to a phone call",
    "redirect_visit": "Redirect to a visit",
    "out_of_scope": "Out of scope reply",
}
PLACEHOLDERS = "{patient_first_name} {patient_name} {physician_name} {practice_name} {practice_phone} {booking}"


@dataclass
class ComposeSpec:
    thread_ids: list[str]
    kind: str = "reply"
    initial: str = ""
    to: Text | None = None  # single reply: the recipient line (sanitised)
    subject: Text | None = None
    tag: str | None = None  # out-of-scope category
    note: str = ""  # e.g. "draft restored"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def bulk(self) -> bool:
        return len(self.thread_ids) > 1

    @property
    def title(self) -> str:
        return KIND_TITLES.get(self.kind, "Reply")


class ComposeScreen(Screen[None]):
    SCOPE = COMPOSE
    BINDINGS: ClassVar[list[BindingType]] = bindings(COMPOSE)
    AUTO_FOCUS = "#editor"

    def __init__(self, spec: ComposeSpec) -> None:
        super().__init__()
        self.spec = spec

    @property
    def capp(self) -> CareboxApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static(self._header(), id="compose-head")
        area = TextArea(self.spec.initial, id="editor", soft_wrap=True, show_line_numbers=False, tab_behavior="focus")
        yield area
        yield KeyBar()

    def on_mount(self) -> None:
        area = self.query_one("#editor", TextArea)
        area.move_cursor((0, 0))

    def _header(self) -> Text:
        spec = self.spec
        out = Text()
        out.append(spec.title, style="bold")
        if spec.tag:
            label = self.capp.session.config.triage.categories.get(spec.tag, spec.tag)
            out.append(f"  ·  tag: {label}")
        out.append("\n")
        if spec.bulk:
            out.append(f"To: {len(spec.thread_ids)} conversations, one reply each.\n")
            out.append(f"Placeholders filled per patient: {PLACEHOLDERS}\n", style="italic")
            out.append("ctrl+s shows a preview of every reply before anything is queued.")
        else:
            out.append("To: ")
            out.append_text(spec.to or Text("the patient"))
            if spec.subject is not None:
                out.append("\nSubject: Re: ")
                out.append_text(spec.subject)
        if spec.note:
            out.append("\n")
            out.append(spec.note, style="italic")
        return out

    @property
    def text(self) -> str:
        return self.query_one("#editor", TextArea).text

    def written(self) -> bool:
        text = self.text
        return bool(text.strip()) and text != self.spec.initial

    # --- actions --------------------------------------------------------------------------------

    def action_send(self) -> None:
        text = self.text
        if not text.strip():
            self.notify("Nothing to send: write the reply first", severity="warning", markup=False)
            return
        triage = self.capp.triage
        if self.spec.bulk:
            triage.bulk_preview(self.spec, text, composer=self)
        else:
            triage.send_single(self.spec, text, composer=self)

    def action_save_draft(self) -> None:
        if self.spec.bulk:
            self.notify("A bulk reply has no draft; send it or cancel", severity="warning", markup=False)
            return
        self.save_draft_quietly()
        self.notify("Draft saved (encrypted in the store)", markup=False)
        self.dismiss(None)

    def save_draft_quietly(self) -> bool:
        """Keep what was written (used before an auto-lock too). Returns whether it saved."""
        if self.spec.bulk or not self.written():
            return False
        drafts.save(self.capp.session, self.spec.thread_ids[0], self.text)
        return True

    def action_external_editor(self) -> None:
        area = self.query_one("#editor", TextArea)
        try:
            result = edit_text(area.text, self.capp.run_editor)
        except EditorProblem as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return
        if result is None:
            self.notify("The editor ended with an error; the text is unchanged", severity="warning", markup=False)
            return
        area.text = result.rstrip("\n") + "\n" if result.strip() else ""
        area.focus()

    def action_cancel(self) -> None:
        if not self.written():
            self.dismiss(None)
            return

        def answered(discard: bool | None) -> None:
            if discard:
                self.dismiss(None)

        self.app.push_screen(
            ConfirmScreen("Discard what you wrote?", "n keeps editing; f2 saves it as a draft instead."), answered
        )
