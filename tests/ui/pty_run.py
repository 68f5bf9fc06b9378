"""Run a command in a pseudo-terminal, send it keys at set times, and collect everything it
writes to the terminal (used by the display safety test and bench/ui.py)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Sequence


def run_in_pty(
    argv: Sequence[str],
    keys: Sequence[tuple[float, bytes]],
    *,
    env: dict[str, str] | None = None,
    size: tuple[int, int] = (120, 36),
    timeout: float = 20.0,
    on_output: Sequence[tuple[tuple[bytes, ...], bytes]] = (),
) -> bytes:
    """``keys``: (seconds after start, bytes to type); ``on_output``: (markers, bytes to type once
    every marker has been written). Returns all output until the process exits (or ``timeout``,
    when it is killed)."""
    master, slave = pty.openpty()
    cols, rows = size
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    full_env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows), **(env or {})}
    proc = subprocess.Popen(
        list(argv), stdin=slave, stdout=slave, stderr=slave, env=full_env, start_new_session=True, close_fds=True
    )
    os.close(slave)
    out = bytearray()
    start = time.monotonic()
    pending = sorted(keys)
    waiting = list(on_output)
    try:
        while True:
            now = time.monotonic() - start
            while pending and pending[0][0] <= now:
                os.write(master, pending.pop(0)[1])
            if now > timeout:
                break
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
                for markers, data in [w for w in waiting if all(m in out for m in w[0])]:
                    os.write(master, data)
                    waiting.remove((markers, data))
            elif proc.poll() is not None and not pending:
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        os.close(master)
    return bytes(out)
