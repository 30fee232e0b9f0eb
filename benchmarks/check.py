"""The benchmarks as a CI check: every benchmark in a short mode, each figure against its limit.

Run from the repository root (``./dev bench --check`` is the same, and installs what the
benchmarks need)::

    .venv/bin/python benchmarks/check.py              # every row of the table
    .venv/bin/python benchmarks/check.py --only startup,scheduler
    .venv/bin/python benchmarks/check.py --list       # the table, without running anything

The limits are not in this file: they are the table under "The CI check" in
benchmarks/README.md, so the documentation and the check cannot disagree. Each row names a
benchmark, the arguments of its short mode, a figure of its ``--json`` line (a dotted path into
the JSON object; list items by index) and a limit with an operator (``<= 2.5``, ``>= 0.99``,
``== true``). Rows with the same benchmark and arguments share one run.

Exit status: 0 every figure within its limit, 1 a figure regressed past its limit, 2 a benchmark
crashed, printed no JSON line, lacks a figure, or the table is malformed.
"""

from __future__ import annotations

import argparse
import json
import operator
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
SECTION = "## The CI check"
OPERATORS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}


@dataclass(frozen=True)
class Row:
    benchmark: str
    arguments: tuple[str, ...]
    figure: str
    op: str
    limit: Any
    line: int

    @property
    def command(self) -> str:
        return " ".join(["benchmarks/" + self.benchmark + ".py", *self.arguments])


class TableError(Exception):
    pass


def _cell(text: str) -> str:
    return text.strip().strip("`").strip()


def read_table(path: Path | None = None) -> list[Row]:
    """The rows of the table under :data:`SECTION` in *path* (default: :data:`README`)."""
    path = path or README
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith(SECTION))
    except StopIteration:
        raise TableError(f"{path}: no section starting with {SECTION!r}") from None
    rows: list[Row] = []
    for number, line in enumerate(lines[start + 1:], start=start + 2):
        if line.startswith("## "):
            break
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [_cell(c) for c in line.strip().strip("|").split("|")]
        if cells[0] == "benchmark":
            continue
        if len(cells) != 4:
            raise TableError(f"{path}:{number}: expected 4 cells (benchmark | arguments | figure | limit)")
        benchmark, arguments, figure, limit = cells
        if not (HERE / f"{benchmark}.py").is_file():
            raise TableError(f"{path}:{number}: no benchmark benchmarks/{benchmark}.py")
        match = re.fullmatch(r"(<=|<|>=|>|==)\s*(\S+)", limit)
        if not match:
            raise TableError(f"{path}:{number}: limit {limit!r}: expected an operator and a value, like <= 2.5")
        try:
            value = json.loads(match.group(2))
        except json.JSONDecodeError:
            raise TableError(f"{path}:{number}: limit {limit!r}: the value is not a number or true/false") from None
        rows.append(Row(benchmark, tuple(shlex.split(arguments)), figure, match.group(1), value, number))
    if not rows:
        raise TableError(f"{path}: the table under {SECTION!r} has no rows")
    return rows


def figure_of(result: Any, path: str) -> Any:
    """The value at a dotted *path* (``throughput.0.cpu_ratio``) of a benchmark's JSON line."""
    value = result
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(path)
    return value


def run_benchmark(benchmark: str, arguments: tuple[str, ...]) -> dict[str, Any]:
    """Run one benchmark with ``--json``; its progress goes to our stderr."""
    argv = [sys.executable, str(HERE / f"{benchmark}.py"), *arguments]
    if "--json" not in arguments:
        argv.append("--json")
    done = subprocess.run(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{benchmark}: exited {done.returncode} without a JSON line")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", metavar="NAMES", default=None,
                        help="comma-separated benchmarks to run (default: every one in the table)")
    parser.add_argument("--list", action="store_true", help="print the table's rows and exit")
    args = parser.parse_args(argv)
    try:
        rows = read_table()
    except TableError as exc:
        print(f"bench check: error: {exc}", file=sys.stderr)
        return 2
    if args.only:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = wanted - {row.benchmark for row in rows}
        if unknown:
            print(f"bench check: error: --only: not in the table: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        rows = [row for row in rows if row.benchmark in wanted]
    if args.list:
        for row in rows:
            print(f"{row.command:70} {row.figure} {row.op} {json.dumps(row.limit)}")
        return 0

    runs: dict[tuple[str, tuple[str, ...]], list[Row]] = {}
    for row in rows:
        runs.setdefault((row.benchmark, row.arguments), []).append(row)
    regressed = crashed = 0
    report: list[str] = []
    for (benchmark, arguments), checks in runs.items():
        started = time.monotonic()
        print(f"bench check: running {checks[0].command}", file=sys.stderr, flush=True)
        try:
            result = run_benchmark(benchmark, arguments)
        except (RuntimeError, json.JSONDecodeError, OSError) as exc:
            crashed += 1
            report.append(f"CRASH  {checks[0].command}: {exc}")
            continue
        took = time.monotonic() - started
        for row in checks:
            try:
                value = figure_of(result, row.figure)
            except KeyError:
                crashed += 1
                report.append(f"CRASH  {benchmark}: no figure {row.figure!r} in its JSON line")
                continue
            ok = value is not None and OPERATORS[row.op](value, row.limit)
            regressed += not ok
            report.append(f"{'ok    ' if ok else 'REGRESSED'} {benchmark:10} {row.figure:32} "
                          f"{json.dumps(value):>10} {row.op} {json.dumps(row.limit)}   ({took:.0f} s run)")
    print("\n".join(report))
    print(f"bench check: {len(rows) - regressed - crashed} within limits, {regressed} regressed, "
          f"{crashed} crashed")
    # The plain closing line CI systems read: a figure within its limit passed, any other failed.
    print(f"bench: {len(rows) - regressed - crashed} passed, {regressed + crashed} failed")
    return 2 if crashed else 1 if regressed else 0


if __name__ == "__main__":
    sys.exit(main())
