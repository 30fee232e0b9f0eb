"""Prometheus metrics of ``probe run``, ``probe agent`` and ``probe judge`` (``--metrics [HOST]:PORT``).

Served at ``/metrics`` by prometheus-client's HTTP server in a daemon thread, from a registry of
this process's own (never the library's global one). A bare port binds 127.0.0.1: metrics name
every check and target, so exposing them is the operator's explicit choice (``0.0.0.0:9464``).

Names follow the Prometheus conventions (base units, ``_total`` counters, ``_seconds``) and
blackbox_exporter's where they mean the same: ``probecore_probe_success`` and
``probecore_probe_duration_seconds`` are ``probe_success`` and ``probe_duration_seconds`` per
check; ``probecore_probe_phase_duration_seconds{phase}`` is ``probe_http_duration_seconds{phase}``
for every kind. Labels: ``check`` (full id), ``vantage``, ``probe`` (kind).

Per check (the records this process made): success, duration, phases, the last outcome as a
state set (``probecore_probe_outcome{outcome}`` 1 for the current one), attempts by outcome, the
failure code of the last failure (``probecore_probe_failure_info``). Scheduler: a histogram of
lateness (slot → start), missed (skipped) slots per check, checks planned and owned. Incidents:
``probecore_incident_state{state}`` per tracked stream (``run``, ``judge``). Objectives (judged
from the store every 5 minutes, as the delivery worker does: ``run``, ``judge``): met, budget
used and remaining as ratios. Outbox: deliveries pending per profile (every 15 s). Judge: leader or not, records followed, rounds pending.
Agent: members of its vantage.

Values are read at scrape time from the objects that own them (the scheduler's stats, the
membership, the judge's trackers): a scrape costs nothing while nobody scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from ._incidents import IncidentEvent
from ._record import SLIRecord

OUTCOMES = ("ok", "fail", "error")
STATES = ("ok", "suspected", "confirmed")
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REFRESH_S = 15.0
EVALUATE_S = 300.0
_STATE_AFTER = {"suspected": "suspected", "confirmed": "confirmed", "resolved": "ok", "flap": "ok"}


class Metrics:
    """The metrics of one process; *role* is ``run``, ``agent`` or ``judge``."""

    def __init__(self, role: str):
        self.role = role
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        keys = ("check", "vantage", "probe")
        self.success = Gauge("probecore_probe_success", "Whether the last attempt of the check was ok "
                             "(blackbox_exporter: probe_success)", keys, registry=r)
        self.duration = Gauge("probecore_probe_duration_seconds", "How long the last attempt took "
                              "(blackbox_exporter: probe_duration_seconds)", keys, registry=r)
        self.phase = Gauge("probecore_probe_phase_duration_seconds", "Seconds of each phase of the last "
                           "attempt (blackbox_exporter: probe_http_duration_seconds)", (*keys, "phase"), registry=r)
        self.outcome = Gauge("probecore_probe_outcome", "The last attempt's outcome: 1 for the current "
                             "one (ok, fail, error), 0 for the others", (*keys, "outcome"), registry=r)
        self.attempts = Counter("probecore_probe_attempts", "Attempts by outcome", (*keys, "outcome"), registry=r)
        self.last_attempt = Gauge("probecore_probe_last_attempt_timestamp_seconds", "When the last attempt "
                                  "started (Unix time)", keys, registry=r)
        self.value = Gauge("probecore_probe_value", "The last ok attempt's headline value (in its unit: "
                           "the probe kind's)", keys, registry=r)
        self.lateness = Histogram("probecore_scheduler_lateness_seconds", "How much later than its slot "
                                  "an attempt started", buckets=LATENESS_BUCKETS, registry=r)
        self.outbox = Gauge("probecore_outbox_pending", "Notice deliveries pending in the outbox",
                            ("profile",), registry=r)
        self.objective_met = Gauge("probecore_objective_met", "Whether the objective is met this period so "
                                   "far (absent while unknown)", ("profile", "objective"), registry=r)
        self.budget_used = Gauge("probecore_objective_budget_used_ratio", "Share of the objective's error "
                                 "budget used this period so far", ("profile", "objective"), registry=r)
        self.budget_left = Gauge("probecore_objective_budget_remaining_ratio", "Share of the objective's "
                                 "error budget left this period (negative: overspent)", ("profile", "objective"),
                                 registry=r)
        self._failure: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._incidents: dict[tuple[str, str], str] = {}
        self._live = _LiveCollector(self)
        r.register(self._live)
        self.server: Any = None

    # ---- feeding ------------------------------------------------------------------------------------

    def observed(self, record: SLIRecord, events: Sequence[IncidentEvent] = ()) -> None:
        """A record this process made (the pipeline's ``on_observed`` callback)."""
        labels = (record.check, record.vantage, record.probe)
        self.success.labels(*labels).set(1.0 if record.outcome == "ok" else 0.0)
        self.duration.labels(*labels).set(record.duration_s)
        for name, seconds in record.phases.items():
            self.phase.labels(*labels, name).set(seconds)
        for outcome in OUTCOMES:
            self.outcome.labels(*labels, outcome).set(1.0 if record.outcome == outcome else 0.0)
        self.attempts.labels(*labels, record.outcome).inc()
        self.last_attempt.labels(*labels).set(record.started.timestamp())
        if record.outcome == "ok" and record.value is not None:
            self.value.labels(*labels).set(record.value)
        if record.failure is not None:
            self._failure[labels] = (record.failure.code, record.failure.attribution)
        self.lateness.observe(max(0.0, record.lateness_s))
        for event in events:  # probe run: its own trackers' events
            self._incidents[(event.check, event.vantage)] = _STATE_AFTER[event.kind]

    def watch_scheduler(self, scheduler: Any) -> None:
        self._live.scheduler = scheduler

    def watch_membership(self, membership: Any) -> None:
        self._live.membership = membership

    def watch_trackers(self, trackers: Any) -> None:
        """A ``{(check, vantage): IncidentTracker}`` map, or a callable returning one."""
        self._live.trackers = trackers

    def watch_judge(self, judge: Any) -> None:
        self._live.judge = judge

    def report(self, report: Any, profile: str) -> None:
        """An evaluation of the period so far: objectives met and budgets."""
        for objective in report.objectives:
            if objective.met is not None:
                self.objective_met.labels(profile, objective.id).set(1.0 if objective.met else 0.0)
            if objective.budget_used is not None:
                self.budget_used.labels(profile, objective.id).set(objective.budget_used)
                self.budget_left.labels(profile, objective.id).set(1.0 - objective.budget_used)

    async def refresh_store(self, store: Any, profiles: Sequence[Any], evaluators: Any = None, *,
                            every: float = REFRESH_S, evaluate_every: float = EVALUATE_S) -> None:
        """Every *every* seconds the outbox depth and, with *evaluators*, every *evaluate_every*
        seconds the objectives (a month's evaluation is not free), until cancelled. Errors are
        skipped (the next round tries again)."""
        from ._store import call_store

        next_evaluation = trio.current_time()
        while True:
            evaluate = evaluators is not None and trio.current_time() >= next_evaluation
            if evaluate:
                next_evaluation = trio.current_time() + evaluate_every
            for profile in profiles:
                try:
                    pending = await call_store(store, store.deliveries, profile.name, "pending")
                    self.outbox.labels(profile.name).set(len(pending))
                    if evaluate and profile.objective_configs:
                        report = await call_store(store, _judge_month, profile, store, evaluators)
                        self.report(report, profile.name)
                except Exception:  # a metric is not worth stopping the run for
                    continue
            await trio.sleep(every)

    # ---- serving ------------------------------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on *host*:*port* in a daemon thread; returns the port (for 0)."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self.server = server
        return int(server.server_address[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _judge_month(profile: Any, store: Any, evaluators: Any) -> Any:
    from datetime import datetime, timezone

    from ._evaluation import Period, evaluate_profile

    now = datetime.now(timezone.utc)
    local = now.astimezone(profile.timezone)
    return evaluate_profile(profile, store, evaluators, Period.month(local.year, local.month, profile.timezone),
                            now=now)


class _LiveCollector(Collector):
    """Metrics read at scrape time from the objects that own them."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.scheduler: Any = None
        self.membership: Any = None
        self.trackers: Any = None
        self.judge: Any = None

    def describe(self) -> list[Any]:
        return []  # dynamic: nothing to check at registration

    def collect(self) -> Iterator[Any]:
        failure = InfoMetricFamily("probecore_probe_failure", "The last failure of the check: code and "
                                   "attribution", labels=("check", "vantage", "probe"))
        for labels, (code, attribution) in list(self.metrics._failure.items()):
            failure.add_metric(list(labels), {"code": code, "attribution": attribution})
        yield failure
        if self.scheduler is not None:
            stats = dict(self.scheduler.stats)
            missed = CounterMetricFamily("probecore_scheduler_missed_slots", "Slots skipped because an "
                                         "attempt overran them", labels=("check",))
            planned = GaugeMetricFamily("probecore_scheduler_checks", "Checks this process schedules")
            planned.add_metric([], len(stats))
            for check, stat in stats.items():
                missed.add_metric([check], stat.missed_slots)
            yield missed
            yield planned
        if self.membership is not None:
            m = self.membership
            members = GaugeMetricFamily("probecore_agent_members", "Live agents of this agent's vantage",
                                        labels=("vantage",))
            members.add_metric([m.vantage], len(m.members))
            yield members
            if self.scheduler is not None:
                owned = GaugeMetricFamily("probecore_agent_owned_checks", "Checks this agent runs now",
                                          labels=("vantage",))
                owned.add_metric([m.vantage], m.owned(c for c in self.scheduler.checks))
                yield owned
        trackers = self.trackers
        if self.judge is not None:
            j = self.judge
            leader = GaugeMetricFamily("probecore_judge_leader", "1 while this judge leads")
            leader.add_metric([], 1.0 if j.stats.leading else 0.0)
            followed = CounterMetricFamily("probecore_judge_records", "Records this judge followed")
            followed.add_metric([], j.stats.records)
            rounds = GaugeMetricFamily("probecore_judge_pending_rounds", "Vantage rounds waiting for records")
            rounds.add_metric([], j.stats.pending_rounds)
            events = CounterMetricFamily("probecore_judge_events", "Incident events this judge wrote")
            events.add_metric([], j.stats.events)
            yield from (leader, followed, rounds, events)
            trackers = j.trackers() if j.stats.leading else {}
        if trackers is not None:
            current = trackers() if callable(trackers) else trackers
            states = {key: tracker.state for key, tracker in list(current.items())}
        else:
            states = dict(self.metrics._incidents)
        if states or self.metrics.role != "agent":
            state = GaugeMetricFamily("probecore_incident_state", "Incident state of each tracked stream: 1 "
                                      "for the current one (ok, suspected, confirmed)",
                                      labels=("check", "vantage", "state"))
            for (check, vantage), current_state in states.items():
                for name in STATES:
                    state.add_metric([check, vantage, name], 1.0 if current_state == name else 0.0)
            yield state

