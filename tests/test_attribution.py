"""Cross-check attribution: a web check's failures while its DNS binding is wrong are not the provider's."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from probecore import Failure, ProfileError, SLIRecord, format_timestamp, load_profile
from probecore._attribution import BINDING_DETAIL, Attributor
from probecore.testing import DEFAULT_START, MemoryStore, make_host, run_simulated, write_profile
from tests.fakes import ScriptedPlugin

PROFILE = """
[profile]
name = "acme"
[defaults]
interval = "1m"
confirm = 2
[[check]]
id = "site"
probe = "scripted"
fail_always = true
binding = "site-dns"
[[check]]
id = "site-dns"
probe = "scripted"
{dns}
"""

WRONG_BINDING = ('fail_always = true\ncode = "mismatch"\nattribution = "customer"\n'
                 'details = { binding = "elsewhere" }')


def load(tmp_path, dns_keys: str):
    host = make_host(ScriptedPlugin())
    return load_profile(write_profile(tmp_path, PROFILE.format(dns=dns_keys)), host.probes), host


def record(check: str, minute: float, outcome: str = "fail", attribution: str = "provider",
           code: str = "timeout", vantage: str = "v") -> SLIRecord:
    at = format_timestamp(DEFAULT_START + timedelta(minutes=minute))
    failure = None if outcome == "ok" else Failure(code, attribution, "down")
    # Binding-check records state their verdict as the dns probe does.
    details = {"binding": "elsewhere"} if code in ("mismatch", "nxdomain") else {}
    return SLIRecord(check=f"acme/{check}", probe="scripted", target="t", vantage=vantage,
                     scheduled_at=at, started_at=at, duration_s=0.1, outcome=outcome, failure=failure,
                     details=details)


@pytest.fixture
def attributor(tmp_path):
    profile, _ = load(tmp_path, "")
    return Attributor(profile.checks)


def test_failure_while_binding_is_wrong_goes_to_the_bindings_party(attributor):
    attributor(record("site-dns", 0, attribution="customer", code="mismatch"))
    adjusted = attributor(record("site", 0.5))
    assert adjusted.failure.attribution == "customer"
    assert adjusted.failure.code == "timeout"
    assert adjusted.failure.message == ("down [attributed to customer: binding site-dns mismatch at "
                                        "2026-11-01T00:00:00.000Z]")
    assert adjusted.details[BINDING_DETAIL] == "site-dns mismatch 2026-11-01T00:00:00.000Z"


@pytest.mark.parametrize("evidence", [
    record("site-dns", 0, outcome="ok"),                                   # binding right
    record("site-dns", 0, outcome="error", attribution="probe"),           # no evidence
    record("site-dns", 0, attribution="provider", code="servfail"),        # provider's own DNS
    record("site-dns", 0, attribution="customer", code="mismatch", vantage="other"),  # elsewhere
    record("site-dns", -3, attribution="customer", code="mismatch"),       # stale (> 2 × 1m + 10s)
    record("site-dns", 1, attribution="customer", code="mismatch"),        # after the failure
    record("site-dns", 0, attribution="customer", code="ttl_low"),         # bound right, TTL low
])
def test_failure_stays_the_providers_without_current_evidence(attributor, evidence):
    attributor(evidence)
    original = record("site", 0.5)
    assert attributor(original) == original


def test_only_provider_failures_of_the_bound_check_change(attributor):
    attributor(record("site-dns", 0, attribution="customer", code="mismatch"))
    for unchanged in (record("site", 0.5, outcome="ok"), record("site", 0.5, attribution="third_party"),
                      record("site-dns", 0.5, attribution="customer", code="mismatch")):
        assert attributor(unchanged) == unchanged


def test_rules_are_idempotent(attributor, tmp_path):
    records = [record("site-dns", 0, attribution="customer", code="mismatch"), record("site", 0.5),
               record("site", 1.5), record("site-dns", 2, outcome="ok"), record("site", 2.5)]
    once = attributor.apply_all(records)
    profile, _ = load(tmp_path, "")
    twice = Attributor(profile.checks).apply_all(once)
    assert twice == once
    assert [r.failure.attribution for r in once if r.check == "acme/site"] == ["customer", "customer", "provider"]


async def test_wrong_binding_keeps_the_site_outage_off_the_provider(tmp_path, autojump_clock):
    profile, host = load(tmp_path, WRONG_BINDING)
    store = MemoryStore()
    await run_simulated(profile, host, store=store, duration=600)
    site = [r for r in store.records() if r.check == "acme/site"]
    assert len(site) == 10
    # The very first site attempt may come before the first DNS verdict (their phases differ);
    # every failure after a wrong-binding verdict is the customer's.
    dns_first = min(r.started_at for r in store.records() if r.check == "acme/site-dns")
    after = [r for r in site if r.started_at >= dns_first]
    before = [r for r in site if r.started_at < dns_first]
    assert len(after) >= 9 and all(r.failure.attribution == "customer" for r in after)
    assert len(before) <= 1 and all(r.failure.attribution == "provider" for r in before)
    # At most one provider failure: never two in a row, so never an outage.
    assert [e.kind for e in store.events() if e.check == "acme/site"] in ([], ["suspected"])


async def test_right_binding_leaves_the_outage_with_the_provider(tmp_path, autojump_clock):
    profile, host = load(tmp_path, "")
    store = MemoryStore()
    await run_simulated(profile, host, store=store, duration=600)
    site = [r for r in store.records() if r.check == "acme/site"]
    assert {r.failure.attribution for r in site} == {"provider"}
    assert [e.kind for e in store.events() if e.check == "acme/site"] == ["suspected", "confirmed"]


@pytest.mark.parametrize(("binding", "message"), [
    ('"nowhere"', 'check "site": key "binding": no check "nowhere" in this profile'),
    ('"site"', 'check "site": key "binding": a check cannot be its own binding'),
    ("3", 'check "site": key "binding": expected a non-empty string, got 3'),
])
def test_binding_must_name_another_check(tmp_path, binding, message):
    text = PROFILE.format(dns="").replace('binding = "site-dns"', f"binding = {binding}")
    host = make_host(ScriptedPlugin())
    with pytest.raises(ProfileError) as caught:
        load_profile(write_profile(tmp_path, text), host.probes)
    assert str(caught.value).endswith(message)


def test_records_are_frozen_so_adjusting_makes_a_copy():
    original = record("site", 0)
    with pytest.raises(AttributeError):
        original.outcome = "ok"  # type: ignore[misc]
    assert msgspec.structs.replace(original, outcome="ok").outcome == "ok"
