"""store.peek: the inbox's first page through the sqlite3 driver (before the ORM is imported) is
the page the store itself gives, and anything unusual hands over to the usual open."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from carebox.services import inbox
from carebox.services.policy import POLICY_META, policy_fingerprint
from carebox.services.threads import ensure_policy
from carebox.store import peek
from carebox.store import store as store_module
from carebox.store.crypto import Cipher
from tests.ui.helpers import NOW, many, practice


def _fingerprint(session) -> dict[str, str]:
    """The policy meta as every opened store has it (``open_session`` computes it)."""
    ensure_policy(session.store, session.policy)
    return {POLICY_META: policy_fingerprint(session.policy)}


@pytest.mark.parametrize("limit", [1, 3, 200])
def test_the_first_page_equals_the_stores_own(tmp_path: Path, limit: int) -> None:
    session = practice(tmp_path / "store", hostile=True)
    try:
        expected = inbox.page(session.store, NOW, "due", 0, limit)
        page = peek.first_page(tmp_path / "store", session.store.cipher, limit, _fingerprint(session))
    finally:
        session.close()
    assert page is not None
    assert page.total == expected.total and page.total > 3
    assert page.rows == expected.rows  # every column, decrypted the same (hostile text too)
    assert len(page.rows) == min(limit, expected.total)


def test_a_long_page_reads_in_chunks_in_order(tmp_path: Path, monkeypatch) -> None:
    from carebox.store import rows

    monkeypatch.setattr(rows, "MAX_VARIABLES", 7)  # several IN (...) queries for one page
    session = many(tmp_path / "store", 30)
    try:
        expected = inbox.page(session.store, NOW, "due", 0, 200)
        page = peek.first_page(tmp_path / "store", session.store.cipher, 200, _fingerprint(session))
    finally:
        session.close()
    assert page is not None and [r.id for r in page.rows] == [r.id for r in expected.rows]
    assert len(page.rows) == 30


def test_it_writes_nothing_readable(tmp_path: Path) -> None:
    session = practice(tmp_path / "store")
    cipher, expect = session.store.cipher, _fingerprint(session)
    session.close()
    db = tmp_path / "store" / store_module.DB_FILE
    before = db.read_bytes()
    assert peek.first_page(tmp_path / "store", cipher, 200, expect) is not None
    assert db.read_bytes() == before
    for path in (tmp_path / "store").iterdir():  # -wal / -shm made by the reader: the user's only
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path.name
    assert peek.DB_FILE == store_module.DB_FILE


def test_anything_unusual_leaves_it_to_the_usual_open(tmp_path: Path) -> None:
    session = practice(tmp_path / "store")
    store, cipher, expect = session.store, session.store.cipher, _fingerprint(session)
    d = tmp_path / "store"
    try:
        assert peek.first_page(d, cipher, 10, expect) is not None
        assert peek.first_page(tmp_path / "nowhere", cipher, 10, expect) is None  # no store
        assert peek.first_page(d, Cipher(bytes(32)), 10, expect) is None  # a key that does not open it
        assert peek.first_page(d, cipher, 10, {POLICY_META: "another policy"}) is None  # deadlines to redo
        store.set_meta("schema_version", "0")  # a schema to upgrade
        assert peek.first_page(d, cipher, 10, expect) is None
    finally:
        store.set_meta("schema_version", str(peek.LATEST))
        session.close()
