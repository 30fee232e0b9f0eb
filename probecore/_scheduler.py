"""The trio scheduler: runs every check at its slots, with timeouts, retries and limits.

Time rules: every wait goes through trio (``sleep_until``, cancel scopes), so a
``trio.testing.MockClock`` can run a simulated month in milliseconds; wall-clock timestamps
come from the injected :class:`~probecore._clock.WallClock`.

Slots: a check with interval *I* runs at ``k·I + offset`` seconds after the Unix epoch, where
the offset is derived from its id (:attr:`Check.phase_offset`). After a failed attempt the next
attempt comes ``retry_interval`` after its start (if that is before the next slot) until the
check recovers. An attempt that overruns one or more slots makes the scheduler skip and count
them, rather than run a backlog.
"""

from __future__ import annotations

import gc
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import trio

from ._durations import format_duration
from ._errors import PluginError, ProbecoreError
from ._groups import member_check
from ._probe import CheckContext, ProbeKind, describe_target
from ._profile import Check
from ._record import Failure, Observation, SLIRecord, format_timestamp
from ._secrets import redact

DEFAULT_MAX_CONCURRENCY = 256
DEFAULT_PER_HOST = 16


@dataclass
class CheckStats:
    """What the scheduler knows about one check while it runs."""

    attempts: int = 0
    missed_slots: int = 0
    last: SLIRecord | None = None
    next_due: float | None = None  # epoch seconds


@dataclass
class _Planned:
    check: Check
    kind: ProbeKind[Any]
    owner: str
    host_key: str | None
    stats: CheckStats = field(default_factory=CheckStats)


class Scheduler:
    """Runs *checks* and hands every record to *submit* (synchronously, never blocking).

    :param probes: the probe-kind registry; each check's kind is instantiated once.
    :param clock: wall clock for record timestamps and slot alignment.
    :param max_concurrency: attempts in flight at once, over all checks.
    :param per_host: attempts in flight at once against one host.
    """

    def __init__(self, checks: Sequence[Check], probes: Any, *, submit: Callable[[SLIRecord], None],
                 clock: Any, vantage: str, max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
                 per_host: int = DEFAULT_PER_HOST, should_run: Callable[[Check], bool] | None = None):
        if max_concurrency < 1 or per_host < 1:
            raise ValueError("concurrency limits must be at least 1")
        self._submit = submit
        # probe agent: several agents of one vantage share the checks; each slot runs only on
        # the agent that owns the check then (probecore._agent), the others skip it uncounted.
        self._should_run = should_run
        self._clock = clock
        self.vantage = vantage
        self._limit = trio.CapacityLimiter(max_concurrency)
        self._per_host = per_host
        self._host_limits: dict[str, trio.CapacityLimiter] = {}
        kinds: dict[str, ProbeKind[Any]] = {}
        self._planned: list[_Planned] = []
        for check in checks:
            if check.probe not in kinds:
                kinds[check.probe] = probes.get(check.probe)()
            kind = kinds[check.probe]
            if kind.passive:  # pushed evidence (probe push): nothing to run
                continue
            self._planned.append(_Planned(check, kind, probes.owner(check.probe),
                                          kind.host(check.config)))

    @property
    def checks(self) -> list[Check]:
        """The checks this scheduler runs (passive ones left out)."""
        return [p.check for p in self._planned]

    @property
    def stats(self) -> dict[str, CheckStats]:
        """Per check (full id): attempts, missed slots, last record, next due time."""
        return {p.check.full_id: p.stats for p in self._planned}

    def _epoch(self) -> float:
        return self._clock.now().timestamp()

    @asynccontextmanager
    async def _lifespans(self) -> AsyncIterator[None]:
        """Each kind's :meth:`~probecore.ProbeKind.lifespan` around the attempts (exited also on
        cancel, in reverse order)."""
        kinds: dict[int, tuple[ProbeKind[Any], str, list[Any]]] = {}
        for planned in self._planned:
            kinds.setdefault(id(planned.kind), (planned.kind, planned.owner, []))[2].append(planned.check.config)
        async with AsyncExitStack() as stack:
            for kind, owner, configs in kinds.values():
                try:
                    await stack.enter_async_context(kind.lifespan(configs))
                except Exception as exc:
                    raise PluginError(f"plugin {owner}: probe kind {kind.kind} could not start: "
                                      f"{type(exc).__name__}: {exc}") from exc
            yield

    async def run(self) -> None:
        """Run every check at its slots until cancelled."""
        # One start time for all: starting 10,000 tasks takes a while, and a check whose task
        # first runs late must run its first slot late, not skip it.
        start = self._epoch()
        async with self._lifespans(), trio.open_nursery() as nursery:
            for planned in self._planned:
                nursery.start_soon(self._loop, planned, start, name=f"check {planned.check.full_id}")
            nursery.start_soon(_freeze_heap_after_startup)

    async def run_once(self) -> list[SLIRecord]:
        """Run every check once, concurrently, and return each check's record (for a check with
        members: the round's; the member records go to ``submit`` like every record).

        Checks that are another check's ``binding`` run first, so that their verdict is known
        when the bound checks' records are attributed (in a continuous run the slots see to it).
        """
        records: list[SLIRecord] = []
        bindings = {p.check.binding for p in self._planned if p.check.binding}
        first = [p for p in self._planned if p.check.id in bindings]
        then = [p for p in self._planned if p.check.id not in bindings]

        async def one(planned: _Planned, slot: float) -> None:
            records.append(await self._attempt(planned, slot))

        async with self._lifespans():
            for wave in (first, then):
                now = self._epoch()
                async with trio.open_nursery() as nursery:
                    for planned in wave:
                        nursery.start_soon(one, planned, now)
        return records

    async def _loop(self, planned: _Planned, start: float) -> None:
        check, stats = planned.check, planned.stats
        interval, offset = float(check.interval), check.phase_offset
        slot = _next_slot(start, interval, offset, inclusive=True)
        while True:
            stats.next_due = slot
            await trio.sleep_until(trio.current_time() + max(0.0, slot - self._epoch()))
            if self._should_run is not None and not self._should_run(check):
                slot = _next_slot(slot, interval, offset, inclusive=False)
                continue
            record = await self._attempt(planned, slot)
            grid_next = _next_slot(slot, interval, offset, inclusive=False)
            now = self._epoch()
            if record.outcome != "ok" and check.retry_interval < interval:
                retry_at = record.started.timestamp() + check.retry_interval
                if retry_at < grid_next:
                    slot = max(retry_at, now)
                    continue
            # Skip (and count) the slots this attempt overran instead of running a backlog.
            missed = max(0, math.ceil((now - grid_next) / interval - 1e-9)) if now > grid_next else 0
            stats.missed_slots += missed
            slot = grid_next + missed * interval

    async def _attempt(self, planned: _Planned, slot: float) -> SLIRecord:
        check, kind = planned.check, planned.kind
        ctx = CheckContext(check.full_id, self.vantage)
        # The host's limit first: an attempt queued behind its (slow) host must not hold one of
        # the global slots meanwhile, or a few hostile hosts starve every other check.
        async with self._host_limit(planned.host_key), self._limit:
            started = self._clock.now()
            began = trio.current_time()
            observation: Observation | None = None
            with trio.move_on_after(check.timeout) as scope:
                try:
                    observation = await kind.check(check.config, ctx)
                except ProbecoreError as exc:
                    observation = Observation.error("probe_error", str(exc))
                except Exception as exc:  # a plugin bug must not stop the other checks
                    observation = Observation.error(
                        "plugin_crash", f"plugin {planned.owner} raised {type(exc).__name__}: {exc}")
            duration = trio.current_time() - began
        if scope.cancelled_caught:
            during = f" (during {ctx.current_phase})" if ctx.current_phase else ""
            observation = Observation.fail(
                "timeout", f"no result within {format_duration(check.timeout)}{during}")
        elif isinstance(observation, Observation) and observation.outcome == "ok" \
                and duration > float(check.timeout):
            # The deadline passed but the cancel scope never got to fire: the probe returned
            # without reaching a checkpoint after it (a shielded cleanup, a thread that cannot be
            # abandoned, or a trio loop so busy that the result and the deadline landed in the
            # same turn). An answer later than the timeout is a timeout, whatever it said.
            # (A fail or an error keeps its own, more precise reason.)
            observation = Observation.fail(
                "timeout", f"no result within {format_duration(check.timeout)} "
                f"(the attempt took {format_duration(round(duration, 3))})",
                details=observation.details)
        elif not isinstance(observation, Observation):
            observation = Observation.error(
                "plugin_crash", f"plugin {planned.owner} returned {type(observation).__name__}, "
                "not an Observation")
        records = self._records(planned, ctx, observation, slot, started, duration)
        planned.stats.attempts += 1
        planned.stats.last = records[-1]
        for record in records:
            self._submit(record)
        return records[-1]

    def _host_limit(self, host: str | None) -> Any:
        if host is None:
            return _NO_LIMIT
        limiter = self._host_limits.get(host)
        if limiter is None:
            limiter = self._host_limits[host] = trio.CapacityLimiter(self._per_host)
        return limiter

    def _records(self, planned: _Planned, ctx: CheckContext, obs: Observation, slot: float,
                 started: datetime, duration: float) -> list[SLIRecord]:
        """The attempt's records: the check's own, preceded by one per member if it has any."""
        if not obs.members:
            return [self._record(planned, ctx, obs, slot, started, duration)]
        names = [m.member for m in obs.members]
        if any(not n or any(c.isspace() or c in "/:" for c in n) for n in names) or len(set(names)) < len(names):
            bad = Observation.error("plugin_crash", f"plugin {planned.owner} named its members "
                                    f"{names!r}: names must be unique, non-empty, without spaces, '/' or ':'")
            return [self._record(planned, ctx, bad, slot, started, duration)]
        full_id = planned.check.full_id
        records = [self._record(planned, ctx, member, slot, started, duration,
                                check_id=member_check(full_id, member.member or ""), own_phases=True)
                   for member in obs.members]
        verdict = planned.check.group.judge(obs.members)
        counts = {"probecore.members_ok": sum(m.outcome == "ok" for m in obs.members),
                  "probecore.members_failed": sum(m.outcome == "fail" for m in obs.members),
                  "probecore.members_error": sum(m.outcome == "error" for m in obs.members),
                  "probecore.group": str(planned.check.group)}
        round_obs = Observation(outcome=verdict.outcome, failure=verdict.failure, value=obs.value,
                                unit=obs.unit, phases=obs.phases, target=obs.target,
                                details={**obs.details, **counts})
        records.append(self._record(planned, ctx, round_obs, slot, started, duration))
        return records

    def _record(self, planned: _Planned, ctx: CheckContext, obs: Observation, slot: float,
                started: datetime, duration: float, *, check_id: str | None = None,
                own_phases: bool = False) -> SLIRecord:
        check, kind = planned.check, planned.kind
        secrets = set(ctx.revealed)
        target = obs.target or describe_target(kind, check.config)
        failure = obs.failure
        outcome = obs.outcome
        if outcome != "ok" and failure is None:
            failure = Failure("unspecified", "unknown", "the probe gave no reason")
        if outcome == "ok":
            failure = None
        if failure is not None and secrets:
            failure = Failure(failure.code, failure.attribution, redact(failure.message, secrets))
        details = obs.details
        if secrets:
            target = redact(target, secrets)
            details = {k: redact(v, secrets) if isinstance(v, str) else v for k, v in details.items()}
        unit = (obs.unit or kind.unit) if obs.value is not None else None
        return SLIRecord(
            check=check_id or check.full_id, probe=check.probe, target=target, vantage=self.vantage,
            scheduled_at=format_timestamp(datetime.fromtimestamp(slot, timezone.utc)),
            started_at=format_timestamp(started), duration_s=max(0.0, duration),
            outcome=outcome, value=obs.value, unit=unit,
            phases=dict(obs.phases) if own_phases else {**ctx.phases, **obs.phases},
            failure=failure, details=details,
            labels=check.labels)


async def _freeze_heap_after_startup() -> None:
    """Move the objects built at start-up out of the collector's way.

    With 10,000 checks a full garbage collection walked every profile, check and task object and
    paused the loop for ~130 ms, making the slots due then late (benchmarks/scheduler.py);
    ``gc.freeze`` exempts what exists once the checks run from later collections.
    """
    await trio.sleep(1.0)
    gc.freeze()


class _NoLimit:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_LIMIT = _NoLimit()


def _next_slot(moment: float, interval: float, offset: float, *, inclusive: bool) -> float:
    """The first slot ``k·interval + offset`` at or after (*inclusive*) or after *moment*."""
    k = math.ceil((moment - offset) / interval)
    slot = k * interval + offset
    if slot < moment - 1e-9 or (not inclusive and slot <= moment + 1e-9):
        slot += interval
    return slot
