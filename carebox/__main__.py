"""``python -m carebox``: the same as the ``carebox`` command."""

if __name__ == "__main__":  # guarded: worker processes import the main module of their parent
    import atexit
    import os
    import sys
    import threading

    from carebox.cli import main

    code = main()
    if threading.active_count() == 1:
        # Everything is done and closed: run the exit handlers (process pools, logging), flush,
        # and leave without the interpreter's teardown of every module and object (0.3-0.4 s
        # after a big sync, freeing memory the OS takes back anyway).
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # e.g. a closed pipe: the normal exit deals with it
            raise SystemExit(code) from None
        os._exit(code if isinstance(code, int) else 1)
    raise SystemExit(code)
