"""Prometheus metrics: names and values scraped over HTTP from a real run, agent and judge."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from probecore import Failure, SLIRecord
from probecore._cli_scale import metrics_address
from probecore._metrics import Metrics
from probecore._incidents import IncidentEvent

ROOT = Path(__file__).resolve().parents[1]


def scrape(port: int, host: str = "127.0.0.1") -> dict[str, list]:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    families: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            families.setdefault(sample.name, []).append(sample)
    return families


def value(families, name, **labels):
    for sample in families.get(name, []):
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise AssertionError(f"no {name} with {labels}; have {[s.labels for s in families.get(name, [])]}")


def test_address_defaults_to_loopback():
    assert metrics_address(":9464") == ("127.0.0.1", 9464)
    assert metrics_address("9464") == ("127.0.0.1", 9464)
    assert metrics_address("0.0.0.0:9464") == ("0.0.0.0", 9464)
    assert metrics_address("[::1]:9464") == ("::1", 9464)


def test_record_metrics_follow_blackbox_names():
    metrics = Metrics("run")
    port = metrics.serve("127.0.0.1", 0)
    try:
        ok = SLIRecord(check="p/site", probe="web", target="https://x/", vantage="bj",
                       scheduled_at="2026-11-01T00:00:00.000Z", started_at="2026-11-01T00:00:00.250Z",
                       duration_s=0.4, outcome="ok", value=0.12, unit="s",
                       phases={"connect": 0.01, "tls": 0.05})
        metrics.observed(ok)
        failed = SLIRecord(check="p/ftp", probe="ftp", target="ftp://x/", vantage="bj",
                           scheduled_at="2026-11-01T00:00:00.000Z", started_at="2026-11-01T00:00:00.000Z",
                           duration_s=1.5, outcome="fail", failure=Failure("connect_refused", "provider", "no"))
        event = IncidentEvent(event_id="e#suspected", kind="suspected", incident_id="e", check="p/ftp", vantage="bj",
                              at=failed.started_at, incident_started_at=failed.started_at, failures=1)
        metrics.observed(failed, [event])
        got = scrape(port)
    finally:
        metrics.close()
    assert value(got, "probecore_probe_success", check="p/site", vantage="bj", probe="web") == 1.0
    assert value(got, "probecore_probe_success", check="p/ftp") == 0.0
    assert value(got, "probecore_probe_duration_seconds", check="p/ftp") == 1.5
    assert value(got, "probecore_probe_phase_duration_seconds", check="p/site", phase="tls") == 0.05
    assert value(got, "probecore_probe_outcome", check="p/ftp", outcome="fail") == 1.0
    assert value(got, "probecore_probe_outcome", check="p/ftp", outcome="ok") == 0.0
    assert value(got, "probecore_probe_attempts_total", check="p/site", outcome="ok") == 1.0
    assert value(got, "probecore_probe_failure_info", check="p/ftp", code="connect_refused",
                 attribution="provider") == 1.0
    assert value(got, "probecore_incident_state", check="p/ftp", state="suspected") == 1.0
    assert value(got, "probecore_scheduler_lateness_seconds_count") == 2.0
    assert value(got, "probecore_scheduler_lateness_seconds_bucket", le="0.25") == 2.0  # 0 s and 0.25 s
    assert value(got, "probecore_probe_value", check="p/site") == 0.12


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else proc.returncode
        try:
            return scrape(port)
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"no metrics on port {port}")


PROFILE = """\
[profile]
name = "m"
[[check]]
id = "port"
probe = "tcp"
host = "127.0.0.1"
port = {port}
interval = "1s"
timeout = "500ms"
"""


@pytest.fixture
def listener():
    """A TCP port that accepts (the tcp probe's target)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


def run_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "probecore", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode()


def test_probe_run_serves_metrics(tmp_path, listener):
    profile = tmp_path / "m.toml"
    profile.write_text(PROFILE.format(port=listener))
    port = free_port()
    proc = run_cli("run", str(profile), "--json", "--store", f"sqlite:{tmp_path / 's.db'}",
                   "--metrics", f":{port}", "--vantage", "here")
    try:
        got = wait_for(port, proc)
        deadline = time.monotonic() + 10
        while "probecore_probe_success" not in got and time.monotonic() < deadline:
            time.sleep(0.3)
            got = scrape(port)
    finally:
        stop(proc)
    assert value(got, "probecore_probe_success", check="m/port", vantage="here", probe="tcp") == 1.0
    assert value(got, "probecore_scheduler_checks") == 1.0
    assert value(got, "probecore_scheduler_missed_slots_total", check="m/port") == 0.0
    assert value(got, "probecore_outbox_pending", profile="m") == 0.0


def test_agent_and_judge_serve_metrics(tmp_path, listener, postgresql_url):
    profile = tmp_path / "m.toml"
    profile.write_text(PROFILE.format(port=listener).replace('timeout = "500ms"\n',
                                                            'timeout = "500ms"\nvantages = ["bj"]\n'))
    agent_port, judge_port = free_port(), free_port()
    agent = run_cli("agent", str(profile), "--vantage", "bj", "--store", postgresql_url, "--lease", "3s",
                    "--metrics", f"127.0.0.1:{agent_port}")
    judge = run_cli("judge", str(profile), "--store", postgresql_url, "--poll", "200ms",
                    "--metrics", f":{judge_port}")
    try:
        deadline = time.monotonic() + 20
        agent_got = wait_for(agent_port, agent)
        judge_got = wait_for(judge_port, judge)
        while time.monotonic() < deadline and (
                "probecore_probe_success" not in agent_got
                or not any(s.labels.get("vantage") == "quorum"
                           for s in judge_got.get("probecore_incident_state", []))):
            time.sleep(0.3)
            agent_got, judge_got = scrape(agent_port), scrape(judge_port)
    finally:
        agent_err, judge_err = stop(agent), stop(judge)
    assert value(agent_got, "probecore_probe_success", check="m/port", vantage="bj") == 1.0, agent_err
    assert value(agent_got, "probecore_agent_members", vantage="bj") == 1.0
    assert value(agent_got, "probecore_agent_owned_checks", vantage="bj") == 1.0
    assert value(judge_got, "probecore_judge_leader") == 1.0, judge_err
    assert value(judge_got, "probecore_judge_records_total") >= 1.0
    assert value(judge_got, "probecore_incident_state", check="m/port", vantage="quorum", state="ok") == 1.0
    assert "password" not in agent_err + judge_err


def test_objective_budget_and_outbox_metrics_from_the_store(tmp_path):
    """The month so far, judged from the store: met, budget used and left; the outbox depth."""
    from datetime import datetime, timezone

    import trio

    from probecore import load_profile
    from probecore.testing import MemoryStore, make_host, write_profile
    from tests.fakes import ScriptedPlugin

    host = make_host(ScriptedPlugin())
    path = write_profile(tmp_path, '[profile]\nname = "b"\n[[check]]\nid = "x"\nprobe = "scripted"\n'
                        '[[objective]]\nid = "down"\nkind = "downtime"\ncheck = "x"\nop = "<"\nlimit = "1h"\n')
    profile = load_profile(path, host.probes, host.evaluators)
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    start = now.timestamp() - 3600
    records = []
    for minute in range(60):  # the last hour: down 15 minutes of it
        at = datetime.fromtimestamp(start + minute * 60, timezone.utc)
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        failing = 30 <= minute < 45
        records.append(SLIRecord(check="b/x", probe="scripted", target="t", vantage="v", scheduled_at=stamp,
                                 started_at=stamp, duration_s=0.01, outcome="fail" if failing else "ok",
                                 failure=Failure("down", "provider", "x") if failing else None))
    store = MemoryStore()
    store.import_records(records)
    metrics = Metrics("judge")
    port = metrics.serve("127.0.0.1", 0)

    async def main():
        with trio.move_on_after(1.0):
            await metrics.refresh_store(store, [profile], host.evaluators, every=10)

    try:
        trio.run(main)
        got = scrape(port)
    finally:
        metrics.close()
    if datetime.fromtimestamp(start, timezone.utc).month != now.month:
        pytest.skip("the hour crosses a month boundary")
    assert value(got, "probecore_objective_met", profile="b", objective="down") == 1.0
    assert value(got, "probecore_objective_budget_used_ratio", objective="down") == pytest.approx(0.25)
    assert value(got, "probecore_objective_budget_remaining_ratio", objective="down") == pytest.approx(0.75)
    assert value(got, "probecore_outbox_pending", profile="b") == 0.0
