"""The inbox: the ranked queue of one view, a page at a time, with selection and the filter.

Only the rows shown are decrypted (``services.inbox.page``); more are paged in as the cursor
nears the end. The filter decrypts the view's rows into memory once (name, address, subject,
tag) and matches there; nothing of it is written anywhere, and it is dropped on lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static
from textual.worker import get_current_worker

from carebox.domain.sanitize import clean_line
from carebox.services import inbox
from carebox.services.inbox import ThreadRow
from carebox.ui import ops
from carebox.ui.actions import INBOX, bindings
from carebox.ui.render import safe_line
from carebox.ui.widgets import VIEW_TITLES, KeyBar, OutboxTable, StatusBar, ThreadTable, ViewBar

if TYPE_CHECKING:
    from carebox.ui.app import CareboxApp

PAGE = 200
PAGE_AHEAD = 60  # page in more when the cursor is this close to the last loaded row
APPEND_CHUNK = 25  # rows added to the table per event-loop turn while paging in
TRIAGE_ACTIONS = {
    "reply",
    "redirect",
    "send_redirect",
    "out_of_scope",
    "accept_suggestion",
    "open_thread",
    "select",
    "select_all",
}
OUTBOX_ACTIONS = {"outbox_retry", "outbox_discard"}


class InboxScreen(Screen[None]):
    SCOPE = INBOX
    BINDINGS: ClassVar[list[BindingType]] = bindings(INBOX)
    AUTO_FOCUS = "#threads"

    def __init__(self, view: str = "due", selected: Iterable[str] = (), page_size: int = PAGE) -> None:
        super().__init__()
        self.view = view
        self.page_size = page_size
        self.selected: dict[str, None] = dict.fromkeys(selected)
        self.rows: list[ThreadRow] = []
        self.by_id: dict[str, ThreadRow] = {}
        self.total = 0
        self.filter_text = ""
        self._haystack: list[tuple[ThreadRow, str]] | None = None  # the filter's in-memory rows
        self._matches: list[ThreadRow] | None = None
        self._outbox: list[Any] = []
        self._generation = 0
        self._paging = False
        # the view's thread ids in inbox order (no patient data); None for the Due view, which
        # pages from SQL in the same order
        self._ranked: list[str] | None = []

    @property
    def capp(self) -> CareboxApp:
        return self.app  # type: ignore[return-value]

    # --- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield ViewBar(id="views")
        yield ThreadTable(id="threads")
        yield OutboxTable(id="outbox")
        yield Static(id="empty")
        yield Input(placeholder="filter: name, address, subject or tag (enter keeps it, escape clears)", id="filter")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.reload(keep_cursor=False)

    @property
    def table(self) -> ThreadTable:
        return self.query_one("#threads", ThreadTable)

    # --- loading ------------------------------------------------------------------------------

    def reload(self, keep_cursor: bool = True) -> None:
        """Fetch the view again (after an action, a view change, a sync, the minute tick)."""
        if self.capp.locked:
            return
        if self.capp.preparing:  # the store is not ready yet: an empty list saying so
            self._show_state()
            return
        if self.view == "outbox":
            self._load_outbox()
            return
        table = self.table
        current = self.current_id() if keep_cursor else None
        index = table.cursor_row if keep_cursor else 0
        now = self.capp.clock()
        if self.filter_text:
            if self._haystack is None:
                self._start_filter_cache()
                return
            self._matches = self._match(self.filter_text)
            self.total = len(self._matches)
            rows = self._matches[: max(self.page_size, len(self.rows) if keep_cursor else 0)]
        else:
            # The Due view pages straight from SQL (ordered and limited there: the first page of
            # a 100,000-message store costs milliseconds); the other views keep their ranking
            # (clear columns), so paging in decrypts just the next rows.
            limit = max(self.page_size, len(self.rows)) if keep_cursor else self.page_size
            session = self.capp.session
            first = session.first_page
            if first is not None and not session.is_open and self.view == "due":
                # painted before the store opens (it opens right after this frame): the first
                # page was read through the driver already (services.session.peek_session)
                self._ranked = None
                self.total = first.total
                self._fill(list(first.rows[:limit]), current, index)
                self._place_cursor(current, index)
                self._show_state()
                return
            store = session.store
            if self.view == "due":
                self._ranked = None
                ids, self.total = inbox.due_ids(store, 0, limit)
            else:
                self._ranked = inbox.ranked_ids(store, now, self.view)
                self.total = len(self._ranked)
                ids = self._ranked[:limit]
            rows = ops.thread_rows(self.capp.session, ids)
        self._fill(rows, current, index)
        self._place_cursor(current, index)
        self._show_state()

    def _fill(self, rows: list[ThreadRow], keep: str | None = None, index: int = 0) -> None:
        """Show ``rows``: a screenful at once, the rest added in chunks right after (so the first
        frame does not wait for rows nobody sees yet)."""
        table = self.table
        self._generation += 1  # rows being paged in for the old list are dropped
        self._paging = False
        table.clear()
        self.rows = []
        self.by_id = {}
        first = max(self.size.height, self.app.size.height, 40, index + 1)
        if keep is not None:  # the row the cursor stays on is in the first part
            first = max(first, next((i + 1 for i, r in enumerate(rows) if r.id == keep), 0))
        self._append(rows[:first])
        if rows[first:]:
            self._paging = True
            self.call_later(self._append_chunks, self._generation, rows[first:])

    def _append(self, rows: list[ThreadRow]) -> None:
        table = self.table
        app = self.capp
        now = app.clock()
        palette = app.palette
        categories = app.session.config.triage.categories
        width = table.subject_width()
        for row in rows:
            if row.id in self.by_id:
                continue
            cells = table.row_cells(
                row, now, palette, row.id in self.selected, categories, ops.badge(row.sender_status), width
            )
            table.add_row(*cells, key=row.id)
            self.rows.append(row)
            self.by_id[row.id] = row

    def _place_cursor(self, thread_id: str | None, index: int) -> None:
        table = self.table
        if not self.rows:
            return
        if thread_id is not None and thread_id in self.by_id:
            target = next(i for i, r in enumerate(self.rows) if r.id == thread_id)
        else:
            target = min(max(index, 0), len(self.rows) - 1)
        table.move_cursor(row=target, animate=False)

    def load_more(self) -> None:
        """Page in the next rows: fetched in a worker thread, added a few at a time so that keys
        typed meanwhile are answered between the additions."""
        if self.capp.locked or self.view == "outbox" or len(self.rows) >= self.total or self._paging:
            return
        self._paging = True
        if self.filter_text and self._matches is not None:
            more = self._matches[len(self.rows) : len(self.rows) + self.page_size]
            self._append_chunks(self._generation, more)
            return
        start, ranked = len(self.rows), self._ranked
        ids = None if ranked is None else ranked[start : start + self.page_size]
        self.run_worker(partial(self._fetch_more, self._generation, ids, start), thread=True, group="pagein")

    def _fetch_more(self, generation: int, ids: list[str] | None, start: int) -> None:
        app = self.capp
        try:
            if ids is None:  # the Due view: the next page in SQL order
                ids = inbox.due_ids(app.session.store, start, self.page_size)[0]
            rows = ops.thread_rows(app.session, ids)
        except Exception:  # locked meanwhile, or the store is busy: the next scroll tries again
            rows = []
        app.call_from_thread(self._append_chunks, generation, rows)

    def _append_chunks(self, generation: int, rows: list[ThreadRow]) -> None:
        if generation != self._generation or self.capp.locked:
            return
        self._append(rows[:APPEND_CHUNK])
        if rows[APPEND_CHUNK:]:
            self.call_later(self._append_chunks, generation, rows[APPEND_CHUNK:])
            return
        self._paging = False
        self._show_state()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        ahead = min(PAGE_AHEAD, self.page_size // 3)
        if event.data_table is self.table and event.cursor_row >= len(self.rows) - ahead:
            self.load_more()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table is self.table:
            event.stop()
            self.action_open_thread()

    def rerender(self) -> None:
        """Redraw the loaded rows (theme change, the minute tick for countdowns)."""
        if self.capp.locked or self.view == "outbox":
            return
        current, index = self.current_id(), self.table.cursor_row
        rows = list(self.rows)
        self._fill(rows, current, index)
        self._place_cursor(current, index)

    def _show_state(self) -> None:
        is_outbox = self.view == "outbox"
        self.table.display = not is_outbox
        self.query_one("#outbox", OutboxTable).display = is_outbox
        self.query_one("#views", ViewBar).show(self.view, self.total, len(self.selected), self.filter_text or None)
        empty = self.query_one("#empty", Static)
        count = len(self._outbox) if is_outbox else len(self.rows)
        if count:
            empty.display = False
            return
        empty.display = True
        if self.capp.preparing:
            empty.update(Text(self.capp.preparing_line))
        elif self.filter_text:
            empty.update(Text("Nothing matches the filter. escape clears it."))
        elif is_outbox:
            empty.update(Text("The outbox is empty: every reply has been sent."))
        elif self.view == "due":
            empty.update(Text("Nothing is waiting for a reply."))
        else:
            empty.update(Text(f"No conversations in {VIEW_TITLES[self.view]}."))

    def forget(self) -> None:
        """Drop every decrypted value held by this screen (lock)."""
        self._haystack = None
        self._matches = None
        self._outbox = []
        self.rows = []
        self.by_id = {}
        for table in self.query(DataTable):
            table.clear()

    # --- outbox view --------------------------------------------------------------------------

    def _load_outbox(self) -> None:
        table = self.query_one("#outbox", OutboxTable)
        index = table.cursor_row
        now = self.capp.clock()
        self._outbox = ops.outbox_entries(self.capp.session)
        self.total = len(self._outbox)
        table.clear()
        palette = self.capp.palette
        for e in self._outbox:
            style = {"uncertain": f"bold {palette.alarm}", "failed": f"bold {palette.alarm}"}.get(e.state, "")
            age = e.age(now)
            hours, rest = divmod(int(age.total_seconds()) // 60, 60)
            note = e.error or ("next try " + e.next_attempt.strftime("%H:%M") if e.next_attempt else "")
            table.add_row(
                Text(e.state, style=style),
                Text(e.kind.replace("_", " ")),
                safe_line(e.recipient_name or e.recipient_addr, 28),
                safe_line(e.subject, 60),
                Text(f"{hours}h {rest}m ago" if hours else f"{rest}m ago"),
                safe_line(note, 80),
                key=e.id,
            )
        if self._outbox:
            table.move_cursor(row=min(max(index, 0), len(self._outbox) - 1), animate=False)
        self._show_state()

    def current_entry(self) -> Any | None:
        table = self.query_one("#outbox", OutboxTable)
        if not self._outbox or not (0 <= table.cursor_row < len(self._outbox)):
            return None
        return self._outbox[table.cursor_row]

    def action_outbox_retry(self) -> None:
        entry = self.current_entry()
        if entry is not None:
            self.capp.triage.outbox_retry(entry.id)

    def action_outbox_discard(self) -> None:
        entry = self.current_entry()
        if entry is not None:
            self.capp.triage.outbox_discard(entry.id, entry.state)

    # --- cursor, selection, targets -----------------------------------------------------------

    def current_id(self) -> str | None:
        table = self.table
        if not self.rows or not (0 <= table.cursor_row < len(self.rows)):
            return None
        return self.rows[table.cursor_row].id

    def targets(self) -> list[str]:
        """What an action applies to: the selection (in inbox order), else the cursor's row."""
        if self.selected:
            loaded = [r.id for r in self.rows if r.id in self.selected]
            rest = [t for t in self.selected if t not in self.by_id]
            return loaded + rest
        current = self.current_id()
        return [current] if current else []

    def set_selection(self, ids: Iterable[str]) -> None:
        before = set(self.selected)
        self.selected = dict.fromkeys(ids)
        for tid in before ^ set(self.selected):
            self._paint_selected(tid)
        self._show_state()

    def _paint_selected(self, thread_id: str) -> None:
        if thread_id not in self.by_id:
            return
        palette = self.capp.palette
        mark = Text("●", style=f"bold {palette.selected}") if thread_id in self.selected else Text(" ")
        self.table.update_cell(thread_id, "sel", mark)

    def action_select(self) -> None:
        tid = self.current_id()
        if tid is None:
            return
        if tid in self.selected:
            del self.selected[tid]
        else:
            self.selected[tid] = None
        self._paint_selected(tid)
        self._show_state()
        self.table.action_cursor_down()

    def action_select_all(self) -> None:
        filtered = self.filter_text and self._matches is not None
        if filtered:
            ids = [r.id for r in self._matches or []]
        elif self._ranked is None:  # the Due view pages from SQL: rank it whole for this once
            ids = inbox.ranked_ids(self.capp.session.store, self.capp.clock(), self.view)
        else:
            ids = list(self._ranked)
        if ids and all(t in self.selected for t in ids):
            self.set_selection([t for t in self.selected if t not in set(ids)])
            self.notify(f"{len(ids)} unselected", markup=False)
        else:
            self.set_selection([*self.selected, *ids])
            self.notify(f"{len(self.selected)} selected: the next action applies to all of them", markup=False)

    def action_cursor_down(self) -> None:
        self.table.action_cursor_down()

    def action_cursor_up(self) -> None:
        self.table.action_cursor_up()

    def action_clear(self) -> None:
        field = self.query_one("#filter", Input)
        if self.filter_text or field.display:
            self.filter_text = ""
            field.value = ""
            field.display = False
            self._haystack = None
            self._matches = None
            self.table.focus()
            self.reload(keep_cursor=True)
        elif self.selected:
            self.set_selection([])

    # --- views --------------------------------------------------------------------------------

    def action_view(self, view: str) -> None:
        if view not in VIEW_TITLES or view == self.view:
            return
        self.view = view
        self._haystack = None
        self._matches = None
        self.rows = []
        self.selected = {}
        self.reload(keep_cursor=False)
        if view == "outbox":
            self.query_one("#outbox", OutboxTable).focus()
        else:
            self.table.focus()

    # --- filter -------------------------------------------------------------------------------

    def action_filter(self) -> None:
        if self.view == "outbox":
            return
        field = self.query_one("#filter", Input)
        field.display = True
        field.focus()
        if self._haystack is None:
            self._start_filter_cache()

    def _start_filter_cache(self) -> None:
        self.run_worker(self._build_cache, thread=True, exclusive=True, group="filter")

    def _build_cache(self) -> None:
        app = self.capp
        view = self.view
        page = inbox.page(app.session.store, app.clock(), view, 0, 10**9)
        categories = app.session.config.triage.categories
        hay = []
        for row in page.rows:
            tag = categories.get(row.tag or "", row.tag or "")
            text = " ".join((row.patient_name, row.patient_addr, row.subject, tag, row.suggested_tag or ""))
            hay.append((row, clean_line(text).casefold()))
        if get_current_worker().is_cancelled:
            return
        app.call_from_thread(self._cache_ready, view, hay)

    def _cache_ready(self, view: str, hay: list[tuple[ThreadRow, str]]) -> None:
        if view != self.view or self.capp.locked:
            return
        self._haystack = hay
        if self.filter_text:
            self.reload(keep_cursor=False)

    def _match(self, needle: str) -> list[ThreadRow]:
        words = needle.casefold().split()
        assert self._haystack is not None
        return [row for row, text in self._haystack if all(w in text for w in words)]

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "filter":
            return
        self.filter_text = event.value.strip()
        if self._haystack is not None or not self.filter_text:
            self.reload(keep_cursor=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "filter":
            return
        event.stop()
        if not self.filter_text:
            event.input.display = False
        self.table.focus()

    # --- actions on threads -------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.capp.preparing:  # nothing to act on yet
            return False
        if action in OUTBOX_ACTIONS:
            return self.view == "outbox"
        if action in TRIAGE_ACTIONS or action == "filter":
            return self.view != "outbox"
        return True

    def action_open_thread(self) -> None:
        tid = self.current_id()
        if tid is not None:
            self.capp.open_thread(tid)

    def _go(self, method: str, *args: Any) -> None:
        ids = self.targets()
        if not ids:
            self.notify("No conversation here to act on", markup=False)
            return
        getattr(self.capp.triage, method)(*args, ids)

    def action_reply(self) -> None:
        self._go("reply")

    def action_redirect(self, kind: str) -> None:
        self._go("redirect", kind)

    def action_send_redirect(self, kind: str) -> None:
        self._go("send_redirect", kind)

    def action_out_of_scope(self) -> None:
        self._go("out_of_scope")

    def action_accept_suggestion(self) -> None:
        self._go("accept_suggestion")
