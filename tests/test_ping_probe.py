"""The ``ping`` probe kind: on loopback, across the network lab's impaired links (delay, loss, a cut
link, routers answering "unreachable"), through the real runner and scheduler; and ``probe run
--once`` with ping checks as a subprocess, as root and as an unprivileged user.

Real sockets, so real time (no MockClock). Only loopback and the lab's namespaces are pinged.
The in-process tests run here as root: they use a raw socket unless this namespace's
``net.ipv4.ping_group_range`` admits group 0. The subprocess tests run in the lab's host ``c``
(its own network namespace, so its own ``ping_group_range``: set for each test there, never here)
and ping across link ``ca`` to host ``a``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from probecore import ProfileError, SLIRecord, load_profile
from probecore._runner import RunOptions, run_profile
from probecore.testing import MemoryStore, make_host, write_profile
from tests.conftest import assert_valid_records

if TYPE_CHECKING:
    from tests.netlab import NetLab

pytest_plugins = ["tests.netlab"]

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ("probecore_plugins.ping",)
HEAD = """\
[profile]
name = "ping-test"

[defaults]
interval = "1m"
timeout = "5s"
confirm = 2
"""
SLACK = 0.0002        # below the injected round trip: clock reads and time stamps only
LATE_MEDIAN = 0.004   # above it, for a median (the relay's release on a busy machine)
LATE_ANY = 0.025      # above it, for any one echo
COMMAND_TIMEOUT = 60


def check(ident: str, host: str, **keys: object) -> str:
    lines = [f'[[check]]\nid = "{ident}"\nprobe = "ping"\nhost = "{host}"']
    for key, value in keys.items():
        lines.append(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"')
    return "\n".join(lines) + "\n\n"


async def run_once(tmp_path: Path, checks: str) -> dict[str, SLIRecord]:
    """Run *checks* once, concurrently, through the runner; records by check id."""
    host = make_host(builtins=PLUGINS)
    profile = load_profile(write_profile(tmp_path, HEAD + checks), host.probes)
    result = await run_profile(profile, host, MemoryStore(),
                               RunOptions(once=True, handle_signals=False, vantage="test"))
    assert len(result.records) == len(profile.checks) == result.stored_records
    return {r.check.split("/", 1)[1]: r for r in result.records}


def expected_socket() -> str:
    """What this (root) process gets: a datagram socket if group 0 may use one, else raw."""
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ping_group_range").read_text().split())
    return "dgram" if low <= 0 <= high else "raw"


def failure(record: SLIRecord) -> tuple[str, str]:
    assert record.failure is not None, record
    return record.failure.code, record.failure.attribution


def ms(values: list[float]) -> str:
    return ", ".join(f"{v * 1000:.3f}" for v in sorted(values)) + " ms"


# ---- loopback and configuration ------------------------------------------------------------------

async def test_loopback_v4_and_v6_are_ok_with_ping_statistics(tmp_path: Path) -> None:
    records = await run_once(tmp_path, check("v4", "127.0.0.1", count=3, spacing="20ms")
                             + check("v6", "::1", count=3, spacing="20ms", size=1000))
    for ident, address in (("v4", "127.0.0.1"), ("v6", "::1")):
        record = records[ident]
        assert record.outcome == "ok", record.failure
        assert record.probe == "ping"
        assert record.target == address
        assert record.unit == "s"
        assert list(record.phases) == ["echo"]  # a literal address is not resolved
        details = record.details
        assert details["address"] == address
        assert details["socket"] == expected_socket()
        assert (details["sent"], details["received"], details["loss"]) == (3, 3, 0.0)
        assert details["timestamps"] == "kernel"
        assert record.value is not None and 0 < record.value < 0.05
        rtt_min, rtt_avg, rtt_max = details["rtt_min_s"], details["rtt_avg_s"], details["rtt_max_s"]
        assert isinstance(rtt_min, float) and isinstance(rtt_avg, float) and isinstance(rtt_max, float)
        assert 0 < rtt_min <= record.value <= rtt_max
        assert rtt_min <= rtt_avg <= rtt_max
        assert 0 <= details["rtt_mdev_s"] <= rtt_max - rtt_min  # type: ignore[operator]
        assert not {"errors", "late", "duplicates", "send_errors"} & set(details)
        # Three echoes 20 ms apart: done once the third is answered, not after echo_timeout.
        assert 0.04 <= record.phases["echo"] < 0.5


async def test_host_name_is_resolved_first(tmp_path: Path) -> None:
    records = await run_once(tmp_path, check("name", "localhost", ip_version=4, count=1)
                             + check("nowhere", "nonexistent.invalid", count=1))
    name = records["name"]
    assert name.outcome == "ok", name.failure
    assert list(name.phases) == ["resolve", "echo"]
    assert name.target == "localhost"
    assert name.details["address"] == "127.0.0.1"
    nowhere = records["nowhere"]
    assert nowhere.outcome == "fail"
    assert failure(nowhere) == ("resolve_failed", "unknown")
    assert nowhere.failure is not None and nowhere.failure.message.startswith("cannot resolve nonexistent.invalid: ")
    assert list(nowhere.phases) == ["resolve"]
    assert nowhere.value is None


@pytest.mark.parametrize(("keys", "expected"), [
    pytest.param('max_loss = 1.0', 'key "max_loss"', id="max-loss-1"),
    pytest.param('max_loss = -0.1', 'key "max_loss"', id="max-loss-negative"),
    pytest.param('spacing = "1ms"', 'key "spacing": expected at least 10ms, got "1ms"', id="spacing"),
    pytest.param('echo_timeout = "0s"', 'key "echo_timeout"', id="echo-timeout"),
    pytest.param('count = 0', 'key "count"', id="count"),
    pytest.param('size = 4', 'key "size"', id="size"),
    pytest.param('ip_version = 6', 'key "host": 127.0.0.1 is not an IPv6 address', id="version"),
    pytest.param('port = 7', 'key "port": unknown key', id="unknown-key"),
])
def test_bad_keys_are_one_line_profile_errors(tmp_path: Path, keys: str, expected: str) -> None:
    path = write_profile(tmp_path, HEAD + check("p", "127.0.0.1") + keys + "\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(path, make_host(builtins=PLUGINS).probes)
    message = str(caught.value)
    assert expected in message, message
    assert 'check "p"' in message
    assert "\n" not in message


# ---- across the lab's impaired links --------------------------------------------------------------

async def test_rtt_across_a_10ms_link_is_the_injected_round_trip(tmp_path: Path, netlab: NetLab) -> None:
    a = netlab.links["a"]
    a.set(delay=0.010)
    records = await run_once(tmp_path, check("v4", a.right4, count=5, spacing="50ms")
                             + check("v6", a.right6, count=5, spacing="50ms"))
    for ident in ("v4", "v6"):
        record = records[ident]
        assert record.outcome == "ok", record.failure
        details = record.details
        assert (details["sent"], details["received"], details["loss"]) == (5, 5, 0.0)
        assert record.value is not None
        print(f"{ident}: median {record.value * 1000:.3f} ms, min {details['rtt_min_s']}, "
              f"max {details['rtt_max_s']}, mdev {details['rtt_mdev_s']}")
        assert details["rtt_min_s"] >= 0.020 - SLACK  # type: ignore[operator]
        assert 0.020 - SLACK <= record.value <= 0.020 + LATE_MEDIAN
        assert details["rtt_max_s"] <= 0.020 + LATE_ANY  # type: ignore[operator]


async def test_every_echo_lost_is_no_reply(tmp_path: Path, netlab: NetLab) -> None:
    a = netlab.links["a"]
    a.set(delay=0.002, loss=1.0)
    records = await run_once(tmp_path, check("lost", a.right4, count=3, spacing="50ms", echo_timeout="300ms"))
    record = records["lost"]
    assert record.outcome == "fail"
    assert failure(record) == ("no_reply", "provider")
    assert record.failure is not None
    assert record.failure.message == f"{a.right4}: no reply to 3 echo requests within 300ms each"
    assert (record.details["sent"], record.details["received"], record.details["loss"]) == (3, 0, 1.0)
    assert record.value is None and "rtt_min_s" not in record.details
    assert 0.4 <= record.phases["echo"] < 0.7  # the last echo's 300 ms after 2 × 50 ms
    assert a.stats()["out"]["dropped_loss"] == 3


async def test_half_the_echoes_lost_gives_a_loss_in_its_band(tmp_path: Path, netlab: NetLab) -> None:
    a = netlab.links["a"]
    # Loss on the way out only, so that one draw decides each echo: lost ~ Binomial(10, 0.5).
    a.set(delay=0.002)
    a.set(delay=0.002, loss=0.5, direction="out", seed=11)
    records = await run_once(tmp_path, check("half", a.right4, count=10, spacing="20ms",
                                             echo_timeout="300ms"))
    record = records["half"]
    details = record.details
    lost = a.stats()["out"]["dropped_loss"]
    print(f"50 % loss, count = 10: loss {details['loss']} (relay dropped {lost})")
    assert details["sent"] == 10
    assert details["loss"] == pytest.approx(lost / 10)  # the probe counts exactly what was dropped
    # P(1 <= lost <= 9) = 1 - 2/1024 for a fair coin; the seeded draw makes this run repeatable.
    assert 0.1 <= details["loss"] <= 0.9  # type: ignore[operator]
    assert details["received"] == 10 - lost
    assert record.outcome == "ok"  # any reply counts by default
    assert record.value is not None and 0.004 - SLACK <= record.value <= 0.004 + LATE_MEDIAN


async def test_max_loss_turns_too_much_loss_into_packet_loss(tmp_path: Path, netlab: NetLab) -> None:
    a = netlab.links["a"]
    a.set(delay=0.002)
    a.set(delay=0.002, loss=0.5, direction="out", seed=11)  # as above: the same drops
    strict = await run_once(tmp_path, check("strict", a.right4, count=10, spacing="20ms",
                                            echo_timeout="300ms", max_loss=0.1))
    record = strict["strict"]
    loss = record.details["loss"]
    assert isinstance(loss, float) and loss > 0.1
    assert record.outcome == "fail"
    assert failure(record) == ("packet_loss", "provider")
    assert record.failure is not None
    assert record.failure.message == (f"{a.right4}: {loss * 100:.4g}% loss ({round(loss * 10)} of 10 "
                                      "echoes unanswered), more than max_loss = 10%")
    assert record.value is not None  # the median of the answered ones, still
    netlab.reset()
    lenient = await run_once(tmp_path, check("lenient", a.right4, count=10, spacing="20ms",
                                             max_loss=0.2))
    assert lenient["lenient"].outcome == "ok"
    assert lenient["lenient"].details["loss"] == 0.0


async def test_icmp_unreachable_from_a_router(tmp_path: Path, netlab: NetLab) -> None:
    a = netlab.links["a"]  # host a routes 10.200.N.128/25: no route to .130, .200 unreachable
    a.set(delay=0.005)
    records = await run_once(tmp_path, check("net", a.net_unreachable, count=2, spacing="50ms")
                             + check("host", a.host_unreachable, count=2, spacing="50ms"))
    for ident, code, words in (("net", "net_unreachable", "network unreachable"),
                               ("host", "host_unreachable", "host unreachable")):
        record = records[ident]
        assert record.outcome == "fail"
        assert failure(record) == (code, "provider")
        assert record.failure is not None
        assert f"ICMP {words} from {a.right4}" in record.failure.message
        assert record.details["error_from"] == a.right4
        assert 1 <= record.details["errors"] <= 2  # type: ignore[operator]
        assert record.details["received"] == 0
        assert record.phases["echo"] < 0.5  # the errors settle the echoes: no echo_timeout wait


async def test_a_link_cut_mid_run_shows_in_the_records(tmp_path: Path, netlab: NetLab) -> None:
    a, b = netlab.links["a"], netlab.links["b"]
    a.set(delay=0.005)
    b.set(delay=0.005)
    host = make_host(builtins=PLUGINS)
    profile = load_profile(write_profile(tmp_path, f"""\
        [profile]
        name = "cut"

        [defaults]
        interval = "200ms"
        timeout = "180ms"
        confirm = 2

        {check("a", a.right4, count=1, echo_timeout="100ms")}
        {check("b", b.right4, count=1, echo_timeout="100ms")}
        """), host.probes)
    store = MemoryStore()
    moments: dict[str, float] = {}

    async def cut() -> None:
        await trio.sleep(0.9)
        moments["down"] = trio.current_time()
        await trio.to_thread.run_sync(a.down)
        await trio.sleep(0.9)
        await trio.to_thread.run_sync(a.up)
        moments["up"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cut)
        result = await run_profile(profile, host, store, RunOptions(duration=2.6, handle_signals=False,
                                                                    vantage="test"))
    by_check: dict[str, list[SLIRecord]] = {"cut/a": [], "cut/b": []}
    for record in store.records():  # in start order
        by_check[record.check].append(record)
    runs = [(r.outcome, r.failure.code if r.failure else None) for r in by_check["cut/a"]]
    print("link a:", " ".join("ok" if o == "ok" else c or o for o, c in runs))
    # ok …, then no_reply … while cut, then ok again: one contiguous outage.
    shape = [key for i, key in enumerate(runs) if i == 0 or runs[i - 1] != key]
    assert shape == [("ok", None), ("fail", "no_reply"), ("ok", None)], runs
    assert sum(1 for o, _ in runs if o == "fail") >= 3
    assert sum(1 for o, _ in runs if o == "ok") >= 4
    assert all(r.outcome == "ok" for r in by_check["cut/b"])  # the other link carried on
    assert len(by_check["cut/b"]) >= 10
    kinds = [e.kind for e in result.events if e.check == "cut/a"]
    assert kinds[:3] == ["suspected", "confirmed", "resolved"], kinds


# ---- probe run --once, as root and unprivileged (in host c's namespace) ----------------------------

@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A temp dir another user can read and write (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="probecore-ping-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ping_group_range(netlab: NetLab) -> Iterator[object]:
    """Set ``net.ipv4.ping_group_range`` in host c's namespace; restored afterwards."""
    from tests.netlab import read_sysctl, write_sysctl  # (pytest imported the module first)

    netns = netlab.hosts["c"]
    before = read_sysctl(netns, "net.ipv4.ping_group_range")

    def set_range(value: str) -> None:
        write_sysctl(netns, "net.ipv4.ping_group_range", value)
        assert read_sysctl(netns, "net.ipv4.ping_group_range") == value

    try:
        yield set_range
    finally:
        write_sysctl(netns, "net.ipv4.ping_group_range", before)


UNPRIVILEGED = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")


def run_cli_in_c(netlab: NetLab, directory: Path, *, user: tuple[str, ...] = ()) -> tuple[int, list[dict], str]:
    """``probe run --once`` on host c with a profile pinging loopback and, across link ca, host a."""
    ca = netlab.links["ca"]
    profile = write_profile(directory, HEAD + check("lo4", "127.0.0.1", count=2, spacing="20ms")
                            + check("lo6", "::1", count=2, spacing="20ms")
                            + check("a4", ca.right4, count=3, spacing="20ms")
                            + check("a6", ca.right6, count=3, spacing="20ms")
                            + check("net", ca.net_unreachable, count=1))
    profile.chmod(0o644)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory), "LANG": "C.UTF-8",
           "PROBECORE_DATA_DIR": str(directory / "data")}
    command = netlab.exec("c", *user, sys.executable, "-m", "probecore", "run", "--once", str(profile),
                          "--store", f"sqlite:{directory / 'records.sqlite3'}", "--vantage", "c")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=COMMAND_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    stderr = done.stderr.decode(errors="replace")
    assert "Traceback" not in stderr, stderr
    records = assert_valid_records(done.stdout.splitlines())
    return done.returncode, records, stderr


def test_run_once_as_root_uses_raw_sockets(netlab: NetLab, shared_dir: Path, ping_group_range) -> None:  # type: ignore[no-untyped-def]
    ping_group_range("1 0")  # no group may use ICMP datagram sockets: root takes raw ones
    ca = netlab.links["ca"]
    ca.set(delay=0.005)
    status, records, stderr = run_cli_in_c(netlab, shared_dir)
    by_id = {r["check"].split("/", 1)[1]: r for r in records}
    assert status == 1, stderr  # the unreachable check is not ok
    assert set(by_id) == {"lo4", "lo6", "a4", "a6", "net"}
    for ident in ("lo4", "lo6", "a4", "a6"):
        record = by_id[ident]
        assert record["outcome"] == "ok", record
        assert record["details"]["socket"] == "raw"
        assert record["vantage"] == "c"
    for ident in ("a4", "a6"):
        assert 0.010 - SLACK <= by_id[ident]["value"] <= 0.010 + LATE_MEDIAN, by_id[ident]
    assert by_id["net"]["outcome"] == "fail"
    assert by_id["net"]["failure"]["code"] == "net_unreachable"
    assert "5 checks: 4 ok, 1 not ok" in " ".join(stderr.split())


def test_run_once_unprivileged_uses_icmp_datagram_sockets(netlab: NetLab, shared_dir: Path,
                                                          ping_group_range) -> None:  # type: ignore[no-untyped-def]
    ping_group_range("65534 65534")  # nogroup only
    ca = netlab.links["ca"]
    ca.set(delay=0.005)
    status, records, stderr = run_cli_in_c(netlab, shared_dir, user=UNPRIVILEGED)
    by_id = {r["check"].split("/", 1)[1]: r for r in records}
    assert status == 1, stderr
    assert set(by_id) == {"lo4", "lo6", "a4", "a6", "net"}
    for ident in ("lo4", "lo6", "a4", "a6"):
        record = by_id[ident]
        assert record["outcome"] == "ok", record
        assert record["details"]["socket"] == "dgram"
        assert record["details"]["timestamps"] == "kernel"
    for ident in ("a4", "a6"):
        assert 0.010 - SLACK <= by_id[ident]["value"] <= 0.010 + LATE_MEDIAN, by_id[ident]
    # ICMP errors reach a datagram socket through its error queue, with the router's address.
    assert by_id["net"]["failure"]["code"] == "net_unreachable"
    assert by_id["net"]["details"]["error_from"] == ca.right4
    assert (shared_dir / "records.sqlite3").stat().st_uid == 65534  # it really ran as nobody


def test_run_once_unprivileged_without_icmp_sockets_is_an_error(netlab: NetLab, shared_dir: Path,
                                                                ping_group_range) -> None:  # type: ignore[no-untyped-def]
    ping_group_range("1 0")
    status, records, stderr = run_cli_in_c(netlab, shared_dir, user=UNPRIVILEGED)
    assert status == 1, stderr
    assert len(records) == 5
    for record in records:
        assert record["outcome"] == "error", record
        assert record["failure"]["code"] == "no_icmp_socket"
        assert record["failure"]["attribution"] == "probe"
        assert 'net.ipv4.ping_group_range (now "1 0")' in record["failure"]["message"]
        assert "raw ones root or CAP_NET_RAW" in record["failure"]["message"]
        assert "socket" not in record["details"]


def test_summary_figures_follow_ping() -> None:
    # The summary figures follow ping(8): mdev = sqrt(mean(rtt²) − mean(rtt)²), value = median.
    from probecore_plugins.ping import PingConfig, _Echo, _Exchange, _judge

    async def judge() -> object:
        exchange = _Exchange(4, "192.0.2.9", "raw", ident=1, cookie=b"12345678")
        for seq, rtt in enumerate((0.010, 0.030, 0.020, None)):
            exchange.echoes[seq] = _Echo(seq, rtt=rtt)
        return _judge(PingConfig(host="192.0.2.9", count=4), exchange)

    observation = trio.run(judge)
    details = observation.details  # type: ignore[attr-defined]
    assert observation.value == pytest.approx(0.020)  # type: ignore[attr-defined]
    assert details["loss"] == 0.25 and details["received"] == 3
    assert details["rtt_avg_s"] == pytest.approx(0.020)
    assert details["rtt_mdev_s"] == pytest.approx(statistics.pstdev([0.010, 0.030, 0.020]))
