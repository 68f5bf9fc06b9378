"""Store-side operations of the IMAP sync (services/sync.py), as functions over a :class:`Store`.

What the sync keeps per folder lives in clear columns only: ``folder.uidvalidity / uidnext /
highestmodseq / last_sync`` and, per message, ``uid``, ``flags``, ``modseq`` and
``deleted_on_server``. Nothing here decrypts a value; keyed tokens (Message-ID, content hash) are
computed with the store's token key.

Rules kept here:

* Nothing is ever deleted. A message expunged on the server keeps its row, marked
  ``deleted_on_server``. After a UIDVALIDITY change every row of the folder is *detached*
  (``uid`` NULL, ``deleted_on_server`` set) in one transaction with the new UIDVALIDITY; the
  download that follows *claims* detached rows by content token, then by Message-ID token, moving
  them to their new UIDs. Rows nothing claims stay, marked as no longer on the server.
* Local flag changes waiting in the ``flag_change`` journal win over the server's flags until they
  are pushed: server flags are merged with the pending changes (in journal order).
* ``quick_state`` reads the sync position with the standard ``sqlite3`` module and a read-only
  connection, without SQLAlchemy/SQLModel (about half a second of imports) and without the data key:
  the no-change re-sync of ``carebox sync`` needs nothing more.

* During a long download :class:`WalDrain` copies the write-ahead log into the database file
  from a second connection in a background thread, so the sync's writer never stops for it.

SQLAlchemy and the table models are imported inside the functions that need them, so importing
this module (for ``quick_state``) costs nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carebox.store.store import Store

__all__ = [
    "THREADS_PENDING_META",
    "ClaimItem",
    "FolderState",
    "KnownMessage",
    "PendingPush",
    "QuickFolder",
    "QuickState",
    "WalDrain",
    "apply_server_flags",
    "claim_detached",
    "content_token",
    "count_detached",
    "detach_folder",
    "folder_state",
    "known_messages",
    "mark_deleted_on_server",
    "mark_flag_changes_done",
    "mark_present",
    "msgid_token",
    "pending_flag_changes",
    "quick_state",
    "save_position",
    "threads_pending_after",
    "unthreaded_count",
]

_CHUNK = 900  # SQLite's default limit on bound parameters is 999


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted({f for f in flags if f and f.lower() != "\\recent"}))


def _db_time(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


# ---- reading the position -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FolderState:
    id: int
    name: str
    role: str
    uidvalidity: int | None
    uidnext: int | None
    highestmodseq: int | None
    last_sync: datetime | None


def folder_state(store: Store, name: str) -> FolderState | None:
    """The stored sync position of ``name``, or None when the folder has no row (never written:
    this never creates one)."""
    from sqlalchemy import select

    from carebox.store import tables as T

    with store.engine.connect() as conn:
        row = conn.execute(
            select(
                T.Folder.id,
                T.Folder.role,
                T.Folder.uidvalidity,
                T.Folder.uidnext,
                T.Folder.highestmodseq,
                T.Folder.last_sync,
            ).where(T.Folder.name == name)
        ).first()
    if row is None:
        return None
    last = row[5].replace(tzinfo=UTC) if row[5] is not None and row[5].tzinfo is None else row[5]
    return FolderState(int(row[0]), name, row[1], row[2], row[3], row[4], last)


def save_position(
    store: Store,
    name: str,
    *,
    role: str = "other",
    uidvalidity: int,
    uidnext: int | None = None,
    highestmodseq: int | None = None,
    last_sync: datetime | None = None,
) -> None:
    """Record the folder's position. Call only after the messages it covers are committed
    (data before state). ``uidnext`` / ``highestmodseq`` None leave the stored values as they are."""
    values: dict[str, Any] = {"uidvalidity": int(uidvalidity)}
    if uidnext is not None:
        values["uidnext"] = int(uidnext)
    if highestmodseq is not None:
        values["highestmodseq"] = int(highestmodseq)
    if last_sync is not None:
        values["last_sync"] = last_sync
    store.folder_id(name, role)
    store.update_folder(name, **values)


@dataclass(frozen=True, slots=True)
class KnownMessage:
    id: str
    flags: frozenset[str]
    deleted_on_server: bool
    modseq: int | None
    thread_id: str | None


def known_messages(store: Store, name: str) -> dict[int, KnownMessage]:
    """UID -> what the store has of it, for the messages of ``name`` that have a UID."""
    from sqlalchemy import select

    from carebox.store import tables as T

    state = folder_state(store, name)
    if state is None:
        return {}
    out: dict[int, KnownMessage] = {}
    with store.engine.connect() as conn:
        for mid, uid, flags, deleted, modseq, tid in conn.execute(
            select(
                T.Message.id,
                T.Message.uid,
                T.Message.flags,
                T.Message.deleted_on_server,
                T.Message.modseq,
                T.Message.thread_id,
            ).where(T.Message.folder_id == state.id, T.Message.uid.is_not(None))  # type: ignore[union-attr]
        ):
            out[int(uid)] = KnownMessage(mid, frozenset(flags.split()), bool(deleted), modseq, tid)
    return out


THREADS_PENDING_META = "sync.threads_pending_after"  # message rowid; set while provisional threads wait for rethread


def threads_pending_after(store: Store) -> int | None:
    """The message rowid after which rows hold provisional thread ids (a download that has not
    finished threading yet), or None."""
    value = store.get_meta(THREADS_PENDING_META)
    return int(value) if value else None


def unthreaded_count(store: Store) -> int:
    from sqlalchemy import func, select

    from carebox.store import tables as T

    with store.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(T.Message).where(T.Message.thread_id.is_(None))  # type: ignore[union-attr]
            ).scalar_one()
        )


# ---- pending local flag changes -------------------------------------------------------------------


def _pending_by_message(conn: Any, message_ids: Sequence[str]) -> dict[str, list[tuple[set[str], set[str]]]]:
    from sqlalchemy import select

    from carebox.store import tables as T

    out: dict[str, list[tuple[set[str], set[str]]]] = {}
    for chunk in _chunks(list(message_ids)):
        for mid, add, rem in conn.execute(
            select(T.FlagChange.message_id, T.FlagChange.add_flags, T.FlagChange.remove_flags)
            .where(T.FlagChange.done.is_(False), T.FlagChange.message_id.in_(chunk))  # type: ignore[attr-defined]
            .order_by(T.FlagChange.id)
        ):
            out.setdefault(mid, []).append((set(add.split()), set(rem.split())))
    return out


def _merge(server: Iterable[str], pending: Iterable[tuple[set[str], set[str]]]) -> frozenset[str]:
    flags = {f for f in server if f.lower() != "\\recent"}
    for add, rem in pending:
        flags = (flags | add) - rem
    return frozenset(flags)


@dataclass(frozen=True, slots=True)
class PendingPush:
    """The net effect of a message's journaled flag changes, to push with one UID STORE."""

    message_id: str
    folder: str
    uid: int | None
    deleted_on_server: bool
    add: frozenset[str]
    remove: frozenset[str]
    journal_ids: tuple[int, ...]


def pending_flag_changes(store: Store, folder: str | None = None) -> list[PendingPush]:
    """Journal rows not yet pushed, collapsed per message (in journal order: a flag set then
    cleared is a removal), optionally only for ``folder``."""
    from sqlalchemy import select

    from carebox.store import tables as T

    q = (
        select(
            T.FlagChange.id,
            T.FlagChange.message_id,
            T.FlagChange.add_flags,
            T.FlagChange.remove_flags,
            T.Folder.name,
            T.Message.uid,
            T.Message.deleted_on_server,
        )
        .join(T.Message, T.Message.id == T.FlagChange.message_id)
        .join(T.Folder, T.Folder.id == T.Message.folder_id)
        .where(T.FlagChange.done.is_(False))  # type: ignore[attr-defined]
        .order_by(T.FlagChange.id)
    )
    if folder is not None:
        q = q.where(T.Folder.name == folder)
    acc: dict[str, tuple[str, int | None, bool, set[str], set[str], list[int]]] = {}
    with store.engine.connect() as conn:
        for jid, mid, add, rem, fname, uid, deleted in conn.execute(q):
            if mid not in acc:
                acc[mid] = (fname, uid, bool(deleted), set(), set(), [])
            _, _, _, adds, removes, ids = acc[mid]
            a, r = set(add.split()), set(rem.split())
            adds.difference_update(r)
            adds.update(a)
            removes.difference_update(a)
            removes.update(r)
            ids.append(int(jid))
    return [
        PendingPush(mid, f, uid, deleted, frozenset(a), frozenset(r), tuple(ids))
        for mid, (f, uid, deleted, a, r, ids) in acc.items()
    ]


def mark_flag_changes_done(store: Store, journal_ids: Iterable[int]) -> None:
    from sqlalchemy import update

    from carebox.store import tables as T

    ids = sorted(set(journal_ids))
    if not ids:
        return
    with store.engine.begin() as conn:
        for chunk in _chunks(ids):
            conn.execute(update(T.FlagChange).where(T.FlagChange.id.in_(chunk)).values(done=True))  # type: ignore[union-attr]


# ---- applying what the server says ----------------------------------------------------------------


def apply_server_flags(
    store: Store, folder: str, updates: Iterable[tuple[int, Iterable[str], int | None]]
) -> tuple[int, set[str]]:
    """Take the server's flags for ``(uid, flags, modseq)`` of ``folder``, merged with local
    changes still waiting to be pushed. Returns (rows changed, thread ids whose summaries are
    now stale). Unknown UIDs are ignored."""
    from sqlalchemy import select, update

    from carebox.store import tables as T

    state = folder_state(store, folder)
    if state is None:
        return 0, set()
    by_uid = {int(u): (frozenset(f), m) for u, f, m in updates}
    if not by_uid:
        return 0, set()
    changed = 0
    threads: set[str] = set()
    with store.engine.begin() as conn:
        rows: list[tuple[str, int, str, int | None, str | None]] = []
        for chunk in _chunks(sorted(by_uid)):
            rows.extend(
                conn.execute(
                    select(T.Message.id, T.Message.uid, T.Message.flags, T.Message.modseq, T.Message.thread_id).where(
                        T.Message.folder_id == state.id,
                        T.Message.uid.in_(chunk),  # type: ignore[union-attr]
                    )
                ).all()
            )
        pending = _pending_by_message(conn, [r[0] for r in rows])
        for mid, uid, flags, modseq, tid in rows:
            server_flags, new_modseq = by_uid[int(uid)]
            merged = _flags_text(_merge(server_flags, pending.get(mid, ())))
            values: dict[str, Any] = {}
            if merged != flags:
                values["flags"] = merged
                if tid:
                    threads.add(tid)
            if new_modseq is not None and new_modseq != modseq:
                values["modseq"] = new_modseq
            if values:
                conn.execute(update(T.Message).where(T.Message.id == mid).values(**values))
                changed += "flags" in values
    return changed, threads


def mark_deleted_on_server(store: Store, folder: str, uids: Iterable[int]) -> tuple[int, set[str]]:
    """Mark the messages with these UIDs as expunged on the server (they stay in the store).
    Returns (rows newly marked, their thread ids)."""
    from sqlalchemy import select, update

    from carebox.store import tables as T

    state = folder_state(store, folder)
    wanted = sorted({int(u) for u in uids})
    if state is None or not wanted:
        return 0, set()
    marked = 0
    threads: set[str] = set()
    with store.engine.begin() as conn:
        for chunk in _chunks(wanted):
            cond = (
                T.Message.folder_id == state.id,
                T.Message.uid.in_(chunk),  # type: ignore[union-attr]
                T.Message.deleted_on_server.is_(False),  # type: ignore[attr-defined]
            )
            threads.update(r[0] for r in conn.execute(select(T.Message.thread_id).where(*cond)) if r[0])
            marked += conn.execute(update(T.Message).where(*cond).values(deleted_on_server=True)).rowcount or 0
    return marked, threads


def mark_present(store: Store, folder: str, uids: Iterable[int]) -> int:
    """Clear ``deleted_on_server`` on rows of ``folder`` that have these UIDs (a row claimed by
    the store's own Message-ID matching keeps the mark otherwise)."""
    from sqlalchemy import update

    from carebox.store import tables as T

    state = folder_state(store, folder)
    wanted = sorted({int(u) for u in uids})
    if state is None or not wanted:
        return 0
    n = 0
    with store.engine.begin() as conn:
        for chunk in _chunks(wanted):
            n += (
                conn.execute(
                    update(T.Message)
                    .where(
                        T.Message.folder_id == state.id,
                        T.Message.uid.in_(chunk),  # type: ignore[union-attr]
                        T.Message.deleted_on_server.is_(True),  # type: ignore[attr-defined]
                    )
                    .values(deleted_on_server=False)
                ).rowcount
                or 0
            )
    return n


# ---- UIDVALIDITY change ---------------------------------------------------------------------------


def detach_folder(store: Store, folder: str, *, role: str, uidvalidity: int) -> int:
    """The server gave ``folder`` a new UIDVALIDITY: in one transaction, record it (with no
    position, so everything is downloaded again) and detach every row that had a UID: ``uid``
    NULL and ``deleted_on_server`` set until :func:`claim_detached` finds it on the server again.
    No row is deleted. Returns the number of rows detached."""
    from sqlalchemy import update

    from carebox.store import tables as T

    fid = store.folder_id(folder, role)
    with store.engine.begin() as conn:
        n = (
            conn.execute(
                update(T.Message)
                .where(T.Message.folder_id == fid, T.Message.uid.is_not(None))  # type: ignore[union-attr]
                .values(uid=None, deleted_on_server=True)
            ).rowcount
            or 0
        )
        conn.execute(
            update(T.Folder)
            .where(T.Folder.id == fid)
            .values(uidvalidity=int(uidvalidity), uidnext=None, highestmodseq=None)
        )
    return n


def count_detached(store: Store, folder: str) -> int:
    """Rows of ``folder`` without a UID that are marked as not on the server (left over from a
    UIDVALIDITY change that found no server copy for them)."""
    from sqlalchemy import func, select

    from carebox.store import tables as T

    state = folder_state(store, folder)
    if state is None:
        return 0
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(T.Message)
                .where(
                    T.Message.folder_id == state.id,
                    T.Message.uid.is_(None),  # type: ignore[union-attr]
                    T.Message.deleted_on_server.is_(True),  # type: ignore[attr-defined]
                )
            ).scalar_one()
        )


def content_token(store: Store, raw: bytes) -> str:
    """The keyed token of a message's exact bytes (the same one ``Store.add_messages`` stores)."""
    return store.token("content", hashlib.sha256(raw).hexdigest())


def msgid_token(store: Store, message_id: str) -> str:
    return store.token("msgid", message_id)


@dataclass(frozen=True, slots=True)
class ClaimItem:
    uid: int
    flags: frozenset[str]
    modseq: int | None
    content_token: str
    msgid_token: str  # "" when the message has no Message-ID (never matched by it)


@dataclass
class ClaimResult:
    claimed: dict[int, str] = field(default_factory=dict)  # UID -> row id
    threads: set[str] = field(default_factory=set)


def claim_detached(store: Store, folder: str, items: Sequence[ClaimItem]) -> ClaimResult:
    """Give UID-less rows of ``folder`` the UIDs of server messages that are the same message:
    same bytes (content token) first, else same Message-ID. Claimed rows get the server's flags
    (merged with pending local changes) and lose ``deleted_on_server``. One transaction; the
    rest of ``items`` are new messages for ``Store.add_messages``."""
    from sqlalchemy import select, update

    from carebox.store import tables as T

    result = ClaimResult()
    state = folder_state(store, folder)
    if state is None or not items:
        return result
    with store.engine.begin() as conn:
        have = {
            int(r[0])
            for chunk in _chunks([it.uid for it in items])
            for r in conn.execute(
                select(T.Message.uid).where(T.Message.folder_id == state.id, T.Message.uid.in_(chunk))  # type: ignore[union-attr]
            )
        }
        todo = [it for it in items if it.uid not in have]
        if not todo:
            return result
        by_content: dict[str, list[tuple[str, str | None]]] = {}
        by_msgid: dict[str, list[tuple[str, str | None]]] = {}
        tokens_c = sorted({it.content_token for it in todo})
        tokens_m = sorted({it.msgid_token for it in todo if it.msgid_token})
        base = (T.Message.folder_id == state.id, T.Message.uid.is_(None))  # type: ignore[union-attr]
        for chunk in _chunks(tokens_c):
            for mid, tok, tid in conn.execute(
                select(T.Message.id, T.Message.content_token, T.Message.thread_id)
                .where(*base, T.Message.content_token.in_(chunk))  # type: ignore[attr-defined]
                .order_by(T.Message.added, T.Message.id)
            ):
                by_content.setdefault(tok, []).append((mid, tid))
        for chunk in _chunks(tokens_m):
            for mid, tok, tid in conn.execute(
                select(T.Message.id, T.Message.msgid_token, T.Message.thread_id)
                .where(*base, T.Message.msgid_token.in_(chunk))  # type: ignore[attr-defined]
                .order_by(T.Message.added, T.Message.id)
            ):
                by_msgid.setdefault(tok, []).append((mid, tid))
        taken: set[str] = set()
        matches: list[tuple[ClaimItem, str, str | None]] = []
        for it in todo:  # exact bytes first, for every item, then Message-ID for the rest
            for mid, tid in by_content.get(it.content_token, ()):
                if mid not in taken:
                    taken.add(mid)
                    matches.append((it, mid, tid))
                    break
        matched_uids = {m[0].uid for m in matches}
        for it in todo:
            if it.uid in matched_uids or not it.msgid_token:
                continue
            for mid, tid in by_msgid.get(it.msgid_token, ()):
                if mid not in taken:
                    taken.add(mid)
                    matches.append((it, mid, tid))
                    break
        pending = _pending_by_message(conn, [m[1] for m in matches])
        for it, mid, tid in matches:
            conn.execute(
                update(T.Message)
                .where(T.Message.id == mid)
                .values(
                    uid=it.uid,
                    flags=_flags_text(_merge(it.flags, pending.get(mid, ()))),
                    modseq=it.modseq,
                    deleted_on_server=False,
                )
            )
            result.claimed[it.uid] = mid
            if tid:
                result.threads.add(tid)
    return result


# ---- the no-change fast path ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuickFolder:
    uidvalidity: int | None
    uidnext: int | None
    highestmodseq: int | None
    on_server: int  # rows with a UID not marked deleted_on_server


@dataclass(frozen=True, slots=True)
class QuickState:
    folders: dict[str, QuickFolder]
    pending_by_folder: dict[str, int]  # journaled flag changes a sync would push (message on the server)
    unthreaded: int


def quick_state(store_dir: Path, db_file: str = "carebox.db") -> QuickState | None:
    """The sync position of every folder, read through a read-only ``sqlite3`` connection (no
    key, no SQLAlchemy). None when there is no database or it cannot be read as expected: the
    caller then takes the normal path."""
    import sqlite3

    path = Path(store_dir).expanduser() / db_file
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        folders: dict[str, QuickFolder] = {}
        rows = conn.execute(
            "SELECT f.name, f.uidvalidity, f.uidnext, f.highestmodseq, "
            "(SELECT count(*) FROM message m WHERE m.folder_id = f.id AND m.uid IS NOT NULL "
            "AND m.deleted_on_server = 0) FROM folder f"
        ).fetchall()
        for name, v, n, h, live in rows:
            folders[name] = QuickFolder(v, n, h, int(live))
        pending = {
            name: int(n)
            for name, n in conn.execute(
                "SELECT f.name, count(*) FROM flag_change c JOIN message m ON m.id = c.message_id "
                "JOIN folder f ON f.id = m.folder_id WHERE c.done = 0 AND m.uid IS NOT NULL "
                "AND m.deleted_on_server = 0 GROUP BY f.name"
            )
        }
        unthreaded = conn.execute("SELECT count(*) FROM message WHERE thread_id IS NULL").fetchone()[0]
        marker = conn.execute("SELECT value FROM meta WHERE key = ?", (THREADS_PENDING_META,)).fetchone()
        if marker and marker[0]:
            unthreaded += 1  # provisional threads of an unfinished download: not a no-change sync
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return QuickState(folders, pending, int(unthreaded))


# ---- the write-ahead log during a long download ---------------------------------------------------


class WalDrain:
    """Checkpoints the store's WAL in a background thread while a long download commits.

    SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past 1,000 pages: in a
    download every batch commit (about 6 MB per 250 messages) stopped to copy the log into the
    database file and sync it to disk, and threading's one big UPDATE stopped for over a second at
    the end. While a drain is running, the store's connections do not checkpoint on commit
    (``wal_autocheckpoint=0``, set on each connection as it is checked out of the pool, restored
    the same way afterwards); a thread with its own connection runs PASSIVE checkpoints (which
    never wait for, nor block, the writer or readers) after each commit it is told about, and
    every ``interval`` seconds. The disk work is the same; it overlaps the parsing and storing
    instead of holding them up. What is left at ``stop()`` is checkpointed by the next commit of a
    connection back to its setting, or by ``Store.close()``.

    Usage: ``start()``, ``poke()`` after a commit, ``stop()`` (in a ``finally``).
    """

    def __init__(self, store: Store, interval: float = 0.25) -> None:
        from carebox.store.store import DB_FILE

        self._engine = store.engine
        self._path = store.directory / DB_FILE
        self._interval = interval
        self._wake: Any = None
        self._stop = False
        self._thread: Any = None
        self.checkpoints = 0

    def start(self) -> None:
        import threading

        if self._thread is not None:
            return
        _bulk_state(self._engine).add(1)  # from now on, checked-out connections leave the WAL alone
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="carebox-wal-drain", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """A transaction was committed: checkpoint soon."""
        if self._wake is not None:
            self._wake.set()

    def stop(self, *, wait: bool = True) -> None:
        """End the drain after one last checkpoint; with ``wait``, return when it is done (can take
        a second: call it off the event loop)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop = True
        self._wake.set()
        if wait:
            thread.join()

    def _run(self) -> None:
        import sqlite3

        try:
            conn = sqlite3.connect(str(self._path), timeout=5, isolation_level=None)
        except sqlite3.Error:
            _bulk_state(self._engine).add(-1)
            return
        try:
            while True:
                self._wake.wait(self._interval)
                self._wake.clear()
                stopping = self._stop
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error:  # busy or locked: the next turn (or a commit) does it
                    pass
                if stopping:  # that was the last one, after everything committed before stop()
                    break
        finally:
            conn.close()
            _bulk_state(self._engine).add(-1)


class _Drains:
    """How many drains run on one engine (from the event loop's thread and the drain threads)."""

    def __init__(self) -> None:
        import threading

        self.count = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.count += n


_BULK: Any = None  # engine -> _Drains, filled on first use


def _bulk_state(engine: Any) -> _Drains:
    """The drains of ``engine``; on first use, a pool listener that gives every connection checked
    out the autocheckpoint setting that goes with it (off while a drain runs, as before otherwise)."""
    global _BULK
    import weakref

    from sqlalchemy import event

    if _BULK is None:
        _BULK = weakref.WeakKeyDictionary()
    state = _BULK.get(engine)
    if state is None:
        state = _BULK[engine] = _Drains()

        def _checkout(dbapi_conn: Any, record: Any, _proxy: Any, state: _Drains = state) -> None:
            info = record.info
            off = info.get("carebox_autocheckpoint_off", False)
            if (state.count > 0) == off:
                return
            cur = dbapi_conn.cursor()
            try:
                if not off:
                    info["carebox_autocheckpoint"] = cur.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
                    cur.execute("PRAGMA wal_autocheckpoint=0")
                else:
                    cur.execute(f"PRAGMA wal_autocheckpoint={int(info.get('carebox_autocheckpoint', 1000))}")
            finally:
                cur.close()
            info["carebox_autocheckpoint_off"] = not off

        event.listen(engine, "checkout", _checkout)
    return state
