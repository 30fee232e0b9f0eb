"""``probe report --format html``: the month's report as one self-contained HTML file.

The page is built from the report's JSON model (what ``--format json`` emits, as plain dicts and
lists), so fields the evaluation adds show up without a change here: a report-level total owed
(any top-level key with ``owed`` in its name), notice evidence (each objective's ``evidence``
rows). Two things the JSON does not carry come from the profile and the store beside it
(:func:`report_extras`): each objective's contract text (``description`` of the
``[[objective]]``) and, for the objectives that get charts, the timeline's segments — recomputed
by the same :class:`~probecore._evaluation.EvaluationContext` code the verdict came from.

Everything the browser needs is inline (CSS, SVG charts from :mod:`probecore._charts`), there
is no script, and nothing is fetched when the file is viewed. Times are shown in the profile's
time zone. The status page of ``probe serve`` renders its objectives with the same template
macros and charts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from ._charts import COLOURS, FONT, budget_chart, timeline_chart
from ._errors import UsageError
from ._record import timestamp_ms
from ._report import budget_text, decisive, human_duration, share_text

DEFAULT_MAX_CHARTS = 40
"""Objectives drawn with charts in one report; the rest are in the tables only. Charts go first
to the objectives that most need a look (missed, unknown, most budget burned): a 1,000-check
report stays a file a browser opens (4.5 MiB), rendered in about 2 s (benchmarks/report_html.py)."""


@dataclass
class ObjectiveExtras:
    """What the JSON report lacks for one objective (see the module docstring)."""

    description: str | None = None
    segments: list[tuple[int, int, str]] | None = None
    """``(start ms, end ms, state)`` of the objective's timeline, when drawn."""


@dataclass
class Extras:
    objectives: dict[str, ObjectiveExtras] = field(default_factory=dict)


def chart_order(objectives: Sequence[dict[str, Any]], limit: int) -> list[str]:
    """Ids of the objectives that get charts: timeline kinds, the ones needing a look first."""
    timed = [o for o in objectives if o.get("coverage") is not None]
    rank = {False: 0, None: 1, True: 2}
    timed.sort(key=lambda o: (rank.get(o.get("met"), 1), -(o.get("budget_used") or 0.0)))
    return [o["id"] for o in timed[:max(0, limit)]]


def report_extras(profile: Any, store: Any, period: Any, now: datetime, report: Any,
                  max_charts: int = DEFAULT_MAX_CHARTS) -> Extras:
    """Contract texts from *profile*, and the timelines of the charted objectives of *report*
    (a :class:`~probecore._evaluation.Report`) from *store*, cut as the evaluation cut them."""
    from ._evaluation import EvaluationContext

    data = _builtins(report)
    charted = set(chart_order(data["objectives"], max_charts))
    configs = {c.id: c for c in profile.objective_configs}
    extras = Extras()
    ctx = EvaluationContext(profile, store, period, now) if charted else None
    for o in data["objectives"]:
        config = configs.get(o["id"])
        mine = extras.objectives[o["id"]] = ObjectiveExtras(
            description=getattr(config, "description", None) if config else None)
        if ctx is not None and config is not None and o["id"] in charted:
            timeline = ctx.timeline(config)
            mine.segments = [(s.start, s.end, s.state) for s in timeline.segments]
    return extras


def render_html(report: Any, extras: Extras | None = None, *, max_charts: int = DEFAULT_MAX_CHARTS) -> str:
    """The report (a :class:`~probecore._evaluation.Report` or its JSON dict) as an HTML page."""
    data = _builtins(report)
    model = page_model(data, extras or Extras(), max_charts=max_charts)
    return environment().get_template("report.html").render(**model)


def page_model(data: dict[str, Any], extras: Extras, *, max_charts: int = DEFAULT_MAX_CHARTS,
               ident_prefix: str = "") -> dict[str, Any]:
    """What the templates read: the report dict, objectives with charts and formatted values."""
    zone = _zone(data.get("timezone"))
    period = data["period"]
    start_ms = timestamp_ms(period["start"])
    end_ms = timestamp_ms(period["end"])
    until_ms = timestamp_ms(period["evaluated_until"])
    charted = set(chart_order(data["objectives"], max_charts))
    items = owed_items(data)
    drawn: dict[Any, str] = {}  # objectives of one check (availability, downtime) share a timeline
    objectives = []
    for index, o in enumerate(data["objectives"]):
        extra = extras.objectives.get(o["id"], ObjectiveExtras())
        objectives.append(objective_model(
            o, extra, data.get("exclusions", []), item=items.get(o["id"]), zone=zone, start_ms=start_ms,
            end_ms=end_ms, until_ms=until_ms, draw=o["id"] in charted, ident=f"{ident_prefix}o{index}", drawn=drawn))
    counts = {"met": sum(o["met"] is True for o in data["objectives"]),
              "missed": sum(o["met"] is False for o in data["objectives"]),
              "unknown": sum(o["met"] is None for o in data["objectives"])}
    return {"report": data, "objectives": objectives, "counts": counts, "zone": str(zone),
            "verdict": verdict_word(data.get("met")), "owed": owed_totals(data),
            "exclusions": [exclusion_model(e, zone) for e in data.get("exclusions", [])],
            "charted": len(charted), "timed": sum(o.get("coverage") is not None for o in data["objectives"]),
            "title": _title(data), "font": FONT, "colours": COLOURS,
            "period_text": f"{local_time(period['start'], zone)} – {local_time(period['end'], zone)}",
            "generated": local_time(data.get("generated_at"), zone),
            "until": local_time(period.get("evaluated_until"), zone)}


def objective_model(o: dict[str, Any], extra: ObjectiveExtras, exclusions: list[dict[str, Any]], *,
                    item: dict[str, Any] | None = None, zone: Any, start_ms: int, end_ms: int, until_ms: int,
                    draw: bool, ident: str, drawn: dict[Any, str] | None = None) -> dict[str, Any]:
    outages = [outage_model(x, zone) for x in o.get("outages", [])]
    model = {
        "o": o, "anchor": "objective-" + re.sub(r"[^A-Za-z0-9_-]", "-", o["id"]),
        "text": o.get("description") or o.get("text") or extra.description,
        **_texts(o), "verdict": verdict_word(o.get("met")),
        "coverage": None if o.get("coverage") is None else share_text(o["coverage"]),
        "denominator": None if o.get("denominator_s") is None else
        f"{duration_text(o['denominator_s'])} ({o.get('denominator') or 'period'})",
        "known": None if o.get("coverage") is None else duration_text(o.get("unknown_s", 0.0)),
        "downtime": duration_text(o.get("downtime_s", 0.0)), "excluded": duration_text(o.get("excluded_s", 0.0)),
        "excluded_by_reason": {k: duration_text(v) for k, v in (o.get("excluded_by_reason") or {}).items()},
        "outages": outages, "remedy": remedy_model(o.get("remedy"), item),
        "exclusions": [exclusion_model(e, zone) for e in exclusions if _touches(e, o)],
        "evidence": evidence_table(o.get("evidence") or [], zone),
        "budget_svg": None, "timeline_svg": None,
    }
    if draw:
        segments = extra.segments
        burn = burn_series(o, segments, start_ms=start_ms, until_ms=until_ms)
        if burn is not None:
            model["budget_svg"] = budget_chart(f"{ident}-budget", burn, start_ms=start_ms, end_ms=end_ms, zone=zone)
        if segments is None:  # no store at hand: what the outages say, the rest unknown
            segments = [(timestamp_ms(x["start"]), timestamp_ms(x["end"]), "down" if x["down_s"] else "excluded")
                        for x in o.get("outages", [])]
        spans = [(timestamp_ms(x["start"]), timestamp_ms(x["end"]),
                  x["attribution"] + (" (excluded)" if x.get("excluded") and not x.get("down_s") else ""))
                 for x in o.get("outages", [])]
        key = (tuple(segments), tuple(spans), start_ms, end_ms)
        if drawn is None or key not in drawn:
            svg = timeline_chart(f"{ident}-timeline", segments, spans, start_ms=start_ms, end_ms=end_ms, zone=zone)
            if drawn is not None:
                drawn[key] = svg.replace(f"chart-{ident}-timeline", "chart-{ident}")
            model["timeline_svg"] = svg
        else:  # the same chart again: only its id (which scopes its CSS) differs
            model["timeline_svg"] = drawn[key].replace("chart-{ident}", f"chart-{ident}-timeline")
    return model


def burn_series(o: dict[str, Any], segments: list[tuple[int, int, str]] | None, *, start_ms: int,
                until_ms: int) -> list[tuple[int, float]] | None:
    """``(ms, share of the budget used)`` over the period, where the objective's budget is down
    time (availability, downtime): ``downtime_s / budget_used == downtime_s + budget_left``.
    ``None`` for kinds whose budget is something else."""
    used, left, down = o.get("budget_used"), o.get("budget_left"), o.get("downtime_s") or 0.0
    if used is None or left is None:
        return None
    allowed = down + left
    if allowed <= 0 or abs(down / allowed - used) > 1e-3:
        return None
    if segments is not None:
        spans = [(a, b) for a, b, state in segments if state == "down"]
    else:
        spans = [(timestamp_ms(x["start"]), timestamp_ms(x["end"])) for x in o.get("outages", []) if x["down_s"]]
    points = [(start_ms, 0.0)]
    total = 0.0
    for a, b in sorted(spans):
        points.append((a, total / allowed))
        total += (b - a) / 1000
        points.append((b, total / allowed))
    points.append((until_ms, total / allowed))
    return points


def outage_model(x: dict[str, Any], zone: Any) -> dict[str, Any]:
    start = local_time(x["start"], zone)
    return {"x": x, "start": start, "end": _same_day(start, local_time(x["end"], zone)),
            "duration": duration_text(x["duration_s"]), "down": duration_text(x["down_s"]),
            "excluded_time": duration_text(x.get("excluded_s") or 0.0),
            "check": x["check"].split("/", 1)[-1], "confirmed": _same_day(start, local_time(x.get("confirmed_at"), zone)),
            "report_by": local_time(x.get("report_by"), zone), "reported": local_time(x.get("reported_at"), zone),
            "notice": None if x.get("notice_delay_s") is None else duration_text(x["notice_delay_s"])}


def _same_day(first: str | None, second: str | None) -> str | None:
    """*second* without its date when it is *first*'s date (a table of outages stays narrow)."""
    if first and second and first[:10] == second[:10]:
        return second[11:]
    return second


def exclusion_model(e: dict[str, Any], zone: Any) -> dict[str, Any]:
    applies = e.get("applies_to")
    return {"e": e, "start": local_time(e["start"], zone), "end": local_time(e["end"], zone),
            "check": (e.get("check") or "every check").split("/", 1)[-1],
            "applies": None if applies is None else ", ".join(applies) or "nothing"}


def remedy_model(r: dict[str, Any] | None, item: dict[str, Any] | None = None) -> dict[str, Any] | None:
    if not r:
        return None
    counted = None if item is None else item.get("counted")
    if r.get("minutes") is not None:
        owed = f"{r['minutes']:g} min of service"
    elif r.get("amount") is not None:
        owed = money(r["amount"], r.get("currency"))
    else:
        owed = "–"
    return {"r": r, "owed": owed, "counted": counted, "why": (item or {}).get("why"), "of": r.get("of")}


def owed_totals(data: dict[str, Any]) -> list[dict[str, str]]:
    """The report-level total(s) owed, if the report carries them: ``owed`` as
    ``{amounts: {currency: amount}, minutes, items}``, or any top-level key with ``owed`` in its
    name holding a number, an ``{amount, currency}`` table or a list of them."""
    rows = []
    for key, value in data.items():
        if "owed" not in key or value is None:
            continue
        if isinstance(value, dict) and ("amounts" in value or "minutes" in value):
            for currency, amount in sorted((value.get("amounts") or {}).items()):
                rows.append({"label": "", "amount": money(amount, currency), "detail": ""})
            if value.get("minutes"):
                rows.append({"label": "", "amount": f"{value['minutes']:g} min of service", "detail": ""})
            if not rows:
                rows.append({"label": "", "amount": "nothing", "detail": ""})
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and isinstance(item.get("amount"), (int, float)):
                rows.append({"label": str(item.get("contract") or ""), "amount": money(item["amount"], item.get("currency")),
                             "detail": str(item.get("detail") or "")})
            elif isinstance(item, (int, float)):
                rows.append({"label": "", "amount": money(item, None), "detail": ""})
    return rows


def owed_items(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Objective id → its line in the report's ``owed.items`` (counted or not, and why)."""
    owed = data.get("owed")
    items = owed.get("items") if isinstance(owed, dict) else None
    return {i["objective"]: i for i in items or [] if isinstance(i, dict) and "objective" in i}


def evidence_table(rows: list[dict[str, Any]], zone: Any, limit: int = 50) -> dict[str, Any] | None:
    """Evaluator evidence (notices and their delays, slow samples …) as columns and rows."""
    if not rows or not all(isinstance(r, dict) for r in rows):
        return None
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    cells = [[_cell(r.get(c), c, zone) for c in columns] for r in rows[:limit]]
    headers = [c.removesuffix("_s").replace("_", " ") for c in columns]  # notice_delay_s → notice delay
    return {"columns": headers, "rows": cells, "more": max(0, len(rows) - limit)}


def _cell(value: Any, column: str, zone: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and column.endswith("_s"):
        return duration_text(value)
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", value):
        return local_time(value, zone)
    if isinstance(value, str) and column == "incident":
        return value.split("/", 1)[-1]
    return str(value)


def _touches(e: dict[str, Any], o: dict[str, Any]) -> bool:
    check = e.get("check")
    if not check:
        return True
    mine = {c for c in o.get("checks") or ([o["check"]] if o.get("check") else [])}
    named = {part.strip().split("/", 1)[-1] for part in check.split(",")}
    return bool(mine & named)


# ---- formatting -----------------------------------------------------------------------------------

def verdict_word(met: bool | None) -> str:
    return {True: "met", False: "missed", None: "unknown"}[met]


def duration_text(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.4g} ms" if seconds else "0 s"
    if seconds < 60:
        return f"{seconds:.3g} s"
    return human_duration(seconds)


def _texts(o: dict[str, Any]) -> dict[str, str]:
    """Measured, target and budget as the table shows them (:mod:`probecore._report`: digits
    that never contradict the verdict); dashes for a dict that is not a whole objective report."""
    from ._evaluation import ObjectiveReport

    try:
        struct = msgspec.convert(o, ObjectiveReport)
    except (msgspec.ValidationError, TypeError):
        return {"measured": "–", "target": "–", "budget": "–"}
    measured, target = decisive(struct)
    return {"measured": measured, "target": target, "budget": budget_text(struct)}


def money(amount: float | None, currency: str | None) -> str:
    if amount is None:
        return "–"
    return f"{amount:,.2f} {currency or ''}".strip()


def local_time(stamp: str | None, zone: Any) -> str | None:
    if not stamp:
        return None
    moment = datetime.fromtimestamp(timestamp_ms(stamp) / 1000, tz=zone)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if moment.second else "%Y-%m-%d %H:%M")


def _title(data: dict[str, Any]) -> str:
    contract = f" · contract {data['contract']}" if data.get("contract") else ""
    return f"{data['profile']}{contract} · {data['period']['label']}"


def _zone(name: str | None) -> Any:
    try:
        return ZoneInfo(name or "UTC")
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


def _builtins(report: Any) -> dict[str, Any]:
    data = report if isinstance(report, dict) else msgspec.to_builtins(report)
    return data  # type: ignore[no-any-return]


_environment = None


def environment() -> Any:
    """The Jinja2 environment over ``probecore/templates`` (package data), HTML-escaping."""
    global _environment
    if _environment is None:
        import jinja2

        _environment = jinja2.Environment(loader=jinja2.PackageLoader("probecore", "templates"),
                                          autoescape=True, trim_blocks=True, lstrip_blocks=True,
                                          # a field an older or newer report lacks renders empty
                                          undefined=jinja2.ChainableUndefined)
    return _environment


# ---- PDF ------------------------------------------------------------------------------------------

def pdf_engine() -> Any:
    """WeasyPrint's ``HTML`` class, or a one-line :class:`UsageError` saying how to get it.

    Why WeasyPrint: it is a maintained HTML/CSS-to-PDF library of the same authors as pygal, it
    draws pygal's SVG, follows the page's ``@page``/``@media print`` rules (A4), and needs no
    browser; it is an optional extra because it needs Pango from the system."""
    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: the library is there but Pango is not
        raise UsageError("probe report: --format pdf needs WeasyPrint: pip install 'probecore[pdf]' "
                         f"(and Debian's libpango-1.0-0) ({exc.__class__.__name__}: {exc})".splitlines()[0]) from None
    return weasyprint.HTML


def render_pdf(html: str) -> bytes:
    """The HTML report as a PDF of A4 pages; nothing is fetched (the page needs nothing)."""
    import logging

    engine = pdf_engine()
    # WeasyPrint logs each CSS property it does not know (the browser-only ones) as a warning.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)

    def refuse(url: str, *args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"the report fetches nothing ({url})")

    pdf: bytes = engine(string=html, url_fetcher=refuse).write_pdf()
    return pdf
