"""IMAP sync: the configured folders of a real mailbox into the encrypted store.

``sync_once`` is ``carebox sync``; :class:`BackgroundSync` keeps the app's store live (IDLE,
reconnects with backoff, a status line for the status bar). Both run the same :class:`_SyncRun`.

Per folder, in one pass:

1. SELECT, with ``QRESYNC (uidvalidity highestmodseq)`` when the server and the stored position allow
   it: flag changes and expunged UIDs arrive in that one round trip. Without QRESYNC: UID SEARCH ALL
   (expunged = stored UIDs the server no longer has) plus UID FETCH FLAGS (``CHANGEDSINCE`` with
   CONDSTORE, every message otherwise).
2. A new UIDVALIDITY detaches the folder's rows (``syncstate.detach_folder``) and everything is
   downloaded again; the download claims detached rows by content token, then Message-ID token.
   Nothing is deleted; what is not found again stays, marked as deleted on the server, and the
   report carries a one-line notice.
3. New UIDs (``UIDNEXT``) are downloaded in batches of 250 (``ImapClient.fetch_batches``, asked
   slice by slice so the first batch does not wait for the sizes of the whole folder), parsed off
   the event loop (a worker process for big downloads on 2+ CPUs, a thread otherwise; a
   per-message time budget), then sealed and committed one batch per transaction in a store
   thread. With worker processes, the workers also seal the rows (``store.sealing``, with the
   store's derived sealing keys) while they keep up, so the store thread mostly just inserts.
   The folder's ``uidnext`` advances only after its batch is committed (data before state);
   ``highestmodseq`` only when the whole folder is done. Fetching the next batches
   overlaps parsing and committing; during a long download the WAL is checkpointed by a
   background connection (``syncstate.WalDrain``), not inside the batch commits.
4. Local flag changes waiting in the journal are pushed (``+FLAGS.SILENT`` / ``-FLAGS.SILENT``,
   one STORE per distinct change) and marked done; until then they win over the server's flags.

Threading (and the thread inspectors) runs once, after every folder is downloaded, so a
conversation that spans many batches is summarised and inspected once. During a big download a
low-priority worker process (``MessageParser.background``) inspects the threads of the committed
batches ahead of time (``safety.EarlyInspection``, using the CPU the download leaves over); an
answer computed that way is used only for a thread that ends up with exactly the same messages.
Downloaded rows are written with a provisional thread id (``threads.ProvisionalThreads``:
rewriting every row afterwards to set it cost as much as writing it); a mark in ``meta``
(``syncstate.THREADS_PENDING_META``, set before the first such row) makes ``rethread(after=...)``
thread them exactly, with the rows that have no thread, and is cleared once their summaries are
written: a crash leaves nothing unthreaded past the next sync. What threading needs of the rows
this pass wrote (refs, provisional ids, sender, recipients, subject, flags) is kept as they are
written (``threads.AddedMessages``) and not read back or decrypted; only rows of an interrupted
earlier pass are.
(Nothing shows the threads before the pass ends: the app refreshes its inbox on the report.)

A crash at any point leaves a store that the next sync completes: committed batches are never
fetched twice (dedup by folder and UID), uncommitted ones are fetched again.

Module-level imports are kept light on purpose: ``carebox sync``'s no-change path
(:func:`quick_check`) must not load SQLModel, and the parse workers import this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carebox.services.synclock import SyncBusy, SyncLock

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from carebox.config import Config
    from carebox.domain.models import ParsedMessage
    from carebox.mail.imap import FetchedMessage, ImapClient, ImapSettings, SelectInfo
    from carebox.services.session import Session
    from carebox.store.sealing import SealedMessage
    from carebox.store.store import NewMessage, Store

__all__ = [
    "BATCH",
    "BackgroundSync",
    "FolderReport",
    "MessageParser",
    "SyncBusy",
    "SyncProgress",
    "SyncReport",
    "SyncStatus",
    "quick_check",
    "sync_new_store",
    "sync_once",
]

log = logging.getLogger(__name__)

BATCH = 250  # messages per FETCH and per commit (aioimaplib's FETCH parsing degrades beyond ~500)
PARSE_BUDGET = 5.0  # seconds one message may take to parse before it is stored raw and flagged
POOL_MIN = 400  # messages to download in a folder before worker processes are worth starting
# Measured on 2 cores, 10,000 messages (bench/out mailbox), safety checks off, nothing else running:
# the download took 9.9-10.4 s with parsing in a thread and 7.2-7.7 s with one worker process taking
# whole batches (2 workers: 8.5 s; 2 workers with each batch in 8 chunks, as before: 11.5 s). The
# thread loses because everything in one process shares one GIL: the store thread's many short
# GIL releases (SQLite steps, AES, HMAC, urandom) each wait for the parse thread to let go. With a
# core taken by another program, one worker process was no slower than the thread.
POOL_MIN_CPUS = 2
SIZES_FIRST = 2  # batches in the first slice of a download (its sizes are asked before anything starts)
SIZES_NEXT = 10  # batches in each later slice
DRAIN_MIN = 400  # messages to download before the WAL is checkpointed in the background (syncstate.WalDrain)
QUEUE_BATCHES = 2  # fetched batches waiting to be committed (memory bound: about 3 batches in flight)

_PARSE_MODE_ENV = "CAREBOX_SYNC_PARSE"  # "process" or "thread": force a parse mode (benchmarks)


# ---- progress, reports, status ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """What a progress display shows. ``phase``: connecting, checking, downloading, threading, done."""

    phase: str
    folder: str = ""
    done: int = 0  # messages downloaded and committed in this folder
    total: int = 0  # messages to download in this folder


@dataclass
class FolderReport:
    folder: str
    role: str = "other"
    added: int = 0
    already: int = 0  # downloaded again but already in the store (after a crash), or claimed
    malformed: int = 0  # stored raw and flagged
    flags_changed: int = 0  # rows whose flags the server changed
    deleted_on_server: int = 0  # rows newly marked as expunged on the server
    pushed: int = 0  # local flag changes sent to the server
    reset: bool = False  # UIDVALIDITY changed
    refound: int = 0  # after a reset: stored messages found again on the server
    not_refound: int = 0  # after a reset: stored messages kept but no longer on the server
    too_large: dict[int, int] = field(default_factory=dict)  # UID -> size, not downloaded
    missing: bool = False  # the folder does not exist on the server

    @property
    def changed(self) -> bool:
        return bool(
            self.added or self.flags_changed or self.deleted_on_server or self.pushed or self.reset or self.refound
        )

    def line(self) -> str:
        if self.missing:
            return f"{self.folder}: not on the server"
        parts = []
        if self.added:
            parts.append(f"{self.added} new")
        if self.malformed:
            parts.append(f"{self.malformed} kept raw (could not be read)")
        if self.flags_changed:
            parts.append(f"{self.flags_changed} flag changes")
        if self.deleted_on_server:
            parts.append(f"{self.deleted_on_server} deleted on server (kept here)")
        if self.pushed:
            parts.append(f"{self.pushed} local flag changes sent")
        if self.reset:
            parts.append(f"reset on the server, {self.refound} found again")
        if self.too_large:
            parts.append(f"{len(self.too_large)} too large to download")
        return f"{self.folder}: " + (", ".join(parts) if parts else "up to date")


@dataclass
class SyncReport:
    folders: list[FolderReport] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # one line each, for the user
    threads: int = 0  # conversations created or updated
    seconds: float = 0.0
    quick: bool = False  # answered by the no-change check, nothing was opened

    @property
    def added(self) -> int:
        return sum(f.added for f in self.folders)

    @property
    def changed(self) -> bool:
        return any(f.changed for f in self.folders)

    @property
    def notice(self) -> str | None:
        """All notices as one line (UIDVALIDITY reset, missing folder, too-large messages)."""
        return " | ".join(self.notices) if self.notices else None

    def line(self) -> str:
        body = "; ".join(f.line() for f in self.folders) or "nothing to sync"
        threads = f"; {self.threads} conversations updated" if self.threads else ""
        return f"sync done: {body}{threads} ({self.seconds:.1f} s)"


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """The background sync's state for the status bar; ``line()`` is what to show.

    ``state``: starting, connecting, connected, syncing, offline, busy (another process syncs this
    store), paused (the store is locked), stopped.
    """

    state: str = "starting"
    folder: str = ""
    done: int = 0
    total: int = 0
    offline_since: datetime | None = None
    last_error: str | None = None  # one line, no mail content
    last_sync: datetime | None = None
    new_messages: int = 0  # added by the last sync

    def line(self, tz: tzinfo | None = None) -> str:
        if self.state == "syncing":
            if self.total:
                return f"syncing {self.done} of {self.total}"
            return "syncing"
        if self.state == "offline":
            since = self.offline_since.astimezone(tz).strftime("%H:%M") if self.offline_since else "?"
            why = f": {self.last_error}" if self.last_error else ""
            return f"offline since {since}{why}"
        if self.state == "busy":
            return "not syncing: another carebox is syncing this store"
        if self.state == "paused":
            return "sync paused while carebox is locked"
        if self.state == "connecting":
            return "connecting"
        if self.state == "connected":
            return "connected"
        if self.state == "stopped":
            return "sync stopped"
        return "starting"


# ---- parsing off the event loop --------------------------------------------------------------------


class _ParseTimeout(BaseException):  # BaseException: parse_message's last-resort `except Exception` must not eat it
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _ParseTimeout


_MSGID_RE = re.compile(rb"^message-id:[ \t]*<([^<>\r\n]{1,500})>", re.IGNORECASE | re.MULTILINE)


def unparsed(raw: bytes, problem: str) -> ParsedMessage:
    """What is kept of a message the parser could not finish: the raw bytes (stored beside it),
    its Message-ID when a bounded look at its head finds one, and the problem."""
    from carebox.domain.models import Address, ParsedMessage

    head = raw[: raw.find(b"\r\n\r\n") if b"\r\n\r\n" in raw[:65536] else 65536]
    m = _MSGID_RE.search(head)
    msgid = m.group(1).decode("ascii", "replace").strip() if m else ""
    return ParsedMessage(
        message_id=msgid,
        in_reply_to=(),
        references=(),
        subject="",
        sender=Address("", ""),
        to=(),
        cc=(),
        reply_to=(),
        date=None,
        body="",
        malformed=True,
        problem=problem,
    )


def _parse_chunk(raws: list[bytes], budget: float) -> list[ParsedMessage]:
    """Runs in a worker process's main thread: SIGALRM stops a parse that exceeds ``budget``."""
    from carebox.mail.parse import parse_message

    out: list[ParsedMessage] = []
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        for raw in raws:
            signal.setitimer(signal.ITIMER_REAL, budget)
            try:
                out.append(parse_message(raw))
            except _ParseTimeout:
                out.append(unparsed(raw, f"reading it took longer than {budget:g} s: kept raw"))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, old)
    return out


def _parse_seal_chunk(
    raws: list[bytes], dates: list[datetime | None], budget: float, sealing: tuple[tuple[bytes, bytes], str]
) -> list[tuple[ParsedMessage, SealedMessage]]:
    """In a worker process: ``_parse_chunk``, then each message's row sealed (with the store's
    sealing keys, never its data key); the parsed message goes back without its attachment bytes."""
    import dataclasses

    from carebox.store.crypto import Cipher
    from carebox.store.sealing import seal_message

    keys, professional = sealing
    cipher = Cipher.for_sealing(keys)
    out = []
    for raw, date, p in zip(raws, dates, _parse_chunk(raws, budget), strict=True):
        sealed = seal_message(cipher, professional, raw, p, date)
        if p.attachments:
            p = dataclasses.replace(p, attachments=tuple(dataclasses.replace(a, data=b"") for a in p.attachments))
        out.append((p, sealed))
    cipher.forget()
    return out


def _warm() -> int:
    return os.getpid()


class MessageParser:
    """Parses batches of raw messages without blocking the event loop.

    ``mode="process"``: a pool of worker processes (forkserver: clean children, no copy of the
    app's threads), each message under a SIGALRM budget, with an outer deadline that kills the pool
    if a worker is stuck in C code. ``mode="thread"``: a thread per message in flight; a message over
    budget is given up on (its thread finishes on its own: every parser cost is capped).
    ``mode="auto"`` uses processes for downloads of ``POOL_MIN`` messages or more on a machine with
    at least ``POOL_MIN_CPUS`` CPUs, threads otherwise. One worker per CPU beyond the first, at most
    two; each batch goes to them in one piece per worker (fewer, larger messages between processes).
    A message over budget is stored raw and flagged malformed.
    """

    def __init__(self, mode: str = "auto", *, budget: float = PARSE_BUDGET, workers: int | None = None) -> None:
        mode = os.environ.get(_PARSE_MODE_ENV, mode)
        if mode not in ("auto", "process", "thread"):
            raise ValueError("parse mode must be auto, process or thread")
        self.mode = mode
        self.budget = budget
        self.workers = workers or max(1, min(2, (os.cpu_count() or 1) - 1))
        self._pool: ProcessPoolExecutor | None = None
        self._background: ProcessPoolExecutor | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._starting: Any = None  # the thread that starts the workers (``prestart(wait=False)``)

    def wants_pool(self, n_messages: int) -> bool:
        if self.mode == "process":
            return True
        if self.mode == "thread":
            return False
        return n_messages >= POOL_MIN and (os.cpu_count() or 1) >= POOL_MIN_CPUS

    def prestart(self, *, wait: bool = True) -> None:
        """Start the worker processes now (they start in the background while the first batch
        downloads); once: a second call does nothing. The first worker is only forked when the
        forkserver has imported its modules (about 0.2 s); ``wait=False`` leaves that wait to a
        thread, so the caller (the event loop) goes on at once."""
        if self._starting is not None:
            return
        pool = self._get_pool()

        def start() -> None:
            with contextlib.suppress(Exception):  # closed meanwhile: nothing to start
                for _ in range(self.workers):
                    pool.submit(_warm)

        if wait:
            self._starting = True
            start()
            return
        import threading

        self._starting = threading.Thread(target=start, name="carebox-prestart", daemon=True)
        self._starting.start()

    def executor(self) -> ProcessPoolExecutor | None:
        """The worker processes, when this sync started them (threading lends them work too)."""
        return self._pool

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=_mp_context())
        return self._pool

    def background(self) -> ProcessPoolExecutor:
        """One more worker process, at a lower priority (nice +10): work handed to it uses the
        CPU time that parsing, fetching and storing leave over, without slowing them (a sync's
        thread inspection during the download: safety.EarlyInspection)."""
        if self._background is None:
            from concurrent.futures import ProcessPoolExecutor

            self._background = ProcessPoolExecutor(max_workers=1, mp_context=_mp_context(), initializer=_lower_priority)
        return self._background

    def _get_threads(self) -> ThreadPoolExecutor:
        if self._threads is None:
            from concurrent.futures import ThreadPoolExecutor

            self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="carebox-parse")
        return self._threads

    async def parse(self, raws: Sequence[bytes], *, pool: bool = False) -> list[ParsedMessage]:
        if not raws:
            return []
        if pool:
            try:
                return await self._parse_processes(list(raws))
            except _PoolBroken:
                log.warning("parse workers failed; parsing in a thread instead")
        return await self._parse_threads(list(raws))

    async def parse_sealed(
        self,
        raws: Sequence[bytes],
        dates: Sequence[datetime | None],
        sealing: tuple[tuple[bytes, bytes], str],
        *,
        pool: bool = False,
    ) -> list[tuple[ParsedMessage, SealedMessage | None]]:
        """``parse``, and with worker processes also each message's row sealed in the worker
        (``store.sealing.seal_message``: ``sealing`` is the store's ``Cipher.sealing_keys()`` and
        professional address, ``dates`` the INTERNALDATEs), so the store thread only inserts.
        The attachment bytes of a sealed message are not sent back (they are in its rows).
        Parsed in a thread (no workers, or a failed worker): (message, None), sealed when stored."""
        if not raws:
            return []
        if pool:
            try:
                return await self._parse_processes(list(raws), (list(dates), sealing))
            except _PoolBroken:
                log.warning("parse workers failed; parsing in a thread instead")
        return [(p, None) for p in await self._parse_threads(list(raws))]

    async def _parse_processes(self, raws: list[bytes], sealed: tuple[list[Any], Any] | None = None) -> list[Any]:
        from concurrent.futures.process import BrokenProcessPool

        loop = asyncio.get_running_loop()
        pool = self._get_pool()
        n_chunks = max(1, min(len(raws), self.workers))
        size = -(-len(raws) // n_chunks)
        chunks = [raws[i : i + size] for i in range(0, len(raws), size)]
        if sealed is None:
            futs = [loop.run_in_executor(pool, _parse_chunk, c, self.budget) for c in chunks]
        else:
            dates, sealing = sealed
            futs = [
                loop.run_in_executor(pool, _parse_seal_chunk, c, dates[i : i + size], self.budget, sealing)
                for i, c in zip(range(0, len(raws), size), chunks, strict=True)
            ]
        for f in futs:
            f.add_done_callback(_retrieve)
        # every message has its own SIGALRM budget; this deadline only catches a stuck worker
        deadline = self.budget * size * 2 + 30
        out: list[Any] = []
        try:
            for chunk, fut in zip(chunks, futs, strict=True):
                try:
                    out.extend(await asyncio.wait_for(asyncio.shield(fut), deadline))
                except TimeoutError:
                    self._kill_pool()
                    fallback = await self._parse_threads(chunk)
                    out.extend(fallback if sealed is None else [(p, None) for p in fallback])
                except BrokenProcessPool:
                    self._kill_pool()
                    raise _PoolBroken from None
        finally:
            for f in futs:
                if not f.done():
                    f.cancel()
        return out

    async def _parse_threads(self, raws: list[bytes]) -> list[ParsedMessage]:
        """One thread parses the batch in order while the event loop watches the clock: a message
        over budget is given up on (kept raw) and a fresh thread goes on with the next one. (One
        executor call per batch: a call per message cost about a second per 10,000 messages.)"""
        import threading

        from carebox.mail.parse import parse_message

        loop = asyncio.get_running_loop()
        results: list[ParsedMessage | None] = [None] * len(raws)
        poll = max(0.01, min(self.budget / 4, 0.25))
        i = 0
        while i < len(raws):
            lock = threading.Lock()
            given_up = threading.Event()
            at = [i, time.monotonic()]  # the message being parsed and when it started

            def work(first: int = i, lock: threading.Lock = lock, given_up: threading.Event = given_up, at=at) -> None:
                for j in range(first, len(raws)):
                    with lock:
                        if given_up.is_set():
                            return
                        at[0], at[1] = j, time.monotonic()
                    parsed = parse_message(raws[j])
                    with lock:
                        if given_up.is_set():
                            return
                        results[j] = parsed
                with lock:
                    at[0] = len(raws)

            fut = loop.run_in_executor(self._get_threads(), work)
            fut.add_done_callback(_retrieve)
            while True:
                await asyncio.wait({fut}, timeout=poll)
                if fut.done():
                    fut.result()
                    i = len(raws)
                    break
                with lock:
                    j, started = at
                    if time.monotonic() - started <= self.budget or results[j] is not None:
                        continue
                    given_up.set()
                results[j] = unparsed(raws[j], f"reading it took longer than {self.budget:g} s: kept raw")
                # leave that thread to finish on its own (every parser cost is capped); go on in a fresh one
                stuck, self._threads = self._threads, None
                if stuck is not None:
                    stuck.shutdown(wait=False, cancel_futures=True)
                i = j + 1
                break
        return [
            r if r is not None else unparsed(raws[k], "it could not be read: kept raw") for k, r in enumerate(results)
        ]

    def _kill_pool(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None and starting is not True:
            starting.join()
        pool, self._pool = self._pool, None
        background, self._background = self._background, None
        for p in (pool, background):
            if p is not None:
                _kill(p)

    def close(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None and starting is not True:
            starting.join()  # its workers are being started: shut them down below
        pool, self._pool = self._pool, None
        background, self._background = self._background, None
        for p in (background, pool):
            if p is not None:
                p.shutdown(wait=True, cancel_futures=True)
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)


def _mp_context() -> Any:
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")  # clean children, no copy of the app's threads
    ctx.set_forkserver_preload(["carebox.mail.parse", "carebox.store.sealing"])
    return ctx


def _lower_priority() -> None:
    with contextlib.suppress(OSError):
        os.nice(10)


def _kill(pool: ProcessPoolExecutor) -> None:
    procs = list(getattr(pool, "_processes", {}).values())  # no public way to stop a running task
    for p in procs:
        with contextlib.suppress(Exception):
            p.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _store_thread() -> ThreadPoolExecutor:
    """The one thread that runs store calls for a sync (SQLite writes are serial anyway)."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="carebox-store")


class _PoolBroken(Exception):
    pass


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a worker future's outcome as seen (a given-up future must not log "never retrieved")."""
    if not fut.cancelled():
        fut.exception()


# ---- one sync pass over a connected client ---------------------------------------------------------


_SETTABLE = re.compile(r"\\?[A-Za-z0-9$_.\-]+")


def _size_text(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    return f"{max(1, round(n / 1024))} KB"


def _settable(flag: str) -> bool:
    return bool(_SETTABLE.fullmatch(flag)) and flag.lower() != "\\recent"


def _server_flags(flags: Iterable[str]) -> frozenset[str]:
    return frozenset(f for f in flags if f.lower() != "\\recent")


def configured_folders(config: Config) -> list[tuple[str, str]]:
    """(folder, role) to sync: inbox, sent, then the extra folders, each once."""
    account = config.account
    if account is None:
        return []
    f = account.folders
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, role in ((f.inbox, "inbox"), (f.sent, "sent"), *((x, "other") for x in f.extra)):
        key = name.upper() if name.upper() == "INBOX" else name
        if name and key not in seen:
            seen.add(key)
            out.append((name, role))
    return out


def _inspectors(session: Session) -> list[Any]:
    try:
        from carebox.services.safety import safety_inspector
    except ImportError:  # pragma: no cover - the safety service is part of this build
        return []
    return [safety_inspector(session.store, session.config)]


class _SyncRun:
    """One pass over every configured folder with one connected client."""

    def __init__(
        self,
        session: Session,
        client: ImapClient,
        *,
        parser: MessageParser,
        progress: Callable[[SyncProgress], None] | None = None,
        store_executor: ThreadPoolExecutor | None = None,
        now: Callable[[], datetime] | None = None,
        opening: _Opening | None = None,
    ) -> None:
        self.session = session
        self._opening = opening  # the first folder, selected and searched before the store was open
        self.store: Store = session.store
        self.client = client
        self.parser = parser
        self.progress = progress
        self.report = SyncReport()
        self._own_executor = store_executor is None
        self._db_pool = store_executor or _store_thread()
        self._now = now or (lambda: datetime.now(UTC))
        self._stale_threads: set[str] = set()  # summaries to refresh (flags changed)
        self._touched: set[str] = set()  # conversations created or updated by this pass
        self._inspectors: list[Any] | None = None
        self._provisional_threads: Any = None
        self._added: Any = None  # threads.AddedMessages: the rows this pass added, as written
        self._marked = False  # the provisional-threads mark is set (by this pass or an unfinished one)
        self._drain: Any = None  # syncstate.WalDrain during a long download
        self._early: Any = None  # safety.EarlyInspection while the workers inspect during a download

    # -- plumbing --

    @property
    def _provisional(self) -> Any:
        if self._provisional_threads is None:
            from carebox.services.threads import ProvisionalThreads

            self._provisional_threads = ProvisionalThreads()
        return self._provisional_threads

    async def db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a store call in the store thread: the event loop (the UI's) never waits on SQLite or AES."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_pool, functools.partial(fn, *args, **kwargs))

    def _tell(self, phase: str, folder: str = "", done: int = 0, total: int = 0) -> None:
        if self.progress is not None:
            try:
                self.progress(SyncProgress(phase, folder, done, total))
            except Exception as exc:  # a display problem must not stop the sync
                log.error("sync progress callback failed (%s)", type(exc).__name__)

    def close(self) -> None:
        if self._own_executor:
            self._db_pool.shutdown(wait=True)

    # -- the pass --

    async def run(self, folders: Sequence[tuple[str, str]] | None = None) -> SyncReport:
        started = time.monotonic()
        todo = list(folders) if folders is not None else configured_folders(self.session.config)
        # The objects made before the pass (modules, the app, the store) and, at threading, those
        # the download left (the inspector's, the held messages) are not garbage: the collector's
        # full passes skip them until the pass ends (each pass over everything cost 0.1-0.2 s of
        # CPU, three or four times in a 10,000-message sync). Collection itself goes on.
        gc.freeze()
        try:
            for name, role in todo:
                self.report.folders.append(await self._folder(name, role))
            self._tell("threading")
            gc.freeze()
            await self.db(self._thread_all)
            if self._drain is not None:
                await self.db(self._drain.stop)  # after threading's big UPDATE is drained too
        finally:
            gc.unfreeze()
            if self._drain is not None:
                self._drain.stop(wait=False)
        self.report.seconds = time.monotonic() - started
        self._tell("done")
        return self.report

    def _thread_all(self) -> None:
        from carebox.services.threads import refresh_threads, rethread
        from carebox.store.syncstate import THREADS_PENDING_META, threads_pending_after, unthreaded_count

        if self._early is not None:
            self._early.finish()  # the workers inspect what is left while the threads are worked out
        after = threads_pending_after(self.store)
        if not self._stale_threads and after is None and not unthreaded_count(self.store):
            return  # nothing to do: do not even load the safety inspector's patient directory
        if self._inspectors is None or any(
            getattr(i, "directory_changed", lambda store: False)(self.store) for i in self._inspectors
        ):  # made during the download (_warm_checks): the patient directory must not have changed since
            self._inspectors = _inspectors(self.session)
        pool = self.parser.executor()
        for inspector in self._inspectors:
            if pool is not None and hasattr(inspector, "executor"):
                inspector.executor = pool  # a big refresh shares the checks with the workers
        ids = rethread(self.store, self.session.policy, self._inspectors, overlap=True, after=after, added=self._added)
        self._added = None
        if after is not None:  # every provisional thread is final and summarised now
            self.store.set_meta(THREADS_PENDING_META, "")
        self._touched |= ids
        stale = sorted(self._stale_threads - ids)
        self._stale_threads.clear()
        if stale:
            existing = set(self.store.thread_facts(stale))
            stale = [t for t in stale if t in existing]
            for i in range(0, len(stale), 2000):
                refresh_threads(
                    self.store, self.session.policy, thread_ids=stale[i : i + 2000], inspectors=self._inspectors
                )
            self._touched.update(stale)
        self.report.threads = len(self._touched)

    async def _folder(self, name: str, role: str) -> FolderReport:
        from carebox.mail.imap import ImapProtocolError
        from carebox.store import syncstate as S

        fr = FolderReport(name, role)
        client = self.client
        self._tell("checking", name)
        st = await self.db(S.folder_state, self.store, name)
        opening, self._opening = self._opening, None
        if opening is not None and (opening.folder != name or st is not None or client.selected != name):
            opening.cancel()
            opening = None  # not this folder, or not a new store's: ask the server as usual
        qresync = (st.uidvalidity, st.highestmodseq) if st and st.uidvalidity and st.highestmodseq else None
        try:
            info = opening.info if opening is not None else await client.select(name, qresync=qresync)
        except ImapProtocolError as exc:
            if client.broken or "does not exist" not in str(exc):
                raise
            fr.missing = True
            self.report.notices.append(
                f"folder {name!r} does not exist on the server: it was not synced (check [account.folders])"
            )
            return fr
        uv = info.uidvalidity
        known = await self.db(S.known_messages, self.store, name)
        reset_key = f"sync.reset.{name}"
        if st is not None and st.uidvalidity is not None and st.uidvalidity != uv:
            # the server renumbered the folder: re-match everything, delete nothing
            detached_before = await self.db(S.count_detached, self.store, name)
            await self.db(self.store.set_meta, reset_key, str(len(known) + detached_before))
            await self.db(S.detach_folder, self.store, name, role=role, uidvalidity=uv)
            known, st = {}, await self.db(S.folder_state, self.store, name)
        elif known and (st is None or st.uidvalidity is None):
            # rows from a first batch whose position was never written (crash in between):
            # their UIDVALIDITY is unknown, so they are re-matched like after a reset (same bytes)
            await self.db(S.detach_folder, self.store, name, role=role, uidvalidity=uv)
            known, st = {}, await self.db(S.folder_state, self.store, name)
        same = st is not None and st.uidvalidity == uv
        start = st.uidnext if same and st is not None and st.uidnext else 1

        # Read everything the server says first; the store is written only once messages arrive
        # (a server failing in the middle of a download leaves the store as it was).
        new_uids: list[int] | None = None
        updates: list[tuple[int, frozenset[str], int | None]] = []
        vanished: list[int] = []
        if known:
            if info.qresync_applied:
                updates = [(u.uid, _server_flags(u.flags), u.modseq) for u in info.changed]
                vanished = list(info.vanished)
            else:
                server_uids = await client.search_uids("ALL") if info.exists else []
                present = set(server_uids)
                vanished = [u for u, k in known.items() if not k.deleted_on_server and u not in present]
                new_uids = [u for u in server_uids if u >= start and u not in known]
                if not info.exists:
                    flag_list = []
                elif client.condstore_enabled and st is not None and st.highestmodseq:
                    flag_list = await client.uid_flags("1:*", changedsince=st.highestmodseq)
                else:
                    flag_list = await client.uid_flags("1:*")
                updates = [
                    (u.uid, _server_flags(u.flags), u.modseq)
                    for u in flag_list
                    if u.uid in known
                    and (u.modseq != known[u.uid].modseq or _server_flags(u.flags) != known[u.uid].flags)
                ]
            updates = [x for x in updates if x[0] in known]
        if new_uids is None:
            if opening is not None:  # asked as below (a new store: nothing known, start 1)
                new_uids = list(opening.uids)
            elif not info.exists or (info.uidnext and info.uidnext <= start):
                new_uids = []
            else:
                found = await client.search_uids(f"UID {start}:*")
                new_uids = [u for u in found if u >= start and u not in known]

        if new_uids:
            await self._download(name, role, uv, new_uids, fr, opening=opening)
        if updates:
            n, threads = await self.db(S.apply_server_flags, self.store, name, updates)
            fr.flags_changed += n
            self._stale_threads |= threads
        if vanished:
            n, threads = await self.db(S.mark_deleted_on_server, self.store, name, vanished)
            fr.deleted_on_server += n
            self._stale_threads |= threads

        await self._push(name, fr)

        if await self.db(self.store.get_meta, reset_key):
            before = int(await self.db(self.store.get_meta, reset_key) or 0)
            left = await self.db(S.count_detached, self.store, name)
            fr.reset = True
            fr.not_refound = left
            fr.refound = max(0, before - left)
            if before:
                self.report.notices.append(
                    f"folder {name!r} was renumbered on the server (UIDVALIDITY changed): {fr.refound} of {before} "
                    f"stored messages were found again; {left} no longer on the server are kept here and marked "
                    "as deleted on the server. Nothing was deleted."
                )
        if fr.too_large:
            uid, size = next(iter(sorted(fr.too_large.items())))
            limit = self.client.settings.max_literal_bytes
            more = f" and {len(fr.too_large) - 1} more" if len(fr.too_large) > 1 else ""
            self.report.notices.append(
                f"folder {name!r}: message UID {uid}{more} ({_size_text(size)}) is larger than the "
                f"{_size_text(limit)} download limit and was not downloaded; read it in your webmail"
            )

        uidnext = info.uidnext or (max(new_uids) + 1 if new_uids else start)
        await self.db(
            S.save_position,
            self.store,
            name,
            role=role,
            uidvalidity=uv,
            uidnext=uidnext,
            highestmodseq=info.highestmodseq,
            last_sync=self._now(),
        )
        if fr.reset:
            await self.db(self.store.set_meta, reset_key, "")
        self._tell("checking", name, 0, 0)
        return fr

    async def _download(
        self,
        name: str,
        role: str,
        uv: int,
        uids: list[int],
        fr: FolderReport,
        *,
        opening: _Opening | None = None,
    ) -> None:
        """``opening``: what a new store's first sync asked in this selection before the store
        was open (the first slice's sizes, batches already downloaded): used first."""
        from carebox.mail.imap import ImapMessageTooLarge

        client = self.client
        total = len(uids)
        done = 0
        use_pool = self.parser.wants_pool(total)
        if use_pool:
            self.parser.prestart()
        if total >= DRAIN_MIN and self._drain is None:
            from carebox.store.syncstate import WalDrain

            self._drain = WalDrain(self.store)
            self._drain.start()
        claims = await self.db(_has_uidless, self.store, name)
        # With worker processes, they seal the rows too (the store thread only inserts them), as
        # long as they keep up: when a commit had to wait for its batch, the next batch is sealed
        # by the store thread instead (whichever side is idle takes the sealing).
        sealing = (self.store.cipher.sealing_keys(), self.store.professional) if use_pool else None
        worker_seals = sealing is not None
        self._tell("downloading", name, 0, total)
        queue: asyncio.Queue[tuple[list[FetchedMessage], asyncio.Future[list[ParsedMessage]]]] = asyncio.Queue(
            QUEUE_BATCHES
        )

        async def produce() -> None:
            # fetch_batches asks the sizes of all its UIDs before the first body (10,000 sizes took
            # Dovecot 0.9 s): a small first slice starts the pipeline at once, later slices ask
            # theirs while earlier batches are parsed and stored
            todo = sorted(uids)
            slice_size = SIZES_FIRST * BATCH
            known = None
            if opening is not None:
                last = opening.last_uid
                for item in opening.batches:
                    await queue.put(item)
                opening.batches = []
                todo = [u for u in todo if u > last]
                rest = [u for u in opening.sized if u > last]
                if opening.sizes is not None and rest and todo[: len(rest)] == rest:  # the first slice's rest
                    slice_size, known = len(rest), {u: n for u, n in opening.sizes.items() if u > last}
            while todo:
                remaining, todo = todo[:slice_size], todo[slice_size:]
                slice_size = SIZES_NEXT * BATCH
                while remaining:
                    first, known = known, None
                    try:
                        async for batch in client.fetch_batches(remaining, BATCH, sizes=first):
                            raws = [m.raw for m in batch]
                            if sealing is None or not worker_seals:
                                fut = asyncio.ensure_future(self.parser.parse(raws, pool=use_pool))
                            else:
                                dates = [m.internaldate for m in batch]
                                fut = asyncio.ensure_future(self.parser.parse_sealed(raws, dates, sealing, pool=True))
                            await queue.put((batch, fut))
                        remaining = []
                    except ImapMessageTooLarge as exc:  # nothing of that slice was downloaded
                        fr.too_large.update(exc.oversized)
                        remaining = [u for u in remaining if u not in exc.oversized]

        async def commit(batch: list[FetchedMessage], fut: asyncio.Future[list[Any]]) -> None:
            nonlocal done, worker_seals
            if sealing is not None:
                worker_seals = fut.done()
            parsed = await fut
            if use_pool and not done:
                # threading lends the workers its checks, and they inspect threads during the download
                await self.db(self._warm_checks)
            await self.db(self._store_batch, name, role, uv, batch, parsed, fr, claims)
            if self._drain is not None:
                self._drain.poke()
            done += len(batch)
            self._tell("downloading", name, done, total)

        prod = asyncio.ensure_future(produce())
        try:
            while True:
                get = asyncio.ensure_future(queue.get())
                finished, _ = await asyncio.wait({get, prod}, return_when=asyncio.FIRST_COMPLETED)
                if get in finished:
                    await commit(*get.result())
                    continue
                get.cancel()
                # the download ended (or failed): commit the complete batches that arrived first
                while not queue.empty():
                    await commit(*queue.get_nowait())
                prod.result()
                break
        finally:
            if not prod.done():
                prod.cancel()
                with contextlib.suppress(BaseException):
                    await prod
            while not queue.empty():
                _, fut = queue.get_nowait()
                fut.cancel()

    def _warm_checks(self) -> None:
        """Make this pass's inspectors now and let the parse workers build their checks between
        batches (they wait for the store thread about half the time of a download)."""
        pool = self.parser.executor()
        if pool is None:
            return
        if self._inspectors is None:
            self._inspectors = _inspectors(self.session)
        for inspector in self._inspectors:
            if hasattr(inspector, "warm"):
                inspector.warm(pool)
            if self._early is None and hasattr(inspector, "early"):
                from carebox.services.safety import EarlyInspection

                self._early = inspector.early = EarlyInspection(inspector, self.parser.background())

    def _mark_provisional(self) -> None:
        """Before the first row with a provisional thread id: note where they start (a crash
        leaves the mark; the next sync's threading finishes them)."""
        from carebox.store.syncstate import THREADS_PENDING_META, threads_pending_after

        if threads_pending_after(self.store) is None:
            self.store.set_meta(THREADS_PENDING_META, str(self.store.last_message_rowid()))

    def _store_batch(
        self,
        name: str,
        role: str,
        uv: int,
        batch: list[FetchedMessage],
        results: list[Any],
        fr: FolderReport,
        claims: bool,
    ) -> None:
        """In the store thread: claim re-found rows, add the rest (one transaction), then move the
        position past this batch (data before state). ``results``: ParsedMessage each, or
        (ParsedMessage, SealedMessage | None) from ``MessageParser.parse_sealed``."""
        from carebox.store import syncstate as S
        from carebox.store.store import NewMessage

        if results and isinstance(results[0], tuple):
            parsed: list[ParsedMessage] = [r[0] for r in results]
            sealed: list[SealedMessage | None] = [r[1] for r in results]
        else:
            parsed, sealed = results, [None] * len(results)
        if not self._marked:  # the store is written only once messages arrive
            self._mark_provisional()
            self._marked = True
        thread_ids = self._provisional.assign(parsed)  # rows written with a thread id, not updated later
        items: list[NewMessage] = [
            NewMessage(
                raw=m.raw,
                parsed=p,
                uid=m.uid,
                flags=_server_flags(m.flags),
                internal_date=m.internaldate,
                source=f"imap:{m.uid}",
                thread_id=tid,
                sealed=sm,
            )
            for m, p, tid, sm in zip(batch, parsed, thread_ids, sealed, strict=True)
        ]
        if claims:
            claim_items = [
                S.ClaimItem(
                    it.uid or 0,
                    it.flags,
                    None,
                    S.content_token(self.store, it.raw),
                    S.msgid_token(self.store, it.parsed.message_id) if it.parsed.message_id else "",
                )
                for it in items
            ]
            result = S.claim_detached(self.store, name, claim_items)
            fr.already += len(result.claimed)
            self._stale_threads |= result.threads
            items = [it for it in items if it.uid not in result.claimed]
        added = self.store.add_messages(name, items, role=role)
        if self._added is None:
            from carebox.services.threads import AddedMessages

            self._added = AddedMessages()
        self._added.note(added, items)
        fr.added += len(added.added)
        fr.already += added.duplicates
        fr.malformed += added.malformed
        if claims:
            S.mark_present(self.store, name, [m.uid for m in batch])
        S.save_position(self.store, name, role=role, uidvalidity=uv, uidnext=max(m.uid for m in batch) + 1)
        if self._early is not None:
            try:
                self._early.add(
                    (mid, items[i].thread_id, when, self.store.is_outgoing(items[i].parsed), items[i].parsed)
                    for i, mid, when in added.placed
                )
            except Exception as exc:  # only a head start: threading inspects everything anyway
                log.warning("early thread inspection stopped (%s)", type(exc).__name__)
                self._early = None

    async def _push(self, name: str, fr: FolderReport) -> None:
        """Send the journaled local flag changes of this folder, then mark them done."""
        from carebox.mail.imap import ImapProtocolError
        from carebox.store import syncstate as S

        pending = await self.db(S.pending_flag_changes, self.store, name)
        if not pending:
            return
        done_ids: list[int] = []
        groups: dict[tuple[frozenset[str], frozenset[str]], list[S.PendingPush]] = {}
        for p in pending:
            if p.deleted_on_server:
                done_ids.extend(p.journal_ids)  # no server copy to change any more
                continue
            if p.uid is None:
                continue  # a local copy not on the server yet: pushed once it has a UID
            add = frozenset(f for f in p.add if _settable(f))
            remove = frozenset(f for f in p.remove if _settable(f))
            if not add and not remove:
                done_ids.extend(p.journal_ids)
                continue
            groups.setdefault((add, remove), []).append(p)
        problem = None
        for (add, remove), items in groups.items():
            try:
                await self.client.store_flags([p.uid for p in items if p.uid is not None], add=add, remove=remove)
            except ImapProtocolError as exc:
                if self.client.broken:
                    raise
                problem = str(exc)
                continue
            fr.pushed += len(items)
            for p in items:
                done_ids.extend(p.journal_ids)
        await self.db(S.mark_flag_changes_done, self.store, done_ids)
        if problem:
            self.report.notices.append(
                f"folder {name!r}: some local flag changes could not be sent ({problem}); they are kept and retried"
            )


def _has_uidless(store: Store, name: str) -> bool:
    from sqlalchemy import select

    from carebox.store import syncstate as S
    from carebox.store import tables as T

    st = S.folder_state(store, name)
    if st is None:
        return False
    with store.engine.connect() as conn:
        row = conn.execute(
            select(T.Message.id).where(T.Message.folder_id == st.id, T.Message.uid.is_(None)).limit(1)  # type: ignore[union-attr]
        ).first()
    return row is not None


# ---- carebox sync -----------------------------------------------------------------------------------


def _default_factory(settings: ImapSettings) -> ImapClient:
    from carebox.mail.imap import ImapClient

    return ImapClient(settings)


async def sync_once(
    session: Session,
    *,
    client_factory: Callable[[ImapSettings], ImapClient] | None = None,
    progress: Callable[[SyncProgress], None] | None = None,
    parser: MessageParser | None = None,
    lock: bool = True,
) -> SyncReport:
    """One sync of the configured folders (``carebox sync``).

    Raises ``SyncBusy`` when another process syncs this store, ``AccountProblem`` when the
    account cannot be used, and ``ImapError`` subclasses (one line each) for server problems;
    whatever was committed before an error stays, and the next sync continues from there.
    """
    from carebox.services.accounts import imap_settings

    held = SyncLock(session.store_dir).acquire() if lock else None
    own_parser = parser is None
    parser = parser or MessageParser()
    try:
        if progress is not None:
            progress(SyncProgress("connecting"))
        settings = imap_settings(session.config, session.store)
        client = (client_factory or _default_factory)(settings)
        run = _SyncRun(session, client, parser=parser, progress=progress)
        try:
            await client.connect()
            report = await run.run()
        finally:
            with contextlib.suppress(Exception):
                await client.logout()
            run.close()
        return report
    finally:
        if own_parser:
            parser.close()
        if held is not None:
            held.release()


# ---- the first sync of a new store -------------------------------------------------------------------


@dataclass
class _Opening:
    """What the first sync of a new store asked about its first folder before the store was
    open: the SELECT, the new UIDs (``UID SEARCH UID 1:*``, as ``_SyncRun._folder`` asks with
    nothing known) and the sizes of the download's first slice (``sized``)."""

    folder: str
    info: SelectInfo
    uids: list[int]
    sized: list[int]
    sizes: dict[int, int] | None  # what ``message_sizes(sized)`` answered; None: not asked
    # batches of the first slice downloaded (and handed to the parse workers) while the store
    # was being opened: (batch, its parse future), in UID order
    batches: list[tuple[list[FetchedMessage], asyncio.Future[list[Any]]]] = field(default_factory=list)

    @property
    def last_uid(self) -> int:
        return self.batches[-1][0][-1].uid if self.batches else 0

    def cancel(self) -> None:
        for _, fut in self.batches:
            fut.cancel()


PREFETCH_BATCHES = 4  # batches a new store's first sync downloads at most while its store opens


async def _prefetch(
    client: ImapClient,
    opening: _Opening,
    parser: MessageParser,
    sealing: tuple[tuple[bytes, bytes], str],
    until: asyncio.Future[Any],
) -> None:
    """Download the first slice's batches and hand them to the parse workers (which seal the rows
    too) until ``until`` is done (the store is about to be made) or ``PREFETCH_BATCHES`` are
    waiting. Only what ``_download`` would do first, sooner: it commits them before anything else."""
    batches = client.fetch_batches(opening.sized, BATCH, sizes=opening.sizes)
    try:
        async for batch in batches:
            if not batch:
                continue
            fut = asyncio.ensure_future(
                parser.parse_sealed([m.raw for m in batch], [m.internaldate for m in batch], sealing, pool=True)
            )
            opening.batches.append((batch, fut))
            if until.done() or len(opening.batches) >= PREFETCH_BATCHES:
                break
    finally:
        await batches.aclose()


async def _open_first_folder(client: ImapClient, name: str, parser: MessageParser) -> _Opening | None:
    """SELECT ``name`` and ask what a new store's pass would ask next (the sizes of the first
    slice are asked by the caller); start the parse workers (in a thread) when they will be
    wanted. None for a folder that does not exist: the pass selects it again and reports it."""
    from carebox.mail.imap import ImapProtocolError

    try:
        info = await client.select(name)
    except ImapProtocolError as exc:
        if client.broken or "does not exist" not in str(exc):
            raise
        return None
    uids: list[int] = []
    if info.exists and not (info.uidnext and info.uidnext <= 1):
        uids = sorted(u for u in await client.search_uids("UID 1:*") if u >= 1)
    if uids and parser.wants_pool(len(uids)):
        parser.prestart(wait=False)
    return _Opening(name, info, uids, uids[: SIZES_FIRST * BATCH], None)


async def sync_new_store(
    config: Config,
    make_store: Callable[[], Session],
    *,
    ready: Callable[[], Any] | None = None,
    new_key: Any = None,
    client_factory: Callable[[ImapSettings], ImapClient] | None = None,
    progress: Callable[[SyncProgress], None] | None = None,
    parser: MessageParser | None = None,
) -> SyncReport:
    """The first ``carebox sync`` of a store that does not exist yet (hold the SyncLock).

    Connecting, logging in, and the first folder's SELECT, UID SEARCH and first sizes need
    neither the store nor its key: they are asked while ``ready`` runs in a thread (it writes
    nothing: it loads the store's modules and waits for the new key being made). Only when both
    have succeeded is the store made: ``make_store`` (in the store thread) keeps the key and
    creates the store, and the pass goes on with what was asked. A failure before that (no
    password, server down, bad certificate, login refused; or one of ``ready``, such as a
    passphrase command that fails) is raised once ``ready`` has finished, with the connection
    closed and nothing written. The session made is closed at the end.

    ``new_key``: a ``concurrent.futures.Future`` of the ``keys.NewKey`` being made (``ready``
    waits for it too). With it, a download big enough for the parse workers starts while the
    store opens: the first batches are fetched and parsed, and sealed with keys derived from the
    new key (``_prefetch``); they are committed first, once the store exists.
    """
    from carebox.services.accounts import imap_settings
    from carebox.services.background import in_thread

    settings = imap_settings(config, None)  # a new store holds no password: from the keychain or the command
    # While ``ready`` imports (it holds the GIL ~0.5 s), the event loop, waiting on the server,
    # gets the GIL back within 1 ms instead of 5 ms after each answer arrives.
    interval = sys.getswitchinterval()
    if ready is not None:
        sys.setswitchinterval(min(interval, 0.001))
    prepared = in_thread(ready, "carebox-ready") if ready is not None else None
    own_parser = parser is None
    parser = parser or MessageParser()
    client = (client_factory or _default_factory)(settings)
    db_pool = _store_thread()
    session: Session | None = None
    try:
        failure: BaseException | None = None
        opening = None
        try:
            if progress is not None:
                progress(SyncProgress("connecting"))
            await client.connect()
            folders = configured_folders(config)
            if folders:
                opening = await _open_first_folder(client, folders[0][0], parser)
            big = opening is not None and parser.wants_pool(len(opening.uids))
            if opening is not None and big and new_key is not None and prepared is not None:
                if progress is not None:  # where ``_download`` says it too: before the sizes are asked
                    progress(SyncProgress("downloading", opening.folder, 0, len(opening.uids)))
                opening.sizes = await client.message_sizes(opening.sized)
                key = (await asyncio.wrap_future(new_key)).data_key
                from carebox.store.crypto import Cipher

                cipher = Cipher(key)
                sealing = (cipher.sealing_keys(), config.professional_address)
                cipher.forget()
                await _prefetch(client, opening, parser, sealing, asyncio.wrap_future(prepared))
            elif opening is not None and opening.sized:
                opening.sizes = await client.message_sizes(opening.sized)
        except BaseException as exc:  # raised below, once ``ready`` is done
            failure = exc
        if prepared is not None:
            try:
                await asyncio.wrap_future(prepared)
            except BaseException as exc:
                failure = failure or exc
            sys.setswitchinterval(interval)
        if failure is not None:
            if opening is not None:
                opening.cancel()
            raise failure
        loop = asyncio.get_running_loop()
        session = await loop.run_in_executor(db_pool, make_store)
        run = _SyncRun(session, client, parser=parser, progress=progress, store_executor=db_pool, opening=opening)
        return await run.run()
    finally:
        sys.setswitchinterval(interval)
        with contextlib.suppress(Exception):
            await client.logout()
        db_pool.shutdown(wait=True)
        if own_parser:
            parser.close()
        if session is not None:
            session.close()


# ---- the no-change fast path of `carebox sync` ---------------------------------------------------


def _quick_settings(config: Config) -> ImapSettings | None:
    """ImapSettings from the config and the keychain or password_command, without the store.
    (The same as services.accounts.imap_settings minus the sealed-password fallback, which
    needs the store key; that module imports the store, which is what this path avoids.)"""
    from carebox.mail.imap import ImapSettings
    from carebox.mail.tls import TlsMode

    account = config.account
    if account is None:
        return None
    try:
        if account.password_command:
            # keys.get_account_password's password_command branch, without importing keyring and
            # cryptography for it (about 50 ms of the 0.6 s budget)
            import shlex
            import subprocess

            out = subprocess.run(shlex.split(account.password_command), capture_output=True, timeout=60, check=True)
            password = out.stdout.decode("utf-8").rstrip("\r\n")
        else:
            from carebox.store.keys import get_account_password

            password = get_account_password(account.address, None)
    except Exception:
        return None
    if not password:
        return None
    s = account.imap
    port = s.port or {"implicit": 993, "starttls": 143, "none": 143}[s.tls]
    return ImapSettings(
        host=s.host,
        port=port,
        username=account.username,
        password=password,
        tls=TlsMode(s.tls),
        ca_file=s.ca_file,
        allow_insecure=s.allow_insecure,
    )


async def quick_check(
    config: Config,
    store_dir: Path,
    *,
    client_factory: Callable[[ImapSettings], ImapClient] | None = None,
) -> SyncReport | None:
    """Answer a no-change ``carebox sync`` without opening the store: read each folder's
    position (clear columns, read-only, no key), STATUS each folder, and return a report when
    nothing changed anywhere (same UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and message count; no
    local flag change waiting; nothing unthreaded). None means: do the full sync. Connection,
    TLS and login failures raise ``ImapError`` as the full sync would. Hold the SyncLock around it."""
    from carebox.store.syncstate import quick_state

    started = time.monotonic()
    folders = configured_folders(config)
    state = quick_state(store_dir)
    if state is None or not folders or state.unthreaded:
        return None
    for name, _ in folders:
        f = state.folders.get(name)
        if f is None or not (f.uidvalidity and f.uidnext and f.highestmodseq):
            return None
        if state.pending_by_folder.get(name):
            return None
    settings = _quick_settings(config)
    if settings is None:
        return None
    from carebox.mail.imap import ImapProtocolError

    client = (client_factory or _default_factory)(settings)
    report = SyncReport(quick=True)
    try:
        await client.connect()  # connection, TLS and login errors are raised: the full sync would meet them too
        if "CONDSTORE" not in client.capabilities:
            return None
        for name, role in folders:
            f = state.folders[name]
            try:
                st = await client.status(name)
            except ImapProtocolError:  # e.g. a missing folder: the full sync reports it
                return None
            if (
                st.get("UIDVALIDITY") != f.uidvalidity
                or st.get("UIDNEXT") != f.uidnext
                or st.get("HIGHESTMODSEQ") != f.highestmodseq
                or st.get("MESSAGES") != f.on_server
            ):
                return None
            report.folders.append(FolderReport(name, role))
    finally:
        with contextlib.suppress(Exception):
            await client.logout()
    report.seconds = time.monotonic() - started
    return report


# ---- the app's background sync ----------------------------------------------------------------------


BACKOFF = (2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class BackgroundSync:
    """Keeps the store in step with the server while the app runs.

    ``start()`` launches a task on the running loop: sync everything, then IDLE on the inbox;
    new mail or flag changes wake it for an incremental sync; every ``resync_every`` seconds it
    syncs every folder anyway (which also proves the connection alive: a half-open connection
    fails the IDLE's DONE within the settings' timeout). A failure closes the client, shows
    "offline since HH:MM" and retries with backoff (2 s, 5 s, ... 5 min); ``wake()`` retries or
    syncs at once ("sync now"; also call it after journaling a local flag change to push it).
    The sync lock is held while running; if another process holds it, the status says so and
    it retries. Store work runs in a thread, parsing in workers: the event loop never blocks.

    The status bar reads ``status.line(tz)``, or subscribes with ``on_status``; ``on_synced``
    gets each :class:`SyncReport` (refresh the inbox when ``report.added`` or ``report.changed``).
    """

    def __init__(
        self,
        session: Session,
        *,
        client_factory: Callable[[ImapSettings], ImapClient] | None = None,
        on_status: Callable[[SyncStatus], None] | None = None,
        on_synced: Callable[[SyncReport], None] | None = None,
        resync_every: float = 300.0,
        backoff: Sequence[float] = BACKOFF,
        parser: MessageParser | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.session = session
        self.client_factory = client_factory or _default_factory
        self.on_status = on_status
        self.on_synced = on_synced
        self.resync_every = resync_every
        self.backoff = tuple(backoff) or BACKOFF
        self.parser = parser or MessageParser()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._status = SyncStatus()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: ImapClient | None = None
        self._lock = SyncLock(session.store_dir)
        self._db_pool: ThreadPoolExecutor | None = None
        self._failures = 0
        self.syncs = 0  # completed sync passes
        self.last_report: SyncReport | None = None

    # -- public --

    @property
    def status(self) -> SyncStatus:
        return self._status

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start syncing on the running loop (again after ``stop()`` too). Do not start it for a demo
        store or a config without ``[account]`` (it would only show the problem and retry)."""
        if not self.running:
            if self._db_pool is None:
                self._db_pool = _store_thread()
            self._task = asyncio.get_running_loop().create_task(self._main(), name="carebox-background-sync")

    def wake(self) -> None:
        """Sync now (or retry now when offline)."""
        self._wake.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # On Python 3.11 a cancellation can be lost when it arrives just as an inner
            # ``asyncio.wait_for`` completes (CPython gh-86296): the task would go on syncing and
            # `await task` never return (an app that cannot quit). Cancel until it has ended.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.5)
            with contextlib.suppress(BaseException):
                task.result()
        await self._drop_client()
        self._lock.release()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.parser.close)  # waits for worker processes: off the loop
        pool, self._db_pool = self._db_pool, None
        if pool is not None:
            await loop.run_in_executor(None, functools.partial(pool.shutdown, wait=True))
        self._set(state="stopped")

    # -- internals --

    def _set(self, **changes: Any) -> None:
        import dataclasses

        self._status = dataclasses.replace(self._status, **changes)
        if self.on_status is not None:
            try:
                self.on_status(self._status)
            except Exception as exc:
                log.error("sync status callback failed (%s)", type(exc).__name__)

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.logout(), 5)

    async def _sleep_or_wake(self, seconds: float) -> bool:
        """Wait ``seconds`` or until ``wake()``; True when woken."""
        woken = True
        try:
            async with asyncio.timeout(seconds):  # not wait_for: it can lose a cancellation (see stop)
                await self._wake.wait()
        except TimeoutError:
            woken = False
        self._wake.clear()
        return woken

    def _progress(self, p: SyncProgress) -> None:
        if p.phase == "downloading":
            self._set(state="syncing", folder=p.folder, done=p.done, total=p.total)
        elif p.phase in ("checking", "threading") and self._status.state != "syncing":
            self._set(state="syncing", folder=p.folder, done=0, total=0)

    async def _main(self) -> None:
        from carebox.mail.imap import ImapError
        from carebox.services.accounts import AccountProblem
        from carebox.store.crypto import Locked

        while True:
            try:
                if self.session.store.cipher.locked:
                    self._set(state="paused")
                    await self._drop_client()
                    await self._sleep_or_wake(30.0)
                    continue
                self._lock.acquire()
                await self._connected_loop()
            except asyncio.CancelledError:
                raise
            except SyncBusy:
                self._set(state="busy")
                await self._retry_later()
                continue
            except Locked:
                await self._drop_client()
                await self._sleep_or_wake(1.0)
                continue  # shows "paused" on the next turn
            except (ImapError, AccountProblem, OSError) as exc:
                message = str(exc) or type(exc).__name__
            except Exception as exc:  # never let the background task die silently
                log.error("background sync failed (%s)", type(exc).__name__)  # no traceback: it may quote mail
                message = f"unexpected sync error ({type(exc).__name__})"
            else:
                continue
            await self._drop_client()
            if self._status.state != "offline":
                self._set(state="offline", offline_since=self._clock(), last_error=message, done=0, total=0)
            else:
                self._set(last_error=message)
            await self._retry_later()

    async def _retry_later(self) -> None:
        delay = self.backoff[min(self._failures, len(self.backoff) - 1)]
        self._failures += 1
        if await self._sleep_or_wake(delay):
            self._failures = 0  # the user asked to retry now

    async def _connected_loop(self) -> None:
        from carebox.services.accounts import imap_settings

        self._set(state="connecting")
        assert self._db_pool is not None
        settings = await asyncio.get_running_loop().run_in_executor(
            self._db_pool, imap_settings, self.session.config, self.session.store
        )
        client = self.client_factory(settings)
        self._client = client
        await client.connect()
        folders = configured_folders(self.session.config)
        inbox = folders[0][0] if folders else "INBOX"
        full_due = 0.0
        while True:
            loop = asyncio.get_running_loop()
            everything = loop.time() >= full_due
            self._wake.clear()
            run = _SyncRun(
                self.session,
                client,
                parser=self.parser,
                progress=self._progress,
                store_executor=self._db_pool,
                now=self._clock,
            )
            report = await run.run(folders if everything else [f for f in folders if f[0] == inbox])
            if everything:
                full_due = loop.time() + self.resync_every
            self.syncs += 1
            self._failures = 0
            self.last_report = report
            self._set(
                state="connected",
                offline_since=None,
                last_error=None,
                last_sync=self._clock(),
                new_messages=report.added,
                done=0,
                total=0,
                folder="",
            )
            if self.on_synced is not None:
                try:
                    self.on_synced(report)
                except Exception as exc:
                    log.error("sync report callback failed (%s)", type(exc).__name__)
            if client.selected != inbox:
                await client.select(inbox)
            wait = max(1.0, full_due - loop.time())
            events = await client.idle(timeout=wait, wake=self._wake)
            if self._wake.is_set():
                full_due = 0.0  # "sync now" means every folder
            elif not events:
                full_due = 0.0
