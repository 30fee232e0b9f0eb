"""``probe run --once`` as a CI gate, run as a real subprocess against a real nginx.

stdout is a pipe, so ``probe run`` writes JSON Lines there (one record per check) and its
header and summary go to stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from probecore.testing import write_profile
from tests.conftest import assert_valid_records
from tests.servers import free_port

if TYPE_CHECKING:
    from tests.servers.nginx import Nginx

pytest_plugins = ["tests.servers.nginx"]

COMMAND_TIMEOUT = 30


def probe(*args: str, data_dir: Path) -> subprocess.CompletedProcess[bytes]:
    """Run ``probe ARGS`` (as ``python -m probecore``) with its default store dir in *data_dir*."""
    env = {**os.environ, "PROBECORE_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "probecore", *args], env=env, capture_output=True,
                          timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)


def profile_text(checks: str) -> str:
    return f"""\
[profile]
name = "gate"

[defaults]
interval = "1m"
timeout = "2s"
{checks}"""


def lines_of(output: bytes) -> list[bytes]:
    assert output.endswith(b"\n"), output
    return output.splitlines()


def by_check(records: list[dict]) -> dict[str, dict]:
    return {r["check"]: r for r in records}


def test_once_with_one_unreachable_target_exits_1_and_stores_both(tmp_path: Path, nginx: Nginx) -> None:
    closed = free_port()
    path = write_profile(tmp_path, profile_text(f"""
        [[check]]
        id = "web"
        probe = "tcp"
        host = "{nginx.host}"
        port = {nginx.port}

        [[check]]
        id = "down"
        probe = "tcp"
        host = "127.0.0.1"
        port = {closed}
        """))
    store = f"sqlite:{tmp_path / 'x.sqlite3'}"
    data_dir = tmp_path / "data"

    run = probe("run", "--once", str(path), "--store", store, data_dir=data_dir)

    stderr = run.stderr.decode()
    assert run.returncode == 1, stderr
    assert "Traceback" not in stderr
    lines = lines_of(run.stdout)
    assert len(lines) == 2, run.stdout
    records = by_check(assert_valid_records(lines))
    assert set(records) == {"gate/web", "gate/down"}
    web, down = records["gate/web"], records["gate/down"]
    assert web["outcome"] == "ok"
    assert web["target"] == f"127.0.0.1:{nginx.port}"
    assert "failure" not in web or web["failure"] is None
    assert down["outcome"] == "fail"
    assert down["failure"]["code"] == "connect_refused"
    assert down["failure"]["attribution"] == "provider"
    assert "2 checks: 1 ok, 1 not ok" in " ".join(stderr.split())

    # The store holds exactly the records that were printed, byte for byte.
    stored = probe("records", str(path), "--store", store, data_dir=data_dir)
    assert stored.returncode == 0, stored.stderr.decode()
    assert sorted(lines_of(stored.stdout)) == sorted(lines)
    # Nothing went to the default store.
    assert not data_dir.exists() or not any(data_dir.iterdir())


def test_once_with_every_target_reachable_exits_0(tmp_path: Path, nginx: Nginx) -> None:
    path = write_profile(tmp_path, profile_text(rf"""
        [[check]]
        id = "port"
        probe = "tcp"
        host = "{nginx.host}"
        port = {nginx.port}

        [[check]]
        id = "http"
        probe = "tcp"
        host = "{nginx.host}"
        port = {nginx.port}
        send = "GET /fast HTTP/1.0\r\n\r\n"
        expect = "HTTP/1.1 200"
        """))
    store = f"sqlite:{tmp_path / 'ok.sqlite3'}"

    run = probe("run", "--once", str(path), "--store", store, data_dir=tmp_path / "data")

    assert run.returncode == 0, run.stderr.decode()
    records = by_check(assert_valid_records(lines_of(run.stdout)))
    assert set(records) == {"gate/port", "gate/http"}
    assert {r["outcome"] for r in records.values()} == {"ok"}
    assert list(records["gate/http"]["phases"]) == ["connect", "banner"]
    assert "2 checks: 2 ok, 0 not ok" in " ".join(run.stderr.decode().split())


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param('[[check]]\nid = "web"\nprobe = "tcp"\nhost = "127.0.0.1"\nport = "eighty"\n',
                 'check "web": key "port"', id="wrong-type"),
    pytest.param('[[check]]\nid = "web"\nprobe = "tcp"\nhost = "127.0.0.1"\nport = 80\ncolour = "red"\n',
                 'check "web": key "colour": unknown key', id="unknown-key"),
    pytest.param('[[check]\nid = "web"\n', "invalid TOML", id="bad-toml"),
])
def test_bad_profile_exits_2_with_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write_profile(tmp_path, '[profile]\nname = "gate"\n\n' + text)
    store = tmp_path / "never.sqlite3"

    run = probe("run", "--once", str(path), "--store", f"sqlite:{store}", data_dir=tmp_path / "data")

    stderr = run.stderr.decode()
    assert run.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("probe: error: ")
    assert str(path) in stderr
    assert expected in stderr
    assert run.stdout == b""
    assert not store.exists()


def test_missing_profile_exits_2_with_one_line(tmp_path: Path) -> None:
    run = probe("run", "--once", str(tmp_path / "nope.toml"), data_dir=tmp_path / "data")
    stderr = run.stderr.decode()
    assert run.returncode == 2, stderr
    assert stderr.splitlines() == [f"probe: error: {tmp_path / 'nope.toml'}: no such file"]
    assert run.stdout == b""
