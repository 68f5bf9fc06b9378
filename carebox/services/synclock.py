"""One syncing process per store: an ``flock`` on ``sync.lock`` in the store's directory.

A second ``carebox sync`` (or an app whose background sync finds the lock taken) gets
:class:`SyncBusy`, one line saying who holds it, and does nothing. The operating system drops
the lock when the holder dies (even by SIGKILL), so a crash never leaves a stale lock behind; the
pid written into the file is only there to name the holder in the message.

``flock`` locks belong to an open file description, so two ``SyncLock`` objects in the same
process exclude each other too (the app's background sync and a sync started from its UI).

Only ``fcntl`` and ``os`` are imported: the lock is taken before anything heavy is loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["LOCK_FILE", "SyncBusy", "SyncLock"]

LOCK_FILE = "sync.lock"


class SyncBusy(Exception):
    """Another carebox process is syncing this store; ``str(e)`` is one line for the user."""


class SyncLock:
    """Non-blocking exclusive lock on ``<store_dir>/sync.lock``.

    ``acquire()`` raises :class:`SyncBusy` at once when the lock is held; ``release()`` is safe to
    call more than once. Also a context manager::

        with SyncLock(store_dir):
            ...  # sync
    """

    def __init__(self, store_dir: Path) -> None:
        self.path = Path(store_dir).expanduser() / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> SyncLock:
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (process {holder})" if holder else ""
            raise SyncBusy(
                f"another carebox is already syncing this store{who}: nothing was done; try again when it has finished"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise SyncBusy(f"cannot lock {self.path} for syncing ({exc.strerror or type(exc).__name__})") from None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> SyncLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten lock must not outlive its object
        with contextlib.suppress(Exception):
            self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
