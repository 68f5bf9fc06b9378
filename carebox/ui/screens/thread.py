"""One conversation: sanitised plain text, the sender badge and its explanation, the URGENT
banner, attachments by name and size (saved only on request, to a path the user picks)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from carebox.domain.sanitize import clean_line
from carebox.services import inbox
from carebox.ui import ops
from carebox.ui.actions import THREAD, bindings
from carebox.ui.render import badge_text, countdown, message_text, safe_line, size_label, tag_label
from carebox.ui.screens.dialogs import PathScreen, PickScreen
from carebox.ui.widgets import KeyBar, StatusBar

if TYPE_CHECKING:
    from carebox.ui.app import CareboxApp


def safe_filename(name: str) -> str:
    """A file name from mail made harmless: no folders, no leading dots, no controls."""
    base = clean_line(name.replace("\\", "/").rsplit("/", 1)[-1], 120).replace("\0", "")
    base = base.lstrip(".").strip()
    return base or "attachment"


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` (mode 0600) and write ``data``; never overwrites an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


class ThreadScreen(Screen[None]):
    SCOPE = THREAD
    BINDINGS: ClassVar[list[BindingType]] = bindings(THREAD)
    AUTO_FOCUS = "#messages"

    def __init__(self, thread_id: str) -> None:
        super().__init__()
        self.thread_id = thread_id
        self.attachments: list[tuple[str, str, int]] = []
        self.row: Any = None

    @property
    def capp(self) -> CareboxApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static(id="thread-head")
        yield Static(id="banner")
        yield Static(id="safety")
        with VerticalScroll(id="messages"):
            yield Static(id="body")
        yield Static(id="attachments")
        yield KeyBar()

    def on_mount(self) -> None:
        self.load()

    def load(self) -> None:
        app = self.capp
        session = app.session
        now = app.clock()
        rows = ops.thread_rows(session, [self.thread_id])
        messages = inbox.thread(session.store, self.thread_id)
        if not rows or not messages:
            self.query_one("#body", Static).update(Text("This conversation is no longer in the store."))
            return
        self.row = row = rows[0]
        palette = app.palette
        head = Text(no_wrap=False)
        head.append_text(safe_line(row.patient_name or row.patient_addr or "(no sender)", 60, style="bold"))
        if row.patient_name and row.patient_addr:
            head.append(" <")
            head.append_text(safe_line(row.patient_addr, 80))
            head.append(">")
        label, kind = ops.badge(row.sender_status)
        if label:
            head.append("  ")
            head.append_text(badge_text(f"[{label}]", kind, palette))
        head.append("\n")
        head.append_text(safe_line(row.subject or "(no subject)", 200, style="bold"))
        head.append("\n")
        head.append_text(countdown(row.due_at, now, row.state.value, palette))
        head.append(f"  ·  {row.message_count} message{'s' if row.message_count != 1 else ''}")
        categories = session.config.triage.categories
        if row.tag:
            head.append("  ·  tag: ")
            head.append_text(tag_label(row.tag, None, categories, palette, 40))
        elif row.suggested_tag:
            head.append("  ·  suggested: ")
            head.append_text(tag_label(None, row.suggested_tag, categories, palette, 40))
        self.query_one("#thread-head", Static).update(head)
        self._show_safety(now)
        body = Text()
        self.attachments = []
        for i, msg in enumerate(messages):
            if i:
                body.append("\n" + "─" * 60 + "\n\n", style=palette.muted)
            body.append_text(message_text(msg, palette=palette))
            for aid, name, size in msg.attachments:
                self.attachments.append((aid, name, size))
        self.query_one("#body", Static).update(body)
        self._show_attachments()
        self.refresh_bindings()
        ops.record(session, "view", self.thread_id, now)

    def _show_safety(self, now: Any) -> None:
        app = self.capp
        banner = self.query_one("#banner", Static)
        info = self.query_one("#safety", Static)
        problem = ""
        try:
            safety = ops.thread_safety(app.session, self.thread_id, now)
        except Exception as exc:
            safety = None
            problem = f"safety checks could not run: {ops.message(exc)}"
        text = ""
        if safety is not None:
            text = safety.banner
        elif self.row is not None and self.row.urgent:
            text = "URGENT: possible emergency. Suggested: phone redirect (p)."
        banner.display = bool(text)
        banner.update(Text(clean_line(text)))
        if safety is None:
            info.update(Text(problem))
            info.display = bool(problem)
            return
        lines = Text()
        for line in safety.sender_lines:
            lines.append("• ")
            lines.append(clean_line(line) + "\n")
        if safety.suggestion:
            lines.append("Suggested: ", style="bold")
            lines.append(clean_line(safety.suggestion))
            if safety.suggested_tag:
                lines.append("  (t accepts)" if not safety.suggested_tag.startswith("redirect:") else "  (p / P)")
        info.update(lines)
        info.display = bool(lines.plain.strip())

    def _show_attachments(self) -> None:
        widget = self.query_one("#attachments", Static)
        if not self.attachments:
            widget.display = False
            return
        out = Text("Attachments (a saves one): ", style="bold")
        for i, (_aid, name, size) in enumerate(self.attachments, 1):
            if i > 1:
                out.append("   ")
            out.append(f"{i}. ")
            out.append(clean_line(name, 60) or "(no name)")
            out.append(f" ({size_label(size)})")
        widget.update(out)
        widget.display = True

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "save_attachment":
            return bool(self.attachments)
        return True

    def forget(self) -> None:
        self.query_one("#body", Static).update(Text(""))
        self.attachments = []
        self.row = None

    # --- actions ----------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_reply(self) -> None:
        self.capp.triage.reply([self.thread_id])

    def action_redirect(self, kind: str) -> None:
        self.capp.triage.redirect(kind, [self.thread_id])

    def action_send_redirect(self, kind: str) -> None:
        self.capp.triage.send_redirect(kind, [self.thread_id])

    def action_out_of_scope(self) -> None:
        self.capp.triage.out_of_scope([self.thread_id])

    def action_accept_suggestion(self) -> None:
        self.capp.triage.accept_suggestion([self.thread_id])

    def action_save_attachment(self) -> None:
        if not self.attachments:
            self.notify("This conversation has no attachments", markup=False)
            return
        if len(self.attachments) == 1:
            self._ask_path(self.attachments[0][0])
            return
        items = [
            (aid, Text(f"{clean_line(name, 60) or '(no name)'}  ({size_label(size)})"))
            for aid, name, size in self.attachments
        ]
        self.app.push_screen(
            PickScreen("Save which attachment?", items), lambda aid: self._ask_path(aid) if aid else None
        )

    def _ask_path(self, attachment_id: str) -> None:
        name = next((n for a, n, _ in self.attachments if a == attachment_id), "attachment")
        folder = Path.home() / "Downloads"
        default = (folder if folder.is_dir() else Path.home()) / safe_filename(name)
        self.app.push_screen(
            PathScreen("Save the attachment to", str(default), "The file is created readable by you only (0600)."),
            lambda path: self._save(attachment_id, path) if path else None,
        )

    def _save(self, attachment_id: str, path_text: str) -> None:
        path = Path(path_text).expanduser()
        try:
            name, data = ops.attachment(self.capp.session, attachment_id)
            if path.is_dir():
                path = path / safe_filename(name)
            write_private(path, data)
        except FileExistsError:
            self.notify(f"{path} already exists: choose another name", severity="warning", markup=False)
            return
        except OSError as exc:
            self.notify(
                f"cannot save to {path}: {exc.strerror or exc.__class__.__name__}", severity="error", markup=False
            )
            return
        self.notify(f"Saved to {path} (readable by you only)", markup=False)

    def action_export(self) -> None:
        default = Path.home() / "carebox-exports"
        self.app.push_screen(
            PathScreen(
                "Export the conversation (PDF, text, FHIR JSON) into the folder",
                str(default),
                "Files are created readable by you only.",
            ),
            lambda folder: self._export(folder) if folder else None,
        )

    def _export(self, folder: str) -> None:
        try:
            paths = ops.export_thread(self.capp.session, self.thread_id, folder, now=self.capp.clock())
        except Exception as exc:
            self.notify(ops.message(exc), severity="error", markup=False)
            return
        self.notify(f"Exported {len(paths)} files to {Path(folder).expanduser()}", markup=False)
