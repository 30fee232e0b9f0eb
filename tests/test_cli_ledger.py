"""``probe push``, ``probe exclude`` and ``probe incident``: evidence people add after the fact."""

from __future__ import annotations

import json

import pytest

from probecore._cli import _open, build_parser, main
from probecore._incidents import replay
from probecore._plugins import make_plugin_manager
from probecore._runner import default_vantage
from tests.conftest import assert_valid_records
from tests.test_incidents import records_of

PROFILE = """
[profile]
name = "p"
timezone = "Asia/Shanghai"
[[check]]
id = "backup"
probe = "push"
interval = "1d"
confirm = 2
unit = "s"
target = "nightly backup"
labels = { team = "ops" }
[[check]]
id = "c"
probe = "tcp"
host = "127.0.0.1"
port = 9
"""

INCIDENT = "p/c@v1@2026-11-01T00:05:00.000Z"
"""The incident ``stored_incident`` writes: p/c fails from 00:05 UTC (records_of's minute 5)."""


@pytest.fixture
def profile(tmp_path) -> str:
    path = tmp_path / "p.toml"
    path.write_text(PROFILE)
    return str(path)


@pytest.fixture
def store(tmp_path) -> list[str]:
    return ["--store", f"sqlite:{tmp_path / 's.sqlite3'}"]


@pytest.fixture(autouse=True)
def _wide_tables(monkeypatch) -> None:
    """Tables one row per line, so that tests can read them."""
    monkeypatch.setenv("COLUMNS", "250")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def assert_usage_error(status: int, out: str, err: str, message: str) -> None:
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("probe: error: "), err
    assert "Traceback" not in err
    assert message in err, err


def stored_records(capsys, profile: str, store: list[str], *extra: str) -> list[dict]:
    status, out, _ = run_cli(capsys, "records", profile, *store, *extra)
    assert status == 0
    return assert_valid_records(out.splitlines())


def stored_events(capsys, profile: str, store: list[str]) -> list[dict]:
    status, out, _ = run_cli(capsys, "records", profile, "--events", *store)
    assert status == 0
    return [json.loads(line) for line in out.splitlines()]


def exclusions(capsys, profile: str, store: list[str]) -> list[dict]:
    status, out, _ = run_cli(capsys, "exclude", "list", profile, "--format", "json", *store)
    assert status == 0
    return [json.loads(line) for line in out.splitlines()]


def stored_incident(store: list[str]) -> None:
    """Store records and the incident events of p/c (ok, 3 provider failures, ok) directly."""
    records = records_of(["ok", "provider", "provider", "provider", "ok"], check="p/c")
    host = make_plugin_manager()
    db = _open(store[1], "p", host)
    try:
        db.write(records, replay(records, confirm=2))
    finally:
        db.close()


# ---- probe push --------------------------------------------------------------------------------

def test_push_ok_is_stored_as_a_record_of_the_push_check(capsys, profile, store):
    status, out, err = run_cli(capsys, "push", profile, "backup", "--outcome", "ok", "--value", "42.5",
                               "--at", "2026-11-01T08:00:00", *store)
    assert status == 0 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("p/backup: stored ok 42.5 s at 2026-11-01T00:00:00.000Z from ")
    [record] = stored_records(capsys, profile, store)
    # The naive --at is in the profile's time zone (Asia/Shanghai, UTC+8).
    assert record == {
        "schema": "probecore.sli/1", "check": "p/backup", "probe": "push", "target": "nightly backup",
        "vantage": default_vantage(), "scheduled_at": "2026-11-01T00:00:00.000Z",
        "started_at": "2026-11-01T00:00:00.000Z", "duration_s": 0.0, "outcome": "ok", "value": 42.5,
        "unit": "s", "phases": {}, "failure": None, "details": {}, "labels": {"team": "ops"}}


def test_push_fail_defaults_and_overrides(capsys, profile, store):
    status, _, err = run_cli(capsys, "push", profile, "backup", "--outcome", "fail",
                             "--at", "2026-11-01T00:00:00Z", "--vantage", "cron", *store)
    assert status == 0 and "stored fail (pushed_failure, provider)" in err
    status, _, err = run_cli(capsys, "push", profile, "backup", "--outcome", "fail", "--at", "2026-11-02T00:00:00Z",
                             "--vantage", "cron", "--code", "backup_missing", "--attribution", "customer",
                             "--message", "no archive in the bucket", *store)
    assert status == 0 and "stored fail (backup_missing, customer)" in err
    first, second = stored_records(capsys, profile, store)
    assert first["vantage"] == second["vantage"] == "cron"
    assert first["outcome"] == second["outcome"] == "fail"
    assert first["failure"] == {"code": "pushed_failure", "attribution": "provider",
                                "message": "reported by probe push"}
    assert second["failure"] == {"code": "backup_missing", "attribution": "customer",
                                 "message": "no archive in the bucket"}
    assert second["value"] is None


def test_push_at_the_same_instant_again_changes_nothing(capsys, profile, store):
    argv = ["push", profile, "backup", "--outcome", "ok", "--at", "2026-11-01T00:00:00Z", "--vantage", "cron", *store]
    assert run_cli(capsys, *argv)[0] == 0
    status, _, err = run_cli(capsys, *argv)
    assert status == 0
    assert "p/backup: ok at 2026-11-01T00:00:00.000Z from cron already stored" in err
    assert "nothing changed" in err
    # The same instant with the other outcome is refused: a stored record is never replaced.
    status, out, err = run_cli(capsys, "push", profile, "backup", "--outcome", "fail", "--at", "2026-11-01T00:00:00Z",
                               "--vantage", "cron", *store)
    assert_usage_error(status, out, err, "already stored with outcome ok; a stored record is never replaced")
    assert [r["outcome"] for r in stored_records(capsys, profile, store)] == ["ok"]
    # Another vantage at the same instant is another record.
    status, _, _ = run_cli(capsys, "push", profile, "backup", "--outcome", "fail", "--at", "2026-11-01T00:00:00Z",
                           "--vantage", "other", *store)
    assert status == 0
    assert sorted(r["vantage"] for r in stored_records(capsys, profile, store)) == ["cron", "other"]


def test_pushed_failures_confirm_and_resolve_an_incident(capsys, profile, store):
    for day, outcome in ((1, "ok"), (2, "fail"), (3, "fail"), (4, "ok")):
        status, _, err = run_cli(capsys, "push", profile, "backup", "--outcome", outcome,
                                 "--at", f"2026-11-0{day}T00:00:00Z", "--vantage", "cron", *store)
        assert status == 0, err
    events = stored_events(capsys, profile, store)
    assert [e["kind"] for e in events] == ["suspected", "confirmed", "resolved"]
    incident = "p/backup@cron@2026-11-02T00:00:00.000Z"
    assert {e["incident_id"] for e in events} == {incident}
    assert events[1]["incident_started_at"] == "2026-11-02T00:00:00.000Z"
    status, out, _ = run_cli(capsys, "incident", "list", profile, "--format", "json", *store)
    assert status == 0
    assert [json.loads(line) for line in out.splitlines()] == [{
        "incident": incident, "check": "p/backup", "vantage": "cron", "started_at": "2026-11-02T00:00:00.000Z",
        "confirmed_at": "2026-11-03T00:00:00.000Z", "ended_at": "2026-11-04T00:00:00.000Z", "ended": "resolved",
        "reported_at": None}]


def test_a_backdated_push_leaves_the_events_to_the_replay(capsys, profile, store):
    run_cli(capsys, "push", profile, "backup", "--outcome", "ok", "--at", "2026-11-05T00:00:00Z", "--vantage", "cron",
            *store)
    status, _, _ = run_cli(capsys, "push", profile, "backup", "--outcome", "fail", "--at", "2026-11-01T00:00:00Z",
                           "--vantage", "cron", *store)
    assert status == 0
    assert [r["outcome"] for r in stored_records(capsys, profile, store)] == ["fail", "ok"]
    assert stored_events(capsys, profile, store) == []  # not a "suspected" incident that never ends


@pytest.mark.parametrize(("argv", "message"), [
    (["c", "--outcome", "ok"], 'probe push: check "c" has probe = "tcp", which \'probe run\' measures; '
                               'only a passive check (probe = "push") takes pushed records'),
    (["nope", "--outcome", "ok"], 'no check "nope"; checks: backup, c'),
    (["backup"], "probe push: the following arguments are required: --outcome"),
    (["backup", "--outcome", "maybe"], "probe push: argument --outcome: invalid choice: 'maybe'"),
    (["backup", "--outcome", "ok", "--code", "x"], "probe push: --code only go with --outcome fail"),
    (["backup", "--outcome", "ok", "--at", "yesterday"], "probe push: --at: expected a date-time like"),
    (["backup", "--outcome", "ok", "--at", "2999-01-01"], "probe push: --at 2998-12-31T16:00:00.000Z is in the future"),
    (["backup", "--outcome", "ok", "--value", "nan"], "probe push: argument --value: expected a finite number"),
    (["backup", "--outcome", "fail", "--code", "two words"], "probe push: --code: expected a machine name"),
    (["backup", "--outcome", "fail", "--attribution", "nobody"], "argument --attribution: invalid choice: 'nobody'"),
])
def test_push_usage_errors_store_nothing(capsys, profile, store, argv, message):
    status, out, err = run_cli(capsys, "push", profile, *argv, *store)
    assert_usage_error(status, out, err, message)
    assert stored_records(capsys, profile, store) == []


# ---- probe exclude -----------------------------------------------------------------------------

def test_exclude_add_list_withdraw_round_trip(capsys, profile, store):
    status, out, err = run_cli(capsys, "exclude", "add", profile, "--check", "c", "--from", "2026-11-01T08:00:00",
                               "--to", "2026-11-01T10:00:00", "--reason", "force_majeure", "--note", "typhoon",
                               "--by", "alice", *store)
    assert status == 0
    assert out == "1\n"
    assert err.startswith("exclusion 1 stored: p/c from 2026-11-01T00:00:00.000Z to 2026-11-01T02:00:00.000Z "
                          "(force_majeure) by alice\n")
    # This profile has no objectives: the exclusion is kept, with a warning that it does nothing.
    assert "probe: warning: no objective of p judging c lists 'force_majeure' in its exclude: " \
           "exclusion 1 applies to nothing" in err
    status, out, _ = run_cli(capsys, "exclude", "add", profile, "--from", "2026-11-02T00:00:00Z",
                             "--to", "2026-11-02T01:00:00Z", "--reason", "customer", "--note", "their firewall",
                             "--by", "bob", *store)
    assert status == 0 and out == "2\n"
    first, second = exclusions(capsys, profile, store)
    assert first["id"] == 1 and first["kind"] == "exclusion" and first["profile"] == "p"
    assert (first["check"], first["start"], first["end"]) == ("p/c", "2026-11-01T00:00:00.000Z",
                                                              "2026-11-01T02:00:00.000Z")
    assert (first["reason"], first["note"], first["author"]) == ("force_majeure", "typhoon", "alice")
    assert first["created_at"].endswith("Z") and first["withdrawn_at"] is None
    assert second["check"] is None  # every check of the profile
    assert second["reason"] == "customer" and second["author"] == "bob"

    status, out, err = run_cli(capsys, "exclude", "withdraw", profile, "1", "--note", "entered by mistake",
                               "--by", "carol", *store)
    assert status == 0 and err.startswith("exclusion 1 withdrawn by carol at ")
    first, second = exclusions(capsys, profile, store)  # still listed
    assert first["withdrawn_by"] == "carol" and first["withdrawn_note"] == "entered by mistake"
    assert first["withdrawn_at"] is not None
    assert first["note"] == "typhoon" and first["author"] == "alice"  # nothing else changed
    assert second["withdrawn_at"] is None

    status, out, _ = run_cli(capsys, "exclude", "list", profile, *store)
    assert status == 0
    assert "2 exclusions of p" in out
    assert "withdrawn" in out and "active" in out
    assert "1 active, 1 withdrawn" in out
    assert "exclusion 1 withdrawn at " in out and "by carol: entered by mistake" in out

    status, out, err = run_cli(capsys, "exclude", "withdraw", profile, "1", "--note", "again", *store)
    assert_usage_error(status, out, err, "probe exclude withdraw: exclusion 1 was already withdrawn at ")
    assert exclusions(capsys, profile, store)[0]["withdrawn_by"] == "carol"


def test_exclude_author_defaults_to_the_user(capsys, profile, store, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "dave")
    status, _, _ = run_cli(capsys, "exclude", "add", profile, "--from", "2026-11-01", "--to", "2026-11-02",
                           "--reason", "maintenance", "--note", "unannounced upgrade", *store)
    assert status == 0
    [item] = exclusions(capsys, profile, store)
    assert item["author"] == "dave"
    assert (item["start"], item["end"]) == ("2026-10-31T16:00:00.000Z", "2026-11-01T16:00:00.000Z")


def test_withdraw_refuses_what_is_not_an_exclusion_of_the_profile(capsys, profile, store):
    stored_incident(store)
    status, out, _ = run_cli(capsys, "incident", "report", profile, INCIDENT, "--at", "2026-11-01T01:00:00Z",
                             "--by", "alice", *store)
    assert status == 0 and out == "1\n"  # annotation 1 is an incident report, not an exclusion
    for annotation_id in ("1", "7"):
        status, out, err = run_cli(capsys, "exclude", "withdraw", profile, annotation_id, "--note", "x", *store)
        assert_usage_error(status, out, err, f"probe exclude withdraw: {annotation_id} is not an exclusion of "
                           f"profile p; 'probe exclude list {profile}' lists them")
    status, out, err = run_cli(capsys, "exclude", "withdraw", profile, "one", "--note", "x", *store)
    assert_usage_error(status, out, err, "argument ID: expected an id like 3")


@pytest.mark.parametrize(("argv", "message"), [
    (["--from", "2026-11-01", "--to", "2026-11-02", "--reason", "weather", "--note", "rain"],
     "probe exclude add: argument --reason: invalid choice: 'weather' (choose from 'force_majeure', "
     "'customer', 'third_party', 'maintenance')"),
    (["--from", "2026-11-02", "--to", "2026-11-01", "--reason", "customer", "--note", "x"],
     "probe exclude add: --to (2026-10-31T16:00:00.000Z) must be after --from (2026-11-01T16:00:00.000Z)"),
    (["--from", "2026-11-02", "--to", "2026-11-02", "--reason", "customer", "--note", "x"],
     "probe exclude add: --to (2026-11-01T16:00:00.000Z) must be after --from"),
    (["--from", "2026-11-01", "--to", "2026-11-02", "--reason", "customer"],
     "probe exclude add: the following arguments are required: --note"),
    (["--from", "2026-11-01", "--to", "2026-11-02", "--reason", "customer", "--note", "  "],
     "probe exclude add: --note must not be empty: say why this time is excluded"),
    (["--check", "nope", "--from", "2026-11-01", "--to", "2026-11-02", "--reason", "customer", "--note", "x"],
     'no check "nope"; checks: backup, c'),
    (["--to", "2026-11-02", "--reason", "customer", "--note", "x"],
     "probe exclude add: the following arguments are required: --from"),
    (["--from", "soon", "--to", "2026-11-02", "--reason", "customer", "--note", "x"],
     "probe exclude add: --from: expected a date-time like"),
])
def test_exclude_add_usage_errors_store_nothing(capsys, profile, store, argv, message):
    status, out, err = run_cli(capsys, "exclude", "add", profile, *argv, *store)
    assert_usage_error(status, out, err, message)
    assert exclusions(capsys, profile, store) == []


def test_exclude_needs_an_action(capsys, profile):
    status, out, err = run_cli(capsys, "exclude")
    assert_usage_error(status, out, err, "probe exclude: the following arguments are required: ACTION")


# ---- probe incident ----------------------------------------------------------------------------

def test_incident_report_on_a_stored_incident(capsys, profile, store):
    stored_incident(store)
    status, out, err = run_cli(capsys, "incident", "report", profile, INCIDENT, "--at", "2026-11-01T09:00:00",
                               "--note", "ticket 4711", "--by", "alice", *store)
    assert status == 0 and out == "1\n"
    assert err.startswith(f"incident {INCIDENT} reported at 2026-11-01T01:00:00.000Z")
    db = _open(store[1], "p", make_plugin_manager())
    try:
        [report] = db.annotations("p", "incident_report")
    finally:
        db.close()
    assert (report.kind, report.profile, report.check, report.incident) == ("incident_report", "p", "p/c", INCIDENT)
    assert (report.start, report.note, report.author) == ("2026-11-01T01:00:00.000Z", "ticket 4711", "alice")
    status, out, _ = run_cli(capsys, "incident", "list", profile, "--format", "json", *store)
    [row] = [json.loads(line) for line in out.splitlines()]
    assert row == {"incident": INCIDENT, "check": "p/c", "vantage": "v1", "started_at": "2026-11-01T00:05:00.000Z",
                   "confirmed_at": "2026-11-01T00:10:00.000Z", "ended_at": "2026-11-01T00:20:00.000Z",
                   "ended": "resolved", "reported_at": "2026-11-01T01:00:00.000Z"}
    status, out, _ = run_cli(capsys, "incident", "list", profile, *store)
    assert status == 0
    assert "1 incidents of p" in out
    [line] = [line for line in out.splitlines() if INCIDENT in line]
    assert [cell.strip() for cell in line.split("│")[2:7]] == [
        "p/c", "2026-11-01T00:05:00.000Z", "2026-11-01T00:10:00.000Z", "2026-11-01T00:20:00.000Z",
        "2026-11-01T01:00:00.000Z"]


@pytest.mark.parametrize(("argv", "message"), [
    (["p/c@v1@2026-11-01T00:00:00.000Z"], "probe incident report: no incident 'p/c@v1@2026-11-01T00:00:00.000Z' "
                                          "in the records of profile p; 'probe incident list {profile}' "
                                          "lists them (the ids 'probe report' prints)"),
    ([INCIDENT, "--at", "2026-11-01T00:00:00Z"],
     "probe incident report: --at 2026-11-01T00:00:00.000Z is before the incident began (2026-11-01T00:05:00.000Z)"),
    ([INCIDENT, "--at", "later"], "probe incident report: --at: expected a date-time like"),
    ([], "probe incident report: the following arguments are required: INCIDENT"),
])
def test_incident_report_usage_errors_store_nothing(capsys, profile, store, argv, message):
    stored_incident(store)
    status, out, err = run_cli(capsys, "incident", "report", profile, *argv, *store)
    assert_usage_error(status, out, err, message.format(profile=profile))
    status, out, _ = run_cli(capsys, "incident", "list", profile, "--format", "json", *store)
    assert [json.loads(line)["reported_at"] for line in out.splitlines()] == [None]


def test_incident_report_needs_stored_events(capsys, profile, store):
    status, out, err = run_cli(capsys, "incident", "report", profile, INCIDENT, *store)
    assert_usage_error(status, out, err, f"no incident '{INCIDENT}' in the records of profile p")
    status, out, _ = run_cli(capsys, "incident", "list", profile, *store)
    assert status == 0 and "0 incidents of p" in out


def test_help_describes_the_ledger_commands(capsys):
    parser = build_parser()
    for argv, expected in ((["--help"], ("push", "exclude", "incident")),
                           (["push", "--help"], ("--outcome", "probe = \"push\"", "RFC 3339")),
                           (["exclude", "add", "--help"], ("--reason", "force_majeure", "--note")),
                           (["incident", "report", "--help"], ("--at", "INCIDENT"))):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        for text in expected:
            assert text in out, (argv, text)
