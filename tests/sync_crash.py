"""One ``sync_once`` in a child process that dies right after its Nth store commit (for the kill tests).

    python tests/sync_crash.py CONFIG STORE_DIR KEY_HEX

Environment:
    CAREBOX_SYNC_CRASH_AFTER=N   ``os._exit(1)`` right after the Nth committed transaction (0 or unset: never)
    CAREBOX_SYNC_BATCH=n         messages per FETCH/commit batch (default: carebox's own)

The store key is given directly (no keychain, no scrypt) and the account password is the one
sealed in the store. A commit is counted when SQLite's COMMIT has returned: the process dies with
that transaction on disk and the next one not begun, the worst moment for "data before state".
Prints ``commits=N`` and the report line when it finishes without crashing.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from carebox.config import load_config  # noqa: E402
from carebox.services import sync  # noqa: E402
from carebox.services.session import Session  # noqa: E402
from carebox.services.threads import policy_from_config  # noqa: E402
from carebox.store.crypto import Cipher  # noqa: E402
from carebox.store.store import Store  # noqa: E402

DOCTOR = "doctor@practice.example"


def main() -> int:
    config_path, store_dir, key_hex = sys.argv[1:4]
    crash_after = int(os.environ.get("CAREBOX_SYNC_CRASH_AFTER", "0") or 0)
    if os.environ.get("CAREBOX_SYNC_BATCH"):
        sync.BATCH = int(os.environ["CAREBOX_SYNC_BATCH"])
    config = load_config(Path(config_path))
    store = Store.open(Path(store_dir), Cipher(bytes.fromhex(key_hex)), professional=DOCTOR, create=True)
    commits = 0
    dialect = store.engine.dialect
    real_commit = dialect.do_commit

    def counting_commit(dbapi_connection: object) -> None:
        nonlocal commits
        real_commit(dbapi_connection)
        commits += 1
        if crash_after and commits == crash_after:
            os._exit(1)  # no cleanup, no flush: like a kill -9 right after the commit

    dialect.do_commit = counting_commit  # type: ignore[method-assign]
    session = Session(config=config, store=store, policy=policy_from_config(config.policy))
    report = asyncio.run(sync.sync_once(session))
    store.close()
    print(f"commits={commits}")
    print(report.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
