"""The ``power`` probe kind against a real NUT upsd with dummy-ups drivers, through the real runner.

Real sockets, so real time (no MockClock). The upsd is shared by the session; tests that change a
UPS's status get it put back by the ``nut`` fixture.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
import trustme
from probecore_plugins.power import judge_nut, judge_snmp

from probecore import ProfileError, SLIRecord, load_profile
from probecore._runner import RunOptions, run_profile
from probecore.testing import MemoryStore, make_host, write_profile
from tests.conftest import assert_valid_records
from tests.servers import free_port

if TYPE_CHECKING:
    from tests.servers.nut import Nut
    from tests.servers.redfish import Redfish
    from tests.servers.snmpd import Snmpd

pytest_plugins = ["tests.servers.nut", "tests.servers.snmpd", "tests.servers.redfish"]

BUILTINS = ("probecore_plugins.power",)
HEAD = """\
[profile]
name = "pw"

[defaults]
interval = "1m"
timeout = "3s"
confirm = 1
"""


def power_check(sources: str, extra: str = "", group: str = 'group = "any"') -> str:
    return f'[[check]]\nid = "power"\nprobe = "power"\n{group}\n{extra}\nsources = [\n{sources}\n]\n'


def host():  # type: ignore[no-untyped-def]
    return make_host(builtins=BUILTINS)


async def run_once(tmp_path: Path, checks: str) -> dict[str, SLIRecord]:
    """Run *checks* once; every stored record (members and rounds) by check id without profile."""
    plugins = host()
    profile = load_profile(write_profile(tmp_path, HEAD + checks), plugins.probes)
    store = MemoryStore()
    await run_profile(profile, plugins, store, RunOptions(once=True, handle_signals=False, vantage="t"))
    return {r.check.split("/", 1)[1]: r for r in store.records()}


def src(url: str, role: str = "ups", **extra: str) -> str:
    keys = "".join(f", {k} = {v}" for k, v in extra.items())
    return f'  {{ url = "{url}", role = "{role}"{keys} }},'


# ---- readings ---------------------------------------------------------------------------------


async def test_online_ups_reading(tmp_path: Path, nut: Nut) -> None:
    records = await run_once(tmp_path, power_check(src(nut.url("ups1"))))
    assert set(records) == {"power", "power:ups1"}
    member, round_ = records["power:ups1"], records["power"]
    assert member.outcome == "ok" and member.failure is None
    assert (member.value, member.unit) == (1.0, "bool")
    assert member.probe == "power"
    assert member.target == f"nut://ups1@127.0.0.1:{nut.port}"
    assert list(member.phases) == ["connect", "read"]
    assert member.details == {
        "role": "ups", "protocol": "nut", "status": "OL", "on_battery": False,
        "low_battery": False, "battery_charge": 100, "battery_runtime": 1800,
        "input_voltage": 230.0, "output_voltage": 229.5, "load": 12}
    assert round_.outcome == "ok"
    assert (round_.value, round_.unit) == (1.0, "sources")
    assert list(round_.phases) == ["sources"]
    assert round_.details["sources_delivering"] == 1
    assert round_.details["on_battery"] is False
    assert round_.details["probecore.group"] == "any"


async def test_state_sequence_shows_up_in_order_while_the_probe_runs(tmp_path: Path, nut: Nut) -> None:
    """OL → OB → OB LB → OFF → OL, changed on the real upsd while a continuous run probes it."""
    sequence = ["OL", "OB", "OB LB", "OFF", "OL"]
    plugins = host()
    text = HEAD.replace('interval = "1m"', 'interval = "200ms"').replace('timeout = "3s"', 'timeout = "150ms"')
    profile = load_profile(write_profile(tmp_path, text + power_check(src(nut.url("ups1")))), plugins.probes)
    seen: list[SLIRecord] = []
    arrived = trio.Event()

    def observed(record: SLIRecord, events: object) -> None:
        nonlocal arrived
        seen.append(record)
        arrived.set()
        arrived = trio.Event()

    async def drive(cancel: trio.CancelScope) -> None:
        for step, status in enumerate(sequence):
            if step:
                await trio.to_thread.run_sync(nut.set_status, "ups1", status)
            # Two member records that show the new status: the records follow the UPS.
            while sum(1 for r in seen if r.check == "pw/power:ups1"
                      and r.details.get("status") == status
                      and seen.index(r) > last_change[0]) < 2:
                await arrived.wait()
            last_change[0] = len(seen) - 1
        cancel.cancel()

    last_change = [-1]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drive, nursery.cancel_scope)
            await run_profile(profile, plugins, MemoryStore(), RunOptions(
                handle_signals=False, vantage="t", flush_interval=0.05), on_observed=[observed])

    members = [r for r in seen if r.check == "pw/power:ups1"]
    rounds = [r for r in seen if r.check == "pw/power"]
    statuses = [r.details["status"] for r in members]
    changes = [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]
    assert changes == sequence, statuses
    for record in members:
        status = record.details["status"]
        assert record.details["on_battery"] is ("OB" in status)
        assert record.details["low_battery"] is ("LB" in status)
        if status == "OFF":
            assert record.outcome == "fail" and record.value == 0.0
            assert record.failure.code == "no_power" and record.failure.attribution == "provider"
        else:
            assert record.outcome == "ok" and record.value == 1.0, record.failure
    # The round follows: on battery is ok but reported; OFF (the only source) is an outage.
    round_view = [(r.outcome, r.details["on_battery"]) for r in rounds]
    collapsed = [v for i, v in enumerate(round_view) if i == 0 or round_view[i - 1] != v]
    assert collapsed == [("ok", False), ("ok", True), ("fail", False), ("ok", False)]


@pytest.mark.parametrize(("status", "outcome", "code", "on_battery"), [
    ("OL", "ok", None, False),
    ("OL CHRG", "ok", None, False),
    ("OL BYPASS", "ok", None, False),
    ("OB DISCHRG", "ok", None, True),
    ("OB LB", "ok", None, True),
    ("OL OFF", "fail", "no_power", False),
    ("OFF", "fail", "no_power", False),
    ("FSD OB LB", "fail", "no_power", True),
    ("WAIT", "error", "unreachable", False),
    ("", "error", "unreachable", False),
    ("ALARM", "error", "protocol", False),
])
def test_status_mapping(status: str, outcome: str, code: str | None, on_battery: bool) -> None:
    obs = judge_nut({"ups.status": status, "battery.charge": "55.5"}, "nut://u@h:1", {"role": "ups"})
    assert obs.outcome == outcome
    assert (obs.failure.code if obs.failure else None) == code
    assert obs.details["on_battery"] is on_battery
    assert obs.details["battery_charge"] == 55.5
    assert obs.value == {"ok": 1.0, "fail": 0.0, "error": None}[outcome]


# ---- any of several sources -------------------------------------------------------------------


async def test_any_of_two_sources_one_without_power_stays_ok(tmp_path: Path, nut: Nut) -> None:
    nut.set_statuses({"ups1": "OFF", "ups2": "OB"})
    records = await run_once(tmp_path, power_check(
        src(nut.url("ups1"), "mains") + "\n" + src(nut.url("ups2"), "ups")))
    assert records["power:ups1"].outcome == "fail"
    assert records["power:ups1"].failure.code == "no_power"
    assert records["power:ups1"].details["role"] == "mains"
    assert records["power:ups2"].outcome == "ok"
    round_ = records["power"]
    assert round_.outcome == "ok"
    assert round_.value == 1.0
    assert round_.details["on_battery"] is True
    assert round_.details["probecore.members_failed"] == 1
    assert round_.target == f"nut://ups1@127.0.0.1:{nut.port}, nut://ups2@127.0.0.1:{nut.port}"


async def test_any_of_two_sources_both_without_power_is_a_no_power_round(tmp_path: Path, nut: Nut) -> None:
    nut.set_statuses({"ups1": "OFF", "ups2": "OB LB FSD"})
    records = await run_once(tmp_path, power_check(
        src(nut.url("ups1"), "mains") + "\n" + src(nut.url("ups2"), "ups")))
    assert [records[m].failure.code for m in ("power:ups1", "power:ups2")] == ["no_power", "no_power"]
    round_ = records["power"]
    assert round_.outcome == "fail"
    assert round_.value == 0.0
    assert round_.failure.attribution == "provider"
    assert round_.failure.code == "no_power"  # every source failed for the same reason
    assert round_.failure.message == "2 of 2 members failed (any): ups1: no_power; ups2: no_power"


async def test_unreachable_source_is_no_evidence(tmp_path: Path, nut: Nut) -> None:
    closed = free_port()
    records = await run_once(tmp_path, power_check(
        src(f"nut://ups1@127.0.0.1:{closed}", "mains", name='"mains"') + "\n" + src(nut.url("ups2"))))
    mains = records["power:mains"]
    assert mains.outcome == "error"
    assert mains.failure.code == "unreachable" and mains.failure.attribution == "probe"
    assert "connection refused" in mains.failure.message
    assert mains.value is None
    assert records["power:ups2"].outcome == "ok"
    assert records["power"].outcome == "ok"
    assert records["power"].details["probecore.members_error"] == 1


async def test_all_sources_unreachable_is_an_error_round_not_an_outage(tmp_path: Path) -> None:
    records = await run_once(tmp_path, power_check(src(f"nut://ups1@127.0.0.1:{free_port()}")))
    assert records["power:ups1"].failure.code == "unreachable"
    assert records["power"].outcome == "error"


async def test_hung_source_is_unreachable_after_source_timeout(tmp_path: Path, nut: Nut) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        records = await run_once(tmp_path, power_check(
            src(f"nut://ups1@127.0.0.1:{port}", name='"hung"') + "\n" + src(nut.url("ups2")),
            extra='source_timeout = "300ms"'))
        nursery.cancel_scope.cancel()
    hung = records["power:hung"]
    assert hung.outcome == "error" and hung.failure.code == "unreachable"
    assert hung.failure.message == f"nut://ups1@127.0.0.1:{port}: no answer within 0.3s (during read)"
    assert 0.25 < hung.phases["read"] < 1.0
    assert records["power:ups2"].outcome == "ok"
    assert records["power"].outcome == "ok"


async def test_stale_data_is_unreachable(tmp_path: Path) -> None:
    async def stale(stream: trio.SocketStream) -> None:
        await stream.receive_some(100)
        await stream.send_all(b"ERR DATA-STALE\n")
        await stream.receive_some(100)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, stale, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        records = await run_once(tmp_path, power_check(src(f"nut://ups1@127.0.0.1:{port}")))
        nursery.cancel_scope.cancel()
    member = records["power:ups1"]
    assert member.outcome == "error" and member.failure.code == "unreachable"
    assert "DATA-STALE" in member.failure.message


async def test_garbage_server_is_protocol(tmp_path: Path) -> None:
    async def garbage(stream: trio.SocketStream) -> None:
        await stream.receive_some(100)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await stream.receive_some(100)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, garbage, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        records = await run_once(tmp_path, power_check(src(f"nut://ups1@127.0.0.1:{port}")))
        nursery.cancel_scope.cancel()
    member = records["power:ups1"]
    assert member.outcome == "error" and member.failure.code == "protocol"
    assert "BEGIN LIST VAR ups1" in member.failure.message


async def fake_tls_upsd(nursery: trio.Nursery, cert_dir: Path) -> int:
    """A scripted upsd that speaks STARTTLS with a trustme certificate for 127.0.0.1."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(cert_dir / "ca.pem"))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            if (await stream.receive_some(100)).strip() != b"STARTTLS":
                await stream.send_all(b"ERR FEATURE-NOT-CONFIGURED\n")
                return
            await stream.send_all(b"OK STARTTLS\n")
            tls = trio.SSLStream(stream, server_ctx, server_side=True, https_compatible=True)
            try:
                await tls.do_handshake()
                assert (await tls.receive_some(100)).strip() == b"LIST VAR ups1"
                await tls.send_all(b'BEGIN LIST VAR ups1\nVAR ups1 ups.status "OB"\nEND LIST VAR ups1\n')
                await tls.receive_some(100)
                await tls.send_all(b"OK Goodbye\n")
            except trio.BrokenResourceError:
                return

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


@pytest.mark.parametrize(("keys", "outcome"), [
    ({"tls": '"starttls"', "ca_file": "CA"}, "ok"),
    ({"tls": '"starttls"', "verify": "false"}, "ok"),
    ({"tls": '"starttls"'}, "error"),                # not trusted by the system's CAs
])
async def test_starttls(tmp_path: Path, keys: dict[str, str], outcome: str) -> None:
    async with trio.open_nursery() as nursery:
        port = await fake_tls_upsd(nursery, tmp_path)
        keys = {k: (f'"{tmp_path / "ca.pem"}"' if v == "CA" else v) for k, v in keys.items()}
        records = await run_once(tmp_path, power_check(src(f"nut://ups1@127.0.0.1:{port}", **keys)))
        nursery.cancel_scope.cancel()
    member = records["power:ups1"]
    assert member.outcome == outcome, member.failure
    if outcome == "ok":
        assert list(member.phases) == ["connect", "tls", "read"]
        assert member.details["on_battery"] is True
    else:
        assert member.failure.code == "protocol"
        assert "TLS" in member.failure.message and "certificate verify failed" in member.failure.message


# ---- credentials and names --------------------------------------------------------------------


async def test_right_credentials_log_in(tmp_path: Path, nut: Nut, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW_NUT_PASSWORD", nut.monitor[1])
    records = await run_once(tmp_path, power_check(src(
        nut.url("ups1"), username=f'"{nut.monitor[0]}"', password='{ env = "PW_NUT_PASSWORD" }')))
    member = records["power:ups1"]
    assert member.outcome == "ok", member.failure
    assert list(member.phases) == ["connect", "login", "read"]


@pytest.mark.parametrize(("user", "password"), [("monitor", "wrong"), ("nobody", "x"),
                                                 ("admin", "admin-secret")])  # admin: no LOGIN right
async def test_refused_credentials_are_auth(tmp_path: Path, nut: Nut, monkeypatch: pytest.MonkeyPatch,
                                            user: str, password: str) -> None:
    monkeypatch.setenv("PW_NUT_PASSWORD", password)
    records = await run_once(tmp_path, power_check(src(
        nut.url("ups1"), username=f'"{user}"', password='{ env = "PW_NUT_PASSWORD" }')))
    member = records["power:ups1"]
    assert member.outcome == "error"
    assert member.failure.code == "auth"
    assert "ACCESS-DENIED" in member.failure.message and f"user {user}" in member.failure.message
    assert password not in member.failure.message or password == "x"
    assert records["power"].outcome == "error"


async def test_missing_password_secret_is_auth(tmp_path: Path, nut: Nut, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PW_NO_SUCH_VAR", raising=False)
    records = await run_once(tmp_path, power_check(src(
        nut.url("ups1"), username='"monitor"', password='{ env = "PW_NO_SUCH_VAR" }')))
    member = records["power:ups1"]
    assert member.failure.code == "auth" and "PW_NO_SUCH_VAR is not set" in member.failure.message


async def test_unknown_ups_is_not_found_and_names_the_ones_there(tmp_path: Path, nut: Nut) -> None:
    records = await run_once(tmp_path, power_check(src(nut.url("nosuch"))))
    member = records["power:nosuch"]
    assert member.outcome == "error"
    assert member.failure.code == "not_found"
    assert member.failure.message.endswith("has no UPS 'nosuch' (ERR UNKNOWN-UPS); it has: ups1, ups2")


# ---- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("sources", "extra", "expected"), [
    (src("http://ups1@127.0.0.1"), "", "scheme 'http' is not supported"),
    (src("nut://127.0.0.1"), "", "expected nut://UPS@HOST[:PORT]"),
    (src("nut://ups1:pw@127.0.0.1"), "", "no password in the url"),
    (src("nut://ups1@127.0.0.1", role="battery"), "", 'key "sources.0.role"'),
    (src("nut://ups1@127.0.0.1", colour='"red"'), "", "colour"),
    (src("nut://ups1@127.0.0.1", password='{ env = "X" }'), "", "a password needs a username"),
    (src("nut://ups1@127.0.0.1", password='"literal"', username='"u"'), "", "not a literal string"),
    (src("nut://ups1@10.0.0.1") + "\n" + src("nut://ups1@10.0.0.2"), "", "two sources are named 'ups1'"),
    (src("nut://ups1@127.0.0.1", name='"a:b"'), "", 'key "sources.0.name"'),
    ("", "", 'key "sources"'),
    (src("snmp://127.0.0.1", username='"u"', auth_protocol='"XYZ"'), "", 'key "sources.0.auth_protocol"'),
    (src("nut://ups1@127.0.0.1", community='{ env = "X" }'), "", "'community' is not for nut://"),
    (src("snmp://127.0.0.1", tls='"starttls"'), "", "'tls' is not for snmp://"),
    (src("snmp://ups1@127.0.0.1"), "", "expected nut://UPS@HOST[:PORT], snmp://HOST[:PORT] or redfish://"),
    (src("redfish://127.0.0.1"), "", "expected redfish://HOST[:PORT]/redfish/v1/Chassis/ID"),
    (src("snmp://127.0.0.1", auth='"session"'), "", "'auth' is not for snmp://"),
])
def test_bad_config_is_a_profile_error(tmp_path: Path, sources: str, extra: str, expected: str) -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile(write_profile(tmp_path, HEAD + power_check(sources, extra)), host().probes)
    message = str(caught.value)
    assert 'check "power"' in message
    assert expected in message, message


# ---- SNMP UPS-MIB (RFC 1628) against a real snmpd ---------------------------------------------


async def test_snmp_v2c_reading(tmp_path: Path, snmpd: Snmpd) -> None:
    records = await run_once(tmp_path, power_check(src(snmpd.url, "ups", name='"snmp-ups"')))
    member = records["power:snmp-ups"]
    assert member.outcome == "ok", member.failure
    assert (member.value, member.unit) == (1.0, "bool")
    assert member.target == f"snmp://127.0.0.1:{snmpd.port}"
    assert list(member.phases) == ["read"]
    assert member.details == {
        "role": "ups", "protocol": "snmp", "status": "normal", "on_battery": False,
        "low_battery": False, "battery_status": "batteryNormal", "battery_charge": 100,
        "seconds_on_battery": 0, "input_voltage": 230, "output_voltage": 229, "load": 12,
        "input_line_bads": 0, "battery_runtime": 1800}
    assert records["power"].outcome == "ok"


async def test_snmp_sources_of_a_round_share_an_engine_that_is_closed_after(
        tmp_path: Path, snmpd: Snmpd, monkeypatch: pytest.MonkeyPatch) -> None:
    """30 sources read at once through one pysnmp engine (an engine each took 10 s here, past
    their source_timeout); once they are done no engine and no pysnmp task is left."""
    import asyncio

    from pysnmp.hlapi.v3arch import asyncio as hl

    import probecore
    from probecore_plugins.power import _snmp

    built: list[object] = []

    class CountedEngine(hl.SnmpEngine):  # the real engine, counted
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(hl, "SnmpEngine", CountedEngine)
    sources = "\n".join(src(snmpd.url, "ups", name=f'"s{i}"') for i in range(30))
    records = await run_once(tmp_path, power_check(sources, 'source_timeout = "10s"'))
    assert {records[f"power:s{i}"].outcome for i in range(30)} == {"ok"}
    assert len(built) <= 2  # one, unless a straggler starts after the others are all done

    async def left() -> tuple[int, list[str]]:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        return len(_snmp._ENGINES.get(loop, {})), [repr(t) for t in asyncio.all_tasks() if t is not me]

    assert await probecore.run_asyncio(left) == (0, [])


@pytest.mark.parametrize(("values", "outcome", "code", "status"), [
    ({"upsOutputSource": 5, "upsBatteryStatus": 3, "upsInputLineBads": 4}, "ok", None, "battery"),
    ({"upsOutputSource": 4}, "ok", None, "bypass"),
    ({"upsOutputSource": 2, "upsBatteryStatus": 4}, "fail", "no_power", "none"),
    ({"upsOutputSource": 1}, "error", "protocol", "other"),
    ({"upsOutputSource": None}, "error", "not_found", None),
])
async def test_snmp_states(tmp_path: Path, snmpd: Snmpd, values: dict, outcome: str,
                           code: str | None, status: str | None) -> None:
    snmpd.set(**values)
    records = await run_once(tmp_path, power_check(src(snmpd.url, "mains")))
    member = records["power:mains"]
    assert member.outcome == outcome
    assert (member.failure.code if member.failure else None) == code
    assert member.details["status"] == status
    assert member.details["on_battery"] is (status == "battery")
    if "upsInputLineBads" in values:
        assert member.details["input_line_bads"] == 4 and member.details["low_battery"] is True


async def test_snmp_v3_auth_priv(tmp_path: Path, snmpd: Snmpd, monkeypatch: pytest.MonkeyPatch) -> None:
    user, auth, priv = snmpd.v3
    monkeypatch.setenv("PW_V3_AUTH", auth)
    monkeypatch.setenv("PW_V3_PRIV", priv)
    records = await run_once(tmp_path, power_check(src(
        snmpd.url, username=f'"{user}"', password='{ env = "PW_V3_AUTH" }',
        priv_password='{ env = "PW_V3_PRIV" }', auth_protocol='"SHA"', priv_protocol='"AES"')))
    assert records["power:ups"].outcome == "ok", records["power:ups"].failure


@pytest.mark.parametrize(("user", "auth", "words"), [
    ("probev3", "wrong-pass-123", "digest"), ("nobody", "wrong-pass-123", "Unknown USM user")])
async def test_snmp_v3_refused_is_auth(tmp_path: Path, snmpd: Snmpd, monkeypatch: pytest.MonkeyPatch,
                                       user: str, auth: str, words: str) -> None:
    monkeypatch.setenv("PW_V3_AUTH", auth)
    monkeypatch.setenv("PW_V3_PRIV", snmpd.v3[2])
    records = await run_once(tmp_path, power_check(src(
        snmpd.url, username=f'"{user}"', password='{ env = "PW_V3_AUTH" }',
        priv_password='{ env = "PW_V3_PRIV" }')))
    member = records["power:ups"]
    assert member.outcome == "error" and member.failure.code == "auth"
    assert words in member.failure.message


async def test_snmp_wrong_community_is_unreachable(tmp_path: Path, snmpd: Snmpd,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW_COMMUNITY", "not-public")
    records = await run_once(tmp_path, power_check(
        src(snmpd.url, community='{ env = "PW_COMMUNITY" }'), extra='source_timeout = "600ms"'))
    member = records["power:ups"]
    assert member.outcome == "error" and member.failure.code == "unreachable"
    assert "wrong community" in member.failure.message
    assert "not-public" not in member.failure.message


async def test_any_of_nut_and_snmp(tmp_path: Path, nut: Nut, snmpd: Snmpd) -> None:
    nut.set_status("ups1", "OFF")
    snmpd.set(upsOutputSource=5)
    sources = src(nut.url("ups1"), "mains") + "\n" + src(snmpd.url, "ups")
    records = await run_once(tmp_path, power_check(sources))
    assert records["power:ups1"].failure.code == "no_power"
    assert records["power:ups"].details["on_battery"] is True
    assert records["power"].outcome == "ok" and records["power"].details["on_battery"] is True
    snmpd.set(upsOutputSource=2)
    records = await run_once(tmp_path, power_check(sources))
    assert records["power"].outcome == "fail"
    assert records["power"].failure.message.endswith("ups1: no_power; ups: no_power")


def test_snmp_mapping_without_agent() -> None:
    obs = judge_snmp({"upsOutputSource": 6, "upsEstimatedMinutesRemaining": 7}, "snmp://h:1", {})
    assert obs.outcome == "ok" and obs.details["status"] == "booster"
    assert obs.details["battery_runtime"] == 420


# ---- Redfish (a static mockup over HTTPS) -----------------------------------------------------


def rf_src(redfish: Redfish, url: str, **extra: str) -> str:
    keys = {"username": f'"{redfish.username}"', "password": '{ env = "PW_RF_PASSWORD" }',
            "ca_file": f'"{redfish.ca_file}"', **extra}
    return src(url, "mains", **keys)


@pytest.fixture
def rf_password(monkeypatch: pytest.MonkeyPatch, redfish: Redfish) -> None:
    monkeypatch.setenv("PW_RF_PASSWORD", redfish.password)


@pytest.mark.usefixtures("rf_password")
@pytest.mark.parametrize("auth", ["basic", "session"])
async def test_redfish_power_subsystem(tmp_path: Path, redfish: Redfish, auth: str) -> None:
    url = redfish.basic_url("1U") if auth == "basic" else redfish.session_url("1U")
    records = await run_once(tmp_path, power_check(rf_src(redfish, url, auth=f'"{auth}"')))
    member = records["power:mains"]
    assert member.outcome == "ok", member.failure
    assert (member.value, member.unit) == (1.0, "bool")
    assert member.target == url
    assert list(member.phases) == (["read"] if auth == "basic" else ["login", "read"])
    assert member.details["protocol"] == "redfish"
    assert member.details["resource"] == "PowerSubsystem"
    assert member.details["status"] == "PowerState=On; 2/2 supplies delivering"
    assert (member.details["supplies"], member.details["supplies_delivering"]) == (2, 2)
    if auth == "session":  # the session was deleted afterwards
        log = (redfish.directory / "access.log").read_text()
        assert "DELETE /redfish/v1/SessionService/Sessions/1" in log


@pytest.mark.usefixtures("rf_password")
async def test_redfish_states_follow_the_mockup(tmp_path: Path, redfish: Redfish) -> None:
    from tests.servers.redfish import psu

    check = power_check(rf_src(redfish, redfish.basic_url("1U")))
    base = "/redfish/v1/Chassis/1U/PowerSubsystem/PowerSupplies"
    redfish.write(f"{base}/Bay1", psu("Bay1", line="LossOfInput"))
    member = (await run_once(tmp_path, check))["power:mains"]
    assert member.outcome == "ok" and member.details["supplies_delivering"] == 1
    redfish.write(f"{base}/Bay2", psu("Bay2", state="UnavailableOffline", health="Critical"))
    member = (await run_once(tmp_path, check))["power:mains"]
    assert member.outcome == "fail" and member.failure.code == "no_power"
    assert "Bay1: Enabled/OK/LossOfInput, Bay2: UnavailableOffline/Critical/Normal" in member.failure.message
    redfish.reset()
    chassis = {"Id": "1U", "PowerState": "Off",
               "PowerSubsystem": {"@odata.id": "/redfish/v1/Chassis/1U/PowerSubsystem"}}
    redfish.write("/redfish/v1/Chassis/1U", chassis)
    member = (await run_once(tmp_path, check))["power:mains"]
    assert member.failure.code == "no_power" and "PowerState is Off" in member.failure.message


@pytest.mark.usefixtures("rf_password")
async def test_redfish_legacy_power(tmp_path: Path, redfish: Redfish) -> None:
    from tests.servers.redfish import legacy_psu

    check = power_check(rf_src(redfish, redfish.basic_url("Legacy")))
    member = (await run_once(tmp_path, check))["power:mains"]
    assert member.outcome == "ok", member.failure
    assert member.details["resource"] == "Power" and member.details["input_voltage"] == 230.0
    redfish.write("/redfish/v1/Chassis/Legacy/Power",
                  {"PowerSupplies": [legacy_psu(0, state="Absent"), legacy_psu(1, health="Critical")]})
    member = (await run_once(tmp_path, check))["power:mains"]
    assert member.outcome == "fail" and member.failure.code == "no_power"


@pytest.mark.usefixtures("rf_password")
@pytest.mark.parametrize(("chassis", "extra", "code", "words"), [
    ("NoSuch", {}, "not_found", "HTTP 404"),
    ("NoPower", {}, "not_found", "neither PowerSubsystem nor Power"),
    ("1U", {"password": '{ env = "PW_RF_WRONG" }'}, "auth", "HTTP 401"),
    ("1U", {"ca_file": None}, "protocol", "certificate verify failed"),
    ("1U", {"ca_file": '"/nonexistent/ca.pem"'}, "protocol", "TLS: no such file or directory"),
])
async def test_redfish_failures(tmp_path: Path, redfish: Redfish, monkeypatch: pytest.MonkeyPatch,
                                chassis: str, extra: dict, code: str, words: str) -> None:
    monkeypatch.setenv("PW_RF_WRONG", "wrong")
    keys = {k: v for k, v in extra.items() if v is not None}
    source = rf_src(redfish, redfish.basic_url(chassis), **keys)
    if "ca_file" in extra and extra["ca_file"] is None:
        source = source.replace(f', ca_file = "{redfish.ca_file}"', "")
    member = (await run_once(tmp_path, power_check(source)))["power:mains"]
    assert member.outcome == "error"
    assert member.failure.code == code
    assert words in member.failure.message


@pytest.mark.usefixtures("rf_password")
async def test_redfish_too_many_supplies_is_reply_too_large(tmp_path: Path, redfish: Redfish) -> None:
    """Each supply costs a request: a collection over the bound is not walked."""
    from probecore_plugins.power import _redfish

    base = "/redfish/v1/Chassis/1U/PowerSubsystem/PowerSupplies"
    count = _redfish.MAX_SUPPLIES + 1
    redfish.write(base, {"Members": [{"@odata.id": f"{base}/Bay{i}"} for i in range(count)],
                         "Members@odata.count": count})
    member = (await run_once(tmp_path, power_check(rf_src(redfish, redfish.basic_url("1U")))))["power:mains"]
    assert member.outcome == "error" and member.failure.code == "reply_too_large"
    assert f"more than {_redfish.MAX_SUPPLIES} members" in member.failure.message


async def test_redfish_unreachable(tmp_path: Path) -> None:
    url = f"redfish://127.0.0.1:{free_port()}/redfish/v1/Chassis/1U"
    member = (await run_once(tmp_path, power_check(src(url, "mains"))))["power:mains"]
    assert member.outcome == "error" and member.failure.code == "unreachable"


# ---- the CLI ----------------------------------------------------------------------------------


def test_probe_run_once_cli(tmp_path: Path, nut: Nut, snmpd: Snmpd, redfish: Redfish) -> None:
    """``probe run --once`` on a profile with NUT, SNMP and Redfish sources (and one down)."""
    nut.set_status("ups2", "OB")
    snmpd.set(upsOutputSource=2)
    sources = "\n".join([
        src(nut.url("ups1"), "mains", username='"monitor"', password='{ env = "PW_CLI_PASSWORD" }'),
        src(nut.url("ups2"), "ups"),
        src(f"nut://ups3@127.0.0.1:{free_port()}", "generator", name='"gen"'),
        src(snmpd.url, "ups", name='"snmp-ups"', community='{ env = "PW_CLI_COMMUNITY" }'),
        src(redfish.session_url("1U"), "mains", name='"bmc"', username='"admin"', auth='"session"',
            password='{ env = "PW_CLI_BMC" }', ca_file=f'"{redfish.ca_file}"'),
    ])
    path = write_profile(tmp_path, HEAD + power_check(sources))
    env = {**os.environ, "PROBECORE_DATA_DIR": str(tmp_path / "data"), "PW_CLI_PASSWORD": nut.monitor[1],
           "PW_CLI_COMMUNITY": snmpd.community, "PW_CLI_BMC": redfish.password}
    run = subprocess.run([sys.executable, "-m", "probecore", "run", "--once", str(path),
                          "--store", f"sqlite:{tmp_path / 'p.sqlite3'}"],
                         check=False, env=env, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    stderr = run.stderr.decode()
    assert run.returncode == 0, stderr
    assert "Traceback" not in stderr
    lines = run.stdout.splitlines()
    records = {r["check"]: r for r in assert_valid_records(lines)}
    assert len(lines) == len(records) == 6
    outcomes = {c.split(":", 1)[-1]: (r["outcome"], (r.get("failure") or {}).get("code"))
                for c, r in records.items()}
    assert outcomes == {"pw/power": ("ok", None), "ups1": ("ok", None), "ups2": ("ok", None),
                        "gen": ("error", "unreachable"), "snmp-ups": ("fail", "no_power"),
                        "bmc": ("ok", None)}
    assert records["pw/power:ups1"]["details"]["role"] == "mains"
    assert records["pw/power:ups2"]["details"]["on_battery"] is True
    assert records["pw/power:snmp-ups"]["details"]["status"] == "none"
    assert records["pw/power:bmc"]["details"]["protocol"] == "redfish"
    round_ = records["pw/power"]
    assert round_["value"] == 3 and round_["unit"] == "sources"
    assert round_["details"]["on_battery"] is True
    assert round_["details"]["probecore.members_failed"] == 1
    assert round_["details"]["probecore.members_error"] == 1
    for secret in (nut.monitor[1], redfish.password):
        assert secret not in run.stdout.decode() + stderr
