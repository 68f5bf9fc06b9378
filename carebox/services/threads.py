"""Threading and deadlines over the store: new mail joins its conversation, and every thread
it touches gets its state and due time recomputed under the practice's policy."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from carebox.config import DAY_NAMES, PolicyConfig
from carebox.domain.deadlines import Policy, summarize
from carebox.domain.models import Address, MessageRef, ThreadState
from carebox.domain.threading import assign_thread_ids, thread_groups
from carebox.store.store import Store, ThreadFacts, new_id

POLICY_META = "policy_fingerprint"
OVERLAP_MIN = 500  # messages to (re)assign before rethread(overlap=True) writes them beside the summaries

# Thread-level checks (urgency, sender status, scope) plug in here: a function that looks at a
# thread's decrypted heads and returns extra clear columns for its row.
ThreadInspector = Callable[[Store, str, Sequence[MessageRef], dict[str, Any]], dict[str, Any]]


def policy_from_config(cfg: PolicyConfig) -> Policy:
    return Policy(
        response_hours=cfg.response_hours,
        business_hours=cfg.business_span(),
        working_days=frozenset(DAY_NAMES.index(d) for d in cfg.working_days),
        holidays=frozenset(cfg.holidays) if cfg.holidays else frozenset[date](),
        tz=ZoneInfo(cfg.timezone),
        category_hours=dict(cfg.category_hours),
    )


def policy_fingerprint(policy: Policy) -> str:
    data = {
        "h": policy.response_hours,
        "b": [str(t) for t in policy.business_hours] if policy.business_hours else None,
        "w": sorted(policy.working_days),
        "x": sorted(str(d) for d in policy.holidays),
        "z": str(policy.tz),
        "c": sorted(policy.category_hours.items()),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def rethread(
    store: Store, policy: Policy, inspectors: Iterable[ThreadInspector] = (), *, overlap: bool = False
) -> set[str]:
    """Give every unthreaded message a thread, merging threads it links, and refresh the
    summaries of all threads touched. Returns the ids of the threads now holding them.

    With ``overlap`` the messages' thread ids are written by a second connection while the
    summaries (and inspectors) are computed, and committed before the summaries are written
    (the same two transactions in the same order; SQLite does the big UPDATE without the GIL)."""
    new_refs = store.unthreaded_refs()
    if not new_refs:
        return set()
    tokens: set[str] = set()
    fallback: set[tuple[str, str]] = set()
    for ref in new_refs:
        tokens.add(ref.message_id)
        tokens.update(ref.parents)
        if not ref.parents and ref.reply_prefix:
            fallback.add((ref.subject_key, ref.counterpart))
    # Threads that the new mail links to, and threads holding messages that point at new mail.
    linked = store.threads_linked_to(tokens) | store.threads_by_subject(fallback)
    existing_refs = store.refs_of_threads(linked)
    existing: dict[str, str] = {}
    if existing_refs:
        for tid, keys in store.thread_message_keys(sorted(linked)).items():
            for key in keys:
                existing[key] = tid
    refs = existing_refs + new_refs
    groups = thread_groups(refs)
    assignment = assign_thread_ids(groups, existing, new_id)
    changed = {k: t for k, t in assignment.items() if existing.get(k) != t}
    now_ids = set(assignment.values())
    gone = linked - now_ids
    by_thread: dict[str, list[MessageRef]] = {}
    for ref in refs:
        by_thread.setdefault(assignment[ref.key], []).append(ref)
    if not overlap or len(changed) < OVERLAP_MIN:
        store.assign_threads(changed)
        refresh_threads(store, policy, by_thread, remove=gone, inspectors=inspectors)
        return now_ids
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="carebox-assign") as pool:
        assigned = pool.submit(store.assign_threads, changed)
        try:
            refresh_threads(store, policy, by_thread, remove=gone, inspectors=inspectors, before_write=assigned.result)
        finally:
            assigned.result()  # never leave the UPDATE running (or its failure unseen)
    return now_ids


def refresh_threads(
    store: Store,
    policy: Policy,
    by_thread: dict[str, list[MessageRef]] | None = None,
    *,
    thread_ids: Iterable[str] = (),
    remove: Iterable[str] = (),
    inspectors: Iterable[ThreadInspector] = (),
    before_write: Callable[[], object] | None = None,
) -> None:
    """Recompute the summary rows of the given threads (from refs or by id). ``before_write`` is
    called just before the rows are written (rethread's overlap waits there for its UPDATE)."""
    if by_thread is None:
        by_thread = {}
    wanted = [t for t in thread_ids if t not in by_thread]
    if wanted:
        keys = store.thread_message_keys(wanted)
        refs_by_key = {r.key: r for r in store.refs_of_threads(wanted)}
        for tid, ks in keys.items():
            by_thread[tid] = [refs_by_key[k] for k in ks if k in refs_by_key]
    facts = store.thread_facts(by_thread)
    # Decrypt only what the row shows: the first message (subject, and the patient when the
    # practice wrote first) and the first patient message (who the patient is).
    firsts: dict[str, tuple[MessageRef, MessageRef | None]] = {}
    for tid, refs in by_thread.items():
        if refs:
            ordered = sorted(refs, key=lambda r: (r.date, r.outgoing, r.key))
            firsts[tid] = (ordered[0], next((r for r in ordered if not r.outgoing), None))
    needed = {r.key for pair in firsts.values() for r in pair if r is not None}
    heads = store.message_heads(sorted(needed))
    flags = store.message_flags([r.key for refs in by_thread.values() for r in refs if not r.outgoing])
    rows: list[dict[str, Any]] = []
    inspectors = list(inspectors)
    for inspect in inspectors:  # let an inspector read what it needs in a few queries, not one per thread
        if hasattr(inspect, "prefetch"):
            inspect.prefetch(store, by_thread)
    for tid, refs in by_thread.items():
        if not refs:
            continue
        f = facts.get(tid, ThreadFacts(tid, None, None))
        summary = summarize(refs, policy, f.tag, f.category, tagged_at=f.tagged_at)
        first, first_in = firsts[tid]
        if first_in is not None:
            patient = heads[first_in.key][0]
        else:
            to = heads[first.key][1]
            patient = to[0] if to else Address("", "")
        subject = heads[first.key][2]
        unread = sum(1 for r in refs if not r.outgoing and "\\Seen" not in flags.get(r.key, ()))
        row: dict[str, Any] = {
            "id": tid,
            "state": summary.state.value,
            "waiting_since": summary.waiting_since,
            "due_at": summary.due_at,
            "last_date": summary.last_date,
            "message_count": summary.message_count,
            "unread": unread,
            "counterpart_token": first_in.counterpart if first_in else first.counterpart,
            "patient_name": patient.name,
            "patient_addr": patient.addr,
            "subject": subject,
        }
        if tid not in facts:
            row.update({"tag": None, "category": None, "tagged_at": None, "urgent": False, "sender_status": ""})
        for inspect in inspectors:
            row.update(inspect(store, tid, refs, row))
        if row.get("category", f.category) != f.category:
            # An inspector chose the category (e.g. "results"): its response window applies now.
            summary = summarize(refs, policy, f.tag, row["category"], tagged_at=f.tagged_at)
            row.update(state=summary.state.value, waiting_since=summary.waiting_since, due_at=summary.due_at)
        rows.append(row)
    if before_write is not None:
        before_write()
    store.write_threads(rows, remove=remove)


def recompute_all(store: Store, policy: Policy, inspectors: Iterable[ThreadInspector] = ()) -> int:
    ids = store.all_thread_ids()
    for i in range(0, len(ids), 2000):
        refresh_threads(store, policy, thread_ids=ids[i : i + 2000], inspectors=inspectors)
    store.set_meta(POLICY_META, policy_fingerprint(policy))
    return len(ids)


def ensure_policy(store: Store, policy: Policy) -> bool:
    """Recompute every deadline when the policy changed since they were computed."""
    if store.get_meta(POLICY_META) == policy_fingerprint(policy):
        return False
    recompute_all(store, policy)
    return True


def set_tag(store: Store, policy: Policy, thread_id: str, tag: str | None, *, at: Any = None) -> None:
    """Tag a thread (out-of-scope category, ``redirect:phone``...) or clear the tag."""
    store.set_thread_fields(thread_id, tag=tag, tagged_at=at if tag else None)
    refresh_threads(store, policy, thread_ids=[thread_id])


def is_open(state: str) -> bool:
    return state == ThreadState.WAITING.value
