"""``probe report --format html``: a simulated month (records imported with ``probe records
import``, exclusions and notices annotated) rendered to one file and opened in headless Chromium:
the verdicts, totals and every outage are in the DOM, the page fetches nothing, and it looks like
the committed screenshot."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from probecore import Annotation, Failure, SLIRecord, encode_record, format_timestamp
from probecore._cli import main
from tests.browser import open_browser, pixel_difference

SHANGHAI = ZoneInfo("Asia/Shanghai")
GOLDEN = Path(__file__).parent / "golden" / "report.png"
PROFILE = """
[profile]
name = "acme"
contract = "002"
timezone = "Asia/Shanghai"
fee = { monthly = 3100.0, currency = "CNY" }
[defaults]
interval = "5m"
timeout = "10s"
confirm = 2
[[check]]
id = "port"
probe = "tcp"
host = "192.0.2.1"
port = 80
[[check]]
id = "www"
probe = "tcp"
host = "192.0.2.1"
port = 81

[[objective]]
id = "002-N"
clause = "002-N"
kind = "availability"
check = "port"
op = ">="
target = 0.999
remedy = { kind = "waive_month" }
description = "甲方托管设备所在端口与电信网络保持99.9％的联通性，即每月不联通时间少于44分钟。"

[[objective]]
id = "002-N-minutes"
clause = "002-N"
kind = "downtime"
check = "port"
op = "<"
limit = "44m"
remedy = { kind = "waive_month" }

[[objective]]
id = "002-T"
clause = "002-T"
kind = "notify_delay"
check = "port"
op = "<="
limit = "15m"
remedy = { kind = "fee_days" }
description = "乙方断定发生紧急情况后15分钟之内通知甲方指定联系人。"

[[objective]]
id = "www"
clause = "002-M"
kind = "availability"
check = "www"
op = ">="
target = 0.999
"""


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def _records(check: str, start: datetime, end: datetime, fails: list[tuple[datetime, datetime, str]],
             gaps: list[tuple[datetime, datetime]] = ()) -> list[SLIRecord]:
    out = []
    t = start
    while t < end:
        if not any(a <= t < b for a, b in gaps):
            attribution = next((who for a, b, who in fails if a <= t < b), None)
            stamp = format_timestamp(t)
            out.append(SLIRecord(
                check=f"acme/{check}", probe="tcp", target="192.0.2.1:80", vantage="v1", scheduled_at=stamp,
                started_at=stamp, duration_s=0.01, outcome="fail" if attribution else "ok",
                failure=Failure("connect_refused", attribution, "connection refused") if attribution else None,
                value=None if attribution else 0.012, unit="s"))
        t += timedelta(minutes=5)
    return out


# October 2026 in Shanghai. port: a 50-minute provider outage on the 6th (notice after 9 min), a
# 25-minute one on the 20th (notice after 22 min: late), and 4 hours the customer caused on the
# 13th (attributed to the customer: excluded); www: 30 minutes of maintenance entered after the
# fact covering its only outage, and 6 hours without evidence on the 25th.
OCT = (at("2026-10-01 00:00"), at("2026-11-01 00:00"))
PORT_OUTAGES = [(at("2026-10-06 09:00"), at("2026-10-06 09:50"), "provider"),
                (at("2026-10-20 22:10"), at("2026-10-20 22:35"), "provider"),
                (at("2026-10-13 14:00"), at("2026-10-13 18:00"), "customer")]
WWW_OUTAGE = (at("2026-10-09 02:00"), at("2026-10-09 02:30"), "provider")
WWW_GAP = (at("2026-10-25 06:00"), at("2026-10-25 12:00"))


def simulated_month(tmp_path: Path) -> tuple[Path, str]:
    """A profile and a store holding October 2026 as described above."""
    profile = tmp_path / "acme.toml"
    profile.write_text(PROFILE, encoding="utf-8")
    store = f"sqlite:{tmp_path / 'acme.sqlite3'}"
    records = _records("port", *OCT, PORT_OUTAGES) + _records("www", *OCT, [WWW_OUTAGE], [WWW_GAP])
    data = tmp_path / "month.jsonl"
    data.write_bytes(b"".join(encode_record(r) + b"\n" for r in records))
    assert main(["records", "import", str(data), "--store", store]) == 0
    from probecore_plugins.sqlite import SQLiteStore

    s = SQLiteStore(store)
    created = format_timestamp(at("2026-10-09 08:00"))
    s.annotate(Annotation(kind="exclusion", profile="acme", check="acme/www", start=format_timestamp(WWW_OUTAGE[0]),
                          end=format_timestamp(WWW_OUTAGE[1]), reason="maintenance", author="li.wei",
                          note="switch firmware, agreed by phone", created_at=created))
    for (start, _, _), delay in zip(PORT_OUTAGES[:2], (9, 22), strict=True):
        confirmed = start + timedelta(minutes=5)  # the second failure confirms
        s.annotate(Annotation(kind="notice", profile="acme", check="acme/port",
                              incident=f"acme/port@v1@{format_timestamp(start)}",
                              start=format_timestamp(confirmed + timedelta(minutes=delay)), route="ops",
                              created_at=format_timestamp(confirmed + timedelta(minutes=delay))))
    s.close()
    return profile, store


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("month")
    profile, store = simulated_month(tmp)
    html = tmp / "report.html"
    status = main(["report", str(profile), "--month", "2026-10", "--format", "html", "-o", str(html),
                   "--store", store])
    assert status == 1  # the late notice misses 002-T
    out = tmp / "report.json"
    assert main(["report", str(profile), "--month", "2026-10", "--format", "json", "-o", str(out),
                 "--store", store]) == 1
    return html, json.loads(out.read_text())


def test_the_report_in_a_browser_shows_verdicts_totals_and_every_outage(month):
    html, report = month
    with open_browser() as page:
        page.open(html.as_uri())
        assert page.text("#overall-verdict") == "3 of 4 objectives missed"
        # The report's own total (002-N and 002-N-minutes waive one month: 3,100 + one day's fee),
        # where the evaluation gives one; else the page points at each missed objective's remedy.
        if "owed" in report:
            total = sum(report["owed"]["amounts"].values())
            assert total == 3200 and page.text("#total-owed").startswith("3,200.00 CNY")
        else:
            assert "see each missed objective" in page.text("#total-owed")
        assert page.texts('section.objective[data-objective="002-N"] .owed-amount') == ["3,100.00 CNY"]
        verdicts = {row.get_attribute("data-objective"): row.get_attribute("data-verdict")
                    for row in page.page.query_selector_all("section.objective")}
        assert verdicts == {o["id"]: {True: "met", False: "missed", None: "unknown"}[o["met"]]
                            for o in report["objectives"]}
        for o in report["objectives"]:
            card = f'section.objective[data-objective="{o["id"]}"]'
            shown = page.page.query_selector_all(f"{card} tr.outage")
            assert [r.get_attribute("data-incident") for r in shown] == [x["incident"] for x in o["outages"]]
            assert page.text(f"{card} .measured") != "–"
        # Outage times are the profile's local time; attribution and exclusion are on the row.
        rows = page.texts('section.objective[data-objective="002-N"] tr.outage')
        assert rows[0].startswith("port\t2026-10-06 09:00\t09:50")
        assert "customer (connect_refused)" in rows[1] and "customer" in rows[1].split("\t")[6]
        # The late notice and its delay, the exclusion with who entered it and why.
        assert "22m" in page.text('section.objective[data-objective="002-T"] table.evidence')
        exclusion = page.text("#exclusions tbody tr")
        assert "li.wei" in exclusion and "switch firmware, agreed by phone" in exclusion
        assert "甲方托管设备所在端口" in page.text('section.objective[data-objective="002-N"] .contract')
        assert page.page.query_selector_all("section.objective .chart svg")
        assert page.requests == []  # nothing fetched: no fonts, scripts, images from anywhere
        shot = page.page.screenshot(animations="disabled", caret="hide", mask=[page.page.locator(".generated")])
    if not GOLDEN.exists():
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_bytes(shot)
        pytest.fail(f"no golden screenshot yet: wrote {GOLDEN}; look at it and commit it")
    difference = pixel_difference(shot, GOLDEN.read_bytes())
    if difference > 0.01:
        (html.parent / "report-actual.png").write_bytes(shot)
    assert difference <= 0.01, f"{difference:.2%} of the pixels differ from {GOLDEN} (actual: {html.parent})"


def test_the_file_is_self_contained_and_prints_on_a4(month):
    html, _ = month
    text = html.read_text(encoding="utf-8")
    assert "<script" not in text and "<link" not in text and "<img" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text)
    assert "@media print" in text and "size: A4" in text
    assert text.count("<svg") >= 7  # 3 budget charts (the notice's budget is no down time) + 4 timelines


def test_fields_the_evaluation_adds_flow_into_the_page_and_missing_ones_are_not_needed(month):
    from probecore._report_html import render_html

    _, report = month
    report = json.loads(json.dumps(report))
    report["objectives"][0]["description"] = "新的条款文本"
    report["owed"] = {"amounts": {"CNY": 1234.5}, "minutes": 90.0, "items": []}
    page = render_html(report)
    assert "新的条款文本" in page and "1,234.50 CNY" in page and "90 min of service" in page
    # A report from before those fields (issue 15's) still renders.
    del report["owed"]
    for o in report["objectives"]:
        for key in ("denominator", "denominator_s", "excluded_samples"):
            o.pop(key, None)
    for e in report["exclusions"]:
        e.pop("applies_to", None)
    older = render_html(report)
    assert "remedies owed: see each missed objective" in older and "<span>denominator</span>" not in older


def test_a_large_report_draws_charts_for_the_objectives_that_need_a_look(month):
    from probecore._report_html import render_html

    _, report = month
    base = report["objectives"][3]  # www: met
    many = [{**base, "id": f"c{i:04d}", "budget_used": i / 1000} for i in range(200)]
    many[5] = {**many[5], "met": False}
    page = render_html({**report, "objectives": many}, max_charts=10)
    assert page.count('class="chart timeline"') == 10
    assert "Charts are drawn for the 10 of 200" in page
    charted = re.findall(r'data-objective="(c\d+)" data-verdict="\w+">(?:(?!</section>).)*class="chart timeline"',
                         page, re.DOTALL)
    # The missed one, then the nine that burned the most budget (in the report's order on the page).
    assert set(charted) == {"c0005", *(f"c{i:04d}" for i in range(199, 190, -1))}


def test_report_output_errors_are_one_line(month, tmp_path, capsys):
    html, _ = month
    profile = html.parent / "acme.toml"
    store = f"sqlite:{html.parent / 'acme.sqlite3'}"
    assert main(["report", str(profile), "--month", "2026-10", "-o", str(tmp_path / "r.txt"), "--store", store]) == 2
    assert "not the table" in capsys.readouterr().err
    missing = tmp_path / "no" / "such" / "dir" / "r.html"
    assert main(["report", str(profile), "--month", "2026-10", "--format", "html", "-o", str(missing),
                 "--store", store]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "Traceback" not in err


def test_the_benchmark_checks_the_page_against_the_json(tmp_path):
    """benchmarks/report_html.py at 3 checks: its page agrees with the JSON report (no timing)."""
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_report_html",
                                                  Path(__file__).parent.parent / "benchmarks" / "report_html.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(checks=3, month="2026-10", interval="1h", seed=3, store=str(tmp_path / "s.sqlite3"),
                              max_charts=60, max_seconds=1e9, quiet=True)
    figures = bench.run(args)
    assert figures["problems"] == [] and figures["ok"]
    assert figures["objectives"] == 6 and figures["outages"] > 0 and figures["svgs"] >= 6
    report = {"objectives": [{"id": "a", "met": True, "outages": [{}]}]}
    page = '<section class="card objective" id="objective-a" data-objective="a" data-verdict="missed">'
    assert len(bench.check_page(page, report)) == 2  # another verdict, and the outage row missing


def test_it_prints_on_a4_pages(month):
    html, _ = month
    with open_browser() as page:
        page.open(html.as_uri())
        page.page.emulate_media(media="print")
        assert page.page.evaluate("getComputedStyle(document.querySelector('section.objective')).breakInside") \
            == "avoid"
        pdf = page.page.pdf(prefer_css_page_size=True, print_background=True)
    boxes = re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf)
    assert len(boxes) >= 3  # four objectives do not fit one page
    for width, height in boxes:  # A4 in points
        assert abs(float(width) - 595.3) < 1 and abs(float(height) - 841.9) < 1


def test_pdf_is_the_page_on_a4(month, tmp_path, capsys):
    pytest.importorskip("weasyprint", reason="pip install 'probecore[pdf]'")
    html, _ = month
    profile, store = html.parent / "acme.toml", f"sqlite:{html.parent / 'acme.sqlite3'}"
    pdf = tmp_path / "report.pdf"
    assert main(["report", str(profile), "--month", "2026-10", "--format", "pdf", "-o", str(pdf),
                 "--store", store]) == 1
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    # The same page laid out by the same engine: A4 pages (in CSS px), several of them.
    import weasyprint

    pages = weasyprint.HTML(string=html.read_text(encoding="utf-8")).render().pages
    assert len(pages) >= 3
    assert all(abs(p.width - 793.7) < 1 and abs(p.height - 1122.5) < 1 for p in pages)
    capsys.readouterr()
    assert main(["report", str(profile), "--month", "2026-10", "--format", "pdf", "--store", store]) == 2
    assert "-o FILE" in capsys.readouterr().err
