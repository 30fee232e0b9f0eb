"""Every store behaves the same: each test runs on SQLite and on a real PostgreSQL.

The stores are opened by URL through the plugin registry (``sqlite:PATH``,
``postgresql://…/fresh-db``), as ``--store`` opens them. Queries the evaluator uses are also
compared with :class:`probecore.testing.MemoryStore` (the reference semantics) on random data
written in several batches, some out of order; and ``probe report`` must produce the same
report from either store.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from probecore import (
    Annotation,
    Delivery,
    Failure,
    IncidentEvent,
    Notice,
    SLIRecord,
    StoreError,
    encode_record,
    format_timestamp,
    format_timestamp_ms,
    open_store,
    replay,
    timestamp_ms,
)
from probecore._cli import main
from probecore.testing import MemoryStore, make_host
from tests.test_incidents import make_record, records_of

STORES = ["sqlite", "postgresql"]


@pytest.fixture(scope="module")
def host():
    return make_host()


@pytest.fixture(params=STORES)
def store_url(request, tmp_path):
    """A URL of a new, empty store of each kind."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'conf.sqlite3'}"
    return request.getfixturevalue("postgresql_server").create_database()


@pytest.fixture
def opener(store_url, host):
    """``opener()`` opens the test's store (again); everything opened is closed afterwards."""
    opened = []

    def open_():
        store = open_store(store_url, host.stores.get)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(opener):
    return opener()


def test_the_store_shows_its_url(store, store_url):
    assert store.url == store_url


def test_records_round_trip_byte_for_byte_in_start_order(store):
    records = records_of(["ok", "provider", "ok", "error", "customer"])
    store.write(list(reversed(records)), [])
    assert list(store.records()) == records
    assert [encode_record(r) for r in store.records()] == [encode_record(r) for r in records]


def test_queries_by_check_prefix_and_time(store):
    a = [make_record("p/a", i, "ok") for i in range(5)]
    b = [make_record("p/b", i, "ok") for i in range(5)]
    other = [make_record("q/a", i, "ok") for i in range(2)]
    store.write(a + b + other, [])
    assert list(store.records(check="p/a")) == a
    assert len(list(store.records(prefix="p/"))) == 10
    assert list(store.records(check="p/b", since=b[1].started_at, until=b[3].started_at)) == b[1:3]
    assert list(store.records(since=a[4].started_at)) == [a[4], b[4]]


def test_a_prefix_is_literal_and_the_order_is_by_code_point(store):
    # "_" and "%" are not wildcards; "p_/x" sorts before "pa/x" and "pZ/x" before both.
    ids = ["p_/x", "pa/x", "p%/x", "pZ/x", "p/x"]
    store.write([make_record(c, 0, "ok") for c in ids], [])
    assert [r.check for r in store.records(prefix="p_/")] == ["p_/x"]
    assert [r.check for r in store.records(prefix="p%/")] == ["p%/x"]
    # Same start: ties come in check order (code points, as Python sorts them).
    assert [r.check for r in store.records()] == sorted(ids)


def test_records_with_the_same_start_keep_a_stable_order_across_batches(store):
    first = [make_record("p/z", 0, "ok"), make_record("p/z", 1, "ok")]
    second = [make_record("p/a", 0, "ok", vantage="v0")]
    store.write(first, [])
    store.write(second, [])
    # By start; at equal starts the one written first comes first (SQLite's id order).
    assert list(store.records()) == [first[0], second[0], first[1]]


def test_not_ok_records_only(store):
    records = records_of(["ok", "provider", "ok", "error", "customer", "ok"])
    store.write(records, [])
    assert list(store.records(check="p/c", not_ok=True)) == [r for r in records if r.outcome != "ok"]
    assert list(store.records(not_ok=True, since=records[2].started_at)) == [records[3], records[4]]


def test_events_are_idempotent_and_ordered(store):
    records = records_of(["provider", "provider", "ok"])
    events = replay(records, 2)
    store.write(records, events)
    store.write([], events)  # a restart writes the same events again
    assert list(store.events()) == events
    assert list(store.events(check="p/c")) == events
    assert list(store.events(prefix="p/")) == events
    assert list(store.events(prefix="q/")) == []
    assert all(isinstance(e, IncidentEvent) for e in store.events(check="p/c"))


def test_events_keep_the_order_they_were_written_in_across_checks(store):
    a = replay(records_of(["provider", "provider", "ok"], check="p/a"), 2)
    b = replay(records_of(["provider", "ok"], check="p/b"), 2)
    store.write([], b)
    store.write([], a + b)
    assert list(store.events()) == b + a


def test_a_write_is_idempotent(store):
    records = records_of(["ok", "provider", "provider", "ok"])
    events = replay(records, 2)
    store.write(records, events)
    store.write(records, events)
    assert list(store.records()) == records
    assert list(store.events()) == events


def test_import_skips_records_already_stored(store):
    records = records_of(["ok", "ok", "provider"])
    assert store.import_records(records[:2]) == (2, 0)
    assert store.import_records(records) == (1, 2)
    assert store.import_records([]) == (0, 0)
    assert len(list(store.records())) == 3


def test_tail_is_everything_after_the_last_ok(store):
    store.write(records_of(["provider", "ok", "provider", "customer", "provider"]), [])
    assert [r.outcome for r in store.tail("p/c", "v1")] == ["fail", "fail", "fail"]
    assert store.tail("p/c", "elsewhere") == []
    store.write([make_record("p/d", i, "provider") for i in range(3)], [])
    assert len(store.tail("p/d", "v1")) == 3  # never ok: everything


def test_reopening_keeps_data_and_does_not_migrate_again(opener):
    first = opener()
    records = records_of(["ok", "provider"])
    events = replay(records, 1)
    first.write(records, events)
    first.close()
    second = opener()
    assert list(second.records()) == records
    assert list(second.events()) == events
    third = opener()  # two open at once (two agents)
    third.write(records_of(["ok", "provider", "ok"]), [])
    assert len(list(second.records())) == 3


def test_writing_after_close_is_a_clear_error(opener):
    store = opener()
    store.close()
    store.close()  # twice is harmless
    with pytest.raises(StoreError, match="already closed"):
        store.write(records_of(["ok"]), [])


def test_gaps_follow_records_imported_out_of_order(store):
    first = [make_record("p/a", i, "ok") for i in (0, 1, 2, 10, 11)]
    late = [make_record("p/a", i, "ok") for i in (5, 6)]
    store.import_records(first)
    store.import_records(late)   # fills part of the gap between 2 and 10
    (runs,) = store.evidence(first[0].check, 0, 10**15, max_gap_ms=10 * 60_000).values()
    t0 = runs[0][0]
    assert [(a - t0, b - t0) for a, b in runs] == [(0, 600_000), (1_500_000, 1_800_000), (3_000_000, 3_300_000)]


def test_evidence_following_and_tail_of_an_empty_check(store):
    assert store.evidence("p/none", 0, 10**15, 60_000) == {}
    assert store.following("p/none", "v1", [0, 5]) == {0: None, 5: None}
    assert store.following("p/none", "v1", []) == {}
    assert store.values("p/none", 0, 10**15, "value") == []


# ---- the evaluator's queries against the reference (MemoryStore) -----------------------------

BASE = datetime(2026, 10, 30, 22, 0, tzinfo=UTC)  # the data crosses into November (two partitions)


def _random_records(seed: int) -> list[SLIRecord]:
    rng = random.Random(seed)
    out = []
    for check in ("p/a", "p/b"):
        for vantage in ("v1", "v2"):
            at = BASE + timedelta(milliseconds=rng.randrange(5_000))
            for _ in range(rng.randrange(60, 140)):
                roll = rng.random()
                outcome = "ok" if roll < 0.8 else ("fail" if roll < 0.95 else "error")
                stamp = format_timestamp(at)
                value = round(rng.uniform(0.001, 0.2), 6) if outcome == "ok" and rng.random() < 0.9 else None
                phases = {"connect": round(rng.uniform(0.001, 0.1), 6)} if rng.random() < 0.7 else {}
                failure = (Failure("refused", "provider", "connection refused") if outcome == "fail" else
                           Failure("probe_error", "probe", "bug") if outcome == "error" else None)
                out.append(SLIRecord(check=check, probe="tcp", target="192.0.2.1:80", vantage=vantage,
                                     scheduled_at=stamp, started_at=stamp, duration_s=0.01, outcome=outcome,
                                     failure=failure, value=value, unit="s" if value is not None else None,
                                     phases=phases))
                # Mostly a minute apart, sometimes a gap of up to an hour (missed runs).
                step = 60_000 + rng.randrange(-800, 800) if rng.random() < 0.9 else rng.randrange(61_000, 3_600_000)
                at += timedelta(milliseconds=step)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_the_evaluators_queries_agree_with_the_reference(store, store_url, seed):
    # Seed 2 writes a batch whose rows lie on both sides of a record already stored (SQLite
    # once recomputed gaps only when a stored record was later than the batch's last row).
    records = _random_records(seed)
    rng = random.Random(seed)
    shuffled = records[:]
    rng.shuffle(shuffled)
    memory = MemoryStore()
    # Batches in random order: later records first, earlier ones imported into the middle.
    for i in range(0, len(shuffled), 97):
        batch = shuffled[i:i + 97]
        store.write(batch, []) if i % 2 else store.import_records(batch)
        memory.import_records(batch)
    # Duplicates change nothing.
    assert store.import_records(records[:10]) == (0, 10)
    starts = sorted(timestamp_ms(r.started_at) for r in records)
    lo, hi = starts[0], starts[-1]
    assert list(store.records()) == list(memory.records())
    for check in ("p/a", "p/b"):
        assert list(store.records(check=check, not_ok=True)) == list(memory.records(check=check, not_ok=True))
        for since, until in ((lo - 1, hi + 1), (lo + 600_000, hi - 600_000), (lo + 3_000_000, lo + 7_000_000)):
            for hold in (61_000, 120_000, 900_000, 3_600_000):
                assert store.evidence(check, since, until, hold) == memory.evidence(check, since, until, hold), \
                    (check, since, until, hold)
            for metric in ("value", "phases.connect", "duration_s", "failure.code", "nothing"):
                assert store.values(check, since, until, metric) == memory.values(check, since, until, metric)
            span = {"since": format_timestamp_ms(since), "until": format_timestamp_ms(until)}
            assert list(store.records(check=check, **span)) == list(memory.records(check=check, **span))
            assert list(store.records(check=check, not_ok=True, **span)) == \
                list(memory.records(check=check, not_ok=True, **span))
        for vantage in ("v1", "v2", "v9"):
            moments = [timestamp_ms(r.started_at) for r in records if r.check == check and r.outcome != "ok"]
            moments += [lo - 5, hi, hi + 5]
            assert store.following(check, vantage, moments) == memory.following(check, vantage, moments)
            assert store.tail(check, vantage) == memory.tail(check, vantage)


# ---- annotations ------------------------------------------------------------------------------

def _exclusion(profile: str = "p", start: str = "2026-10-01T00:00:00.000Z") -> Annotation:
    return Annotation(kind="exclusion", profile=profile, check=f"{profile}/c", start=start,
                      end="2026-10-01T01:00:00.000Z", reason="maintenance", note="maintenance",
                      author="ops", created_at="2026-09-30T00:00:00.000Z")


def test_annotations_get_ids_and_are_withdrawn_not_deleted(store):
    first = store.annotate(_exclusion())
    second = store.annotate(_exclusion(start="2026-10-02T00:00:00.000Z"))
    other = store.annotate(_exclusion(profile="q"))
    assert first.id is not None and second.id is not None and first.id < second.id
    assert store.annotations("p") == [first, second]
    assert store.annotations("q") == [other]
    assert store.annotations("p", "incident_report") == []
    withdrawn = store.withdraw(first.id, at="2026-10-05T00:00:00.000Z", by="ops", note="wrong day")
    assert withdrawn.withdrawn_at == "2026-10-05T00:00:00.000Z"
    assert store.annotations("p", "exclusion") == [withdrawn, second]
    with pytest.raises(StoreError, match=f"annotation {first.id} was already withdrawn"):
        store.withdraw(first.id, at="2026-10-06T00:00:00.000Z", by="ops", note="again")
    with pytest.raises(StoreError, match="no annotation 9999"):
        store.withdraw(9999, at="2026-10-06T00:00:00.000Z", by="ops", note="none")


# ---- the notification outbox -------------------------------------------------------------------

def _delivery(event: str, route: str = "oncall", channel: str = "hook", next_ms: int = 1_000,
              profile: str = "p") -> Delivery:
    notice = Notice(notice_id=f"{event}/{route}", event_id=event, kind="confirmed", profile=profile,
                    route=route, check=f"{profile}/c", vantage="v1", incident=event.split("#")[0],
                    incident_started_at="2026-10-01T00:00:00.000Z", at="2026-10-01T00:00:00.000Z",
                    title="p/c is down", text="connection refused")
    return Delivery(profile=profile, event_id=event, route=route, channel=channel, notice=notice,
                    created_ms=0, next_ms=next_ms)


def test_the_outbox_keeps_each_delivery_once_and_in_order(store):
    records = records_of(["provider", "provider"])
    events = replay(records, 2)
    store.write(records, events, [_delivery("e1"), _delivery("e1", channel="mail")])
    store.write([], events, [_delivery("e1")])  # replayed batch: nothing new
    assert store.enqueue([_delivery("e1"), _delivery("e2", next_ms=500), _delivery("x", profile="q")]) == 2
    assert [(d.event_id, d.channel) for d in store.deliveries("p")] == [("e1", "hook"), ("e1", "mail"), ("e2", "hook")]
    assert [d.event_id for d in store.deliveries("q")] == ["x"]
    ids = [d.id for d in store.deliveries("p")]
    assert len(set(ids)) == 3 and all(isinstance(i, int) for i in ids)
    due = store.due_deliveries("p", now_ms=1_000)
    assert [d.event_id for d in due] == ["e2", "e1", "e1"]   # by next attempt, then queue order
    assert [d.event_id for d in store.due_deliveries("p", now_ms=999)] == ["e2"]
    assert len(store.due_deliveries("p", now_ms=1_000, limit=2)) == 2


def test_attempts_retry_deliver_once_and_expire(store):
    store.enqueue([_delivery("e1"), _delivery("e2")])
    one, two = store.deliveries("p")
    store.record_attempt(one.id, 1_000, False, "503 from hook", 5_000, False)
    again = store.deliveries("p")[0]
    assert (again.status, again.attempts, again.next_ms, again.last_error) == ("pending", 1, 5_000, "503 from hook")
    assert store.due_deliveries("p", now_ms=4_999) == [store.deliveries("p")[1]]
    store.record_attempt(one.id, 5_000, True, None, None, False)
    store.record_attempt(one.id, 6_000, True, None, None, False)  # not pending any more: ignored
    delivered = store.deliveries("p", "delivered")
    assert [(d.id, d.attempts, d.delivered_ms) for d in delivered] == [(one.id, 2, 5_000)]
    assert store.attempts(one.id) == [(1_000, False, "503 from hook"), (5_000, True, None)]
    store.record_attempt(two.id, 9_000, False, "gone", None, True)
    (expired,) = store.deliveries("p", "expired")
    assert (expired.id, expired.attempts) == (two.id, 0)
    assert store.attempts(two.id) == []
    assert store.due_deliveries("p", now_ms=10**12) == []
    with pytest.raises(StoreError, match="no delivery 9999"):
        store.record_attempt(9999, 1, True, None, None, False)


def test_open_incidents_are_the_confirmed_ones_not_resolved(store):
    still_down = records_of(["provider", "provider", "provider"], check="p/a")
    recovered = records_of(["provider", "provider", "ok"], check="p/b")
    other = records_of(["provider", "provider"], check="q/a")
    events = replay(still_down, 2) + replay(recovered, 2) + replay(other, 2)
    store.write(still_down + recovered + other, events)
    assert [(e.check, e.kind) for e in store.open_incidents("p")] == [("p/a", "confirmed")]
    assert [e.check for e in store.open_incidents("q")] == ["q/a"]
    assert store.open_incidents("r") == []


# ---- the whole report, from either store -------------------------------------------------------

PROFILE = """
[profile]
name = "p"
timezone = "Asia/Shanghai"
[defaults]
interval = "1m"
timeout = "10s"
confirm = 2
[[check]]
id = "a"
probe = "tcp"
host = "192.0.2.1"
port = 80
[[check]]
id = "b"
probe = "tcp"
host = "192.0.2.1"
port = 81
[[objective]]
id = "up"
kind = "availability"
check = "a"
op = ">="
target = 0.99
[[objective]]
id = "down"
kind = "downtime"
check = "b"
op = "<"
limit = "44m"
[[objective]]
id = "fast"
kind = "latency_stats"
check = "a"
metric = "phases.connect"
stat = "p95"
op = "<="
limit = "90ms"
"""


def test_probe_report_is_the_same_from_every_store(tmp_path, capsysbinary, postgresql_server):
    records = _random_records(3)
    data = tmp_path / "r.jsonl"
    data.write_bytes(b"".join(encode_record(r) + b"\n" for r in records))
    profile = tmp_path / "p.toml"
    profile.write_text(PROFILE)
    reports = []
    for url in (f"sqlite:{tmp_path / 'r.sqlite3'}", postgresql_server.create_database()):
        assert main(["records", "import", str(data), "--store", url]) == 0
        capsysbinary.readouterr()
        status = main(["report", str(profile), "--month", "2026-10", "--format", "json", "--store", url])
        out = capsysbinary.readouterr().out.decode()
        assert status in (0, 1), out
        reports.append(json.loads(out))
    for report in reports:
        report.pop("generated_at")
    sqlite_report, pg_report = reports
    assert [o["id"] for o in pg_report["objectives"]] == ["up", "down", "fast"]
    assert any(o.get("measured") not in (None, 0) for o in pg_report["objectives"])
    assert pg_report == sqlite_report


def test_a_delivery_body_round_trips(store):
    delivery = msgspec.structs.replace(_delivery("e1"), expire_ms=77, last_error=None)
    store.enqueue([delivery])
    (stored,) = store.deliveries("p")
    assert msgspec.structs.replace(stored, id=None) == delivery
