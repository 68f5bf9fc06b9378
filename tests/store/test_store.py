import os
import sqlite3
import stat
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from carebox.domain.deadlines import Policy
from carebox.domain.models import Attachment, ThreadState
from carebox.services.threads import rethread
from carebox.store import tables  # noqa: F401  (registers the tables)
from carebox.store.crypto import Cipher
from carebox.store.migrations import LATEST, SchemaTooNew
from carebox.store.store import DB_FILE, Store, StoreError
from tests.factories import DOC, DOCTOR, message, patient

MARKERS = [
    "MARKERSUBJECT7731",
    "MARKERBODY5512",
    "markername9931",
    "markeraddr4401@mail.example",
    "MARKERMSGID8812",
    "MARKERATTACH3301",
    "MARKERFILE2209",
]


def open_store(path: Path, key: bytes | None = None) -> Store:
    return Store.open(path, Cipher(key or b"k" * 32), professional=DOCTOR, create=True)


def test_no_marker_reaches_any_file(tmp_path: Path) -> None:
    """Patient data is sealed: none of the markers is readable in the database, its WAL or SHM,
    or any other file the store wrote."""
    d = tmp_path / "store"
    store = open_store(d)
    from carebox.domain.models import Address

    sender = Address("markername9931 Person", "markeraddr4401@mail.example")
    msg = message(
        "MARKERMSGID8812@mail.example",
        sender=sender,
        to=DOC,
        subject="Lab MARKERSUBJECT7731",
        body="My result MARKERBODY5512 is in",
    )
    parsed = msg.parsed.__class__(
        **{
            **{f: getattr(msg.parsed, f) for f in msg.parsed.__slots__},
            "attachments": (Attachment("MARKERFILE2209.pdf", "application/pdf", 16, b"MARKERATTACH3301"),),
        }
    )
    store.add_messages("INBOX", [msg.__class__(raw=msg.raw, parsed=parsed, uid=1)])
    rethread(store, Policy())
    assert store.message_count() == 1
    # Read back while open: the values are there, decrypted.
    (tid,) = store.all_thread_ids()
    (row,) = store.thread_rows([tid])
    assert row.subject == "Lab MARKERSUBJECT7731"
    assert row.patient_addr == "markeraddr4401@mail.example"
    # Scan while open (WAL and SHM exist now) and after closing.
    for phase in ("open", "closed"):
        files = [p for p in d.rglob("*") if p.is_file()]
        assert any(p.name == DB_FILE for p in files)
        if phase == "open":
            assert any(p.name.endswith("-wal") for p in files)
        for p in files:
            data = p.read_bytes()
            for marker in MARKERS:
                for form in (marker.encode(), marker.encode("utf-16-le"), marker.lower().encode()):
                    assert form not in data, f"{marker} found in {p.name} ({phase})"
        store.close()


def test_files_are_private(tmp_path: Path) -> None:
    d = tmp_path / "store"
    store = open_store(d)
    store.add_messages("INBOX", [message("a@x", sender=patient(1), to=DOC, uid=1)])
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for p in d.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p.name
    store.close()


def test_schema_matches_the_table_definitions(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    store.close()
    con = sqlite3.connect(tmp_path / "s" / DB_FILE)
    for table in SQLModel.metadata.sorted_tables:
        cols = {r[1] for r in con.execute(f"PRAGMA table_info({table.name})")}
        assert cols == {c.name for c in table.columns}, table.name
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(LATEST)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    store.add_messages("INBOX", [message("a@x", sender=patient(1), to=DOC, uid=1)])
    store.close()
    again = open_store(tmp_path / "s")
    assert again.message_count() == 1
    assert again.schema_version() == LATEST
    again.close()


def test_a_newer_schema_is_refused_not_dropped(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    store.set_meta("schema_version", str(LATEST + 1))
    store.close()
    with pytest.raises(SchemaTooNew, match="newer carebox"):
        open_store(tmp_path / "s")


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store"):
        Store.open(tmp_path / "nothing", Cipher(os.urandom(32)))
    assert not (tmp_path / "nothing").exists()


def test_duplicates_are_skipped(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    m = message("a@x", sender=patient(1), to=DOC, uid=7)
    assert len(store.add_messages("INBOX", [m]).added) == 1
    r = store.add_messages("INBOX", [m, m])
    assert r.added == [] and r.duplicates == 2
    imported = message("b@x", sender=patient(1), to=DOC)
    assert len(store.add_messages("Imported", [imported, imported]).added) == 1
    assert store.add_messages("Imported", [imported]).duplicates == 1
    assert store.message_count() == 2
    store.close()


def test_threads_and_deadlines_from_the_store(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    p1, p2 = patient(1), patient(2)
    policy = Policy(response_hours=48)
    # A child arrives before its parent; a second patient writes separately.
    store.add_messages(
        "INBOX",
        [
            message(
                "q2@x",
                sender=p1,
                to=DOC,
                subject="Re: Labs",
                hours=5,
                in_reply_to="a1@x",
                references=("q1@x", "a1@x"),
                uid=3,
            ),
            message("other@x", sender=p2, to=DOC, subject="Refill", hours=1, uid=4),
        ],
    )
    rethread(store, policy)
    assert len(store.all_thread_ids()) == 2
    store.add_messages(
        "INBOX",
        [
            message("q1@x", sender=p1, to=DOC, subject="Labs", hours=0, uid=1),
            message(
                "a1@x", sender=DOC, to=p1, subject="Re: Labs", hours=2, in_reply_to="q1@x", references=("q1@x",), uid=2
            ),
        ],
    )
    rethread(store, policy)
    ids = store.all_thread_ids()
    assert len(ids) == 2
    rows = {r.patient_addr: r for r in store.thread_rows(ids)}
    labs = rows[p1.addr]
    assert labs.message_count == 3
    assert labs.state is ThreadState.WAITING
    # Waiting since the patient's message after the doctor's answer (hour 5), due 48 h later.
    from datetime import timedelta

    from tests.factories import BASE

    assert labs.waiting_since == BASE + timedelta(hours=5)
    assert labs.due_at == BASE + timedelta(hours=53)
    assert labs.subject == "Labs"
    assert rows[p2.addr].message_count == 1
    store.close()


def test_server_copy_claims_the_local_copy_of_a_sent_reply(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    local = message("reply1@practice.example", sender=DOC, to=patient(1), subject="Re: Labs")
    assert len(store.add_messages("Sent", [local]).added) == 1
    server_copy = message(
        "reply1@practice.example", sender=DOC, to=patient(1), subject="Re: Labs", uid=41, flags=frozenset({"\\Seen"})
    )
    result = store.add_messages("Sent", [server_copy])
    assert result.added == [] and result.duplicates == 1
    assert store.message_count("Sent") == 1
    (folder_msg,) = [m for m in store.folders() if m.name == "Sent"]
    assert folder_msg is not None
    # The row now carries the server's UID: a later sync of the same UID adds nothing.
    assert store.add_messages("Sent", [server_copy]).duplicates == 1
    assert store.message_count() == 1
    store.close()


def test_connections_keep_temporary_data_in_memory_and_wipe_deleted_rows(tmp_path: Path) -> None:
    from sqlalchemy import text

    store = open_store(tmp_path / "s")
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA temp_store")).scalar() == 2  # MEMORY: no temp files
        assert conn.execute(text("PRAGMA secure_delete")).scalar() == 1
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    store.close()


def test_new_stores_use_16k_pages_and_existing_ones_keep_theirs(tmp_path: Path) -> None:
    from carebox.store.store import PAGE_SIZE

    def page_size(d: Path) -> int:
        conn = sqlite3.connect(d / DB_FILE)
        try:
            return int(conn.execute("PRAGMA page_size").fetchone()[0])
        finally:
            conn.close()

    open_store(tmp_path / "new").close()
    assert page_size(tmp_path / "new") == PAGE_SIZE == 16384

    old = tmp_path / "old"
    old.mkdir()
    conn = sqlite3.connect(old / DB_FILE)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE early (x)")
    conn.close()
    store = open_store(old)
    try:
        store.add_messages("INBOX", [message("a@x", sender=DOC, to=DOC, body="kept")])
        assert store.message_count() == 1
    finally:
        store.close()
    assert page_size(old) == 4096


def test_threaded_refs_after_reads_what_refs_read(tmp_path: Path) -> None:
    import dataclasses
    from datetime import UTC, datetime, timedelta, timezone

    from carebox.store import tables as T

    store = open_store(tmp_path / "s")
    try:
        before = [message("b@x", sender=patient(1), to=DOC, uid=1)]
        store.add_messages("INBOX", [dataclasses.replace(m, thread_id="t0") for m in before])
        mark = store.last_message_rowid()
        later = [
            message("c@x", sender=patient(2), to=DOC, subject="Re: x", uid=2),
            message("d@x", sender=DOC, to=patient(2), in_reply_to="c@x", references=("a@x", "c@x"), uid=3),
            message("e@x", sender=patient(3), to=DOC, uid=4),
        ]
        odd = dataclasses.replace(
            later[1].parsed, date=datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-5)))
        )
        later[1] = dataclasses.replace(later[1], parsed=odd)
        store.add_messages("INBOX", [dataclasses.replace(m, thread_id=f"t{m.uid}") for m in later[:2]] + later[2:])
        refs, current = store.threaded_refs_after(mark)
        assert sorted(current.values()) == ["t2", "t3"]  # after the mark, with a thread id
        typed = {r.key: r for r in store._refs(T.Message.id.in_(list(current)))}  # type: ignore[attr-defined]
        assert {r.key: r for r in refs} == typed
        assert {r.date for r in refs} == {
            datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
            datetime(2026, 3, 1, 17, 30, 15, 123456, tzinfo=UTC),
        }
        assert any(len(r.parents) == 2 for r in refs) and any(r.outgoing for r in refs)
    finally:
        store.close()


def _row_values(store: Store, folder: str) -> list[tuple]:
    """Every column of the folder's messages with the sealed ones opened, their attachments and
    parent tokens: what the store holds for them apart from row ids and the time added."""
    import json as _json

    conn = sqlite3.connect(store.directory / DB_FILE)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT m.* FROM message m JOIN folder f ON f.id = m.folder_id WHERE f.name = ? ORDER BY m.uid", (folder,)
        ).fetchall()
        out = []
        for r in rows:
            mid, cols = r["id"], r.keys()
            clear = tuple((k, r[k]) for k in cols if not k.endswith("_enc") and k not in ("id", "folder_id", "added"))
            opened = tuple(
                (k, store.open_bytes("message", k.removesuffix("_enc"), mid, r[k])) for k in cols if k.endswith("_enc")
            )
            parents = conn.execute(
                "SELECT position, token FROM message_parent WHERE message_id = ? ORDER BY position", (mid,)
            ).fetchall()
            atts = [
                (a["position"], a["size"], _json.loads(store.open_text("attachment", "info", a["id"], a["info_enc"])),
                 store.open_bytes("attachment", "data", a["id"], a["data_enc"]))
                for a in conn.execute("SELECT * FROM attachment WHERE message_id = ? ORDER BY position", (mid,))
            ]  # fmt: skip
            out.append((clear, opened, [tuple(p) for p in parents], atts))
        return out
    finally:
        conn.close()


def test_rows_sealed_beforehand_are_the_rows_the_store_seals(tmp_path: Path) -> None:
    """A sync's workers seal rows with the store's sealing keys (never its data key); added that
    way, a message is stored exactly as when the store seals it (clear columns, opened values,
    parents, attachments), and a locked store takes neither."""
    import dataclasses
    from datetime import UTC, datetime

    from carebox.store.crypto import Locked
    from carebox.store.sealing import seal_message
    from carebox.store.store import NewMessage

    store = open_store(tmp_path / "s")
    items = [
        message("m1@x", sender=patient(1), to=DOC, body="first"),
        message("m2@x", sender=DOC, to=patient(1), body="answer", in_reply_to="m1@x", references=("m0@x", "m1@x")),
        message("m3@x", sender=patient(2), to=DOC, subject="Re: results", body="with a file"),
        message("m4@x", sender=patient(3), to=DOC, body="no date"),
    ]
    with_file = dataclasses.replace(
        items[2].parsed, attachments=(Attachment("r.pdf", "application/pdf", 5, b"%PDF1"),), malformed=True, problem="p"
    )
    items[2] = dataclasses.replace(items[2], parsed=with_file)
    items[3] = dataclasses.replace(items[3], parsed=dataclasses.replace(items[3].parsed, date=None))
    items = [
        dataclasses.replace(
            it, uid=i + 1, flags=frozenset({"\\Seen"}), internal_date=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        )
        for i, it in enumerate(items)
    ]
    plain = store.add_messages("A", items)
    assert store.cipher.sealing_keys() != (store.cipher.data_key(),) * 2
    worker = Cipher.for_sealing(store.cipher.sealing_keys())
    sealed = [
        dataclasses.replace(it, sealed=seal_message(worker, DOCTOR, it.raw, it.parsed, it.internal_date))
        for it in items
    ]
    early = store.add_messages("B", sealed)
    assert [p[0] for p in early.placed] == [0, 1, 2, 3] and early.malformed == plain.malformed == 1
    assert [p[2] for p in early.placed] == [p[2] for p in plain.placed]
    a, b = _row_values(store, "A"), _row_values(store, "B")
    assert len(a) == 4 and a == b
    assert store.add_messages("B", sealed).duplicates == 4  # the same dedup
    store.cipher.forget()
    with pytest.raises(Locked):
        store.add_messages("C", [NewMessage(raw=items[0].raw, parsed=items[0].parsed, uid=9, sealed=sealed[0].sealed)])


def test_write_threads_writes_what_the_typed_upsert_wrote(tmp_path: Path) -> None:
    """write_threads goes straight to the driver: the same rows as SQLAlchemy's upsert (new rows
    with the columns' defaults, existing rows with only the given columns replaced, datetimes as
    its text)."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    from carebox.store import tables as T
    from carebox.store.sealing import db_time

    def typed(store: Store, rows: list[dict]) -> None:  # the former implementation
        with store.engine.begin() as conn:
            for row in rows:
                tid = row["id"]
                values = {k: v for k, v in row.items() if k not in ("patient_name", "patient_addr", "subject")}
                for k in ("waiting_since", "due_at", "last_date", "tagged_at"):
                    if k in values:
                        values[k] = db_time(values[k])
                values["patient_name_enc"] = store.seal("thread", "patient_name", tid, row["patient_name"])
                values["patient_addr_enc"] = store.seal("thread", "patient_addr", tid, row["patient_addr"])
                values["subject_enc"] = store.seal("thread", "subject", tid, row["subject"])
                stmt = sqlite_insert(T.Thread)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["id"], set_={k: stmt.excluded[k] for k in values if k != "id"}
                )
                conn.execute(stmt, [values])

    t0 = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    head = {"patient_name": "Anna", "patient_addr": "anna@x", "subject": "Hi"}
    first = [
        {"id": "t1", "state": "waiting", "waiting_since": t0, "due_at": t0 + timedelta(hours=48), "last_date": t0,
         "message_count": 2, "unread": 1, "counterpart_token": "c1", "tag": None, "category": None,
         "tagged_at": None, "urgent": True, "sender_status": "verified", "suggested_tag": None, **head},
        {"id": "t2", "last_date": t0, **head},  # only what it must have: the rest from the defaults
        {"id": "t3", "state": "answered", "last_date": t0 - timedelta(days=400), "tag": "billing",
         "tagged_at": t0, "urgent": False, **head},
    ]  # fmt: skip
    again = [
        {"id": "t1", "state": "answered", "waiting_since": None, "due_at": None, "last_date": t0, **head},
        {"id": "t3", "unread": 5, "suggested_tag": "redirect:phone", "last_date": t0, **head},
        {"id": "t4", "last_date": t0, "category": "results", **head},
    ]
    stores = [open_store(tmp_path / "driver"), open_store(tmp_path / "typed")]
    for rows in (first, again):
        stores[0].write_threads(rows)
        typed(stores[1], rows)
    dumps = []
    for store in stores:
        conn = sqlite3.connect(store.directory / DB_FILE)
        try:
            got = []
            for r in conn.execute("SELECT * FROM thread ORDER BY id").fetchall():
                cols = [d[0] for d in conn.execute("SELECT * FROM thread LIMIT 0").description]
                row = dict(zip(cols, r, strict=True))
                for k in ("patient_name", "patient_addr", "subject"):
                    row[k] = store.open_text("thread", k, row["id"], row.pop(f"{k}_enc"))
                got.append(row)
            dumps.append(got)
        finally:
            conn.close()
    assert len(dumps[0]) == 4 and dumps[0] == dumps[1]
    assert dumps[0][1]["state"] == "waiting" and dumps[0][2]["tag"] == "billing" and dumps[0][2]["unread"] == 5

    # thread_facts reads them back (plain SQL) as the typed select did
    from sqlalchemy import select

    from carebox.store.sealing import utc
    from carebox.store.store import ThreadFacts

    with stores[1].engine.connect() as conn:
        typed_facts = {
            r[0]: ThreadFacts(r[0], r[1], r[2], utc(r[3]), bool(r[4]), r[5], r[6])
            for r in conn.execute(
                select(
                    T.Thread.id, T.Thread.tag, T.Thread.category, T.Thread.tagged_at, T.Thread.urgent,
                    T.Thread.sender_status, T.Thread.suggested_tag,
                )
            )
        }  # fmt: skip
    assert stores[0].thread_facts(["t1", "t2", "t3", "t4", "t5"]) == typed_facts
    assert typed_facts["t3"].tagged_at == t0 and typed_facts["t1"].urgent
