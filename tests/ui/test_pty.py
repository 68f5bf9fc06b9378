"""The real app in a pseudo-terminal on a store of hostile messages: no escape sequence from
mail content reaches the terminal, and the terminal title is never set."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.ui.helpers import NOW, PASSPHRASE, practice
from tests.ui.pty_run import run_in_pty

PAYLOADS = (
    b"]0;pwned",  # OSC title from a subject and a body
    b"pwned",  # the words inside every hostile sequence
    b"]52;c;cHduZWQ",  # OSC 52 clipboard write from a display name
    b"]8;;http://evil",  # OSC 8 hyperlink from a body
    b"\x9b2J",  # 8-bit CSI from a body
    "\u202e".encode(),  # bidi override
)


def test_no_escape_from_mail_reaches_the_terminal(tmp_path: Path) -> None:
    store = tmp_path / "store"
    practice(store, hostile=True).close()
    out = run_in_pty(
        [
            sys.executable,
            "-m",
            "carebox.ui.ptycheck",
            str(store),
            "--now",
            NOW.isoformat(),
            "--open",
            "eve@mail.example",
        ],
        [(4.0, b"\x1b"), (4.6, b"2"), (5.2, b"\x11")],  # back to the inbox, the All view, ctrl+q
        env={"CAREBOX_PASSPHRASE": PASSPHRASE, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        timeout=30,
    )
    # the hostile thread was really drawn (its text, made safe), and the inbox after it
    assert b"not bold" in out and b"override" in out and b"Eve" in out
    assert b"Blood pressure" in out
    for payload in PAYLOADS:
        assert payload not in out, payload
    assert b"\x1b]0;" not in out and b"\x1b]2;" not in out  # the title is never set


def test_carebox_demo_builds_its_store_beside_the_ui_and_paints_the_inbox(tmp_path: Path) -> None:
    """`carebox demo` as a user runs it: the store is built in a child process while the UI is
    imported; the inbox appears with the demo's most urgent patient, and quitting removes it."""
    out = run_in_pty(
        [sys.executable, "-m", "carebox", "demo"],
        [],
        env={"CAREBOX_NOW": "2026-11-26T12:00:00+00:00", "TMPDIR": str(tmp_path)},
        on_output=[((b"Whitfield", b"DEMO"), b"\x11")],  # the top of the demo queue, the status bar; ctrl+q
        timeout=60,
    )
    assert b"Whitfield" in out and b"DEMO" in out
    assert b"Traceback" not in out and b"could not be built" not in out
    assert not list(tmp_path.glob("carebox-demo-*"))  # the throwaway store is gone
