"""The inbox's first page, read through the sqlite3 driver before the ORM is imported.

``carebox open`` paints this page while SQLAlchemy and SQLModel (about half a second of imports)
have not loaded yet; the app opens the full ``Store`` right after that first frame. The SQL and
the row building are the ones ``Store`` uses (``store.rows``). Anything unusual (no database, a
schema to upgrade, deadlines to recompute, a key that does not open the values, a busy file)
returns None: the caller then opens the store the usual way, which reports or fixes it.

Nothing is written: the connection is ``query_only``, and nothing leaves memory decrypted.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from carebox.store.crypto import Cipher
from carebox.store.migrations import LATEST
from carebox.store.rows import DB_FILE, ThreadRow, read_due_page, read_thread_rows


@dataclass(frozen=True)
class FirstPage:
    """The Due view's first rows, decrypted, and how many threads it holds in all."""

    rows: list[ThreadRow]
    total: int


def first_page(
    directory: Path, cipher: Cipher, limit: int, expect_meta: Mapping[str, str] | None = None
) -> FirstPage | None:
    """The first ``limit`` rows of the Due view, or None when the usual open must come first.

    ``expect_meta``: meta values that must hold for the stored order to be current (the
    policy's fingerprint: deadlines computed under another policy are recomputed on open)."""
    db_path = directory.expanduser() / DB_FILE
    if not db_path.is_file():
        return None
    old_umask = os.umask(0o077)  # a -wal or -shm file made here is the user's only
    try:
        conn = sqlite3.connect(f"{db_path.as_uri()}?mode=rw", uri=True, timeout=0.5)
    except sqlite3.Error:
        return None
    finally:
        os.umask(old_umask)
    try:
        conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA temp_store=MEMORY")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema_version") != str(LATEST):
            return None
        for key, value in (expect_meta or {}).items():
            if meta.get(key) != value:
                return None
        ids, total = read_due_page(conn.execute, 0, limit)

        def open_text(table: str, column: str, row: str, blob: bytes) -> str:
            return cipher.open_text(blob, f"{table}:{column}:{row}")

        rows = read_thread_rows(conn.execute, ids, open_text)
        return FirstPage(rows, total)
    except Exception:
        return None
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
