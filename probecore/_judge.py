"""``probe judge``: follow every agent's records in the shared store, track incidents, notify.

Several judges may run (high availability); one leads, by an advisory lock in the store
(:meth:`Coordination.try_lead`), and only the leader judges and sends: the others retry the lock
every ``poll`` seconds and take over when the leader's session ends.

The leader follows new records by the store's insertion order (:meth:`Coordination.records_after`,
polled every ``poll`` seconds; ids committed out of order are caught by re-reading the last
``settle`` seconds of ids). Each record goes to the incident tracker of its stream, exactly as in
``probe run`` — except a check that names ``vantages``, whose records are first merged into
rounds by the vantage quorum (:mod:`probecore._quorum`), decided as soon as every vantage has
reported (or at the round's deadline); the rounds go to the one tracker of the check. Events and
their outbox deliveries are written in one transaction; the leader also runs each profile's
delivery worker (notices, repeats, escalations, objectives at risk and breached).

No notice lost or doubled across a change of leader: event ids are deterministic and the store
keeps one event per id and one delivery per (event, route, channel), so a new leader may judge
again what the old one judged. On taking over it replays the recent records, per stream from
the start of its open incident (the store's events say which are open) or else from its first
``ok`` record in the window (an ``ok`` resets the tracker, so no run is cut in two), then
follows from the last id the old leader had settled (kept in the store's state). Deliveries are
sent only by the leader; a delivery interrupted by the leader's death after the channel took it
but before the store recorded it is sent again by the next leader (at least once, with the same
notice id, which webhook receivers see as ``Idempotency-Key``).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from ._agent import check_profiles
from ._clock import SystemClock, WallClock
from ._coordination import Coordination, coordination_of
from ._groups import parent_check
from ._incidents import IncidentEvent, IncidentTracker
from ._plugins import PluginHost
from ._profile import QUORUM_VANTAGE, Check, Profile
from ._quorum import DEFAULT_GRACE_MS, VantageMerge
from ._record import SLIRecord, format_timestamp_ms, timestamp_ms
from ._runner import _stop_on_signal
from ._store import Store

STATE_LOW = "judge.{name}.records_low"
"""State key: every record id at or below it has been judged (the followers' resume point)."""
PAGE = 5000
MAX_PAGES = 20
"""At most PAGE × MAX_PAGES new records per poll (the rest at the next)."""
STATE_UNTIL = "judge.{name}.judged_until_ms"
"""State key: records that started before it have been judged (widens a takeover's replay)."""


@dataclass
class JudgeOptions:
    name: str = "default"
    """The leader lock's name: judges with the same name share one leader."""
    judge_id: str = ""
    poll: float = 1.0
    """Seconds between polls for new records (and for the lock, when not leading)."""
    settle: float = 10.0
    """Seconds after which an id gap is taken as final (a transaction that never committed)."""
    grace_ms: int = DEFAULT_GRACE_MS
    lookback: float | None = None
    """Seconds of records a new leader replays (default: per check, (confirm + 2) intervals)."""
    clock: WallClock = field(default_factory=SystemClock)
    duration: float | None = None
    handle_signals: bool = True

    def __post_init__(self) -> None:
        if not self.judge_id:
            self.judge_id = f"{socket.gethostname() or 'judge'}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class JudgeStats:
    """What a judge did (for metrics and tests)."""

    leading: bool = False
    terms: int = 0
    """How many times this judge became the leader."""
    records: int = 0
    events: int = 0
    deliveries_queued: int = 0
    last_poll_ms: int | None = None
    pending_rounds: int = 0


class _Term:
    """The state of one leadership term: trackers, merges, the follow position."""

    def __init__(self, judge: Judge, low: int, fresh_from: int):
        self.judge = judge
        self.low = low
        self.hi = low
        """The highest record id read so far (ids in ``(low, hi]`` are re-listed until settled)."""
        self.seen: dict[int, float] = {}
        self.trackers: dict[tuple[str, str], IncidentTracker] = {}
        self.merges: dict[str, VantageMerge] = {}
        # Replay: a stream with an open incident is fed from the incident's start; every other
        # stream from fresh_from, where the previous leader left it with no incident (every
        # counted failure before it caused an event: the last one closed its incident).
        self.start_at: dict[tuple[str, str], int] = {}
        self.fresh_from = fresh_from
        self.replaying = True
        """While replaying the stored records at take-over (afterwards every record counts: one
        that arrives late was judged by no one)."""
        self.replayed: set[tuple[str, str, str]] = set()
        self.pending: list[IncidentEvent] = []

    def tracker(self, check: str, vantage: str) -> IncidentTracker:
        key = (check, vantage)
        tracker = self.trackers.get(key)
        if tracker is None:
            confirm = self.judge.checks[parent_check(check)].confirm
            tracker = self.trackers[key] = IncidentTracker(confirm)
        return tracker

    def feed(self, record: SLIRecord) -> None:
        parent = parent_check(record.check)
        check = self.judge.checks.get(parent)
        if check is None or record.vantage == QUORUM_VANTAGE:
            return
        if check.vantages and record.check == parent:
            merge = self.merges.get(parent)
            if merge is None:
                merge = self.merges[parent] = VantageMerge(check, grace_ms=self.judge.options.grace_ms)
            merge.add(record)
            return
        self.track(record)

    def track(self, record: SLIRecord) -> None:
        key = (record.check, record.vantage)
        if self.replaying and key not in self.trackers:
            if timestamp_ms(record.started_at) < self.start_at.get(key, self.fresh_from):
                return  # before the point where the stream's state is known
        self.pending.extend(self.tracker(*key).feed(record))

    def decide(self, now_ms: int | None) -> None:
        for merge in self.merges.values():
            for merged in merge.ready(now_ms):
                self.track(merged)


class Judge:
    """The judge of *profiles*' records in *store* (see the module docstring)."""

    def __init__(self, profiles: Sequence[Profile], host: PluginHost, store: Store, options: JudgeOptions, *,
                 coordination: Coordination | None = None, warn: Callable[[str], None] | None = None):
        check_profiles(profiles, "judge")
        self.profiles = list(profiles)
        self.host = host
        self.store = store
        self.options = options
        self.coordination = coordination
        self.checks: dict[str, Check] = {c.full_id: c for p in profiles for c in p.checks}
        self.prefixes = [p.name + "/" for p in profiles]
        self.stats = JudgeStats()
        self.events: deque[IncidentEvent] = deque(maxlen=10_000)
        """The latest events this judge wrote (tests, summaries)."""
        self.workers: dict[str, Any] = {}
        self._warn = warn or _warn_stderr
        self._term: _Term | None = None
        self._lock_failing = False
        self._routers: dict[str, Any] = {}
        for profile in profiles:
            if profile.route_configs:
                from ._notify import Router
                self._routers[profile.name] = Router(profile)

    def trackers(self) -> dict[tuple[str, str], IncidentTracker]:
        """The current term's incident trackers by (check, vantage) (empty when not leading)."""
        return dict(self._term.trackers) if self._term is not None else {}

    def now_ms(self) -> int:
        return timestamp_ms(format_timestamp_ms(round(self.options.clock.now().timestamp() * 1000)))

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(function, *args)

    # ---- leadership -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Lead when the lock can be had, else wait for it; until cancelled."""
        own = self.coordination is None
        if self.coordination is None:
            self.coordination = await self._call(coordination_of, self.store, "judge")
        try:
            while True:
                if await self._try_lead():
                    self.stats.leading = True
                    self.stats.terms += 1
                    try:
                        await self._lead()
                    finally:
                        self.stats.leading = False
                        self._term = None
                await trio.sleep(self.options.poll)
        finally:
            if own:
                with trio.CancelScope(shield=True):
                    await self._call(self.coordination.close)

    async def _try_lead(self) -> bool:
        assert self.coordination is not None
        try:
            held = bool(await self._call(self.coordination.try_lead, self.options.name))
        except Exception as exc:
            if not self._lock_failing:  # once, not every poll
                self._warn(f"judge {self.options.judge_id}: cannot ask for the leader lock, retrying: {exc}")
            self._lock_failing = True
            return False
        if self._lock_failing:
            self._warn(f"judge {self.options.judge_id}: the store answers again")
        self._lock_failing = False
        return held

    async def _lead(self) -> None:
        """One term: replay, then follow until the lock is lost (or cancelled)."""
        async with trio.open_nursery() as nursery:
            term = self._term = await self._take_over()
            for profile in self.profiles:
                worker = self._worker(profile)
                if worker is not None:
                    await nursery.start(worker.run)
            while True:
                await self._poll(term)
                await trio.sleep(self.options.poll)
                if not await self._try_lead():
                    self._warn(f"judge {self.options.judge_id}: lost the leader lock")
                    nursery.cancel_scope.cancel()
                    return

    def _worker(self, profile: Profile) -> Any:
        router = self._routers.get(profile.name)
        if router is None:
            return None
        from ._notify import DeliveryWorker, now_ms_of
        channels = {c.id: (self.host.notifiers.get(c.kind)(), c) for c in profile.channels}
        worker = DeliveryWorker(self.store, profile, channels, router, now_ms_of(self.options.clock),
                                warn=self._warn, evaluators=self.host.evaluators)
        self.workers[profile.name] = worker
        return worker

    # ---- taking over ------------------------------------------------------------------------------

    async def _take_over(self) -> _Term:
        assert self.coordination is not None
        coordination = self.coordination
        now = self.now_ms()

        def load() -> tuple[int, int, list[SLIRecord], dict[tuple[str, str], IncidentEvent]]:
            low_text = coordination.get_state(STATE_LOW.format(name=self.options.name))
            until_text = coordination.get_state(STATE_UNTIL.format(name=self.options.name))
            hi = coordination.last_record_id()
            last: dict[tuple[str, str], IncidentEvent] = {}
            for prefix in self.prefixes:
                for event in self.store.events(prefix=prefix):
                    last[(event.check, event.vantage)] = event
            lookback = self.options.lookback
            if lookback is None:
                lookback = max(float(c.interval) * (c.confirm + 2) for c in self.checks.values())
            fresh_from = min(now, int(until_text) if until_text else now) - round(lookback * 1000)
            since = fresh_from - round(max(float(c.interval) for c in self.checks.values()) * 1000)
            for event in last.values():
                if event.kind in ("suspected", "confirmed"):
                    since = min(since, timestamp_ms(event.incident_started_at))
            if low_text:
                low = int(low_text)
            else:  # the first judge: from the records it replays, so that those in flight now count
                first = coordination.first_id_since(since, self.prefixes)
                low = hi if first is None else min(hi, first - 1)
            records: list[SLIRecord] = []
            for prefix in self.prefixes:
                records.extend(self.store.records(prefix=prefix, since=format_timestamp_ms(since)))
            return low, fresh_from, records, last

        low, fresh_from, records, last = await self._call(load)
        term = _Term(self, low, fresh_from)
        for key, event in last.items():
            if event.kind in ("suspected", "confirmed"):
                term.start_at[key] = timestamp_ms(event.incident_started_at)
        for check in self.checks.values():
            if check.vantages:
                merge = term.merges[check.full_id] = VantageMerge(check, grace_ms=self.options.grace_ms)
                begin = term.start_at.get((check.full_id, QUORUM_VANTAGE), fresh_from)
                merge.decided_through = (begin - merge.offset_ms + merge.interval_ms - 1) // merge.interval_ms - 1
        records.sort(key=lambda r: r.started_at)
        for record in records:
            term.replayed.add((record.check, record.vantage, record.started_at))
            term.feed(record)
        term.decide(now)
        term.replaying = False
        await self._write(term)
        return term

    # ---- following --------------------------------------------------------------------------------

    async def _poll(self, term: _Term) -> None:
        assert self.coordination is not None
        coordination = self.coordination
        now_t = trio.current_time()

        def read() -> list[tuple[int, SLIRecord]]:
            rows: list[tuple[int, SLIRecord]] = []
            # Ids below the highest seen that were not visible then (committed late).
            late = [i for i in coordination.record_ids(term.low, term.hi, self.prefixes) if i not in term.seen]
            rows += coordination.records_by_id(late)
            for _ in range(MAX_PAGES):
                page = coordination.records_after(term.hi, self.prefixes, PAGE)
                rows += page
                if page:
                    term.hi = max(term.hi, page[-1][0])
                if len(page) < PAGE:
                    break
            return rows

        try:
            rows = await self._call(read)
        except Exception as exc:
            self._warn(f"judge {self.options.judge_id}: reading new records failed, retrying: {exc}")
            return
        fresh = []
        for ident, record in rows:
            if ident in term.seen:
                continue
            term.seen[ident] = now_t
            if (record.check, record.vantage, record.started_at) in term.replayed:
                continue
            fresh.append(record)
        for record in sorted(fresh, key=lambda r: r.started_at):
            term.feed(record)
        self.stats.records += len(fresh)
        # Ids seen more than `settle` ago: every id below them is final (committed or never).
        settled = [i for i, t in term.seen.items() if t <= now_t - self.options.settle]
        if settled:
            term.low = max(term.low, max(settled))
            for ident in [i for i in term.seen if i <= term.low]:
                del term.seen[ident]
        now = self.now_ms()
        term.decide(now)
        self.stats.pending_rounds = sum(m.pending() for m in term.merges.values())
        self.stats.last_poll_ms = now
        if await self._write(term):
            try:
                await self._call(self.coordination.set_state, STATE_LOW.format(name=self.options.name),
                                 str(term.low))
                await self._call(self.coordination.set_state, STATE_UNTIL.format(name=self.options.name),
                                 str(self._judged_until(term, now)))
            except Exception as exc:
                self._warn(f"judge {self.options.judge_id}: could not save its position: {exc}")

    def _judged_until(self, term: _Term, now: int) -> int:
        """Records that started before this moment have been judged (pending rounds excepted)."""
        waiting = [m.slot_ms(min(m._rounds)) for m in term.merges.values() if m.pending()]
        return min([now - round(self.options.settle * 1000), *waiting])

    async def _write(self, term: _Term) -> bool:
        """Store the pending events with their deliveries (one transaction); hooks after."""
        if not term.pending:
            return True
        events = list(term.pending)
        deliveries: list[Any] = []
        for name, router in self._routers.items():
            deliveries.extend(router.deliveries([e for e in events if e.check.startswith(name + "/")]))
        try:
            await self._call(self.store.write, [], events, deliveries)
        except Exception as exc:  # kept: the next poll writes them again (idempotent)
            self._warn(f"judge {self.options.judge_id}: writing {len(events)} events failed, retrying: {exc}")
            return False
        term.pending = term.pending[len(events):]
        self.stats.events += len(events)
        self.stats.deliveries_queued += len(deliveries)
        self.events.extend(events)
        for event in events:
            self.host.event(event)
        for worker in self.workers.values():
            worker.poke()
        return True


async def run_judge(profiles: Sequence[Profile], host: PluginHost, store: Store, options: JudgeOptions, *,
                    coordination: Coordination | None = None,
                    on_started: Callable[[Judge], None] | None = None) -> Judge:
    """Run a judge until ``duration`` passes or a signal arrives; returns it (its stats, events)."""
    judge = Judge(profiles, host, store, options, coordination=coordination)
    if on_started is not None:
        on_started(judge)
    stopped = _Stopped()
    async with trio.open_nursery() as nursery:
        if options.handle_signals:
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope, stopped)
        if options.duration is not None:
            nursery.cancel_scope.deadline = trio.current_time() + options.duration
        await judge.run()
    return judge


@dataclass
class _Stopped:
    stopped_by: str | None = None


def describe(judge: Judge) -> str:
    """One JSON line of the judge's stats (``probe judge`` prints it when it stops)."""
    return json.dumps({"judge": judge.options.judge_id, **judge.stats.__dict__})


def _warn_stderr(message: str) -> None:
    print(f"probe: {message}", file=sys.stderr)
