"""What only the PostgreSQL store has: URLs and passwords, one-line errors, monthly partitions,
migrations under concurrency, the evaluator's indexes, and a ``kill -9`` of ``probe run``.

Everything every store does is in tests/test_store_conformance.py (run on both stores).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from probecore_plugins.postgresql import (
    FIRST_GAP,
    SCHEMA_VERSION,
    PostgreSQLStore,
    StoreUnavailable,
    month_bounds,
    month_of,
    redact,
)

from probecore import (
    SLIRecord,
    StoreError,
    encode_record,
    format_timestamp_ms,
    open_store,
    timestamp_ms,
)
from probecore._cli import main
from probecore.testing import make_host, write_profile
from tests.conftest import assert_valid_records
from tests.servers import free_port
from tests.test_incidents import make_record, records_of
from tests.test_store_crash import (
    WAIT,
    LineReader,
    assert_all_stored,
    many_checks,
    wait_for_lines,
)

if TYPE_CHECKING:
    from tests.servers.nginx import Nginx
    from tests.servers.postgresql import PostgreSQLServer

pytest_plugins = ["tests.servers.nginx"]


@pytest.fixture
def store(postgresql_url):
    opened = PostgreSQLStore(postgresql_url)
    yield opened
    opened.close()


def _one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI expecting exit status 2 and one line on stderr; return that line."""
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


# ---- URLs, passwords, errors ---------------------------------------------------------------------

@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:s3cr%40t@db.example:5432/probes", "postgresql://u@db.example:5432/probes"),
    ("postgresql://u@db.example/probes", "postgresql://u@db.example/probes"),
    ("postgres://:pw@h/db?sslmode=require&password=pw2", "postgres://h/db?sslmode=require"),
    ("postgresql://u@h/db?application_name=probe", "postgresql://u@h/db?application_name=probe"),
])
def test_the_url_is_shown_without_its_password(url, shown):
    assert redact(url) == shown


def test_a_password_in_the_url_is_used_and_never_shown(postgresql_server: PostgreSQLServer, tmp_path, capsys):
    name = postgresql_server.create_database(owner=postgresql_server.password_user).rsplit("/", 1)[1]
    url = postgresql_server.database_url(name, password_user=True)
    assert postgresql_server.password in url
    store = open_store(url, make_host().stores.get)
    try:
        assert postgresql_server.password not in store.url
        assert store.url == postgresql_server.database_url(name, password_user=True, with_password=False)
        store.write(records_of(["ok", "provider"]), [])
        assert len(list(store.records())) == 2
    finally:
        store.close()
    # Through the CLI: the header names the store, without the password.
    data = tmp_path / "r.jsonl"
    data.write_bytes(b"".join(encode_record(r) + b"\n" for r in records_of(["ok", "ok", "ok"])))
    assert main(["records", "import", str(data), "--store", url]) == 0
    out, err = capsys.readouterr()
    assert "1 records imported into postgresql://probecore_pw@" in err
    assert postgresql_server.password not in out + err


def test_a_wrong_password_is_one_line_exit_2_without_the_password(postgresql_server: PostgreSQLServer,
                                                                   tmp_path, capsys):
    name = postgresql_server.create_database(owner=postgresql_server.password_user).rsplit("/", 1)[1]
    wrong = "Wr0ng-" + postgresql_server.password[::-1]
    url = postgresql_server.database_url(name, password_user=True, with_password=False).replace(
        f"{postgresql_server.password_user}@", f"{postgresql_server.password_user}:{wrong}@")
    with pytest.raises(StoreUnavailable) as caught:
        PostgreSQLStore(url)
    assert wrong not in str(caught.value)
    assert "password authentication failed" in str(caught.value)
    data = tmp_path / "r.jsonl"
    data.write_bytes(encode_record(make_record("p/c", 0, "ok")) + b"\n")
    line = _one_line_error(capsys, ["records", "import", str(data), "--store", url])
    assert wrong not in line
    assert f"store postgresql://{postgresql_server.password_user}@127.0.0.1:{postgresql_server.port}/{name}" in line
    assert "password authentication failed" in line


def test_no_password_for_a_password_user_is_one_line(postgresql_server: PostgreSQLServer, tmp_path, capsys,
                                                      monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    name = postgresql_server.create_database(owner=postgresql_server.password_user).rsplit("/", 1)[1]
    url = postgresql_server.database_url(name, password_user=True, with_password=False)
    with pytest.raises(StoreUnavailable, match=r"^store postgresql://probecore_pw@.*: cannot connect: .*password"):
        PostgreSQLStore(url)


def test_the_password_may_come_from_pgpassword_or_pgpass(postgresql_server: PostgreSQLServer, tmp_path,
                                                          monkeypatch):
    name = postgresql_server.create_database(owner=postgresql_server.password_user).rsplit("/", 1)[1]
    url = postgresql_server.database_url(name, password_user=True, with_password=False)
    monkeypatch.setenv("PGPASSWORD", postgresql_server.password)
    PostgreSQLStore(url).close()
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{postgresql_server.port}:{name}:{postgresql_server.password_user}:"
                      f"{postgresql_server.password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    store = PostgreSQLStore(url)
    try:
        store.write(records_of(["ok"]), [])
        assert len(list(store.records())) == 1
    finally:
        store.close()


@pytest.mark.parametrize(("make_url", "problem"), [
    (lambda s: f"postgresql://probecore@127.0.0.1:{free_port()}/x", r"cannot connect: .*(refused|failed)"),
    (lambda s: f"postgresql://probecore@127.0.0.1:{s.port}/no_such_db", 'database "no_such_db" does not exist'),
    (lambda s: "postgresql://probecore@127.0.0.1:99999/x", "bad URL: Port out of range"),
    (lambda s: "postgresql://probecore@127.0.0.1:5x/x", "bad URL"),
    (lambda s: f"postgresql://probecore@127.0.0.1:{s.port}", "the URL names no database"),
    (lambda s: f"postgresql://probecore@127.0.0.1:{s.port}/x?nonsense=1", 'bad URL: invalid URI query parameter'),
    (lambda s: "postgresql:probes", "not a PostgreSQL URL"),
])
def test_bad_urls_and_unreachable_servers_are_one_line_exit_2(postgresql_server, tmp_path, capsys,
                                                             make_url, problem):
    url = make_url(postgresql_server)
    data = tmp_path / "r.jsonl"
    data.write_bytes(encode_record(make_record("p/c", 0, "ok")) + b"\n")
    line = _one_line_error(capsys, ["records", "import", str(data), "--store", url])
    assert line.startswith("probe: error: store postgres"), line
    assert re.search(problem, line), line


# ---- schema --------------------------------------------------------------------------------------

def _partitions(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {name for (name,) in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'records'::regclass")}


def test_records_go_to_monthly_partitions_made_on_demand(store, postgresql_url):
    before = _partitions(postgresql_url)
    assert len(before) == 2  # this month and the next, made on open
    # make_record starts 2026-11-01T00:00Z (UTC); 9,000 × 5 minutes reach into January 2027.
    records = [make_record("p/a", i, "ok") for i in range(0, 18_000, 1_000)]
    store.write(records, [])
    made = _partitions(postgresql_url) - before
    assert {"records_p202611", "records_p202612", "records_p202701"} <= _partitions(postgresql_url)
    assert made <= {"records_p202611", "records_p202612", "records_p202701", "records_p202702"}
    with psycopg.connect(postgresql_url) as conn:
        rows = conn.execute("SELECT tableoid::regclass::text, started_ms FROM records").fetchall()
    for partition, started in rows:
        month = datetime.fromtimestamp(started / 1000, tz=UTC)
        assert partition == f"records_p{month.year:04d}{month.month:02d}"
    assert list(store.records()) == records
    # A second store (another agent) writing into an existing month creates nothing.
    other = PostgreSQLStore(postgresql_url)
    try:
        other.write([make_record("p/b", 1, "ok")], [])
    finally:
        other.close()
    assert _partitions(postgresql_url) == before | made


def test_the_schema_version_is_kept_and_a_newer_one_is_refused(store, postgresql_url):
    with psycopg.connect(postgresql_url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM probecore_schema").fetchall() == [(SCHEMA_VERSION,)]
        conn.execute("UPDATE probecore_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1} is newer than this "
                                         rf"probecore understands \({SCHEMA_VERSION}\); upgrade probecore"):
        PostgreSQLStore(postgresql_url)


def test_agents_opening_a_new_store_at_once_migrate_it_once(postgresql_url):
    errors: list[BaseException] = []
    stores: list[PostgreSQLStore] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        try:
            stores.append(PostgreSQLStore(postgresql_url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    try:
        assert errors == []
        assert len(stores) == 4
        for i, opened in enumerate(stores):
            opened.write([make_record("p/a", i, "ok")], [])
        assert len(list(stores[0].records())) == 4
        with psycopg.connect(postgresql_url) as conn:
            assert conn.execute("SELECT count(*) FROM probecore_schema").fetchone() == (1,)
    finally:
        for opened in stores:
            opened.close()


def test_the_evaluators_queries_use_their_indexes(store, postgresql_url):
    # Enough rows for the planner to prefer an index: 20 checks × 2,000 minutes, 1 % failed.
    rows = []
    base = timestamp_ms("2026-11-01T00:00:00.000Z")
    for c in range(20):
        for i in range(2_000):
            outcome = "fail" if i % 100 == 7 else "ok"
            record = make_record(f"p/c{c:02d}", 0, "provider" if outcome == "fail" else "ok")
            rows.append((record.check, "v1", base + i * 60_000, outcome, encode_record(record).decode()))
    assert store.write_rows(rows) == len(rows)
    with psycopg.connect(postgresql_url, autocommit=True) as conn:
        conn.execute("ANALYZE records")

        def plan(sql: str, *args: object) -> str:
            return "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, args))

        def uses(index: str, text: str) -> bool:
            """Whether *text* scans a partition's copy of the partitioned *index*."""
            children = [name for (name,) in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass", (index,))]
            return any(f" {name} " in text or text.endswith(f" {name}") for name in children)

        not_ok = plan("SELECT body FROM records WHERE check_id = %s AND started_ms >= %s AND started_ms < %s "
                      "AND outcome <> 'ok' ORDER BY started_ms, id", "p/c03", base, base + 86_400_000)
        assert uses("records_not_ok", not_ok), not_ok
        gaps = plan("SELECT DISTINCT vantage FROM records WHERE check_id = %s AND gap_ms > %s AND started_ms < %s",
                    "p/c03", 120_000, base + 10**10)
        assert uses("records_gaps", gaps), gaps
    # And the answers: one run per check; the failures through the partial index.
    assert store.evidence("p/c03", base, base + 2_000 * 60_000, 120_000) == {
        "v1": [(base, base + 1_999 * 60_000)]}
    assert len(list(store.records(check="p/c03", not_ok=True))) == 20


def test_a_store_survives_the_server_dropping_its_connections(store, postgresql_server, postgresql_url):
    store.write(records_of(["ok"]), [])
    name = postgresql_url.rsplit("/", 1)[1]
    postgresql_server.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
    # The pool notices a dead connection when it is handed back or checked: the first call may
    # fail (the pipeline retries a failed batch), the next one works.
    try:
        store.write(records_of(["ok", "ok"]), [])
    except StoreError as exc:
        assert "store postgresql://" in str(exc)
        store.write(records_of(["ok", "ok"]), [])
    assert len(list(store.records())) == 2


# ---- kill -9 --------------------------------------------------------------------------------------

def test_sigkill_of_probe_run_loses_no_printed_record(tmp_path: Path, nginx: Nginx,
                                                      postgresql_server: PostgreSQLServer) -> None:
    profile = many_checks(tmp_path, nginx)
    name = postgresql_server.create_database(owner=postgresql_server.password_user).rsplit("/", 1)[1]
    url = postgresql_server.database_url(name, password_user=True)
    env = {**os.environ, "PROBECORE_DATA_DIR": str(tmp_path / "data")}
    with open(tmp_path / "stderr.log", "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "probecore", "run", str(profile), "--json", "--store", url,
             "--vantage", "crash-test"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=env)
    assert proc.stdout is not None
    try:
        reader = LineReader(proc.stdout)
        wait_for_lines(reader, 300, tmp_path)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(WAIT)
        assert reader.wait_for_eof(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    printed = list(reader.lines)
    assert len(printed) >= 300
    assert_valid_records(printed)
    stderr_text = (tmp_path / "stderr.log").read_text(errors="replace")
    assert postgresql_server.password not in stderr_text
    assert f"store postgresql://{postgresql_server.password_user}@127.0.0.1" in " ".join(stderr_text.split())
    with psycopg.connect(postgresql_server.database_url(name)) as conn:
        rows = conn.execute("SELECT check_id, vantage, started_ms, outcome, body FROM records").fetchall()
        # Every record's gap is its distance to the previous record of its stream.
        wrong_gaps = conn.execute(
            "SELECT count(*) FROM (SELECT gap_ms, COALESCE(started_ms - LAG(started_ms) OVER "
            "(PARTITION BY check_id, vantage ORDER BY started_ms), %s) AS want FROM records) AS g "
            "WHERE gap_ms <> want", (FIRST_GAP,)).fetchone()[0]
    assert_all_stored(printed, rows)
    assert len(rows) >= len(printed)
    assert wrong_gaps == 0
    # probe reads the crashed store back.
    done = subprocess.run([sys.executable, "-m", "probecore", "records", str(profile), "--store", url],
                          env=env, capture_output=True, timeout=WAIT, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert set(done.stdout.splitlines()) == {row[4].encode() for row in rows}


def test_probe_run_once_prints_the_store_without_its_password(tmp_path, nginx, postgresql_server, capsys):
    profile = write_profile(tmp_path, f"""
        [profile]
        name = "once"
        [[check]]
        id = "web"
        probe = "tcp"
        host = "{nginx.host}"
        port = {nginx.port}
        """)
    name = postgresql_server.create_database(owner=postgresql_server.password_user).rsplit("/", 1)[1]
    url = postgresql_server.database_url(name, password_user=True)
    assert main(["run", str(profile), "--once", "--json", "--store", url]) == 0
    out, err = capsys.readouterr()
    assert postgresql_server.password not in out + err
    (line,) = out.splitlines()
    assert_valid_records([line])
    store = PostgreSQLStore(url)
    try:
        assert [encode_record(r).decode() for r in store.records()] == [line]
    finally:
        store.close()


def test_a_long_reader_does_not_hold_up_writes_for_next_months_partition(store, postgresql_url):
    """Writing into the newest month also makes the next month's partition, which must wait for
    every reader of ``records``; ahead of time the store gives up after a second instead."""
    now = month_of(int(datetime.now(UTC).timestamp() * 1000))
    newest = month_of(month_bounds(*now)[1])          # made on open, with the current one
    after = month_of(month_bounds(*newest)[1])
    after_name = f"records_p{after[0]:04d}{after[1]:02d}"

    def record_in(month: tuple[int, int], minute: int) -> SLIRecord:
        at = format_timestamp_ms(month_bounds(*month)[0] + 86_400_000 + minute * 60_000)
        return SLIRecord(check="p/a", probe="tcp", target="192.0.2.1:80", vantage="v1", scheduled_at=at,
                         started_at=at, duration_s=0.01, outcome="ok")

    assert after_name not in _partitions(postgresql_url)
    with psycopg.connect(postgresql_url) as reader:
        reader.execute("SELECT count(*) FROM records")  # a report in progress: its transaction stays open
        store.write([record_in(newest, 0)], [])
        assert after_name not in _partitions(postgresql_url)
        assert len(list(store.records(check="p/a"))) == 1
    # The reader is gone: the next write makes it.
    store.write([record_in(newest, 1)], [])
    assert after_name in _partitions(postgresql_url)
