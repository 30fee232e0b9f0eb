"""The vantage quorum: profile keys, and per-vantage records merged into the rounds the tracker sees."""

from __future__ import annotations

import pytest

from probecore import ProfileError, load_profile
from probecore._incidents import IncidentTracker
from probecore._quorum import VantageMerge, merge_vantages
from probecore._record import Failure, SLIRecord, format_timestamp_ms
from probecore.testing import make_host, write_profile
from tests.fakes import ScriptedPlugin

PROFILE = """\
[profile]
name = "q"
[[check]]
id = "site"
probe = "scripted"
interval = "60s"
timeout = "10s"
confirm = 2
vantages = ["bj", "sh", "gz"]
quorum = 2
"""


def load(tmp_path, text=PROFILE):
    return load_profile(write_profile(tmp_path, text), make_host(ScriptedPlugin()).probes)


@pytest.fixture
def check(tmp_path):
    return load(tmp_path).checks[0]


def rec(check, vantage, k, outcome="ok", *, attribution="provider", code="connect_refused", after_ms=0):
    slot = k * 60_000 + round(check.phase_offset * 1000)
    at = format_timestamp_ms(slot + after_ms)
    failure = Failure(code, attribution, "x") if outcome != "ok" else None
    return SLIRecord(check=check.full_id, probe="scripted", target="t", vantage=vantage,
                     scheduled_at=at, started_at=at, duration_s=0.1, outcome=outcome, failure=failure)


def test_profile_keys(tmp_path):
    check = load(tmp_path).checks[0]
    assert check.vantages == ("bj", "sh", "gz") and check.quorum == 2
    default = load(tmp_path, PROFILE.replace("quorum = 2\n", "")).checks[0]
    assert default.quorum == 3  # every named vantage
    inherited = load(tmp_path, '[profile]\nname = "q"\n[defaults]\nvantages = ["a", "b"]\nquorum = 1\n'
                     '[[check]]\nid = "x"\nprobe = "scripted"\n').checks[0]
    assert inherited.vantages == ("a", "b") and inherited.quorum == 1
    assert load(tmp_path, PROFILE.replace('vantages = ["bj", "sh", "gz"]\nquorum = 2\n', "")).checks[0].vantages == ()


@pytest.mark.parametrize(("change", "message"), [
    (("quorum = 2", "quorum = 4"), 'check "site": key "quorum": 4 is more than the 3 vantages named '
                                   '(bj, sh, gz): no round could ever reach it'),
    (("quorum = 2", "quorum = 0"), 'check "site": key "quorum": expected a whole number of vantages of at least 1, got 0'),
    (("quorum = 2", 'quorum = "2"'), 'key "quorum": expected a whole number of vantages of at least 1, got "2"'),
    (('vantages = ["bj", "sh", "gz"]\n', ""), 'check "site": key "quorum": a quorum needs the vantages it counts'),
    (('["bj", "sh", "gz"]', '["bj", "bj"]'), 'check "site": key "vantages": the vantage "bj" is named twice'),
    (('["bj", "sh", "gz"]', "[]"), 'check "site": key "vantages": expected a non-empty list of vantage names'),
    (('["bj", "sh", "gz"]', '"bj"'), 'check "site": key "vantages": expected a non-empty list'),
    (('["bj", "sh", "gz"]', '["Bei Jing", "sh"]'), 'key "vantages": expected a non-empty list'),
    (('["bj", "sh", "gz"]', '["quorum", "sh"]'), 'key "vantages": "quorum" is reserved'),
])
def test_profile_errors_are_one_clear_line(tmp_path, change, message):
    with pytest.raises(ProfileError) as caught:
        load(tmp_path, PROFILE.replace(*change))
    text = str(caught.value)
    assert message in text and "\n" not in text and str(tmp_path) in text


def test_one_vantage_failing_is_the_probes_network(check):
    rounds = merge_vantages(check, [rec(check, "bj", 1, "fail"), rec(check, "sh", 1), rec(check, "gz", 1)])
    assert len(rounds) == 1
    merged = rounds[0]
    assert merged.vantage == "quorum" and merged.outcome == "fail"
    assert merged.failure.attribution == "probe" and merged.failure.code == "connect_refused"
    assert "below the quorum of 2" in merged.failure.message and "bj: connect_refused" in merged.failure.message
    assert merged.started_at == format_timestamp_ms(60_000 + round(check.phase_offset * 1000))


def test_quorum_failing_is_the_providers(check):
    merged = merge_vantages(check, [rec(check, "bj", 1, "fail"), rec(check, "sh", 1, "fail"),
                                    rec(check, "gz", 1)])[0]
    assert merged.outcome == "fail" and merged.failure.attribution == "provider"
    assert merged.details["probecore.vantages_failed"] == 2 and merged.details["probecore.quorum"] == 2


def test_errors_and_other_vantages_are_no_evidence(check):
    records = [rec(check, "bj", 1, "fail"), rec(check, "sh", 1, "error", attribution="probe"),
               rec(check, "laptop", 1, "fail")]
    merged = merge_vantages(check, records)[0]
    assert merged.failure.attribution == "probe"  # one judged vantage failing is below the quorum
    assert merged.details["probecore.vantages_missing"] == 1
    nothing = merge_vantages(check, [rec(check, "sh", 2, "error", attribution="probe")])[0]
    assert nothing.outcome == "error"


def test_a_retry_replaces_the_slots_attempt(check):
    records = [rec(check, "bj", 1, "fail"), rec(check, "bj", 1, "ok", after_ms=20_000),
               rec(check, "sh", 1, "fail"), rec(check, "gz", 1)]
    merged = merge_vantages(check, records)[0]
    assert merged.failure.attribution == "probe"  # bj's retry was ok: only sh failed
    assert merged.details["probecore.vantages_failed"] == 1


def test_tracker_confirms_only_quorum_rounds(check):
    """Two vantages cut off for three rounds each, but never the same two: no outage; two vantages
    failing in two consecutive rounds: one confirmed incident."""
    records = []
    for k, bad in enumerate(["bj", "bj", "sh", "gz"], start=1):
        records += [rec(check, v, k, "fail" if v == bad else "ok") for v in check.vantages]
    for k in (5, 6):
        records += [rec(check, v, k, "ok" if v == "gz" else "fail") for v in check.vantages]
    records += [rec(check, v, 7) for v in check.vantages]
    tracker = IncidentTracker(check.confirm)
    events = [e for r in merge_vantages(check, records) for e in tracker.feed(r)]
    assert [e.kind for e in events] == ["suspected", "confirmed", "resolved"]
    assert events[0].vantage == "quorum"
    assert events[0].incident_started_at == format_timestamp_ms(5 * 60_000 + round(check.phase_offset * 1000))


def test_live_rounds_wait_for_every_vantage_or_the_deadline(check):
    merge = VantageMerge(check, grace_ms=5_000)
    slot1 = 60_000 + round(check.phase_offset * 1000)
    merge.add(rec(check, "bj", 1, "fail"))
    merge.add(rec(check, "sh", 1))
    assert merge.ready(slot1 + 1_000) == []           # gz has not reported
    merge.add(rec(check, "gz", 1))
    # bj's failure may still be retried? retry_interval = interval: no retry fits, so it is final.
    [merged] = merge.ready(slot1 + 1_000)
    assert merged.failure.attribution == "probe"
    merge.add(rec(check, "bj", 2))
    assert merge.ready(slot1 + 60_000 + 1_000) == []
    late = slot1 + 60_000 + 60_000 + 10_000 + 5_000    # next slot + timeout + grace
    [partial] = merge.ready(late)
    assert partial.outcome == "ok" and partial.details["probecore.vantages_missing"] == 2
    assert merge.add(rec(check, "sh", 2)) is False    # late: the round was decided


def test_a_failure_that_may_be_retried_holds_the_round(tmp_path):
    check = load(tmp_path, PROFILE.replace("confirm = 2", 'confirm = 2\nretry_interval = "15s"')).checks[0]
    merge = VantageMerge(check)
    slot1 = 60_000 + round(check.phase_offset * 1000)
    for v in check.vantages:
        merge.add(rec(check, v, 1, "fail" if v == "bj" else "ok"))
    assert merge.ready(slot1 + 1_000) == []           # bj retries 15 s later
    merge.add(rec(check, "bj", 1, "ok", after_ms=15_000))
    assert merge.ready(slot1 + 16_000)[0].outcome == "ok"


def test_the_report_judges_the_merged_rounds(tmp_path):
    """probe report's evaluator sees the rounds the live judge sees: bj's lone failures are no
    downtime, the quorum's are, starting at the first quorum round."""
    from datetime import datetime, timezone

    from probecore._evaluation import Period, evaluate_profile
    from probecore.testing import MemoryStore

    text = PROFILE + (
        '[[objective]]\nid = "down"\nkind = "downtime"\ncheck = "site"\nop = "<"\nlimit = "1h"\n')
    host = make_host(ScriptedPlugin())
    profile = load_profile(write_profile(tmp_path, text), host.probes, host.evaluators)
    check = profile.checks[0]
    base = round(datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp() * 1000) // 60_000
    records = []
    for n in range(60):
        failing = {"bj"} if 5 <= n < 15 else {"bj", "sh"} if 20 <= n < 30 else set()
        records += [rec(check, v, base + n, "fail" if v in failing else "ok") for v in check.vantages]
    store = MemoryStore()
    store.import_records(records)
    report = evaluate_profile(profile, store, host.evaluators, Period.month(2026, 11, timezone.utc),
                              now=datetime(2026, 11, 1, 2, tzinfo=timezone.utc))
    [objective] = report.objectives
    assert objective.measured == 10 * 60                     # the ten quorum rounds, not bj's ten
    lone, outage = objective.outages    # bj's lone run: excluded time, the probe's network
    assert lone.attribution == "probe" and lone.down_s == 0 and lone.excluded == "probe"
    assert outage.vantage == "quorum" and outage.attribution == "provider" and outage.down_s == 600
    assert outage.start == format_timestamp_ms((base + 20) * 60_000 + round(check.phase_offset * 1000))


def test_incident_list_names_the_quorum_incidents(tmp_path, capsys):
    """probe incident list derives a check's incidents from its merged rounds, like the judge."""
    import json

    from probecore import encode_record
    from probecore._cli import main

    path = write_profile(tmp_path, PROFILE.replace('probe = "scripted"', 'probe = "tcp"\nhost = "127.0.0.1"\nport = 9'))
    check = load_profile(path, make_host().probes).checks[0]
    records = []
    for k, bad in enumerate([set(), {"bj"}, {"bj"}, {"bj"}, {"bj", "sh"}, {"bj", "sh"}, set()], start=100):
        records += [rec(check, v, k, "fail" if v in bad else "ok") for v in check.vantages]
    data = tmp_path / "r.jsonl"
    data.write_bytes(b"".join(encode_record(r) + b"\n" for r in records))
    store = f"sqlite:{tmp_path / 's.db'}"
    assert main(["records", "import", str(data), "--store", store]) == 0
    capsys.readouterr()
    assert main(["incident", "list", str(path), "--store", store, "--format", "json"]) == 0
    out = capsys.readouterr().out
    incidents = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(incidents) == 1 and "@quorum@" in json.dumps(incidents[0]), out
