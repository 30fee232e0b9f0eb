"""Scheduler benchmark: N checks of a no-op probe, on the real clock, against a bare-trio reference.

Run from the repository root::

    .venv/bin/python benchmarks/scheduler.py                     # 10,000 checks, 60 s, 120 s
    .venv/bin/python benchmarks/scheduler.py --checks 1000 --json

Two measurements, each in a fresh subprocess so that CPU time and peak RSS are its own:

* **reference** — a bare trio program: N tasks that ``trio.sleep_until`` the same slot grid as
  the checks (same interval, same per-check phase offset) and append a tuple per wake-up;
* **probecore** — a generated profile of N ``noop`` checks run through
  ``probecore._runner.run_profile`` (scheduler → pipeline → incident trackers → store → hooks)
  with a real SQLite store in a temp dir (``--store memory`` for the in-memory one).

The parent process only starts the two, shows progress on stderr, and reports: a rich table,
or with ``--json`` exactly one JSON line on stdout (keys in benchmarks/README.md). Exit status:
0 every threshold met, 1 a threshold failed, 2 bad usage or a measurement crashed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PROFILE_NAME = "bench"
VANTAGE = "bench"
PROGRESS_PREFIX = "@progress "
SCHEMA = "probecore.bench.scheduler/1"


# ---- shared helpers (no probecore import: the reference worker must stay bare trio) -------------

def check_ids(count: int) -> list[str]:
    width = max(5, len(str(count - 1)))
    return [f"c{i:0{width}d}" for i in range(count)]


def phase_offset(full_id: str, interval: float) -> float:
    """Same formula as ``probecore.Check.phase_offset`` (checked against it in the worker)."""
    millis = max(1, round(interval * 1000))
    digest = hashlib.sha256(full_id.encode()).digest()
    return (int.from_bytes(digest[:8], "big") % millis) / 1000.0


def next_slot(moment: float, interval: float, offset: float) -> float:
    """The first slot ``k·interval + offset`` at or after *moment* (as the scheduler computes it)."""
    k = math.ceil((moment - offset) / interval)
    slot = k * interval + offset
    if slot < moment - 1e-9:
        slot += interval
    return slot


def slots_in_window(start: float, end: float, interval: float, offset: float) -> int:
    """How many slots ``k·interval + offset`` fall in ``[start, end)``."""
    return max(0, math.ceil((end - offset) / interval) - math.ceil((start - offset) / interval))


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB.

    On Linux this is ``VmHWM`` from ``/proc/self/status``: ``ru_maxrss`` survives ``exec``, so in
    a child started by a parent holding 35 MiB (rich, probecore) it reports at least 35 MiB
    whatever the child does — the parent's peak, not the worker's.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes vs KiB


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def lateness_figures(lateness_ms: list[float]) -> dict[str, float | None]:
    ordered = sorted(lateness_ms)
    return {"p50": percentile(ordered, 0.50), "p99": percentile(ordered, 0.99),
            "max": ordered[-1] if ordered else None}


def progress(elapsed: float, count: int) -> None:
    """One progress line for the parent (cheap: the workers call it once a second)."""
    sys.stderr.write(f"{PROGRESS_PREFIX}{elapsed:.1f} {count}\n")
    sys.stderr.flush()


# ---- the reference: bare trio ------------------------------------------------------------------

def reference_worker(checks: int, interval: float, seconds: float) -> dict[str, Any]:
    import trio

    offsets = [phase_offset(f"{PROFILE_NAME}/{cid}", interval) for cid in check_ids(checks)]
    log: list[tuple[int, float, float]] = []
    window: dict[str, float] = {}

    async def sleeper(index: int, offset: float) -> None:
        slot = next_slot(time.time(), interval, offset)
        while True:
            await trio.sleep_until(trio.current_time() + max(0.0, slot - time.time()))
            log.append((index, slot, time.time()))
            slot += interval

    async def report(start: float) -> None:
        while True:
            await trio.sleep(1.0)
            progress(time.time() - start, len(log))

    async def main() -> None:
        window["start"] = time.time()
        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(report, window["start"])
                for index, offset in enumerate(offsets):
                    nursery.start_soon(sleeper, index, offset)
        window["end"] = time.time()

    cpu_before, rss_before = time.process_time(), peak_rss_mib()
    trio.run(main)
    cpu = time.process_time() - cpu_before
    rss = peak_rss_mib()
    end = window["start"] + seconds
    expected = sum(slots_in_window(window["start"], end, interval, o) for o in offsets)
    lateness = lateness_figures([(now - slot) * 1000.0 for _, slot, now in log])
    return {
        "wakeups": len(log), "expected": expected, "lateness_p50_ms": lateness["p50"],
        "lateness_p99_ms": lateness["p99"], "lateness_max_ms": lateness["max"], "cpu_s": cpu,
        "peak_rss_mib": rss, "run_rss_mib": rss - rss_before,
        "elapsed_s": window["end"] - window["start"],
    }


# ---- the measurement: probecore ----------------------------------------------------------------

def profile_text(checks: int, interval: float) -> str:
    from probecore import format_duration

    lines = [f'[profile]\nname = "{PROFILE_NAME}"\n',
             f'[defaults]\ninterval = "{format_duration(interval)}"\n'
             f'timeout = "{format_duration(min(10.0, interval))}"\n']
    for cid in check_ids(checks):
        lines.append(f'[[check]]\nid = "{cid}"\nprobe = "noop"\n')
    return "\n".join(lines)


def probecore_worker(checks: int, interval: float, seconds: float, store_kind: str) -> dict[str, Any]:
    import trio

    import probecore
    from probecore._runner import RunOptions, run_profile
    from probecore.testing import MemoryStore, make_host

    class NoopConfig(probecore.ProbeConfig):
        """No keys at all."""

    class NoopProbe(probecore.ProbeKind[NoopConfig]):
        kind = "noop"
        Config = NoopConfig
        unit = "s"

        def target(self, config: NoopConfig) -> str:
            return "noop"

        async def check(self, config: NoopConfig, ctx: probecore.CheckContext) -> probecore.Observation:
            return probecore.Observation.ok(0.0)

    class NoopPlugin:
        @probecore.hookimpl
        def probecore_add_probes(self, registry: Any) -> None:
            registry.add(NoopProbe)

    with tempfile.TemporaryDirectory(prefix="probecore-bench-") as tmp:
        host = make_host(NoopPlugin())
        path = Path(tmp) / "bench.toml"
        path.write_text(profile_text(checks, interval), encoding="utf-8")
        began = time.perf_counter()
        profile = probecore.load_profile(path, host.probes)
        load_s = time.perf_counter() - began
        first = profile.checks[0]
        assert first.phase_offset == phase_offset(first.full_id, interval), "phase offset formula drifted"
        offsets = [c.phase_offset for c in profile.checks]
        if store_kind == "sqlite":
            store = host.stores.get("sqlite")("sqlite:" + str(Path(tmp) / "bench.sqlite3"))
        else:
            store = MemoryStore()

        state: dict[str, Any] = {"stored": 0}

        def on_started(scheduler: Any) -> None:
            state["scheduler"] = scheduler
            state["start"] = time.time()

        def on_stored(records: Any, events: Any) -> None:
            state["stored"] += len(records)

        async def report(start: float) -> None:
            while True:
                await trio.sleep(1.0)
                progress(time.time() - start, state["stored"])

        async def main() -> Any:
            options = RunOptions(duration=seconds, handle_signals=False, vantage=VANTAGE)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(report, time.time())
                state["called"] = time.time()
                result = await run_profile(profile, host, store, options,
                                           on_stored=[on_stored], on_started=on_started)
                state["end"] = time.time()
                nursery.cancel_scope.cancel()
            return result

        cpu_before, rss_before = time.process_time(), peak_rss_mib()
        result = trio.run(main)
        # Snapshot before the records are read back, so the read-back is not measured.
        cpu = time.process_time() - cpu_before
        rss = peak_rss_mib()

        stats = state["scheduler"].stats.values()
        attempts = sum(s.attempts for s in stats)
        missed = sum(s.missed_slots for s in stats)
        start = state["start"]
        expected = sum(slots_in_window(start, start + seconds, interval, o) for o in offsets)
        lateness_ms: list[float] = []
        scheduled: dict[str, list[int]] = {c.full_id: [] for c in profile.checks}
        non_ok = stored_back = 0
        for record in store.records(prefix=f"{PROFILE_NAME}/"):
            stored_back += 1
            non_ok += record.outcome != "ok"
            slot_ms = probecore.timestamp_ms(record.scheduled_at)
            scheduled[record.check].append(slot_ms)
            lateness_ms.append(float(probecore.timestamp_ms(record.started_at) - slot_ms))
        store.close()
    lateness = lateness_figures(lateness_ms)
    skipped = unattempted_slots(scheduled, offsets, interval, start, start + seconds)
    run_s = state["end"] - start
    return {
        "attempts": attempts, "expected": expected, "missed_slots": missed,
        "stored_records": result.stored_records, "records_read_back": stored_back, "non_ok": non_ok,
        "lateness_p50_ms": lateness["p50"], "lateness_p99_ms": lateness["p99"],
        "lateness_max_ms": lateness["max"], "cpu_s": cpu, "peak_rss_mib": rss,
        "run_rss_mib": rss - rss_before, "load_s": load_s, "startup_s": start - state["called"],
        "elapsed_s": run_s, "records_per_s": result.stored_records / run_s if run_s > 0 else None,
        "unattempted_at_start": skipped["start"], "unattempted_between": skipped["between"],
        "unattempted_at_end": skipped["end"],
    }


def unattempted_slots(scheduled: dict[str, list[int]], offsets: list[float], interval: float,
                      start: float, end: float) -> dict[str, int]:
    """Slots in ``[start, end)`` with no record, by where they fall in their check's run.

    ``start``: before the check's first attempt (or the check never ran); ``end``: after its
    last attempt; ``between``: a gap in the middle. Missed slots the scheduler counted show up
    here too (as ``between``), so this explains ``expected - attempts``.
    """
    counts = {"start": 0, "between": 0, "end": 0}
    for slots_ms, offset in zip(scheduled.values(), offsets):
        done = sorted(slots_ms)
        slot = next_slot(start, interval, offset)
        while slot < end:
            slot_ms = slot * 1000.0
            if not any(abs(slot_ms - s) <= 2 for s in done):
                where = ("start" if not done or slot_ms < done[0] else
                         "end" if slot_ms > done[-1] else "between")
                counts[where] += 1
            slot += interval
    return counts


# ---- the parent: run both, show progress, report ------------------------------------------------

class _Display:
    """Progress on stderr: a rich bar on a terminal, otherwise a line every 15 s."""

    def __init__(self, quiet: bool):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.live = self.console.is_terminal and not quiet
        self.progress = Progress(
            TextColumn("{task.description:<10}"), BarColumn(),
            TextColumn("{task.completed:>5.0f}/{task.total:.0f} s"),
            TextColumn("{task.fields[count]:>8} {task.fields[what]}"), TimeRemainingColumn(),
            console=self.console, transient=True, disable=not self.live, refresh_per_second=2)
        self._last_line = 0.0

    def __enter__(self) -> _Display:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def add(self, name: str, total: float, what: str) -> Any:
        if not self.live and not self.quiet:
            self.console.print(f"{name}: running for {total:g} s …", highlight=False)
        self._last_line = time.monotonic()
        return self.progress.add_task(name, total=total, count=0, what=what)

    def update(self, task: Any, name: str, elapsed: float, count: int, total: float, what: str) -> None:
        self.progress.update(task, completed=min(elapsed, total), count=count)
        if not self.live and not self.quiet and time.monotonic() - self._last_line >= 15:
            self._last_line = time.monotonic()
            self.console.print(f"{name}: {elapsed:5.0f}/{total:g} s, {count} {what}", highlight=False)


def run_worker(kind: str, args: argparse.Namespace, interval: float, display: _Display) -> dict[str, Any]:
    command = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--checks", str(args.checks),
               "--interval-seconds", repr(interval), "--seconds", repr(args.seconds),
               "--store", args.store]
    what = "wake-ups" if kind == "reference" else "stored"
    task = display.add(kind, args.seconds, what)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    other: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(PROGRESS_PREFIX):
                elapsed, count = line[len(PROGRESS_PREFIX):].split()
                display.update(task, kind, float(elapsed), int(count), args.seconds, what)
            else:
                other.append(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    reader.join(timeout=5)
    display.progress.update(task, visible=False)
    if proc.returncode != 0 or not out.strip():
        sys.stderr.write("".join(other))
        raise SystemExit(f"scheduler benchmark: the {kind} run failed (exit status {proc.returncode})")
    if other:
        sys.stderr.write("".join(other))
    return json.loads(out.strip().splitlines()[-1])


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def combine(args: argparse.Namespace, interval: float, ref: dict[str, Any] | None,
            pc: dict[str, Any]) -> dict[str, Any]:
    import probecore

    expected = pc["expected"]
    attempt_ratio = pc["attempts"] / expected if expected else None
    figures: dict[str, Any] = {
        "schema": SCHEMA,
        "checks": args.checks, "interval_s": interval, "seconds": args.seconds, "store": args.store,
        "attempts": pc["attempts"], "expected_attempts": expected, "attempt_ratio": attempt_ratio,
        "missed_slots": pc["missed_slots"], "stored_records": pc["stored_records"],
        "records_read_back": pc["records_read_back"],
        "non_ok_records": pc["non_ok"], "records_per_s": pc["records_per_s"],
        "lateness_p50_ms": pc["lateness_p50_ms"], "lateness_p99_ms": pc["lateness_p99_ms"],
        "lateness_max_ms": pc["lateness_max_ms"],
        "cpu_s": pc["cpu_s"], "peak_rss_mib": pc["peak_rss_mib"], "run_rss_mib": pc["run_rss_mib"],
        "unattempted_at_start": pc["unattempted_at_start"],
        "unattempted_between": pc["unattempted_between"], "unattempted_at_end": pc["unattempted_at_end"],
        "load_s": pc["load_s"], "startup_s": pc["startup_s"], "elapsed_s": pc["elapsed_s"],
        "reference_wakeups": ref["wakeups"] if ref else None,
        "reference_expected": ref["expected"] if ref else None,
        "reference_lateness_p50_ms": ref["lateness_p50_ms"] if ref else None,
        "reference_lateness_p99_ms": ref["lateness_p99_ms"] if ref else None,
        "reference_lateness_max_ms": ref["lateness_max_ms"] if ref else None,
        "reference_cpu_s": ref["cpu_s"] if ref else None,
        "reference_peak_rss_mib": ref["peak_rss_mib"] if ref else None,
        "reference_run_rss_mib": ref["run_rss_mib"] if ref else None,
        "cpu_ratio": _ratio(pc["cpu_s"], ref["cpu_s"]) if ref else None,
        "rss_ratio": _ratio(pc["peak_rss_mib"], ref["peak_rss_mib"]) if ref else None,
        "thresholds": {
            "max_lateness_p99_ms": args.max_lateness_p99, "max_missed_slots": args.max_missed,
            "min_attempt_ratio": args.min_attempts, "max_cpu_ratio": args.max_cpu_ratio,
            "max_rss_ratio": args.max_rss_ratio,
        },
        "python": platform.python_version(), "probecore": probecore_version(probecore),
        "cpus": os.cpu_count(),
    }
    failures = []
    p99 = figures["lateness_p99_ms"]
    if p99 is None or p99 > args.max_lateness_p99:
        failures.append(f"lateness p99 {p99} ms > {args.max_lateness_p99:g} ms")
    if figures["missed_slots"] > args.max_missed:
        failures.append(f"missed slots {figures['missed_slots']} > {args.max_missed}")
    if attempt_ratio is None or attempt_ratio < args.min_attempts:
        failures.append(f"attempts {pc['attempts']} < {args.min_attempts:.0%} of {expected} expected")
    for key, limit in (("cpu_ratio", args.max_cpu_ratio), ("rss_ratio", args.max_rss_ratio)):
        if limit is not None and (figures[key] is None or figures[key] > limit):
            shown = "n/a" if figures[key] is None else f"{figures[key]:.2f}"
            failures.append(f"{key} {shown} > {limit:g}")
    figures["failures"] = failures
    figures["passed"] = not failures
    return figures


def probecore_version(module: Any) -> str:
    try:
        from importlib.metadata import version
        return version("probecore")
    except Exception:
        return getattr(module, "__version__", "unknown")


def show_table(figures: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value:,.1f}"

    def num(value: float | None, fmt: str = "{:,.2f}") -> str:
        return "–" if value is None else fmt.format(value)

    f = figures
    t = f["thresholds"]
    title = (f"probecore scheduler: {f['checks']:,} no-op checks every {f['interval_s']:g} s, "
             f"{f['seconds']:g} s, store {f['store']}")
    table = Table(title=title, title_justify="left")
    table.add_column("figure", no_wrap=True)
    table.add_column("probecore", justify="right", no_wrap=True)
    table.add_column("reference", justify="right", no_wrap=True)
    table.add_column("ratio", justify="right", no_wrap=True)
    table.add_column("threshold", no_wrap=True)

    def check(passed: bool, limit: str) -> str:
        return f"{limit} " + ("[green]ok[/]" if passed else "[red]FAIL[/]")

    ratio = f["attempt_ratio"]
    ref_ratio = (f["reference_wakeups"] / f["reference_expected"]
                 if f["reference_wakeups"] is not None and f["reference_expected"] else None)
    p99 = f["lateness_p99_ms"]
    table.add_row("attempts", f"{f['attempts']:,}", num(f["reference_wakeups"], "{:,}"), "", "")
    table.add_row("expected attempts", f"{f['expected_attempts']:,}", num(f["reference_expected"], "{:,}"),
                  "", "")
    table.add_row("attempts / expected", num(ratio, "{:.2%}"), num(ref_ratio, "{:.2%}"), "",
                  check(ratio is not None and ratio >= t["min_attempt_ratio"], f"≥ {t['min_attempt_ratio']:.0%}"))
    table.add_row("unattempted start/mid/end", f"{f['unattempted_at_start']:,} / "
                  f"{f['unattempted_between']:,} / {f['unattempted_at_end']:,}", "", "", "")
    table.add_row("missed slots", f"{f['missed_slots']:,}", "", "",
                  check(f["missed_slots"] <= t["max_missed_slots"], f"≤ {t['max_missed_slots']}"))
    table.add_row("lateness p50 ms", ms(f["lateness_p50_ms"]), ms(f["reference_lateness_p50_ms"]), "", "")
    table.add_row("lateness p99 ms", ms(p99), ms(f["reference_lateness_p99_ms"]), "",
                  check(p99 is not None and p99 <= t["max_lateness_p99_ms"], f"≤ {t['max_lateness_p99_ms']:g}"))
    table.add_row("lateness max ms", ms(f["lateness_max_ms"]), ms(f["reference_lateness_max_ms"]), "", "")
    for label, key, ref_key, ratio_key, limit_key, fmt in (
            ("CPU s", "cpu_s", "reference_cpu_s", "cpu_ratio", "max_cpu_ratio", "{:,.2f}"),
            ("peak RSS MiB", "peak_rss_mib", "reference_peak_rss_mib", "rss_ratio", "max_rss_ratio", "{:,.1f}")):
        limit = t[limit_key]
        value = f[ratio_key]
        table.add_row(label, num(f[key], fmt), num(f[ref_key], fmt), num(value, "{:.2f}×"),
                      "" if limit is None else check(value is not None and value <= limit, f"≤ {limit:g}×"))
    table.add_row("RSS growth MiB", num(f["run_rss_mib"], "{:,.1f}"),
                  num(f["reference_run_rss_mib"], "{:,.1f}"), "", "")
    table.add_row("records stored", f"{f['stored_records']:,}", "", "", "")
    table.add_row("records not ok", f"{f['non_ok_records']:,}", "", "", "")
    table.add_row("records/s stored", num(f["records_per_s"], "{:,.1f}"), "", "", "")
    table.add_row("profile load s", num(f["load_s"]), "", "", "")
    table.add_row("startup s", num(f["startup_s"]), "", "", "")
    console = Console()
    console.print(table)
    if f["failures"]:
        console.print("[red]FAIL[/]: " + "; ".join(f["failures"]))
    else:
        console.print("[green]PASS[/]: every threshold met")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/scheduler.py",
        description="Benchmark the probecore scheduler with N no-op checks on the real clock, "
        "against a bare-trio reference measured in the same run.",
        epilog="Exit status: 0 every threshold met, 1 a threshold failed, 2 usage error or crash.")
    parser.add_argument("--checks", type=int, default=10_000, help="number of checks (default 10000)")
    parser.add_argument("--interval", default="60s", help='check interval, e.g. "60s", "5m" (default 60s)')
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="how long each of the two runs lasts, real seconds (default 120)")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite",
                        help="SQLite in a temp dir (default) or probecore.testing.MemoryStore")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON line on stdout")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the bare-trio reference (ratios are then null)")
    parser.add_argument("--max-lateness-p99", type=float, default=100.0, metavar="MS",
                        help="threshold: slot lateness p99 in ms (default 100)")
    parser.add_argument("--max-missed", type=int, default=0, metavar="N",
                        help="threshold: missed slots (default 0)")
    parser.add_argument("--min-attempts", type=float, default=0.99, metavar="FRACTION",
                        help="threshold: attempts / expected attempts (default 0.99)")
    parser.add_argument("--max-cpu-ratio", type=float, default=None, metavar="X",
                        help="threshold: CPU probecore / reference (default: not checked)")
    parser.add_argument("--max-rss-ratio", type=float, default=None, metavar="X",
                        help="threshold: peak RSS probecore / reference (default: not checked)")
    parser.add_argument("--worker", choices=("reference", "probecore"), help=argparse.SUPPRESS)
    parser.add_argument("--interval-seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.checks < 1:
        parser.error("--checks must be at least 1")
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        interval = args.interval_seconds
        if args.worker == "reference":
            out = reference_worker(args.checks, interval, args.seconds)
        else:
            out = probecore_worker(args.checks, interval, args.seconds, args.store)
        sys.stdout.write(json.dumps(out) + "\n")
        return 0

    from probecore import parse_duration

    try:
        interval = float(parse_duration(args.interval))
    except ValueError as exc:
        print(f"benchmarks/scheduler.py: --interval: {exc}", file=sys.stderr)
        return 2
    if interval <= 0:
        print("benchmarks/scheduler.py: --interval must be longer than zero", file=sys.stderr)
        return 2
    try:
        with _Display(quiet=False) as display:
            ref = None if args.no_reference else run_worker("reference", args, interval, display)
            pc = run_worker("probecore", args, interval, display)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 2
    figures = combine(args, interval, ref, pc)
    if args.json:
        sys.stdout.write(json.dumps(figures, sort_keys=False) + "\n")
    else:
        show_table(figures)
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
