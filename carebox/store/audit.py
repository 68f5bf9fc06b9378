"""The audit trail: append-only, each entry chained to the one before by a MAC.

An entry holds its sequence number, time, action and an opaque reference (thread or outbox ids,
never an address or a subject). Its MAC (HMAC-SHA256 with the store's audit key, see
``Cipher.audit_mac``) covers ``[seq, time, action, ref, previous entry's MAC]``, so editing,
removing or reordering entries breaks the chain.

Removing entries from the end leaves a shorter chain that is still consistent, so the last
sequence number and MAC are also kept in the meta table (``audit_head``) in the same
transaction: a truncated tail no longer matches that head. Limits: someone who can write the
database can roll back both the tail and the head to an earlier state together (or delete the
whole trail and its head); catching that needs a copy of the head kept outside the store
(``head()`` gives it, e.g. for a printed or exported record).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError

from carebox.store import tables as T
from carebox.store.store import Store, db_time, utc

HEAD_META = "audit_head"
GENESIS = "carebox-audit-v1"  # the "previous MAC" of the first entry
_RETRIES = 5


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    at: datetime  # aware UTC
    action: str
    ref: str
    mac: str


@dataclass(frozen=True, slots=True)
class AuditCheck:
    ok: bool
    count: int
    problems: tuple[str, ...] = ()

    def line(self) -> str:
        if self.ok:
            return f"audit trail intact: {self.count} entries, every link verified"
        return f"audit trail damaged: {len(self.problems)} problem(s) in {self.count} entries"


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def entry_mac(store: Store, seq: int, at: datetime, action: str, ref: str, prev: str) -> str:
    data = json.dumps([seq, _stamp(at), action, ref, prev], separators=(",", ":"), ensure_ascii=True)
    return store.cipher.audit_mac(data.encode("ascii"))


def append(store: Store, action: str, ref: str = "", at: datetime | None = None) -> AuditRecord:
    """Append one entry (and move the head) in one transaction. Concurrent writers retry."""
    when = (at or datetime.now(UTC)).astimezone(UTC)
    for attempt in range(_RETRIES):
        try:
            with store.engine.begin() as conn:
                newest = select(T.AuditEntry.seq, T.AuditEntry.mac).order_by(T.AuditEntry.seq.desc())  # type: ignore[attr-defined]
                last = conn.execute(newest.limit(1)).first()
                seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
                mac = entry_mac(store, seq, when, action, ref, prev)
                conn.execute(insert(T.AuditEntry).values(seq=seq, at=db_time(when), action=action, ref=ref, mac=mac))
                conn.execute(
                    text(
                        "INSERT INTO meta (key, value) VALUES (:k, :v) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value"
                    ),
                    {"k": HEAD_META, "v": f"{seq}:{mac}"},
                )
            return AuditRecord(seq, when, action, ref, mac)
        except IntegrityError:
            if attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def entries(store: Store, *, limit: int | None = None, newest_first: bool = False) -> list[AuditRecord]:
    q = select(T.AuditEntry.seq, T.AuditEntry.at, T.AuditEntry.action, T.AuditEntry.ref, T.AuditEntry.mac)
    q = q.order_by(T.AuditEntry.seq.desc() if newest_first else T.AuditEntry.seq)  # type: ignore[attr-defined]
    if limit is not None:
        q = q.limit(limit)
    with store.engine.connect() as conn:
        return [AuditRecord(int(s), utc(a), act, ref, mac) for s, a, act, ref, mac in conn.execute(q)]  # type: ignore[arg-type]


def head(store: Store) -> tuple[int, str] | None:
    """(last sequence number, its MAC) as recorded in the meta table; None when never written."""
    value = store.get_meta(HEAD_META)
    if not value or ":" not in value:
        return None
    seq, _, mac = value.partition(":")
    try:
        return int(seq), mac
    except ValueError:
        return (-1, mac)


def verify(store: Store) -> AuditCheck:
    """Check every link, the sequence, and the head. Problems are worded with sequence numbers
    only."""
    problems: list[str] = []
    rows = entries(store)
    prev = GENESIS
    expected = 1
    for r in rows:
        if r.seq != expected:
            if r.seq > expected:
                gap = f"entry {expected}" if r.seq == expected + 1 else f"entries {expected}-{r.seq - 1}"
                problems.append(f"{gap} missing (removed)")
            else:
                problems.append(f"entry {r.seq} out of sequence")
        if entry_mac(store, r.seq, r.at, r.action, r.ref, prev) != r.mac:
            problems.append(f"entry {r.seq} fails its MAC: altered, moved, or the entry before it was removed")
        prev = r.mac
        expected = r.seq + 1
    recorded = head(store)
    if rows:
        last = rows[-1]
        if recorded is None:
            problems.append("the audit head is missing from the store (entries may have been removed)")
        elif recorded != (last.seq, last.mac):
            if recorded[0] > last.seq:
                problems.append(f"entries after {last.seq} up to {recorded[0]} missing (removed from the end)")
            else:
                problems.append(f"the audit head (entry {recorded[0]}) does not match the last entry {last.seq}")
    elif recorded is not None:
        problems.append(f"all {recorded[0]} entries missing (the trail was emptied)")
    return AuditCheck(not problems, len(rows), tuple(problems))
