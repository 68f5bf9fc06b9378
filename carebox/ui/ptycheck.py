"""Run the UI on an existing store, for the pseudo-terminal safety test and the UI benchmark.

    CAREBOX_PASSPHRASE=... python -m carebox.ui.ptycheck STORE_DIR [--now ISO] [--open ADDRESS]

``--now`` freezes the clock; ``--open`` opens the first conversation (of the first page of the
Due view) whose patient address is ADDRESS, so its text is on screen. ``--auto-lock`` sets the
idle minutes (0: off). Nothing is printed besides what the app draws.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from carebox.config import Config, StoreConfig, UiConfig
from carebox.services.session import open_session


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carebox.ui.ptycheck")
    parser.add_argument("store", type=Path)
    parser.add_argument("--now", help="frozen clock, ISO 8601 with offset")
    parser.add_argument("--open", dest="open_addr", help="open this patient's conversation at start")
    parser.add_argument("--theme", default="carebox-dark")
    parser.add_argument("--auto-lock", type=float, default=0)
    args = parser.parse_args(argv)

    config = Config(store=StoreConfig(path=args.store), ui=UiConfig(theme=args.theme, auto_lock_minutes=args.auto_lock))
    session = open_session(config, store_dir=args.store)
    fixed = datetime.fromisoformat(args.now) if args.now else None

    from carebox.ui.app import CareboxApp

    class CheckApp(CareboxApp):
        def on_mount(self) -> None:  # Textual runs CareboxApp.on_mount after this one
            if args.open_addr:
                self.call_after_refresh(self._open_addr)

        def _open_addr(self) -> None:
            box = self.inbox_screen
            if box is None:
                return
            for row in box.rows:
                if row.patient_addr == args.open_addr:
                    self.open_thread(row.id)
                    return

    app = CheckApp(session, clock=(lambda: fixed) if fixed else None)
    try:
        app.run()
    finally:
        session.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
