import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carebox.domain.models import MessageRef
from carebox.domain.threading import assign_thread_ids, thread_groups, thread_tree

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def ref(
    key,
    mid="",
    parents=(),
    minutes=0,
    subject="s",
    who="p1",
    outgoing=False,
    reply=False,
):
    return MessageRef(
        key=key,
        message_id=mid,
        parents=tuple(parents),
        subject_key=subject,
        counterpart=who,
        date=T0 + timedelta(minutes=minutes),
        outgoing=outgoing,
        reply_prefix=reply,
    )


def keys(groups):
    return [[m.key for m in g] for g in groups]


def tree_keys(msgs):
    return [(depth, m.key) for depth, m in thread_tree(msgs)]


# --- thread_groups -----------------------------------------------------------------------------


def test_chain_is_one_thread_sorted_by_date():
    a = ref("a", "A", minutes=0)
    b = ref("b", "B", ["A"], minutes=5)
    c = ref("c", "C", ["A", "B"], minutes=9)
    assert keys(thread_groups([c, a, b])) == [["a", "b", "c"]]


def test_unrelated_messages_stay_apart_and_groups_ordered_by_first_message():
    a = ref("a", "A", minutes=10, subject="x")
    b = ref("b", "B", minutes=0, subject="y")
    assert keys(thread_groups([a, b])) == [["b"], ["a"]]


def test_equal_dates_ordered_by_key():
    a = ref("k2", "A")
    b = ref("k1", "B", ["A"])
    assert keys(thread_groups([a, b])) == [["k1", "k2"]]


def test_gap_missing_middle_message_still_one_thread():
    a = ref("a", "A", minutes=0)
    c = ref("c", "C", ["A", "B"], minutes=20)  # B was never received
    assert keys(thread_groups([a, c])) == [["a", "c"]]


def test_siblings_of_a_missing_parent_are_one_thread():
    b = ref("b", "B", ["X"], minutes=1)
    c = ref("c", "C", ["X"], minutes=2, who="p2")
    assert keys(thread_groups([b, c])) == [["b", "c"]]


def test_reference_loop_and_self_reference_terminate():
    a = ref("a", "A", ["B"], minutes=0)
    b = ref("b", "B", ["A"], minutes=1)
    s = ref("s", "S", ["S"], minutes=2, subject="other")
    assert keys(thread_groups([a, b, s])) == [["a", "b"], ["s"]]


def test_duplicate_message_ids_both_kept_in_one_thread():
    x1 = ref("x1", "X", minutes=0)
    x2 = ref("x2", "X", minutes=3)
    reply = ref("r", "R", ["X"], minutes=5)
    assert keys(thread_groups([x2, reply, x1])) == [["x1", "x2", "r"]]


def test_empty_message_ids_and_empty_parent_tokens_never_link():
    a = ref("a", "", subject="a")
    b = ref("b", "", ["", ""], minutes=1, subject="b")
    c = ref("c", "", [""], minutes=2, subject="c")
    assert keys(thread_groups([a, b, c])) == [["a"], ["b"], ["c"]]


def test_empty_input():
    assert thread_groups([]) == []
    assert thread_tree([]) == []


# --- subject fallback ---------------------------------------------------------------------------


def test_headerless_reply_joins_same_subject_same_counterpart():
    first = ref("a", "A", minutes=0, subject="knee")
    answer = ref("b", "B", ["A"], minutes=5, subject="knee", outgoing=True)
    headerless = ref("c", "C", minutes=60, subject="knee", reply=True)
    assert keys(thread_groups([first, answer, headerless])) == [["a", "b", "c"]]


def test_subject_fallback_never_crosses_counterparts():
    p1 = ref("a", "A", minutes=0, subject="results", who="patient1")
    p2 = ref("b", "B", minutes=5, subject="results", who="patient2", reply=True)
    assert keys(thread_groups([p1, p2])) == [["a"], ["b"]]


def test_subject_fallback_needs_reply_prefix():
    a = ref("a", "A", minutes=0, subject="question")
    b = ref("b", "B", minutes=5, subject="question")  # a new "question", not "Re: question"
    assert keys(thread_groups([a, b])) == [["a"], ["b"]]


def test_subject_fallback_only_without_parents():
    a = ref("a", "A", minutes=0, subject="q")
    b = ref("b", "B", ["UNKNOWN"], minutes=5, subject="q", reply=True)
    assert keys(thread_groups([a, b])) == [["a"], ["b"]]


def test_subject_fallback_only_joins_earlier_messages():
    later = ref("a", "A", minutes=10, subject="q")
    earlier_reply = ref("b", "B", minutes=0, subject="q", reply=True)
    assert keys(thread_groups([later, earlier_reply])) == [["b"], ["a"]]


def test_subject_fallback_ignores_empty_tokens():
    a = ref("a", "A", minutes=0, subject="", who="p")
    b = ref("b", "B", minutes=5, subject="", who="p", reply=True)
    c = ref("c", "C", minutes=0, subject="s", who="")
    d = ref("d", "D", minutes=5, subject="s", who="", reply=True)
    assert sorted(keys(thread_groups([a, b, c, d]))) == [["a"], ["b"], ["c"], ["d"]]


def test_subject_fallback_joins_latest_matching_conversation():
    old = ref("old", "O", minutes=0, subject="q")
    new = ref("new", "N", minutes=100, subject="q")  # a fresh question with the same subject
    headerless = ref("h", "H", minutes=200, subject="q", reply=True)
    assert keys(thread_groups([old, new, headerless])) == [["old"], ["new", "h"]]


# --- against an independent reference (connected components by BFS) -----------------------------


def reference_partition(msgs):
    by_token = {}
    for i, m in enumerate(msgs):
        for t in (m.message_id, *m.parents):
            if t:
                by_token.setdefault(t, []).append(i)
    seen, parts = set(), []
    for start in range(len(msgs)):
        if start in seen:
            continue
        comp, todo = set(), [start]
        while todo:
            i = todo.pop()
            if i in comp:
                continue
            comp.add(i)
            m = msgs[i]
            for t in (m.message_id, *m.parents):
                if t:
                    todo.extend(by_token[t])
        seen |= comp
        parts.append(frozenset(msgs[i].key for i in comp))
    return set(parts)


tokens = st.sampled_from(["", "A", "B", "C", "D", "E", "F"])


@st.composite
def ref_sets(draw):
    n = draw(st.integers(0, 12))
    out = []
    for i in range(n):
        out.append(
            ref(
                f"k{i}",
                draw(tokens),
                draw(st.lists(tokens, max_size=3)),
                minutes=draw(st.integers(0, 5)),
                subject=draw(st.sampled_from(["", "s", "t"])),
                who=draw(st.sampled_from(["", "p1", "p2"])),
                reply=draw(st.booleans()),
            )
        )
    return out


@given(ref_sets())
@settings(max_examples=60, deadline=None)
def test_groups_partition_input_and_respect_invariants(msgs):
    groups = thread_groups(msgs)
    flat = [m.key for g in groups for m in g]
    assert sorted(flat) == sorted(m.key for m in msgs)  # every message exactly once
    for g in groups:
        assert list(g) == sorted(g, key=lambda m: (m.date, m.key))
    firsts = [(g[0].date, g[0].key) for g in groups]
    assert firsts == sorted(firsts)
    # Token links alone give exactly the reference partition ...
    no_subject = [ref(m.key, m.message_id, m.parents, subject=m.subject_key, who=m.counterpart) for m in msgs]
    assert {frozenset(m.key for m in g) for g in thread_groups(no_subject)} == reference_partition(no_subject)
    # ... and the subject fallback only ever merges whole token groups, never splits them.
    token_parts = reference_partition(msgs)
    for g in groups:
        ks = {m.key for m in g}
        assert all(part <= ks or not (part & ks) for part in token_parts)


@given(ref_sets())
@settings(max_examples=40, deadline=None)
def test_grouping_does_not_depend_on_input_order(msgs):
    expected = keys(thread_groups(msgs))
    assert keys(thread_groups(list(reversed(msgs)))) == expected


def test_subject_merge_never_brings_in_a_new_counterpart():
    # A group made of p1's messages must not gain p2 through the subject fallback.
    msgs = [
        ref("a", "A", minutes=0, subject="x", who="p1"),
        ref("b", "", minutes=1, subject="x", who="p2", reply=True),
        ref("c", "", minutes=2, subject="x", who="p1", reply=True),
    ]
    assert keys(thread_groups(msgs)) == [["a", "c"], ["b"]]


# --- assign_thread_ids --------------------------------------------------------------------------


def counter(prefix="n"):
    numbers = itertools.count(1)
    return lambda: f"{prefix}{next(numbers)}"


def test_new_groups_get_new_ids_in_group_order():
    a, b = ref("a", "A"), ref("b", "B", minutes=1, subject="other")
    groups = thread_groups([a, b])
    assert assign_thread_ids(groups, {}, counter()) == {"a": "n1", "b": "n2"}


def test_ids_stay_stable_as_mail_arrives():
    a = ref("a", "A")
    b = ref("b", "B", ["A"], minutes=5)
    ids = assign_thread_ids(thread_groups([a, b]), {"a": "t7"}, counter())
    assert ids == {"a": "t7", "b": "t7"}


def test_merge_keeps_smallest_existing_id():
    a = ref("a", "A")
    b = ref("b", "B", minutes=1, subject="z")
    bridge = ref("c", "C", ["A", "B"], minutes=2)
    ids = assign_thread_ids(thread_groups([a, b, bridge]), {"a": "t5", "b": "t3"}, counter())
    assert set(ids.values()) == {"t3"}


def test_numeric_ids_compare_as_numbers():
    a, b = ref("a", "A"), ref("b", "B", ["A"], minutes=1)
    ids = assign_thread_ids(thread_groups([a, b]), {"a": "10", "b": "9"}, counter())
    assert set(ids.values()) == {"9"}


def test_split_thread_keeps_id_once():
    # A former thread whose bridging message is gone: one half keeps the id, the other gets a new one.
    a = ref("a", "A")
    b = ref("b", "B", minutes=1, subject="other")
    ids = assign_thread_ids(thread_groups([a, b]), {"a": "t1", "b": "t1"}, counter())
    assert ids == {"a": "t1", "b": "n1"}


def test_new_id_collision_is_refused():
    groups = thread_groups([ref("a", "A"), ref("b", "B", minutes=1, subject="z")])
    with pytest.raises(ValueError, match="already in use"):
        assign_thread_ids(groups, {}, lambda: "same")


# --- thread_tree --------------------------------------------------------------------------------


def test_tree_depth_first_with_depths_and_sibling_order():
    a = ref("a", "A", minutes=0)
    b = ref("b", "B", ["A"], minutes=10)
    c = ref("c", "C", ["A"], minutes=5)
    d = ref("d", "D", ["A", "C"], minutes=20)
    e = ref("e", "E", ["A", "B"], minutes=15)
    assert tree_keys([e, d, c, b, a]) == [(0, "a"), (1, "c"), (2, "d"), (1, "b"), (2, "e")]


def test_tree_gap_attaches_to_nearest_present_ancestor():
    a = ref("a", "A", minutes=0)
    c = ref("c", "C", ["A", "B"], minutes=20)
    assert tree_keys([a, c]) == [(0, "a"), (1, "c")]


def test_tree_with_loops_terminates_and_shows_everything():
    a = ref("a", "A", ["B"], minutes=0)
    b = ref("b", "B", ["A"], minutes=1)
    s = ref("s", "S", ["S"], minutes=2)
    out = tree_keys([a, b, s])
    assert sorted(k for _, k in out) == ["a", "b", "s"]
    # a's link to B is taken first (date order); b's link back to A would close the loop.
    assert out == [(0, "b"), (1, "a"), (0, "s")]


def test_tree_clock_skew_reply_dated_before_parent():
    parent = ref("p", "P", minutes=10)
    reply = ref("r", "R", ["P"], minutes=0)  # the sender's clock was wrong
    assert tree_keys([reply, parent]) == [(0, "p"), (1, "r")]


def test_tree_duplicate_ids_prefers_earliest_holder():
    x1 = ref("x1", "X", minutes=0)
    x2 = ref("x2", "X", minutes=3)
    r = ref("r", "R", ["X"], minutes=5)
    assert tree_keys([x2, r, x1]) == [(0, "x1"), (1, "r"), (0, "x2")]


def test_tree_places_headerless_reply_under_matching_message():
    a = ref("a", "A", minutes=0, subject="q")
    b = ref("b", "B", ["A"], minutes=5, subject="q", outgoing=True)
    c = ref("c", "", minutes=60, subject="q", reply=True)
    other = ref("o", "", minutes=70, subject="q", who="p2", reply=True)
    assert tree_keys([a, b, c, other]) == [(0, "a"), (1, "b"), (2, "c"), (0, "o")]


def test_deep_chain_has_no_recursion_limit():
    n = 10_000
    msgs = [ref(f"k{i:05d}", f"M{i}", [f"M{i - 1}"] if i else [], minutes=i) for i in range(n)]
    out = thread_tree(reversed(msgs))
    assert [d for d, _ in out] == list(range(n))
    assert len(thread_groups(msgs)) == 1


@given(ref_sets())
@settings(max_examples=40, deadline=None)
def test_tree_is_a_valid_forest_over_all_messages(msgs):
    out = thread_tree(msgs)
    assert sorted(m.key for _, m in out) == sorted(m.key for m in msgs)
    assert not out or out[0][0] == 0
    path = []  # the ancestors of the current entry
    for depth, m in out:
        assert depth <= len(path)  # a child directly follows its parent or a sibling subtree
        del path[depth:]
        if path:
            parent = path[-1]
            by_reference = parent.message_id != "" and parent.message_id in m.parents
            by_subject = (
                not any(m.parents)
                and m.reply_prefix
                and (parent.subject_key, parent.counterpart) == (m.subject_key, m.counterpart)
                and (parent.date, parent.key) < (m.date, m.key)
            )
            assert by_reference or by_subject
        path.append(m)
