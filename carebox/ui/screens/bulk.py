"""Bulk actions: the preview (one rendered reply per recipient), then a progress bar while the
replies are queued, then a summary (failures stay selected to retry)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from carebox.domain.sanitize import clean_line
from carebox.ui import ops
from carebox.ui.actions import PREVIEW, bindings
from carebox.ui.render import safe_block, safe_line
from carebox.ui.widgets import KeyBar, StatusBar

if TYPE_CHECKING:
    from carebox.ui.app import CareboxApp
    from carebox.ui.screens.compose import ComposeSpec

CHUNK = 10
UNVERIFIED = ("unknown", "warning")


@dataclass
class BulkOutcome:
    done: dict[str, str | None] = field(default_factory=dict)  # thread id -> outbox id (None: tag only)
    failed: dict[str, str] = field(default_factory=dict)  # thread id -> one-line reason


class BulkPreviewScreen(Screen[bool]):
    """Every recipient with the reply rendered for them. ``y`` confirms, escape goes back."""

    SCOPE = PREVIEW
    BINDINGS: ClassVar[list[BindingType]] = bindings(PREVIEW)
    AUTO_FOCUS = "#recipients"

    def __init__(self, spec: ComposeSpec, template: str) -> None:
        super().__init__()
        self.spec = spec
        self.template = template
        self.previews: dict[str, Any] = {}
        self.failed: dict[str, str] = {}
        self.ready = False

    @property
    def capp(self) -> CareboxApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static(
            Text(f"Preview: {self.spec.title.lower()} to {len(self.spec.thread_ids)} conversations…"), id="preview-head"
        )
        with Horizontal(id="preview-main"):
            yield OptionList(id="recipients")
            with VerticalScroll(id="preview-pane"):
                yield Static(id="preview-body")
        yield Static(id="preview-failed")
        yield KeyBar()

    def on_mount(self) -> None:
        self.run_worker(self._build, thread=True, exclusive=True, group="preview")

    def _build(self) -> None:
        app = self.capp
        try:
            result = ops.preview_bulk(
                app.session, self.spec.thread_ids, self.template, kind=self.spec.kind, now=app.clock()
            )
            statuses = {r.id: r.sender_status for r in ops.thread_rows(app.session, self.spec.thread_ids)}
        except Exception as exc:
            app.call_from_thread(self._failed_all, ops.message(exc))
            return
        app.call_from_thread(self._show, result, statuses)

    def _failed_all(self, line: str) -> None:
        self.notify(line, severity="error", markup=False)
        self.dismiss(False)

    def _show(self, result: Any, statuses: dict[str, str]) -> None:
        self.previews = dict(result.previews)
        unverified = [t for t in self.previews if statuses.get(t) in UNVERIFIED]
        self.failed = dict(result.failed)
        self.ready = True
        lst = self.query_one("#recipients", OptionList)
        for tid, p in self.previews.items():
            label = safe_line(p.recipient_name or p.recipient_addr, 40)
            if p.recipient_name:
                label.append(" <")
                label.append_text(safe_line(p.recipient_addr, 60))
                label.append(">")
            if tid in unverified:
                label.append("  not verified", style="italic")
            lst.add_option(Option(label, id=tid))
        head = Text()
        head.append(f"{self.spec.title}: {len(self.previews)} replies ready", style="bold")
        if self.spec.tag:
            label = self.capp.session.config.triage.categories.get(self.spec.tag, self.spec.tag)
            head.append(f" · each conversation is tagged {label}")
        head.append(". Check them, then y queues all; escape goes back to the text.")
        if unverified:
            head.append(
                f"\n{len(unverified)} of these addresses are not verified (no patient in the directory has them, "
                "or the sender needs checking): y sends to them too.",
                style="bold",
            )
        self.query_one("#preview-head", Static).update(head)
        failed = self.query_one("#preview-failed", Static)
        if self.failed:
            out = Text(f"{len(self.failed)} cannot be sent and will be skipped: ", style="bold")
            out.append("; ".join(clean_line(r, 120) for r in list(self.failed.values())[:3]))
            failed.update(out)
        failed.display = bool(self.failed)
        if self.previews:
            lst.highlighted = 0
            self._preview(next(iter(self.previews)))

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id:
            self._preview(event.option.id)

    def _preview(self, thread_id: str) -> None:
        p = self.previews.get(thread_id)
        if p is None:
            return
        out = Text()
        out.append("To: ", style="bold")
        out.append_text(safe_line(p.recipient, 120))
        out.append("\nSubject: ", style="bold")
        out.append_text(safe_line(p.subject, 200))
        out.append("\n\n")
        out.append_text(safe_block(p.body))
        self.query_one("#preview-body", Static).update(out)

    def action_confirm(self) -> None:
        if not self.ready:
            return
        if not self.previews:
            self.notify("Nothing can be sent to these conversations", severity="warning", markup=False)
            return
        self.dismiss(True)

    def action_back(self) -> None:
        self.dismiss(False)


class ProgressScreen(ModalScreen[BulkOutcome]):
    """Runs ``step`` over the thread ids a few at a time in a worker thread, with a progress bar."""

    def __init__(self, title: str, thread_ids: Sequence[str], step: Callable[[list[str]], BulkOutcome]) -> None:
        super().__init__()
        self.title_text = title
        self.thread_ids = list(thread_ids)
        self.step = step
        self.outcome = BulkOutcome()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self.title_text), classes="dialog-title")
            yield ProgressBar(total=len(self.thread_ids), show_eta=False, id="progress")
            yield Static(Text(f"0 of {len(self.thread_ids)}"), id="progress-count")

    def on_mount(self) -> None:
        self.app.busy = True  # type: ignore[attr-defined]  # no auto-lock in the middle of a batch
        self.run_worker(self._run, thread=True, exclusive=True, group="bulk")

    def on_unmount(self) -> None:
        self.app.busy = False  # type: ignore[attr-defined]

    def _run(self) -> None:
        app = self.app
        done = 0
        for i in range(0, len(self.thread_ids), CHUNK):
            chunk = self.thread_ids[i : i + CHUNK]
            try:
                part = self.step(chunk)
            except Exception as exc:
                part = BulkOutcome(failed=dict.fromkeys(chunk, ops.message(exc)))
            self.outcome.done.update(part.done)
            self.outcome.failed.update(part.failed)
            done += len(chunk)
            app.call_from_thread(self._advance, done)
        app.call_from_thread(self.dismiss, self.outcome)

    def _advance(self, done: int) -> None:
        self.query_one("#progress", ProgressBar).update(progress=done)
        self.query_one("#progress-count", Static).update(Text(f"{done} of {len(self.thread_ids)}"))
