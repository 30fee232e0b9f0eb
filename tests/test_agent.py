"""probe agent against a real PostgreSQL: agents of one vantage share its checks without probing
one twice, and the checks of an agent that stops move to the others."""

from __future__ import annotations

import os
import dataclasses
from collections import Counter

import pytest
import trio

from probecore import Duration, load_profile
from probecore._agent import AgentOptions, Membership, agent_checks, run_agent
from probecore._coordination import owner
from probecore._errors import UsageError
from probecore.testing import make_host, write_profile
from tests.fakes import ScriptedPlugin

CHECKS = 8
PROFILE = '[profile]\nname = "fleet"\n[defaults]\ninterval = "1s"\ntimeout = "500ms"\n' + "".join(
    f'[[check]]\nid = "c{i}"\nprobe = "scripted"\n' for i in range(CHECKS)) + (
    '[[check]]\nid = "far"\nprobe = "scripted"\nvantages = ["gz"]\n')
LEASE = 1.5


def open_store(url: str):
    from probecore_plugins.postgresql import PostgreSQLStore
    return PostgreSQLStore(url)


@pytest.fixture
def profile(tmp_path):
    host = make_host(ScriptedPlugin())
    return load_profile(write_profile(tmp_path, PROFILE), host.probes), host


def test_rendezvous_moves_only_the_leavers_keys():
    keys = [f"p/c{i}" for i in range(200)]
    three = {k: owner(k, ["a", "b", "c"]) for k in keys}
    two = {k: owner(k, ["a", "b"]) for k in keys}
    assert all(two[k] == three[k] for k in keys if three[k] != "c")   # a's and b's keys stay
    shares = Counter(three.values())
    assert min(shares.values()) > 40                                  # spread (expected ~67 each)
    assert owner("x", []) is None


def test_an_agent_runs_its_vantages_checks(profile):
    profile, _ = profile
    assert len(agent_checks([profile], "bj")) == CHECKS               # "far" runs only from gz
    assert len(agent_checks([profile], "gz")) == CHECKS + 1


def test_two_agents_share_a_vantage_and_one_takes_over(profile, postgresql_url):
    profile, host = profile
    memberships: dict[str, Membership] = {}

    async def main():
        stores = [open_store(postgresql_url), open_store(postgresql_url)]
        times: dict[str, float] = {}
        try:
            async with trio.open_nursery() as nursery:
                async def agent(name, store, task_status=trio.TASK_STATUS_IGNORED):
                    with trio.CancelScope() as scope:
                        task_status.started(scope)
                        await run_agent([profile], host, store, AgentOptions(
                            vantage="bj", lease=LEASE, agent_id=name, handle_signals=False),
                            on_started=lambda s, m: memberships.__setitem__(name, m))
                scope_a = await nursery.start(agent, "a", stores[0])
                await nursery.start(agent, "b", stores[1])
                await trio.sleep(5.0)
                checks = agent_checks([profile], "bj")
                times["owned"] = (memberships["a"].owned(checks), memberships["b"].owned(checks))
                # a dies without leaving (no clean stop): remove its heartbeat task's goodbye
                memberships["a"].coordination = _Mute(memberships["a"].coordination)
                scope_a.cancel()
                times["a_stopped"] = trio.current_time()
                await trio.sleep(LEASE + 3.0)
                nursery.cancel_scope.cancel()
        finally:
            for store in stores:
                store.close()
        return times

    times = trio.run(main)
    store = open_store(postgresql_url)
    try:
        records = list(store.records(prefix="fleet/"))
    finally:
        store.close()
    assert records and {r.vantage for r in records} == {"bj"}
    # Never two attempts at one slot of one check (a double probe has the same scheduled_at).
    slots = Counter((r.check, r.scheduled_at) for r in records)
    assert max(slots.values()) == 1, [k for k, n in slots.items() if n > 1]
    assert "fleet/far" not in {r.check for r in records}
    # While both ran, each had a share; at the end every check is b's and ran in its last second.
    a_owned, b_owned = times["owned"]
    assert a_owned > 0 and b_owned > 0 and a_owned + b_owned == CHECKS
    assert memberships["b"].members == ["b"]
    last = max(r.started for r in records)
    recent = {r.check for r in records if (last - r.started).total_seconds() < 1.5}
    assert recent == {f"fleet/c{i}" for i in range(CHECKS)}


class _Mute:
    """A coordination handle whose ``leave`` does nothing: the agent vanishes as if killed."""

    def __init__(self, inner):
        self._inner = inner

    def leave(self, vantage, agent):
        return None

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_agent_refuses_the_reserved_vantage_and_a_store_that_cannot_coordinate(profile, tmp_path):
    profile, host = profile
    from probecore._store import open_store as open_any
    store = open_any(f"sqlite:{tmp_path / 's.db'}", host.stores.get)
    try:
        with pytest.raises(UsageError, match='"quorum" is reserved'):
            trio.run(lambda: run_agent([profile], host, store, AgentOptions(vantage="quorum", handle_signals=False)))
        with pytest.raises(UsageError, match='--vantage "Bei Jing": expected a lower-case name'):
            trio.run(lambda: run_agent([profile], host, store, AgentOptions(vantage="Bei Jing", handle_signals=False)))
        with pytest.raises(UsageError, match="cannot coordinate agents"):
            trio.run(lambda: run_agent([profile], host, store, AgentOptions(vantage="bj", handle_signals=False)))
    finally:
        store.close()


def test_agent_and_judge_never_show_the_stores_password(tmp_path, postgresql_server):
    """The password in the store URL is used (scram auth) and appears nowhere in their output."""
    import subprocess
    import sys

    database = postgresql_server.create_database(owner=postgresql_server.password_user).rsplit("/", 1)[1]
    url = postgresql_server.database_url(database, password_user=True)
    profile = tmp_path / "p.toml"
    profile.write_text('[profile]\nname = "pw"\n[[check]]\nid = "x"\nprobe = "tcp"\nhost = "127.0.0.1"\n'
                       'port = 9\ninterval = "1s"\ntimeout = "500ms"\n')
    outputs = []
    for argv in (["agent", str(profile), "--vantage", "bj", "--store", url, "--for", "3s", "--lease", "1.5s"],
                 ["judge", str(profile), "--store", url, "--for", "3s"]):
        done = subprocess.run([sys.executable, "-m", "probecore", *argv], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "PROBECORE_DATA_DIR": str(tmp_path)})
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout + done.stderr)
    wrong = url.replace(postgresql_server.password, "not-" + postgresql_server.password[4:])
    done = subprocess.run([sys.executable, "-m", "probecore", "judge", str(profile), "--store", wrong, "--for", "2s"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    outputs.append(done.stderr)
    store = open_store(url)
    try:
        assert list(store.records(prefix="pw/"))  # the agent did store with the password
    finally:
        store.close()
    for text in outputs:
        assert postgresql_server.password not in text and postgresql_server.password[4:] not in text
    assert "probecore_pw@" in outputs[0]  # the URL is shown, without its password


def test_the_default_lease_moves_a_dead_agents_checks_within_one_interval(profile):
    from probecore._agent import default_lease

    profile, _ = profile
    lease = default_lease(profile.checks)                 # 1 s checks: the floor
    assert lease == 1.5
    fast = list(profile.checks)
    minute = [dataclasses.replace(c, interval=Duration(60.0)) for c in fast]
    assert default_lease(minute) == 15.0                  # 15 + 5 s < 60 s
    eight = [dataclasses.replace(c, interval=Duration(8.0)) for c in fast]
    assert default_lease(eight) * 4 / 3 <= 8.0            # lease + lease/3 within the interval
