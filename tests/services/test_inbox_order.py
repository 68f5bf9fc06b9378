"""The inbox's first page (ordered by SQL) and `carebox queue` (ordered by domain.ranking.rank)
must agree exactly, ties included."""

from __future__ import annotations

import os
import random
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

from carebox.domain.deadlines import Policy
from carebox.services import inbox
from carebox.services.threads import rethread
from carebox.store.crypto import Cipher
from carebox.store.store import Store
from tests.factories import BASE, DOC, DOCTOR, message, patient


def test_sql_page_matches_domain_ranking(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s", Cipher(os.urandom(32)), professional=DOCTOR, create=True)
    rng = random.Random(7)
    msgs = []
    for i in range(300):
        # Many equal dates on purpose: ties must break the same way in both orders.
        hours = rng.choice([0, 0, 1, 5, 5, 30, 47.5, 60, 100])
        msgs.append(message(f"q{i}@x", sender=patient(i), to=DOC, subject=f"S{i}", hours=hours, uid=i + 1))
    store.add_messages("INBOX", msgs)
    rethread(store, Policy(response_hours=48))
    ids = store.all_thread_ids()
    for tid in rng.sample(ids, 20):
        store.set_thread_fields(tid, urgent=True)
    now = BASE + timedelta(hours=70)
    expected = inbox.ranked_ids(store, now, "due")
    got: list[str] = []
    offset = 0
    while True:
        page = inbox.page(store, now, "due", offset, 37)
        assert page.total == len(expected)
        if not page.rows:
            break
        got += [r.id for r in page.rows]
        offset += 37
    assert got == expected
    assert len(expected) == 300
    # Overdue threads are on top of the non-urgent part, most overdue first.
    rows = inbox.rows(store, expected)
    non_urgent = [r for r in rows if not r.urgent]
    assert non_urgent[0].due_at is not None and non_urgent[0].due_at < now
    assert all(a.due_at <= b.due_at for a, b in pairwise(non_urgent))
    store.close()
