"""The Textual app: a ranked thread list and a reading pane. It calls services only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Footer, Static

from carebox.services import inbox
from carebox.services.session import Session
from carebox.ui.render import countdown, message_text, safe_line

PAGE = 200


class StatusBar(Static):
    pass


class CareboxApp(App[None]):
    TITLE = "carebox"
    CSS = """
    #main { height: 1fr; }
    #threads { width: 3fr; }
    #reader { width: 2fr; border-left: solid $primary; padding: 0 1; }
    StatusBar { height: 1; background: $panel; color: $text; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", id="quit"),
        Binding("q", "quit", "Quit", show=False, id="quit_q"),
        Binding("enter", "open_thread", "Open", id="open_thread"),
    ]

    def __init__(self, session: Session, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__()
        self.session = session
        self.clock = clock or (lambda: datetime.now(UTC))
        self.view = "due"
        self.row_ids: list[str] = []

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Horizontal(id="main"):
            yield DataTable(id="threads", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="reader"):
                yield Static(Text("Select a conversation and press Enter."), id="message")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#threads", DataTable)
        table.add_column("Due", key="due", width=14)
        table.add_column("Patient", key="patient", width=24)
        table.add_column("Subject", key="subject")
        table.add_column("#", key="count", width=3)
        self.refresh_queue()
        table.focus()

    def refresh_queue(self) -> None:
        now = self.clock()
        page = inbox.page(self.session.store, now, self.view, 0, PAGE)
        table = self.query_one("#threads", DataTable)
        table.clear()
        self.row_ids = []
        for row in page.rows:
            badge = "URGENT " if row.urgent else ""
            table.add_row(
                Text(badge, style="bold red") + countdown(row.due_at, now, row.state.value),
                safe_line(row.patient_name or row.patient_addr, 40),
                safe_line(row.subject, 120),
                Text(str(row.message_count)),
                key=row.id,
            )
            self.row_ids.append(row.id)
        self.update_status(page.total, now)

    def update_status(self, total: int, now: datetime) -> None:
        parts = []
        if self.session.demo:
            parts.append("DEMO")
        parts.append(f"{total} waiting" if self.view == "due" else f"{total} threads")
        info = inbox.status(self.session.store, now)
        if info["overdue"]:
            parts.append(f"{info['overdue']} overdue")
        parts.append(f"outbox {info['outbox_waiting']}")
        self.query_one("#status", StatusBar).update(Text("  |  ".join(parts)))

    def current_thread(self) -> str | None:
        table = self.query_one("#threads", DataTable)
        if not self.row_ids or table.cursor_row < 0 or table.cursor_row >= len(self.row_ids):
            return None
        return self.row_ids[table.cursor_row]

    def action_open_thread(self) -> None:
        tid = self.current_thread()
        if tid is None:
            return
        messages = inbox.thread(self.session.store, tid)
        out = Text()
        for i, msg in enumerate(messages):
            if i:
                out.append("\n" + "\u2500" * 40 + "\n", style="dim")
            out.append_text(message_text(msg))
        self.query_one("#message", Static).update(out)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_thread()
