"""Evaluation fidelity (issue 15), each item through the CLI: a month imported from exported
records and judged with the evidence people enter with ``probe incident report``, ``probe notice``
and ``probe exclude``; exclusions on every objective kind; remedies as the contracts write them;
explicit denominators; digits that never contradict a verdict; exclusions that apply to nothing."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from probecore import encode_record, format_timestamp, replay
from probecore._cli import main
from tests.test_evaluation import HEAD, SEP, at, minutes, objective, outage_records, record


@pytest.fixture(autouse=True)
def _wide_tables(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


class Month:
    """A profile and a store with a month of records brought in by ``probe records import``."""

    def __init__(self, tmp_path, capsys, tail: str, records):
        self.capsys = capsys
        self.profile = str(tmp_path / "p.toml")
        (tmp_path / "p.toml").write_text(HEAD + tail)
        self.store = ["--store", f"sqlite:{tmp_path / 's.sqlite3'}"]
        data = tmp_path / "month.jsonl"
        data.write_bytes(b"".join(encode_record(r) + b"\n" for r in records))
        self.records = records
        assert self.cli("records", "import", str(data))[0] == 0

    def cli(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        args = list(argv)
        if args[:2] != ["records", "import"]:
            args.insert(self._profile_at(args), self.profile)
        status = main([*args, *self.store])
        out, err = self.capsys.readouterr()
        return status, out, err

    @staticmethod
    def _profile_at(args: list[str]) -> int:
        # probe report PROFILE …; probe incident list PROFILE …; probe notice import PROFILE FILE
        return 1 if args[0] in ("report", "check") else 2

    def report(self, month: str = "2026-09") -> dict:
        status, out, err = self.cli("report", "--month", month, "--format", "json")
        report = json.loads(out)
        assert status == (0 if report["met"] else 1), err
        return report

    def table(self, month: str = "2026-09") -> str:
        return self.cli("report", "--month", month)[1]

    def incidents(self) -> list[dict]:
        status, out, err = self.cli("incident", "list", "--format", "json")
        assert status == 0, err
        return [json.loads(line) for line in out.splitlines()]


# ---- 1. imported months keep 002's evidence -------------------------------------------------------

COLO = """
[[objective]]
id = "002-N"
kind = "availability"
check = "c"
op = ">="
target = 0.999
report_within = "5d"
remedy = { kind = "waive_month" }
[[objective]]
id = "002-N-minutes"
clause = "002-N"
kind = "downtime"
check = "c"
op = "<"
limit = "44m"
report_within = "5d"
remedy = { kind = "waive_month" }
[[objective]]
id = "002-T"
kind = "notify_delay"
check = "c"
op = "<="
limit = "15m"
exclude = ["customer", "probe", "force_majeure"]
remedy = { kind = "fee_days" }
"""


def test_an_imported_month_has_its_incidents_and_takes_every_kind_of_evidence(tmp_path, capsys):
    first, second = at("2026-09-05 10:00"), at("2026-09-20 03:00")
    records = minutes(*SEP, fail=[(first, first + timedelta(minutes=44)), (second, second + timedelta(minutes=3))])
    month = Month(tmp_path, capsys, COLO, records)
    # The incidents exist for records no tracker saw, with the ids the live tracker gives.
    incidents = month.incidents()
    live = {e.incident_id for e in replay(records, confirm=2)}
    assert {i["incident"] for i in incidents} == live
    outage = f"p/c@v1@{format_timestamp(first)}"
    assert [i["incident"] for i in incidents][0] == outage and incidents[0]["confirmed_at"] is not None
    # Nobody reported the 44-minute outage within 5 days: excluded, so 002-N reads met …
    report = month.report()
    o = objective(report, "002-N-minutes")
    assert [x["incident"] for x in o["outages"]][0] == outage    # the id the report prints
    assert o["met"] is True and o["outages"][0]["excluded"] == "not_reported"
    # … until the customer's report (within 5 days) is entered from the command line.
    status, _, err = month.cli("incident", "report", outage, "--at", "2026-09-07T09:00:00", "--by", "customer")
    assert status == 0, err
    report = month.report()
    assert objective(report, "002-N-minutes")["met"] is False and objective(report, "002-N")["met"] is False
    # Notices sent outside probecore: one entered, one imported; 002-T judges them.
    status, _, err = month.cli("notice", "add", "--incident", outage, "--at", "2026-09-05T10:10:00",
                               "--channel", "phone", "--to", "Ms Li (designated contact)", "--by", "noc")
    assert status == 0, err
    other = f"p/c@v1@{format_timestamp(second)}"
    lines = tmp_path / "notices.jsonl"
    lines.write_text(json.dumps({"incident": other, "at": "2026-09-20T03:30:00", "channel": "email",
                                 "to": "contact@customer.example", "note": "Message-ID <x@y>"}) + "\n")
    assert month.cli("notice", "import", str(lines), "--by", "noc")[0] == 0
    assert month.cli("notice", "import", str(lines), "--by", "noc")[2].startswith(f"{lines}: 0 notices")
    status, out, _ = month.cli("notice", "list", "--format", "json")
    assert [(n["incident"], n["channel"], n["to"]) for n in map(json.loads, out.splitlines())] == [
        (outage, "phone", "Ms Li (designated contact)"), (other, "email", "contact@customer.example")]
    t = objective(month.report(), "002-T")
    assert [(e["incident"], e["notice_delay_s"], e["met"]) for e in t["evidence"]] == [
        (outage, 9 * 60.0, True), (other, 29 * 60.0, False)]          # confirmed one minute in
    assert t["met"] is False and t["remedy"]["amount"] == pytest.approx(3100 / 30, abs=0.01)


def test_notice_and_report_refuse_what_the_records_do_not_show(tmp_path, capsys):
    month = Month(tmp_path, capsys, COLO, minutes(*SEP))
    status, out, err = month.cli("notice", "add", "--incident", "p/c@v1@2026-09-01T00:00:00.000Z", "--at",
                                 "2026-09-02", "--channel", "phone", "--to", "x")
    assert status == 2 and out == "" and err.count("\n") == 1
    assert "no incident 'p/c@v1@2026-09-01T00:00:00.000Z' in the records of profile p" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"incident": "a", "at": "2026-09-02", "channel": "x", "to": "y", "cc": 1}\n')
    status, _, err = month.cli("notice", "import", str(bad))
    assert status == 2 and f"{bad}: line 1: unknown key 'cc'" in err and "nothing was imported" in err
    assert month.cli("notice", "list", "--format", "json")[1] == ""


# ---- 2. every objective kind honours exclusions --------------------------------------------------

RESPONSE = """
[[objective]]
id = "001-R"
kind = "latency"
check = "c"
op = "<="
limit = "1.5s"
exclude = ["customer", "third_party", "probe"]
[[objective]]
id = "mean"
kind = "latency_stats"
check = "c"
stat = "max"
op = "<="
limit = "1.5s"
exclude = ["customer", "third_party", "probe"]
[[objective]]
id = "001-W"
kind = "availability"
check = "c"
op = ">="
target = 0.99
exclude = ["customer", "third_party", "probe"]
"""


def test_latency_objectives_leave_out_samples_an_exclusion_covers(tmp_path, capsys):
    attack = at("2026-09-12 20:30")
    records = [record(at("2026-09-12 00:00") + timedelta(minutes=i), value=0.2) for i in range(24 * 60)]
    records[20 * 60 + 30] = record(attack, value=1.501)          # inside the attack hour
    month = Month(tmp_path, capsys, RESPONSE, records)
    assert objective(month.report(), "001-R")["met"] is False   # before the exclusion: 1.501 > 1.5
    status, _, err = month.cli("exclude", "add", "--check", "c", "--from", "2026-09-12T20:00:00",
                               "--to", "2026-09-12T21:00:00", "--reason", "third_party",
                               "--note", "DDoS on the site (4.4.1), ticket 88", "--by", "noc")
    assert status == 0 and "it applies to 001-R, mean, 001-W" in err
    report = month.report()
    r = objective(report, "001-R")
    assert r["met"] is True and r["measured"] == 0.2 and r["excluded_samples"] == 60
    assert r["evidence"] == [{"check": "c", "at": format_timestamp(attack), "value": 1.501,
                              "excluded": "third_party"}]
    assert objective(report, "mean")["met"] is True and objective(report, "mean")["excluded_samples"] == 60
    [exclusion] = report["exclusions"]
    assert exclusion["applies_to"] == ["001-R", "mean", "001-W"] and not exclusion["withdrawn"]


SAMPLES = """
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
id = "detected"
kind = "success_ratio"
check = "d"
op = ">="
target = 0.999
"""


def test_heartbeats_and_success_ratios_honour_exclusions_too(tmp_path, capsys):
    backups = [record(at("2026-09-01 02:00") + timedelta(days=i), check="backup") for i in range(30) if i != 9]
    scans = minutes(*SEP, check="d", every=3600, fail=[(at("2026-09-10 00:00"), at("2026-09-10 05:00"))])
    month = Month(tmp_path, capsys, SAMPLES, backups + scans)
    report = month.report()
    assert objective(report, "daily")["measured"] == 1 and objective(report, "detected")["met"] is False
    assert month.cli("exclude", "add", "--from", "2026-09-10T00:00:00", "--to", "2026-09-10T06:00:00",
                     "--reason", "force_majeure", "--note", "typhoon", "--by", "noc")[0] == 0
    report = month.report()
    daily, detected = objective(report, "daily"), objective(report, "detected")
    assert daily["met"] is True and daily["excluded_samples"] == 1
    assert daily["evidence"] == [{"window_start": "2026-09-09T16:00:00.000Z", "excluded": "force_majeure"}]
    assert detected["met"] is True and detected["measured"] == 1.0 and detected["excluded_samples"] == 6   # 00:00 … 05:00


# ---- 3. remedies as written, and the total owed --------------------------------------------------

HOSTING = """
[[objective]]
id = "001-W"
kind = "availability"
check = "c"
op = ">="
target = 0.99
remedy = { kind = "fee_multiple", multiple = 2, of = "interrupted" }
[[objective]]
id = "whole"
kind = "availability"
check = "c"
op = ">="
target = 0.99
remedy = { kind = "fee_multiple", multiple = 2, of = "period" }
[[objective]]
id = "mail"
clause = "003-M"
kind = "availability"
check = "c"
op = ">="
target = 0.999
remedy = { kind = "service_time", multiple = 2 }
[[objective]]
id = "mail-minutes"
clause = "003-M"
kind = "downtime"
check = "c"
op = "<="
limit = "44m"
remedy = { kind = "service_time", multiple = 2 }
[[objective]]
id = "rent"
kind = "downtime"
check = "c"
op = "<"
limit = "44m"
remedy = { kind = "waive_month" }
[[objective]]
id = "rent-ratio"
kind = "availability"
check = "c"
op = ">="
target = 0.999
remedy = { kind = "waive_month" }
"""


def test_remedies_pro_rata_or_whole_period_and_the_total_owes_each_obligation_once(tmp_path, capsys):
    month = Month(tmp_path, capsys, HOSTING, outage_records(SEP, at("2026-09-10 03:00"), timedelta(minutes=600)))
    report = month.report()
    pro_rata = objective(report, "001-W")["remedy"]
    # 001 违约责任 1: twice the fee corresponding to the interruption: 2 × 3100 × 600 min / 30 days.
    assert pro_rata["of"] == "interrupted" and pro_rata["interrupted_s"] == 36000.0
    assert pro_rata["amount"] == round(2 * 3100 * 600 / (30 * 24 * 60), 2) == 86.11
    assert objective(report, "whole")["remedy"]["amount"] == 6200.0
    assert objective(report, "mail")["remedy"]["minutes"] == 1200.0
    owed = report["owed"]
    # 86.11 + 6200 + the month waived once (3100); 003-M's two objectives credit 1200 min once.
    assert owed["amounts"] == {"CNY": pytest.approx(9386.11)} and owed["minutes"] == 1200.0
    skipped = {i["objective"]: i["why"] for i in owed["items"] if not i["counted"]}
    assert set(skipped) == {"mail-minutes", "rent-ratio"} and "waived once" in skipped["rent-ratio"]
    assert "owed for 2026-09: 9386.11 CNY + 1200 min of service" in month.table()


@pytest.mark.parametrize("remedy, message", [
    ('{ kind = "fee_multiple", days = 2 }', 'key "days" does not apply to kind "fee_multiple" (it takes only '
                                            "multiple, of)"),
    ('{ kind = "waive_month", of = "period" }', 'key "of" does not apply to kind "waive_month" (it takes no other key)'),
    ('{ kind = "fee_multiple", of = "month" }', 'key "remedy.of"'),
    ('{ kind = "fee_multiple", multiple = 0 }', "multiple: expected a number above 0"),
])
def test_unknown_or_misplaced_remedy_keys_are_one_line_profile_errors(tmp_path, capsys, remedy, message):
    (tmp_path / "p.toml").write_text(HEAD + f'[[objective]]\nid = "x"\nkind = "downtime"\ncheck = "c"\nop = "<"\n'
                                            f'limit = "44m"\nremedy = {remedy}\n')
    assert main(["check", str(tmp_path / "p.toml")]) == 2
    err = capsys.readouterr().err
    assert 'objective "x"' in err and message in err and err.count("\n") == 1, err


# ---- 4. denominators ----------------------------------------------------------------------------

DENOMINATORS = """
[[objective]]
id = "month"
kind = "availability"
check = "c"
op = ">="
target = 0.999
[[objective]]
id = "evidence"
kind = "availability"
check = "c"
op = ">="
target = 0.999
denominator = "evidence"
[[objective]]
id = "30d"
kind = "availability"
check = "c"
op = ">="
target = 0.999
month_length = "30d"
"""


def test_the_denominator_is_the_whole_month_unless_the_objective_says_evidence(tmp_path, capsys):
    oct_ = (at("2026-10-01 00:00"), at("2026-11-01 00:00"))
    blind = (at("2026-10-20 00:00"), at("2026-10-25 00:00"))         # five days without records
    records = [r for r in outage_records(oct_, at("2026-10-05 10:00"), timedelta(minutes=43))
               if not blind[0] <= datetime_of(r) < blind[1]]
    month = Month(tmp_path, capsys, DENOMINATORS, records)
    report = month.report("2026-10")
    whole, evidence, fixed = (objective(report, k) for k in ("month", "evidence", "30d"))
    unknown = whole["unknown_s"]
    assert unknown == 5 * 86400 - 60                               # the 23:59 record holds to 00:01
    assert whole["denominator"] == "period" and whole["denominator_s"] == 31 * 86400
    assert whole["measured"] == pytest.approx(1 - 43 * 60 / (31 * 86400))
    assert whole["met"] is True and "without evidence is in the denominator" in whole["note"]
    assert evidence["denominator_s"] == 31 * 86400 - unknown
    assert evidence["measured"] == pytest.approx(1 - 43 * 60 / (31 * 86400 - unknown))
    assert evidence["met"] is False                                # 43 min of ~26 days > 0.1 %
    assert fixed["denominator_s"] == 30 * 86400 and fixed["met"] is True   # 43 < 43.2 min
    assert whole["coverage"] == pytest.approx(1 - unknown / (31 * 86400), abs=1e-6)
    [row] = [line for line in month.table("2026-10").splitlines() if "│ month" in line and "availability" in line]
    assert "(÷ period)" in row and "83.9%" in row


def datetime_of(r):
    from probecore import parse_timestamp
    return parse_timestamp(r.started_at)


# ---- 6. digits that never contradict the verdict ----------------------------------------------

def test_the_table_shows_the_digits_that_decide_the_verdict(tmp_path, capsys):
    month = Month(tmp_path, capsys, DENOMINATORS.split("[[objective]]\nid = \"evidence\"")[0],
                  outage_records(SEP, at("2026-09-10 03:00"), timedelta(minutes=44)))
    o = objective(month.report(), "month")
    assert o["measured"] == pytest.approx(0.998981, abs=1e-6) and o["met"] is False
    [row] = [line for line in month.table().splitlines() if "│ month" in line and "availability" in line]
    cells = [c.strip() for c in row.split("│")]
    measured, op, target, verdict = cells[4:8]
    assert (op, target, verdict) == (">=", "99.9%", "MISSED")
    assert measured == "99.898%"                                  # not "99.9%": that would read as met


# ---- 7. an exclusion no objective lists --------------------------------------------------------

def test_an_exclusion_whose_reason_no_objective_lists_is_warned_and_applies_to_nothing(tmp_path, capsys):
    month = Month(tmp_path, capsys, RESPONSE, minutes(*SEP, every=3600))
    status, out, err = month.cli("exclude", "add", "--from", "2026-09-03", "--to", "2026-09-04",
                                 "--reason", "maintenance", "--note", "router swap", "--by", "noc")
    assert status == 0 and out == "1\n"                           # kept: evidence is never refused
    assert "probe: warning: no objective of p lists 'maintenance' in its exclude: exclusion 1 applies to nothing" \
        in err
    report = month.report()
    assert [e["applies_to"] for e in report["exclusions"]] == [[]]
    assert "maintenance [applies to nothing]" in month.table()
