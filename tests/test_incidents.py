"""The incident state machine: live tracking and replay are the same function of the records."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probecore import Failure, IncidentTracker, SLIRecord, format_timestamp, replay
from probecore.testing import MemoryStore

START = datetime(2026, 11, 1, tzinfo=timezone.utc)

# What a record can say, for the tracker: ok, a provider failure, or no evidence either way.
KINDS = ("ok", "provider", "customer", "error")


def make_record(check: str, index: int, kind: str, vantage: str = "v1") -> SLIRecord:
    at = format_timestamp(START + timedelta(minutes=5 * index))
    outcome = {"ok": "ok", "provider": "fail", "customer": "fail", "error": "error"}[kind]
    failure = None
    if kind == "provider":
        failure = Failure("timeout", "provider", "no answer")
    elif kind == "customer":
        failure = Failure("auth_rejected", "customer", "530 login incorrect")
    elif kind == "error":
        failure = Failure("plugin_crash", "probe", "bug")
    return SLIRecord(check=check, probe="ping", target="192.0.2.1", vantage=vantage, scheduled_at=at,
                     started_at=at, duration_s=0.1, outcome=outcome, failure=failure)


def records_of(kinds: list[str], check: str = "p/c") -> list[SLIRecord]:
    return [make_record(check, i, k) for i, k in enumerate(kinds)]


def kinds_of(events):
    return [e.kind for e in events]


def test_two_failures_confirm_and_the_first_ok_resolves():
    events = replay(records_of(["ok", "provider", "provider", "provider", "ok", "ok"]), confirm=2)
    assert kinds_of(events) == ["suspected", "confirmed", "resolved"]
    suspected, confirmed, resolved = events
    assert suspected.incident_id == confirmed.incident_id == resolved.incident_id
    assert confirmed.incident_started_at == suspected.at  # the outage began at the first failure
    assert confirmed.at == format_timestamp(START + timedelta(minutes=10))
    assert resolved.at == format_timestamp(START + timedelta(minutes=20))
    assert confirmed.failures == 2 and resolved.failures == 3
    assert len({e.event_id for e in events}) == 3


def test_a_short_run_is_a_flap():
    assert kinds_of(replay(records_of(["provider", "ok"]), confirm=2)) == ["suspected", "flap"]


def test_confirm_one_confirms_at_once():
    assert kinds_of(replay(records_of(["provider", "ok"]), confirm=1)) == ["suspected", "confirmed", "resolved"]


def test_customer_failures_and_errors_are_no_evidence_either_way():
    events = replay(records_of(["provider", "customer", "error", "provider", "ok"]), confirm=2)
    assert kinds_of(events) == ["suspected", "confirmed", "resolved"]
    assert kinds_of(replay(records_of(["customer", "customer", "error"]), confirm=1)) == []


def test_streams_are_tracked_per_check_and_vantage():
    records = [make_record("p/a", 0, "provider"), make_record("p/b", 0, "provider"),
               make_record("p/a", 1, "provider", vantage="v2"), make_record("p/a", 1, "provider")]
    events = replay(records, confirm=2)
    assert [(e.check, e.vantage, e.kind) for e in events] == [
        ("p/a", "v1", "suspected"), ("p/b", "v1", "suspected"), ("p/a", "v2", "suspected"),
        ("p/a", "v1", "confirmed")]


def test_confirm_must_be_positive():
    with pytest.raises(ValueError):
        IncidentTracker(0)


sequences = st.lists(st.sampled_from(KINDS), max_size=60)


@settings(max_examples=300, deadline=None)
@given(kinds=sequences, confirm=st.integers(1, 5), split=st.integers(0, 60))
def test_live_tracking_with_a_restart_equals_replay(kinds, confirm, split):
    """A live tracker that stops at any point and resumes from the store sees what a replay sees."""
    records = records_of(kinds)
    split = min(split, len(records))
    first = IncidentTracker(confirm)
    live = [e for r in records[:split] for e in first.feed(r)]
    store = MemoryStore()
    store.write(records[:split], [])
    second = IncidentTracker(confirm)
    second.restore(store.tail("p/c", "v1"))
    live += [e for r in records[split:] for e in second.feed(r)]
    assert live == replay(records, confirm)


@settings(max_examples=300, deadline=None)
@given(kinds=sequences, confirm=st.integers(1, 5))
def test_runs_shorter_than_confirm_never_become_incidents(kinds, confirm):
    events = replay(records_of(kinds), confirm)
    # Longest run of provider failures, ignoring records that are no evidence.
    longest = run = 0
    for kind in kinds:
        if kind == "provider":
            run += 1
            longest = max(longest, run)
        elif kind == "ok":
            run = 0
    confirmed = [e for e in events if e.kind == "confirmed"]
    if longest < confirm:
        assert confirmed == []
    else:
        assert confirmed
    for event in events:
        if event.kind == "flap":
            assert event.failures < confirm
        if event.kind == "resolved":
            assert event.failures >= confirm
    # Every incident opens with exactly one "suspected" and ends at most once.
    by_incident: dict[str, list[str]] = {}
    for event in events:
        by_incident.setdefault(event.incident_id, []).append(event.kind)
    for sequence in by_incident.values():
        assert sequence[0] == "suspected"
        assert sequence in (["suspected"], ["suspected", "flap"], ["suspected", "confirmed"],
                            ["suspected", "confirmed", "resolved"])
