"""The report's charts (pygal SVG): the same input draws the same SVG, nothing in it runs or
fetches, and the pieces the page relies on are there."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from probecore._charts import budget_chart, response_chart, timeline_chart

ZONE = ZoneInfo("Asia/Shanghai")
START = round(datetime(2026, 10, 1, tzinfo=ZONE).timestamp() * 1000)
END = round(datetime(2026, 11, 1, tzinfo=ZONE).timestamp() * 1000)
DAY = 86_400_000


def _self_contained(svg: str) -> None:
    assert svg.startswith("<svg") and "<script" not in svg and "<!--" not in svg
    assert not re.search(r"""(href|src)\s*=\s*["'](https?:)?//""", svg)


def test_the_timeline_has_a_lane_per_state_and_attribution_and_is_stable():
    segments = [(START, START + 5 * DAY, "up"), (START + 5 * DAY, START + 5 * DAY + 3_600_000, "down"),
                (START + 5 * DAY + 3_600_000, START + 9 * DAY, "up"), (START + 9 * DAY, START + 10 * DAY, "unknown"),
                (START + 10 * DAY, END, "up")]
    outages = [(START + 5 * DAY, START + 5 * DAY + 3_600_000, "provider"),
               (START + 20 * DAY, START + 20 * DAY + 60_000, "customer (excluded)")]
    svg = timeline_chart("t", segments, outages, start_ms=START, end_ms=END, zone=ZONE)
    _self_contained(svg)
    assert svg == timeline_chart("t", segments, outages, start_ms=START, end_ms=END, zone=ZONE)
    labels = re.findall(r'<text[^>]*class="[^"]*"[^>]*>([^<]+)</text>', svg)
    for lane in ("up", "down", "excluded", "unknown", "provider", "customer (excluded)"):
        assert lane in labels
    assert "10-01" in labels and 'id="chart-t"' in svg
    # 'excluded' has no time here: its lane is labelled but draws nothing (5 series for 6 lanes).
    assert len(set(re.findall(r'class="series serie-(\d+)', svg))) == 5


def test_the_budget_goes_past_its_line_when_burned_past_it():
    svg = budget_chart("b", [(START, 0.0), (START + DAY, 0.0), (START + DAY + 60_000, 1.7), (END, 1.7)],
                       start_ms=START, end_ms=END, zone=ZONE)
    _self_contained(svg)
    assert "150%" in svg and "100%" in svg and "budget burned" in svg


def test_response_lines_break_where_there_is_no_value():
    values = [(START + i * 60_000, 0.02) for i in range(10)] + [None] + \
             [(START + i * 60_000, 0.03) for i in range(20, 30)]
    svg = response_chart("r", {"api": values}, start_ms=START, end_ms=START + DAY, zone=ZONE, unit="s")
    _self_contained(svg)
    assert len(re.findall(r'<path d="M', svg)) >= 2  # two pieces of line, not one across the gap
    assert "30 ms" in svg or "30.0 ms" in svg


def test_charts_without_data_still_draw_their_axes():
    for svg in (response_chart("r", {"x": []}, start_ms=START, end_ms=START + DAY, zone=ZONE, unit=None),
                timeline_chart("t", [], [], start_ms=START, end_ms=END, zone=ZONE),
                budget_chart("b", [], start_ms=START, end_ms=END, zone=ZONE)):
        _self_contained(svg)
        assert 'class="axis' in svg
