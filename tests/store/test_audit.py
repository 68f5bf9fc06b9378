"""The audit trail: appended with a chained MAC; verify catches every kind of tampering."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from carebox.store import audit
from carebox.store.crypto import Cipher
from carebox.store.store import DB_FILE, Store
from tests.factories import DOCTOR

T0 = datetime(2026, 11, 2, 9, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "store", Cipher(b"a" * 32), professional=DOCTOR, create=True)
    for i, (action, ref) in enumerate(
        [("unlock", ""), ("view", "t1"), ("reply", "t1,o1"), ("tag", "t2"), ("export", "t3"), ("lock", "")]
    ):
        audit.append(s, action, ref, T0 + timedelta(minutes=i))
    yield s
    s.close()


def sql(store: Store, statement: str, *args: object) -> None:
    conn = sqlite3.connect(store.directory / DB_FILE)
    with conn:
        conn.execute(statement, args)
    conn.close()


def test_append_and_read_back(store: Store) -> None:
    rows = audit.entries(store)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r.action for r in rows] == ["unlock", "view", "reply", "tag", "export", "lock"]
    assert rows[0].at == T0  # microseconds and UTC survive the round trip
    assert audit.head(store) == (6, rows[-1].mac)
    check = audit.verify(store)
    assert check.ok and check.count == 6 and check.problems == ()
    assert "intact" in check.line()
    assert [r.seq for r in audit.entries(store, limit=2, newest_first=True)] == [6, 5]


def test_empty_trail_verifies(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "s", Cipher(b"b" * 32), create=True)
    assert audit.verify(s).ok and audit.verify(s).count == 0
    s.close()


def test_edited_action_ref_or_time_is_detected(store: Store) -> None:
    sql(store, "UPDATE audit SET ref='t9' WHERE seq=2")
    check = audit.verify(store)
    assert not check.ok
    assert any("entry 2 fails its MAC" in p for p in check.problems)


@pytest.mark.parametrize(
    ("column", "value"),
    [("action", "view"), ("at", "2026-11-02 09:03:00.000000"), ("mac", "0" * 64)],
)
def test_each_column_is_covered(store: Store, column: str, value: str) -> None:
    sql(store, f"UPDATE audit SET {column}=? WHERE seq=4", value)  # noqa: S608
    check = audit.verify(store)
    assert not check.ok and any("entry 4" in p or "entry 5" in p for p in check.problems)


def test_removed_entry_is_detected(store: Store) -> None:
    sql(store, "DELETE FROM audit WHERE seq=3")
    problems = audit.verify(store).problems
    assert "entry 3 missing (removed)" in problems
    assert any("entry 4 fails its MAC" in p for p in problems)


def test_reordered_entries_are_detected(store: Store) -> None:
    conn = sqlite3.connect(store.directory / DB_FILE)
    with conn:
        a = conn.execute("SELECT at, action, ref, mac FROM audit WHERE seq=2").fetchone()
        b = conn.execute("SELECT at, action, ref, mac FROM audit WHERE seq=3").fetchone()
        conn.execute("UPDATE audit SET at=?, action=?, ref=?, mac=? WHERE seq=2", b)
        conn.execute("UPDATE audit SET at=?, action=?, ref=?, mac=? WHERE seq=3", a)
    conn.close()
    problems = audit.verify(store).problems
    assert any("entry 2" in p for p in problems) and any("entry 3" in p for p in problems)


def test_renumbered_entry_is_detected(store: Store) -> None:
    sql(store, "DELETE FROM audit WHERE seq=6")
    sql(store, "UPDATE audit SET seq=6 WHERE seq=5")
    assert not audit.verify(store).ok


def test_truncated_tail_is_detected_through_the_head(store: Store) -> None:
    sql(store, "DELETE FROM audit WHERE seq >= 5")
    check = audit.verify(store)
    assert not check.ok
    assert check.problems == ("entries after 4 up to 6 missing (removed from the end)",)


def test_emptied_trail_and_missing_head_are_detected(store: Store) -> None:
    sql(store, "DELETE FROM audit")
    assert audit.verify(store).problems == ("all 6 entries missing (the trail was emptied)",)


def test_missing_head_is_detected(store: Store) -> None:
    sql(store, "DELETE FROM meta WHERE key='audit_head'")
    assert any("head is missing" in p for p in audit.verify(store).problems)


def test_chain_continues_after_reopen_and_other_key_fails(store: Store) -> None:
    directory = store.directory
    store.close()
    again = Store.open(directory, Cipher(b"a" * 32), create=True)
    audit.append(again, "unlock", "", T0 + timedelta(hours=1))
    assert audit.verify(again).ok and audit.verify(again).count == 7
    again.close()
    other = Store.open(directory, Cipher(b"z" * 32), create=True)
    check = audit.verify(other)  # a MAC needs the store's key: a different key fails every entry
    assert not check.ok and len(check.problems) == 7
    other.close()
