"""Provisional thread ids (a download's rows written with a thread id) end up threaded exactly as
rows without one would be: same conversations, same summaries; older conversations keep their ids."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from carebox.domain.models import MessageRef
from carebox.services.safety import safety_inspector
from carebox.services.threads import AddedMessages, ProvisionalThreads, rethread
from carebox.store.crypto import Cipher
from carebox.store.store import DB_FILE, NewMessage, Store
from tests.factories import DOC, DOCTOR, message, patient
from tests.services.test_safety_services import CONFIG, NOW, POLICY

A, B, C = patient(1), patient(2), patient(3)


def old_mail() -> list[NewMessage]:
    return [
        message("old1@x", sender=A, to=DOC, subject="Knee", body="my knee hurts", hours=-100, uid=1),
        message("old2@x", sender=DOC, to=A, subject="Re: Knee", hours=-99, in_reply_to="old1@x", uid=2),
        message("lone@x", sender=C, to=DOC, subject="Results", body="are my results back?", hours=-90, uid=3),
    ]


def new_batches() -> list[list[NewMessage]]:
    return [
        [
            # a reply to an old conversation, by header
            message("n1@x", sender=A, to=DOC, subject="Re: Knee", body="still hurts", hours=-10, in_reply_to="old2@x"),
            # a child that arrives before its parent (the parent comes in the next batch)
            message("n2@x", sender=B, to=DOC, subject="Re: Rash", body="photo attached", hours=-5, in_reply_to="n3@x"),
            # two conversations that a later message joins
            message("n4@x", sender=B, to=DOC, subject="Dose", body="which dose?", hours=-8),
            message("n5@x", sender=B, to=DOC, subject="Dose 2", body="chest pain since this morning", hours=-7),
        ],
        [
            message("n3@x", sender=B, to=DOC, subject="Rash", body="a rash on my arm", hours=-6),
            message("n6@x", sender=B, to=DOC, subject="Re: Dose", hours=-4, references=("n4@x", "n5@x")),
            # a header-less reply placed by subject into an old conversation
            message("n7@x", sender=C, to=DOC, subject="Re: Results", body="any news?", hours=-3),
            message("n8@x", sender=A, to=DOC, subject="New", body="new question", hours=-2),
            # the practice writes first (the row shows its recipient as the patient)
            message("n9@x", sender=DOC, to=patient(4), subject="Your appointment", hours=-1),
        ],
    ]


def numbered(batches: list[list[NewMessage]]) -> list[list[NewMessage]]:
    uid = 10
    out = []
    for batch in batches:
        out.append([])
        for m in batch:
            uid += 1
            out[-1].append(dataclasses.replace(m, uid=uid))
    return out


def snapshot(d: Path) -> list[tuple]:
    conn = sqlite3.connect(d / DB_FILE)
    try:
        members: dict[str, list[int]] = {}
        for tid, uid in conn.execute("SELECT thread_id, uid FROM message"):
            members.setdefault(tid, []).append(uid)
        assert None not in members
        rows = conn.execute(
            "SELECT id, state, due_at, message_count, unread, urgent, sender_status, suggested_tag, category "
            "FROM thread"
        ).fetchall()
        assert {r[0] for r in rows} == set(members)  # every thread has its summary, no summary is left over
        return sorted((tuple(sorted(members[r[0]])), repr(r[1:])) for r in rows)
    finally:
        conn.close()


def thread_of(store: Store, uid: int) -> str:
    conn = sqlite3.connect(store.directory / DB_FILE)
    try:
        return conn.execute("SELECT thread_id FROM message WHERE uid = ?", (uid,)).fetchone()[0]
    finally:
        conn.close()


def with_flags(batches: list[list[NewMessage]]) -> list[list[NewMessage]]:
    """Some messages already read (the unread counts differ from the message counts)."""
    return [
        [dataclasses.replace(m, flags=frozenset({"\\Seen", "\\Flagged"})) if m.uid % 3 == 0 else m for m in batch]
        for batch in batches
    ]


def build(tmp_path: Path, name: str, provisional: bool, held: tuple[bool, ...] = ()) -> tuple[Store, str]:
    """Old mail threaded, then the new batches: plain (no thread id), or with provisional ids and
    rethread(after=...); ``held``: which batches an AddedMessages notes (the others are read back)."""
    store = Store.open(tmp_path / name, Cipher(b"t" * 32), professional=DOCTOR, create=True)
    store.add_messages("INBOX", old_mail())
    rethread(store, POLICY, [safety_inspector(store, CONFIG, NOW)])
    old_id = thread_of(store, 1)
    batches = with_flags(numbered(new_batches()))
    if provisional:
        after = store.last_message_rowid()
        guess = ProvisionalThreads()
        added = AddedMessages() if held else None
        for i, batch in enumerate(batches):
            ids = guess.assign([m.parsed for m in batch])
            items = [dataclasses.replace(m, thread_id=t) for m, t in zip(batch, ids, strict=True)]
            result = store.add_messages("INBOX", items)
            if added is not None and held[i]:
                assert added.note(result, items)
        rethread(store, POLICY, [safety_inspector(store, CONFIG, NOW)], after=after, added=added)
    else:
        for batch in batches:
            store.add_messages("INBOX", batch)
        rethread(store, POLICY, [safety_inspector(store, CONFIG, NOW)])
    return store, old_id


def shown(store: Store) -> list[tuple]:
    """Every thread row as the inbox shows it (decrypted), keyed by its messages' UIDs."""
    members: dict[str, list[int]] = {}
    for tid, keys in store.thread_message_keys(store.all_thread_ids()).items():
        members[tid] = sorted(m.uid or 0 for m in store.thread_messages(tid) if m.id in keys)
    return sorted(
        (tuple(members[r.id]), repr(dataclasses.replace(r, id=""))) for r in store.thread_rows(store.all_thread_ids())
    )


def test_provisional_threads_end_as_plain_threading(tmp_path: Path) -> None:
    plain, _ = build(tmp_path, "plain", provisional=False)
    placed, old_id = build(tmp_path, "placed", provisional=True)
    try:
        assert snapshot(placed.directory) == snapshot(plain.directory)
        assert thread_of(placed, 11) == old_id  # the old conversation kept its id
        groups = {tuple(sorted(k)) for k, _ in snapshot(placed.directory)}
        assert (12, 15) in groups and (13, 14, 16) in groups  # parent after child; a merge
        assert (3, 17) in groups  # by subject into an old conversation
    finally:
        plain.close()
        placed.close()


def test_rows_held_in_memory_thread_as_rows_read_back(tmp_path: Path) -> None:
    """A sync pass's AddedMessages (refs, heads, flags of the rows it wrote) gives the same threads
    and rows as reading them back: held whole, in part (a pass resumed after a crash holds only its
    own rows), or not at all."""
    plain, _ = build(tmp_path, "plain", provisional=False)
    want, want_shown = snapshot(plain.directory), shown(plain)
    conn = sqlite3.connect(plain.directory / DB_FILE)
    try:  # both patient messages of this conversation were read: its unread count says so
        assert conn.execute(
            "SELECT unread, message_count FROM thread WHERE id = ?", (thread_of(plain, 12),)
        ).fetchone() == (0, 2)
    finally:
        conn.close()
        plain.close()
    for held in [(True, True), (False, True), (True, False)]:
        store, old_id = build(tmp_path, "held-" + "".join("1" if h else "0" for h in held), True, held)
        try:
            assert snapshot(store.directory) == want, held
            assert shown(store) == want_shown, held
            assert thread_of(store, 11) == old_id  # the old conversation kept its id
        finally:
            store.close()


def test_added_messages_keep_only_whole_runs_in_rowid_order(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s", Cipher(b"t" * 32), professional=DOCTOR, create=True)
    try:
        store.add_messages("INBOX", old_mail())
        batches = numbered(new_batches())
        first = [dataclasses.replace(m, thread_id="t1") for m in batches[0]]
        result = store.add_messages("INBOX", first)
        assert result.first_rowid == 4 and len(result.refs) == len(result.placed) == 4
        by_key = {r.key: r for r in store.refs_of_threads(["t1"])}
        assert [MessageRef(*r) for r in result.refs] == [by_key[mid] for _, mid, _ in result.placed]  # as read back
        again = store.add_messages("INBOX", first)  # all duplicates: nothing added, nothing to note
        assert again.first_rowid is None and not again.placed
        added = AddedMessages()
        assert not added.note(again, first)
        unthreaded = store.add_messages("INBOX", batches[1][:1])  # no provisional thread id
        assert not added.note(unthreaded, batches[1][:1])
        assert added.note(result, first) and len(added) == 4
        assert not added.note(result, first)  # a run at or below the last one is never taken
        placed, provisional = store.threaded_refs_after(3, added.runs())
        assert (placed, provisional) == store.threaded_refs_after(3)
        assert [r.key for r in placed] == [mid for _, mid, _ in result.placed]
        small = AddedMessages(hold=3)
        assert not small.note(result, first) and len(small) == 0  # over the limit: read back instead
    finally:
        store.close()


def test_a_second_pass_over_the_same_mark_changes_nothing(tmp_path: Path) -> None:
    # a crash after the summaries were written but before the mark was cleared
    store, _ = build(tmp_path, "s", provisional=True)
    try:
        before = snapshot(store.directory)
        ids = {uid: thread_of(store, uid) for uid in range(11, 19)}
        rethread(store, POLICY, [safety_inspector(store, CONFIG, NOW)], after=3)
        assert snapshot(store.directory) == before
        assert {uid: thread_of(store, uid) for uid in range(11, 19)} == ids
    finally:
        store.close()


def test_an_unfinished_download_is_never_taken_for_a_no_change_sync(tmp_path: Path) -> None:
    from carebox.store.syncstate import THREADS_PENDING_META, quick_state, threads_pending_after

    store = Store.open(tmp_path / "s", Cipher(b"t" * 32), professional=DOCTOR, create=True)
    try:
        store.add_messages("INBOX", old_mail())
        rethread(store, POLICY)
        state = quick_state(store.directory)
        assert state is not None and state.unthreaded == 0
        store.set_meta(THREADS_PENDING_META, str(store.last_message_rowid()))  # a download began
        assert threads_pending_after(store) == 3
        state = quick_state(store.directory)
        assert state is not None and state.unthreaded > 0  # quick_check answers None: the full sync runs
        store.set_meta(THREADS_PENDING_META, "")
        assert threads_pending_after(store) is None
        assert quick_state(store.directory).unthreaded == 0  # type: ignore[union-attr]
    finally:
        store.close()
