"""``probe report``: judge a month (or year) of stored evidence and show the verdicts."""

from __future__ import annotations

import argparse
import io
import re
import sys
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgspec

from ._durations import format_duration
from ._errors import UsageError
from ._evaluation import ObjectiveReport, Period, Report, compare, evaluate_profile
from ._plugins import PluginHost
from ._profile import load_profile
from ._store import default_store_url, open_store


def run_report(args: argparse.Namespace, host: PluginHost) -> int:
    profile = load_profile(args.profile, host.probes, host.evaluators, host.notifiers)
    now = datetime.now(timezone.utc)
    period = _period(args, profile.timezone, now)
    known = {o.id for o in profile.objective_configs}
    for wanted in args.objective or ():
        if wanted not in known:
            raise UsageError(f'probe report: --objective: no objective "{wanted}" in {profile.path}; '
                             f"objectives: {', '.join(sorted(known)) or 'none'}")
    if args.output and args.format == "table":
        raise UsageError("probe report: -o: a file gets --format json, markdown, html or pdf, not the table")
    if args.format == "pdf":
        if not args.output:
            raise UsageError("probe report: --format pdf: name the file with -o FILE")
        from ._report_html import pdf_engine

        pdf_engine()  # missing WeasyPrint is one line now, not after judging the month
    store = open_store(args.store or default_store_url(profile.name), host.stores.get)
    try:
        report = evaluate_profile(profile, store, host.evaluators, period, now=now, only=args.objective)
        if args.format in ("html", "pdf"):
            from ._report_html import render_html, report_extras

            html = render_html(report, report_extras(profile, store, period, now, report))
    finally:
        store.close()
    if args.format == "pdf":
        from ._report_html import render_pdf

        _write(args.output, render_pdf(html))
        return 0 if report.met else 1
    out = io.StringIO() if args.output else sys.stdout
    if args.format == "html":
        out.write(html)
    elif args.format == "json":
        out.write(msgspec.json.format(msgspec.json.encode(report), indent=2).decode() + "\n")
    elif args.format == "markdown":
        out.write(render_markdown(report))
    else:
        render_table(report)
    if args.output:
        _write(args.output, out.getvalue())
    return 0 if report.met else 1


def _write(path: str, content: str | bytes) -> None:
    """Write *content* to *path* whole (a temp file renamed over it: a reader never sees half)."""
    target = Path(path)
    temp = target.with_name(f".{target.name}.tmp")
    try:
        temp.write_bytes(content.encode() if isinstance(content, str) else content)
        temp.replace(target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise UsageError(f"probe report: -o {path}: {exc.strerror or exc}") from None


def _period(args: argparse.Namespace, zone: Any, now: datetime) -> Period:
    if args.year:
        if not re.fullmatch(r"\d{4}", args.year):
            raise UsageError(f"probe report: --year: expected a year like 2026, got {args.year!r}")
        return Period.year(int(args.year), zone)
    if args.month:
        m = re.fullmatch(r"(\d{4})-(\d{2})", args.month)
        if not m or not 1 <= int(m[2]) <= 12:
            raise UsageError(f"probe report: --month: expected a month like 2026-10, got {args.month!r}")
        return Period.month(int(m[1]), int(m[2]), zone)
    local = now.astimezone(zone)
    return Period.month(local.year, local.month, zone)


# ---- rendering ----------------------------------------------------------------------------------

def measured_text(o: ObjectiveReport) -> str:
    return decisive(o)[0]


def target_text(o: ObjectiveReport) -> str:
    return decisive(o)[1]


MAX_PRECISION = 12


def decisive(o: ObjectiveReport) -> tuple[str, str]:
    """Measured and target as text with enough digits that, read as numbers, they give the
    verdict the report gives (0.998981 against 0.999 is "99.8981%", never "99.9%")."""
    for precision in range(MAX_PRECISION + 1):
        measured, shown_m = _shown(o.measured, o.unit, precision)
        target, shown_t = _shown(o.target, o.unit, precision)
        if o.met is None or shown_m is None or shown_t is None or o.op is None \
                or compare(shown_m, o.op, shown_t) == o.met:
            return measured, target
    return _shown(o.measured, o.unit, 0)[0], _shown(o.target, o.unit, 0)[0]


def _value(value: float | None, unit: str) -> str:
    return _shown(value, unit, 0)[0]


def _shown(value: float | None, unit: str, extra: int) -> tuple[str, Fraction | None]:
    """*value* as text with 4 + *extra* significant digits (ratios, milliseconds) or 3 + *extra*
    decimals of a second, and the number the text says."""
    if value is None:
        return "–", None
    if unit == "ratio":
        text = f"{value * 100:.{4 + extra}g}"
        return f"{text}%", Fraction(text) / 100
    if unit == "s":
        if value >= 1:
            seconds = round(value, 3 + extra)
            return format_duration(seconds), Fraction(str(seconds))
        text = f"{value * 1000:.{4 + extra}g}"
        return f"{text}ms", Fraction(text) / 1000
    return f"{value:g} {unit}", Fraction(str(value))


def share_text(share: float) -> str:
    """A share as a percentage that never rounds a shortfall up to 100 %."""
    if share >= 1:
        return "100%"
    for digits in range(1, 7):
        text = f"{share * 100:.{digits}f}"
        if not text.startswith("100"):
            return f"{text}%"
    return f"{share * 100:.6f}%"


def coverage_text(o: ObjectiveReport) -> str:
    if o.coverage is None:
        return "–"
    return share_text(o.coverage) + (f" (÷ {o.denominator})" if o.denominator else "")


def verdict_text(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "unknown"}[met]


def budget_text(o: ObjectiveReport) -> str:
    if o.budget_used is None:
        return "–"
    left = ""
    if o.budget_left is not None and o.unit in ("ratio", "s"):
        left = f", {human_duration(max(o.budget_left, 0))} left"
    return f"{used_text(o.budget_used)} used{left}"


def used_text(used: float) -> str:
    """A share of the budget; never "100%" for a budget just over or just under its end."""
    for digits in range(0, 7):
        text = f"{used * 100:.{digits}f}"
        if float(text) != 100 or used == 1:
            return f"{text}%"
    return f"{used * 100:.6f}%"


def human_duration(seconds: float) -> str:
    """``2637.4`` → ``"43m57s"``: whole units, for people reading a report."""
    if seconds < 60:
        return f"{seconds:.3g}s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{n}{u}" for n, u in parts if n) or "0s"


def remedy_text(o: ObjectiveReport) -> str:
    r = o.remedy
    if r is None:
        return "–"
    basis = f" of {r.of}" if r.of else ""
    if r.minutes is not None:
        return f"{r.kind}{basis}: {r.minutes:g} min of service"
    if r.amount is not None:
        return f"{r.kind}{basis}: {r.amount:g} {r.currency or ''}".rstrip()
    return r.kind + basis


def owed_text(report: Report) -> str | None:
    """One line: the total owed for the period, each obligation once."""
    owed = report.owed
    if not owed.items:
        return None
    parts = [f"{amount:g} {currency}".rstrip() for currency, amount in sorted(owed.amounts.items())]
    if owed.minutes:
        parts.append(f"{owed.minutes:g} min of service")
    skipped = [f"{i.objective} ({i.why})" for i in owed.items if not i.counted]
    return (f"owed for {report.period.label}: " + (" + ".join(parts) or "nothing that can be computed")
            + (f"; not counted again: {'; '.join(skipped)}" if skipped else ""))


def exclusion_text(e: Any) -> str:
    if e.withdrawn:
        status = " [withdrawn]"
    elif not e.applies_to:
        status = " [applies to nothing]"
    else:
        status = f" [applies to {', '.join(e.applies_to)}]"
    return f"{e.start}–{e.end} {e.reason}{status}"


def _rows(report: Report) -> list[list[str]]:
    return [[o.id, o.clause or "–", o.kind, *_measured_and_target(o), verdict_text(o.met), budget_text(o),
             coverage_text(o), remedy_text(o)]
            for o in report.objectives]


def _measured_and_target(o: ObjectiveReport) -> tuple[str, str, str]:
    measured, target = decisive(o)
    return measured, o.op or "–", target


HEADERS = ["objective", "clause", "kind", "measured", "op", "target", "verdict", "budget", "coverage", "remedy"]
OUTAGE_HEADERS = ["objective", "check", "start", "end", "duration", "down", "attribution", "excluded", "report by",
                  "notice after"]


def _outage_rows(report: Report) -> list[list[str]]:
    rows = []
    for o in report.objectives:
        for out in o.outages:
            rows.append([o.id, out.check.split("/", 1)[-1], out.start, out.end, format_duration(round(out.duration_s, 3)),
                         format_duration(round(out.down_s, 3)), f"{out.attribution} ({out.code})",
                         out.excluded or "–", out.report_by or "–",
                         "–" if out.notice_delay_s is None else format_duration(round(out.notice_delay_s, 3))])
    return rows


def _title(report: Report) -> str:
    to_date = f" (to date, until {report.period.evaluated_until})" if report.period.to_date else ""
    return (f"{report.profile}" + (f" · contract {report.contract}" if report.contract else "")
            + f" · {report.period.label}{to_date} · {report.timezone}")


def render_table(report: Report) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ._display import make_console

    console = make_console()
    table = Table(title=_title(report), title_justify="left")
    for name in HEADERS:
        table.add_column(name)
    style = {"met": "green", "MISSED": "bold red", "unknown": "yellow"}
    for row in _rows(report):
        row[6] = f"[{style[row[6]]}]{row[6]}[/]"
        table.add_row(*row)
    console.print(table)
    outages = _outage_rows(report)
    if outages:
        t = Table(title=f"{len(outages)} outage(s)", title_justify="left")
        for name in OUTAGE_HEADERS:
            t.add_column(name)
        for row in outages:
            t.add_row(*row)
        console.print(t)
    for o in report.objectives:
        if o.note:
            console.print(f"[dim]{escape(f'{o.id}: {o.note}')}[/]")
    owed = owed_text(report)
    if owed:
        console.print(escape(owed))
    if report.exclusions:  # escaped: "[withdrawn]" is text, not rich markup
        console.print(escape("exclusions: " + "; ".join(exclusion_text(e) for e in report.exclusions)))
    if report.not_judged:
        console.print(f"[dim]not judged in a {report.period.kind}ly report: {', '.join(report.not_judged)}[/]")


def render_markdown(report: Report) -> str:
    lines = [f"# {_title(report)}", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(report)]
    outages = _outage_rows(report)
    if outages:
        lines += ["", "## Outages", "", "| " + " | ".join(OUTAGE_HEADERS) + " |", "|" + "---|" * len(OUTAGE_HEADERS)]
        lines += ["| " + " | ".join(row) + " |" for row in outages]
    notes = [f"- {o.id}: {o.note}" for o in report.objectives if o.note]
    if notes:
        lines += ["", "## Notes", "", *notes]
    owed = owed_text(report)
    if owed:
        lines += ["", "## Owed", "", owed]
    if report.exclusions:
        lines += ["", "## Exclusions", ""]
        lines += [f"- {exclusion_text(e)}{' — ' + e.note if e.note else ''}" for e in report.exclusions]
    return "\n".join(lines) + "\n"
