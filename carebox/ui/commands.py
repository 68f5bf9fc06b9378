"""The command palette (ctrl+p): every action of the current screen and the app, by the same
names as the help screen, plus the themes. Entries whose action is not possible right now
(for example outbox actions outside the Outbox view) are left out."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from rich.text import Text
from textual.command import DiscoveryHit, Hit, Hits, Provider

from carebox.ui.actions import ACTIONS, APP, Act


def _runnable(screen: object, act: Act) -> bool:
    action = act.action
    if action.startswith("app."):
        return True
    name = action.split("(", 1)[0]
    if not hasattr(screen, f"action_{name}"):
        return False
    check = getattr(screen, "check_action", None)
    return check is None or check(name, ()) is not False


class CareboxCommands(Provider):
    def _commands(self) -> list[tuple[str, Callable[[], object], str, str]]:
        screen = self.screen
        app = self.app
        if getattr(app, "locked", False):
            scope_acts = [a for a in ACTIONS if a.id in ("quit", "help")]
        else:
            scope = getattr(screen, "SCOPE", None)
            scope_acts = [a for a in ACTIONS if a.palette and (scope in a.scopes or APP in a.scopes)]
        out: list[tuple[str, Callable[[], object], str, str]] = []
        keys_of = getattr(app, "keys_of", lambda i: "")
        for act in scope_acts:
            if not _runnable(screen, act):
                continue
            action = act.action
            target = app if action.startswith("app.") else screen
            run = partial(target.run_action, action.removeprefix("app."))
            keys = keys_of(act.id)
            help_text = f"key {keys} · id {act.id}" if keys else f"id {act.id}"
            out.append((act.help, run, help_text, f"{act.label} {act.id.replace('_', ' ')}"))
        for name in getattr(app, "carebox_themes", []):
            run_theme = partial(setattr, app, "theme", name)
            out.append((f"Theme: {name}", run_theme, f"Switch to the {name} theme", f"theme {name}"))
        return out

    async def discover(self) -> Hits:
        for display, run, help_text, _keywords in self._commands():
            yield DiscoveryHit(Text(display), run, text=display, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for display, run, help_text, keywords in self._commands():
            score = max(matcher.match(keywords), matcher.match(display) * 0.6)
            if score > 0:
                yield Hit(score, matcher.highlight(display), run, text=display, help=help_text)
