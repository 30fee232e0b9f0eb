"""benchmarks/hostile.py runs end to end (servers, healthy-only and mixed runs) and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "hostile.py"


def test_hostile_benchmark_runs_every_hostile_server_and_reports() -> None:
    # Tiny and lenient on time (a smoke test: the machine may be busy): 10 healthy checks and
    # one check per hostile server, every 4 s for 9 s.
    done = subprocess.run([sys.executable, str(BENCH), "--healthy", "10", "--hostile", "35",
                           "--interval", "4s", "--seconds", "9", "--json", "--quiet",
                           "--max-lateness-p99", "100000"],
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode in (0, 1), done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["schema"] == "probecore.bench.hostile/1"
    assert (result["healthy_checks"], result["hostile_checks"], result["hostile_rows"]) == (10, 35, 35)
    base, mixed = result["healthy_only"], result["mixed"]
    assert base["checks"] == 10 and mixed["checks"] == 45
    for run in (base, mixed):
        assert run["healthy_records"] >= 10
        assert run["healthy_not_ok"] == 0, run["healthy_failure_codes"]
        assert run["false_incidents"] == 0
        assert run["ok_over_timeout"] == 0
        assert run["peak_rss_mib"] > 0 and run["cpu_s"] > 0
    assert base["hostile_records"] == 0
    # The hostile servers were reached (a silent one's check whose slot comes last may still be
    # waiting for its timeout when the run ends) and judged provider failures, never errors.
    rows = {key.split(" ", 1)[0] for key in mixed["hostile_codes"]}
    assert len(rows) >= 30, rows
    assert mixed["hostile_errors"] == 0
    assert set(mixed["hostile_outcomes"]) == {"fail"}
    assert result["passed"] is (not result["failures"])


def test_bad_rows_are_one_line() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--rows", "nosuch"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--rows: no hostile server is called so" in done.stderr
    assert "Traceback" not in done.stderr
