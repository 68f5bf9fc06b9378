"""Small widgets shared by the screens: the status bar, the view bar and the two lists."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from itertools import chain
from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual._segment_tools import line_crop as _line_crop
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.strip import Strip
from textual.widgets import DataTable, Static
from textual.widgets._data_table import RowKey

from carebox.services.inbox import ThreadRow
from carebox.ui.render import Palette, badge_text, countdown, patient_label, safe_line, tag_label

VIEW_TITLES = {
    "due": "Due",
    "all": "All",
    "out_of_scope": "Out of scope",
    "answered": "Answered",
    "outbox": "Outbox",
}


class StatusBar(Static):
    """One line: DEMO, sync state, the queue and its next deadline, the outbox. Never patient data."""

    def on_mount(self) -> None:
        line = getattr(self.app, "status_text", None)
        if line is not None:
            self.update(line)


class ViewBar(Static):
    """The views, the current one highlighted, with its count and the filter when one is set."""

    def show(self, view: str, total: int | None, selected: int, filter_text: str | None) -> None:
        out = Text(no_wrap=True, overflow="ellipsis")
        for i, (key, title) in enumerate(VIEW_TITLES.items(), 1):
            label = f" {i} {title} "
            if key == view:
                if total is not None:
                    label = f" {i} {title} ({total}) "
                out.append(label, style="reverse bold")
            else:
                out.append(label)
            out.append(" ")
        if selected:
            out.append(f"  {selected} selected", style="bold")
        if filter_text:
            out.append("  filter: ")
            out.append(safe_line(filter_text, 40))
        self.update(out)


THREAD_COLUMNS = (
    ("sel", " ", 1),
    ("flag", "", 6),
    ("due", "Due", 15),
    ("patient", "Patient", 20),
    ("badge", "Sender", 12),
    ("subject", "Subject", None),
    ("count", "#", 3),
    ("tag", "Tag", 14),
)
FIXED_WIDTH = sum(w for _, _, w in THREAD_COLUMNS if w) + 2 * len(THREAD_COLUMNS) + 2  # cell padding, scrollbar
_ELSEWHERE = Coordinate(-2, 0)  # a row that never exists


class RowCursorTable(DataTable[Any]):
    """A DataTable with a row cursor whose line caches survive a cursor move.

    Textual's DataTable keys its line caches on the cursor's and the hover's coordinates, so each
    cursor move renders every visible line again (about 1 ms a line: most of a key press on a
    full screen). With a row cursor a line only depends on whether the cursor (or the hover) is on
    its own row, so that is what the key holds here: a move renders the two rows it changes.
    The rendering itself is Textual's (``_render_line`` below follows textual 8.2's, with the
    coordinates reduced to that question); other cursor types use Textual's unchanged."""

    def _on_row(self, row_key: RowKey, where: Coordinate) -> Coordinate:
        row_index = self._row_locations.get(row_key)
        return where if row_index is not None and where.row == row_index else _ELSEWHERE

    def _render_line(self, y: int, x1: int, x2: int, base_style: Style) -> Strip:
        if self.cursor_type != "row":
            return super()._render_line(y, x1, x2, base_style)
        width = self.size.width
        try:
            row_key, y_offset_in_row = self._get_offsets(y)
        except LookupError:
            return Strip.blank(width, base_style)
        cursor = self._on_row(row_key, self.cursor_coordinate)
        hover = self._on_row(row_key, self.hover_coordinate)
        cache_key = (
            y,
            x1,
            x2,
            width,
            cursor,
            hover,
            base_style,
            self.cursor_type,
            self._show_hover_cursor,
            self._update_count,
            self._pseudo_class_state,
        )
        if cache_key in self._line_cache:
            return self._line_cache[cache_key]
        fixed, scrollable = self._render_line_in_row(
            row_key, y_offset_in_row, base_style, cursor_location=cursor, hover_location=hover
        )
        fixed_width = sum(column.get_render_width(self) for column in self.ordered_columns[: self.fixed_columns])
        fixed_line: list[Segment] = list(chain.from_iterable(fixed)) if fixed else []
        scrollable_line: list[Segment] = list(chain.from_iterable(scrollable))
        segments = fixed_line + _line_crop(scrollable_line, x1 + fixed_width, x2, width)
        strip = Strip(segments).adjust_cell_length(width, base_style).simplify()
        self._line_cache[cache_key] = strip
        return strip


class ThreadTable(RowCursorTable):
    """The ranked conversations. Holds only the rows loaded so far (a page at a time)."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = False
        for key, label, width in THREAD_COLUMNS:
            # every column has a width: the table never measures its cells (faster pages)
            self.add_column(label, key=key, width=width or self.subject_width())

    def subject_width(self) -> int:
        return max(16, (self.app.size.width or 120) - FIXED_WIDTH)

    def row_cells(
        self,
        row: ThreadRow,
        now: datetime,
        palette: Palette,
        selected: bool,
        categories: Mapping[str, str],
        badge: tuple[str, str],
        subject_width: int = 80,
    ) -> list[Text]:
        sel = Text("●", style=f"bold {palette.selected}") if selected else Text(" ")
        flag = Text("URGENT", style=f"bold {palette.alarm}") if row.urgent else Text("")
        return [
            sel,
            flag,
            countdown(row.due_at, now, row.state.value, palette),
            patient_label(row.patient_name, row.patient_addr, 20),
            badge_text(badge[0], badge[1], palette),
            safe_line(row.subject or "(no subject)", subject_width),
            Text(str(row.message_count), justify="right"),
            tag_label(row.tag, row.suggested_tag, categories, palette),
        ]


OUTBOX_COLUMNS = (
    ("state", "State", 10),
    ("kind", "Kind", 15),
    ("patient", "Recipient", 28),
    ("subject", "Subject", None),
    ("age", "Queued", 12),
    ("note", "Note", None),
)


class OutboxTable(RowCursorTable):
    def on_mount(self) -> None:
        self.cursor_type = "row"
        for key, label, width in OUTBOX_COLUMNS:
            self.add_column(label, key=key, width=width)


class KeyBar(Static):
    """The footer: the shown keys of the current screen (as remapped by the config) in one line.

    One widget drawing one Text, where Textual's Footer mounts a widget per key: the inbox's
    first frame comes about a quarter of a second sooner. Updated when the screen's bindings
    change (focus, check_action, keymap)."""

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.show())
        self.show()

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)
        self.app.theme_changed_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Any) -> None:
        if self.is_attached and screen is self.screen:
            self.show()

    def show(self) -> None:
        app = self.app
        variables = app.theme_variables
        key_style = f"bold {variables.get('footer-key-foreground', '')}".strip()
        seen: dict[str, tuple[str, str]] = {}
        palette_key = ""
        for active in self.screen.active_bindings.values():
            binding = active.binding
            if binding.action in ("command_palette", "app.command_palette"):
                palette_key = palette_key or app.get_key_display(binding)
                continue
            if not binding.show or not active.enabled or binding.action in seen:
                continue
            seen[binding.action] = (app.get_key_display(binding), binding.description)
        if getattr(app, "locked", False):  # the palette is off behind the lock; say how to leave
            palette_key = ""
            seen = {"quit": (app.get_key_display(Binding("ctrl+q", "quit")), "Quit")}
        out = Text(no_wrap=True, overflow="ellipsis")
        for display, description in seen.values():
            out.append(f" {display} ", style=key_style)
            out.append(f"{description} ")
        if palette_key:
            width = self.size.width or app.size.width
            tail = f" {palette_key} Commands "
            pad = width - out.cell_len - len(tail)
            if pad > 0:
                out.append(" " * pad)
                out.append(f" {palette_key} ", style=key_style)
                out.append("Commands ")
        # The screen's bindings are checked after every key press: updating the same line again
        # would lay out and repaint the whole screen each time (a full frame per cursor move).
        shown = (out.plain, tuple(out.spans))
        if shown != getattr(self, "_shown", None):
            self._shown = shown
            self.update(out)

    def on_resize(self) -> None:
        self.show()
