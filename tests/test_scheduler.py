"""The scheduler under trio's MockClock: slots, timeouts, retries, overruns, crashes, limits."""

from __future__ import annotations

import socket
from collections import Counter
from datetime import timedelta
from functools import partial

import pytest
import trio

import probecore
from probecore import load_profile, parse_timestamp
from probecore._runner import RunOptions, run_profile
from probecore._scheduler import Scheduler
from probecore.testing import DEFAULT_START, HookRecorder, MemoryStore, make_host, run_simulated, write_profile
from probecore._clock import TrioWallClock
from tests.fakes import ScriptedPlugin


def profile_of(tmp_path, checks: str, defaults: str = 'interval = "1m"\ntimeout = "10s"'):
    text = f'[profile]\nname = "sim"\n[defaults]\n{defaults}\n{checks}'
    host = make_host(ScriptedPlugin())
    return load_profile(write_profile(tmp_path, text), host.probes), host


def check_table(check_id: str, **keys: object) -> str:
    lines = [f'[[check]]\nid = "{check_id}"\nprobe = "scripted"']
    for key, value in keys.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"


def seconds_since_start(stamp: str) -> float:
    return (parse_timestamp(stamp) - DEFAULT_START).total_seconds()


async def test_one_minute_check_over_a_day_runs_1440_times_on_its_slots(tmp_path, autojump_clock):
    profile, host = profile_of(tmp_path, check_table("web"))
    store = MemoryStore()
    await run_simulated(profile, host, store=store, duration=86400)
    records = list(store.records())
    assert len(records) == 1440
    offset = profile.checks[0].phase_offset
    assert 0 < offset < 60
    slots = [seconds_since_start(r.scheduled_at) for r in records]
    assert slots == [pytest.approx(offset + 60 * k, abs=0.001) for k in range(1440)]
    assert all(r.started_at == r.scheduled_at for r in records)  # no lateness under a mock clock
    assert {r.outcome for r in records} == {"ok"}


async def test_phase_offset_is_stable_and_survives_a_restart(tmp_path, autojump_clock):
    profile, host = profile_of(tmp_path, check_table("web"))
    store = MemoryStore()
    await run_simulated(profile, host, store=store, duration=3600)
    # A second agent process starting 17 minutes 23.5 s later keeps the same phase.
    later = DEFAULT_START + timedelta(seconds=3600 + 1043.5)
    await run_simulated(profile, host, store=store, duration=600, start=later)
    offsets = {round(seconds_since_start(r.scheduled_at) % 60, 3) for r in store.records()}
    assert offsets == {round(profile.checks[0].phase_offset, 3)}


async def test_timeout_is_a_fail_that_names_the_phase(tmp_path, autojump_clock):
    profile, host = profile_of(tmp_path, check_table("slow", sleep="30s", timeout="5s"))
    store = MemoryStore()
    await run_simulated(profile, host, store=store, duration=120)
    records = list(store.records())
    assert len(records) == 2
    for record in records:
        assert record.outcome == "fail"
        assert record.failure.code == "timeout"
        assert record.failure.attribution == "provider"
        assert record.failure.message == "no result within 5s (during work)"
        assert record.duration_s == pytest.approx(5.0)
        assert record.phases["work"] == pytest.approx(5.0)


async def test_retry_interval_after_failure_until_recovery(tmp_path, autojump_clock):
    profile, host = profile_of(tmp_path, check_table("flaky", fail_first=3, retry_interval="10s"))
    store = MemoryStore()
    await run_simulated(profile, host, store=store, duration=200)
    records = list(store.records())
    offset = profile.checks[0].phase_offset
    times = [round(seconds_since_start(r.scheduled_at) - offset, 3) for r in records]
    # Slot 0 fails, retries at +10 and +20 fail and the retry at +30 succeeds; then back on
    # the one-minute grid.
    assert times == [0, 10, 20, 30, 60, 120, 180]
    assert [r.outcome for r in records] == ["fail", "fail", "fail", "ok", "ok", "ok", "ok"]


async def test_overrun_skips_and_counts_missed_slots(tmp_path, autojump_clock):
    # A misbehaving probe that ignores cancellation for 25 s at a 10 s interval.
    profile, host = profile_of(
        tmp_path, check_table("stuck", sleep="25s", shielded=True, timeout="5s"),
        defaults='interval = "10s"')
    scheduler_box = []
    offset = profile.checks[0].phase_offset
    options = RunOptions(clock=TrioWallClock(DEFAULT_START), duration=offset + 85, vantage="test",
                         handle_signals=False)
    store = MemoryStore()
    await run_profile(profile, host, store, options, on_started=scheduler_box.append)
    records = list(store.records())
    slots = [round(seconds_since_start(r.scheduled_at) - offset) for r in records]
    # Each attempt ends 25 s after it began: the next two slots are skipped, never piled up.
    # The run ends at +85 s while the third attempt ignores cancellation; it is still stored.
    assert slots == [0, 30, 60]
    assert [round(r.duration_s) for r in records] == [25, 25, 25]
    stats = scheduler_box[0].stats["sim/stuck"]
    assert stats.attempts == 3
    assert stats.missed_slots == 6  # 10, 20, 40, 50, 70, 80


async def test_a_probe_that_raises_does_not_stop_the_others(tmp_path, autojump_clock):
    checks = check_table("broken", raise_error=True) + check_table("fine")
    profile, host = profile_of(tmp_path, checks)
    store = MemoryStore()
    await run_simulated(profile, host, store=store, duration=600)
    by_check = Counter(r.check for r in store.records())
    assert by_check == {"sim/broken": 10, "sim/fine": 10}
    broken = [r for r in store.records() if r.check == "sim/broken"]
    assert {r.outcome for r in broken} == {"error"}
    assert broken[0].failure.code == "plugin_crash"
    assert broken[0].failure.attribution == "probe"
    assert broken[0].failure.message == "plugin ScriptedPlugin raised ValueError: scripted crash"


async def test_a_probe_returning_garbage_is_an_error_record(tmp_path, autojump_clock):
    profile, host = profile_of(tmp_path, check_table("garbage", wrong_return=True))
    store = MemoryStore()
    await run_simulated(profile, host, store=store, duration=60)
    (record,) = store.records()
    assert record.outcome == "error"
    assert "returned str, not an Observation" in record.failure.message


async def test_thousand_checks_spread_over_the_interval(tmp_path, autojump_clock):
    checks = "".join(check_table(f"c{i:04d}") for i in range(1000))
    profile, host = profile_of(tmp_path, checks)
    store = MemoryStore()
    await run_simulated(profile, host, store=store, duration=60)
    records = list(store.records())
    assert len(records) == 1000
    per_second = Counter(int(seconds_since_start(r.scheduled_at)) for r in records)
    # 1,000 checks over 60 s is 16.7 a second; a burst would put hundreds in one second.
    assert len(per_second) == 60
    assert max(per_second.values()) <= 35
    per_tenth = Counter(int(seconds_since_start(r.scheduled_at) // 6) for r in records)
    assert all(70 <= n <= 130 for n in per_tenth.values()), per_tenth


async def test_once_runs_every_check_concurrently(tmp_path, autojump_clock):
    checks = "".join(check_table(f"c{i}", sleep="5s") for i in range(3))
    profile, host = profile_of(tmp_path, checks)
    store = MemoryStore()
    began = trio.current_time()
    result = await run_profile(profile, host, store, RunOptions(
        once=True, clock=TrioWallClock(DEFAULT_START), vantage="t", handle_signals=False))
    assert trio.current_time() - began == pytest.approx(5.0, abs=0.01)
    assert sorted(r.check for r in result.records) == ["sim/c0", "sim/c1", "sim/c2"]
    assert result.all_ok
    assert len(list(store.records())) == 3


@pytest.mark.parametrize(("hosts", "limits", "expected_seconds"), [
    (["a", "b", "c", "d"], {"max_concurrency": 2}, 2.0),     # global limit: two waves
    (["a", "a", "a", "a"], {"per_host": 1}, 4.0),            # one at a time against host a
    (["a", "b", "c", "d"], {"per_host": 1}, 1.0),            # different hosts run together
])
async def test_concurrency_limits(tmp_path, autojump_clock, hosts, limits, expected_seconds):
    checks = "".join(check_table(f"c{i}", sleep="1s", host=h) for i, h in enumerate(hosts))
    profile, host = profile_of(tmp_path, checks)
    records = []
    scheduler = Scheduler(profile.checks, host.probes, submit=records.append,
                          clock=TrioWallClock(DEFAULT_START), vantage="t", **limits)
    began = trio.current_time()
    await scheduler.run_once()
    assert trio.current_time() - began == pytest.approx(expected_seconds, abs=0.01)
    late = sorted(r.lateness_s for r in records)
    assert late[-1] == pytest.approx(expected_seconds - 1.0, abs=0.01)  # waiting shows as lateness


async def test_a_busy_host_does_not_hold_the_global_slots(tmp_path, autojump_clock):
    """Three attempts queued on host a (one at a time) and one on host b, two global slots: b
    starts at once (was: the queued attempts of a held the global slots while they waited for
    their host, so b started 2 s late)."""
    hosts = ["a", "a", "a", "b"]
    checks = "".join(check_table(f"c{i}", sleep="1s", host=h) for i, h in enumerate(hosts))
    profile, host = profile_of(tmp_path, checks)
    records = []
    scheduler = Scheduler(profile.checks, host.probes, submit=records.append,
                          clock=TrioWallClock(DEFAULT_START), vantage="t", max_concurrency=2,
                          per_host=1)
    await scheduler.run_once()
    late = {r.check: r.lateness_s for r in records}
    assert late["sim/c3"] == pytest.approx(0.0, abs=0.01)
    assert sorted(late.values()) == pytest.approx([0.0, 0.0, 1.0, 2.0], abs=0.01)


async def test_secrets_are_scrubbed_from_records(tmp_path, autojump_clock, monkeypatch):
    monkeypatch.setenv("SIM_PASSWORD", "hunter2-very-secret")
    profile, host = profile_of(tmp_path, '[[check]]\nid = "login"\nprobe = "scripted"\n'
                                         'secret = { env = "SIM_PASSWORD" }\n')
    store = MemoryStore()
    await run_simulated(profile, host, store=store, duration=60)
    (record,) = store.records()
    text = str(record)
    assert "hunter2" not in text
    assert record.failure.message == "server said: bad password ***"
    assert record.details == {"echo": "***"}
    assert "hunter2" not in repr(profile.checks[0].config)


async def test_missing_secret_is_an_error_record_not_a_crash(tmp_path, autojump_clock, monkeypatch):
    monkeypatch.delenv("SIM_MISSING", raising=False)
    profile, host = profile_of(tmp_path, '[[check]]\nid = "login"\nprobe = "scripted"\n'
                                         'secret = { env = "SIM_MISSING" }\n')
    store = MemoryStore()
    await run_simulated(profile, host, store=store, duration=60)
    (record,) = store.records()
    assert record.outcome == "error"
    assert record.failure.message == "secret: environment variable SIM_MISSING is not set"


async def test_hooks_see_every_record_and_event_after_it_is_stored(tmp_path, autojump_clock):
    recorder = HookRecorder()
    host = make_host(ScriptedPlugin(), recorder)
    text = ('[profile]\nname = "sim"\n[defaults]\ninterval = "1m"\nconfirm = 2\n'
            + check_table("flaky", fail_first=3))
    profile = load_profile(write_profile(tmp_path, text), host.probes)
    store = MemoryStore()
    await run_simulated(profile, host, store=store, duration=600)
    assert [r.started_at for r in recorder.records] == [r.started_at for r in store.records()]
    assert [e.kind for e in recorder.events] == ["suspected", "confirmed", "resolved"]
    assert [e.event_id for e in recorder.events] == [e.event_id for e in store.events()]


async def test_once_runs_binding_checks_before_the_checks_bound_to_them(tmp_path, autojump_clock):
    checks = (check_table("site") + 'binding = "dns"\n' + check_table("dns", sleep="2s")
              + check_table("other", sleep="1s"))
    profile, host = profile_of(tmp_path, checks)
    result = await run_profile(profile, host, MemoryStore(), RunOptions(
        once=True, clock=TrioWallClock(DEFAULT_START), vantage="t", handle_signals=False))
    started = {r.check.split("/")[1]: seconds_since_start(r.started_at) for r in result.records}
    assert started["dns"] == 0
    assert started["site"] == started["other"] == pytest.approx(2.0)  # after the binding's verdict


async def test_an_answer_after_the_timeout_is_a_timeout(tmp_path, autojump_clock):
    """A probe that ignores cancellation (shielded) and answers ok after 8 s of a 5 s timeout:
    the cancel scope never fired, but the record is a timeout all the same (was: ``ok``)."""
    profile, host = profile_of(tmp_path, check_table("late", sleep="8s", shielded=True,
                                                     timeout="5s"))
    records = []
    scheduler = Scheduler(profile.checks, host.probes, submit=records.append,
                          clock=TrioWallClock(DEFAULT_START), vantage="t")
    [record] = await scheduler.run_once()
    assert record.outcome == "fail"
    assert (record.failure.code, record.failure.attribution) == ("timeout", "provider")
    assert record.failure.message == "no result within 5s (the attempt took 8s)"
    assert record.duration_s == pytest.approx(8.0)
    assert record.phases["work"] == pytest.approx(8.0)
    assert records == [record]


class BlockingConfig(probecore.ProbeConfig):
    port: int


class BlockingProbe(probecore.ProbeKind[BlockingConfig]):
    """Reads a server's greeting with a blocking socket in a thread trio cannot abandon, as a
    plugin wrapping a blocking client naively would (``trio.to_thread.run_sync`` without
    ``abandon_on_cancel``)."""

    kind = "blocking"
    Config = BlockingConfig
    unit = "s"

    def target(self, config: BlockingConfig) -> str:
        return f"127.0.0.1:{config.port}"

    async def check(self, config: BlockingConfig, ctx: probecore.CheckContext) -> probecore.Observation:
        def greeting() -> bytes:
            with socket.create_connection(("127.0.0.1", config.port), timeout=10) as sock:
                return sock.recv(100)

        with ctx.phase("greeting"):
            data = await trio.to_thread.run_sync(greeting)
        return probecore.Observation.ok(details={"greeting": data.decode()})


class BlockingPlugin:
    @probecore.hookimpl
    def probecore_add_probes(self, registry):  # type: ignore[no-untyped-def]
        registry.add(BlockingProbe)


async def test_a_thread_that_cannot_be_abandoned_overruns_into_a_timeout(tmp_path, nursery):
    """A loopback server that greets after 1 s, a probe blocked on it in a thread with a 200 ms
    timeout: trio cannot cancel the thread, the probe returns ok at once when the thread does,
    and the record says timeout (was: ``ok`` with a duration five times its timeout)."""
    async def slow_greeting(stream: trio.SocketStream) -> None:
        await trio.sleep(1.0)
        await stream.send_all(b"hello\r\n")
        await trio.sleep_forever()

    listeners = await nursery.start(partial(trio.serve_tcp, slow_greeting, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    host = make_host(BlockingPlugin())
    text = (f'[profile]\nname = "sim"\n[defaults]\ntimeout = "200ms"\n'
            f'[[check]]\nid = "slow"\nprobe = "blocking"\nport = {port}\n')
    profile = load_profile(write_profile(tmp_path, text), host.probes)
    result = await run_profile(profile, host, MemoryStore(),
                               RunOptions(once=True, handle_signals=False, vantage="t"))
    [record] = result.records
    assert record.duration_s > 0.2
    assert record.outcome == "fail"
    assert (record.failure.code, record.failure.attribution) == ("timeout", "provider")
    assert record.failure.message.startswith("no result within 200ms (the attempt took ")
    assert record.details == {"greeting": "hello\r\n"}  # what it said, kept as evidence
