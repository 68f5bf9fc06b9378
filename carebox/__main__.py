"""``python -m carebox``, and the ``carebox`` command (``run``)."""

from __future__ import annotations

from typing import NoReturn


def run() -> NoReturn:
    """``carebox``: ``cli.main``, then a quick exit. When nothing is left running, the exit
    handlers run (process pools, logging), output is flushed, and the process leaves without the
    interpreter's teardown of every module and object (0.3-0.4 s after a big sync, freeing memory
    the OS takes back anyway). Tests call ``cli.main`` itself."""
    import atexit
    import os
    import sys
    import threading

    from carebox.cli import main

    code = main()
    if threading.active_count() == 1:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # e.g. a closed pipe: the normal exit deals with it
            raise SystemExit(code) from None
        os._exit(code if isinstance(code, int) else 1)
    raise SystemExit(code)


if __name__ == "__main__":  # guarded: worker processes import the main module of their parent
    run()
