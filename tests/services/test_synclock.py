"""The sync lock: one syncing process per store, never a stale lock after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from carebox.services.synclock import LOCK_FILE, SyncBusy, SyncLock

HOLDER = """
import sys, time
from pathlib import Path
from carebox.services.synclock import SyncLock
lock = SyncLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    first = SyncLock(tmp_path).acquire()
    second = SyncLock(tmp_path)
    with pytest.raises(SyncBusy) as err:
        second.acquire()
    message = str(err.value)
    assert message.startswith("another carebox is already syncing this store")
    assert f"(process {os.getpid()})" in message and "\n" not in message
    assert not second.held
    first.release()
    first.release()  # harmless twice
    with second:
        assert second.held
    assert not second.held


def test_lock_file_is_private(tmp_path: Path) -> None:
    with SyncLock(tmp_path / "new-store"):
        path = tmp_path / "new-store" / LOCK_FILE
        assert path.exists() and (path.stat().st_mode & 0o077) == 0


def test_another_process_holds_it_and_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"locked"
        with pytest.raises(SyncBusy) as err:
            SyncLock(tmp_path).acquire()
        assert f"(process {proc.pid})" in str(err.value)
        os.kill(proc.pid, signal.SIGKILL)  # a crash: no cleanup runs in the holder
        proc.wait(10)
        deadline = time.monotonic() + 5
        while True:
            try:
                lock = SyncLock(tmp_path).acquire()
                break
            except SyncBusy:
                assert time.monotonic() < deadline, "the lock outlived its holder"
                time.sleep(0.05)
        assert lock.held
        lock.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
