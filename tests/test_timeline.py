"""Evaluation semantics: up, down, excluded and unknown time of one stream, hand-computed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probecore import Failure, SLIRecord, format_timestamp
from probecore._timeline import DOWN, EXCLUDED, UNKNOWN, UP, Stream, Window, build_timeline
from probecore.testing import DEFAULT_START

T0 = round(DEFAULT_START.timestamp() * 1000)
MIN = 60_000


def stream(*kinds: str, every: float = 5, first: float = 0) -> list[SLIRecord]:
    """Records every *every* minutes: 'ok', 'fail' (provider), 'cust' (customer), 'err', '-' (none)."""
    records = []
    for i, kind in enumerate(kinds):
        if kind == "-":
            continue
        at = format_timestamp(DEFAULT_START + timedelta(minutes=first + i * every))
        outcome = {"ok": "ok", "fail": "fail", "cust": "fail", "err": "error"}[kind]
        failure = None if kind == "ok" else Failure(
            "x", {"fail": "provider", "cust": "customer", "err": "probe"}[kind], "x")
        records.append(SLIRecord(check="p/c", probe="ping", target="t", vantage="v", scheduled_at=at,
                                 started_at=at, duration_s=0.1, outcome=outcome, failure=failure))
    return records


def timeline(records, minutes: float = 30, start: float = 0, hold: float = 10, windows=(), confirm=2):
    return build_timeline(Stream.from_records(records, confirm=confirm, hold=round(hold * MIN)),
                          start=T0 + round(start * MIN), end=T0 + round((start + minutes) * MIN),
                          exclusions=[Window(T0 + round(a * MIN), T0 + round(b * MIN), r) for a, b, r in windows])


def minutes(t, state: str) -> float:
    return round(t.total(state) / MIN, 6)


def test_an_outage_from_first_failure_to_first_ok():
    t = timeline(stream("ok", "fail", "fail", "ok"))  # 0 ok, 5 fail, 10 fail, 15 ok; holds to 25
    assert (minutes(t, UP), minutes(t, DOWN), minutes(t, EXCLUDED), minutes(t, UNKNOWN)) == (15, 10, 0, 5)
    (outage,) = t.outages
    assert (outage.start - T0, outage.end - T0, outage.resolved) == (5 * MIN, 15 * MIN, True)
    assert outage.down_ms == 10 * MIN and outage.excluded_ms == 0
    assert t.coverage == pytest.approx(25 / 30)


def test_a_flap_is_up_time():
    t = timeline(stream("ok", "fail", "ok", "ok"))
    assert minutes(t, DOWN) == 0 and t.outages == []
    assert minutes(t, UP) == 25


def test_maintenance_covering_part_of_an_outage():
    t = timeline(stream("ok", "fail", "fail", "ok"), windows=[(8, 12, "maintenance"), (20, 28, "other")])
    assert (minutes(t, DOWN), minutes(t, EXCLUDED)) == (6, 4)
    assert minutes(t, UP) == 15  # a window over up time changes nothing
    (outage,) = t.outages
    assert (outage.down_ms, outage.excluded_ms, outage.reasons) == (6 * MIN, 4 * MIN, ("maintenance",))


def test_an_outage_across_the_period_boundary_is_split():
    records = stream("ok", "fail", "fail", "ok")  # outage 5–15
    first, second = timeline(records, minutes=10), timeline(records, minutes=10, start=10)
    assert minutes(first, DOWN) == 5 and minutes(second, DOWN) == 5
    assert (first.outages[0].end - T0, second.outages[0].start - T0) == (10 * MIN, 10 * MIN)


def test_gaps_without_evidence_are_unknown():
    t = timeline(stream("ok", "-", "-", "-", "-", "-", "ok"), minutes=60)  # records at 0 and 30
    assert (minutes(t, UP), minutes(t, UNKNOWN)) == (20, 40)


def test_records_before_the_period_set_its_start():
    t = timeline(stream("ok", "fail", "fail", "fail", "ok"), start=12, minutes=10)  # outage 5–20
    assert (minutes(t, DOWN), minutes(t, UP)) == (8, 2)


def test_an_open_outage_ends_with_its_evidence():
    t = timeline(stream("ok", "fail", "fail", "fail"))  # last record at 15 holds to 25
    (outage,) = t.outages
    assert not outage.resolved and outage.end - T0 == 25 * MIN
    assert (minutes(t, DOWN), minutes(t, UNKNOWN)) == (20, 5)


def test_customer_failures_and_errors_do_not_open_outages():
    t = timeline(stream("ok", "cust", "cust", "err", "ok"))
    assert minutes(t, DOWN) == 0


def test_the_period_must_have_a_length():
    with pytest.raises(ValueError):
        build_timeline([], start=T0, end=T0)


kinds = st.lists(st.sampled_from(["ok", "fail", "cust", "err", "-"]), max_size=40)
windows = st.lists(st.tuples(st.floats(0, 200), st.floats(0, 60)), max_size=3)


@settings(max_examples=300, deadline=None)
@given(kinds=kinds, windows=windows, confirm=st.integers(1, 4), start=st.floats(-20, 100),
       length=st.floats(1, 300))
def test_every_second_is_in_exactly_one_state(kinds, windows, confirm, start, length):
    t = timeline(stream(*kinds), minutes=length, start=start, confirm=confirm,
                 windows=[(a, a + d, "maintenance") for a, d in windows])
    total = sum(t.total(state) for state in (UP, DOWN, EXCLUDED, UNKNOWN))
    assert total == round((start + length) * MIN) - round(start * MIN)
    assert all(s.end > s.start for s in t.segments)
    assert all(a.end == b.start for a, b in zip(t.segments, t.segments[1:]))
    assert sum(o.down_ms for o in t.outages) == t.total(DOWN)


@settings(max_examples=300, deadline=None)
@given(kinds=st.lists(st.sampled_from(["ok", "fail", "cust", "err"]), min_size=1, max_size=40),
       index=st.integers(0, 39), confirm=st.integers(1, 4))
def test_adding_a_failure_never_lowers_down_time(kinds, index, confirm):
    index %= len(kinds)
    worse = list(kinds)
    worse[index] = "fail"
    length = 5 * len(kinds) + 10
    before = timeline(stream(*kinds), minutes=length, confirm=confirm)
    after = timeline(stream(*worse), minutes=length, confirm=confirm)
    assert after.total(DOWN) >= before.total(DOWN)


@settings(max_examples=300, deadline=None)
@given(kinds=st.lists(st.sampled_from(["ok", "fail", "cust", "err", "-"]), max_size=40),
       confirm=st.integers(1, 4))
def test_the_evaluators_incidents_are_the_live_trackers(kinds, confirm):
    from probecore import replay
    records = stream(*kinds)
    live = [e.incident_id for e in replay(records, confirm) if e.kind == "confirmed"]
    t = timeline(records, minutes=5 * len(kinds) + 20, confirm=confirm)
    assert [o.incident_id for o in t.outages if o.counted] == live


@settings(max_examples=300, deadline=None)
@given(kinds=st.lists(st.sampled_from(["ok", "fail", "cust", "err", "-"]), min_size=1, max_size=40),
       index=st.integers(0, 39), confirm=st.integers(1, 4))
def test_turning_an_ok_into_a_failure_never_raises_availability(kinds, index, confirm):
    oks = [i for i, k in enumerate(kinds) if k == "ok"]
    if not oks:
        return
    worse = list(kinds)
    worse[oks[index % len(oks)]] = "fail"
    length = 5 * len(kinds) + 10

    def availability(t):
        known = t.total(UP) + t.total(DOWN) + t.total(EXCLUDED)
        return 1 - t.total(DOWN) / known if known else 1.0
    before = timeline(stream(*kinds), minutes=length, confirm=confirm)
    after = timeline(stream(*worse), minutes=length, confirm=confirm)
    assert availability(after) <= availability(before)


def test_customer_failure_runs_are_excluded_with_their_class_and_errors_are_unknown():
    t = timeline(stream("ok", "cust", "cust", "ok", "err", "ok"))
    assert t.excluded_by_reason() == {"customer": 10 * MIN}
    assert minutes(t, UNKNOWN) == 5       # the error record says nothing for its 5 minutes
    (outage,) = t.outages
    assert (outage.counted, outage.attribution) == (False, "customer")


def test_an_outage_may_start_at_its_confirmation():
    records = stream("ok", "fail", "fail", "fail", "ok")
    t = build_timeline(Stream.from_records(records, confirm=2, hold=10 * MIN), start=T0, end=T0 + 30 * MIN,
                       outage_start="confirmation")
    assert minutes(t, DOWN) == 10                     # from the second failure (10) to the ok (20)
