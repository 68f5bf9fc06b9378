from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carebox.domain.deadlines import Policy, add_response_window, summarize
from carebox.domain.models import MessageRef, ThreadState

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
ALL_DAYS = frozenset(range(7))
OFFICE = (time(8), time(18))


def berlin(*args):
    return datetime(*args, tzinfo=BERLIN)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


# --- plain hours ----------------------------------------------------------------------------------


def test_plain_hours_are_real_hours_across_spring_forward():
    policy = Policy(response_hours=24, working_days=ALL_DAYS, tz=BERLIN)
    due = add_response_window(berlin(2024, 3, 30, 12, 0), policy)  # the night loses an hour
    assert due == utc(2024, 3, 31, 11, 0)
    assert due.tzinfo is UTC
    assert due.astimezone(BERLIN).hour == 13


def test_plain_hours_accept_any_aware_input_and_return_utc():
    policy = Policy(response_hours=1.5, working_days=ALL_DAYS)
    start = datetime(2024, 1, 1, 10, 0, tzinfo=NEW_YORK)
    assert add_response_window(start, policy) == utc(2024, 1, 1, 16, 30)


# --- whole working days ---------------------------------------------------------------------------


def test_default_policy_skips_the_weekend():
    policy = Policy()  # 48 h, Monday to Friday, UTC
    assert add_response_window(utc(2024, 3, 8, 12, 0), policy) == utc(2024, 3, 12, 12, 0)  # Fri -> Tue


def test_start_on_weekend_counts_from_monday():
    policy = Policy()
    assert add_response_window(utc(2024, 3, 9, 15, 0), policy) == utc(2024, 3, 13, 0, 0)  # Sat -> Wed 00:00


def test_holidays_do_not_count():
    policy = Policy(response_hours=24, holidays=frozenset({date(2024, 12, 25), date(2024, 12, 26)}), tz=BERLIN)
    due = add_response_window(berlin(2024, 12, 24, 12, 0), policy)
    assert due == berlin(2024, 12, 27, 12, 0)


def test_holidays_alone_switch_to_whole_day_counting():
    policy = Policy(response_hours=24, working_days=ALL_DAYS, holidays=frozenset({date(2024, 5, 1)}))
    assert add_response_window(utc(2024, 4, 30, 12, 0), policy) == utc(2024, 5, 2, 12, 0)


def test_whole_days_across_fall_back_count_real_hours():
    # Working every day except one holiday: the 25-hour Sunday counts 25 real hours.
    policy = Policy(response_hours=24, working_days=ALL_DAYS, holidays=frozenset({date(2024, 1, 1)}), tz=BERLIN)
    assert add_response_window(berlin(2024, 10, 26, 12, 0), policy) == utc(2024, 10, 27, 10, 0)


def test_weekend_with_fall_back_in_between():
    policy = Policy(response_hours=24, tz=BERLIN)
    due = add_response_window(berlin(2024, 10, 25, 12, 0), policy)  # Fri, CEST
    assert due == berlin(2024, 10, 28, 12, 0)  # Mon, CET
    assert due == utc(2024, 10, 28, 11, 0)


def test_weekends_judged_in_policy_timezone():
    # Friday 23:30 UTC is already Saturday in Berlin: counting starts Monday 00:00 Berlin.
    policy = Policy(response_hours=1, tz=BERLIN)
    assert add_response_window(utc(2024, 3, 8, 23, 30), policy) == berlin(2024, 3, 11, 1, 0)


# --- business hours -------------------------------------------------------------------------------


def office(**kw):
    kw.setdefault("tz", BERLIN)
    return Policy(business_hours=OFFICE, **kw)


def test_business_hours_friday_evening_to_monday():
    assert add_response_window(berlin(2024, 3, 8, 17, 0), office(response_hours=3)) == berlin(2024, 3, 11, 10, 0)


def test_start_before_opening_counts_from_opening():
    assert add_response_window(berlin(2024, 3, 11, 6, 0), office(response_hours=2)) == berlin(2024, 3, 11, 10, 0)


def test_start_at_closing_counts_from_next_opening():
    assert add_response_window(berlin(2024, 3, 11, 18, 0), office(response_hours=1)) == berlin(2024, 3, 12, 9, 0)


def test_window_ending_exactly_at_closing_is_due_at_closing():
    assert add_response_window(berlin(2024, 3, 11, 8, 0), office(response_hours=10)) == berlin(2024, 3, 11, 18, 0)


def test_48_business_hours_span_most_of_a_week():
    assert add_response_window(berlin(2024, 3, 11, 8, 0), office()) == berlin(2024, 3, 15, 16, 0)


def test_business_hours_skip_holiday():
    policy = office(response_hours=4, holidays=frozenset({date(2024, 3, 12)}))
    assert add_response_window(berlin(2024, 3, 11, 16, 0), policy) == berlin(2024, 3, 13, 10, 0)


def test_business_hours_across_us_spring_forward():
    policy = Policy(response_hours=2, business_hours=(time(9), time(17)), working_days=ALL_DAYS, tz=NEW_YORK)
    due = add_response_window(datetime(2024, 3, 9, 16, 0, tzinfo=NEW_YORK), policy)  # Sat, EST
    assert due == utc(2024, 3, 10, 14, 0)  # Sun 10:00 EDT (a fixed -5 h offset would give 15:00 UTC)
    assert due.astimezone(NEW_YORK).hour == 10


def test_business_hours_across_berlin_spring_forward_weekend():
    due = add_response_window(berlin(2024, 3, 29, 17, 0), office(response_hours=2))  # Fri, CET
    assert due == utc(2024, 4, 1, 7, 0)  # Mon 09:00 CEST


def test_category_window():
    policy = Policy(working_days=ALL_DAYS, category_hours={"results": 24})
    start = utc(2024, 3, 1, 12, 0)
    assert add_response_window(start, policy, "results") == utc(2024, 3, 2, 12, 0)
    assert add_response_window(start, policy, "other") == utc(2024, 3, 3, 12, 0)
    assert add_response_window(start, policy) == utc(2024, 3, 3, 12, 0)


def test_zero_window_is_due_at_start():
    assert add_response_window(berlin(2024, 3, 9, 3, 0), office(response_hours=0)) == berlin(2024, 3, 9, 3, 0)


def test_naive_start_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        add_response_window(datetime(2024, 3, 1, 12, 0), Policy())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"response_hours": -1}, "response_hours"),
        ({"response_hours": float("inf")}, "response_hours"),
        ({"response_hours": float("nan")}, "response_hours"),
        ({"business_hours": (time(18), time(8))}, "before closing"),
        ({"business_hours": (time(8),)}, "pair"),
        ({"working_days": frozenset()}, "working_days"),
        ({"working_days": frozenset({7})}, "working_days"),
        ({"holidays": frozenset({datetime(2024, 1, 1)})}, "holidays"),
        ({"category_hours": {"results": -2}}, "category_hours"),
        ({"tz": "Europe/Berlin"}, "tzinfo"),
    ],
)
def test_bad_policy_is_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Policy(**kwargs)


def test_policy_is_immutable_and_hashable():
    hours = {"results": 24}
    policy = Policy(category_hours=hours)
    hours["results"] = 1  # the caller's dict does not leak in
    assert policy.hours_for("results") == 24
    with pytest.raises(TypeError):
        policy.category_hours["results"] = 3
    assert hash(policy) == hash(Policy(category_hours={"results": 24}))


# --- properties against a brute-force minute count -------------------------------------------------

HOLIDAYS = frozenset({date(2024, 3, 29), date(2024, 4, 1), date(2024, 10, 3)})
PROPERTY_POLICIES = [
    Policy(business_hours=OFFICE, holidays=HOLIDAYS, tz=BERLIN),
    Policy(business_hours=(time(9), time(17)), working_days=frozenset({0, 1, 2, 3, 4, 5, 6}), tz=NEW_YORK),
    Policy(holidays=HOLIDAYS, tz=BERLIN),
    Policy(working_days=ALL_DAYS, holidays=frozenset({date(2024, 11, 3)}), tz=NEW_YORK),
]
# Starts around the 2024 DST changes of both zones.
starts = st.builds(
    lambda base, minutes: base + timedelta(minutes=minutes),
    st.sampled_from([utc(2024, 3, 6), utc(2024, 3, 26), utc(2024, 10, 23), utc(2024, 10, 31)]),
    st.integers(0, 8 * 24 * 60),
)


def counted_minutes(start, end, policy):
    """Minutes in [start, end) that count under the policy, by checking every minute."""
    n, t = 0, start
    while t < end:
        local = t.astimezone(policy.tz)
        if local.weekday() in policy.working_days and local.date() not in policy.holidays:
            if policy.business_hours is None:
                n += 1
            else:
                opening, closing = policy.business_hours
                n += opening <= local.time() < closing
        t += timedelta(minutes=1)
    return n


@given(st.sampled_from(PROPERTY_POLICIES), starts, st.integers(1, 30))
@settings(max_examples=40, deadline=None)
def test_counted_time_equals_the_window(policy, start, hours):
    policy = Policy(
        response_hours=hours,
        business_hours=policy.business_hours,
        working_days=policy.working_days,
        holidays=policy.holidays,
        tz=policy.tz,
    )
    due = add_response_window(start, policy)
    assert due >= start + timedelta(hours=hours)  # counted time never outruns real time
    assert counted_minutes(start, due, policy) == hours * 60
    # ... and the last minute before the due time counts (no idle stretch at the end).
    assert counted_minutes(due - timedelta(minutes=1), due, policy) == 1


@given(st.sampled_from(PROPERTY_POLICIES), starts, starts, st.integers(1, 40), st.integers(1, 40))
@settings(max_examples=150, deadline=None)
def test_monotone_and_additive(policy, s1, s2, a, b):
    def window(start, hours):
        return add_response_window(start, Policy(**{**_fields(policy), "response_hours": hours}))

    if s1 > s2:
        s1, s2 = s2, s1
    assert window(s1, a) <= window(s2, a)
    assert window(window(s1, a), b) == window(s1, a + b)


def _fields(policy):
    return {
        "business_hours": policy.business_hours,
        "working_days": policy.working_days,
        "holidays": policy.holidays,
        "tz": policy.tz,
    }


# --- summarize ------------------------------------------------------------------------------------

T0 = utc(2024, 3, 4, 9, 0)  # a Monday
PLAIN = Policy(response_hours=48, working_days=ALL_DAYS)


def msg(key, hours, outgoing=False):
    return MessageRef(
        key=key,
        message_id=key,
        parents=(),
        subject_key="s",
        counterpart="p",
        date=T0 + timedelta(hours=hours),
        outgoing=outgoing,
    )


def test_patient_wrote_last_is_waiting_since_oldest_unanswered():
    msgs = [msg("a", 0), msg("b", 1, outgoing=True), msg("c", 5), msg("d", 7)]
    s = summarize(list(reversed(msgs)), PLAIN)
    assert s.state is ThreadState.WAITING
    assert s.waiting_since == T0 + timedelta(hours=5)
    assert s.due_at == T0 + timedelta(hours=53)
    assert s.last_date == T0 + timedelta(hours=7)
    assert s.message_count == 4


def test_first_message_waits():
    s = summarize([msg("a", 0)], PLAIN)
    assert (s.state, s.waiting_since, s.due_at) == (ThreadState.WAITING, T0, T0 + timedelta(hours=48))


def test_practice_wrote_last_is_answered():
    s = summarize([msg("a", 0), msg("b", 2, outgoing=True)], PLAIN)
    assert (s.state, s.waiting_since, s.due_at) == (ThreadState.ANSWERED, None, None)
    assert s.last_date == T0 + timedelta(hours=2)


def test_outgoing_only_thread_is_answered():
    assert summarize([msg("a", 0, outgoing=True)], PLAIN).state is ThreadState.ANSWERED


def test_equal_dates_count_the_reply_as_after_the_question():
    assert summarize([msg("b", 3, outgoing=True), msg("a", 3)], PLAIN).state is ThreadState.ANSWERED


def test_due_uses_policy_and_category():
    policy = Policy(business_hours=OFFICE, tz=BERLIN, category_hours={"results": 2})
    s = summarize([msg("a", 8)], policy, category="results")  # Mon 17:00 UTC = 18:00 Berlin, closed
    assert s.due_at == berlin(2024, 3, 5, 10, 0)


@pytest.mark.parametrize(
    ("tag", "state"),
    [
        ("redirect:phone", ThreadState.REDIRECTED),
        ("redirect", ThreadState.REDIRECTED),
        ("billing", ThreadState.OUT_OF_SCOPE),
        ("", ThreadState.WAITING),
        (None, ThreadState.WAITING),
    ],
)
def test_tags(tag, state):
    s = summarize([msg("a", 0)], PLAIN, tag=tag)
    assert s.state is state
    assert (s.due_at is None) is (state is not ThreadState.WAITING)
    assert (s.waiting_since is None) is (state is not ThreadState.WAITING)


def test_tagged_thread_reopens_when_the_patient_writes_after_the_tag():
    msgs = [msg("a", 0), msg("b", 1, outgoing=True), msg("c", 5), msg("d", 30)]
    tagged = summarize(msgs, PLAIN, tag="billing", tagged_at=T0 + timedelta(hours=6))
    assert tagged.state is ThreadState.WAITING
    assert tagged.waiting_since == T0 + timedelta(hours=30)
    assert tagged.due_at == T0 + timedelta(hours=78)
    still = summarize(msgs, PLAIN, tag="billing", tagged_at=T0 + timedelta(hours=31))
    assert (still.state, still.due_at) == (ThreadState.OUT_OF_SCOPE, None)


def test_redirect_reply_after_tag_keeps_redirected():
    msgs = [msg("a", 0), msg("b", 1, outgoing=True)]
    s = summarize(msgs, PLAIN, tag="redirect:visit", tagged_at=T0 + timedelta(hours=1))
    assert s.state is ThreadState.REDIRECTED


def test_empty_thread_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        summarize([], PLAIN)
