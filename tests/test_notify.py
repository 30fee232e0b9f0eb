"""Notifications under the mock clock: the outbox, retries, repeats, escalation, and 002-T."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import trio

from probecore import ChannelConfig, DeliveryError, Notifier, Period, evaluate_profile, hookimpl, load_profile
from probecore._notify import backoff_s
from probecore.testing import MemoryStore, make_host, run_simulated, write_profile
from tests.fakes import ScriptedPlugin

START = datetime(2026, 9, 1, 0, 0, tzinfo=timezone.utc)


class FlakyConfig(ChannelConfig, kw_only=True, forbid_unknown_fields=True, frozen=True):
    down_until_s: float = 0.0
    """The channel refuses everything before this many seconds of trio time."""


class FlakyNotifier(Notifier[FlakyConfig]):
    kind = "flaky"
    Config = FlakyConfig
    sent: list[tuple[float, str]] = []
    tried: list[float] = []

    async def send(self, config, notice, ctx):
        FlakyNotifier.tried.append(trio.current_time())
        if trio.current_time() < config.down_until_s:
            raise DeliveryError("503 Service Unavailable")
        FlakyNotifier.sent.append((trio.current_time(), notice.notice_id))


class FlakyPlugin:
    @hookimpl
    def probecore_add_notifiers(self, registry):
        registry.add(FlakyNotifier)


def profile_text(down_until_s: float = 0.0, extra: str = "") -> str:
    return f"""
[profile]
name = "colo"
timezone = "Asia/Shanghai"
fee = {{ monthly = 3000.0, currency = "CNY" }}
[defaults]
interval = "5m"
timeout = "30s"
confirm = 2
[[check]]
id = "port"
probe = "scripted"
fail_first = 4            # down for the first 4 attempts (0, 5, 10, 15 min), ok from 20 min
[[channel]]
id = "pager"
kind = "flaky"
down_until_s = {down_until_s}
[[notify]]
id = "emergency"
check = "port"
events = ["confirmed", "resolved"]
channels = ["pager"]
obligation = "15m"
{extra}
[[objective]]
id = "002-T"
kind = "notify_delay"
check = "port"
op = "<="
limit = "15m"
remedy = {{ kind = "fee_days" }}
"""


@pytest.fixture(autouse=True)
def fresh_channel():
    FlakyNotifier.sent, FlakyNotifier.tried = [], []


async def run(tmp_path, text: str, minutes: float, store=None):
    host = make_host(ScriptedPlugin(), FlakyPlugin())
    profile = load_profile(write_profile(tmp_path, text), host.probes, host.evaluators, host.notifiers)
    store = store or MemoryStore()
    await run_simulated(profile, host, store=store, duration=minutes * 60, start=START)
    return profile, host, store


def judge(profile, host, store):
    period = Period.month(2026, 9, profile.timezone)
    report = evaluate_profile(profile, store, host.evaluators, period, now=START + timedelta(days=40))
    return report.objectives[0]


async def test_a_notice_delivered_at_once_meets_the_15_minutes(tmp_path, autojump_clock):
    profile, host, store = await run(tmp_path, profile_text(), minutes=40)
    delivered = store.deliveries("colo", "delivered")
    assert [d.notice.kind for d in delivered] == ["confirmed", "resolved"]
    confirmed = delivered[0]
    # Confirmed by the second failure (5 min after the first), delivered within the same flush.
    assert confirmed.delivered_ms - confirmed.created_ms < 2_000 and confirmed.attempts == 1
    verdict = judge(profile, host, store)
    assert verdict.met is True and verdict.measured < 2 and verdict.remedy is None
    assert [n.incident for n in store.annotations("colo", "notice")] == [confirmed.notice.incident]


async def test_a_channel_down_for_20_minutes_misses_the_notice_and_owes_a_days_fee(tmp_path, autojump_clock):
    # Confirmed at +5 min of trio time; the pager refuses until +25 min: the notice is 20 min late.
    profile, host, store = await run(tmp_path, profile_text(down_until_s=25 * 60), minutes=60)
    (confirmed,) = [d for d in store.deliveries("colo") if d.notice.kind == "confirmed"]
    assert confirmed.status == "delivered" and confirmed.attempts > 3
    attempts = store.attempts(confirmed.id)
    assert [ok for _, ok, _ in attempts][-1] is True and not any(ok for _, ok, _ in attempts[:-1])
    assert all(error == "503 Service Unavailable" for _, ok, error in attempts if not ok)
    gaps = [b[0] - a[0] for a, b in zip(attempts, attempts[1:])]
    assert gaps[0] < gaps[-1]                         # backing off
    assert len(FlakyNotifier.sent) == 2               # confirmed and resolved, each once
    verdict = judge(profile, host, store)
    assert verdict.met is False and verdict.measured > 15 * 60
    assert verdict.remedy.kind == "fee_days" and verdict.remedy.amount == pytest.approx(100.0)


async def test_pending_deliveries_survive_a_restart_and_are_never_sent_twice(tmp_path, autojump_clock):
    store = MemoryStore()
    # The first run stops while the channel is still down: the notices stay pending.
    await run(tmp_path, profile_text(down_until_s=10**6), minutes=12, store=store)
    pending = store.deliveries("colo", "pending")
    assert [d.notice.kind for d in pending] == ["confirmed"] and not FlakyNotifier.sent
    # The second run (channel up) delivers it once; the events it writes again change nothing.
    await run(tmp_path, profile_text(), minutes=30, store=store)
    kinds = [d.notice.kind for d in store.deliveries("colo", "delivered")]
    assert kinds.count("confirmed") == 1
    assert len([n for _, n in FlakyNotifier.sent if "#confirmed" in n]) == 1


async def test_repeats_while_open_and_escalation(tmp_path, autojump_clock):
    extra = 'repeat = "10m"\nescalate = { after = "12m", route = "boss" }\n' + """
[[notify]]
id = "boss"
channels = ["pager"]
only_escalation = true
"""
    text = profile_text(extra=extra).replace("fail_first = 4 ", "fail_first = 8 ")  # open 0–40 min
    profile, host, store = await run(tmp_path, text, minutes=60)
    kinds = sorted((d.route, d.notice.kind, d.event_id.rsplit("#", 1)[-1]) for d in store.deliveries("colo"))
    assert kinds == [("boss", "escalated", "escalated-emergency"),
                     ("emergency", "confirmed", "confirmed"),
                     ("emergency", "repeat", "repeat-1"), ("emergency", "repeat", "repeat-2"),
                     ("emergency", "repeat", "repeat-3"),
                     ("emergency", "resolved", "resolved")]


async def test_an_old_undeliverable_notice_expires_and_stays_listed(tmp_path, autojump_clock):
    text = profile_text(down_until_s=10**6).replace('obligation = "15m"', 'obligation = "15m"\nexpire_after = "30m"')
    _, _, store = await run(tmp_path, text, minutes=80)
    (expired,) = [d for d in store.deliveries("colo") if d.notice.kind == "confirmed"]
    assert expired.status == "expired" and expired.delivered_ms is None
    assert "503" in (store.attempts(expired.id)[-1][2] or "")


def test_backoff_doubles_with_jitter_up_to_ten_minutes():
    import random
    rng = random.Random(1)
    firsts = [backoff_s(1, rng) for _ in range(50)]
    assert all(4.0 <= f <= 6.0 for f in firsts) and len(set(firsts)) > 1
    assert 8.0 <= backoff_s(2, rng) <= 12.0
    assert 480 <= backoff_s(30, rng) <= 720


@pytest.mark.parametrize("tail, message", [
    ('[[notify]]\nid = "x"\nchannels = ["nope"]\n', 'notify "x": key "channels": no [[channel]] "nope"'),
    ('[[channel]]\nid = "c"\nkind = "pigeon"\n', 'unknown notifier "pigeon"'),
    ('[[channel]]\nid = "c"\nkind = "console"\ncolour = "red"\n', 'channel "c": key "colour": unknown key'),
    ('[[channel]]\nid = "c"\nkind = "console"\n[[notify]]\nid = "x"\nchannels = ["c"]\nobligation = 15\n',
     'key "obligation": expected a duration'),
    ('[[channel]]\nid = "c"\nkind = "console"\n[[notify]]\nid = "x"\nchannels = ["c"]\n'
     'escalate = { after = "1h", route = "y" }\n', 'no [[notify]] route "y"'),
])
def test_bad_routes_and_channels_are_one_line_errors(tmp_path, capsys, tail, message):
    from probecore._cli import main
    path = write_profile(tmp_path, """
[profile]
name = "p"
[[check]]
id = "c"
probe = "tcp"
host = "192.0.2.1"
port = 1
""" + tail)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


async def test_objective_at_risk_then_breached_each_notified_once(tmp_path, autojump_clock):
    text = profile_text().replace("fail_first = 4 ", "fail_first = 6 ").replace(
        'events = ["confirmed", "resolved"]', 'events = ["objective_at_risk", "objective_breached"]') + """
[[objective]]
id = "minutes"
kind = "downtime"
check = "port"
op = "<"
limit = "30m"
"""
    # Down from 4:42 to 34:42 (six failures 5 min apart, then ok): 30 minutes, not less than 30.
    _, _, store = await run(tmp_path, text, minutes=60)
    kinds = [(d.notice.kind, d.event_id.split("/objective/")[1]) for d in store.deliveries("colo")]
    # This route sends no incident notices, so 002-T is breached as soon as its 15 minutes pass.
    assert kinds == [("objective_breached", "002-T@2026-09#objective_breached"),
                     ("objective_at_risk", "minutes@2026-09#objective_at_risk"),
                     ("objective_breached", "minutes@2026-09#objective_breached")]
    breached = store.deliveries("colo")[2]
    assert breached.status == "delivered" and "BREACHED" in breached.notice.title
