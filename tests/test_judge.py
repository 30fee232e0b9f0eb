"""probe judge against a real PostgreSQL: the quorum rule live, one leader, a takeover that loses
and doubles nothing.

The agents are played by a writer that stores the records three vantages would (at the check's
real slots, into the shared store); the judges are the real thing, two of them in this process
with separate stores and sessions.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from probecore import load_profile
from probecore._judge import JudgeOptions, run_judge
from probecore._quorum import merge_vantages
from probecore._record import Failure, SLIRecord, format_timestamp_ms
from probecore.testing import make_host, write_profile
from tests.fakes import ScriptedPlugin

PROFILE = """\
[profile]
name = "q"
[[check]]
id = "site"
probe = "scripted"
interval = "1s"
timeout = "500ms"
confirm = 2
vantages = ["bj", "sh", "gz"]
quorum = 2
[[check]]
id = "plain"
probe = "scripted"
interval = "1s"
timeout = "500ms"
confirm = 2
[[channel]]
id = "pager"
kind = "console"
path = "{notices}"
[[notify]]
id = "oncall"
channels = ["pager"]
events = ["confirmed", "resolved"]
"""

# Per round: which vantages see the site failing. bj alone (its network) for four rounds, then
# bj and sh (a quorum: an outage) for four, then all well.
SCRIPT = [set()] * 2 + [{"bj"}] * 4 + [{"bj", "sh"}] * 4 + [set()] * 3


def open_store(url: str):
    from probecore_plugins.postgresql import PostgreSQLStore
    return PostgreSQLStore(url)


def record(check, vantage: str, slot_ms: int, failing: bool) -> SLIRecord:
    at = format_timestamp_ms(slot_ms)
    started = format_timestamp_ms(slot_ms + 3)
    return SLIRecord(check=check.full_id, probe="scripted", target="scripted://site", vantage=vantage,
                     scheduled_at=at, started_at=started, duration_s=0.01,
                     outcome="fail" if failing else "ok",
                     failure=Failure("connect_refused", "provider", "refused") if failing else None)


async def play_agents(url: str, check, script, *, on_round=None) -> list[SLIRecord]:
    """Store each round's records of the three vantages at the check's slots, in real time."""
    store = open_store(url)
    written = []
    try:
        interval_ms = round(float(check.interval) * 1000)
        offset_ms = round(check.phase_offset * 1000)
        now_ms = int(time.time() * 1000)
        k = (now_ms - offset_ms) // interval_ms + 1
        for n, failing in enumerate(script):
            slot = (k + n) * interval_ms + offset_ms
            await trio.sleep(max(0.0, slot / 1000 + 0.05 - time.time()))
            batch = [record(check, v, slot, v in failing) for v in check.vantages]
            await trio.to_thread.run_sync(store.write, batch, [])
            written += batch
            if on_round is not None:
                await on_round(n)
    finally:
        store.close()
    return written


def stored_events(url: str):
    store = open_store(url)
    try:
        return list(store.events(prefix="q/"))
    finally:
        store.close()


@pytest.fixture
def setup(tmp_path):
    notices = tmp_path / "notices.txt"
    host = make_host(ScriptedPlugin())
    path = write_profile(tmp_path, PROFILE.replace("{notices}", str(notices)))
    profile = load_profile(path, host.probes, host.evaluators, host.notifiers)
    return profile, host, notices


def options(**kw):
    return JudgeOptions(poll=0.1, settle=1.0, grace_ms=300, handle_signals=False, **kw)


def test_quorum_outage_judged_once_and_noticed_once(setup, postgresql_url):
    profile, host, notices = setup
    check = profile.check("site")

    async def main():
        store = open_store(postgresql_url)
        judges = []
        try:
            async with trio.open_nursery() as nursery:
                async def judge():
                    judges.append(await run_judge([profile], host, store, options()))
                nursery.start_soon(judge)
                written = await play_agents(postgresql_url, check, SCRIPT)
                await trio.sleep(2.0)  # the last round's deadline, and the notices
                nursery.cancel_scope.cancel()
        finally:
            store.close()
        return written

    written = trio.run(main)
    events = stored_events(postgresql_url)
    assert [(e.kind, e.vantage) for e in events] == [("suspected", "quorum"), ("confirmed", "quorum"),
                                                     ("resolved", "quorum")]
    # The outage began at the first round bj and sh both failed, not at bj's lone failures.
    first_quorum = next(r for r in written if r.vantage == "sh" and r.outcome == "fail")
    assert events[0].incident_started_at == first_quorum.scheduled_at
    lines = notices.read_text().splitlines()
    assert len(lines) == 2 and "OUTAGE" in lines[0] and "resolved" in lines[1]
    # probe report's evaluator merges the same records into the same rounds: the same incident.
    from probecore._incidents import IncidentTracker
    tracker = IncidentTracker(check.confirm)
    replayed = [e for r in merge_vantages(check, written) for e in tracker.feed(r)]
    assert [e.event_id for e in replayed] == [e.event_id for e in events]


def test_one_judge_leads_and_a_takeover_loses_and_doubles_nothing(setup, postgresql_url):
    profile, host, notices = setup
    check = profile.check("site")
    leaders: dict[str, int] = {}

    async def main():
        stores = [open_store(postgresql_url), open_store(postgresql_url)]
        judges: dict[str, object] = {}
        scopes: dict[str, trio.CancelScope] = {}
        try:
            async with trio.open_nursery() as nursery:
                async def judge(name, store, task_status=trio.TASK_STATUS_IGNORED):
                    with trio.CancelScope() as scope:
                        scopes[name] = scope
                        task_status.started()
                        await run_judge([profile], host, store, options(judge_id=name),
                                        on_started=lambda j: judges.__setitem__(name, j))
                for name, store in zip("ab", stores):
                    await nursery.start(judge, name, store)
                await trio.sleep(0.5)

                async def on_round(n):
                    leading = [name for name, j in judges.items() if j.stats.leading]
                    leaders[n] = len(leading)
                    if n == 7:  # mid-outage (suspected, not yet confirmed): the leader dies
                        scopes[leading[0]].cancel()
                        judges.pop(leading[0])

                await play_agents(postgresql_url, check, SCRIPT, on_round=on_round)
                await trio.sleep(2.0)
                nursery.cancel_scope.cancel()
        finally:
            for store in stores:
                store.close()
        return judges

    survivors = trio.run(main)
    assert all(count == 1 for count in leaders.values()), leaders  # never two leaders, never none
    [survivor] = survivors.values()
    assert survivor.stats.terms == 1
    events = stored_events(postgresql_url)
    assert [e.kind for e in events] == ["suspected", "confirmed", "resolved"]
    lines = notices.read_text().splitlines()
    assert len(lines) == 2 and "OUTAGE" in lines[0] and "resolved" in lines[1], lines


def test_judge_needs_a_store_that_coordinates(setup, tmp_path):
    from probecore._cli import main

    profile, host, notices = setup
    code = main(["judge", str(Path(profile.path)), "--store", f"sqlite:{tmp_path / 's.db'}"])
    assert code == 2


def test_quorum_rounds_are_judged_by_the_slot_not_the_arrival(setup):
    """A record written late (after its round's deadline) does not reopen the round."""
    profile, host, notices = setup
    check = profile.check("site")
    from probecore._quorum import VantageMerge
    merge = VantageMerge(check, grace_ms=300)
    slot = 10 * 1000 + round(check.phase_offset * 1000)
    merge.add(record(check, "bj", slot, True))
    merge.add(record(check, "sh", slot, True))
    [decided] = merge.ready(slot + 1000 + 500 + 300)  # next slot + timeout + grace: gz is late
    assert decided.failure.attribution == "provider"
    assert merge.add(record(check, "gz", slot, False)) is False


def test_a_record_committed_after_a_later_one_is_still_judged(setup, postgresql_url):
    """Ids are taken at insert and seen at commit: a batch that commits late has lower ids than
    records the judge already read. It must still be judged."""
    from probecore_plugins.postgresql import _record_row

    profile, host, notices = setup
    plain = profile.check("plain")
    now_ms = int(time.time() * 1000)
    late = record(plain, "bj", now_ms - 2000, True)   # fails: confirm 2 needs two of them
    late2 = record(plain, "bj", now_ms - 1000, True)
    later = record(plain, "sh", now_ms, False)

    async def main():
        store = open_store(postgresql_url)
        writer = open_store(postgresql_url)
        try:
            async with trio.open_nursery() as nursery:
                async def judge():
                    await run_judge([profile], host, store, JudgeOptions(
                        poll=0.1, settle=3.0, handle_signals=False, lookback=0.001))
                nursery.start_soon(judge)
                await trio.sleep(1.0)   # leading, following

                def hold_then_commit(ready, go):
                    with writer.connection() as conn, conn.transaction():
                        writer._insert_records(conn, [_record_row(late), _record_row(late2)])
                        trio.from_thread.run_sync(ready.set)
                        trio.from_thread.run(go.wait)
                ready, go = trio.Event(), trio.Event()
                nursery.start_soon(lambda: trio.to_thread.run_sync(hold_then_commit, ready, go))
                await ready.wait()
                await trio.to_thread.run_sync(writer.write, [later], [])   # a higher id, committed first
                await trio.sleep(0.5)
                go.set()
                await trio.sleep(1.5)
                nursery.cancel_scope.cancel()
        finally:
            store.close()
            writer.close()

    trio.run(main)
    kinds = [(e.kind, e.vantage) for e in stored_events(postgresql_url)]
    assert kinds == [("suspected", "bj"), ("confirmed", "bj")]


def test_the_leader_sends_objective_breached_once_across_leaders(tmp_path, postgresql_url):
    from datetime import UTC, datetime

    notices = tmp_path / "breached.txt"
    host = make_host(ScriptedPlugin())
    path = write_profile(tmp_path, f"""\
[profile]
name = "q"
[[check]]
id = "plain"
probe = "scripted"
[[objective]]
id = "down"
kind = "downtime"
check = "plain"
op = "<"
limit = "5m"
[[channel]]
id = "pager"
kind = "console"
path = "{notices}"
[[notify]]
id = "budget"
channels = ["pager"]
events = ["objective_breached"]
""")
    profile = load_profile(path, host.probes, host.evaluators, host.notifiers)
    plain = profile.check("plain")
    now = datetime.now(UTC).replace(second=0, microsecond=0).timestamp()
    # Down for the last 20 minutes (or since the month began): more than the 5 minutes allowed.
    month_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
    first = max(now - 20 * 60, month_start)
    records = [record(plain, "bj", round(t * 1000), True) for t in range(int(first), int(now) + 1, 60)]
    store = open_store(postgresql_url)
    try:
        store.write(records, [])
    finally:
        store.close()

    async def one_leader():
        store = open_store(postgresql_url)
        try:
            await run_judge([profile], host, store, JudgeOptions(poll=0.1, handle_signals=False, duration=3.0))
        finally:
            store.close()

    trio.run(one_leader)
    trio.run(one_leader)   # the next leader judges the month again
    lines = notices.read_text().splitlines()
    if now - first < 6 * 60:
        pytest.skip("the month began minutes ago: not enough of it to breach the objective")
    assert len(lines) == 1 and "down" in lines[0], lines
