"""``probe agent``: run the probes of one vantage and write their records to a shared store.

An agent runs the checks of its profiles that run from its vantage (a check with ``vantages``
that names it, or a check without ``vantages``) and stores every record; it tracks no incidents
and sends no notices: ``probe judge`` does, over the records of every agent.

Several agents of one vantage share its checks without probing one twice. Each heartbeats its
membership in the store (:mod:`probecore._coordination`) every ``lease / 3``; the live members of
the vantage own the checks by rendezvous hashing of the check id (a check with a ``binding``
goes where its binding check goes, so the binding rule sees both). Before each slot the scheduler
asks whether this agent owns the check now; only the owner runs it.

* An agent that joins owns nothing for its first heartbeat period, so that the others have seen
  it (and dropped what it takes) before it probes.
* An agent that stops cleanly leaves the membership: the others take its checks at their next
  heartbeat. One that dies stops heartbeating: its lease runs out and the others take its checks
  at their next heartbeat after that: within ``lease + lease / 3``. The default lease (15 s, or
  ¾ of the shortest interval if that is less, at least 1.5 s) makes that one interval.
* An agent that cannot reach the store for a whole lease owns nothing until it can (others may
  have taken its checks meanwhile): it never probes on a stale view.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from ._attribution import Attributor
from ._clock import SystemClock, WallClock
from ._coordination import Coordination, coordination_of, owner
from ._errors import UsageError
from ._pipeline import ObservedCallback, Pipeline, StoredCallback
from ._plugins import PluginHost
from ._profile import NAME_RE, QUORUM_VANTAGE, Check, Profile
from ._record import SLIRecord
from ._runner import RunResult, _stop_on_signal, flush_before_exit
from ._scheduler import DEFAULT_MAX_CONCURRENCY, DEFAULT_PER_HOST, Scheduler
from ._store import Store, call_store

DEFAULT_LEASE = 15.0
MIN_LEASE = 1.5


def default_lease(checks: Sequence[Check]) -> float:
    """The lease when none is given: 15 s, shortened to ¾ of the shortest interval (at least
    1.5 s), so that a dead agent's checks move within one interval of each."""
    shortest = min((float(c.interval) for c in checks), default=DEFAULT_LEASE)
    return max(MIN_LEASE, min(DEFAULT_LEASE, 0.75 * shortest))


@dataclass
class AgentOptions:
    vantage: str
    lease: float | None = None
    """Seconds without a heartbeat after which an agent's checks go to the others (default:
    :func:`default_lease` of its checks)."""
    agent_id: str = ""
    """This agent's member name (default: ``host-pid-random``)."""
    clock: WallClock = field(default_factory=SystemClock)
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    per_host: int = DEFAULT_PER_HOST
    duration: float | None = None
    flush_interval: float = 0.5
    batch_size: int = 500
    handle_signals: bool = True

    def __post_init__(self) -> None:
        if not self.agent_id:
            self.agent_id = f"{socket.gethostname() or 'agent'}-{os.getpid()}-{secrets.token_hex(3)}"


def agent_checks(profiles: Sequence[Profile], vantage: str) -> list[Check]:
    """The checks an agent of *vantage* runs: those naming it, and those naming no vantage."""
    return [c for p in profiles for c in p.checks if not c.vantages or vantage in c.vantages]


def check_profiles(profiles: Sequence[Profile], command: str) -> None:
    """Profiles of one agent or judge must have distinct names (their checks' ids are prefixed
    with them)."""
    seen: dict[str, str] = {}
    for profile in profiles:
        if profile.name in seen:
            raise UsageError(f"probe {command}: {profile.path} and {seen[profile.name]} are both "
                             f'profile "{profile.name}"; give each profile its own name')
        seen[profile.name] = profile.path


class Membership:
    """This agent's view of its vantage's live agents, kept fresh by :meth:`run`."""

    def __init__(self, coordination: Coordination, vantage: str, agent_id: str, lease: float, *,
                 warn: Callable[[str], None] | None = None):
        self.coordination = coordination
        self.vantage = vantage
        self.agent_id = agent_id
        self.lease = lease
        self.every = lease / 3
        self.members: list[str] = []
        self.changes = 0
        self._valid_until = -1.0  # trio time until which the view may be used
        self._owning_from = float("inf")
        self._warn = warn or _warn_stderr
        self._failing = False

    def owns(self, check: Check) -> bool:
        """Whether this agent runs *check* now (never on a view older than the lease)."""
        now = trio.current_time()
        if now < self._owning_from or now > self._valid_until:
            return False
        return owner(self.key(check), self.members) == self.agent_id

    @staticmethod
    def key(check: Check) -> str:
        """What a check is hashed by: its binding check's id if it has one (they go together)."""
        return f"{check.profile}/{check.binding}" if check.binding else check.full_id

    def owned(self, checks: Iterable[Check]) -> int:
        """How many of *checks* the current view gives this agent (for metrics; any thread)."""
        members = list(self.members)
        return sum(owner(self.key(c), members) == self.agent_id for c in checks)

    async def beat(self) -> None:
        """One heartbeat: refresh the view (or warn once while the store cannot be reached)."""
        asked = trio.current_time()
        try:
            members = await trio.to_thread.run_sync(
                self.coordination.heartbeat, self.vantage, self.agent_id, self.lease)
        except Exception as exc:  # the store is down: keep trying, stop owning when the lease ends
            if not self._failing:
                self._warn(f"agent {self.agent_id}: heartbeat failed, retrying: {exc}")
            self._failing = True
            return
        if self._failing:
            self._warn(f"agent {self.agent_id}: heartbeat works again")
        self._failing = False
        if members != self.members:
            self.changes += 1
        self.members = members
        # The view holds for a lease after it was asked for (others expire us no sooner).
        self._valid_until = asked + self.lease
        if self._owning_from == float("inf"):
            self._owning_from = asked + self.every

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Heartbeat every ``lease / 3`` until cancelled; then leave the membership."""
        await self.beat()
        task_status.started()
        try:
            while True:
                await trio.sleep(self.every)
                await self.beat()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await trio.to_thread.run_sync(self.coordination.leave, self.vantage, self.agent_id)
                except Exception:  # the lease runs out anyway
                    pass


async def run_agent(profiles: Sequence[Profile], host: PluginHost, store: Store, options: AgentOptions, *,
                    coordination: Coordination | None = None,
                    on_observed: Sequence[ObservedCallback] = (), on_stored: Sequence[StoredCallback] = (),
                    on_started: Callable[[Scheduler, Membership], None] | None = None) -> RunResult:
    """Run the checks of *profiles* that run from ``options.vantage``, sharing them with the
    vantage's other agents, until ``duration`` passes or a signal arrives. Every record is stored
    before this returns."""
    if options.vantage == QUORUM_VANTAGE:
        raise UsageError(f'probe agent: --vantage "{QUORUM_VANTAGE}" is reserved (the vantage of merged rounds)')
    if not NAME_RE.match(options.vantage):
        raise UsageError(f'probe agent: --vantage "{options.vantage}": expected a lower-case name of letters, '
                         'digits, ".", "_" or "-" (as profiles name vantages)')
    check_profiles(profiles, "agent")
    checks = agent_checks(profiles, options.vantage)
    if not checks:
        raise UsageError(f'probe agent: no check runs from vantage "{options.vantage}" (each names '
                         "other vantages); check the profiles' vantages keys")
    own = coordination is None
    if coordination is None:
        coordination = await call_store(store, coordination_of, store, "agent")
    result = RunResult()
    attributors = {p.name: Attributor(p.checks) for p in profiles}

    def attribute(record: SLIRecord) -> SLIRecord:
        return attributors[record.check.split("/", 1)[0]](record)

    def hooks(records: Sequence[SLIRecord], events: Sequence[Any]) -> None:
        for record in records:
            host.record(record)

    pipeline = Pipeline(store, {}, track=False, attribute=attribute, on_observed=on_observed,
                        on_stored=[hooks, *on_stored], batch_size=options.batch_size,
                        flush_interval=options.flush_interval)
    lease = options.lease if options.lease is not None else default_lease(checks)
    membership = Membership(coordination, options.vantage, options.agent_id, lease)
    scheduler = Scheduler(checks, host.probes, submit=pipeline.submit, clock=options.clock,
                          vantage=options.vantage, max_concurrency=options.max_concurrency,
                          per_host=options.per_host, should_run=membership.owns)
    if on_started is not None:
        on_started(scheduler, membership)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            await nursery.start(membership.run)
            if options.handle_signals:
                nursery.start_soon(_stop_on_signal, nursery.cancel_scope, result)
            if options.duration is not None:
                nursery.cancel_scope.deadline = trio.current_time() + options.duration
            await scheduler.run()
    finally:
        await flush_before_exit(pipeline)
        if own:
            coordination.close()
        result.stored_records = pipeline.stored_records
    return result


def _warn_stderr(message: str) -> None:
    print(f"probe: {message}", file=sys.stderr)
