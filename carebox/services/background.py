"""One piece of work in a daemon thread, for a command that overlaps its start-up steps (a key's
scrypt, which releases the GIL, beside imports and a server's round trips). Light on purpose:
``carebox open`` starts the key's thread before anything else is imported."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

_T = TypeVar("_T")


def in_thread(fn: Callable[[], _T], name: str) -> Future[_T]:
    """Run ``fn`` in a daemon thread named ``name``; a ``Future`` of its result (``result()``
    waits and re-raises its failure in the caller's thread; ``asyncio.wrap_future`` awaits it)."""
    fut: Future[_T] = Future()

    def work() -> None:
        try:
            fut.set_result(fn())
        except BaseException as exc:  # re-raised by whoever waits for it
            fut.set_exception(exc)

    threading.Thread(target=work, name=name, daemon=True).start()
    return fut
