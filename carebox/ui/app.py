"""The Textual app: screens, status bar, undo, themes, key map, auto-lock. It calls services only.

``CareboxApp(session, clock=...)``: ``clock`` gives "now" for countdowns and ranking (frozen in
snapshot tests); idle time for auto-lock is measured with ``idle_clock`` (monotonic).
The terminal title is never set from data: it stays "carebox".
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import events, work
from textual.app import App, SuspendNotSupported
from textual.binding import Binding, BindingType
from textual.theme import Theme

from carebox.domain.ranking import format_countdown
from carebox.services import inbox
from carebox.services import lock as lock_service
from carebox.services.session import Session
from carebox.ui import ops
from carebox.ui.actions import APP, BY_ID, bindings, check_keymap
from carebox.ui.commands import CareboxCommands
from carebox.ui.render import Palette
from carebox.ui.screens.inbox import PAGE, InboxScreen
from carebox.ui.themes import DEFAULT_THEME, THEME_DIR, load_themes
from carebox.ui.widgets import StatusBar

if TYPE_CHECKING:  # the other screens are imported when first used: the first frame comes sooner
    from carebox.ui.triage import Triage, UndoEntry

STATUS_SECONDS = 30.0
TICK_SECONDS = 60.0
UNDO_SECONDS = 5.0


def _run_editor_default(app: App[None], argv: list[str]) -> int:
    try:
        with app.suspend():
            return subprocess.call(argv)
    except SuspendNotSupported:  # headless (tests): no terminal to hand over
        return subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


class CareboxApp(App[None]):
    TITLE = "carebox"
    SUB_TITLE = ""
    CSS_PATH = str(Path(__file__).with_name("carebox.tcss"))  # absolute: subclasses live elsewhere
    BINDINGS: ClassVar[list[BindingType]] = bindings(APP)
    COMMANDS: ClassVar = {CareboxCommands}

    def __init__(
        self,
        session: Session,
        clock: Callable[[], datetime] | None = None,
        *,
        theme_dir: Path | None = None,
        undo_seconds: float = UNDO_SECONDS,
        idle_clock: Callable[[], float] = time.monotonic,
        run_editor: Callable[[list[str]], int] | None = None,
        page_size: int = PAGE,
        background_sync: bool = True,
        prepare: Callable[[], None] | None = None,
        preparing: str = "",
    ) -> None:
        """``prepare``: work that must finish before the inbox can show (``carebox demo`` waits
        there for its store, built by another process): it runs in a thread while the app starts,
        with only quitting possible meanwhile and ``preparing`` (a line) on the screen; if it
        raises, the app exits and ``prepare_error`` holds the exception.

        A session whose store is not open yet (``services.session.peek_session``) paints the Due
        view's first page from ``session.first_page``, then opens the store right after that
        first frame (keys typed meanwhile wait for it, in order; anything that reads the store
        before then opens it at once)."""
        super().__init__()
        self.session = session
        self._prepare = prepare
        self.preparing = prepare is not None
        self.preparing_line = preparing or "Preparing the mailbox..."
        self.prepare_error: BaseException | None = None
        self.clock = clock or (lambda: datetime.now(UTC))
        self.undo_seconds = undo_seconds
        self.idle_clock = idle_clock
        self.page_size = page_size
        self.run_editor = run_editor or (lambda argv: _run_editor_default(self, argv))
        self._triage: Triage | None = None
        self.undo_stack: list[UndoEntry] = []
        self.locked = False
        self.busy = False
        self.status_text = Text("")
        self.notices: list[str] = []
        self._last_input = idle_clock()
        self._flush_timer = None
        self._send_after = 0.0  # monotonic time before which nothing is sent (undo window)
        self.background_sync = background_sync
        self.sync: Any = None  # services.sync.BackgroundSync while it runs
        self._queue_text = Text("")
        self._started = False
        self._view = "due"
        self._selection: list[str] = []
        # themes (data files; a broken one falls back to the default with a notice)
        loaded = load_themes(theme_dir or THEME_DIR)
        self.notices += loaded.problems
        self.carebox_themes = sorted(loaded.themes)
        for theme in loaded.themes.values():
            self.register_theme(theme)
        wanted = session.config.ui.theme
        if wanted not in loaded.themes:
            self.notices.append(f"theme {wanted!r} is not available; using {DEFAULT_THEME}")
            wanted = DEFAULT_THEME
        self.theme = wanted
        # key map from the config (unknown ids: a notice, never a crash)
        self.keymap = check_keymap(session.config.ui.keys)
        self.notices += self.keymap.problems
        self.set_keymap(self.keymap.overrides)

    @property
    def triage(self) -> Triage:
        if self._triage is None:
            from carebox.ui.triage import Triage

            self._triage = Triage(self)
        return self._triage

    # --- theme variables the screens use ---------------------------------------------------------

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return {"alarm": "#FF8A8A", "caution": "#E8C170", "ok": "#8FD18F", "selected": "#9CCBF2"}

    @property
    def palette(self) -> Palette:
        theme: Theme = self.current_theme
        from carebox.ui.themes import theme_variables

        return Palette.from_variables(theme_variables(theme))

    def keys_of(self, binding_id: str) -> str:
        keys = self.keymap.keys_of(binding_id) if binding_id in BY_ID else ""
        return " / ".join(self.get_key_display(Binding(k, "")) for k in keys.split(",") if k)

    # --- start -----------------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        if self._prepare is not None:
            self.run_worker(self._run_prepare, thread=True, group="prepare")
        # The inbox is laid out meanwhile (empty, saying what it waits for): once prepared, only
        # its rows are left to paint.
        self._start()

    def _run_prepare(self) -> None:
        self._in_thread_then(self._prepare, self._prepared)  # type: ignore[arg-type]

    def _in_thread_then(self, work: Callable[[], object], then: Callable[[], None]) -> None:
        """In a worker thread: ``work``, then ``then`` on the app's thread; if ``work`` raises, the
        app exits with ``prepare_error`` set (the caller shows it in one line)."""
        try:
            work()
        except BaseException as exc:
            self.prepare_error = exc
            self.call_from_thread(self.exit, None, 1)
            return
        self.call_from_thread(then)

    def _prepared(self) -> None:
        self.preparing = False
        inbox_screen = self.inbox_screen
        if inbox_screen is not None:
            inbox_screen.reload(keep_cursor=False)
            inbox_screen.refresh_bindings()
            self._after_frame_of(inbox_screen)

    def _after_frame_of(self, inbox_screen: InboxScreen) -> None:
        # after the inbox's first frame with rows (a callback queued on the screen that is current
        # then); the timer covers a screen pushed on top before that frame was drawn
        inbox_screen.call_after_refresh(self._after_first_frame)
        self.set_timer(1.0, self._after_first_frame)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.preparing:  # nothing to act on yet: only quitting
            return action == "quit"
        return True

    def _start(self) -> None:
        inbox_screen = InboxScreen(page_size=self.page_size)
        self.push_screen(inbox_screen)
        if not self.preparing:
            self._after_frame_of(inbox_screen)
        self.set_interval(STATUS_SECONDS, self.refresh_status)
        self.set_interval(TICK_SECONDS, self._tick)
        minutes = self.session.config.ui.auto_lock_minutes
        if minutes > 0:
            self.set_interval(min(5.0, max(minutes * 60 / 4, 0.05)), self._check_idle)
        for line in self.notices:
            self.notify(line, severity="warning", markup=False, timeout=10)

    def _after_first_frame(self) -> None:
        """Work that must not delay the first painted inbox: opening a store the first page was
        read without, then status, sync, service notices."""
        if self._started:
            return
        self._started = True
        if self.session.is_open:
            self._store_ready()
            return
        # The ORM's import (about half a second) runs in a thread: the rows keep painting and
        # moving the cursor works meanwhile; anything that reads the store waits for it.
        self.run_worker(self._open_store, thread=True, group="open", exit_on_error=False)

    def _open_store(self) -> None:
        self._in_thread_then(self.session.open_store, self._store_ready)

    def _store_ready(self) -> None:
        self.session.first_page = None  # the inbox holds its rows; nothing else needs these
        self.refresh_status()
        if self.background_sync:
            self._start_sync()
        for line in ops.problems():
            self.notify(line, severity="warning", markup=False, timeout=10)

    def _theme_changed(self, _theme: Theme) -> None:
        self.refresh_status()  # its colours come from the theme
        for screen in self.screen_stack:
            if isinstance(screen, InboxScreen):
                screen.rerender()

    def _tick(self) -> None:
        if self.locked:
            return
        for screen in self.screen_stack:
            if isinstance(screen, InboxScreen):
                screen.rerender()

    # --- status bar ------------------------------------------------------------------------------

    def refresh_status(self) -> None:
        if self.locked:
            return
        self._status_worker()

    @work(thread=True, exclusive=True, group="status")
    def _status_worker(self) -> None:
        try:
            text = self.queue_status()
        except Exception:  # the store may be locked or busy; try again at the next tick
            return
        self.call_from_thread(self._show_status, text)

    def queue_status(self) -> Text:
        """DEMO, the queue and its next deadline, the outbox (from the store's clear columns)."""
        now = self.clock()
        info = inbox.status(self.session.store, now)
        palette = self.palette
        out = Text(no_wrap=True, overflow="ellipsis")
        if self.session.demo:
            out.append(" DEMO ", style="reverse bold")
            out.append("  ")
        out.append(f"Due {info['due']}")
        if info["overdue"]:
            out.append(" · ")
            out.append(f"{info['overdue']} overdue", style=f"bold {palette.alarm}")
        if info["next_due"]:
            due = datetime.fromisoformat(info["next_due"].replace("Z", "+00:00"))
            out.append(f" · next deadline {format_countdown(due, now).removeprefix('due ')}")
        out.append("   Outbox ")
        waiting, uncertain, failed = info["outbox_waiting"], info["outbox_uncertain"], info["outbox_failed"]
        out.append(f"{waiting} waiting" if waiting else "empty" if not (uncertain or failed) else "0 waiting")
        if uncertain:
            out.append(" · ")
            out.append(f"{uncertain} uncertain", style=f"bold {palette.alarm}")
        if failed:
            out.append(" · ")
            out.append(f"{failed} failed", style=f"bold {palette.alarm}")
        return out

    def sync_line(self) -> str:
        if self.sync is not None:
            return self.sync.status.line(self.session.policy.tz)
        return ops.sync_line(self.session)

    def _show_status(self, queue: Text | None = None) -> None:
        if self.locked:
            return
        if queue is not None:
            self._queue_text = queue
        text = self._queue_text.copy()
        line = self.sync_line()
        text.append("   ")
        text.append(line, style=f"bold {self.palette.alarm}" if line.startswith("offline") else "")
        self.status_text = text
        for screen in self.screen_stack:
            for bar in screen.query(StatusBar):
                bar.update(text)

    # --- navigation and changes ------------------------------------------------------------------

    @property
    def inbox_screen(self) -> InboxScreen | None:
        for screen in self.screen_stack:
            if isinstance(screen, InboxScreen):
                return screen
        return None

    def open_thread(self, thread_id: str) -> None:
        from carebox.ui.screens.thread import ThreadScreen

        self.push_screen(ThreadScreen(thread_id))

    def after_change(self, *, close_to_inbox: bool = False, select: list[str] | None = None) -> None:
        """Something changed in the store: back to the inbox if asked, reload, refresh status."""
        if close_to_inbox:
            while len(self.screen_stack) > 1 and not isinstance(self.screen, InboxScreen):
                self.pop_screen()
        box = self.inbox_screen
        if box is not None:
            if select is not None:
                box.selected = dict.fromkeys(select)
            box._haystack = None
            box.reload(keep_cursor=True)
        self.refresh_status()

    def action_patients(self) -> None:
        from carebox.ui.screens.patients import PatientsScreen

        if self.locked or isinstance(self.screen, PatientsScreen):
            return
        self.push_screen(PatientsScreen())

    def action_help(self) -> None:
        from carebox.ui.screens.dialogs import HelpScreen

        if self.locked or isinstance(self.screen, HelpScreen):
            return
        self.push_screen(
            HelpScreen(
                lambda i: self.keymap.keys_of(i), lambda k: self.get_key_display(Binding(k, "")), self.keymap.problems
            )
        )

    def action_command_palette(self) -> None:
        if self.locked:
            return
        super().action_command_palette()

    def action_undo(self) -> None:
        if not self.undo_stack:
            self.notify("Nothing to undo", markup=False)
            return
        entry = self.undo_stack.pop()
        try:
            line = entry.run()
        except Exception as exc:
            self.notify(ops.message(exc), severity="error", markup=False)
            return
        self.notify(line, markup=False)
        self.after_change()

    # --- sending and sync ------------------------------------------------------------------------

    def schedule_flush(self) -> None:
        """Send after the undo window; a new reply restarts the window."""
        self._send_after = self.idle_clock() + self.undo_seconds
        if not ops.can_send(self.session):
            return
        if self._flush_timer is not None:
            self._flush_timer.stop()
        self._flush_timer = self.set_timer(self.undo_seconds, self._flush)

    def _flush(self) -> None:
        self._flush_timer = None
        if not self.locked and self.idle_clock() >= self._send_after:
            self._flush_worker()

    @work(exclusive=True, group="flush")
    async def _flush_worker(self) -> None:
        try:
            line = await ops.flush(self.session, now=self.clock())
        except Exception as exc:
            self.notify(f"sending: {ops.message(exc)}", severity="error", markup=False)
            line = None
        if line:
            self.notify(line, markup=False)
        self.after_change()

    def _start_sync(self) -> None:
        mod = ops.sync()
        session = self.session
        if mod is None or not hasattr(mod, "BackgroundSync") or session.demo or session.config.account is None:
            return
        try:
            self.sync = mod.BackgroundSync(session, on_status=self._on_sync_status, on_synced=self._on_synced)
            self.sync.start()
        except Exception as exc:
            self.sync = None
            self.notify(f"background sync could not start: {ops.message(exc)}", severity="warning", markup=False)

    def _on_sync_status(self, _status: object) -> None:
        self._show_status()

    def _on_synced(self, report: Any) -> None:
        if self.locked:
            return
        notice = getattr(report, "notice", None)
        if notice:
            self.notify(str(notice), severity="warning", markup=False, timeout=10)
        if getattr(report, "added", 0) or getattr(report, "changed", False):
            self.after_change()
        # the connection works: send what waits (never inside an undo window)
        if self.idle_clock() >= self._send_after and ops.can_send(self.session):
            self._flush_worker()

    async def on_unmount(self) -> None:
        if self.sync is not None:
            with contextlib.suppress(Exception):
                await self.sync.stop()

    def action_sync(self) -> None:
        if self.locked:
            return
        if self.sync is not None:
            self.sync.wake()
            self.notify("Syncing now…", markup=False, timeout=2)
            return
        self._sync_worker()

    @work(exclusive=True, group="sync")
    async def _sync_worker(self) -> None:
        try:
            line = await ops.sync_now(self.session, now=self.clock())
        except Exception as exc:
            self.notify(ops.message(exc), severity="warning", markup=False)
            return
        self.notify(line, markup=False)
        self.after_change()

    # --- auto-lock -------------------------------------------------------------------------------

    async def on_event(self, event: events.Event) -> None:
        if isinstance(
            event, (events.Key, events.MouseDown, events.MouseScrollDown, events.MouseScrollUp, events.Paste)
        ):
            self._last_input = self.idle_clock()
        await super().on_event(event)

    def _check_idle(self) -> None:
        if self.locked or self.busy:
            return
        limit = self.session.config.ui.auto_lock_minutes * 60
        if limit > 0 and self.idle_clock() - self._last_input >= limit:
            self.run_worker(self.lock(reason="auto"), exclusive=True, group="lock")

    async def action_lock(self) -> None:
        await self.lock(reason="manual")

    async def lock(self, reason: str = "auto") -> None:
        """Hide every screen holding patient data, keep an open reply as a draft, drop the key."""
        if self.locked:
            return
        from carebox.ui.screens.compose import ComposeScreen
        from carebox.ui.screens.lock import LockScreen

        self.locked = True
        saved = False
        for screen in self.screen_stack:
            if isinstance(screen, ComposeScreen):
                with contextlib.suppress(Exception):  # locking must go on
                    saved = screen.save_draft_quietly() or saved
        box = self.inbox_screen
        if box is not None:
            self._view = box.view
            self._selection = list(box.selected)
        self.clear_notifications()
        while len(self.screen_stack) > 1:
            screen = self.screen
            forget = getattr(screen, "forget", None)  # inbox, thread, patient directory
            if callable(forget):
                forget()
            await self.pop_screen()
        self.status_text = Text("")
        self.session.first_page = None  # decrypted rows read before the store opened, if still held
        lock_service.lock(self.session, reason=reason, now=self.clock())
        minutes = self.session.config.ui.auto_lock_minutes
        why = (
            f"Locked after {minutes:g} idle minutes." if reason == "auto" else "Locked."
        ) + " Patient data is hidden and the store's key was dropped from memory."
        if saved:
            why += " The reply you were writing was kept as a draft."
        await self.push_screen(LockScreen(lock_service.needs_passphrase(self.session), why))

    def unlock(self, passphrase: str) -> None:
        self._unlock_worker(passphrase)

    @work(thread=True, exclusive=True, group="unlock")
    def _unlock_worker(self, passphrase: str) -> None:
        try:
            lock_service.unlock(self.session, passphrase, now=self.clock())
        except lock_service.WrongPassphrase:
            self.call_from_thread(self._unlock_failed, "Wrong passphrase. Try again.")
            return
        except lock_service.KeyProblem as exc:
            self.call_from_thread(self._unlock_failed, str(exc))
            return
        self.call_from_thread(self._unlocked)

    def _unlock_failed(self, line: str) -> None:
        from carebox.ui.screens.lock import LockScreen

        if isinstance(self.screen, LockScreen):
            self.screen.failed(line)

    def _unlocked(self) -> None:
        self.locked = False
        self._last_input = self.idle_clock()
        if self.sync is not None:
            self.sync.wake()
        self.switch_screen(InboxScreen(self._view, self._selection, page_size=self.page_size))
        self.refresh_status()
