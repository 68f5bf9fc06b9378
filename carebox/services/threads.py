"""Threading and deadlines over the store: new mail joins its conversation, and every thread
it touches gets its state and due time recomputed under the practice's policy."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from carebox.domain.deadlines import Policy, summarize
from carebox.domain.models import Address, MessageRef, ParsedMessage, ThreadState
from carebox.domain.threading import assign_thread_ids, thread_groups
from carebox.services.policy import POLICY_META, policy_fingerprint, policy_from_config  # noqa: F401 - re-exported
from carebox.store.store import AddResult, NewMessage, Store, ThreadFacts, new_id, parent_ids

OVERLAP_MIN = 500  # messages to (re)assign before rethread(overlap=True) writes them beside the summaries

# Thread-level checks (urgency, sender status, scope) plug in here: a function that looks at a
# thread's decrypted heads and returns extra clear columns for its row.
ThreadInspector = Callable[[Store, str, Sequence[MessageRef], dict[str, Any]], dict[str, Any]]


class ProvisionalThreads:
    """Thread ids for messages as a download stores them, so that their rows are written with a
    thread id once instead of rewritten by rethread's UPDATE (which copies every row, blobs and
    all). In memory, by Message-ID: a message takes the thread of the first message that carried
    or named one of its Message-ID and parent ids (what rethread's token links do). Only a guess:
    ``rethread(..., after=rowid)`` then threads those rows exactly as if they had none (subject
    fallback, links to older threads, merges) and rewrites only the rows whose thread differs."""

    def __init__(self) -> None:
        self._by_id: dict[str, str] = {}

    def assign(self, messages: Sequence[ParsedMessage]) -> list[str]:
        out: list[str] = []
        by_id = self._by_id
        for p in messages:
            ids = [i for i in (p.message_id, *parent_ids(p)) if i]
            tid = next((by_id[i] for i in ids if i in by_id), None) or new_id()
            for i in ids:
                by_id.setdefault(i, tid)
            out.append(tid)
        return out


ADDED_HOLD = 200_000  # messages AddedMessages keeps (a few hundred bytes each); later ones are read back


class AddedMessages:
    """What a sync pass added with provisional thread ids, kept as it was written: rethread and
    refresh_threads take those rows' refs, thread ids, heads (sender, recipients, subject) and
    flags from here instead of reading the rows back and decrypting them.

    Only what ``note`` was given after a committed ``Store.add_messages`` is here, by rowid: any
    other row after the mark (one an interrupted pass wrote, one this pass wrote but could not note)
    is read from the store as before. The rows' values never change before rethread: only this pass
    writes rows after its mark, and their flags only change for UIDs that were stored before it.

    Held as tuples of strings, dates and flags (objects the garbage collector stops tracking), not
    as MessageRef and Address objects: tens of thousands of those held through a download made the
    collector's full passes longer and more frequent. The objects are made when threading asks."""

    def __init__(self, hold: int = ADDED_HOLD) -> None:
        # (rowid of the first row, MessageRef fields of each row, thread id of each row)
        self._runs: list[tuple[int, list[tuple[Any, ...]], list[str]]] = []
        self._heads: dict[str, tuple[str, str, tuple[tuple[str, str], ...], str]] = {}
        self._flags: dict[str, str] = {}  # as the flags column holds them
        self.hold = hold

    def __len__(self) -> int:
        return len(self._heads)

    def note(self, result: AddResult, items: Sequence[NewMessage]) -> bool:
        """Keep the rows ``result`` says were added from ``items`` (whole, or not at all)."""
        first = result.first_rowid
        placed = result.placed
        if first is None or not placed or len(self) + len(placed) > self.hold:
            return False
        tids = [items[pos].thread_id for pos, _, _ in placed]
        if len(result.refs) != len(placed) or None in result.refs or None in tids:
            return False
        if self._runs and first <= self._runs[-1][0] + len(self._runs[-1][1]) - 1:
            return False  # runs are kept in rowid order
        refs: list[tuple[Any, ...]] = list(result.refs)  # type: ignore[arg-type]
        heads, flags = self._heads, self._flags
        for pos, mid, _ in placed:
            it = items[pos]
            p = it.parsed
            sender = p.sender
            # what Store.message_heads / message_flags read back: the values as sealed and stored
            heads[mid] = (sender.name, sender.addr, tuple([(a.name, a.addr) for a in p.to]), p.subject)
            flags[mid] = " ".join(sorted(it.flags)) if it.flags else ""
        if self._runs and self._runs[-1][0] + len(self._runs[-1][1]) == first:
            self._runs[-1][1].extend(refs)
            self._runs[-1][2].extend(tids)  # type: ignore[arg-type]
        else:
            self._runs.append((first, refs, tids))  # type: ignore[arg-type]
        return True

    def runs(self) -> list[tuple[int, list[MessageRef], list[str]]]:
        """The rows held, as ``Store.threaded_refs_after`` takes them: (rowid of the first row of
        a run of consecutive rows, their refs, their thread ids), in rowid order."""
        return [(first, [MessageRef(*r) for r in refs], tids) for first, refs, tids in self._runs]

    def heads(self, keys: Iterable[str]) -> dict[str, tuple[Address, tuple[Address, ...], str]]:
        """(sender, to, subject) of those of ``keys`` held, as ``Store.message_heads`` gives them."""
        out: dict[str, tuple[Address, tuple[Address, ...], str]] = {}
        held = self._heads
        for k in keys:
            h = held.get(k)
            if h is not None:
                out[k] = (Address(h[0], h[1]), tuple(Address(n, a) for n, a in h[2]), h[3])
        return out

    def flags(self, keys: Iterable[str]) -> dict[str, frozenset[str]]:
        """Flags of those of ``keys`` held, as ``Store.message_flags`` gives them."""
        held = self._flags
        return {k: frozenset(held[k].split()) for k in keys if k in held}


def _assign_preferring_summarised(
    groups: Sequence[Sequence[MessageRef]], existing: dict[str, str], summarised: set[str]
) -> dict[str, str]:
    """assign_thread_ids, except that a thread with a summary row (one that existed before this
    download) keeps its id before a provisional one does: an old conversation keeps its id."""
    result: dict[str, str] = {}
    taken: set[str] = set()
    for group in groups:
        known = {existing[m.key] for m in group if m.key in existing}
        ordered = sorted(known & summarised, key=_id_order) + sorted(known - summarised, key=_id_order)
        thread_id = next((t for t in ordered if t not in taken), None)
        if thread_id is None:
            thread_id = new_id()
        taken.add(thread_id)
        for m in group:
            result[m.key] = thread_id
    return result


def _id_order(thread_id: str) -> tuple[int, str]:
    return (len(thread_id), thread_id)  # as domain.threading orders ids


def rethread(
    store: Store,
    policy: Policy,
    inspectors: Iterable[ThreadInspector] = (),
    *,
    overlap: bool = False,
    after: int | None = None,
    added: AddedMessages | None = None,
) -> set[str]:
    """Give every unthreaded message a thread, merging threads it links, and refresh the
    summaries of all threads touched. Returns the ids of the threads now holding them.

    With ``after`` (a message rowid) the messages added after it that hold a provisional thread id
    (``ProvisionalThreads``) are threaded as if they had none: the same groups; each keeps its
    provisional id unless an older conversation (one with a summary row) takes it in, and only
    rows whose id changes are rewritten.

    With ``overlap`` the messages' thread ids are written by a second connection while the
    summaries (and inspectors) are computed, and committed before the summaries are written
    (the same two transactions in the same order; SQLite does the big UPDATE without the GIL).

    ``added`` (with ``after``): the rows this pass added, as it wrote them (``AddedMessages``);
    they are not read back."""
    new_refs = store.unthreaded_refs()
    provisional: dict[str, str] = {}
    if after is not None:
        placed, provisional = store.threaded_refs_after(after, added.runs() if added is not None else ())
        new_refs += placed
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
    # With a mark, every row after it that has a thread is in ``provisional``: only older rows are
    # looked up.
    linked = (
        store.threads_linked_to(tokens, upto=after)
        | store.threads_by_subject(fallback, upto=after)
        | set(provisional.values())
    )
    summarised: set[str] = set()
    loaded = linked
    if provisional and after is not None:
        # A provisional thread (no summary row, rows added after the mark only) was read whole
        # above: only the other threads are read.
        summarised = set(store.thread_facts(sorted(linked)))
        candidates = (linked - summarised) & set(provisional.values())
        whole = candidates - store.threads_with_rows_upto(candidates, after)
        loaded = linked - whole
    existing_refs = store.refs_of_threads(loaded)
    existing: dict[str, str] = {}
    if existing_refs:
        for tid, keys in store.thread_message_keys(sorted(loaded)).items():
            for key in keys:
                existing[key] = tid
    if provisional:
        seen = {r.key for r in existing_refs}
        refs = existing_refs + [r for r in new_refs if r.key not in seen]
        for key, tid in provisional.items():
            existing.setdefault(key, tid)
        assignment = _assign_preferring_summarised(thread_groups(refs), existing, summarised)
    else:
        refs = existing_refs + new_refs
        assignment = assign_thread_ids(thread_groups(refs), existing, new_id)
    changed = {k: t for k, t in assignment.items() if existing.get(k) != t}
    now_ids = set(assignment.values())
    gone = linked - now_ids
    by_thread: dict[str, list[MessageRef]] = {}
    for ref in refs:
        by_thread.setdefault(assignment[ref.key], []).append(ref)
    if not overlap or len(changed) < OVERLAP_MIN:
        store.assign_threads(changed)
        refresh_threads(store, policy, by_thread, remove=gone, inspectors=inspectors, added=added)
        return now_ids
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="carebox-assign") as pool:
        assigned = pool.submit(store.assign_threads, changed)
        try:
            refresh_threads(
                store,
                policy,
                by_thread,
                remove=gone,
                inspectors=inspectors,
                before_write=assigned.result,
                added=added,
            )
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
    added: AddedMessages | None = None,
) -> None:
    """Recompute the summary rows of the given threads (from refs or by id). ``before_write`` is
    called just before the rows are written (rethread's overlap waits there for its UPDATE).
    ``added``: heads and flags of messages held in memory (the others are read)."""
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
    incoming = [r.key for refs in by_thread.values() for r in refs if not r.outgoing]
    heads: dict[str, tuple[Any, ...]] = {}
    flags: dict[str, frozenset[str]] = {}
    if added is not None and len(added):
        heads = added.heads(needed)
        needed = {k for k in needed if k not in heads}
        flags = added.flags(incoming)
        incoming = [k for k in incoming if k not in flags]
    if needed:
        heads.update(store.message_heads(sorted(needed)))
    if incoming:
        flags.update(store.message_flags(incoming))
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
