"""Every shipped profile validates with `probe check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from probecore._cli import main

PROFILES = sorted((Path(__file__).resolve().parent.parent / "profiles").glob("*.toml"))


def test_the_shipped_profiles_are_there():
    assert {p.name for p in PROFILES} >= {"demo.toml", "002-colocation.toml"}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_shipped_profile_validates(path, capsys):
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "is valid" in out


def test_002_pings_every_five_minutes_and_confirms_on_the_second_miss():
    from probecore import load_profile
    from probecore.testing import make_host

    profile = load_profile(Path(__file__).resolve().parent.parent / "profiles" / "002-colocation.toml",
                           make_host().probes)
    port = profile.check("port")
    assert (port.probe, port.interval, port.confirm) == ("ping", 300.0, 2)
    assert {o["id"]: (o["op"], o.get("target", o.get("limit"))) for o in profile.objectives} == {
        "002-N": (">=", 0.999), "002-N-minutes": ("<", "44m"), "002-P": (">=", 0.999),
        "002-T": ("<=", "15m"), "002-M": (">=", 0.999)}


def test_retry_interval_defaults_to_the_checks_own_interval(tmp_path):
    """README: retry_interval defaults to the check's interval, not [defaults]' interval."""
    from probecore import load_profile
    from probecore.testing import make_host

    (tmp_path / "p.toml").write_text('''
[profile]
name = "acme"

[defaults]
interval = "1m"

[[check]]
id = "fast"
probe = "tcp"
host = "127.0.0.1"
port = 22
interval = "30s"
timeout = "5s"

[[check]]
id = "slow"
probe = "tcp"
host = "127.0.0.1"
port = 22
''', encoding="utf-8")
    profile = load_profile(tmp_path / "p.toml", make_host().probes)
    assert (profile.check("fast").interval, profile.check("fast").retry_interval) == (30.0, 30.0)
    assert (profile.check("slow").interval, profile.check("slow").retry_interval) == (60.0, 60.0)


def test_001_power_check_retries_at_its_own_interval():
    from probecore import load_profile
    from probecore.testing import make_host

    path = next(Path(__file__).resolve().parent.parent.joinpath("profiles").glob("001-*.toml"))
    profile = load_profile(path, make_host().probes)
    for check in profile.checks:
        assert check.retry_interval <= check.interval, check.id
        if check.probe == "power":
            assert check.retry_interval == check.interval
