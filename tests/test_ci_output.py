"""`probe run --once --junit FILE --github`: what a CI system shows for a gate, against a real nginx."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from probecore import Failure, SLIRecord
from probecore._ci_output import github_annotations, junit_xml
from probecore.testing import write_profile
from tests.servers import free_port
from tests.test_cli_run import probe, profile_text

if TYPE_CHECKING:
    from tests.servers.nginx import Nginx

pytest_plugins = ["tests.servers.nginx"]


def gate_profile(tmp_path: Path, nginx: Nginx) -> Path:
    return write_profile(tmp_path, profile_text(f"""
        [[check]]
        id = "web"
        probe = "tcp"
        host = "{nginx.host}"
        port = {nginx.port}

        [[check]]
        id = "down"
        probe = "tcp"
        host = "127.0.0.1"
        port = {free_port()}
        """))


def test_junit_has_one_case_per_check_and_the_failure_names_code_and_attribution(
        tmp_path: Path, nginx: Nginx) -> None:
    path = gate_profile(tmp_path, nginx)
    junit = tmp_path / "out" / "probe.xml"
    junit.parent.mkdir()

    run = probe("run", "--once", str(path), "--junit", str(junit), "--store",
                f"sqlite:{tmp_path / 'x.sqlite3'}", data_dir=tmp_path / "data")

    assert run.returncode == 1, run.stderr.decode()
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures"), suite.get("errors")) == (
        "gate", "2", "1", "0")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {"web", "down"}
    assert cases["web"].find("failure") is None
    failure = cases["down"].find("failure")
    assert failure is not None
    assert failure.get("type") == "connect_refused"
    assert failure.get("message").startswith("fail: connect_refused (provider): ")
    assert "target: 127.0.0.1:" in failure.text
    assert not list(junit.parent.glob(".probe.xml.*")), "the temporary file was left behind"


def test_github_annotations_point_at_the_failed_checks_table(tmp_path: Path, nginx: Nginx) -> None:
    path = gate_profile(tmp_path, nginx)

    run = probe("run", "--once", str(path), "--github", "--store",
                f"sqlite:{tmp_path / 'x.sqlite3'}", data_dir=tmp_path / "data")

    assert run.returncode == 1, run.stderr.decode()
    commands = [line for line in run.stdout.decode().splitlines() if line.startswith("::")]
    down_line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if 'id = "down"' in text)
    assert len(commands) == 2, commands
    assert commands[0].startswith(f"::error file={path},line={down_line},title=probe check down (tcp)::"
                                  "fail: connect_refused (provider): ")
    assert commands[1] == "::notice title=probecore::2 checks: 1 ok, 1 not ok"


def test_junit_and_github_need_once(tmp_path: Path, nginx: Nginx) -> None:
    path = gate_profile(tmp_path, nginx)
    run = probe("run", str(path), "--junit", str(tmp_path / "j.xml"), data_dir=tmp_path / "data")
    assert run.returncode == 2
    assert run.stderr.decode().strip().splitlines()[-1] == (
        "probe: error: probe run: --junit and --github report one round: they need --once")
    assert not (tmp_path / "j.xml").exists()


def test_unwritable_junit_path_is_one_line(tmp_path: Path, nginx: Nginx) -> None:
    path = gate_profile(tmp_path, nginx)
    run = probe("run", "--once", str(path), "--junit", str(tmp_path / "missing" / "j.xml"),
                "--store", f"sqlite:{tmp_path / 'x.sqlite3'}", data_dir=tmp_path / "data")
    assert run.returncode == 2
    assert "Traceback" not in run.stderr.decode()
    assert run.stderr.decode().strip().splitlines()[-1].startswith("probe: error: probe run: --junit ")


def record(check: str, outcome: str, failure: Failure | None = None) -> SLIRecord:
    return SLIRecord(check=check, probe="mail", target="m", vantage="v",
                     scheduled_at="2026-10-01T00:00:00.000Z", started_at="2026-10-01T00:00:00.000Z",
                     duration_s=0.5, outcome=outcome, failure=failure)


def test_annotations_escape_newlines_percent_and_property_separators(tmp_path: Path) -> None:
    failure = Failure(code="smtp_reject", attribution="provider", message="550 5.7.1 100% spam,\nbye")
    lines = github_annotations(str(tmp_path / "a,b:c.toml"), [record("p/x", "fail", failure)])
    assert lines[0] == (f"::error file={tmp_path}/a%2Cb%3Ac.toml,title=probe check x (mail)::"
                        "fail: smtp_reject (provider): 550 5.7.1 100%25 spam,%0Abye")


def test_junit_error_outcome_and_group_members(tmp_path: Path) -> None:
    from probecore.testing import make_host
    from probecore import load_profile

    path = write_profile(tmp_path, profile_text("""
        [[check]]
        id = "x"
        probe = "tcp"
        host = "127.0.0.1"
        port = 1
        """))
    profile = load_profile(path, make_host().probes)
    crash = Failure(code="plugin_crash", attribution="probe", message="boom")
    held = Failure(code="held", attribution="provider", message="queue held")
    records = [record("gate/x", "error", crash), record("gate/x:alice", "fail", held),
               record("gate/x:bob", "ok")]
    root = ET.fromstring(junit_xml(profile, records))
    (case,) = root.iter("testcase")
    error = case.find("error")
    assert error is not None and error.get("type") == "plugin_crash"
    assert "member alice: fail: held (provider): queue held" in error.text
    assert "member bob: ok" in error.text
    assert root.get("errors") == "1" and root.get("tests") == "1"
