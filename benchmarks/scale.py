"""Scale benchmark: the PostgreSQL store against SQLite — records written per second through the
stores' write path, and ``probe report`` over a month of records read from PostgreSQL.

Run from the repository root::

    .venv/bin/python benchmarks/scale.py --short                 # about 10 s
    .venv/bin/python benchmarks/scale.py                         # 100,000 checks written; report: 10,000 checks × a month
    .venv/bin/python benchmarks/scale.py --skip-write --report-checks 10000 --report-interval 1h --json

Two parts (figures and keys in benchmarks/README.md):

1. **Write** (``--write-*``): records of N checks of a no-op probe (``ok``, as the scheduler
   benchmark's ``noop`` kind would make them, one per check per interval, each check at its own
   phase in the interval), built as :class:`probecore.SLIRecord` and written time-major in
   batches of ``--batch`` (the pipeline's batch size) with ``store.write(records, [])`` — the
   call ``probe run``'s pipeline makes — into a fresh SQLite file and a fresh PostgreSQL
   database. One warm-up round of every check is written first and not timed, so the timed
   rounds find each stream's previous record (the steady state of a running store). Figures:
   records/s of each store, PostgreSQL ÷ SQLite, and each rate ÷ the rate the checks need
   (N / interval): above 1 the store keeps up. ``--writers K`` writes the PostgreSQL part from
   K threads at once, each its own store (its own pool) and vantage, as K agents would.
2. **Report** (``--report-*``): benchmarks/report.py's seeded month (its plan, generator, truth
   and comparison; the profile has an ``availability`` and a ``downtime`` objective per check),
   written into PostgreSQL through ``PostgreSQLStore.write_rows`` (the write path minus record
   encoding), then ``VACUUM (ANALYZE)`` (what autovacuum does to a live store), then ``probe
   report PROFILE --month M --format json --store postgresql://…`` in a fresh process, timed by
   report.py's launcher (wall, CPU, peak RSS), its verdicts compared with the seeded truth.
   The database is kept with ``--pg-dir`` (reused when it holds the same data).

PostgreSQL: a cluster the benchmark starts itself from Debian's package (tests/servers/postgresql,
durable settings: fsync and synchronous commit on) in a temp dir or ``--pg-dir``, or an existing
server given by ``--url`` (a database the benchmark may fill; its password is never printed).

Scheduler-side figures (lateness, double probes and takeover of N agents sharing the store):
``--agents N`` runs benchmarks/agents.py with N agents instead (with ``--short`` and ``--json``).

Exit status: 0 every threshold met, 1 a threshold failed (``--max-report-seconds``, default 10, or
a report disagreeing with the truth), 2 bad usage or a crash.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "probecore.bench.scale/1"
BYTES_PER_RECORD = 600  # PostgreSQL: table + four indexes per report-style record (measured ~520)


def _report_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module
    spec.loader.exec_module(module)
    return module


def progress(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


# ---- PostgreSQL -----------------------------------------------------------------------------------

class Postgres:
    """The server the benchmark uses: its own cluster, or ``--url``'s."""

    def __init__(self, args: argparse.Namespace):
        self.server: Any = None
        self.url = args.url
        if self.url is None:
            sys.path.insert(0, str(ROOT))
            from tests.servers.postgresql import PostgreSQLStartError, start_postgresql

            keep = Path(args.pg_dir) if args.pg_dir else None
            try:
                self.server = start_postgresql(durable=True, keep_dir=keep, settings={
                    "shared_buffers": "'1GB'", "max_wal_size": "'8GB'", "checkpoint_timeout": "'15min'",
                    "work_mem": "'16MB'", "maintenance_work_mem": "'512MB'"})
            except PostgreSQLStartError as exc:
                raise SystemExit(f"scale benchmark: PostgreSQL: {exc}") from None
        self.version = ""

    def database(self, name: str, *, fresh: bool) -> str:
        """The URL of database *name* (created; emptied first when *fresh*)."""
        if self.server is None:
            if fresh:
                # --url: its one database, emptied of probecore's tables.
                import psycopg

                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute("DROP TABLE IF EXISTS records, events, annotations, outbox_attempts, outbox, "
                                 "probecore_schema, bench_meta CASCADE")
            return self.url
        exists = self.server.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if exists and fresh:
            self.server.drop_database(name)
        if not exists or fresh:
            self.server.create_database(name)
        return self.server.database_url(name)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def _redact(url: str) -> str:
    from probecore_plugins.postgresql import redact

    return redact(url)


# ---- part 1: write rate -------------------------------------------------------------------------

def noop_records(checks: int, interval_s: float, rounds: int, vantage: str, start: datetime) -> list[list[Any]]:
    """Rounds of one ``ok`` record per check, each round time-major (phase order), as batches."""
    from probecore import SLIRecord, format_timestamp

    width = len(str(checks - 1))
    ids = [f"scale/c{i:0{width}d}" for i in range(checks)]
    out = []
    for r in range(rounds):
        this = []
        for i, check in enumerate(ids):
            at = format_timestamp(start + timedelta(seconds=r * interval_s + interval_s * i / checks))
            this.append(SLIRecord(check=check, probe="noop", target="noop", vantage=vantage, scheduled_at=at,
                                  started_at=at, duration_s=0.0, outcome="ok", value=0.0, unit="s"))
        out.append(this)
    return out


def _batches(records: list[Any], size: int) -> list[list[Any]]:
    return [records[i:i + size] for i in range(0, len(records), size)]


def timed_writes(store: Any, rounds: list[list[Any]], batch: int) -> tuple[float, float, int]:
    """Write the warm-up round untimed, then the rest; (wall s, CPU s of this process, records)."""
    for part in _batches(rounds[0], batch):
        store.write(part, [])
    timed = [b for r in rounds[1:] for b in _batches(r, batch)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for part in timed:
        store.write(part, [])
    return time.perf_counter() - t0, time.process_time() - cpu0, sum(len(b) for b in timed)


def write_part(args: argparse.Namespace, pg: Postgres, work: Path) -> dict[str, Any]:
    from probecore_plugins.postgresql import PostgreSQLStore
    from probecore_plugins.sqlite import SQLiteStore

    from probecore import parse_duration

    interval = float(parse_duration(args.write_interval))
    rounds = max(1, round(args.write_seconds / interval))
    start = datetime(2026, 10, 1, tzinfo=UTC)
    progress(args, f"write: building {args.write_checks:,} checks × {rounds + 1} rounds of records …")
    data = noop_records(args.write_checks, interval, rounds + 1, "bench", start)
    figures: dict[str, Any] = {"write_checks": args.write_checks, "write_interval_s": interval,
                               "write_rounds": rounds, "batch": args.batch, "writers": args.writers}

    progress(args, "write: SQLite …")
    sqlite = SQLiteStore(f"sqlite:{work / 'scale.sqlite3'}")
    try:
        wall, cpu, count = timed_writes(sqlite, data, args.batch)
    finally:
        sqlite.close()
    figures |= {"sqlite_records": count, "sqlite_write_s": wall, "sqlite_cpu_s": cpu,
                "sqlite_records_per_s": count / wall}

    progress(args, f"write: PostgreSQL ({args.writers} writer{'s' * (args.writers > 1)}) …")
    url = pg.database("scale_write", fresh=True)
    if args.writers == 1:
        store = PostgreSQLStore(url)
        try:
            wall, cpu, count = timed_writes(store, data, args.batch)
        finally:
            store.close()
    else:
        # Each writer is an agent: its own store and vantage, the same checks.
        per = [noop_records(args.write_checks, interval, rounds + 1, f"agent{k}", start) for k in range(1, args.writers)]
        per.insert(0, data)
        stores = [PostgreSQLStore(url) for _ in range(args.writers)]
        results: list[tuple[float, float, int]] = [(0.0, 0.0, 0)] * args.writers
        errors: list[BaseException] = []
        for store, rows in zip(stores, per):
            for part in _batches(rows[0], args.batch):  # warm-up, untimed
                store.write(part, [])
        go = threading.Barrier(args.writers + 1)

        def writer(k: int) -> None:
            go.wait()
            try:
                results[k] = timed_writes(stores[k], [[]] + per[k][1:], args.batch)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(args.writers)]
        for thread in threads:
            thread.start()
        cpu0 = time.process_time()
        go.wait()
        t0 = time.perf_counter()
        for thread in threads:
            thread.join()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        count = sum(r[2] for r in results)
        for store in stores:
            store.close()
        if errors:
            raise SystemExit(f"scale benchmark: a writer failed: {errors[0]}")
    figures |= {"postgresql_records": count, "postgresql_write_s": wall, "postgresql_cpu_s": cpu,
                "postgresql_records_per_s": count / wall}
    need = args.write_checks / interval * args.writers
    figures |= {"needed_records_per_s": need,
                "postgresql_vs_sqlite": figures["postgresql_records_per_s"] / figures["sqlite_records_per_s"],
                "sqlite_keep_up": figures["sqlite_records_per_s"] / (args.write_checks / interval),
                "postgresql_keep_up": figures["postgresql_records_per_s"] / need}
    return figures


# ---- part 2: the month's report from PostgreSQL -------------------------------------------------

def report_part(args: argparse.Namespace, pg: Postgres, work: Path) -> dict[str, Any]:
    import psycopg
    from probecore_plugins.postgresql import PostgreSQLStore

    report = _report_module()
    setup = report.make_setup(args.report_checks, args.month, args.report_interval, args.seed, args.report_days)
    gen = setup.generator
    name = "scale_report"
    params = json.dumps({**setup.params, "store": "postgresql", "batch": args.report_batch}, sort_keys=True)
    url = pg.database(name, fresh=False)
    figures: dict[str, Any] = {"report_checks": args.report_checks, "month": args.month,
                               "report_interval_s": setup.interval_s, "report_days": args.report_days,
                               "report_records": gen.total, "seed": args.seed}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_meta (params text, records bigint, generate_s float8, "
                     "vacuum_s float8)")
        meta = conn.execute("SELECT params, records, generate_s, vacuum_s FROM bench_meta").fetchone()
    reused = meta is not None and meta[0] == params and meta[1] == gen.total
    if not reused:
        url = pg.database(name, fresh=True)
        progress(args, f"report: generating {gen.total:,} records into PostgreSQL …")
        store = PostgreSQLStore(url)
        pending: list[Any] = []
        done, t0, last = 0, time.perf_counter(), time.monotonic()
        try:
            for slot in range(gen.slots):
                rows = gen.rows(slot)
                pending.extend(rows)
                if len(pending) >= args.report_batch:
                    store.write_rows(pending)
                    done += len(pending)
                    pending = []
                if time.monotonic() - last >= 10:
                    last = time.monotonic()
                    rate = done / (time.perf_counter() - t0)
                    progress(args, f"report: {done:,}/{gen.total:,} records, {rate:,.0f} records/s, "
                                   f"about {(gen.total - done) / rate if rate else 0:,.0f} s left")
            if pending:
                store.write_rows(pending)
                done += len(pending)
        finally:
            store.close()
        generate_s = time.perf_counter() - t0
        progress(args, "report: VACUUM (ANALYZE) …")
        t0 = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) records")
            vacuum_s = time.perf_counter() - t0
            conn.execute("CREATE TABLE IF NOT EXISTS bench_meta (params text, records bigint, generate_s float8, "
                         "vacuum_s float8)")
            conn.execute("DELETE FROM bench_meta")
            conn.execute("INSERT INTO bench_meta VALUES (%s, %s, %s, %s)", (params, done, generate_s, vacuum_s))
    else:
        progress(args, f"report: reusing the {gen.total:,} records already in PostgreSQL")
        generate_s, vacuum_s = meta[2], meta[3]
    with psycopg.connect(url) as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    figures |= {"report_reused": reused, "generate_s": generate_s, "generate_records_per_s": gen.total / generate_s,
                "vacuum_s": vacuum_s, "database_mib": size / 2**20}

    profile = report.write_profile(work / "report", args.report_checks, setup.interval_s)
    out = work / "report.json"
    command = [report.probe_executable(), "report", str(profile), "--month", args.month, "--format", "json",
               "--store", url]
    progress(args, "report: probe report …")
    measured = report.measure(command, out)
    problems: list[str] = []
    compared = 0
    if measured["exit"] not in (0, 1):
        problems.append(f"probe report exited with status {measured['exit']}")
    else:
        try:
            document = json.loads(out.read_text())
        except ValueError as exc:
            problems.append(f"probe report printed no JSON: {exc}")
        else:
            compared, problems = report.compare(document, setup.plans, setup.truths, args.sample, args.seed)
    figures |= {"report_exit": measured["exit"], "report_wall_s": measured["wall_s"],
                "report_cpu_s": measured["cpu_s"], "report_peak_rss_mib": measured["peak_rss_mib"],
                "report_command": " ".join(_redact(c) if c.startswith("postgres") else c for c in command),
                "objectives_compared": compared, "disagreements": len(problems), "problems": problems[:20]}
    return figures


# ---- the run --------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"schema": SCHEMA, "short": args.short}
    work = Path(tempfile.mkdtemp(prefix="probecore-scale-"))
    pg = Postgres(args)
    try:
        import psycopg

        with psycopg.connect(pg.url or pg.server.url) as conn:
            figures["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
        if not args.skip_report and pg.server is not None:
            # Before anything is measured: a month of 1-minute records for 10,000 checks does not
            # fit on most disks, and saying so after the write part would waste it.
            setup = _report_module().make_setup(args.report_checks, args.month, args.report_interval,
                                                args.seed, args.report_days)
            free = shutil.disk_usage(pg.server.directory).free
            need = setup.generator.total * BYTES_PER_RECORD
            if need > free * 0.9:
                raise SystemExit(f"scale benchmark: {setup.generator.total:,} records need about "
                                 f"{need / 2**30:,.0f} GiB; {free / 2**30:,.0f} GiB free at "
                                 f"{pg.server.directory} (fewer --report-checks, --report-days N or a "
                                 "longer --report-interval)")
        if not args.skip_write:
            figures |= write_part(args, pg, work)
        if not args.skip_report:
            figures |= report_part(args, pg, work)
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    failures: list[str] = []
    if "report_wall_s" in figures:
        if figures["report_wall_s"] > args.max_report_seconds:
            failures.append(f"probe report took {figures['report_wall_s']:.2f} s > {args.max_report_seconds:g} s")
        failures += figures["problems"]
    if "postgresql_keep_up" in figures and figures["postgresql_keep_up"] < 1:
        failures.append(f"PostgreSQL wrote {figures['postgresql_records_per_s']:,.0f} records/s, "
                        f"fewer than the {figures['needed_records_per_s']:,.0f}/s the checks make")
    figures |= {"thresholds": {"max_report_seconds": args.max_report_seconds}, "failures": failures,
                "passed": not failures, "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
                "cpus": os.cpu_count()}
    return figures


def show(f: dict[str, Any]) -> None:
    lines = [f"probecore scale (PostgreSQL {f.get('postgresql', '?')}, SQLite {f['sqlite']}, {f['cpus']} CPUs)"]
    if "postgresql_records_per_s" in f:
        lines += [
            (f"  write: {f['write_checks']:,} checks every {f['write_interval_s']:g} s, {f['write_rounds']} timed "
            f"round(s), batches of {f['batch']}, {f['writers']} PostgreSQL writer(s)"),
            (f"    SQLite      {f['sqlite_records_per_s']:>10,.0f} records/s ({f['sqlite_records']:,} in "
            f"{f['sqlite_write_s']:.2f} s, CPU {f['sqlite_cpu_s']:.2f} s)  keeps up {f['sqlite_keep_up']:.1f}×"),
            (f"    PostgreSQL  {f['postgresql_records_per_s']:>10,.0f} records/s ({f['postgresql_records']:,} in "
            f"{f['postgresql_write_s']:.2f} s, client CPU {f['postgresql_cpu_s']:.2f} s)  keeps up "
            f"{f['postgresql_keep_up']:.1f}×"),
            f"    PostgreSQL ÷ SQLite: {f['postgresql_vs_sqlite']:.2f}×",
        ]
    if "report_wall_s" in f:
        lines += [
            f"  report: {f['report_checks']:,} checks, {f['month']}"
            + (f" (first {f['report_days']} days)" if f["report_days"] else "")
            + f", every {f['report_interval_s']} s = {f['report_records']:,} records, {f['database_mib']:,.0f} MiB",
            f"    generated in {f['generate_s']:,.1f} s ({f['generate_records_per_s']:,.0f} records/s), "
            f"VACUUM (ANALYZE) {f['vacuum_s']:,.1f} s" + (" — reused" if f["report_reused"] else ""),
            (f"    probe report: wall {f['report_wall_s']:.2f} s (≤ {f['thresholds']['max_report_seconds']:g}), "
            f"CPU {f['report_cpu_s']:.2f} s, peak RSS {f['report_peak_rss_mib']:,.1f} MiB"),
            (f"    objectives compared with the seeded truth: {f['objectives_compared']:,}, "
            f"disagreements: {f['disagreements']:,}"),
        ]
    print("\n".join(lines))
    print(("FAIL: " + "\n      ".join(f["failures"])) if f["failures"] else "PASS")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/scale.py",
        description="Records/s written to PostgreSQL and SQLite through the stores' write path, and "
        "probe report over a month of records in PostgreSQL.",
        epilog="Exit status: 0 thresholds met, 1 a threshold failed, 2 usage error or crash.")
    parser.add_argument("--short", action="store_true",
                        help="small sizes for a quick run (CI): 10,000 checks written, report of 200 checks × 1 day")
    parser.add_argument("--write-checks", type=int, default=None, help="checks written (default 100000)")
    parser.add_argument("--write-interval", default="60s", help="their interval (default 60s)")
    parser.add_argument("--write-seconds", type=float, default=60.0,
                        help="seconds of records timed, after one warm-up round (default 60)")
    parser.add_argument("--batch", type=int, default=500, help="records per write call (default 500: the pipeline's)")
    parser.add_argument("--writers", type=int, default=1,
                        help="PostgreSQL writers at once, each its own store and vantage (default 1)")
    parser.add_argument("--report-checks", type=int, default=None, help="checks in the report (default 10000)")
    parser.add_argument("--report-interval", default="60s", help="their interval (default 60s)")
    parser.add_argument("--report-days", type=int, default=None, metavar="N",
                        help="records for the month's first N days only (default: the whole month)")
    parser.add_argument("--report-batch", type=int, default=20_000, help="rows per write_rows call when generating")
    parser.add_argument("--month", default="2026-10", help="the report's month (default 2026-10)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the outage pattern (default 1)")
    parser.add_argument("--sample", type=int, default=None, metavar="N",
                        help="compare only N checks with the truth (default: all)")
    parser.add_argument("--max-report-seconds", type=float, default=10.0, metavar="S",
                        help="threshold: wall seconds of probe report (default 10)")
    parser.add_argument("--skip-write", action="store_true", help="only the report part")
    parser.add_argument("--skip-report", action="store_true", help="only the write part")
    parser.add_argument("--url", default=None,
                        help="an existing PostgreSQL database to use (its probecore tables are replaced); "
                        "default: a cluster of our own in a temp dir")
    parser.add_argument("--pg-dir", default=None, metavar="DIR",
                        help="keep our own cluster in DIR, so that generated report data is reused")
    parser.add_argument("--agents", type=int, default=None, metavar="N",
                        help="instead: N probe agent processes sharing checks (benchmarks/agents.py)")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON line on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.write_checks is None:
        args.write_checks = 10_000 if args.short else 100_000
    if args.report_checks is None:
        args.report_checks = 200 if args.short else 10_000
    if args.short and args.report_days is None:
        args.report_days = 1
    if args.url and args.pg_dir:
        parser.error("--url and --pg-dir exclude each other")
    for flag in ("write_checks", "report_checks", "batch", "writers", "report_batch"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.agents is not None:  # the agents' figures: benchmarks/agents.py
        import agents
        return agents.main(["--agents", str(args.agents), *(["--short"] if args.short else []),
                            *(["--json"] if args.json else [])])
    sys.path.insert(0, str(ROOT / "plugins"))
    try:
        figures = run(args)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 2
    if args.json:
        sys.stdout.write(json.dumps(figures) + "\n")
    else:
        show(figures)
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
