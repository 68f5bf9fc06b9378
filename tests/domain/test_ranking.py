import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carebox.domain.models import ThreadState
from carebox.domain.ranking import QueueItem, format_countdown, rank, seconds_overdue, time_left

NOW = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)


def item(tid, due_h=None, state=ThreadState.WAITING, urgent=False, last_h=-1.0):
    return QueueItem(
        thread_id=tid,
        due_at=None if due_h is None else NOW + timedelta(hours=due_h),
        state=state,
        urgent=urgent,
        last_date=NOW + timedelta(hours=last_h),
    )


def ids(items):
    return [i.thread_id for i in items]


def test_example_order():
    items = [
        item("later", 10),
        item("soon", 1),
        item("overdue-a-bit", -1),
        item("overdue-a-lot", -30),
        item("urgent-later", 20, urgent=True),
        item("urgent-soon", 2, urgent=True),
        item("answered", state=ThreadState.ANSWERED, last_h=-5),
    ]
    assert ids(rank(items, NOW)) == ["urgent-soon", "urgent-later", "overdue-a-lot", "overdue-a-bit", "soon", "later"]


def test_ties_break_by_last_date_then_thread_id():
    items = [item("b", 5, last_h=-1), item("a", 5, last_h=-1), item("c", 5, last_h=-3)]
    assert ids(rank(items, NOW)) == ["c", "a", "b"]


def test_include_all_appends_others_newest_first():
    items = [
        item("w", 3),
        item("old", state=ThreadState.ANSWERED, last_h=-50),
        item("new", state=ThreadState.REDIRECTED, last_h=-1),
        item("mid", state=ThreadState.OUT_OF_SCOPE, last_h=-10),
    ]
    assert ids(rank(items, NOW)) == ["w"]
    assert ids(rank(items, NOW, include_all=True)) == ["w", "new", "mid", "old"]


def test_waiting_without_due_time_sorts_as_due_now():
    items = [item("upcoming", 1), item("unknown"), item("overdue", -1)]
    assert ids(rank(items, NOW)) == ["overdue", "unknown", "upcoming"]


def test_item_is_keyword_only():
    with pytest.raises(TypeError):
        QueueItem("t", None, ThreadState.WAITING, False, NOW)  # type: ignore[misc]


def test_seconds_overdue_and_time_left():
    assert seconds_overdue(item("x", -2), NOW) == 7200
    assert seconds_overdue(item("x", 2), NOW) == 0
    assert seconds_overdue(item("x", 0), NOW) == 0
    assert seconds_overdue(item("x"), NOW) == 0
    late = QueueItem(thread_id="x", due_at=NOW - timedelta(seconds=1.9), state=ThreadState.WAITING, last_date=NOW)
    assert seconds_overdue(late, NOW) == 1
    assert time_left(NOW + timedelta(hours=3), NOW) == timedelta(hours=3)
    assert time_left(NOW - timedelta(minutes=5), NOW) == -timedelta(minutes=5)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(hours=5), "due in 5h"),
        (timedelta(days=2, hours=3), "due in 2d 3h"),
        (timedelta(days=2, hours=3, minutes=59), "due in 2d 3h"),
        (timedelta(days=1), "due in 1d"),
        (timedelta(minutes=12), "due in 12m"),
        (timedelta(hours=5, minutes=30), "due in 5h 30m"),
        (timedelta(hours=5, seconds=59), "due in 5h"),
        (timedelta(seconds=30), "due in <1m"),
        (timedelta(0), "due now"),
        (-timedelta(hours=3), "overdue 3h"),
        (-timedelta(days=1, hours=2), "overdue 1d 2h"),
        (-timedelta(minutes=7, seconds=10), "overdue 7m"),
        (-timedelta(seconds=1), "overdue <1m"),
        (-timedelta(days=40), "overdue 40d"),
    ],
)
def test_format_countdown(delta, text):
    assert format_countdown(NOW + delta, NOW) == text


def test_format_countdown_without_due_time():
    assert format_countdown(None, NOW) == ""


# --- properties -----------------------------------------------------------------------------------

states = st.sampled_from(list(ThreadState))
minutes = st.integers(-5 * 24 * 60, 5 * 24 * 60)
items_strategy = st.lists(
    st.builds(
        lambda tid, due, state, urgent, last: QueueItem(
            thread_id=tid,
            due_at=None if due is None else NOW + timedelta(minutes=due),
            state=state,
            urgent=urgent,
            last_date=NOW + timedelta(minutes=last),
        ),
        st.sampled_from(["a", "b", "c", "d", "e", "f"]),
        st.one_of(st.none(), minutes, st.sampled_from([0, -1, 1])),
        states,
        st.booleans(),
        st.integers(-60, 0),
    ),
    max_size=25,
)


@given(items_strategy)
@settings(max_examples=80, deadline=None)
def test_rank_properties(items):
    out = rank(items, NOW)
    waiting = [i for i in items if i.state is ThreadState.WAITING]
    assert sorted(map(repr, out)) == sorted(map(repr, waiting))  # a permutation of the waiting input
    urgent_flags = [i.urgent for i in out]
    assert urgent_flags == sorted(urgent_flags, reverse=True)  # urgent before all
    for block in ([i for i in out if i.urgent], [i for i in out if not i.urgent]):
        overdue = [seconds_overdue(i, NOW) > 0 for i in block]
        assert overdue == sorted(overdue, reverse=True)  # overdue before not overdue
        lateness = [seconds_overdue(i, NOW) for i in block if seconds_overdue(i, NOW) > 0]
        assert lateness == sorted(lateness, reverse=True)  # most overdue on top
        dues = [i.due_at or NOW for i in block]
        assert dues == sorted(dues)  # by due time


@given(items_strategy, st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None)
def test_rank_is_deterministic(items, rnd: random.Random):
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert rank(shuffled, NOW, include_all=True) == rank(items, NOW, include_all=True)
    assert rank(shuffled, NOW) == rank(items, NOW)


@given(items_strategy)
@settings(max_examples=50, deadline=None)
def test_include_all_keeps_everything_with_waiting_first(items):
    out = rank(items, NOW, include_all=True)
    assert sorted(map(repr, out)) == sorted(map(repr, items))
    states = [i.state is ThreadState.WAITING for i in out]
    assert states == sorted(states, reverse=True)
    rest = [i.last_date for i in out if i.state is not ThreadState.WAITING]
    assert rest == sorted(rest, reverse=True)
    assert out[: len(rank(items, NOW))] == rank(items, NOW)
