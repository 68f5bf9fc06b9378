"""One outbox flush in a process of its own, for the crash tests in test_outbox_e2e.py.

    python tests/integration/outbox_flush_script.py STORE_DIR CONFIG_FILE

Environment: ``CAREBOX_TEST_KEY`` is the store's data key in hex (the tests open the store with a
fixed key, no keychain). ``CAREBOX_CRASH_AFTER=N`` ends the process with ``os._exit(1)`` right
after the Nth outbox state transition was committed; ``CAREBOX_CRASH_BEFORE=N`` just before the
Nth one would be made. The account password comes from the store (the keyring is the "fail"
backend in this process). Prints the flush report's line when it gets that far.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from carebox.config import load_config
from carebox.services import outbox
from carebox.services.session import Session
from carebox.services.threads import policy_from_config
from carebox.store.crypto import Cipher
from carebox.store.outbox import OutboxStore
from carebox.store.store import Store


def install_crash_point(after: int, before: int) -> None:
    real = OutboxStore.transition
    done = 0

    def transition(self: OutboxStore, *args: object, **kwargs: object) -> bool:
        nonlocal done
        if before and done + 1 == before:
            os._exit(1)
        moved = real(self, *args, **kwargs)  # type: ignore[arg-type]
        if moved:
            done += 1
            if after and done == after:
                os._exit(1)
        return moved

    OutboxStore.transition = transition  # type: ignore[method-assign]


def main() -> int:
    store_dir, config_path = Path(sys.argv[1]), sys.argv[2]
    install_crash_point(
        int(os.environ.get("CAREBOX_CRASH_AFTER", "0")), int(os.environ.get("CAREBOX_CRASH_BEFORE", "0"))
    )
    config = load_config(config_path)
    store = Store.open(
        store_dir, Cipher(bytes.fromhex(os.environ["CAREBOX_TEST_KEY"])), professional=config.professional_address
    )
    try:
        session = Session(config=config, store=store, policy=policy_from_config(config.policy))
        report = asyncio.run(outbox.flush(session))
        print(report.line())
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
