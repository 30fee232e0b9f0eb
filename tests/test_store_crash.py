"""What ``probe run`` prints, it has stored: even when it is killed with SIGKILL mid-run.

The pipeline prints a batch of records only after the batch is committed to SQLite (see
``probecore/_pipeline.py``), so every complete line read from ``probe run --json`` must be in
the database afterwards, and the database must be intact. SIGTERM must stop the run cleanly
after storing (and printing) everything it measured. Real processes, real nginx, real time;
every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pytest

from probecore import timestamp_ms
from probecore.testing import write_profile
from tests.conftest import assert_valid_records

if TYPE_CHECKING:
    from tests.servers.nginx import Nginx

pytest_plugins = ["tests.servers.nginx"]

CHECKS = 50
LINES_BEFORE_KILL = 300
WAIT = 20.0  # seconds; generous bound for every wait, never reached when things work


class LineReader:
    """Reads a pipe in a thread, so that the test can wait for lines with a deadline."""

    def __init__(self, stream: IO[bytes]):
        self.lines: list[bytes] = []
        self.partial = b""  # an unterminated last line (a write cut short by SIGKILL)
        self.eof = False
        self._stream = stream
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="probe-stdout", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in iter(self._stream.readline, b""):
            with self._changed:
                if line.endswith(b"\n"):
                    self.lines.append(line[:-1])
                else:
                    self.partial = line
                self._changed.notify_all()
        with self._changed:
            self.eof = True
            self._changed.notify_all()

    def wait_for_lines(self, count: int, timeout: float) -> bool:
        """Wait until *count* complete lines arrived (False on timeout or end of output)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.lines) >= count or self.eof, timeout)
            return len(self.lines) >= count

    def wait_for_eof(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.eof, timeout)


@contextmanager
def probe_run(tmp_path: Path, profile: Path, store: Path) -> Iterator[tuple[subprocess.Popen[bytes], LineReader]]:
    """Start ``probe run PROFILE --json --store sqlite:STORE``; kill it if the test leaves early."""
    env = {**os.environ, "PROBECORE_DATA_DIR": str(tmp_path / "data")}
    with open(tmp_path / "stderr.log", "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "probecore", "run", str(profile), "--json",
             "--store", f"sqlite:{store}", "--vantage", "crash-test"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=env)
    assert proc.stdout is not None
    try:
        yield proc, LineReader(proc.stdout)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)
        proc.stdout.close()


def many_checks(tmp_path: Path, nginx: Nginx, count: int = CHECKS) -> Path:
    checks = "".join(f"""
        [[check]]
        id = "c{i:02d}"
        probe = "tcp"
        host = "{nginx.host}"
        port = {nginx.port}
        """ for i in range(count))
    return write_profile(tmp_path, """
        [profile]
        name = "crash"

        [defaults]
        interval = "100ms"
        timeout = "50ms"
        """ + checks)


def stderr_of(tmp_path: Path) -> str:
    return (tmp_path / "stderr.log").read_text(errors="replace")


def wait_for_lines(reader: LineReader, count: int, tmp_path: Path) -> None:
    if not reader.wait_for_lines(count, WAIT):
        pytest.fail(f"probe run printed {len(reader.lines)} lines, not {count}, within {WAIT:g}s "
                    f"(eof: {reader.eof}); its stderr:\n{stderr_of(tmp_path)}")


def stored_rows(db: Path) -> list[tuple[str, str, int, str, str]]:
    """Open the database as a new reader would after the crash; check it is intact."""
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return connection.execute(
            "SELECT check_id, vantage, started_ms, outcome, body FROM records").fetchall()
    finally:
        connection.close()


def probe_records(tmp_path: Path, profile: Path, db: Path) -> list[bytes]:
    env = {**os.environ, "PROBECORE_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-m", "probecore", "records", str(profile),
                           "--store", f"sqlite:{db}"],
                          env=env, capture_output=True, timeout=WAIT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()
    return done.stdout.splitlines()


def assert_all_stored(printed: list[bytes], rows: list[tuple[str, str, int, str, str]]) -> None:
    bodies = {row[4].encode() for row in rows}
    keys = {(row[0], row[1], row[2]) for row in rows}
    missing = [line for line in printed if line not in bodies]
    assert not missing, f"{len(missing)} of {len(printed)} printed records are not stored, e.g. {missing[0]!r}"
    for line in printed:
        record = json.loads(line)
        assert (record["check"], record["vantage"], timestamp_ms(record["started_at"])) in keys


def test_sigkill_loses_no_printed_record_and_leaves_the_store_intact(tmp_path: Path, nginx: Nginx) -> None:
    profile = many_checks(tmp_path, nginx)
    db = tmp_path / "crash.sqlite3"

    with probe_run(tmp_path, profile, db) as (proc, reader):
        wait_for_lines(reader, LINES_BEFORE_KILL, tmp_path)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(WAIT)
        assert reader.wait_for_eof(WAIT)
    assert proc.returncode == -signal.SIGKILL

    printed = list(reader.lines)
    assert len(printed) >= LINES_BEFORE_KILL
    assert len(set(printed)) == len(printed)
    assert_valid_records(printed)
    rows = stored_rows(db)
    assert_all_stored(printed, rows)
    # Batches whose lines the kill cut off may be stored too; nothing else is.
    assert len(rows) >= len(printed)
    assert {row[0] for row in rows} <= {f"crash/c{i:02d}" for i in range(CHECKS)}

    # probe itself can open the crashed store and reads back everything in it.
    listed = probe_records(tmp_path, profile, db)
    assert len(listed) == len(rows)
    assert set(listed) == {row[4].encode() for row in rows}


def test_sigterm_stops_cleanly_after_storing_everything(tmp_path: Path, nginx: Nginx) -> None:
    profile = many_checks(tmp_path, nginx, count=20)
    db = tmp_path / "term.sqlite3"

    with probe_run(tmp_path, profile, db) as (proc, reader):
        wait_for_lines(reader, 100, tmp_path)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(WAIT)
        assert reader.wait_for_eof(WAIT)
    stderr = stderr_of(tmp_path)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr

    printed = list(reader.lines)
    assert reader.partial == b""
    assert_valid_records(printed)
    rows = stored_rows(db)
    assert_all_stored(printed, rows)
    assert len(rows) == len(printed)  # the last batch was stored and printed at shutdown
    summary = re.search(r"stopped by SIGTERM: (\d+) records stored", " ".join(stderr.split()))
    assert summary, stderr
    assert int(summary.group(1)) == len(printed)
