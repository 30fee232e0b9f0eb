"""HTML report benchmark: ``probe report --format html`` of a month of N checks.

Run from the repository root::

    .venv/bin/python benchmarks/report_html.py --checks 20            # quick
    .venv/bin/python benchmarks/report_html.py                        # 1,000 checks, hourly records
    .venv/bin/python benchmarks/report_html.py --json --interval 60s --store /tmp/probecore-bench/…

Steps (figures in benchmarks/README.md):

1. **Store**: the month of ``benchmarks/report.py`` (its profile, generator and seeded pattern:
   per check one availability and one downtime objective, 0–3 outages, flaps, errors, a gap),
   made with its code, reused when its sidecar matches. Default interval 1 h (744,000 records
   for 1,000 checks, ~20 s to make): the page depends on objectives and outages, not on how
   many records lie between them; ``--interval 60s`` gives report.py's 44.6 M-record store.
2. **In process** (fresh subprocess): ``evaluate_profile`` (the JSON report's work), then
   ``report_extras`` (timelines of the charted objectives) and ``render_html``, each timed.
   **render s** = extras + render: what the HTML adds to the evaluation. Threshold:
   ``--max-seconds`` (3 s) on it.
3. **Command line** (fresh subprocesses): ``probe report --format json -o`` (the reference) and
   ``probe report --format html -o``, wall time each; the ratio html ÷ json is what the page
   costs on top of judging the month.
4. **Correct**: the page has one card per objective of the JSON report with the same verdict,
   and one outage row per outage.

Exit status: 0 within the threshold and correct, 1 slower or wrong, 2 bad usage or a crash.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCHEMA = "probecore.bench.report_html/1"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = Path("/tmp/probecore-bench")


def _report_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module
    spec.loader.exec_module(module)
    return module


def worker(profile_path: str, store_url: str, month: str, out: str, max_charts: int) -> None:
    """In a fresh process: evaluate, then extras and render, each timed; one JSON line out."""
    started = time.perf_counter()
    from probecore._evaluation import Period, evaluate_profile
    from probecore._plugins import make_plugin_manager
    from probecore._profile import load_profile
    from probecore._report_html import render_html, report_extras
    from probecore._store import open_store
    from datetime import datetime, timezone

    host = make_plugin_manager()
    profile = load_profile(profile_path, host.probes, host.evaluators, host.notifiers)
    imported = time.perf_counter()
    year, number = (int(x) for x in month.split("-"))
    period = Period.month(year, number, profile.timezone)
    now = datetime.now(timezone.utc)
    store = open_store(store_url, host.stores.get)
    try:
        t0 = time.perf_counter()
        report = evaluate_profile(profile, store, host.evaluators, period, now=now)
        t1 = time.perf_counter()
        extras = report_extras(profile, store, period, now, report, max_charts)
        t2 = time.perf_counter()
    finally:
        store.close()
    html = render_html(report, extras, max_charts=max_charts)
    t3 = time.perf_counter()
    Path(out).write_text(html, encoding="utf-8")
    print(json.dumps({"setup_s": imported - started, "evaluate_s": t1 - t0, "extras_s": t2 - t1,
                      "render_s": t3 - t2, "bytes": len(html.encode()), "svgs": html.count("<svg")}))


def _timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    return time.perf_counter() - started, done


def check_page(html: str, report: dict[str, Any]) -> list[str]:
    """Disagreements between the page and the JSON report (empty: it agrees)."""
    problems = []
    cards = dict(re.findall(r'<section class="card objective" id="[^"]*" data-objective="([^"]+)" '
                            r'data-verdict="(\w+)"', html))
    word = {True: "met", False: "missed", None: "unknown"}
    wanted = {o["id"]: word[o["met"]] for o in report["objectives"]}
    if cards != wanted:
        wrong = [k for k in wanted if cards.get(k) != wanted[k]]
        problems.append(f"{len(wrong)} objective card(s) missing or with another verdict, e.g. {wrong[:3]}")
    rows = html.count('<tr class="outage"')
    outages = sum(len(o["outages"]) for o in report["objectives"])
    if rows != outages:
        problems.append(f"{rows} outage rows on the page, {outages} outages in the report")
    return problems


def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = _report_bench()
    setup = bench.make_setup(args.checks, args.month, args.interval, args.seed)
    path = Path(args.store) if args.store else DEFAULT_DIR / f"report-{args.checks}-{setup.interval_s}s.sqlite3"
    profile = bench.write_profile(path, args.checks, setup.interval_s)
    meta = bench.prepare_store(argparse.Namespace(batch=50_000), path, setup.params, setup.generator,
                               quiet=args.quiet)
    store_url = f"sqlite:{path}"
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        done = subprocess.run([sys.executable, __file__, "--worker", str(profile), store_url, args.month,
                               str(page), str(args.max_charts)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"report_html benchmark: the worker failed: {done.stderr.strip()[-2000:]}")
        inner = json.loads(done.stdout.splitlines()[-1])
        probe = bench.probe_executable()
        base = [probe, "report", str(profile), "--month", args.month, "--store", store_url]
        json_s, done_json = _timed([*base, "--format", "json", "-o", str(Path(tmp) / "report.json")])
        html_s, done_html = _timed([*base, "--format", "html", "-o", str(page)])
        for done in (done_json, done_html):
            if done.returncode not in (0, 1):
                raise SystemExit(f"report_html benchmark: probe report failed: {done.stderr.strip()[-2000:]}")
        report = json.loads((Path(tmp) / "report.json").read_text())
        problems = check_page(page.read_text(encoding="utf-8"), report)
    html_part = inner["extras_s"] + inner["render_s"]
    return {"schema": SCHEMA, "checks": args.checks, "interval_s": setup.interval_s, "month": args.month,
            "records": meta["records"], "objectives": len(report["objectives"]),
            "outages": sum(len(o["outages"]) for o in report["objectives"]), "max_charts": args.max_charts,
            "svgs": inner["svgs"], "page_mib": round(inner["bytes"] / 2**20, 2),
            "evaluate_s": round(inner["evaluate_s"], 3), "extras_s": round(inner["extras_s"], 3),
            "render_s": round(inner["render_s"], 3), "html_part_s": round(html_part, 3),
            "cli_json_s": round(json_s, 3), "cli_html_s": round(html_s, 3),
            "cli_ratio": round(html_s / json_s, 3) if json_s else None, "problems": problems,
            "disagreements": len(problems),
            "max_seconds": args.max_seconds, "ok": not problems and html_part <= args.max_seconds}


def show(f: dict[str, Any]) -> None:
    print(f"{f['checks']:,} checks, {f['objectives']:,} objectives, {f['outages']:,} outages, "
          f"{f['records']:,} records ({f['interval_s']} s interval), {f['month']}")
    print(f"  in process: evaluate {f['evaluate_s']:.3f} s · extras {f['extras_s']:.3f} s · render "
          f"{f['render_s']:.3f} s → the HTML's part {f['html_part_s']:.3f} s (threshold {f['max_seconds']:g} s)")
    print(f"  page: {f['page_mib']} MiB, {f['svgs']} charts (at most {f['max_charts']} objectives drawn)")
    print(f"  probe report: json {f['cli_json_s']:.3f} s · html {f['cli_html_s']:.3f} s · ratio {f['cli_ratio']}")
    for problem in f["problems"]:
        print(f"  WRONG: {problem}")
    print("  ok" if f["ok"] else "  FAILED")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1], argv[2], argv[3], argv[4], int(argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=1000, help="number of checks (default 1000)")
    parser.add_argument("--month", default="2026-10", help="the month, YYYY-MM (default 2026-10)")
    parser.add_argument("--interval", default="1h", help="record interval (default 1h)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the outage pattern (default 1)")
    parser.add_argument("--store", metavar="PATH", help=f"the store (default: under {DEFAULT_DIR}, reused)")
    parser.add_argument("--max-charts", type=int, default=40, help="objectives drawn with charts (default 40)")
    parser.add_argument("--max-seconds", type=float, default=3.0,
                        help="threshold on extras + render, seconds (default 3)")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON line on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.checks < 1:
        parser.error("--checks must be at least 1")
    figures = run(args)
    if args.json:
        print(json.dumps(figures))
    else:
        show(figures)
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
