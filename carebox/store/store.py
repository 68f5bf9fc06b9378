"""The encrypted store: the only code that opens the database.

Values that identify a patient or hold content are sealed per value (see crypto.py) with
associated data ``table:column:row``. Clear columns hold ids, UIDs, flags, timestamps,
deadlines, tag names and keyed tokens only.

All datetimes are stored as UTC (SQLModel's column type); callers always see aware UTC.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, insert, select, text, update
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from carebox.domain.models import Address, MessageRef, ParsedMessage
from carebox.store import sealing as _sealing
from carebox.store import tables as T
from carebox.store.crypto import Cipher, Locked
from carebox.store.migrations import migrate
from carebox.store.rows import DB_FILE, StoredMessage, StoreError, ThreadRow, read_due_page, read_thread_rows
from carebox.store.sealing import SealedMessage, db_time, seal_message, utc

# re-exported (callers import them from here)
new_id = _sealing.new_id
parent_ids = _sealing.parent_ids
_content_key = _sealing.content_key
_driver_value = _sealing.driver_value
_stored_time = _sealing.stored_time

PAGE_SIZE = 16384  # for new stores


@dataclass(frozen=True, slots=True)
class NewMessage:
    raw: bytes
    parsed: ParsedMessage
    uid: int | None = None
    flags: frozenset[str] = frozenset()
    internal_date: datetime | None = None
    source: str = ""
    modseq: int | None = None
    thread_id: str | None = None  # a provisional thread (sync: see services.threads.ProvisionalThreads)
    sealed: SealedMessage | None = None  # its row values sealed beforehand (sealing.seal_message, this store's keys)


@dataclass(frozen=True, slots=True)
class AddResult:
    added: list[str]
    duplicates: int = 0
    malformed: int = 0
    # (position in the items, new row id, its date as stored and read back) of each added message
    placed: tuple[tuple[int, str, datetime | None], ...] = ()
    # the MessageRef each added row reads back as (what Store._refs gives), as the values of its
    # fields in order (``MessageRef(*values)``; a plain tuple is cheaper to make and to hold), in
    # the order of ``placed``; None for a date that does not read back
    refs: tuple[tuple[Any, ...] | None, ...] = ()
    # the SQLite rowid of the first added row: the rows of ``placed`` have consecutive rowids from
    # it (None when none were added, or the rowids were not consecutive)
    first_rowid: int | None = None


@dataclass(frozen=True, slots=True)
class ThreadFacts:
    """What the threading/summary service needs of one thread row (clear columns)."""

    id: str
    tag: str | None
    category: str | None
    tagged_at: datetime | None = None
    urgent: bool = False
    sender_status: str = ""
    suggested_tag: str | None = None


def _addrs(data: Any) -> tuple[Address, ...]:
    return tuple(Address(str(n), str(a)) for n, a in (data or []))


class Store:
    """An open, unlocked store. Create with ``Store.open``; close when done."""

    def __init__(self, directory: Path, engine: Engine, cipher: Cipher, professional: str) -> None:
        self.directory = directory
        self.engine = engine
        self.cipher = cipher
        self.professional = professional.lower()
        self._folder_ids: dict[str, int] = {}

    # --- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, cipher: Cipher, *, professional: str = "", create: bool = False) -> Store:
        directory = directory.expanduser()
        db_path = directory / DB_FILE
        if not db_path.exists() and not create:
            raise StoreError(f"no store at {directory}: run `carebox import` or `carebox sync` first")
        old_umask = os.umask(0o077)
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(directory, 0o700)
            engine = create_engine(f"sqlite:///{db_path}", connect_args={"timeout": 30})

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                # A new database only (an existing one keeps its page size): mail blobs of 2-50 KB
                # span fewer overflow pages and WAL frames (adding 10,000 messages: 15-25% faster)
                cur.execute(f"PRAGMA page_size={PAGE_SIZE}")
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA secure_delete=ON")
                cur.execute("PRAGMA temp_store=MEMORY")  # no sort or index temp files on disk
                cur.close()

            try:
                with engine.begin() as conn:
                    migrate(conn)
            except OperationalError as exc:
                engine.dispose()
                raise StoreError(f"cannot open the store database {db_path}: {exc.orig}") from None
        finally:
            os.umask(old_umask)
        store = cls(directory, engine, cipher, professional)
        store.fix_permissions()
        return store

    def fix_permissions(self) -> None:
        with contextlib.suppress(OSError):
            os.chmod(self.directory, 0o700)
        for entry in self.directory.iterdir():
            with contextlib.suppress(OSError):
                if entry.is_file() and stat.S_IMODE(entry.stat().st_mode) & 0o077:
                    os.chmod(entry, 0o600)

    def close(self) -> None:
        with contextlib.suppress(Exception), self.engine.begin() as conn:
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def session(self) -> Session:
        return Session(self.engine)

    # --- sealing helpers -------------------------------------------------------------------------

    def seal(self, table: str, column: str, row: str, value: str | bytes) -> bytes:
        return self.cipher.seal(value, f"{table}:{column}:{row}")

    def open_text(self, table: str, column: str, row: str, blob: bytes) -> str:
        return self.cipher.open_text(blob, f"{table}:{column}:{row}")

    def open_bytes(self, table: str, column: str, row: str, blob: bytes) -> bytes:
        return self.cipher.open_bytes(blob, f"{table}:{column}:{row}")

    def token(self, kind: str, value: str) -> str:
        return self.cipher.token(kind, value)

    # --- meta ------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(T.Meta.value).where(T.Meta.key == key)).first()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO meta (key, value) VALUES (:k, :v) ON CONFLICT(key) DO UPDATE SET value=excluded.value"
                ),
                {"k": key, "v": value},
            )

    def schema_version(self) -> int:
        return int(self.get_meta("schema_version") or 0)

    # --- secrets (account password fallback where there is no keychain) --------------------------

    def set_secret(self, name: str, value: str) -> None:
        blob = self.seal("secret", "value", name, value)
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO secret (name, value_enc) VALUES (:n, :v) "
                    "ON CONFLICT(name) DO UPDATE SET value_enc=excluded.value_enc"
                ),
                {"n": name, "v": blob},
            )

    def get_secret(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(T.Secret.value_enc).where(T.Secret.name == name)).first()
        return self.open_text("secret", "value", name, row[0]) if row else None

    # --- folders ---------------------------------------------------------------------------------

    def folder_id(self, name: str, role: str = "other") -> int:
        if name in self._folder_ids:
            return self._folder_ids[name]
        with self.engine.begin() as conn:
            row = conn.execute(select(T.Folder.id).where(T.Folder.name == name)).first()
            if row is None:
                conn.execute(insert(T.Folder).values(name=name, role=role))
                row = conn.execute(select(T.Folder.id).where(T.Folder.name == name)).first()
        assert row is not None
        self._folder_ids[name] = int(row[0])
        return self._folder_ids[name]

    def folder(self, name: str) -> T.Folder | None:
        with self.session() as s:
            return s.exec(select(T.Folder).where(T.Folder.name == name)).scalars().first()  # type: ignore[call-overload]

    def folders(self) -> list[T.Folder]:
        with self.session() as s:
            return list(s.exec(select(T.Folder).order_by(T.Folder.id)).scalars())  # type: ignore[call-overload]

    def update_folder(self, name: str, **values: Any) -> None:
        if "last_sync" in values:
            values["last_sync"] = db_time(values["last_sync"])
        fid = self.folder_id(name)
        with self.engine.begin() as conn:
            conn.execute(update(T.Folder).where(T.Folder.id == fid).values(**values))

    # --- messages --------------------------------------------------------------------------------

    def is_outgoing(self, parsed: ParsedMessage) -> bool:
        return _sealing.is_outgoing(parsed, self.professional)

    def counterpart(self, parsed: ParsedMessage, outgoing: bool) -> Address:
        """The patient side of a message: the sender if incoming, the first recipient if outgoing."""
        return _sealing.counterpart(parsed, outgoing)

    def add_messages(self, folder: str, items: Sequence[NewMessage], *, role: str = "other") -> AddResult:
        """Store a batch in one transaction. Duplicates (same folder and UID, or same folder and
        identical bytes for UID-less imports) are skipped, so a retried batch changes nothing.
        An item may come sealed beforehand (``NewMessage.sealed``, made with this store's keys):
        its values are written as they are, the same columns as sealing it here would give."""
        if not items:
            return AddResult([])
        if self.cipher.locked:
            raise Locked("the store is locked")
        fid = self.folder_id(folder, role)
        now = db_time(datetime.now(UTC))
        added: list[str] = []
        duplicates = 0
        malformed = 0
        added_at = _driver_value(now)
        rows: list[tuple[Any, ...]] = []
        parents: list[tuple[Any, ...]] = []
        attachments: list[tuple[Any, ...]] = []
        with self.engine.begin() as conn:
            uids = [it.uid for it in items if it.uid is not None]
            have_uids: set[int] = set()
            if uids:
                for chunk in _chunks(uids, 900):
                    have_uids.update(
                        r[0]
                        for r in conn.execute(
                            select(T.Message.uid).where(T.Message.folder_id == fid, T.Message.uid.in_(chunk))  # type: ignore[union-attr]
                        )
                    )
            ctokens = [
                it.sealed.content_token if it.sealed is not None else self.token("content", _content_key(it.raw))
                for it in items
            ]
            content_tokens = {tok: it for tok, it in zip(ctokens, items, strict=True) if it.uid is None}
            have_content: set[str] = set()
            # "+folder_id": SQLite would otherwise pick the folder index and read every row of the
            # folder for each batch (a first sync's batches got slower as the folder grew); the
            # token (or UID-is-NULL) index finds the few candidate rows directly.
            if content_tokens:
                for chunk in _chunks(list(content_tokens), 900):
                    have_content.update(
                        r[0]
                        for r in conn.exec_driver_sql(
                            "SELECT content_token FROM message WHERE +folder_id = ? "  # noqa: S608
                            f"AND content_token IN ({', '.join('?' * len(chunk))})",
                            (fid, *chunk),
                        )
                    )
            # A reply carebox sent is kept as a UID-less local copy in the Sent folder; when sync
            # brings the server's copy, it claims that row (sets its UID) instead of doubling it.
            local_copies: dict[str, str] = {}
            mtokens = [  # once per message
                it.sealed.msgid_token if it.sealed is not None else self.token("msgid", it.parsed.message_id)
                for it in items
            ]
            with_uid_tokens = [t for it, t in zip(items, mtokens, strict=True) if it.uid is not None]
            for chunk in _chunks([t for t in with_uid_tokens if t], 900):
                for mid, tok in conn.exec_driver_sql(
                    "SELECT id, msgid_token FROM message WHERE +folder_id = ? AND uid IS NULL "  # noqa: S608
                    f"AND msgid_token IN ({', '.join('?' * len(chunk))}) ORDER BY rowid",
                    (fid, *chunk),
                ):
                    local_copies.setdefault(tok, mid)
            seen_in_batch: set[object] = set()
            placed: list[tuple[int, str, datetime | None]] = []
            refs: list[tuple[Any, ...] | None] = []
            for pos_in_batch, (it, ctoken, mtoken) in enumerate(zip(items, ctokens, mtokens, strict=True)):
                if it.uid is not None and it.uid not in have_uids:
                    claimed = local_copies.pop(mtoken, None)
                    if claimed is not None:
                        conn.execute(
                            update(T.Message)
                            .where(T.Message.id == claimed)
                            .values(uid=it.uid, flags=" ".join(sorted(it.flags)), modseq=it.modseq)
                        )
                        duplicates += 1
                        continue
                dedup_key: object = ("uid", it.uid) if it.uid is not None else ("content", ctoken)
                if (
                    (it.uid is not None and it.uid in have_uids)
                    or (it.uid is None and ctoken in have_content)
                    or dedup_key in seen_in_batch
                ):
                    duplicates += 1
                    continue
                seen_in_batch.add(dedup_key)
                sm = it.sealed or seal_message(
                    self.cipher, self.professional, it.raw, it.parsed, it.internal_date,
                    content_token=ctoken, msgid_token=mtoken,
                )  # fmt: skip
                if sm.malformed:
                    malformed += 1
                rows.append(
                    (  # in the order of _MESSAGE_COLS
                        sm.id,
                        fid,
                        it.uid,
                        it.source,
                        sm.msgid_token,
                        sm.subject_token,
                        sm.counterpart_token,
                        sm.content_token,
                        sm.reply_prefix,
                        sm.date,
                        sm.internal_date,
                        sm.size,
                        " ".join(sorted(it.flags)),
                        it.modseq,
                        sm.outgoing,
                        sm.malformed,
                        False,
                        it.thread_id,
                        added_at,
                        *sm.sealed,
                    )
                )
                parents.extend(sm.parents)
                attachments.extend(sm.attachments)
                added.append(sm.id)
                placed.append((pos_in_batch, sm.id, sm.date_read_back))
                refs.append(
                    None
                    if sm.date_read_back is None
                    else (  # MessageRef's fields
                        sm.id,
                        sm.msgid_token,
                        tuple([t for _, _, t in sm.parents]),  # in position order
                        sm.subject_token,
                        sm.counterpart_token,
                        sm.date_read_back,
                        bool(sm.outgoing),
                        bool(sm.reply_prefix),
                    )
                )
            # Straight to the driver: the same columns and values (datetimes as SQLAlchemy's text)
            # as the typed inserts, without their per-row overhead.
            first_rowid: int | None = None
            if rows:
                last = "SELECT coalesce(max(rowid), 0) FROM message"
                before = int(conn.exec_driver_sql(last).scalar_one())
                conn.exec_driver_sql(_insert_sql("message", _MESSAGE_COLS), rows)
                if int(conn.exec_driver_sql(last).scalar_one()) - before == len(rows):
                    first_rowid = before + 1  # new rowids are all above the old largest one
            if parents:
                conn.exec_driver_sql(_insert_sql("message_parent", ("message_id", "position", "token")), parents)
            if attachments:
                conn.exec_driver_sql(
                    _insert_sql("attachment", ("id", "message_id", "position", "size", "info_enc", "data_enc")),
                    attachments,
                )
        return AddResult(added, duplicates, malformed, tuple(placed), tuple(refs), first_rowid)

    def message_count(self, folder: str | None = None) -> int:
        q = select(func.count()).select_from(T.Message)
        if folder is not None:
            q = q.where(T.Message.folder_id == self.folder_id(folder))
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    # --- threading inputs and outputs (used by services.threads) ---------------------------------

    _REF_COLS = (
        T.Message.id,
        T.Message.msgid_token,
        T.Message.subject_token,
        T.Message.counterpart_token,
        T.Message.date,
        T.Message.outgoing,
        T.Message.reply_prefix,
    )

    def _refs(self, where: Any) -> list[MessageRef]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(*self._REF_COLS).where(where)).all()
            keys = [r[0] for r in rows]
            parents: dict[str, list[tuple[int, str]]] = {}
            for chunk in _chunks(keys, 900):
                for mid, pos, tok in conn.execute(
                    select(T.MessageParent.message_id, T.MessageParent.position, T.MessageParent.token).where(
                        T.MessageParent.message_id.in_(chunk)  # type: ignore[attr-defined]
                    )
                ):
                    parents.setdefault(mid, []).append((pos, tok))
        return [_message_ref(r, parents, utc(r[4])) for r in rows]  # type: ignore[arg-type]

    def unthreaded_refs(self) -> list[MessageRef]:
        return self._refs(T.Message.thread_id.is_(None))  # type: ignore[union-attr]

    def last_message_rowid(self) -> int:
        """The SQLite rowid of the newest message row (0 when none): rows added later have larger ones."""
        with self.engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT coalesce(max(rowid), 0) FROM message").scalar_one())

    def threads_with_rows_upto(self, thread_ids: Iterable[str], rowid: int) -> set[str]:
        """Those of ``thread_ids`` that hold a message added at or before ``rowid``."""
        found: set[str] = set()
        with self.engine.connect() as conn:
            for chunk in _chunks(list(thread_ids), 900):
                marks = ", ".join("?" * len(chunk))
                found.update(
                    r[0]
                    for r in conn.exec_driver_sql(
                        f"SELECT DISTINCT thread_id FROM message WHERE thread_id IN ({marks}) AND rowid <= ?",  # noqa: S608
                        (*chunk, rowid),
                    )
                )
        return found

    def threaded_refs_after(
        self, rowid: int, known: Sequence[tuple[int, Sequence[MessageRef], Sequence[str]]] = ()
    ) -> tuple[list[MessageRef], dict[str, str]]:
        """Refs of the messages added after ``rowid`` that have a thread id, and those ids (what
        ``_refs`` reads, in two plain queries: a download's rows are many), in rowid order.

        ``known``: runs of consecutive rows the caller wrote and holds, as (rowid of the first,
        their refs, their thread ids), in rowid order: those are taken as given, only the rows
        around them are read."""
        refs: list[MessageRef] = []
        threads: dict[str, str] = {}
        lo = rowid
        with self.engine.connect() as conn:
            for first, run_refs, run_threads in [*known, (None, (), ())]:
                if first is not None and first <= lo:
                    continue  # not after the mark (or overlapping a run): read from the store instead
                # the rows in (lo, first) that no run holds
                span = "m.rowid > ?" if first is None else "m.rowid > ? AND m.rowid < ?"
                args = (lo,) if first is None else (lo, first)
                if first is None or first > lo + 1:
                    rows = conn.exec_driver_sql(
                        "SELECT m.id, m.msgid_token, m.subject_token, m.counterpart_token, m.date, m.outgoing, "  # noqa: S608
                        f"m.reply_prefix, m.thread_id FROM message m WHERE {span} AND m.thread_id IS NOT NULL",
                        args,
                    ).all()
                    parents: dict[str, list[tuple[int, str]]] = {}
                    if rows:
                        for mid, pos, tok in conn.exec_driver_sql(
                            "SELECT p.message_id, p.position, p.token FROM message_parent p "  # noqa: S608
                            f"JOIN message m ON m.id = p.message_id WHERE {span} AND m.thread_id IS NOT NULL",
                            args,
                        ):
                            parents.setdefault(mid, []).append((pos, tok))
                    for r in rows:
                        refs.append(_message_ref(r, parents, _stored_time(r[4])))
                        threads[r[0]] = r[7]
                if first is None:
                    break
                refs.extend(run_refs)
                threads.update(zip((r.key for r in run_refs), run_threads, strict=True))
                lo = first + len(run_refs) - 1
        return refs, threads

    def refs_of_threads(self, thread_ids: Iterable[str]) -> list[MessageRef]:
        out: list[MessageRef] = []
        for chunk in _chunks(list(thread_ids), 900):
            out.extend(self._refs(T.Message.thread_id.in_(chunk)))  # type: ignore[union-attr]
        return out

    def threads_linked_to(self, tokens: Iterable[str], *, upto: int | None = None) -> set[str]:
        """Thread ids of messages whose Message-ID token is in ``tokens`` or that name one of
        ``tokens`` as a parent; with ``upto``, of the messages added at or before that rowid only
        (the indexes hold the rowid: the later rows are not even read)."""
        found: set[str] = set()
        toks = [t for t in set(tokens) if t]
        if upto is not None and upto <= 0:
            return found
        cap, extra = ("", ()) if upto is None else (" AND m.rowid <= ?", (upto,))
        with self.engine.connect() as conn:  # plain SQL: a first sync asks about every token it stored
            for chunk in _chunks(toks, 900):
                marks = ", ".join("?" * len(chunk))
                found.update(
                    r[0]
                    for r in conn.exec_driver_sql(
                        f"SELECT m.thread_id FROM message m WHERE m.msgid_token IN ({marks}) "  # noqa: S608
                        f"AND m.thread_id IS NOT NULL{cap}",
                        (*chunk, *extra),
                    )
                )
                found.update(
                    r[0]
                    for r in conn.exec_driver_sql(
                        "SELECT m.thread_id FROM message m JOIN message_parent p ON p.message_id = m.id "  # noqa: S608
                        f"WHERE p.token IN ({marks}) AND m.thread_id IS NOT NULL{cap}",
                        (*chunk, *extra),
                    )
                )
        return found

    def threads_by_subject(self, pairs: Iterable[tuple[str, str]], *, upto: int | None = None) -> set[str]:
        """Thread ids holding a message with this (subject token, counterpart token); with
        ``upto``, a message added at or before that rowid."""
        found: set[str] = set()
        if upto is not None and upto <= 0:
            return found
        with self.engine.connect() as conn:
            for subject_token, counterpart in set(pairs):
                if not subject_token or not counterpart:
                    continue
                q = select(T.Message.thread_id).where(
                    T.Message.subject_token == subject_token,
                    T.Message.counterpart_token == counterpart,
                    T.Message.thread_id.is_not(None),  # type: ignore[union-attr]
                )
                if upto is not None:
                    q = q.where(text("message.rowid <= :upto").bindparams(upto=upto))
                found.update(r[0] for r in conn.execute(q))
        return found

    def thread_facts(self, thread_ids: Iterable[str]) -> dict[str, ThreadFacts]:
        out: dict[str, ThreadFacts] = {}
        with self.engine.connect() as conn:  # plain SQL: a sync asks about thousands of threads
            for chunk in _chunks(list(thread_ids), 900):
                for tid, tag, cat, tagged_at, urgent, status, suggested in conn.exec_driver_sql(
                    "SELECT id, tag, category, tagged_at, urgent, sender_status, suggested_tag FROM thread "  # noqa: S608
                    f"WHERE id IN ({', '.join('?' * len(chunk))})",
                    tuple(chunk),
                ):
                    when = None if tagged_at is None else _stored_time(tagged_at)
                    out[tid] = ThreadFacts(tid, tag, cat, when, bool(urgent), status, suggested)
        return out

    def assign_threads(self, assignment: dict[str, str]) -> None:
        if not assignment:
            return
        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE message SET thread_id = ? WHERE id = ?",
                [(tid, key) for key, tid in assignment.items()],
            )

    def message_flags(self, keys: Sequence[str]) -> dict[str, frozenset[str]]:
        out: dict[str, frozenset[str]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(keys), 900):
                for mid, flags in conn.exec_driver_sql(
                    f"SELECT id, flags FROM message WHERE id IN ({', '.join('?' * len(chunk))})",  # noqa: S608
                    tuple(chunk),
                ):
                    out[mid] = frozenset(flags.split())
        return out

    def message_heads(self, keys: Sequence[str]) -> dict[str, tuple[Address, tuple[Address, ...], str, frozenset[str]]]:
        """(sender, to, subject, flags) of messages, decrypted, for thread summaries."""
        out: dict[str, tuple[Address, tuple[Address, ...], str, frozenset[str]]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(keys), 900):
                for mid, name, addr, subj, extra, flags in conn.exec_driver_sql(
                    "SELECT id, from_name_enc, from_addr_enc, subject_enc, extra_enc, flags FROM message "  # noqa: S608
                    f"WHERE id IN ({', '.join('?' * len(chunk))})",
                    tuple(chunk),
                ):
                    ex = json.loads(self.open_text("message", "extra", mid, extra))
                    out[mid] = (
                        Address(
                            self.open_text("message", "from_name", mid, name),
                            self.open_text("message", "from_addr", mid, addr),
                        ),
                        _addrs(ex.get("to")),
                        self.open_text("message", "subject", mid, subj),
                        frozenset(flags.split()),
                    )
        return out

    def write_threads(self, rows: Sequence[dict[str, Any]], remove: Iterable[str] = ()) -> None:
        """Insert or replace thread summary rows. Each dict has the clear columns plus
        ``patient_name``, ``patient_addr`` and ``subject`` in clear, sealed here."""
        seal = self.cipher.seal
        # One statement per set of columns, executed for many rows at once, straight to the
        # driver: what SQLAlchemy's upsert wrote (a new row also gets the columns' defaults;
        # an existing one has only the given columns replaced; datetimes as its text). The
        # shape of a row (its keys, in order) is worked out once per shape, not once per row.
        shapes: dict[tuple[str, ...], tuple[str, ...]] = {}
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for row in rows:
            shape = tuple(row)
            cols = shapes.get(shape)  # type: ignore[assignment]
            if cols is None:
                cols = shapes[shape] = tuple(
                    sorted({k for k in shape if k not in _THREAD_SEALED} | set(_THREAD_SEALED.values()))
                )
            tid = row["id"]
            values = dict(row)
            for k in _THREAD_TIMES:
                v = values.get(k)
                if v is not None:
                    values[k] = _driver_value(db_time(v))
            values["patient_name_enc"] = seal(row["patient_name"], f"thread:patient_name:{tid}")
            values["patient_addr_enc"] = seal(row["patient_addr"], f"thread:patient_addr:{tid}")
            values["subject_enc"] = seal(row["subject"], f"thread:subject:{tid}")
            groups.setdefault(cols, []).append(tuple([values[k] for k in cols]))
        with self.engine.begin() as conn:
            gone = list(remove)
            for chunk in _chunks(gone, 900):
                conn.execute(T.Thread.__table__.delete().where(T.Thread.id.in_(chunk)))  # type: ignore[attr-defined]
            for cols, batch in groups.items():
                given = set(cols)
                defaults = [(k, v) for k, v in _THREAD_DEFAULTS if k not in given]
                if defaults:
                    extra = tuple(v for _, v in defaults)
                    batch = [values + extra for values in batch]
                updates = ", ".join(f"{k} = excluded.{k}" for k in cols if k != "id")
                conn.exec_driver_sql(
                    _insert_sql("thread", (*cols, *(k for k, _ in defaults)))
                    + f" ON CONFLICT (id) DO UPDATE SET {updates}",
                    batch,
                )

    def set_thread_fields(self, thread_id: str, **values: Any) -> None:
        for k in ("waiting_since", "due_at", "last_date", "tagged_at"):
            if k in values:
                values[k] = db_time(values[k])
        with self.engine.begin() as conn:
            conn.execute(update(T.Thread).where(T.Thread.id == thread_id).values(**values))

    def message_ids_by_thread(self, thread_ids: Sequence[str]) -> dict[str, list[str]]:
        """Decrypted Message-IDs of each thread's messages, oldest first."""
        out: dict[str, list[str]] = {t: [] for t in thread_ids}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(thread_ids), 900):
                for mid, tid, blob in conn.execute(
                    select(T.Message.id, T.Message.thread_id, T.Message.message_id_enc)
                    .where(T.Message.thread_id.in_(chunk))  # type: ignore[union-attr]
                    .order_by(T.Message.date, T.Message.id)
                ):
                    value = self.open_text("message", "message_id", mid, blob)
                    if value:
                        out[tid].append(value)
        return out

    def thread_message_keys(self, thread_ids: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {t: [] for t in thread_ids}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(thread_ids), 900):
                for mid, tid in conn.execute(
                    select(T.Message.id, T.Message.thread_id).where(T.Message.thread_id.in_(chunk))  # type: ignore[union-attr]
                ):
                    out[tid].append(mid)
        return out

    def all_thread_ids(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(select(T.Thread.id))]

    # --- reading the queue -----------------------------------------------------------------------

    def queue_facts(self, states: Sequence[str] | None = None) -> list[tuple[Any, ...]]:
        """Clear columns for ranking: (id, state, due_at, urgent, last_date, tag)."""
        q = select(T.Thread.id, T.Thread.state, T.Thread.due_at, T.Thread.urgent, T.Thread.last_date, T.Thread.tag)
        if states is not None:
            q = q.where(T.Thread.state.in_(list(states)))  # type: ignore[attr-defined]
        with self.engine.connect() as conn:
            return [(r[0], r[1], utc(r[2]), bool(r[3]), utc(r[4]), r[5]) for r in conn.execute(q)]

    def due_page(self, offset: int, limit: int) -> tuple[list[str], int]:
        """Ids of waiting threads in queue order (urgent first, then by due time, then last
        activity and id: the order of domain.ranking.rank) and how many there are in all."""
        with self.engine.connect() as conn:
            return read_due_page(conn.exec_driver_sql, offset, limit)

    def thread_rows(self, thread_ids: Sequence[str]) -> list[ThreadRow]:
        """Decrypted rows, in the order of ``thread_ids``."""
        with self.engine.connect() as conn:
            return read_thread_rows(
                lambda sql, params: conn.exec_driver_sql(sql, tuple(params)), thread_ids, self.open_text
            )

    def thread_messages(self, thread_id: str) -> list[StoredMessage]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(T.Message, T.Folder.name)
                .join(T.Folder, T.Folder.id == T.Message.folder_id)
                .where(T.Message.thread_id == thread_id)
                .order_by(T.Message.date, T.Message.id)
            ).all()
            ids = [r[0] for r in rows]
            atts: dict[str, list[tuple[str, str, int]]] = {}
            for chunk in _chunks(ids, 900):
                for a in conn.execute(
                    select(T.Attachment)
                    .where(T.Attachment.message_id.in_(chunk))  # type: ignore[attr-defined]
                    .order_by(T.Attachment.position)
                ):
                    info = json.loads(self.open_text("attachment", "info", a.id, a.info_enc))
                    atts.setdefault(a.message_id, []).append((a.id, info["filename"], a.size))
        return [self._stored(r, atts.get(r[0], [])) for r in rows]

    def message(self, message_id: str) -> StoredMessage | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(T.Message, T.Folder.name)
                .join(T.Folder, T.Folder.id == T.Message.folder_id)
                .where(T.Message.id == message_id)
            ).first()
        return self._stored(row, []) if row else None

    def raw_message(self, message_id: str) -> bytes:
        with self.engine.connect() as conn:
            blob = conn.execute(select(T.Message.raw_enc).where(T.Message.id == message_id)).scalar_one()
        return self.open_bytes("message", "raw", message_id, blob)

    def attachment_data(self, attachment_id: str) -> tuple[str, bytes]:
        with self.engine.connect() as conn:
            a = conn.execute(select(T.Attachment).where(T.Attachment.id == attachment_id)).one()
        info = json.loads(self.open_text("attachment", "info", a.id, a.info_enc))
        return info["filename"], self.open_bytes("attachment", "data", a.id, a.data_enc)

    def _stored(self, row: Any, atts: list[tuple[str, str, int]]) -> StoredMessage:
        m = row[0] if not hasattr(row, "id") else row
        folder = row[-1]
        mid = m.id
        extra = json.loads(self.open_text("message", "extra", mid, m.extra_enc))
        return StoredMessage(
            id=mid,
            thread_id=m.thread_id,
            folder=folder,
            uid=m.uid,
            date=utc(m.date),  # type: ignore[arg-type]
            outgoing=bool(m.outgoing),
            flags=frozenset(m.flags.split()),
            malformed=bool(m.malformed),
            deleted_on_server=bool(m.deleted_on_server),
            message_id=self.open_text("message", "message_id", mid, m.message_id_enc),
            subject=self.open_text("message", "subject", mid, m.subject_enc),
            sender=Address(
                self.open_text("message", "from_name", mid, m.from_name_enc),
                self.open_text("message", "from_addr", mid, m.from_addr_enc),
            ),
            body=self.open_text("message", "body", mid, m.body_enc),
            to=_addrs(extra.get("to")),
            cc=_addrs(extra.get("cc")),
            reply_to=_addrs(extra.get("reply_to")),
            references=tuple(extra.get("references") or ()),
            in_reply_to=tuple(extra.get("in_reply_to") or ()),
            auth_results=extra.get("auth_results", ""),
            problem=extra.get("problem", ""),
            attachments=tuple(atts),
        )

    # --- flags -----------------------------------------------------------------------------------

    def set_flags(
        self, message_ids: Sequence[str], add: Iterable[str] = (), remove: Iterable[str] = (), *, journal: bool = True
    ) -> None:
        """Change flags locally; with ``journal`` the change is queued to be pushed to the server."""
        add_s, rem_s = set(add), set(remove)
        now = db_time(datetime.now(UTC))
        with self.engine.begin() as conn:
            for chunk in _chunks(list(message_ids), 900):
                for mid, flags in conn.execute(
                    select(T.Message.id, T.Message.flags).where(T.Message.id.in_(chunk))  # type: ignore[attr-defined]
                ):
                    new = (set(flags.split()) | add_s) - rem_s
                    conn.execute(update(T.Message).where(T.Message.id == mid).values(flags=" ".join(sorted(new))))
                    if journal:
                        conn.execute(
                            insert(T.FlagChange).values(
                                message_id=mid,
                                add_flags=" ".join(sorted(add_s)),
                                remove_flags=" ".join(sorted(rem_s)),
                                created=now,
                                done=False,
                            )
                        )

    # --- status ----------------------------------------------------------------------------------

    def status_counts(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            per_folder = {
                name: int(n)
                for name, n in conn.execute(
                    select(T.Folder.name, func.count(T.Message.id))
                    .select_from(T.Folder)
                    .join(T.Message, T.Message.folder_id == T.Folder.id, isouter=True)
                    .group_by(T.Folder.name)
                )
            }
            threads = int(conn.execute(select(func.count()).select_from(T.Thread)).scalar_one())
            outbox = {
                state: int(n)
                for state, n in conn.execute(select(T.Outbox.state, func.count()).group_by(T.Outbox.state))
            }
            last_sync = conn.execute(select(func.max(T.Folder.last_sync))).scalar_one()
            malformed = int(
                conn.execute(select(func.count()).select_from(T.Message).where(T.Message.malformed)).scalar_one()
            )
        return {
            "folders": per_folder,
            "threads": threads,
            "outbox": outbox,
            "last_sync": utc(last_sync),
            "malformed": malformed,
        }


_MESSAGE_COLS = (
    "id",
    "folder_id",
    "uid",
    "source",
    "msgid_token",
    "subject_token",
    "counterpart_token",
    "content_token",
    "reply_prefix",
    "date",
    "internal_date",
    "size",
    "flags",
    "modseq",
    "outgoing",
    "malformed",
    "deleted_on_server",
    "thread_id",
    "added",
    "raw_enc",
    "message_id_enc",
    "subject_enc",
    "from_name_enc",
    "from_addr_enc",
    "body_enc",
    "extra_enc",
)


# (column, default) of the thread columns that have one: SQLAlchemy added them to an insert without them
_THREAD_DEFAULTS: tuple[tuple[str, Any], ...] = tuple(
    (c.name, c.default.arg)
    for c in T.Thread.__table__.columns  # type: ignore[attr-defined]
    if c.default is not None and not callable(c.default.arg)
)


_THREAD_SEALED = {"patient_name": "patient_name_enc", "patient_addr": "patient_addr_enc", "subject": "subject_enc"}
_THREAD_TIMES = ("waiting_since", "due_at", "last_date", "tagged_at")


def _insert_sql(table: str, cols: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"  # noqa: S608


def _message_ref(row: Sequence[Any], parents: dict[str, list[tuple[int, str]]], date: datetime) -> MessageRef:
    """A MessageRef from a row of (id, msgid token, subject token, counterpart token, date, outgoing,
    reply prefix) and the parent tokens by message id, as (position, token)."""
    return MessageRef(
        key=row[0],
        message_id=row[1],
        parents=tuple(t for _, t in sorted(parents.get(row[0], ()))),
        subject_key=row[2],
        counterpart=row[3],
        date=date,
        outgoing=bool(row[5]),
        reply_prefix=bool(row[6]),
    )


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
