"""The ``dns`` probe kind against real nsd servers, through the real runner and scheduler.

Three nsd instances serve the zone ``probe.test`` (started once for the module, ~50 ms each):
``primary`` and ``replica`` serve the current version (serial 2), ``stale`` an older one
(serial 1, where ``www`` had only one address). The reload test starts its own instance, so
editing its zone cannot disturb the others. Real sockets, so real time; per-server timeouts are
short so that the slowest case takes ~0.3 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from probecore import ProfileError, SLIRecord, load_profile
from probecore._runner import RunOptions, run_profile
from probecore.testing import MemoryStore, make_host, write_profile
from tests.conftest import assert_valid_records
from tests.servers import free_port

if TYPE_CHECKING:
    from tests.servers.nsd import Nsd, NsdFactory
    from tests.servers.unbound import Unbound, UnboundFactory

pytest_plugins = ["tests.servers.nsd", "tests.servers.unbound"]

ZONE = "probe.test"
BIG = 120  # A records of big.probe.test: ~1.9 kB, more than the 1232-byte UDP payload

RECORDS = """\
    www       IN A     192.0.2.10
    www       IN A     192.0.2.11
    alias     IN CNAME www
    chain     IN CNAME alias
    dangling  IN CNAME gone
    elsewhere IN CNAME other
    other     IN A     198.51.100.7
    short  30 IN A     192.0.2.20
    v6        IN AAAA  2001:db8::10
    text      IN TXT   "hello"
    mail      IN MX    10 mx.probe.test.
    offsite   IN CNAME vhost.hoster.example.
""" + "".join(f"    big IN A 10.0.1.{i}\n" for i in range(1, BIG + 1))
# The version before www got its second address (and before anything else changed but the serial).
STALE_RECORDS = RECORDS.replace("    www       IN A     192.0.2.11\n", "")

HEAD = """\
[profile]
name = "dns-test"

[defaults]
interval = "1m"
timeout = "3s"
confirm = 1
"""


def zones(serial: int, records: str) -> dict[str, str]:
    from tests.servers.nsd import zone_text
    return {ZONE: zone_text(ZONE, serial, records)}


@pytest.fixture(scope="module")
def primary(nsd_factory: NsdFactory) -> Nsd:
    return nsd_factory.start("primary", zones(2, RECORDS))


@pytest.fixture(scope="module")
def replica(nsd_factory: NsdFactory) -> Nsd:
    return nsd_factory.start("replica", zones(2, RECORDS))


@pytest.fixture(scope="module")
def stale(nsd_factory: NsdFactory) -> Nsd:
    return nsd_factory.start("stale", zones(1, STALE_RECORDS))


def host():  # type: ignore[no-untyped-def]
    # Only this plugin: the test must not depend on other plugins being importable.
    return make_host(builtins=["probecore_plugins.dns"])


async def run_once(tmp_path: Path, checks: str) -> dict[str, SLIRecord]:
    """Run *checks* (``[[check]]`` tables) once through the runner; records by check id."""
    plugins = host()
    profile = load_profile(write_profile(tmp_path, HEAD + checks), plugins.probes)
    result = await run_profile(profile, plugins, MemoryStore(),
                               RunOptions(once=True, handle_signals=False, vantage="test"))
    assert len(result.records) == len(profile.checks)
    return {r.check.split("/", 1)[1]: r for r in result.records}


def check(id: str, *servers: Nsd | str, **keys: object) -> str:
    """A ``[[check]]`` table of probe "dns" on *servers*, with *keys* written as TOML."""
    lines = ["[[check]]", f'id = "{id}"', 'probe = "dns"']
    if servers:
        lines.append("servers = [" + ", ".join(f'"{s if isinstance(s, str) else s.address}"'
                                               for s in servers) + "]")
    for key, value in keys.items():
        lines.append(f"{key} = {toml(value)}")
    return "\n" + "\n".join(lines) + "\n"


def toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }"
    return str(value)


def expect_fail(record: SLIRecord, code: str, attribution: str) -> str:
    assert record.outcome == "fail", record
    assert record.failure is not None
    assert (record.failure.code, record.failure.attribution) == (code, attribution), record.failure
    return record.failure.message


WWW = ["192.0.2.10", "192.0.2.11"]


# ---- the binding: addresses and match modes ------------------------------------------------------

async def test_binding_equal_is_ok(tmp_path: Path, primary: Nsd) -> None:
    records = await run_once(tmp_path, check("site-dns", primary, name="www.probe.test",
                                             expect={"addresses": WWW}))
    record = records["site-dns"]
    assert record.outcome == "ok", record.failure
    assert record.probe == "dns"
    assert record.target == f"www.probe.test A @{primary.address}"
    assert list(record.phases) == [f"query {primary.address}"]
    assert record.value == record.phases[f"query {primary.address}"]
    assert 0 < record.value < 1 and record.unit == "s"
    assert record.details == {
        "servers": primary.address,
        "answers": f"{primary.address}=192.0.2.10,192.0.2.11",
        "rcode": "NOERROR",
        "ttl": 300,
        "binding": "as_expected",
    }


# (expected addresses, match) -> outcome against www = {192.0.2.10, 192.0.2.11}
MATCH_CASES = [
    # extra address in the answer (192.0.2.11 not expected)
    (["192.0.2.10"], "equal", "mismatch", "unexpected 192.0.2.11"),
    (["192.0.2.10"], "subset", None, None),
    (["192.0.2.10"], "superset", "mismatch", "unexpected 192.0.2.11"),
    (["192.0.2.10"], "any", None, None),
    # an expected address is missing from the answer
    (WWW + ["192.0.2.12"], "equal", "mismatch", "missing 192.0.2.12"),
    (WWW + ["192.0.2.12"], "subset", "mismatch", "missing 192.0.2.12"),
    (WWW + ["192.0.2.12"], "superset", None, None),
    (WWW + ["192.0.2.12"], "any", None, None),
    # wrong address: the binding points elsewhere, whatever the mode
    (["203.0.113.10"], "equal", "mismatch", "unexpected 192.0.2.10,192.0.2.11; missing 203.0.113.10"),
    (["203.0.113.10"], "subset", "mismatch", "missing 203.0.113.10"),
    (["203.0.113.10"], "superset", "mismatch", "unexpected 192.0.2.10,192.0.2.11"),
    (["203.0.113.10"], "any", "mismatch", "none of them answered"),
]


@pytest.mark.parametrize(("addresses", "match", "code", "note"), [
    pytest.param(*case, id=f"{'extra' if i < 4 else 'missing' if i < 8 else 'wrong'}-{case[1]}")
    for i, case in enumerate(MATCH_CASES)])
async def test_match_modes(tmp_path: Path, primary: Nsd, addresses: list[str], match: str,
                           code: str | None, note: str | None) -> None:
    records = await run_once(tmp_path, check("b", primary, name="www.probe.test",
                                             expect={"addresses": addresses, "match": match}))
    record = records["b"]
    if code is None:
        assert record.outcome == "ok", record.failure
        assert record.details["binding"] == "as_expected"
        return
    message = expect_fail(record, code, "customer")
    assert message.startswith(f"{primary.address}: www.probe.test A is 192.0.2.10,192.0.2.11; expected ")
    assert f"({note})" in message
    assert record.details["binding"] == "elsewhere"
    assert record.value is not None  # the server answered: its time is still measured


async def test_without_expected_addresses_any_answer_is_ok_but_no_records_is_not(
        tmp_path: Path, primary: Nsd) -> None:
    records = await run_once(tmp_path, check("any", primary, name="www.probe.test")
                             + check("nodata", primary, name="text.probe.test"))
    assert records["any"].outcome == "ok"
    message = expect_fail(records["nodata"], "mismatch", "customer")
    assert message == f"{primary.address}: text.probe.test A has no records"
    assert records["nodata"].details["answers"] == f"{primary.address}=(none)"
    assert records["nodata"].details["binding"] == "elsewhere"


async def test_aaaa_and_other_types_compare_record_data(tmp_path: Path, primary: Nsd) -> None:
    records = await run_once(
        tmp_path,
        check("v6", primary, name="v6.probe.test", type="AAAA",
              expect={"addresses": ["2001:0db8:0:0::0010"]})  # another spelling of 2001:db8::10
        + check("txt", primary, name="text.probe.test", type="txt", expect={"addresses": ['\\"hello\\"']})
        + check("mx", primary, name="mail.probe.test", type="MX",
                expect={"addresses": ["10 mx.probe.test"]})
        + check("mx-wrong", primary, name="mail.probe.test", type="MX",
                expect={"addresses": ["20 mx.probe.test."]}))
    for ok in ("v6", "txt", "mx"):
        assert records[ok].outcome == "ok", (ok, records[ok].failure)
    assert records["v6"].details["answers"] == f"{primary.address}=2001:db8::10"
    assert records["v6"].target == f"v6.probe.test AAAA @{primary.address}"
    assert records["mx"].details["answers"] == f"{primary.address}=10 mx.probe.test."
    assert "missing 20 mx.probe.test." in expect_fail(records["mx-wrong"], "mismatch", "customer")


# ---- CNAME chains, NXDOMAIN, rcodes -------------------------------------------------------------

async def test_cname_chain_ok(tmp_path: Path, primary: Nsd) -> None:
    records = await run_once(tmp_path, check("chain", primary, name="chain.probe.test",
                                             expect={"cname": "www.probe.test.", "addresses": WWW}))
    record = records["chain"]
    assert record.outcome == "ok", record.failure
    assert record.details["cname"] == "www.probe.test"
    assert record.details["answers"] == f"{primary.address}=192.0.2.10,192.0.2.11"


async def test_cname_to_a_name_outside_the_zone_is_judged_by_the_chain_end(
        tmp_path: Path, primary: Nsd) -> None:
    # The customer's part of a binding to a provider's vhost name is the CNAME itself.
    records = await run_once(tmp_path, check("offsite", primary, name="offsite.probe.test",
                                             expect={"cname": "vhost.hoster.example"}))
    record = records["offsite"]
    assert record.outcome == "ok", record.failure
    assert record.details["cname"] == "vhost.hoster.example"
    assert record.details["answers"] == f"{primary.address}=(none)"


async def test_cname_chain_broken(tmp_path: Path, primary: Nsd) -> None:
    records = await run_once(
        tmp_path,
        check("elsewhere", primary, name="elsewhere.probe.test", expect={"cname": "www.probe.test"})
        + check("dangling", primary, name="dangling.probe.test", expect={"cname": "www.probe.test"})
        + check("no-chain", primary, name="www.probe.test", expect={"cname": "vhost.hoster.example"}))
    message = expect_fail(records["elsewhere"], "mismatch", "customer")
    assert message == (f"{primary.address}: the CNAME chain from elsewhere.probe.test ends at "
                       "other.probe.test, expected it to end at www.probe.test")
    assert records["elsewhere"].details["binding"] == "elsewhere"
    message = expect_fail(records["dangling"], "nxdomain", "customer")
    assert message == (f"{primary.address}: dangling.probe.test does not exist (NXDOMAIN) (CNAME chain "
                       "ends at gone.probe.test, which does not exist)")
    assert records["dangling"].details["rcode"] == "NXDOMAIN"
    assert records["dangling"].details["cname"] == "gone.probe.test"
    assert records["dangling"].details["binding"] == "elsewhere"
    message = expect_fail(records["no-chain"], "mismatch", "customer")
    assert "www.probe.test has no CNAME, expected it to end at vhost.hoster.example" in message


async def test_nxdomain_is_the_customers(tmp_path: Path, primary: Nsd) -> None:
    records = await run_once(tmp_path, check("gone", primary, name="nosuch.probe.test",
                                             expect={"addresses": ["192.0.2.10"]})
                             + check("meant-gone", primary, name="nosuch.probe.test",
                                     expect={"rcode": "NXDOMAIN"})
                             + check("not-gone", primary, name="www.probe.test",
                                     expect={"rcode": "nxdomain"}))
    record = records["gone"]
    message = expect_fail(record, "nxdomain", "customer")
    assert message == f"{primary.address}: nosuch.probe.test does not exist (NXDOMAIN)"
    assert record.details["answers"] == f"{primary.address}=NXDOMAIN"
    assert record.details["binding"] == "elsewhere"
    assert "ttl" not in record.details
    assert records["meant-gone"].outcome == "ok", records["meant-gone"].failure
    message = expect_fail(records["not-gone"], "mismatch", "customer")
    assert message == f"{primary.address}: www.probe.test A exists (192.0.2.10,192.0.2.11), expected NXDOMAIN"


async def test_a_server_that_does_not_serve_the_zone_refuses(tmp_path: Path, primary: Nsd) -> None:
    records = await run_once(tmp_path, check("lame", primary, name="www.example.org"))
    message = expect_fail(records["lame"], "refused", "customer")
    assert message.startswith(f"{primary.address}: REFUSED www.example.org A")
    assert records["lame"].details["binding"] == "unknown"  # a refusal says nothing about the binding
    assert records["lame"].details["answers"] == f"{primary.address}=REFUSED"


async def test_min_ttl(tmp_path: Path, primary: Nsd) -> None:
    records = await run_once(tmp_path, check("short", primary, name="short.probe.test", min_ttl="1m")
                             + check("long", primary, name="www.probe.test", min_ttl="5m"))
    message = expect_fail(records["short"], "ttl_low", "customer")
    assert message == f"{primary.address}: short.probe.test A TTL 30s is below 1m"
    assert records["short"].details["ttl"] == 30
    assert records["short"].details["binding"] == "as_expected"  # low TTL: the binding is right
    assert records["long"].outcome == "ok", records["long"].failure


# ---- servers down, truncation -------------------------------------------------------------------

async def test_server_down_fails_fast_and_is_the_nameserver_owners(tmp_path: Path, primary: Nsd) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens: ICMP port unreachable
    started = trio.current_time()
    records = await run_once(tmp_path, check("down", closed, name="www.probe.test",
                                             server_timeout="300ms", expect={"addresses": WWW})
                             + check("one-down", primary, closed, name="www.probe.test",
                                     server_timeout="300ms", expect={"addresses": WWW}))
    assert trio.current_time() - started < 1.0
    record = records["down"]
    message = expect_fail(record, "connect_refused", "customer")
    assert message == f"{closed}: nothing listens (connection refused)"
    assert record.value is None
    assert list(record.phases) == [f"query {closed}"]
    assert record.phases[f"query {closed}"] < 0.25
    assert record.details["answers"] == f"{closed}=!connect_refused"
    assert record.details["binding"] == "unknown"
    # One good server and one down: the failure is the server's; the binding itself is right.
    record = records["one-down"]
    expect_fail(record, "connect_refused", "customer")
    assert list(record.phases) == [f"query {primary.address}", f"query {closed}"]
    assert record.details["binding"] == "as_expected"
    assert record.value == record.phases[f"query {primary.address}"]


async def test_silent_server_times_out_after_the_server_timeout(tmp_path: Path) -> None:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))  # bound, never read: queries vanish
    silent = f"127.0.0.1:{sock.getsockname()[1]}"
    with sock:
        records = await run_once(tmp_path, check("mute", silent, name="www.probe.test",
                                                 server_timeout="200ms"))
    message = expect_fail(records["mute"], "timeout", "customer")
    assert message == f"{silent}: no answer within 200ms"
    assert 0.19 <= records["mute"].phases[f"query {silent}"] < 0.5
    assert records["mute"].details["answers"] == f"{silent}=!timeout"


async def test_zone_owner_and_nameserver_owner_set_attribution(tmp_path: Path, primary: Nsd) -> None:
    closed = f"127.0.0.1:{free_port()}"
    wrong = {"addresses": ["203.0.113.10"]}
    records = await run_once(
        tmp_path,
        check("wrong-provider-zone", primary, name="www.probe.test", expect=wrong, zone_owner="provider")
        + check("down-provider-zone", closed, name="www.probe.test", server_timeout="300ms",
                zone_owner="provider")
        + check("wrong-third-party", primary, name="www.probe.test", expect=wrong, zone_owner="third_party")
        + check("wrong-provider-ns", primary, name="www.probe.test", expect=wrong,
                nameserver_owner="provider")
        + check("down-provider-ns", closed, name="www.probe.test", server_timeout="300ms",
                nameserver_owner="provider"))
    expect_fail(records["wrong-provider-zone"], "mismatch", "provider")
    expect_fail(records["down-provider-zone"], "connect_refused", "provider")
    expect_fail(records["wrong-third-party"], "mismatch", "third_party")
    # The customer edits the records on the provider's nameservers:
    expect_fail(records["wrong-provider-ns"], "mismatch", "customer")
    expect_fail(records["down-provider-ns"], "connect_refused", "provider")


async def test_truncated_answer_is_asked_again_over_tcp(tmp_path: Path, primary: Nsd) -> None:
    addresses = [f"10.0.1.{i}" for i in range(1, BIG + 1)]
    records = await run_once(tmp_path, check("big", primary, name="big.probe.test",
                                             expect={"addresses": addresses})
                             + check("small", primary, name="www.probe.test"))
    record = records["big"]
    assert record.outcome == "ok", record.failure
    assert record.details["tcp_fallback"] == primary.address
    answered = str(record.details["answers"]).split("=", 1)[1].split(",")
    assert len(answered) == BIG
    assert "tcp_fallback" not in records["small"].details


# ---- several servers: consistency, discovery ------------------------------------------------------

async def test_consistent_servers(tmp_path: Path, primary: Nsd, replica: Nsd) -> None:
    records = await run_once(tmp_path, check("pair", primary, replica, name="www.probe.test",
                                             consistent=True, expect={"addresses": WWW}))
    record = records["pair"]
    assert record.outcome == "ok", record.failure
    assert list(record.phases) == [f"query {primary.address}", f"query {replica.address}",
                                   f"soa {primary.address}", f"soa {replica.address}"]
    assert record.value == max(record.phases[f"query {primary.address}"],
                               record.phases[f"query {replica.address}"])
    assert record.details["serials"] == f"{primary.address}=2; {replica.address}=2"
    assert record.details["rcode"] == "NOERROR"


async def test_servers_disagreeing_are_inconsistent(tmp_path: Path, primary: Nsd, stale: Nsd) -> None:
    records = await run_once(
        tmp_path,
        # both answers meet the expectation, but they differ, and so do the serials
        check("www", primary, stale, name="www.probe.test", consistent=True,
              expect={"addresses": ["192.0.2.10"], "match": "any"})
        # same answer, different serials
        + check("other", primary, stale, name="other.probe.test", consistent=True)
        # without consistent = true, a difference the expectation allows is fine
        + check("lenient", primary, stale, name="www.probe.test",
                expect={"addresses": ["192.0.2.10"], "match": "any"})
        # and a difference the expectation does not allow is a mismatch at that server
        + check("strict", primary, stale, name="www.probe.test", consistent=True,
                expect={"addresses": WWW}))
    p, s = primary.address, stale.address
    message = expect_fail(records["www"], "inconsistent", "customer")
    assert message == (f"servers disagree: {p}=192.0.2.10,192.0.2.11; {s}=192.0.2.10; "
                       f"SOA serials differ: {p}=2; {s}=1")
    assert records["www"].details["answers"] == f"{p}=192.0.2.10,192.0.2.11; {s}=192.0.2.10"
    assert records["www"].details["serials"] == f"{p}=2; {s}=1"
    assert records["www"].details["binding"] == "as_expected"
    message = expect_fail(records["other"], "inconsistent", "customer")
    assert message == f"SOA serials differ: {p}=2; {s}=1"
    assert records["lenient"].outcome == "ok", records["lenient"].failure
    assert "serials" not in records["lenient"].details
    message = expect_fail(records["strict"], "mismatch", "customer")
    assert message.startswith(f"{s}: www.probe.test A is 192.0.2.10; expected equal to ")
    assert "servers disagree" in message  # every problem is named, the binding's first
    assert records["strict"].details["binding"] == "elsewhere"


async def test_servers_discovered_from_the_zone(tmp_path: Path, primary: Nsd) -> None:
    # nsd stands in for a resolver: it answers NS and A queries for its own zone.
    records = await run_once(
        tmp_path,
        check("by-zone", name="www.probe.test", zone="probe.test", resolvers=[primary.address],
              port=primary.port, expect={"addresses": WWW})
        + check("by-name", name="chain.probe.test", resolvers=[primary.address], port=primary.port,
                consistent=True, expect={"cname": "www.probe.test"})
        + check("no-zone", name="www.gone.probe.test", zone="gone.probe.test",
                resolvers=[primary.address], port=primary.port))
    discovered = f"127.0.0.1:{primary.port}"
    record = records["by-zone"]
    assert record.outcome == "ok", record.failure
    assert record.target == "www.probe.test A @NS probe.test"
    assert list(record.phases) == ["discover", f"query {discovered}"]
    assert record.details["zone"] == "probe.test"
    assert record.details["nameservers"] == "ns1.probe.test=127.0.0.1"
    assert record.details["servers"] == discovered
    record = records["by-name"]
    assert record.outcome == "ok", record.failure
    assert record.target == "chain.probe.test A @NS"
    assert record.details["zone"] == "probe.test"
    assert record.details["serials"] == f"{discovered}=2"
    message = expect_fail(records["no-zone"], "nxdomain", "customer")
    assert message == "discovery: the zone gone.probe.test does not exist (NXDOMAIN at the resolvers)"
    assert records["no-zone"].details["binding"] == "elsewhere"
    assert list(records["no-zone"].phases) == ["discover"]


async def test_discovery_through_a_dead_resolver_is_the_probes_error(tmp_path: Path) -> None:
    records = await run_once(tmp_path, check("blind", name="www.probe.test", zone="probe.test",
                                             resolvers=[f"127.0.0.1:{free_port()}"],
                                             server_timeout="200ms"))
    record = records["blind"]
    assert record.outcome == "error"
    assert record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("discovery_failed", "probe")
    assert record.details["binding"] == "unknown"
    assert record.phases["discover"] < 1.5


async def test_host_names_in_servers_are_resolved(tmp_path: Path, primary: Nsd) -> None:
    records = await run_once(tmp_path, check("named", f"localhost:{primary.port}", name="www.probe.test",
                                             expect={"addresses": WWW})
                             + check("unknown", f"nonexistent.invalid:{primary.port}", name="www.probe.test"))
    record = records["named"]
    assert record.outcome == "ok", record.failure
    assert list(record.phases) == ["discover", f"query localhost:{primary.port}"]
    message = expect_fail(records["unknown"], "resolve_failed", "unknown")
    assert message.startswith(f"nonexistent.invalid:{primary.port}: cannot resolve nonexistent.invalid")


# ---- the zone changes while the check runs --------------------------------------------------------

async def test_zone_edited_and_reloaded_while_the_check_runs(tmp_path: Path, nsd_factory: NsdFactory) -> None:
    from tests.servers.nsd import zone_text
    server = nsd_factory.start("editable", zones(1, "www IN A 192.0.2.10"))
    try:
        plugins = host()
        profile = load_profile(write_profile(tmp_path, HEAD + check(
            "site-dns", server, name="www.probe.test", interval="200ms", retry_interval="200ms", timeout="150ms",
            server_timeout="100ms", expect={"addresses": ["192.0.2.10"]})), plugins.probes)
        seen: list[SLIRecord] = []

        def observed(record: SLIRecord, events: Sequence[object]) -> None:
            seen.append(record)

        async def wait_for(count: int) -> None:
            with trio.fail_after(5):
                while len(seen) < count:
                    await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_profile(
                profile, plugins, MemoryStore(),
                RunOptions(handle_signals=False, vantage="test", flush_interval=0.05),
                on_observed=[observed]))
            await wait_for(2)
            assert [r.outcome for r in seen] == ["ok", "ok"]
            # The customer repoints www while the check keeps running.
            await trio.to_thread.run_sync(server.set_zone, ZONE, zone_text(ZONE, 2, "www IN A 203.0.113.99"))
            reloaded = datetime.now(timezone.utc)  # nsd serves the new zone from now on
            with trio.fail_after(5):
                while not any(r.started > reloaded for r in seen):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        after = next(r for r in seen if r.started > reloaded)
        message = expect_fail(after, "mismatch", "customer")
        assert "www.probe.test A is 203.0.113.99" in message
        assert after.details["answers"] == f"{server.address}=203.0.113.99"
    finally:
        server.stop()


# ---- DNSSEC, against a real validating resolver ----------------------------------------------------

@pytest.fixture(scope="module")
def signed(nsd_factory: NsdFactory, tmp_path_factory: pytest.TempPathFactory) -> tuple[Nsd, str]:
    """nsd serving probe.test signed (with one record altered after signing) and plain.test
    unsigned; and the DS record of probe.test's key."""
    from tests.servers.nsd import zone_text
    from tests.servers.unbound import sign_zone
    text, ds = sign_zone(tmp_path_factory.mktemp("keys"), ZONE, zone_text(ZONE, 1, """
        www      IN A 192.0.2.10
        tampered IN A 192.0.2.66
        """))
    assert "192.0.2.66" in text
    text = text.replace("192.0.2.66", "192.0.2.67")  # its signature no longer matches
    server = nsd_factory.start("signed", {ZONE: text,
                                          "plain.test": zone_text("plain.test", 1, "www IN A 192.0.2.30")})
    return server, ds


@pytest.fixture(scope="module")
def validator(unbound_factory: UnboundFactory, signed: tuple[Nsd, str]) -> Unbound:
    server, ds = signed
    return unbound_factory.start("validator", {ZONE: server.address, "plain.test": server.address}, [ds])


async def test_dnssec_requires_ad_from_a_validating_resolver(
        tmp_path: Path, signed: tuple[Nsd, str], validator: Unbound) -> None:
    server = signed[0]
    closed = f"127.0.0.1:{free_port()}"
    records = await run_once(
        tmp_path,
        check("signed", server, name="www.probe.test", dnssec=True, resolvers=[validator.address],
              expect={"addresses": ["192.0.2.10"]})
        + check("unsigned", server, name="www.plain.test", dnssec=True, resolvers=[validator.address])
        + check("bogus", server, name="tampered.probe.test", dnssec=True, resolvers=[validator.address])
        + check("no-resolver", server, name="www.probe.test", dnssec=True, resolvers=[closed],
                server_timeout="300ms"))
    record = records["signed"]
    assert record.outcome == "ok", record.failure
    assert list(record.phases) == [f"query {server.address}", f"validate {validator.address}"]
    assert record.details["ad"] is True
    assert record.value == record.phases[f"query {server.address}"]  # authoritative answers only
    record = records["unsigned"]
    message = expect_fail(record, "insecure", "customer")
    assert message == f"resolver {validator.address}: www.plain.test A (NOERROR) is not validated (no AD flag)"
    assert record.details["ad"] is False
    assert record.details["binding"] == "as_expected"
    record = records["bogus"]
    message = expect_fail(record, "bogus", "customer")
    assert message.startswith(f"resolver {validator.address}: tampered.probe.test A fails DNSSEC "
                              "validation (EDE ")
    assert record.details["answers"] == f"{server.address}=192.0.2.67"  # the server still answers
    # The probe's own resolver is down: it cannot judge.
    record = records["no-resolver"]
    assert record.outcome == "error"
    assert record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("resolver_unreachable", "probe")
    assert record.details["binding"] == "as_expected"


# ---- profile validation ---------------------------------------------------------------------------

@pytest.mark.parametrize(("keys", "expected"), [
    pytest.param('type = "AXFR"', 'key "type": expected a record type like', id="type"),
    pytest.param('expect = { addresses = ["192.0.2.300"] }',
                 'key "expect.addresses.0": expected an IPv4 address, got "192.0.2.300"', id="address"),
    pytest.param('expect = { match = "some" }', 'key "expect.match"', id="match"),
    pytest.param('expect = { colour = "red" }', 'key "expect.colour": unknown key', id="expect-key"),
    pytest.param('servers = ["127.0.0.1:99999"]', 'key "servers.0": expected a port from 1 to 65535',
                 id="port"),
    pytest.param('resolvers = ["dns.example"]', 'key "resolvers.0": expected an IP address', id="resolver"),
    pytest.param("dnssec = true", 'key "dnssec": needs "resolvers"', id="dnssec"),
    pytest.param('zone_owner = "me"', 'key "zone_owner"', id="owner"),
    pytest.param('zone = "example.org"', 'key "zone": "example.org" does not contain the name', id="zone"),
])
def test_profile_errors_name_the_key(tmp_path: Path, keys: str, expected: str) -> None:
    path = write_profile(tmp_path, HEAD + f'[[check]]\nid = "d"\nprobe = "dns"\nname = "www.probe.test"\n{keys}\n')
    with pytest.raises(ProfileError) as caught:
        load_profile(path, host().probes)
    message = str(caught.value)
    assert message.startswith(f'{path}: check "d": '), message
    assert expected in message, message
    assert "\n" not in message


# ---- probe run --once ------------------------------------------------------------------------------

def test_probe_run_once_gate(tmp_path: Path, primary: Nsd) -> None:
    path = write_profile(tmp_path, HEAD + check("site-dns", primary, name="www.probe.test",
                                                expect={"addresses": WWW})
                         + check("moved", primary, name="elsewhere.probe.test",
                                 expect={"addresses": WWW}))
    store = f"sqlite:{tmp_path / 'dns.sqlite3'}"
    env = {**os.environ, "PROBECORE_DATA_DIR": str(tmp_path / "data")}
    run = subprocess.run([sys.executable, "-m", "probecore", "run", "--once", str(path), "--store", store],
                         env=env, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    stderr = run.stderr.decode()
    assert run.returncode == 1, stderr
    assert "Traceback" not in stderr
    records = {r["check"]: r for r in assert_valid_records(run.stdout.splitlines())}
    assert set(records) == {"dns-test/site-dns", "dns-test/moved"}
    ok, moved = records["dns-test/site-dns"], records["dns-test/moved"]
    assert ok["outcome"] == "ok"
    assert ok["details"]["binding"] == "as_expected"
    assert moved["outcome"] == "fail"
    assert moved["failure"]["code"] == "mismatch"
    assert moved["failure"]["attribution"] == "customer"
    assert moved["details"]["binding"] == "elsewhere"
    assert moved["details"]["answers"] == f"{primary.address}=198.51.100.7"
    assert "2 checks: 1 ok, 1 not ok" in " ".join(stderr.split())
