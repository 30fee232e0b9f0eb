"""The ``probe`` command line: schema, plugins, records export and import, usage errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from probecore import encode_record
from probecore._cli import main
from tests.conftest import assert_valid_records, sli_validator
from tests.test_incidents import make_record, records_of

PROFILE = """
[profile]
name = "p"
timezone = "Asia/Shanghai"
[[check]]
id = "c"
probe = "tcp"
host = "127.0.0.1"
port = 9
[[check]]
id = "d"
probe = "tcp"
host = "127.0.0.1"
port = 10
"""


def run_cli(capsysbinary, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsysbinary.readouterr()
    return status, out.decode(), err.decode()


def write_jsonl(path, records) -> str:
    path.write_bytes(b"".join(encode_record(r) + b"\n" for r in records))
    return str(path)


def test_schema_sli_is_the_generated_schema(capsysbinary):
    status, out, _ = run_cli(capsysbinary, "schema", "sli")
    assert status == 0
    schema = json.loads(out)
    assert schema["title"] == "probecore.sli/1"
    sli_validator()  # the schema itself is valid draft 2020-12
    record = schema["$defs"]["SLIRecord"]
    assert set(record["required"]) == {"check", "probe", "target", "vantage", "scheduled_at",
                                       "started_at", "duration_s", "outcome"}
    assert record["properties"]["outcome"]["enum"] == ["error", "fail", "ok"]
    assert schema["$defs"]["Failure"]["properties"]["attribution"]["enum"] == [
        "customer", "probe", "provider", "third_party", "unknown"]


def test_plugins_json_lists_builtins_with_their_hooks(capsysbinary):
    status, out, _ = run_cli(capsysbinary, "plugins", "--json")
    assert status == 0
    listed = {p["name"]: p for p in json.loads(out)}
    assert listed["probecore_plugins.tcp"]["hooks"] == ["probecore_add_probes"]
    assert listed["probecore_plugins.sqlite"]["hooks"] == ["probecore_add_stores"]
    assert listed["probecore_plugins.tcp"]["adds"] == {"probe kinds": ["tcp"]}
    assert listed["probecore_plugins.sqlite"]["adds"] == {"stores": ["sqlite"]}
    assert all(p["builtin"] for p in listed.values() if p["name"].startswith("probecore_plugins."))


def test_blocking_a_builtin_removes_its_probe_kind(capsysbinary, tmp_path):
    (tmp_path / "p.toml").write_text(PROFILE)
    status, _, err = run_cli(capsysbinary, "--no-plugin", "probecore_plugins.tcp", "check", str(tmp_path / "p.toml"))
    assert status == 2
    assert err.startswith(f'probe: error: {tmp_path / "p.toml"}: check "c": key "probe": unknown probe kind "tcp"')
    assert "tcp" not in err.split("installed:")[1]


def test_import_then_export_round_trips(capsysbinary, tmp_path):
    (tmp_path / "p.toml").write_text(PROFILE)
    records = [make_record("p/c", i, "ok") for i in range(3)] + [make_record("p/d", i, "provider") for i in range(2)]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    status, _, err = run_cli(capsysbinary, "records", "import", source)
    assert status == 0
    assert err.startswith(f"{source}: 5 records imported into sqlite:")
    status, _, err = run_cli(capsysbinary, "records", "import", source)
    assert "0 records imported" in err and "5 already there" in err
    status, out, _ = run_cli(capsysbinary, "records", str(tmp_path / "p.toml"))
    assert status == 0
    lines = out.splitlines()
    assert_valid_records(lines)
    assert sorted(lines) == sorted(encode_record(r).decode() for r in records)
    status, out, _ = run_cli(capsysbinary, "records", str(tmp_path / "p.toml"), "--check", "d")
    assert [json.loads(x)["check"] for x in out.splitlines()] == ["p/d", "p/d"]
    # A naive --since is in the profile's time zone (Asia/Shanghai, UTC+8): 08:05 there is
    # 00:05 UTC, after the first record (00:00) and at the second (00:05).
    status, out, _ = run_cli(capsysbinary, "records", str(tmp_path / "p.toml"), "--check", "c",
                             "--since", "2026-11-01T08:05:00")
    assert [json.loads(x)["started_at"] for x in out.splitlines()] == [
        "2026-11-01T00:05:00.000Z", "2026-11-01T00:10:00.000Z"]


def test_import_refuses_a_bad_line_and_imports_nothing(capsysbinary, tmp_path):
    good = encode_record(make_record("p/c", 0, "ok")).decode()
    bad = json.loads(good)
    bad["outcome"] = "maybe"
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n" + json.dumps(bad) + "\n")
    status, _, err = run_cli(capsysbinary, "records", "import", str(path))
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith(f"probe: error: {path}: line 2: not a SLIRecord (probecore.sli/1): ")
    assert "outcome" in err and "nothing was imported" in err


def test_import_of_several_profiles_needs_a_store(capsysbinary, tmp_path):
    source = write_jsonl(tmp_path / "mix.jsonl", [make_record("a/c", 0, "ok"), make_record("b/c", 0, "ok")])
    status, _, err = run_cli(capsysbinary, "records", "import", source)
    assert status == 2
    assert "holds records of several profiles (a, b); choose one store with --store" in err
    status, _, err = run_cli(capsysbinary, "records", "import", source, "--store", str(tmp_path / "mix.sqlite3"))
    assert status == 0 and "2 records imported" in err


def test_events_are_printed_after_a_run(capsysbinary, tmp_path):
    (tmp_path / "p.toml").write_text(PROFILE)
    source = write_jsonl(tmp_path / "in.jsonl", records_of(["provider", "provider"], check="p/c"))
    run_cli(capsysbinary, "records", "import", source)
    # Imported records carry no events (a replay derives them); the table exists and is empty.
    status, out, _ = run_cli(capsysbinary, "records", str(tmp_path / "p.toml"), "--events")
    assert status == 0 and out == ""


@pytest.mark.parametrize(("argv", "message"), [
    (["run"], "probe run: the following arguments are required: PROFILE (see 'probe run --help')"),
    (["frobnicate"], "probe: argument COMMAND: invalid choice: 'frobnicate'"),
    (["run", "x.toml", "--max-concurrency", "0"], "probe run: argument --max-concurrency: expected at least 1, got 0"),
    (["records", "p.toml", "--since", "yesterday"], "probe records: --since: expected a date-time like"),
    (["records", "import"], "probe records import: name the JSON Lines file to import ('-' for stdin)"),
    (["run", "missing.toml"], "probe: error: missing.toml: no such file"),
    (["run", "x.toml", "--for", "soon"], None),
])
def test_usage_errors_are_one_line_with_status_2(capsysbinary, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text(PROFILE)
    (tmp_path / "x.toml").write_text(PROFILE)
    status, out, err = run_cli(capsysbinary, *argv)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("probe: error: ")
    assert "Traceback" not in err
    if message:
        assert message in err


def test_help_describes_every_command():
    result = subprocess.run([sys.executable, "-m", "probecore", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    for command in ("run", "check", "plugins", "schema", "records", "demo"):
        assert f"    {command}" in result.stdout
    result = subprocess.run([sys.executable, "-m", "probecore", "run", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert "--once" in result.stdout and "Exit status with --once" in result.stdout
