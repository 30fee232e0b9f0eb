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
