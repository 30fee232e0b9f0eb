"""Start-up benchmark: what `probe run --once` of one check costs beyond the probe itself.

Run from the repository root::

    .venv/bin/python benchmarks/startup.py            # 15 runs of each
    .venv/bin/python benchmarks/startup.py --runs 5 --json

What it measures, each command started fresh ``--runs`` times, interleaved (so load on the
machine hits all of them alike), the median wall time of each:

- **reference**: ``python -c pass`` with the same interpreter: the floor any Python CLI pays;
- **import**: ``python -c "import probecore"``: the core's import cost;
- **run --once**: ``probe run PROFILE --once --json --store sqlite:…`` of one ``tcp`` check
  against a listening socket this benchmark holds open (the check is ok), in a fresh temp store.

Figures: ``overhead_s`` = median wall of run --once − the probe's own ``duration_s`` (from the
record it prints) − the reference; ``run_ratio`` = run --once ÷ reference. Thresholds:
``--max-overhead S`` (default 0.25 s, issue 18's target) and ``--max-run-ratio X`` (default: not
checked). Exit status 0 thresholds met, 1 not, 2 a command failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = [sys.executable, "-m", "probecore"]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, bytes]:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: "
                           f"{done.stderr.decode(errors='replace').strip()[-500:]}")
    return wall, done.stdout


def measure(runs: int) -> dict[str, object]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="probecore-startup-") as tmp:
        profile = Path(tmp) / "gate.toml"
        profile.write_text(f'[profile]\nname = "gate"\n\n[[check]]\nid = "port"\nprobe = "tcp"\n'
                           f'host = "127.0.0.1"\nport = {port}\ntimeout = "2s"\n', encoding="utf-8")
        env = {**os.environ, "PROBECORE_DATA_DIR": tmp}
        walls: dict[str, list[float]] = {"reference": [], "import": [], "run": []}
        probe_s: list[float] = []
        for i in range(runs):
            walls["reference"].append(timed([sys.executable, "-c", "pass"], env)[0])
            walls["import"].append(timed([sys.executable, "-c", "import probecore"], env)[0])
            store = f"sqlite:{Path(tmp) / f'run{i}.sqlite3'}"
            wall, out = timed([*PROBE, "run", str(profile), "--once", "--json", "--store", store], env)
            record = json.loads(out.splitlines()[-1])
            if record["outcome"] != "ok":
                raise RuntimeError(f"the tcp check was not ok: {record}")
            walls["run"].append(wall)
            probe_s.append(record["duration_s"])
            while True:  # drop the connections the checks made
                listener.setblocking(False)
                try:
                    listener.accept()[0].close()
                except BlockingIOError:
                    break
    listener.close()
    median = {name: statistics.median(values) for name, values in walls.items()}
    probe_median = statistics.median(probe_s)
    return {
        "reference_s": round(median["reference"], 4),
        "import_s": round(median["import"], 4),
        "run_once_s": round(median["run"], 4),
        "probe_s": round(probe_median, 4),
        "overhead_s": round(median["run"] - probe_median - median["reference"], 4),
        "import_ratio": round(median["import"] / median["reference"], 2),
        "run_ratio": round(median["run"] / median["reference"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (default 15)")
    parser.add_argument("--short", action="store_true", help="5 runs (the CI check)")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON line on stdout")
    parser.add_argument("--max-overhead", type=float, default=0.25, metavar="S",
                        help="fail when run --once costs more than S seconds over the probe and the "
                             "reference (default 0.25)")
    parser.add_argument("--max-run-ratio", type=float, default=None, metavar="X",
                        help="fail when run --once takes more than X times the reference")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    runs = 5 if args.short else args.runs
    try:
        figures = measure(runs)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"startup: error: {exc}", file=sys.stderr)
        return 2
    failures = []
    if figures["overhead_s"] > args.max_overhead:
        failures.append(f"overhead {figures['overhead_s']:.3f} s > {args.max_overhead} s")
    if args.max_run_ratio is not None and figures["run_ratio"] > args.max_run_ratio:
        failures.append(f"run ratio {figures['run_ratio']} > {args.max_run_ratio}")
    result = {"schema": "probecore.bench.startup/1", "runs": runs, **figures,
              "thresholds": {"max_overhead_s": args.max_overhead, "max_run_ratio": args.max_run_ratio},
              "failures": failures, "passed": not failures,
              "python": platform.python_version(), "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(result))
    else:
        for key in ("reference_s", "import_s", "run_once_s", "probe_s", "overhead_s",
                    "import_ratio", "run_ratio"):
            print(f"{key:>14}  {figures[key]}")
        print("passed" if not failures else "FAILED: " + "; ".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
