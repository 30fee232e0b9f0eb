"""Smoke test of benchmarks/report.py: its generator and store import at a tiny size (3 checks ×
2 days), the rows exactly as the SQLite store writes them, the seeded outages in the store.
No timing is asserted."""

from __future__ import annotations

import argparse
import importlib.util
import sqlite3
import sys
from pathlib import Path

import pytest

from probecore import decode_record, replay, timestamp_ms
from probecore_plugins.sqlite import SCHEMA_VERSION, SQLiteStore, _record_row

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_report", None)


@pytest.fixture(scope="module")
def made(bench, tmp_path_factory):
    setup = bench.make_setup(3, "2026-10", "60s", seed=7, days=2)
    path = tmp_path_factory.mktemp("bench") / "store.sqlite3"
    profile = bench.write_profile(path, 3, setup.interval_s)
    args = argparse.Namespace(batch=1000)
    meta = bench.prepare_store(args, path, setup.params, setup.generator, quiet=True)
    return setup, path, profile, meta


def test_the_store_holds_every_generated_record(made):
    setup, path, _, meta = made
    expected = sum(t.records for t in setup.truths.values())
    assert expected == 3 * 2 * 1440 - sum(p.gap[1] for p in setup.plans)
    assert meta["records"] == expected and not meta["reused"]
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM records").fetchone()[0] == expected
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # gap_ms as the store keeps it: the generator's values equal a recomputation by the store.
    written = db.execute("SELECT id, gap_ms FROM records ORDER BY id").fetchall()
    db.execute("UPDATE records SET gap_ms = NULL")
    db.commit()
    store = SQLiteStore(f"sqlite:{path}")
    store.refresh_gaps()
    store.close()
    assert db.execute("SELECT id, gap_ms FROM records ORDER BY id").fetchall() == written
    for check, truth in setup.truths.items():
        n, bad = db.execute("SELECT COUNT(*), SUM(outcome != 'ok') FROM records WHERE check_id = ?",
                            (check,)).fetchone()
        assert (n, bad) == (truth.records, truth.not_ok)


def test_rows_are_what_the_sqlite_store_writes(made):
    _, path, _, _ = made
    db = sqlite3.connect(path)
    for row in db.execute("SELECT check_id, vantage, started_ms, outcome, body FROM records"):
        assert row == _record_row(decode_record(row[4]))


def test_the_seeded_outages_are_in_the_store(made):
    setup, path, _, _ = made
    store = SQLiteStore(f"sqlite:{path}")
    try:
        for plan in setup.plans:
            truth = setup.truths[plan.check]
            records = list(store.records(check=plan.check))
            errors = [(timestamp_ms(r.started_at) - setup.start_ms) // 60_000 for r in records if r.outcome == "error"]
            assert errors == plan.errors
            events = replay(records, confirm=2)
            confirmed = [e for e in events if e.kind == "confirmed"]
            resolved = [e for e in events if e.kind == "resolved"]
            flaps = [e for e in events if e.kind == "flap"]
            assert len(confirmed) == len(resolved) == len(plan.outages) == truth.outages
            assert len(flaps) == len(plan.flaps)
            # Down from the first failure to the first ok after it: the seeded truth's spans.
            spans = [(timestamp_ms(c.incident_started_at), timestamp_ms(r.at)) for c, r in zip(confirmed, resolved)]
            assert spans == truth.spans
            assert truth.down_ms == sum(b - a for a, b in spans)
            # The gap: no record in it, records on both sides.
            first, length = plan.gap
            runs = store.evidence(plan.check, setup.start_ms, setup.end_ms, max_gap_ms=120_000)["bench"]
            holes = [((a_end - setup.start_ms) // 60_000, (b_start - setup.start_ms) // 60_000)
                     for (_, a_end), (b_start, _) in zip(runs, runs[1:])]
            assert holes == [(first - 1, first + length)]
    finally:
        store.close()


def test_probe_records_decodes_the_store(made):
    from probecore._cli import main

    _, path, profile, _ = made
    assert main(["records", str(profile), "--check", "c0000", "--store", f"sqlite:{path}"]) == 0


def test_the_store_is_reused(bench, made):
    setup, path, _, _ = made
    meta = bench.prepare_store(argparse.Namespace(batch=1000), path, setup.params, setup.generator, quiet=True)
    assert meta["reused"]


def test_the_report_agrees_with_the_seeded_truth(bench, made, capsys):
    pytest.importorskip("probecore._report")
    import json

    from probecore._cli import main

    setup, path, profile, _ = made
    capsys.readouterr()
    main(["report", str(profile), "--month", "2026-10", "--format", "json", "--store", f"sqlite:{path}"])
    document = json.loads(capsys.readouterr().out)
    compared, problems = bench.compare(document, setup.plans, setup.truths, None, 7)
    assert compared == 6 and problems == []
