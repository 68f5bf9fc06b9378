"""Editing a reply in the user's ``$EDITOR``.

The text (which may quote the patient) lives only briefly outside the store: in a file made by
``mkstemp`` (mode 0600) inside a private ``mkdtemp`` folder (mode 0700), on a RAM disk where
there is one. The folder (with any swap or backup file the editor left) is removed in a
``finally``, whatever happens; the file is overwritten before it is unlinked."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

RAM_DIRS = ("/dev/shm",)  # noqa: S108 - a private 0700 folder is made inside it


class EditorProblem(Exception):
    """One line for the user."""


def editor_command(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    value = (env.get("VISUAL") or env.get("EDITOR") or "").strip()
    if not value:
        raise EditorProblem("set $EDITOR (for example EDITOR=nano) to edit replies in your editor")
    try:
        return shlex.split(value)
    except ValueError:
        raise EditorProblem("$EDITOR could not be read (unbalanced quotes); fix it in your shell") from None


def _private_base() -> str | None:
    for d in RAM_DIRS:
        if os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK):
            return d
    return None


def edit_text(text: str, run: Callable[[list[str]], int], command: list[str] | None = None) -> str | None:
    """Let the editor change ``text``. Returns the new text, or None when the editor failed
    (non-zero exit), in which case the caller keeps the old text."""
    argv = command or editor_command()
    folder = tempfile.mkdtemp(prefix="carebox-edit-", dir=_private_base())
    try:
        os.chmod(folder, 0o700)
        fd, path = tempfile.mkstemp(suffix=".txt", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            code = run([*argv, path])
        except OSError as exc:
            raise EditorProblem(
                f"cannot start the editor {argv[0]!r}: {exc.strerror or exc.__class__.__name__}"
            ) from None
        if code != 0:
            return None
        return Path(path).read_text(encoding="utf-8", errors="replace")
    finally:
        for entry in Path(folder).glob("**/*"):
            with contextlib.suppress(OSError):
                if entry.is_file() and not entry.is_symlink():
                    size = entry.stat().st_size
                    with open(entry, "r+b") as f:
                        f.write(b"\0" * size)
        shutil.rmtree(folder, ignore_errors=True)
