"""The charts of the HTML report and the status page: SVG drawn on the server by pygal.

Why pygal: it renders straight to SVG text in pure Python (no native back end, no browser), its
SVG carries its own styles, and with ``js=[]`` it references nothing outside the document, so a
report file shows the same chart offline, in print and years later. It is ~7 ms a chart;
matplotlib's SVG back end draws the same in ~50 ms and pulls in numpy.

Every chart takes epoch milliseconds and the profile's time zone and puts local calendar days
(or hours) on its x axis. Each chart gets a stable ``ident`` (its CSS is scoped by it), so the
same input renders the same SVG.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pygal
from pygal.style import Style

# pygal puts an import hook on sys.meta_path (for its retired `pygal.maps.*` plugins) that warns
# (ImportWarning) on every import anything makes later; it serves none of our charts.
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "PluginImportFixer"]

FONT = '"Noto Sans", "DejaVu Sans", "Noto Sans CJK SC", "Source Han Sans SC", sans-serif'
"""One font stack for the page and its charts (the CJK face covers clause text in Chinese)."""

# The report's palette: state colours are the same in every chart and in the page's CSS.
COLOURS = {"up": "#3f9b52", "down": "#c8302c", "excluded": "#d99a1e", "unknown": "#9aa3ad"}
LANES = ("up", "down", "excluded", "unknown")


def _style(colours: Sequence[str], width: float) -> Style:
    # Series widths go in the style: pygal's per-series stroke_style loses to its own CSS.
    return Style(stroke_width=str(width), stroke_opacity="1", stroke_opacity_hover="1",
                 stroke_width_hover=str(width), guide_stroke_color="#dde1e6", guide_stroke_dasharray="2,3",
                 major_guide_stroke_color="#dde1e6", major_guide_stroke_dasharray="2,3", background="#ffffff", plot_background="#ffffff", foreground="#333333",
                 foreground_strong="#222222", foreground_subtle="#d5d9de", font_family=FONT,
                 label_font_size=11, major_label_font_size=11, legend_font_size=12, title_font_size=13,
                 value_font_size=11, tooltip_font_size=11, opacity="1", opacity_hover="1",
                 transition="0s", colors=tuple(colours))


def _chart(kind: type, ident: str, colours: Sequence[str], width: float, **options: Any) -> Any:
    chart = kind(style=_style(colours, width), js=[], disable_xml_declaration=True, explicit_size=False,
                 width=860, height=options.pop("height", 220), margin=6, spacing=8,
                 show_legend=options.pop("show_legend", True), legend_at_bottom=True,
                 legend_at_bottom_columns=options.pop("legend_columns", 4), **options)
    chart.uuid = ident  # stable, unique per page: pygal scopes the chart's CSS by it
    return chart


def _render(chart: Any) -> str:
    svg: str = chart.render(is_unicode=True)
    # pygal stamps the render date and its home page into comments, and writes its config into a
    # <script> for its (here absent) tooltip code: drop both (stable output, no script at all).
    return re.sub(r"<!--.*?-->|<script\b.*?</script>", "", svg, flags=re.DOTALL)


def _day_ticks(start_ms: int, end_ms: int, zone: Any, *, most: int = 11) -> list[int]:
    """Local midnights in ``[start, end]`` (every k-th, at most *most*), as epoch ms."""
    day = datetime.fromtimestamp(start_ms / 1000, tz=zone).replace(hour=0, minute=0, second=0, microsecond=0)
    ticks = []
    while (ms := round(day.timestamp() * 1000)) <= end_ms:
        if ms >= start_ms:
            ticks.append(ms)
        day = datetime.combine(day.date() + timedelta(days=1), day.time(), tzinfo=zone)
    step = max(1, -(-len(ticks) // most))
    return ticks[::step]


def _hour_ticks(start_ms: int, end_ms: int, zone: Any, *, every: int = 3) -> list[int]:
    hour = datetime.fromtimestamp(start_ms / 1000, tz=zone).replace(minute=0, second=0, microsecond=0)
    ticks = []
    while (ms := round(hour.timestamp() * 1000)) <= end_ms:
        if ms >= start_ms and hour.hour % every == 0:
            ticks.append(ms)
        hour += timedelta(hours=1)
    return ticks


def _x_formatter(zone: Any, fmt: str) -> Any:
    return lambda ms: datetime.fromtimestamp(ms / 1000, tz=zone).strftime(fmt)


def budget_chart(ident: str, burn: Sequence[tuple[int, float]], *, start_ms: int, end_ms: int,
                 zone: Any) -> str:
    """The error budget burned over the period: *burn* is ``(epoch ms, share used)`` in time
    order (0.0 … 1.0 and beyond), drawn as a line against the 100 % line."""
    top = max([1.0, *(v for _, v in burn)])
    step = 0.25 if top <= 2 else 0.5 if top <= 4 else float(round(top / 4))
    chart = _chart(pygal.XY, ident, ("#2b6cb0", "#c8302c"), 2.5, height=200, show_dots=False,
                   legend_columns=2, range=(0, top * 1.05),
                   x_labels=_day_ticks(start_ms, end_ms, zone), x_value_formatter=_x_formatter(zone, "%m-%d"),
                   value_formatter=lambda v: f"{v:.0%}", y_labels=[i * step for i in range(int(top / step) + 1)],
                   xrange=(start_ms, end_ms))
    chart.add("budget burned", [(ms, v) for ms, v in burn])
    chart.add("whole budget", [(start_ms, 1.0), (end_ms, 1.0)],
              stroke_style={"dasharray": "6,4"})
    return _render(chart)


def timeline_chart(ident: str, segments: Sequence[tuple[int, int, str]],
                   outages: Sequence[tuple[int, int, str]], *, start_ms: int, end_ms: int, zone: Any) -> str:
    """The period as lanes: evidence (up), down, excluded and unknown time from *segments*
    ``(start ms, end ms, state)``, and below them each outage ``(start ms, end ms, label)``
    as a bar in the lane of its attribution."""
    attributions = sorted({label for _, _, label in outages})
    lanes = [*LANES, *(f"outage: {a}" for a in attributions)]
    level = {name: len(lanes) - i for i, name in enumerate(lanes)}
    extra = ["#5a3e8c", "#1f7a8c", "#8c5a1f", "#444444", "#b03a7a"]
    colour = {**COLOURS, **{f"outage: {a}": extra[i % len(extra)] for i, a in enumerate(attributions)}}
    minimum = max(1, (end_ms - start_ms) // 600)  # a 20 s outage in a month still shows as a tick
    series: dict[str, list[tuple[int, int] | None]] = {}
    for name in lanes:
        if name.startswith("outage: "):
            spans = [(a, b) for a, b, label in outages if f"outage: {label}" == name]
        else:
            spans = [(a, b) for a, b, state in segments if state == name]
        points: list[tuple[int, int] | None] = []
        for a, b in spans:
            points += [(a, level[name]), (max(b, a + minimum), level[name]), None]
        if points:  # an empty lane keeps its label but costs no series (pygal's cost is per series)
            series[name] = points[:-1]
    chart = _chart(pygal.XY, ident, [colour[name] for name in series] or ["#ffffff"], 13,
                   height=70 + 22 * len(lanes), show_dots=False, allow_interruptions=True, show_y_guides=False,
                   legend_columns=4, range=(0.3, len(lanes) + 0.7), x_labels=_day_ticks(start_ms, end_ms, zone),
                   x_value_formatter=_x_formatter(zone, "%m-%d"),
                   y_labels=[{"label": name.removeprefix("outage: "), "value": level[name]} for name in lanes],
                   xrange=(start_ms, end_ms), show_legend=False)
    for name, points in series.items() or [("", [None])]:
        chart.add(name, points, stroke_style={"linecap": "butt"})
    return _render(chart)


def response_chart(ident: str, series: dict[str, Sequence[tuple[int, float] | None]], *, start_ms: int,
                   end_ms: int, zone: Any, unit: str | None) -> str:
    """Values over the last hours (one line per series, ``None`` breaks a line), e.g. a check's
    response time."""
    scale, label = (1000.0, "ms") if unit == "s" else (1.0, unit or "")
    chart = _chart(pygal.XY, ident, ("#2b6cb0", "#3f9b52", "#d99a1e", "#5a3e8c"), 1.5, height=180,
                   show_dots=False, allow_interruptions=True, legend_columns=4,
                   x_labels=_hour_ticks(start_ms, end_ms, zone), x_value_formatter=_x_formatter(zone, "%H:%M"),
                   value_formatter=lambda v: f"{v:.4g} {label}".strip(), xrange=(start_ms, end_ms),
                   show_legend=len(series) > 1, range=(0, 1) if not any(any(v) for v in series.values()) else None)
    for name, values in series.items():
        chart.add(name, [None if p is None else (p[0], p[1] * scale) for p in values] or [None])
    return _render(chart)
