"""Small modal dialogs: confirm, pick a category, pick from a list, enter a path, a summary,
and the help screen listing every key. Mail text only ever enters them as sanitised Text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from carebox.ui.actions import ACTIONS, DIALOG, SCOPE_TITLES, bindings


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question. ``y`` answers yes; ``n`` or escape no."""

    SCOPE = DIALOG
    BINDINGS: ClassVar[list[BindingType]] = bindings(DIALOG)

    def __init__(self, question: str | Text, detail: str | Text = "") -> None:
        super().__init__()
        self.question = question if isinstance(question, Text) else Text(question)
        self.detail = detail if isinstance(detail, Text) else Text(detail)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-title")
            if self.detail.plain:
                yield Static(self.detail, classes="dialog-detail")
            yield Static(Text("y  yes      n  no"), classes="dialog-keys")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)


class CategoryScreen(ModalScreen[tuple[str, bool] | None]):
    """Pick an out-of-scope category. enter tags only; ``r`` tags and replies with the
    category's template (when the config has one named like the category)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="category_cancel"),
        Binding("r", "with_reply", "Tag and reply", id="category_reply"),
    ]

    def __init__(
        self, categories: Mapping[str, str], templates: Mapping[str, str], suggested: str | None, count: int
    ) -> None:
        super().__init__()
        self.categories = dict(categories)
        self.templates = templates
        self.suggested = suggested
        self.count = count

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            what = "this conversation" if self.count == 1 else f"{self.count} conversations"
            yield Static(Text(f"Out of scope: tag {what}"), classes="dialog-title")
            options = []
            for key, label in self.categories.items():
                text = Text(label)
                if key in self.templates:
                    text.append("  (template reply: r)", style="italic")
                if key == self.suggested:
                    text.append("  suggested", style="bold")
                options.append(Option(text, id=key))
            yield OptionList(*options, id="categories")
            yield Static(
                Text("enter  tag only      r  tag and reply with the template      escape  cancel"),
                classes="dialog-keys",
            )

    def on_mount(self) -> None:
        lst = self.query_one(OptionList)
        keys = list(self.categories)
        if self.suggested in keys:
            lst.highlighted = keys.index(self.suggested)
        elif keys:
            lst.highlighted = 0
        lst.focus()

    def _current(self) -> str | None:
        lst = self.query_one(OptionList)
        if lst.highlighted is None:
            return None
        return lst.get_option_at_index(lst.highlighted).id

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self.dismiss((event.option.id, False))

    def action_with_reply(self) -> None:
        key = self._current()
        if key is None:
            return
        if key not in self.templates:
            self.app.notify(
                f"no template named {key!r} in [templates]: tagging needs enter", severity="warning", markup=False
            )
            return
        self.dismiss((key, True))

    def action_cancel(self) -> None:
        self.dismiss(None)


class PickScreen(ModalScreen[str | None]):
    """Pick one of a few items (attachments). Items are (id, sanitised Text)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="pick_cancel")]

    def __init__(self, title: str, items: Sequence[tuple[str, Text]]) -> None:
        super().__init__()
        self.title_text = title
        self.items = list(items)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self.title_text), classes="dialog-title")
            yield OptionList(*[Option(text, id=key) for key, text in self.items])
            yield Static(Text("enter  choose      escape  cancel"), classes="dialog-keys")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PathScreen(ModalScreen[str | None]):
    """Ask for a path (where to save an attachment or an export)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="path_cancel")]

    def __init__(self, title: str, default: str, hint: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.default = default
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self.title_text), classes="dialog-title")
            yield Input(value=self.default, id="path")
            if self.hint:
                yield Static(Text(self.hint), classes="dialog-detail")
            yield Static(Text("enter  save      escape  cancel"), classes="dialog-keys")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        self.dismiss(value or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class SummaryScreen(ModalScreen[None]):
    """What a bulk action did. Any of enter, escape or y closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter,y,n", "close", "Close", id="summary_close"),
    ]

    def __init__(self, title: str, lines: Sequence[Text]) -> None:
        super().__init__()
        self.title_text = title
        self.lines = list(lines)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(Text(self.title_text), classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield Static(Text("\n").join(self.lines) if self.lines else Text(""))
            yield Static(Text("enter  close"), classes="dialog-keys")

    def action_close(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key, grouped by where it works, with its binding id (for ui.keys in the config)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "close", "Close", id="help_close"),
    ]

    def __init__(self, keys_of: Any, display: Any, problems: Sequence[str] = ()) -> None:
        super().__init__()
        self.keys_of = keys_of  # binding id -> effective key string
        self.key_display = display  # key string -> how it is shown
        self.problems = list(problems)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide tall"):
            yield Static(Text('Keys  (remap any of them in the config: [ui.keys] id = "key")'), classes="dialog-title")
            with VerticalScroll(classes="dialog-body", id="help-body"):
                yield Static(self._table())
            yield Static(Text("escape  close"), classes="dialog-keys")

    def _table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column()
        for scope, title in SCOPE_TITLES.items():
            acts = [a for a in ACTIONS if a.scopes[0] == scope]
            if not acts:
                continue
            table.add_row(Text(title, style="bold underline"), Text(""), Text(""))
            for a in acts:
                keys = " / ".join(self.key_display(k) for k in self.keys_of(a.id).split(","))
                also = [SCOPE_TITLES[s].lower() for s in a.scopes[1:]]
                text = a.help + (f" (also on a {', '.join(also)})" if also else "")
                table.add_row(Text(keys, style="bold"), Text(a.id), Text(text))
            table.add_row(Text(""), Text(""), Text(""))
        for line in self.problems:
            table.add_row(Text("config", style="bold"), Text(""), Text(line))
        return table

    def action_close(self) -> None:
        self.dismiss(None)
