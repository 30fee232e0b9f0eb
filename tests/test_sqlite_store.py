"""The SQLite store plugin: schema and migrations, batches, dedup, queries, resume."""

from __future__ import annotations

import sqlite3

import pytest

from probecore import IncidentEvent, StoreError, replay
from probecore_plugins.sqlite import SCHEMA_VERSION, SQLiteStore, path_of
from tests.test_incidents import make_record, records_of


@pytest.fixture
def store(tmp_path):
    opened = SQLiteStore(f"sqlite:{tmp_path / 'sub' / 's.sqlite3'}")
    yield opened
    opened.close()


def test_new_store_is_wal_with_current_schema(store, tmp_path):
    db = sqlite3.connect(tmp_path / "sub" / "s.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    indexes = {row[1] for row in db.execute("SELECT * FROM sqlite_master WHERE type = 'index'")}
    assert {"records_by_check_time", "records_by_time", "events_by_check"} <= indexes


def test_records_round_trip_byte_for_byte_in_start_order(store):
    records = records_of(["ok", "provider", "ok"])
    store.write(list(reversed(records)), [])
    assert list(store.records()) == records


def test_queries_by_check_prefix_and_time(store):
    a = [make_record("p/a", i, "ok") for i in range(5)]
    b = [make_record("p/b", i, "ok") for i in range(5)]
    other = [make_record("q/a", i, "ok") for i in range(2)]
    store.write(a + b + other, [])
    assert list(store.records(check="p/a")) == a
    assert len(list(store.records(prefix="p/"))) == 10
    assert list(store.records(check="p/b", since=b[1].started_at, until=b[3].started_at)) == b[1:3]


def test_events_are_idempotent_and_ordered(store):
    records = records_of(["provider", "provider", "ok"])
    events = replay(records, 2)
    store.write(records, events)
    store.write([], events)  # a restart writes the same events again
    assert list(store.events()) == events
    assert all(isinstance(e, IncidentEvent) for e in store.events(check="p/c"))


def test_import_skips_records_already_stored(store):
    records = records_of(["ok", "ok", "provider"])
    assert store.import_records(records[:2]) == (2, 0)
    assert store.import_records(records) == (1, 2)
    assert len(list(store.records())) == 3


def test_tail_is_everything_after_the_last_ok(store):
    store.write(records_of(["provider", "ok", "provider", "customer", "provider"]), [])
    assert [r.outcome for r in store.tail("p/c", "v1")] == ["fail", "fail", "fail"]
    assert store.tail("p/c", "elsewhere") == []


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path):
    url = f"sqlite:{tmp_path / 'x.sqlite3'}"
    first = SQLiteStore(url)
    first.write(records_of(["ok"]), [])
    first.close()
    second = SQLiteStore(url)
    assert len(list(second.records())) == 1
    second.close()


def test_a_newer_schema_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "future.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1} is newer than this probecore understands"):
        SQLiteStore(f"sqlite:{path}")


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"cannot open: file is not a database"):
        SQLiteStore(f"sqlite:{path}")


def test_writing_after_close_is_a_clear_error(tmp_path):
    store = SQLiteStore(f"sqlite:{tmp_path / 'c.sqlite3'}")
    store.close()
    store.close()  # twice is harmless
    with pytest.raises(StoreError, match="already closed"):
        store.write(records_of(["ok"]), [])


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:///var/lib/p.db", "/var/lib/p.db"),
    ("sqlite:runs/p.db", "runs/p.db"),
    ("runs/p.db", "runs/p.db"),
    ("sqlite:/abs/p.db", "/abs/p.db"),
])
def test_url_forms(url, path):
    assert str(path_of(url)) == path


def test_a_version_1_store_migrates_keeping_its_records_and_fills_gaps_on_demand(tmp_path):
    from probecore_plugins.sqlite import MIGRATIONS
    path = tmp_path / "v1.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.executemany("INSERT INTO records (check_id, vantage, started_ms, outcome, body) "
                   "VALUES ('p/a', 'v', ?, 'fail', '{}')", [(5,), (7,), (20,), (22,)])
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = SQLiteStore(f"sqlite:{path}")
    try:
        assert store.evidence("p/a", 0, 100, max_gap_ms=5) == {"v": [(5, 7), (20, 22)]}
        assert store.evidence("p/a", 6, 100, max_gap_ms=20) == {"v": [(7, 22)]}
        assert store.following("p/a", "v", [7, 22]) == {7: 20, 22: None}
        assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        plan = " ".join(str(r) for r in store._db.execute(
            "EXPLAIN QUERY PLAN SELECT body FROM records INDEXED BY records_not_ok "
            "WHERE check_id = 'p/a' AND started_ms >= 0 AND outcome != 'ok'"))
        assert "records_not_ok" in plan
    finally:
        store.close()


def test_gaps_follow_records_imported_out_of_order(tmp_path):
    from probecore.testing import MemoryStore
    from tests.test_incidents import make_record
    stores = [SQLiteStore(f"sqlite:{tmp_path / 'g.sqlite3'}"), MemoryStore()]
    first = [make_record("p/a", i, "ok") for i in (0, 1, 2, 10, 11)]
    late = [make_record("p/a", i, "ok") for i in (5, 6)]
    for store in stores:
        store.import_records(first)
        store.import_records(late)   # fills part of the gap between 2 and 10
        (runs,) = store.evidence(first[0].check, 0, 10**15, max_gap_ms=10 * 60_000).values()
        t0 = runs[0][0]
        assert [(a - t0, b - t0) for a, b in runs] == [(0, 600_000), (1_500_000, 1_800_000), (3_000_000, 3_300_000)]
        store.close()
