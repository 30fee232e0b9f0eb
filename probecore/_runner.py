"""One run of a profile: scheduler → pipeline → store, with signals and a clean shutdown."""

from __future__ import annotations

import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from ._attribution import Attributor
from ._clock import SystemClock, WallClock
from ._groups import is_member
from ._incidents import IncidentEvent
from ._pipeline import ObservedCallback, Pipeline, StoredCallback
from ._plugins import PluginHost
from ._profile import Profile
from ._record import SLIRecord
from ._scheduler import DEFAULT_MAX_CONCURRENCY, DEFAULT_PER_HOST, Scheduler
from ._store import Store


SHUTDOWN_WRITE_ATTEMPTS = 5


async def flush_before_exit(pipeline: Pipeline) -> None:
    """Store what is queued, shielded from the cancellation that is ending the run; if the store
    keeps failing, put the records where a later import finds them (never lose a record)."""
    with trio.CancelScope(shield=True):
        for _ in range(SHUTDOWN_WRITE_ATTEMPTS):
            if await pipeline.flush():
                return
            await trio.sleep(1.0)
        pipeline.rescue()


def default_vantage() -> str:
    """The agent's name when ``--vantage`` is not given: the host name."""
    return socket.gethostname() or "local"


@dataclass
class RunResult:
    """What a run did: its records (``--once``) and counts, for the exit status and summary."""

    records: list[SLIRecord] = field(default_factory=list)
    """With ``once``: the run's records, as stored (attribution rules applied)."""
    events: list[IncidentEvent] = field(default_factory=list)
    stored_records: int = 0
    stopped_by: str | None = None

    @property
    def all_ok(self) -> bool:
        """Every check's record is ok (a member's failure counts only through its round)."""
        checks = [r for r in self.records if not is_member(r.check)]
        return bool(checks) and all(r.outcome == "ok" for r in checks)


@dataclass
class RunOptions:
    once: bool = False
    vantage: str = field(default_factory=default_vantage)
    clock: WallClock = field(default_factory=SystemClock)
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    per_host: int = DEFAULT_PER_HOST
    duration: float | None = None
    """Stop after this many seconds (trio time); ``None`` runs until a signal."""
    flush_interval: float = 0.5
    batch_size: int = 500
    handle_signals: bool = True


async def run_profile(profile: Profile, host: PluginHost, store: Store, options: RunOptions, *,
                      on_observed: Sequence[ObservedCallback] = (),
                      on_stored: Sequence[StoredCallback] = (),
                      on_started: Any = None) -> RunResult:
    """Run *profile* until ``duration`` passes, a signal arrives, or (``once``) every check ran.

    Every record is stored before this returns: on SIGINT/SIGTERM the scheduler is cancelled,
    then the pending batch is flushed (shielded) and the hooks see it.
    """
    result = RunResult()

    def hooks(records: Sequence[SLIRecord], events: Sequence[IncidentEvent]) -> None:
        for record in records:
            host.record(record)
        for event in events:
            host.event(event)
        result.events.extend(events)

    def collect(record: SLIRecord, events: Sequence[IncidentEvent]) -> None:
        result.records.append(record)

    worker = None
    router = None
    if profile.route_configs:
        from ._notify import DeliveryWorker, Router, now_ms_of
        router = Router(profile)
        channels = {c.id: (host.notifiers.get(c.kind)(), c) for c in profile.channels}
        worker = DeliveryWorker(store, profile, channels, router, now_ms_of(options.clock),
                                warn=_warn_stderr, evaluators=host.evaluators)

        def poke(records: Sequence[SLIRecord], events: Sequence[IncidentEvent]) -> None:
            if events:
                worker.poke()
        on_stored = [*on_stored, poke]
    pipeline = Pipeline(store, {c.full_id: c.confirm for c in profile.checks},
                        attribute=Attributor(profile.checks),
                        route=router.deliveries if router is not None else None,
                        on_observed=[collect, *on_observed] if options.once else on_observed,
                        on_stored=[hooks, *on_stored],
                        batch_size=options.batch_size, flush_interval=options.flush_interval)
    await pipeline.restore(options.vantage)
    scheduler = Scheduler(profile.checks, host.probes, submit=pipeline.submit, clock=options.clock,
                          vantage=options.vantage, max_concurrency=options.max_concurrency,
                          per_host=options.per_host)
    if on_started is not None:
        on_started(scheduler)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            if worker is not None:
                await nursery.start(worker.run)
            if options.handle_signals:
                nursery.start_soon(_stop_on_signal, nursery.cancel_scope, result)
            if options.once:
                await scheduler.run_once()
                nursery.cancel_scope.cancel()
            else:
                if options.duration is not None:
                    nursery.cancel_scope.deadline = trio.current_time() + options.duration
                await scheduler.run()
    finally:
        await flush_before_exit(pipeline)
        result.stored_records = pipeline.stored_records
    return result


def _warn_stderr(message: str) -> None:
    import sys
    print(f"probe: {message}", file=sys.stderr)


async def _stop_on_signal(scope: trio.CancelScope, result: RunResult) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            result.stopped_by = signal.Signals(signum).name
            scope.cancel()
            return
