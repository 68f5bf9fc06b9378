"""The lock screen: no patient data at all, the data key already dropped. Unlocking asks for
the passphrase, or (key in the keychain) a confirmation that lets the keychain ask its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Button, Input, Static

from carebox.ui.widgets import KeyBar

if TYPE_CHECKING:
    from carebox.ui.app import CareboxApp


class LockScreen(Screen[None]):
    SCOPE = "lock"
    BINDINGS: ClassVar[list[BindingType]] = []

    def __init__(self, passphrase: bool, reason: str = "") -> None:
        super().__init__()
        self.passphrase = passphrase
        self.reason = reason

    @property
    def capp(self) -> CareboxApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Vertical(id="lock-box"):
            yield Static(Text("carebox is locked", style="bold"), id="lock-title")
            yield Static(
                Text(self.reason or "Patient data is hidden and the store's key was dropped from memory."),
                id="lock-reason",
            )
            if self.passphrase:
                yield Input(password=True, placeholder="passphrase", id="passphrase")
                yield Static(Text("Type the store passphrase and press enter."), id="lock-hint")
            else:
                yield Button("Unlock (the keychain may ask you to confirm)", id="unlock", variant="primary")
                yield Static(Text("Press enter to unlock."), id="lock-hint")
            yield Static(id="lock-message")
        yield KeyBar()

    def on_mount(self) -> None:
        target = "#passphrase" if self.passphrase else "#unlock"
        self.query_one(target).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value:
            return
        self.busy(True)
        self.capp.unlock(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.busy(True)
        self.capp.unlock("")

    def busy(self, on: bool) -> None:
        for widget in self.query("Input, Button"):
            widget.disabled = on
        if on:
            self.query_one("#lock-message", Static).update(Text("Unlocking…"))

    def failed(self, line: str) -> None:
        self.busy(False)
        self.query_one("#lock-message", Static).update(Text(line))
        if self.passphrase:
            field = self.query_one("#passphrase", Input)
            field.value = ""
            field.focus()
        else:
            self.query_one("#unlock", Button).focus()
