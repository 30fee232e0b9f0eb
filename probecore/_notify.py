"""Notifications: routes, the notifier contract, the durable outbox and its delivery worker.

How a notice travels (DESIGN.md, "Notifications"):

1. An incident event is stored by the pipeline; in the **same transaction** the router writes one
   :class:`Delivery` per (event, route, channel) that the profile's ``[[notify]]`` routes select
   — the outbox. Nothing is sent before both are committed.
2. The :class:`DeliveryWorker` (a task of ``probe run``) sends due deliveries through their
   channel's :class:`Notifier`, records every attempt, retries with exponential backoff and
   jitter, and marks a delivery ``delivered`` (with ``delivered_at``) or ``expired`` once it is
   older than the route's ``expire_after`` — never dropped silently. A restarted run resumes the
   pending ones; a delivered one is never sent again for the same (event, route, channel).
3. The first delivery of an incident's ``confirmed`` notice per route is stored as a ``notice``
   annotation: the evidence the ``notify_delay`` objective (002-T) judges.

Repeats while an incident stays open, and escalation to a second route when it is not resolved
in time, are deliveries too, with deterministic event ids (``<incident>#repeat-2``,
``<incident>#escalated``) so a restart never doubles them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Generic, Literal, TypeVar

import msgspec
import trio

from ._annotations import Annotation
from ._durations import Duration, format_duration
from ._groups import is_member
from ._incidents import IncidentEvent
from ._record import Failure, Timestamp, format_timestamp, format_timestamp_ms, timestamp_ms
from ._secrets import redact

NOTICE_SCHEMA_ID = "probecore.notice/1"
NoticeKind = Literal["suspected", "confirmed", "resolved", "flap", "repeat", "escalated", "test",
                     "objective_at_risk", "objective_breached"]
EVENT_KINDS: tuple[str, ...] = ("suspected", "confirmed", "resolved", "flap")
OBJECTIVE_EVENTS: tuple[str, ...] = ("objective_at_risk", "objective_breached")
EVALUATE_EVERY_S = 300.0
"""How often ``probe run`` judges the month so far for objective notices."""


class ChannelConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Base of every notifier's ``Config``: a ``[[channel]]`` table (``id``, ``kind`` and the
    kind's own keys). Secrets are :class:`probecore.Secret` references."""

    id: str
    kind: str


class Notice(msgspec.Struct, kw_only=True, frozen=True):
    """What a channel delivers (the webhook's JSON body, schema ``probecore.notice/1``)."""

    schema: Literal["probecore.notice/1"] = NOTICE_SCHEMA_ID
    notice_id: str
    """``<event id>/<route>``: the same for every channel and every retry (idempotency key)."""
    event_id: str
    kind: NoticeKind
    profile: str
    route: str
    check: str
    vantage: str
    incident: str | None
    incident_started_at: Timestamp | None
    at: Timestamp
    """When the event happened (the record that caused it)."""
    due_by: Timestamp | None = None
    """The route's ``obligation``: the notice must be delivered by then (002: 15 min)."""
    failure: Failure | None = None
    title: str
    text: str
    labels: dict[str, str] = {}


class Delivery(msgspec.Struct, kw_only=True):
    """One notice to one channel: a row of the outbox."""

    profile: str
    event_id: str
    route: str
    channel: str
    notice: Notice
    created_ms: int
    next_ms: int
    status: Literal["pending", "delivered", "expired"] = "pending"
    attempts: int = 0
    delivered_ms: int | None = None
    last_error: str | None = None
    expire_ms: int | None = None
    id: int | None = None

    def record(self, at_ms: int, ok: bool, error: str | None, next_ms: int | None, expired: bool) -> bool:
        """Apply one attempt's result (what every store's ``record_attempt`` does); returns
        whether it applied — a delivery no longer pending is left as it is (never twice)."""
        if self.status != "pending":
            return False
        self.attempts += 0 if expired else 1
        self.last_error = error
        if ok:
            self.status, self.delivered_ms = "delivered", at_ms
        elif expired:
            self.status = "expired"
        elif next_ms is not None:
            self.next_ms = next_ms
        return True


C = TypeVar("C", bound=ChannelConfig)


class DeliveryError(Exception):
    """A channel could not deliver. ``retry=False`` for errors retrying cannot fix (a rejected
    address): the delivery is still retried until it expires, but less often."""

    def __init__(self, message: str, *, retry: bool = True):
        super().__init__(message)
        self.retry = retry


class DeliveryContext:
    """What a notifier may use besides its config: secrets (scrubbed from errors), the timeout."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._revealed: set[str] = set()

    def reveal(self, secret: Any) -> str:
        """The value of *secret* (a :class:`Secret`); scrubbed from this attempt's error."""
        value = secret.reveal()
        self._revealed.add(value)
        return value

    def conceal(self, value: str) -> None:
        """Scrub *value* from this attempt's error like a revealed secret: for sensitive text
        that is not a secret reference (a token in a URL's query or user info)."""
        if value:
            self._revealed.add(value)

    def scrub(self, text: str) -> str:
        """*text* without any revealed or concealed value, in any encoded form
        (:func:`probecore.redact`)."""
        return redact(text, self._revealed)


class Notifier(Generic[C]):
    """Base class of notification channels. Subclass, set ``kind`` and ``Config``, implement
    ``send``; add it with ``probecore_add_notifiers``.

    ``send`` runs on trio; blocking libraries go through ``trio.to_thread.run_sync``. It raises
    :class:`DeliveryError` when the notice was not accepted; returning means delivered. It must
    be idempotent per ``notice.notice_id`` where the channel allows (a header, a Message-ID):
    after a crash between sending and recording, the notice is sent again.
    """

    kind: ClassVar[str]
    Config: ClassVar[type[ChannelConfig]] = ChannelConfig

    def target(self, config: C) -> str:
        """Where notices go (an address, a URL without credentials), for lists and logs."""
        return config.kind

    async def send(self, config: C, notice: Notice, ctx: DeliveryContext) -> None:
        raise NotImplementedError


# ---- routes ---------------------------------------------------------------------------------------

class Escalate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    after: Duration
    route: str


class RouteConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A ``[[notify]]`` table."""

    id: str
    channels: list[str]
    events: list[Literal["suspected", "confirmed", "resolved", "flap", "objective_at_risk",
                         "objective_breached"]] = msgspec.field(default_factory=lambda: ["confirmed", "resolved"])
    """Incident events, and objective events: ``objective_at_risk`` (the month's budget is
    ``at_risk`` used), ``objective_breached`` (the objective is already missed this month)."""
    at_risk: float = 0.8
    """Share of an objective's budget used that makes it at risk."""
    check: str | None = None
    checks: list[str] = []
    labels: dict[str, str] = {}
    obligation: Duration | None = None
    """Deliver within this long of the event (002 art.4: ``"15m"`` from confirmation)."""
    repeat: Duration | None = None
    """Send the confirmed notice again this often while the incident stays open."""
    escalate: Escalate | None = None
    """Notify another route when the incident is not resolved within ``after``."""
    expire_after: Duration = Duration(86400.0)
    """A delivery still failing this long after its event is marked expired."""
    timeout: Duration = Duration(30.0)
    only_escalation: bool = False
    """Used only as another route's escalation target, never for events directly."""

    def selects(self, check: Any) -> bool:
        ids = ([self.check] if self.check else []) + list(self.checks)
        if ids and check.id not in ids:
            return False
        return all(check.labels.get(k) == v for k, v in self.labels.items())


class Router:
    """Turns stored incident events into outbox deliveries, by the profile's routes."""

    def __init__(self, profile: Any):
        self.profile = profile
        self.routes: tuple[RouteConfig, ...] = getattr(profile, "route_configs", ())
        self._checks = {c.full_id: c for c in profile.checks}

    def deliveries(self, events: Iterable[IncidentEvent]) -> list[Delivery]:
        found: list[Delivery] = []
        for event in events:
            if is_member(event.check):  # members notify through their round's record
                continue
            check = self._checks.get(event.check)
            if check is None:
                continue
            for route in self.routes:
                if route.only_escalation or event.kind not in route.events or not route.selects(check):
                    continue
                found.extend(self.for_route(route, _notice(self.profile, route, event, event.kind, event.event_id)))
        return found

    def for_route(self, route: RouteConfig, notice: Notice) -> list[Delivery]:
        created = timestamp_ms(notice.at)
        return [Delivery(profile=self.profile.name, event_id=notice.event_id, route=route.id, channel=channel,
                         notice=notice, created_ms=created, next_ms=created,
                         expire_ms=created + round(route.expire_after * 1000))
                for channel in route.channels]

    def objective_deliveries(self, report: Any) -> list[Delivery]:
        """Notices for objectives at risk or breached in *report* (the month so far). Event ids
        name the objective, the period and the kind: one notice each per month and route."""
        found: list[Delivery] = []
        for objective in report.objectives:
            for route in self.routes:
                kind = None
                if objective.met is False and "objective_breached" in route.events:
                    kind = "objective_breached"
                elif (objective.met is not False and objective.budget_used is not None
                      and objective.budget_used >= route.at_risk and "objective_at_risk" in route.events):
                    kind = "objective_at_risk"
                if kind is None or route.only_escalation:
                    continue
                checks = [self._checks.get(c if "/" in c else f"{self.profile.name}/{c}") for c in objective.checks]
                if not any(c is not None and route.selects(c) for c in checks):
                    continue
                event_id = f"{self.profile.name}/objective/{objective.id}@{report.period.label}#{kind}"
                found.extend(self.for_route(route, _objective_notice(self.profile, route, report, objective,
                                                                      kind, event_id)))
        return found

    def route(self, route_id: str) -> RouteConfig:
        return next(r for r in self.routes if r.id == route_id)

    def timed(self, open_incidents: Sequence[IncidentEvent], now_ms: int) -> list[Delivery]:
        """Repeat and escalation deliveries due by *now_ms* for incidents still open (their
        ``confirmed`` events). Event ids are deterministic; the store ignores ones it has."""
        found: list[Delivery] = []
        for event in open_incidents:
            check = self._checks.get(event.check)
            if check is None:
                continue
            confirmed = timestamp_ms(event.at)
            for route in self.routes:
                if route.only_escalation or "confirmed" not in route.events or not route.selects(check):
                    continue
                if route.repeat:
                    n = int((now_ms - confirmed) // (route.repeat * 1000))
                    if n >= 1:
                        at = confirmed + round(n * route.repeat * 1000)
                        found.extend(self.for_route(route, _notice(
                            self.profile, route, event, "repeat", f"{event.incident_id}#repeat-{n}", at_ms=at)))
                if route.escalate and now_ms >= confirmed + route.escalate.after * 1000:
                    target = self.route(route.escalate.route)
                    at = confirmed + round(route.escalate.after * 1000)
                    found.extend(self.for_route(target, _notice(
                        self.profile, target, event, "escalated", f"{event.incident_id}#escalated-{route.id}",
                        at_ms=at)))
        return found


def _notice(profile: Any, route: RouteConfig, event: IncidentEvent, kind: str, event_id: str,
            at_ms: int | None = None) -> Notice:
    check_id = event.check.split("/", 1)[-1]
    at = format_timestamp_ms(at_ms) if at_ms is not None else event.at
    due = None
    if route.obligation is not None:
        due = format_timestamp_ms(timestamp_ms(at) + round(route.obligation * 1000))
    words = {"suspected": "suspected outage", "confirmed": "OUTAGE", "resolved": "resolved",
             "flap": "brief failure (not an outage)", "repeat": "still DOWN", "escalated": "ESCALATED: still down",
             "test": "test notice"}[kind]
    failure = event.failure
    title = f"[{profile.name}] {check_id}: {words}"
    lines = [title, f"check: {event.check} from {event.vantage}",
             f"incident: {event.incident_id} (began {event.incident_started_at})", f"event: {kind} at {at}"]
    if failure is not None:
        lines.append(f"failure: {failure.code} ({failure.attribution}): {failure.message}")
    if due:
        lines.append(f"to be notified by: {due} ({format_duration(route.obligation or 0)} obligation)")
    checks = {c.full_id: c for c in profile.checks}
    labels = dict(checks[event.check].labels) if event.check in checks else {}
    return Notice(notice_id=f"{event_id}/{route.id}", event_id=event_id, kind=kind,  # type: ignore[arg-type]
                  profile=profile.name, route=route.id, check=event.check, vantage=event.vantage,
                  incident=event.incident_id, incident_started_at=event.incident_started_at, at=at,
                  due_by=due, failure=failure, title=title, text="\n".join(lines), labels=labels)


def _objective_notice(profile: Any, route: RouteConfig, report: Any, objective: Any, kind: str,
                      event_id: str) -> Notice:
    words = "BREACHED" if kind == "objective_breached" else "at risk"
    used = "" if objective.budget_used is None else f", {objective.budget_used:.0%} of its budget used"
    title = f"[{profile.name}] objective {objective.id} {words} in {report.period.label}{used}"
    lines = [title, f"clause: {objective.clause or '-'} ({objective.kind})",
             f"measured: {objective.measured} {objective.unit}, target: {objective.op} {objective.target}",
             f"judged until {report.period.evaluated_until}"]
    if objective.remedy is not None:
        lines.append(f"remedy owed if it stays so: {objective.remedy.kind} {objective.remedy.detail}")
    check = objective.checks[0] if objective.checks else "-"
    return Notice(notice_id=f"{event_id}/{route.id}", event_id=event_id, kind=kind,  # type: ignore[arg-type]
                  profile=profile.name, route=route.id, check=f"{profile.name}/{check}", vantage="-",
                  incident=None, incident_started_at=None, at=report.generated_at, title=title,
                  text="\n".join(lines))


def test_notice(profile: Any, route: RouteConfig, now_ms: int) -> Notice:
    """A notice for ``probe notify test``: marked as a test, about no incident."""
    at = format_timestamp_ms(now_ms)
    title = f"[{profile.name}] test notice through route {route.id}"
    return Notice(notice_id=f"test-{now_ms}/{route.id}", event_id=f"test-{now_ms}", kind="test",
                  profile=profile.name, route=route.id, check=f"{profile.name}/-", vantage="-",
                  incident=None, incident_started_at=None, at=at, title=title,
                  text=f"{title}\nsent by 'probe notify test' at {at}; no action needed.")


# ---- delivery -------------------------------------------------------------------------------------

BACKOFF_BASE_S = 5.0
BACKOFF_CAP_S = 600.0


def backoff_s(attempts: int, rng: random.Random, *, retry: bool = True) -> float:
    """Seconds until the next attempt after *attempts* failed ones: 5 s doubling to 10 min,
    ±20 % jitter so that many deliveries to one recovering endpoint do not arrive at once."""
    base = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1))
    if not retry:
        base = BACKOFF_CAP_S
    return base * rng.uniform(0.8, 1.2)


class DeliveryWorker:
    """Sends due outbox deliveries until cancelled. One per ``probe run``.

    :param channels: channel id → (notifier instance, config).
    :param now_ms: the wall clock (the run's injected clock, so tests can mock it).
    """

    def __init__(self, store: Any, profile: Any, channels: dict[str, tuple[Notifier[Any], ChannelConfig]],
                 router: Router, now_ms: Callable[[], int], *, poll_s: float = 1.0, seed: int | None = None,
                 warn: Callable[[str], None] | None = None, evaluators: Any = None,
                 evaluate_every_s: float = EVALUATE_EVERY_S):
        self.store = store
        self.profile = profile
        self.channels = channels
        self.router = router
        self.now_ms = now_ms
        self.poll_s = poll_s
        self.rng = random.Random(seed)
        self.warn = warn or (lambda message: None)
        self.sent = 0
        self._wake = trio.Event()
        self.evaluators = evaluators
        self.evaluate_every_ms = round(evaluate_every_s * 1000)
        self._next_evaluation_ms = 0
        self._watch_objectives = evaluators is not None and any(
            set(r.events) & set(OBJECTIVE_EVENTS) for r in router.routes)

    async def _store(self, call: Callable[..., Any], *args: Any) -> Any:
        from ._store import call_store
        return await call_store(self.store, call, *args)

    def poke(self) -> None:
        """Something new is in the outbox: look now."""
        self._wake.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.tick()
            with trio.move_on_after(self.poll_s):
                await self._wake.wait()
            self._wake = trio.Event()

    async def tick(self) -> int:
        """Enqueue due repeats/escalations (and objective notices), then attempt every due
        delivery once, in order per (check, channel). Returns how many were delivered."""
        now = self.now_ms()
        if any(r.repeat or r.escalate for r in self.router.routes):
            opened = await self._store(self.store.open_incidents, self.profile.name)
            timed = self.router.timed(opened, now)
            if timed:
                await self._store(self.store.enqueue, timed)
        if self._watch_objectives and now >= self._next_evaluation_ms:
            self._next_evaluation_ms = now + self.evaluate_every_ms
            report = await self._store(self._judge_month, now)
            queued = self.router.objective_deliveries(report)
            if queued:
                await self._store(self.store.enqueue, queued)
        due = await self._store(self.store.due_deliveries, self.profile.name, now)
        if not due:
            return 0
        # In order per (check, channel): a check's resolved notice never overtakes its
        # confirmed one. A group waits while an older delivery of it is pending but not due
        # (backing off); within a tick a group is sent one by one and stops at a failure.
        pending = await self._store(self.store.deliveries, self.profile.name, "pending")
        oldest: dict[tuple[str, str], tuple[int, int]] = {}
        for d in pending:
            key = (d.notice.check, d.channel)
            oldest[key] = min(oldest.get(key, (d.created_ms, d.id or 0)), (d.created_ms, d.id or 0))
        groups: dict[tuple[str, str], list[Delivery]] = {}
        for d in sorted(due, key=lambda d: (d.created_ms, d.id or 0)):
            groups.setdefault((d.notice.check, d.channel), []).append(d)
        before = self.sent
        async with trio.open_nursery() as nursery:
            for key, group in groups.items():
                if oldest.get(key, (group[0].created_ms, group[0].id or 0)) < (group[0].created_ms, group[0].id or 0):
                    continue
                nursery.start_soon(self._deliver_in_order, group)
        return self.sent - before

    async def _deliver_in_order(self, group: list[Delivery]) -> None:
        for delivery in group:
            if not await self._deliver(delivery):
                return

    async def _deliver(self, delivery: Delivery) -> bool:
        """One attempt; whether the delivery is finished (delivered or expired)."""
        now = self.now_ms()
        if delivery.expire_ms is not None and now >= delivery.expire_ms:
            await self._store(self.store.record_attempt, delivery.id, now, False,
                                          "expired: not delivered before expire_after", None, True)
            self.warn(f"notice {delivery.notice.notice_id} to channel {delivery.channel} expired "
                      f"after {delivery.attempts} attempt(s)")
            return True
        channel = self.channels.get(delivery.channel)
        error: str | None = None
        retry = True
        if channel is None:
            error = f'no channel "{delivery.channel}" in the profile any more'
            retry = False
        else:
            notifier, config = channel
            route = next((r for r in self.router.routes if r.id == delivery.route), None)
            ctx = DeliveryContext(float(route.timeout) if route else 30.0)
            try:
                with trio.fail_after(ctx.timeout):
                    await notifier.send(config, delivery.notice, ctx)
            except trio.TooSlowError:
                error = f"timed out after {format_duration(ctx.timeout)}"
            except DeliveryError as exc:
                error, retry = ctx.scrub(str(exc)), exc.retry
            except Exception as exc:  # a notifier bug must not stop the other deliveries
                error = ctx.scrub(f"{type(exc).__name__}: {exc}")
        finished = self.now_ms()
        if error is None:
            await self._store(self._delivered, delivery, finished)
            self.sent += 1
            return True
        next_ms = finished + round(backoff_s(delivery.attempts + 1, self.rng, retry=retry) * 1000)
        await self._store(self.store.record_attempt, delivery.id, finished, False, error,
                                      next_ms, False)
        self.warn(f"notice {delivery.notice.notice_id} to channel {delivery.channel}: {error}; "
                  f"attempt {delivery.attempts + 1}, next in {format_duration(round((next_ms - finished) / 1000))}")
        return False

    def _judge_month(self, now_ms: int) -> Any:
        from datetime import datetime, timezone

        from ._evaluation import Period, evaluate_profile
        now = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc)
        local = now.astimezone(self.profile.timezone)
        period = Period.month(local.year, local.month, self.profile.timezone)
        return evaluate_profile(self.profile, self.store, self.evaluators, period, now=now)

    def _delivered(self, delivery: Delivery, at_ms: int) -> None:
        self.store.record_attempt(delivery.id, at_ms, True, None, None, False)
        notice = delivery.notice
        if notice.kind == "confirmed" and notice.incident:
            # The evidence of 002-T: the first delivery of the confirmation per route.
            known = {(a.incident, a.route) for a in self.store.annotations(self.profile.name, "notice")}
            if (notice.incident, notice.route) not in known:
                self.store.annotate(Annotation(
                    kind="notice", profile=self.profile.name, check=notice.check, incident=notice.incident,
                    route=notice.route, start=format_timestamp_ms(at_ms),
                    note=f"delivered through {delivery.channel} after {delivery.attempts + 1} attempt(s)",
                    author="probe run", created_at=format_timestamp_ms(at_ms)))


def now_ms_of(clock: Any) -> Callable[[], int]:
    return lambda: timestamp_ms(format_timestamp(clock.now()))
