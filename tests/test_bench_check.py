"""benchmarks/check.py (`./dev bench --check`) reads its limits from benchmarks/README.md and
judges each benchmark's JSON line; benchmarks/startup.py runs (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


check = load("check")


def test_the_readme_table_names_existing_benchmarks_and_every_one_is_checked() -> None:
    rows = check.read_table()
    assert {row.benchmark for row in rows} >= {"startup", "scheduler", "report"}
    benchmarks = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"check"}
    assert {row.benchmark for row in rows} == benchmarks, "a benchmark without a row in the CI check"
    for row in rows:
        assert row.op in check.OPERATORS
        assert isinstance(row.limit, (int, float, bool))


@pytest.mark.parametrize(("table", "message"), [
    ("| benchmark | arguments | figure | limit |\n|---|---|---|---|\n| nosuch | | x | <= 1 |\n",
     "no benchmark benchmarks/nosuch.py"),
    ("| startup | --short | overhead_s | about 1 |\n", "expected an operator and a value"),
    ("| startup | --short | overhead_s |\n", "expected 4 cells"),
    ("nothing here\n", "has no rows"),
])
def test_a_malformed_table_is_one_line_naming_the_line(tmp_path: Path, table: str, message: str) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# B\n\n{check.SECTION}\n\n{table}\n## next\n")
    with pytest.raises(check.TableError, match=message):
        check.read_table(readme)


def test_figures_are_dotted_paths() -> None:
    result = {"a": {"b": [{"c": 1.5}]}, "passed": True}
    assert check.figure_of(result, "a.b.0.c") == 1.5
    assert check.figure_of(result, "passed") is True
    with pytest.raises(KeyError):
        check.figure_of(result, "a.b.1.c")


def test_a_regressed_figure_fails_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"{check.SECTION}\n\n| benchmark | arguments | figure | limit |\n|---|---|---|---|\n"
                      "| startup | `--short` | `overhead_s` | `<= 0.25` |\n"
                      "| startup | `--short` | `run_ratio` | `<= 15` |\n"
                      "| startup | `--short` | `missing` | `<= 1` |\n")
    monkeypatch.setattr(check, "README", readme)
    monkeypatch.setattr(check, "run_benchmark", lambda name, args: {"overhead_s": 0.5, "run_ratio": 3})
    assert check.main([]) == 2  # the missing figure is a crash, which outranks the regression
    readme.write_text(readme.read_text().replace("| startup | `--short` | `missing` | `<= 1` |\n", ""))
    assert check.main([]) == 1
    monkeypatch.setattr(check, "run_benchmark", lambda name, args: {"overhead_s": 0.1, "run_ratio": 3})
    assert check.main([]) == 0


def test_startup_benchmark_runs_and_reports_its_figures() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "startup.py"), "--runs", "1",
                           "--json", "--max-overhead", "1000"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["schema"] == "probecore.bench.startup/1"
    assert result["run_once_s"] > result["probe_s"] >= 0
    assert result["passed"] is True
