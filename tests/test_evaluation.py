"""The evaluation engine, end to end: records imported with ``probe records import``, judged with
``probe report --format json``, against verdicts computed by hand at every boundary."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from probecore import Annotation, Failure, SLIRecord, encode_record, format_timestamp
from probecore._cli import main

SHANGHAI = ZoneInfo("Asia/Shanghai")
HEAD = """
[profile]
name = "p"
timezone = "Asia/Shanghai"
fee = { monthly = 3100.0, currency = "CNY" }
[defaults]
interval = "1m"
timeout = "10s"
confirm = 2
[[check]]
id = "c"
probe = "tcp"
host = "192.0.2.1"
port = 80
[[check]]
id = "d"
probe = "tcp"
host = "192.0.2.1"
port = 81
"""


def at(text: str) -> datetime:
    """A local time in Asia/Shanghai: '2026-09-01 00:00[:ss]'."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def record(when: datetime, outcome: str = "ok", *, check: str = "c", attribution: str = "provider",
           value: float | None = None, vantage: str = "v1", phases: dict | None = None) -> SLIRecord:
    stamp = format_timestamp(when)
    failure = Failure("refused", attribution, "connection refused") if outcome == "fail" else (
        Failure("probe_error", "probe", "no route") if outcome == "error" else None)
    return SLIRecord(check=f"p/{check}", probe="tcp", target="192.0.2.1:80", vantage=vantage,
                     scheduled_at=stamp, started_at=stamp, duration_s=0.01, outcome=outcome,
                     failure=failure, value=value, unit="s" if value is not None else None,
                     phases=phases or {})


def minutes(start: datetime, end: datetime, *, fail: list[tuple[datetime, datetime]] = (),
            check: str = "c", attribution: str = "provider", every: float = 60, **kw) -> list[SLIRecord]:
    """A record every *every* seconds in [start, end); those inside a *fail* span fail."""
    out = []
    t = start
    while t < end:
        failing = any(a <= t < b for a, b in fail)
        out.append(record(t, "fail" if failing else "ok", check=check, attribution=attribution, **kw))
        t += timedelta(seconds=every)
    return out


@pytest.fixture
def judge(tmp_path, capsysbinary):
    """judge(profile_tail, records, month=…) → the JSON report (imports then reports)."""
    def run(tail: str, records: list[SLIRecord], *, month: str = "2026-09", year: str | None = None,
            annotations: list[Annotation] = (), expect: int | None = None, fmt: str = "json"):
        profile = tmp_path / "p.toml"
        profile.write_text(HEAD + tail)
        store = f"sqlite:{tmp_path / 's.sqlite3'}"
        data = tmp_path / "r.jsonl"
        data.write_bytes(b"".join(encode_record(r) + b"\n" for r in records))
        assert main(["records", "import", str(data), "--store", store]) == 0
        if annotations:
            from probecore_plugins.sqlite import SQLiteStore
            s = SQLiteStore(store)
            for a in annotations:
                s.annotate(a)
            s.close()
        capsysbinary.readouterr()
        when = ["--year", year] if year else ["--month", month]
        status = main(["report", str(profile), *when, "--format", fmt, "--store", store])
        out = capsysbinary.readouterr().out.decode()
        if fmt != "json":
            return status, out
        report = json.loads(out)
        assert status == (0 if report["met"] else 1)
        if expect is not None:
            assert status == expect
        return report
    return run


def objective(report: dict, ident: str) -> dict:
    return next(o for o in report["objectives"] if o["id"] == ident)


SEP = (at("2026-09-01 00:00"), at("2026-10-01 00:00"))   # 30 days
OCT = (at("2026-10-01 00:00"), at("2026-11-01 00:00"))   # 31 days

DOWNTIME_AND_AVAILABILITY = """
[[objective]]
id = "minutes"
kind = "downtime"
check = "c"
op = "<"
limit = "44m"
remedy = { kind = "waive_month" }
[[objective]]
id = "ratio"
kind = "availability"
check = "c"
op = ">="
target = 0.999
[[objective]]
id = "ratio-strict"
kind = "availability"
check = "c"
op = ">"
target = 0.999
"""


def outage_records(period, down_from: datetime, down_for: timedelta) -> list[SLIRecord]:
    """Minute records all period; failures from *down_from*; the first ok exactly *down_for* later."""
    end = down_from + down_for
    before = minutes(period[0], down_from)
    failing = minutes(down_from, end - timedelta(seconds=1), fail=[(down_from, end)])
    return before + failing + minutes(end, period[1])


def test_43_2_minutes_in_a_30_day_month_meet_both_clauses_exactly(judge):
    report = judge(DOWNTIME_AND_AVAILABILITY, outage_records(SEP, at("2026-09-10 03:00"), timedelta(minutes=43.2)))
    minutes_, ratio, strict = (objective(report, i) for i in ("minutes", "ratio", "ratio-strict"))
    assert minutes_["measured"] == pytest.approx(2592.0) and minutes_["met"] is True
    assert minutes_["target"] == 2640.0 and minutes_["budget_left"] == pytest.approx(48.0)
    # 0.1 % of 30 days is exactly 43.2 min: ">= 99.9%" is met, "> 99.9%" is not.
    assert ratio["measured"] == pytest.approx(0.999) and ratio["met"] is True
    assert strict["met"] is False
    assert ratio["coverage"] == 1.0 and ratio["unknown_s"] == 0
    (outage,) = ratio["outages"]
    assert outage["start"] == "2026-09-09T19:00:00.000Z" and outage["duration_s"] == pytest.approx(2592.0)
    assert outage["excluded"] is None and outage["attribution"] == "provider"
    assert report["met"] is False


def test_44_minutes_miss_less_than_44_in_either_month_but_not_the_ratio_of_31_days(judge):
    sep = judge(DOWNTIME_AND_AVAILABILITY, outage_records(SEP, at("2026-09-10 03:00"), timedelta(minutes=44)))
    assert objective(sep, "minutes")["met"] is False        # "少于44分钟": 44 is not less than 44
    assert objective(sep, "ratio")["met"] is False          # 44/43200 > 0.1 %
    assert objective(sep, "minutes")["remedy"] == {
        "kind": "waive_month", "amount": 3100.0, "currency": "CNY", "minutes": None,
        "detail": "the fee for 2026-09 is waived", "of": None, "interrupted_s": None}
    oct_ = judge(DOWNTIME_AND_AVAILABILITY, outage_records(OCT, at("2026-10-10 03:00"), timedelta(minutes=44)),
                 month="2026-10")
    assert objective(oct_, "minutes")["met"] is False
    assert objective(oct_, "ratio")["measured"] == pytest.approx(1 - 44 / 44640)
    assert objective(oct_, "ratio")["met"] is True          # 44.64 min allowed in 31 days


def test_43_2_minutes_in_a_31_day_month_meet_the_downtime_clause(judge):
    report = judge(DOWNTIME_AND_AVAILABILITY, outage_records(OCT, at("2026-10-10 03:00"), timedelta(minutes=43.2)),
                   month="2026-10")
    assert objective(report, "minutes")["met"] is True
    assert objective(report, "ratio-strict")["met"] is True  # 43.2 < 44.64


EXACTLY_99 = """
[[objective]]
id = "ge"
kind = "availability"
check = "c"
op = ">="
target = 0.99
[[objective]]
id = "gt"
kind = "availability"
check = "c"
op = ">"
target = 0.99
remedy = { kind = "fee_multiple", multiple = 2, of = "period" }
"""


def test_availability_exactly_99_percent_under_ge_and_gt(judge):
    report = judge(EXACTLY_99, outage_records(SEP, at("2026-09-15 00:00"), timedelta(minutes=432)))
    assert objective(report, "ge")["measured"] == pytest.approx(0.99)
    assert objective(report, "ge")["met"] is True    # "99%以上"
    gt = objective(report, "gt")
    assert gt["met"] is False                        # "超过99%"
    assert gt["remedy"]["kind"] == "fee_multiple" and gt["remedy"]["amount"] == 6200.0


def test_a_flap_of_confirm_minus_one_failures_is_no_outage(judge):
    records = minutes(*SEP, fail=[(at("2026-09-03 10:00"), at("2026-09-03 10:01"))])  # one failure
    report = judge(DOWNTIME_AND_AVAILABILITY, records, expect=0)
    assert objective(report, "minutes")["measured"] == 0
    assert objective(report, "ratio")["outages"] == []


def test_an_outage_across_the_month_boundary_in_shanghai_is_split(judge):
    records = minutes(at("2026-09-30 12:00"), at("2026-10-01 12:00"),
                      fail=[(at("2026-09-30 23:50"), at("2026-10-01 00:20"))])
    october = judge(DOWNTIME_AND_AVAILABILITY, records, month="2026-09")
    november = judge(DOWNTIME_AND_AVAILABILITY, [], month="2026-10")
    assert objective(october, "minutes")["measured"] == 600.0
    assert objective(november, "minutes")["measured"] == 1200.0
    (first,) = objective(october, "minutes")["outages"]
    (second,) = objective(november, "minutes")["outages"]
    assert first["end"] == second["start"] == "2026-09-30T16:00:00.000Z"
    assert first["incident"] == second["incident"]


MAINTENANCE = """
[[maintenance]]
start = 2026-09-05T02:00:00+08:00
end = 2026-09-05T02:30:00+08:00
agreed = true
note = "switch firmware"
[[maintenance]]
start = 2026-09-06T02:00:00+08:00
end = 2026-09-06T03:00:00+08:00
note = "not agreed: counts as down"
"""


def test_maintenance_covering_part_of_an_outage(judge):
    records = minutes(*SEP, fail=[(at("2026-09-05 01:40"), at("2026-09-05 02:10")),
                                  (at("2026-09-06 02:00"), at("2026-09-06 02:05"))])
    report = judge(DOWNTIME_AND_AVAILABILITY + MAINTENANCE, records)
    o = objective(report, "minutes")
    assert o["measured"] == 20 * 60 + 5 * 60     # 01:40–02:00, and the unagreed window's 5 min
    assert o["excluded_s"] == 10 * 60 and o["excluded_by_reason"] == {"maintenance": 600.0}
    first = o["outages"][0]
    assert (first["down_s"], first["excluded_s"], first["excluded"]) == (1200.0, 600.0, "maintenance")
    assert [e["source"] for e in report["exclusions"]] == ["maintenance", "maintenance"]


def test_unknown_gaps_are_coverage_not_up_or_down(judge):
    period_gap = (at("2026-09-10 00:00"), at("2026-09-13 00:00"))   # no records for 3 days
    records = minutes(SEP[0], period_gap[0]) + minutes(period_gap[1], SEP[1],
                                                       fail=[(at("2026-09-20 00:00"), at("2026-09-20 00:30"))])
    report = judge(DOWNTIME_AND_AVAILABILITY.replace('target = 0.999\n', 'target = 0.999\ndenominator = "evidence"\n')
                   + 'min_coverage = 0.95\n', records)
    ratio = objective(report, "ratio")
    # Holds last 2 minutes past the last record before the gap; the rest of the 3 days is unknown.
    assert ratio["unknown_s"] == 3 * 86400 - 60   # the 23:59 record holds to 00:01
    known = 30 * 86400 - ratio["unknown_s"]
    assert ratio["measured"] == pytest.approx(1 - 1800 / known)
    assert ratio["coverage"] == pytest.approx(known / (30 * 86400), abs=1e-6)
    strict = objective(report, "ratio-strict")     # min_coverage 0.95 > 90 %: not judged
    assert strict["met"] is None and "coverage" in strict["note"]


def test_failures_the_objective_excludes_are_excluded_time_with_their_class(judge):
    records = minutes(*SEP, fail=[(at("2026-09-08 10:00"), at("2026-09-08 11:00"))], attribution="customer")
    report = judge(DOWNTIME_AND_AVAILABILITY + """
[[objective]]
id = "customer-counts"
kind = "downtime"
check = "c"
op = "<"
limit = "44m"
exclude = ["probe"]
""", records)
    o = objective(report, "minutes")
    assert o["measured"] == 0 and o["excluded_by_reason"] == {"customer": 3600.0}
    assert o["outages"][0]["excluded"] == "customer"
    assert objective(report, "customer-counts")["measured"] == 3600.0


def test_exclusions_entered_after_the_fact_and_withdrawn_ones(judge):
    records = minutes(*SEP, fail=[(at("2026-09-08 10:00"), at("2026-09-08 11:00"))])
    made = format_timestamp(at("2026-09-09 09:00"))
    force = Annotation(kind="exclusion", profile="p", check="p/c", start=format_timestamp(at("2026-09-08 10:00")),
                       end=format_timestamp(at("2026-09-08 10:30")), reason="force_majeure", note="typhoon",
                       author="ops", created_at=made)
    withdrawn = Annotation(kind="exclusion", profile="p", start=format_timestamp(at("2026-09-08 10:30")),
                           end=format_timestamp(at("2026-09-08 11:00")), reason="customer", note="wrong",
                           author="ops", created_at=made, withdrawn_at=made, withdrawn_by="boss",
                           withdrawn_note="not the customer")
    report = judge(DOWNTIME_AND_AVAILABILITY, records, annotations=[force, withdrawn])
    o = objective(report, "minutes")
    assert o["measured"] == 1800.0 and o["excluded_by_reason"] == {"force_majeure": 1800.0}
    assert [(e["reason"], e["withdrawn"]) for e in report["exclusions"]] == [
        ("force_majeure", False), ("customer", True)]


REPORT_WITHIN = """
[[objective]]
id = "reported"
kind = "downtime"
check = "c"
op = "<"
limit = "44m"
report_within = "5d"
"""


def test_outages_not_reported_within_5_days_are_excluded(judge, tmp_path):
    records = minutes(at("2026-10-01 00:00"), at("2026-10-20 00:00"),
                      fail=[(at("2026-10-03 10:00"), at("2026-10-03 11:00")),
                            (at("2026-10-10 10:00"), at("2026-10-10 10:50"))])
    reported = Annotation(kind="incident_report", profile="p", check="p/c",
                          incident=f"p/c@v1@{format_timestamp(at('2026-10-10 10:00'))}",
                          start=format_timestamp(at("2026-10-14 09:00")), created_at=format_timestamp(at("2026-10-14 09:00")))
    report = judge(REPORT_WITHIN, records, month="2026-10", annotations=[reported])
    o = objective(report, "reported")
    assert o["measured"] == 3000.0                      # only the reported 50-minute outage
    first, second = o["outages"]
    assert first["excluded"] == "not_reported" and first["report_by"] == "2026-10-08T02:00:00.000Z"
    assert second["excluded"] is None and second["reported_at"] == "2026-10-14T01:00:00.000Z"


FAULT_FREE = """
[[check]]
id = "hourly"
probe = "tcp"
host = "192.0.2.1"
port = 82
interval = "1h"
[[objective]]
id = "days"
kind = "fault_free_days"
check = "hourly"
op = ">="
target = 360
"""


def test_a_fault_across_midnight_spoils_two_days_and_days_without_evidence_do_not_count(judge):
    year = minutes(at("2025-01-01 00:00"), at("2026-01-01 00:00"), check="hourly", every=3600,
                   fail=[(at("2025-06-01 23:00"), at("2025-06-02 01:00"))])
    silent = (at("2025-08-10 00:00"), at("2025-08-13 00:00"))          # the agent was down 3 days
    year = [r for r in year if not silent[0] <= datetime.fromisoformat(r.started_at.replace("Z", "+00:00")) < silent[1]]
    report = judge(FAULT_FREE, year, year="2025")
    o = objective(report, "days")
    # Two days spoilt. The last record before the silence (08-09 23:00) holds two hours, into
    # 08-10; 08-11 and 08-12 have no evidence at all and count neither way.
    assert o["evidence"] == [{"day": "2025-06-01"}, {"day": "2025-06-02"}]
    assert o["measured"] == 365 - 2 - 2
    assert o["met"] is True and "2 without evidence" in o["note"]


LATENCY = """
[[objective]]
id = "mean"
kind = "latency_stats"
check = "c"
metric = "value"
stat = "mean"
op = "<="
limit = "60s"
exceed = { limit = "1h", times = 2 }
remedy = { kind = "service_time", multiple = 2, of = "period" }
[[objective]]
id = "each"
kind = "latency"
check = "c"
op = "<="
limit = "1h"
"""


@pytest.mark.parametrize("slow, met", [(1, True), (2, False)])
def test_the_one_hour_maximum_exceeded_once_is_met_twice_breached(judge, slow, met):
    records = [record(at("2026-09-02 00:00") + timedelta(minutes=i), value=3601.0 if i < slow else 10.0)
               for i in range(2000)]
    report = judge(LATENCY, records)
    o = objective(report, "mean")
    assert o["measured"] < 60 and o["met"] is met
    assert len(o["evidence"]) == slow and o["evidence"][0]["value"] == 3601.0
    assert objective(report, "each")["met"] is False          # each single message <= 1 h
    if not met:
        assert o["remedy"] == {"kind": "service_time", "amount": None, "currency": None,
                               "minutes": 2 * 30 * 24 * 60, "detail": "2 × the service time of 2026-09",
                               "of": "period", "interrupted_s": None}


NOTIFY = """
[[objective]]
id = "notice"
kind = "notify_delay"
check = "c"
op = "<="
limit = "15m"
remedy = { kind = "fee_days" }
"""


def test_two_missed_notices_on_one_day_owe_one_days_fee(judge):
    fails = [(at("2026-09-04 08:00"), at("2026-09-04 08:30")), (at("2026-09-04 20:00"), at("2026-09-04 20:30")),
             (at("2026-09-07 08:00"), at("2026-09-07 08:30")), (at("2026-09-09 08:00"), at("2026-09-09 08:30"))]
    records = minutes(*SEP, fail=fails)

    def notice(start: datetime, delay: timedelta) -> Annotation:
        return Annotation(kind="notice", profile="p", check="p/c", incident=f"p/c@v1@{format_timestamp(start)}",
                          start=format_timestamp(start + timedelta(minutes=1) + delay), route="ops",
                          created_at=format_timestamp(start + delay))
    # Confirmed at +1 min (the second failure). 11-04 twice missed (no notice; 16 min), 11-07 met at
    # exactly 15 min, 11-09 met at 3 min.
    notices = [notice(fails[1][0], timedelta(minutes=16)), notice(fails[2][0], timedelta(minutes=15)),
               notice(fails[3][0], timedelta(minutes=3))]
    report = judge(NOTIFY, records, annotations=notices)
    o = objective(report, "notice")
    assert [e["met"] for e in o["evidence"]] == [False, False, True, True]
    assert [e["notice_delay_s"] for e in o["evidence"]] == [None, 960.0, 900.0, 180.0]
    assert o["met"] is False and o["measured"] == 960.0
    assert o["remedy"]["amount"] == pytest.approx(3100 / 30, abs=0.01) and "2026-09-04" in o["remedy"]["detail"]
    assert [x["notice_delay_s"] for x in o["outages"]] == [None, 960.0, 900.0, 180.0]


PUSHED = """
[[check]]
id = "backup"
probe = "push"
interval = "1d"
[[objective]]
id = "daily"
kind = "heartbeat"
check = "backup"
every = "1d"
[[objective]]
id = "three-daily"
kind = "heartbeat"
check = "backup"
every = "3d"
[[objective]]
id = "detected"
kind = "success_ratio"
check = "d"
op = ">="
target = 0.999
"""


def test_heartbeats_and_success_ratios(judge):
    beats = [record(at(f"2026-09-{d:02d} 03:00"), check="backup") for d in range(1, 31) if d not in (5, 6, 7)]
    detections = [record(at("2026-09-01 00:00") + timedelta(minutes=40 * i), check="d") for i in range(999)]
    detections.append(record(at("2026-09-30 00:00"), "fail", check="d"))
    report = judge(PUSHED, beats + detections)
    daily, three = objective(report, "daily"), objective(report, "three-daily")
    assert daily["measured"] == 3 and daily["met"] is False
    assert [e["window_start"] for e in daily["evidence"]] == [
        "2026-09-04T16:00:00.000Z", "2026-09-05T16:00:00.000Z", "2026-09-06T16:00:00.000Z"]
    assert three["measured"] == 0 and three["met"] is True        # 11-04..06 had the 11-04 beat
    ratio = objective(report, "detected")
    assert ratio["measured"] == pytest.approx(0.999) and ratio["met"] is True


def test_several_checks_are_down_while_any_is_and_vantages_only_when_all_are(judge):
    fail_c = minutes(*SEP, fail=[(at("2026-09-02 10:00"), at("2026-09-02 10:10"))])
    fail_d = minutes(*SEP, check="d", fail=[(at("2026-09-02 10:05"), at("2026-09-02 10:20"))])
    # Vantage v2 of c sees c's outage too, and one of its own that v1 does not: c is up then.
    other_vantage = minutes(*SEP, vantage="v2", fail=[(at("2026-09-02 10:00"), at("2026-09-02 10:10")),
                                                      (at("2026-09-03 10:00"), at("2026-09-03 10:30"))])
    report = judge("""
[[objective]]
id = "service"
kind = "downtime"
checks = ["c", "d"]
op = "<"
limit = "44m"
""", fail_c + fail_d + other_vantage)
    o = objective(report, "service")
    assert o["measured"] == 20 * 60                       # 10:00–10:20, overlaps once
    assert {(x["check"], x["vantage"]) for x in o["outages"]} == {("p/c", "v1"), ("p/c", "v2"), ("p/d", "v1")}


def test_table_and_markdown_show_every_objective(judge):
    records = outage_records(SEP, at("2026-09-10 03:00"), timedelta(minutes=50))
    status, table = judge(DOWNTIME_AND_AVAILABILITY, records, fmt="table")
    assert status == 1 and "MISSED" in table and "ratio-strict" in table
    status, markdown = judge(DOWNTIME_AND_AVAILABILITY, [], fmt="markdown")
    assert markdown.startswith("# p · 2026-09") and "| minutes | – | downtime | 50m |" in markdown
    assert "## Outages" in markdown


def test_report_usage_errors_are_one_line(tmp_path, capsys):
    profile = tmp_path / "p.toml"
    profile.write_text(HEAD + DOWNTIME_AND_AVAILABILITY)
    assert main(["report", str(profile), "--month", "2026-13"]) == 2
    assert "--month: expected a month like 2026-10, got '2026-13'" in capsys.readouterr().err
    assert main(["report", str(profile), "--objective", "nope", "--store", f"sqlite:{tmp_path}/s"]) == 2
    assert 'no objective "nope"' in capsys.readouterr().err


def test_report_schema_is_valid_and_describes_the_json(capsysbinary, judge):
    from jsonschema import Draft202012Validator
    assert main(["schema", "report"]) == 0
    schema = json.loads(capsysbinary.readouterr().out)
    Draft202012Validator.check_schema(schema)
    report = judge(DOWNTIME_AND_AVAILABILITY, outage_records(SEP, at("2026-09-10 03:00"), timedelta(minutes=50)))
    Draft202012Validator(schema).validate(report)
    fields = set(schema["$defs"]["ObjectiveReport"]["required"])
    assert {"id", "clause", "kind", "check", "measured", "op", "target", "met", "downtime_s", "excluded_s",
            "unknown_s", "coverage", "outages", "remedy"} <= fields


@pytest.mark.parametrize("tail, message", [
    ('[[objective]]\nid = "x"\nkind = "availability"\ncheck = "c"\nop = ">="\n',
     'objective "x": key "target": required key is missing'),
    ('[[objective]]\nid = "x"\nkind = "availability"\ncheck = "c"\nop = ">="\ntarget = 99.9\n',
     'expected a ratio from 0 to 1 (99.9 % is 0.999), got 99.9'),
    ('[[objective]]\nid = "x"\nkind = "uptime"\ncheck = "c"\n', 'unknown objective kind "uptime"'),
    ('[[objective]]\nid = "x"\nkind = "downtime"\ncheck = "c"\nop = "<"\nlimit = "44m"\nexclude = ["weather"]\n',
     'key "exclude'),
    ('[[objective]]\nid = "x"\nkind = "heartbeat"\ncheck = "c"\nevery = "36h"\n', 'expected whole days'),
    ('[[maintenance]]\nstart = 2026-09-01T00:00:00+08:00\nend = 2026-09-01T01:00:00+08:00\nevery = "day"\n',
     'expected "week" or "month"'),
])
def test_bad_objectives_are_one_line_profile_errors(tmp_path, capsys, tail, message):
    profile = tmp_path / "p.toml"
    profile.write_text(HEAD + tail)
    assert main(["check", str(profile)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_no_evidence_is_unknown_not_met(judge):
    report = judge(DOWNTIME_AND_AVAILABILITY + LATENCY.replace('id = "mean"', 'id = "mean2"').replace(
        'id = "each"', 'id = "each2"'), [])
    for o in report["objectives"]:
        assert o["met"] is None, o["id"]
    assert objective(report, "minutes")["coverage"] == 0 and objective(report, "mean2")["coverage"] is None
    assert report["met"] is None
