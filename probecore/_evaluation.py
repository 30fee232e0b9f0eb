"""Judging a period of evidence objective by objective: the evaluator contract and the report.

An objective kind is an :class:`Evaluator` that a plugin adds with ``probecore_add_evaluators``.
It declares a ``Config`` (a :class:`ObjectiveConfig` subclass: the ``[[objective]]`` table, keys
checked when the profile loads) and ``evaluate(config, ctx)``, which returns a :class:`Verdict`
from what the :class:`EvaluationContext` offers: the period, the timeline (up/down/excluded/
unknown, from :mod:`probecore._timeline`), samples of a metric, records, maintenance windows and
annotations. Exclusions, outages, remedies and the comparison with the operator are applied here,
in one place, for every kind.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any, ClassVar, Generic, Literal, TypeVar

import msgspec

from ._annotations import Annotation
from ._durations import Duration, format_duration
from ._incidents import PROVIDER_ONLY
from ._record import ATTRIBUTIONS, SLIRecord, Timestamp, format_timestamp, format_timestamp_ms, timestamp_ms
from ._timeline import (
    DOWN,
    EXCLUDED,
    UNKNOWN,
    UP,
    Exclusions,
    Outage,
    Stream,
    Timeline,
    Window,
    build_timeline,
)

REPORT_SCHEMA_ID = "probecore.report/1"
Op = Literal["<", "<=", ">=", ">"]
ExcludeReason = Literal["customer", "third_party", "probe", "unknown", "force_majeure", "maintenance"]
DEFAULT_EXCLUDE: tuple[str, ...] = ("customer", "third_party", "probe", "unknown", "force_majeure",
                                    "maintenance")


REMEDY_KEYS: dict[str, tuple[str, ...]] = {
    "fee_multiple": ("multiple", "of"),
    "waive_month": (),
    "service_time": ("multiple", "of"),
    "fee_days": ("days",),
}
"""The keys each remedy kind takes besides ``kind``; any other is a profile error."""


class RemedySpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``remedy = { kind = … }`` of an objective (docs/objectives.md, "Remedies").

    ``fee_multiple`` and ``service_time`` owe ``multiple`` (default 2) × the fee or the service
    time ``of`` the interrupted time (default, pro rata: 001 §3.1 "the fee corresponding to the
    shortfall or interruption", 003 8a) or of the whole ``period`` (004: "twice the month's
    service time"); ``fee_days`` owes ``days`` (default 1) days of fee per missed occasion.
    A key the kind does not use is refused rather than silently ignored.
    """

    kind: Literal["fee_multiple", "waive_month", "service_time", "fee_days"]
    multiple: float | None = None
    of: Literal["interrupted", "period"] | None = None
    days: int | None = None

    def __post_init__(self) -> None:
        allowed = REMEDY_KEYS[self.kind]
        for key in ("multiple", "of", "days"):
            if getattr(self, key) is not None and key not in allowed:
                takes = f"takes only {', '.join(allowed)}" if allowed else "takes no other key"
                raise ValueError(f'key "{key}" does not apply to kind "{self.kind}" (it {takes})')
        if self.multiple is not None and not self.multiple > 0:
            raise ValueError(f"multiple: expected a number above 0, got {self.multiple:g}")
        if self.days is not None and self.days < 1:
            raise ValueError(f"days: expected at least 1, got {self.days}")

    @property
    def factor(self) -> float:
        return 2.0 if self.multiple is None else self.multiple

    @property
    def basis(self) -> str:
        """``"interrupted"`` or ``"period"``."""
        return self.of or "interrupted"

    @property
    def fee_days(self) -> int:
        return self.days or 1


class ObjectiveConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The keys every ``[[objective]]`` has; an evaluator's ``Config`` subclasses it."""

    id: str
    kind: str
    clause: str | None = None
    check: str | None = None
    checks: list[str] = []
    period: Literal["month", "year"] = "month"
    denominator: Literal["period", "evidence"] = "period"
    """What a ratio divides by: the whole ``period`` (to date), as contracts write "99.9 % a
    month" (unknown time then counts as up; coverage is shown beside it), or only the time with
    ``evidence``."""
    month_length: Literal["calendar", "30d"] = "calendar"
    """The length of a month: the calendar's, or 003's fixed 30×24×60 minutes."""
    op: Op | None = None
    target: float | None = None
    limit: Duration | None = None
    exclude: list[ExcludeReason] = msgspec.field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    report_within: Duration | None = None
    outage_start: Literal["first_failure", "confirmation"] = "first_failure"
    staleness: float = 2.0
    min_coverage: float = 0.0
    remedy: RemedySpec | None = None
    description: str | None = None

    @property
    def check_ids(self) -> list[str]:
        return ([self.check] if self.check else []) + [c for c in self.checks if c != self.check]


C = TypeVar("C", bound=ObjectiveConfig)


class Evaluator(Generic[C]):
    """Base class of objective kinds. Subclass, set ``kind`` and ``Config``, implement ``evaluate``.

    ``requires`` names the comparison keys the kind needs (``"target"`` or ``"limit"``, with
    ``op``); the loader reports a missing one as a one-line profile error.
    """

    kind: ClassVar[str]
    Config: ClassVar[type[ObjectiveConfig]] = ObjectiveConfig
    requires: ClassVar[tuple[str, ...]] = ("op", "target")
    unit: ClassVar[str] = "ratio"
    """Unit of the measured value: ``ratio``, ``s``, ``count`` …"""

    def validate(self, config: C) -> tuple[str, str] | None:
        """Extra checks of *config*: ``(key, problem)`` for the first problem, or ``None``."""
        return None

    def evaluate(self, config: C, ctx: EvaluationContext) -> Verdict:
        """Judge *config* over ``ctx.period`` and return the verdict."""
        raise NotImplementedError


@dataclass
class Verdict:
    """What an evaluator found. ``met`` is decided by :func:`compare` unless the kind sets it."""

    measured: float | None
    met: bool | None = None
    target: float | None = None
    """The threshold in the measured unit (``limit`` in seconds for durations)."""
    timeline: Timeline | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)
    misses: list[int] = field(default_factory=list)
    """Epoch ms of each missed occasion (a missed notice …), for ``fee_days``."""
    interrupted_ms: int | None = None
    """The interrupted time a pro-rata remedy is owed for; default: the timeline's down time."""
    denominator_ms: int | None = None
    """What a ratio was divided by (ms), for the report."""
    excluded_samples: int | None = None
    """Samples (or occasions) the objective's exclusions left out, for sample-based kinds."""
    budget_used: float | None = None
    budget_left: float | None = None
    note: str | None = None


# ---- the report (JSON: probe schema report) ------------------------------------------------------

class OutageReport(msgspec.Struct, kw_only=True):
    incident: str
    check: str
    vantage: str
    start: Timestamp
    end: Timestamp
    duration_s: float
    down_s: float
    excluded_s: float
    excluded: str | None
    """The exclusion reason when any of it was excluded (``customer``, ``maintenance``,
    ``not_reported`` …), else ``null``."""
    attribution: str
    code: str
    resolved: bool
    confirmed_at: Timestamp
    report_by: Timestamp | None = None
    """002: the customer must report it by then or it is excluded."""
    reported_at: Timestamp | None = None
    notice_delay_s: float | None = None


class RemedyOwed(msgspec.Struct, kw_only=True):
    kind: str
    amount: float | None = None
    currency: str | None = None
    minutes: float | None = None
    detail: str = ""
    of: str | None = None
    """``interrupted`` or ``period`` (``fee_multiple``, ``service_time``)."""
    interrupted_s: float | None = None
    """The interrupted time a pro-rata remedy was computed from."""


class ObjectiveReport(msgspec.Struct, kw_only=True):
    id: str
    clause: str | None
    kind: str
    check: str | None
    checks: list[str]
    measured: float | None
    unit: str
    op: str | None
    target: float | None
    met: bool | None
    downtime_s: float
    excluded_s: float
    unknown_s: float
    coverage: float | None
    """Share of the period with evidence; ``null`` for kinds judged on samples or counts
    rather than time (latency, heartbeat …)."""
    budget_used: float | None
    budget_left: float | None
    excluded_by_reason: dict[str, float]
    outages: list[OutageReport]
    evidence: list[dict[str, Any]]
    remedy: RemedyOwed | None
    note: str | None = None
    denominator: Literal["period", "evidence"] | None = None
    """What the ratio divides by (ratio kinds): the whole period or the time with evidence."""
    denominator_s: float | None = None
    """The divisor in seconds (``coverage`` beside it says how much of it had evidence)."""
    excluded_samples: int | None = None
    """Sample-based kinds: samples the objective's exclusions left out."""


class PeriodReport(msgspec.Struct, kw_only=True):
    kind: Literal["month", "year"]
    label: str
    start: Timestamp
    end: Timestamp
    evaluated_until: Timestamp
    to_date: bool
    """``true`` while the period is still running: judged up to ``evaluated_until``."""


class ExclusionReport(msgspec.Struct, kw_only=True):
    id: int | None
    source: Literal["annotation", "maintenance"]
    check: str | None
    start: Timestamp
    end: Timestamp
    reason: str
    note: str
    author: str | None = None
    withdrawn: bool = False
    applies_to: list[str] = []
    """Ids of the objectives it excludes time from (or, maintenance, counts towards); empty: it
    applies to nothing (no objective lists its reason, or it is withdrawn)."""


class OwedItem(msgspec.Struct, kw_only=True):
    objective: str
    clause: str | None
    kind: str
    amount: float | None = None
    currency: str | None = None
    minutes: float | None = None
    counted: bool
    """Whether it is in the total; one remedy owed twice is counted once."""
    why: str | None = None
    """Why not counted (the same clause, the month already waived …)."""


class OwedTotal(msgspec.Struct, kw_only=True):
    """What the whole report owes: each obligation once (docs/objectives.md, "The total owed")."""

    amounts: dict[str, float] = {}
    """Currency → money owed (fees waived or refunded, deductions)."""
    minutes: float = 0.0
    """Minutes of service time credited."""
    items: list[OwedItem] = []


class Report(msgspec.Struct, kw_only=True):
    schema: Literal["probecore.report/1"] = REPORT_SCHEMA_ID
    profile: str
    contract: str | None
    timezone: str
    generated_at: Timestamp
    period: PeriodReport
    met: bool | None
    """``true`` when every objective is met, ``false`` when any is missed, ``null`` when none is
    missed but some are unknown."""
    objectives: list[ObjectiveReport]
    exclusions: list[ExclusionReport]
    not_judged: list[str]
    """Objectives of the other period kind (yearly ones in a monthly report and vice versa)."""
    owed: OwedTotal = msgspec.field(default_factory=OwedTotal)
    """The total owed for the period, each obligation counted once."""


def report_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``probecore.report/1``."""
    return msgspec.json.schema(Report)


# ---- periods ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Period:
    kind: Literal["month", "year"]
    label: str
    start: datetime
    end: datetime

    @property
    def start_ms(self) -> int:
        return round(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return round(self.end.timestamp() * 1000)

    @classmethod
    def month(cls, year: int, month: int, zone: Any) -> Period:
        start = datetime(year, month, 1, tzinfo=zone)
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=zone)
        return cls("month", f"{year:04d}-{month:02d}", start, end)

    @classmethod
    def year(cls, year: int, zone: Any) -> Period:
        return cls("year", f"{year:04d}", datetime(year, 1, 1, tzinfo=zone), datetime(year + 1, 1, 1, tzinfo=zone))

    def days(self) -> Iterator[tuple[int, int]]:
        """``(start ms, end ms)`` of each calendar day of the period in its time zone."""
        day = self.start
        while day < self.end:
            following = datetime.combine(day.date() + timedelta(days=1), day.time(), tzinfo=day.tzinfo)
            yield round(day.timestamp() * 1000), round(following.timestamp() * 1000)
            day = following


# ---- the context evaluators read from ------------------------------------------------------------

class EvaluationContext:
    """What an evaluator may read: the profile, the period, the store's evidence, exclusions.

    Timelines are cached by (checks, exclusion settings), so an availability and a downtime
    objective of the same check cut the month once.
    """

    def __init__(self, profile: Any, store: Any, period: Period, now: datetime):
        self.profile = profile
        self.store = store
        self.period = period
        self.now_ms = round(now.timestamp() * 1000)
        self.until_ms = min(period.end_ms, self.now_ms)
        self.to_date = self.until_ms < period.end_ms
        self._timelines: dict[Any, Timeline] = {}
        self._exclusions: dict[tuple[str, ...], Exclusions] = {}
        self._streams: dict[tuple[str, float], list[Stream]] = {}
        self._annotations = list(store.annotations(profile.name))
        self._maintenance = expand_maintenance(profile, period.start_ms, period.end_ms)

    # -- evidence --
    def full_id(self, check_id: str) -> str:
        return f"{self.profile.name}/{check_id}"

    def streams(self, check_id: str, staleness: float) -> list[Stream]:
        key = (check_id, staleness)
        if key not in self._streams:
            check = self.profile.check(check_id)
            hold = round(float(check.interval) * staleness * 1000)
            # Look back so that an outage (or evidence) running into the period is seen.
            since = self.period.start_ms - max(hold, 2 * 86_400_000)
            full = self.full_id(check_id)
            if check.vantages:  # the vantage quorum: the rounds the live judge sees (probecore._quorum)
                from ._quorum import merge_vantages
                rounds = merge_vantages(check, self.store.records(
                    check=full, since=format_timestamp_ms(since), until=format_timestamp_ms(self.until_ms)))
                self._streams[key] = Stream.from_records(rounds, confirm=check.confirm, hold=hold)
                return self._streams[key]
            runs = self.store.evidence(full, since, self.until_ms, hold)
            not_ok = list(self.store.records(check=full, since=format_timestamp_ms(since),
                                             until=format_timestamp_ms(self.until_ms), not_ok=True))
            by_vantage: dict[str, list[SLIRecord]] = {}
            for record in not_ok:
                by_vantage.setdefault(record.vantage, []).append(record)
            streams = []
            for vantage in sorted(set(runs) | set(by_vantage)):
                mine = by_vantage.get(vantage, [])
                following = self.store.following(full, vantage, [timestamp_ms(r.started_at) for r in mine])
                streams.append(Stream(full, vantage, runs.get(vantage, []), mine, following, check.confirm, hold))
            self._streams[key] = streams
        return self._streams[key]

    def timeline(self, config: ObjectiveConfig) -> Timeline:
        """The objective's checks over the period (to date), exclusions applied."""
        key = (tuple(config.check_ids), tuple(sorted(config.exclude)), config.report_within,
               config.outage_start, config.staleness)
        if key not in self._timelines:
            streams = [s for c in config.check_ids for s in self.streams(c, config.staleness)]
            counted = frozenset(ATTRIBUTIONS) - frozenset(config.exclude)
            self._timelines[key] = build_timeline(
                streams, start=self.period.start_ms, end=self.until_ms, counted=counted or PROVIDER_ONLY,
                exclusions=self.exclusion_windows(config), outage_start=config.outage_start,
                unreported=self._unreported(config.report_within) if config.report_within else None)
        return self._timelines[key]

    def values(self, check_id: str, metric: str) -> list[tuple[int, float]]:
        """``(start ms, value)`` of the ``ok`` records of *check_id* in the period."""
        return self.store.values(self.full_id(check_id), self.period.start_ms, self.until_ms, metric)

    def records(self, check_id: str) -> Iterator[SLIRecord]:
        return self.store.records(check=self.full_id(check_id), since=format_timestamp_ms(self.period.start_ms),
                                  until=format_timestamp_ms(self.until_ms))

    def annotations(self, kind: str) -> list[Annotation]:
        """Active (not withdrawn) annotations of *kind*."""
        return [a for a in self._annotations if a.kind == kind and a.active]

    @property
    def maintenance(self) -> list[MaintenanceWindow]:
        return self._maintenance

    # -- exclusions --
    def exclusions(self, config: ObjectiveConfig) -> Exclusions:
        """The objective's exclusion windows: what the timeline applies to down time and the
        sample-based kinds to their samples (the one place that decides what is excluded)."""
        key = tuple(sorted(config.exclude))
        if key not in self._exclusions:
            self._exclusions[key] = Exclusions(self.exclusion_windows(config))
        return self._exclusions[key]

    def excluded_at(self, config: ObjectiveConfig, check: str, at_ms: int) -> str | None:
        """Why a sample of *check* (full id) at *at_ms* is excluded for *config*, or ``None``."""
        window = self.exclusions(config).at(at_ms, check)
        return window.reason if window else None

    def excluded_span(self, config: ObjectiveConfig, check: str | None, start: int, end: int) -> str | None:
        """Why ``[start, end)`` of *check* (full id; ``None``: any) is excluded, in part or whole."""
        window = self.exclusions(config).overlapping(start, end, check)
        return window.reason if window else None

    def excluded_record(self, config: ObjectiveConfig, record: SLIRecord) -> str | None:
        """Why *record* is left out of a sample-based objective: a window covering its start, or
        a failure of an attribution class the objective excludes (as the timeline does)."""
        reason = self.excluded_at(config, record.check, timestamp_ms(record.started_at))
        if reason is None and record.outcome == "fail" and record.failure is not None \
                and record.failure.attribution in config.exclude:
            reason = record.failure.attribution
        return reason

    def exclusion_windows(self, config: ObjectiveConfig) -> list[Window]:
        reasons = set(config.exclude)
        windows = []
        for a in self.annotations("exclusion"):
            if a.reason in reasons and a.end is not None:
                windows.append(Window(timestamp_ms(a.start), timestamp_ms(a.end), a.reason or "",
                                      a.check, a.note))
        if "maintenance" in reasons:
            for m in self._maintenance:
                if m.agreed or m.announced:
                    for check in (m.checks or [None]):
                        windows.append(Window(m.start, m.end, "maintenance",
                                              self.full_id(check) if check else None, m.note))
        return windows

    def _unreported(self, within: float) -> Callable[[Outage], Window | None]:
        reports = self.report_times()

        def rule(outage: Outage) -> Window | None:
            deadline = outage.unclipped_start + round(within * 1000)
            reported = reports.get(outage.incident_id)
            if reported is not None and reported <= deadline:
                return None
            if deadline > self.now_ms:  # the customer may still report it
                return None
            return Window(outage.start, outage.end, "not_reported", outage.check)
        return rule

    def report_times(self) -> dict[str, int]:
        """Incident id → when the customer first reported it (epoch ms)."""
        times: dict[str, int] = {}
        for a in self.annotations("incident_report"):
            if a.incident:
                at = timestamp_ms(a.start)
                times[a.incident] = min(at, times.get(a.incident, at))
        return times


@dataclass(frozen=True)
class MaintenanceWindow:
    start: int
    end: int
    checks: tuple[str, ...]
    agreed: bool
    announced: bool
    note: str


def expand_maintenance(profile: Any, lo: int, hi: int) -> list[MaintenanceWindow]:
    """The profile's ``[[maintenance]]`` windows (recurring ones repeated) that overlap [lo, hi)."""
    found = []
    for table in profile.maintenance:
        start: datetime = table["start"].astimezone(profile.timezone)
        end: datetime = table["end"].astimezone(profile.timezone)
        every = table.get("every")
        until = table.get("until")
        checks = tuple(table.get("checks", []) or ([table["check"]] if table.get("check") else []))
        occurrence = 0
        while True:
            a, b = _shift(start, every, occurrence), _shift(end, every, occurrence)
            a_ms, b_ms = round(a.timestamp() * 1000), round(b.timestamp() * 1000)
            if a_ms >= hi or (until is not None and a > until) or (every is None and occurrence > 0):
                break
            if b_ms > lo:
                found.append(MaintenanceWindow(a_ms, b_ms, checks, bool(table.get("agreed", False)),
                                               bool(table.get("announced", False)), str(table.get("note", ""))))
            occurrence += 1
    return found


def _shift(moment: datetime, every: str | None, n: int) -> datetime:
    """*moment* moved *n* weeks or months on (wall-clock time kept in its zone)."""
    if not every or not n:
        return moment
    if every == "week":
        naive = moment.replace(tzinfo=None) + timedelta(weeks=n)
        return naive.replace(tzinfo=moment.tzinfo)
    month0 = moment.month - 1 + n
    year, month = moment.year + month0 // 12, month0 % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


# ---- judging -------------------------------------------------------------------------------------

def compare(measured: float | Fraction, op: str, target: float | Fraction) -> bool:
    """``measured op target`` exactly (thresholds compared as written, 0.999 is 999/1000)."""
    a = measured if isinstance(measured, Fraction) else Fraction(str(measured)) if isinstance(measured, float) else Fraction(measured)
    b = target if isinstance(target, Fraction) else Fraction(str(target)) if isinstance(target, float) else Fraction(target)
    return {"<": a < b, "<=": a <= b, ">=": a >= b, ">": a > b}[op]


def denominator_ms(config: ObjectiveConfig, period: Period) -> int:
    """The length of *period* as the objective counts it (``month_length``)."""
    if config.month_length == "30d":
        return 30 * 86_400_000
    return period.end_ms - period.start_ms


def evaluate_profile(profile: Any, store: Any, evaluators: Any, period: Period, *,
                     now: datetime | None = None, only: Sequence[str] | None = None) -> Report:
    """Judge every objective of *profile* whose ``period`` is *period*'s kind."""
    now = now or datetime.now(timezone.utc)
    ctx = EvaluationContext(profile, store, period, now)
    objectives, not_judged = [], []
    for config in profile.objective_configs:
        if only and config.id not in only:
            continue
        if config.period != period.kind:
            not_judged.append(config.id)
            continue
        evaluator = evaluators.get(config.kind)()
        verdict = evaluator.evaluate(config, ctx)
        objectives.append(_objective_report(config, evaluator, verdict, ctx))
    verdicts = [o.met for o in objectives]
    met = False if False in verdicts else (None if None in verdicts else True)
    return Report(owed=total_owed(objectives), profile=profile.name, contract=profile.contract,
                  timezone=str(profile.timezone),
                  generated_at=format_timestamp(now), period=PeriodReport(
                      kind=period.kind, label=period.label, start=format_timestamp(period.start),
                      end=format_timestamp(period.end), evaluated_until=format_timestamp_ms(ctx.until_ms),
                      to_date=ctx.to_date),
                  met=met, objectives=objectives, exclusions=_exclusions(ctx), not_judged=not_judged)


def _objective_report(config: ObjectiveConfig, evaluator: Evaluator[Any], verdict: Verdict,
                      ctx: EvaluationContext) -> ObjectiveReport:
    timeline = verdict.timeline
    met = verdict.met
    coverage = timeline.coverage if timeline else None
    note = verdict.note
    if coverage is not None and coverage == 0:
        # No evidence at all: nothing was down, but nothing was shown up either.
        met = None
        note = "no evidence in the period"
    elif coverage is not None and coverage < config.min_coverage:
        met = None
        note = (f"coverage {coverage:.1%} is below min_coverage {config.min_coverage:.1%}: "
                "not enough evidence to judge")
    outages = []
    if timeline is not None:
        reports = ctx.report_times()
        for o in timeline.outages:
            report_by = (format_timestamp_ms(o.unclipped_start + round(config.report_within * 1000))
                         if config.report_within and o.counted else None)
            delay = next((e.get("notice_delay_s") for e in verdict.evidence
                          if e.get("incident") == o.incident_id), None)
            outages.append(OutageReport(
                incident=o.incident_id, check=o.check, vantage=o.vantage, start=format_timestamp_ms(o.start),
                end=format_timestamp_ms(o.end), duration_s=(o.end - o.start) / 1000, down_s=o.down_ms / 1000,
                excluded_s=o.excluded_ms / 1000, excluded=", ".join(o.reasons) or None,
                attribution=o.attribution, code=o.code, resolved=o.resolved,
                confirmed_at=format_timestamp_ms(o.confirmed_at), report_by=report_by,
                reported_at=format_timestamp_ms(reports[o.incident_id]) if o.incident_id in reports else None,
                notice_delay_s=delay))
    remedy = None if met is not False else owed_remedy(config, verdict, ctx)
    return ObjectiveReport(
        id=config.id, clause=config.clause, kind=config.kind, check=config.check,
        checks=config.check_ids, measured=verdict.measured, unit=evaluator.unit, op=config.op,
        target=verdict.target, met=met,
        downtime_s=timeline.total(DOWN) / 1000 if timeline else 0.0,
        excluded_s=timeline.total(EXCLUDED) / 1000 if timeline else 0.0,
        unknown_s=timeline.total(UNKNOWN) / 1000 if timeline else 0.0,
        coverage=None if coverage is None else round(coverage, 6), budget_used=verdict.budget_used, budget_left=verdict.budget_left,
        excluded_by_reason={k: v / 1000 for k, v in timeline.excluded_by_reason().items()} if timeline else {},
        outages=outages, evidence=verdict.evidence, remedy=remedy, note=note,
        denominator=config.denominator if verdict.denominator_ms is not None else None,
        denominator_s=None if verdict.denominator_ms is None else verdict.denominator_ms / 1000,
        excluded_samples=verdict.excluded_samples)


def owed_remedy(config: ObjectiveConfig, verdict: Verdict, ctx: EvaluationContext) -> RemedyOwed | None:
    """The remedy a missed objective owes (docs/objectives.md, "Remedies")."""
    spec = config.remedy
    if spec is None:
        return None
    fee = ctx.profile.fee
    monthly = fee.monthly if fee else None
    currency = fee.currency if fee else None
    months = 12 if ctx.period.kind == "year" else 1
    period_ms = ctx.period.end_ms - ctx.period.start_ms
    interrupted = verdict.interrupted_ms
    if interrupted is None and verdict.timeline is not None:
        interrupted = verdict.timeline.total(DOWN)
    if spec.kind in ("fee_multiple", "service_time"):
        factor = spec.factor
        if spec.basis == "period":
            share: Fraction | None = Fraction(1)
            what = f"{ctx.period.label}"
        elif interrupted is None:
            share, what = None, ""
        else:
            share = Fraction(interrupted, period_ms)
            what = f"the interrupted time ({human_ms(interrupted)} of {ctx.period.label})"
        common = {"kind": spec.kind, "of": spec.basis,
                  "interrupted_s": None if interrupted is None else interrupted / 1000}
        if share is None:
            return RemedyOwed(**common, currency=currency if spec.kind == "fee_multiple" else None,
                              detail=f"a {config.kind} objective has no interrupted time to pro-rate: "
                              'owed is to be agreed (or set of = "period")')
        if spec.kind == "fee_multiple":
            amount = None if monthly is None else float(round(
                Fraction(str(factor)) * Fraction(str(monthly)) * months * share, 2))
            return RemedyOwed(**common, amount=amount, currency=currency,
                              detail=f"{factor:g} × the fee for {what}")
        minutes = float(round(Fraction(str(factor)) * period_ms * share / 60_000, 3))
        return RemedyOwed(**common, minutes=minutes,
                          detail=f"{factor:g} × the service time of {what}")
    if spec.kind == "waive_month":
        return RemedyOwed(kind=spec.kind, amount=None if monthly is None else monthly * months, currency=currency,
                          detail=f"the fee for {ctx.period.label} is waived")
    # fee_days: one deduction per calendar day with a miss, however many misses that day had.
    zone = ctx.profile.timezone
    days = sorted({datetime.fromtimestamp(ms / 1000, tz=zone).date() for ms in verdict.misses})
    month_days = calendar.monthrange(ctx.period.start.year, ctx.period.start.month)[1]
    amount = None if monthly is None else len(days) * spec.fee_days * monthly / month_days
    return RemedyOwed(kind=spec.kind, amount=None if amount is None else round(amount, 2), currency=currency,
                      detail=f"{len(days)} day(s) with a missed notice: "
                      + ", ".join(d.isoformat() for d in days))


def human_ms(ms: int) -> str:
    """``2_637_400`` → ``"43m57.4s"``: a duration for people, exact to the millisecond."""
    seconds = ms / 1000
    whole, frac = divmod(ms, 1000)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    tail = f"{secs}.{frac:03d}".rstrip("0").rstrip(".") if frac else str(secs)
    if secs or frac or not text:
        text += f"{tail}s"
    return text if seconds else "0s"


PERIOD_WIDE = {("waive_month", None): "the fee for the period is waived once",
               ("fee_multiple", "period"): "a multiple of the period's fee is owed once",
               ("service_time", "period"): "a multiple of the period's service time is credited once"}


def total_owed(objectives: Sequence[ObjectiveReport]) -> OwedTotal:
    """Each obligation once: a remedy of the whole period (a waived month, a multiple of the
    period's fee or service time) is owed once however many objectives miss, and objectives of
    one clause (002-N's ratio and its minutes) owe their clause's remedy once — the largest."""
    items: list[OwedItem] = []
    best: dict[tuple[str, ...], OwedItem] = {}
    for o in objectives:
        r = o.remedy
        if r is None:
            continue
        item = OwedItem(objective=o.id, clause=o.clause, kind=r.kind, amount=r.amount, currency=r.currency,
                        minutes=r.minutes, counted=True)
        items.append(item)
        wide = (r.kind, r.of if r.kind != "waive_month" else None)
        key = ("period",) + tuple(str(k) for k in wide) if wide in PERIOD_WIDE else \
            ("clause", o.clause or o.id, r.kind, str(r.of))
        held = best.get(key)
        if held is None:
            best[key] = item
            continue
        size = (item.amount or 0) + (item.minutes or 0)
        if size > (held.amount or 0) + (held.minutes or 0):
            best[key], held, item = item, item, held
        item.counted = False
        item.why = (f"{PERIOD_WIDE[wide]}, counted under {held.objective}" if key[0] == "period"
                    else f"same clause as {held.objective}, counted once (the larger)")
    amounts: dict[str, Fraction] = {}
    minutes = Fraction(0)
    for item in items:
        if not item.counted:
            continue
        if item.amount is not None:
            currency = item.currency or ""
            amounts[currency] = amounts.get(currency, Fraction(0)) + Fraction(str(item.amount))
        if item.minutes is not None:
            minutes += Fraction(str(item.minutes))
    return OwedTotal(amounts={k: float(round(v, 2)) for k, v in amounts.items()},
                     minutes=float(round(minutes, 3)), items=items)


def exclusion_applies_to(profile: Any, reason: str, check: str | None,
                         start: int | None = None, end: int | None = None) -> list[str]:
    """Ids of *profile*'s objectives an exclusion of *reason* for *check* (full id, ``None``:
    every check) affects: those whose ``exclude`` lists the reason, and for ``maintenance`` the
    ``maintenance_minutes`` objectives that count it."""
    found = []
    for config in profile.objective_configs:
        mine = {f"{profile.name}/{c}" for c in config.check_ids}
        if check is not None and check not in mine:
            continue
        if reason in config.exclude or (reason == "maintenance" and config.kind == "maintenance_minutes"):
            found.append(config.id)
    return found


def _exclusions(ctx: EvaluationContext) -> list[ExclusionReport]:
    profile = ctx.profile
    found = [ExclusionReport(id=a.id, source="annotation", check=a.check, start=a.start, end=a.end or a.start,
                             reason=a.reason or "", note=a.note, author=a.author,
                             withdrawn=not a.active,
                             applies_to=exclusion_applies_to(profile, a.reason or "", a.check) if a.active else [])
             for a in ctx._annotations if a.kind == "exclusion"
             and a.end is not None and timestamp_ms(a.end) > ctx.period.start_ms
             and timestamp_ms(a.start) < ctx.period.end_ms]
    for m in ctx.maintenance:
        flags = [f for f, on in (("agreed", m.agreed), ("announced", m.announced)) if on]
        checks = [ctx.full_id(c) for c in m.checks] or [None]
        applies = sorted({o for c in checks for o in exclusion_applies_to(profile, "maintenance", c)
                          if flags or profile_objective(profile, o).kind == "maintenance_minutes"})
        found.append(ExclusionReport(id=None, source="maintenance", check=", ".join(m.checks) or None,
                                     start=format_timestamp_ms(m.start), end=format_timestamp_ms(m.end),
                                     reason="maintenance" + (f" ({', '.join(flags)})" if flags else
                                                             " (neither agreed nor announced: not excluded)"),
                                     note=m.note, applies_to=applies))
    return found


def profile_objective(profile: Any, ident: str) -> ObjectiveConfig:
    return next(c for c in profile.objective_configs if c.id == ident)


def ratio_verdict(config: ObjectiveConfig, timeline: Timeline, ctx: EvaluationContext) -> Verdict:
    """Availability: ``1 − down / denominator``, compared exactly; budget in seconds.

    The denominator is the period to date (``denominator = "period"``: 002's "99.9 %, i.e. less
    than 44 minutes a month", 003's 1 − Σfault/(30×24×60)) or the time with evidence
    (``"evidence"``), each scaled to ``month_length``; unknown time is reported as coverage."""
    elapsed = ctx.until_ms - ctx.period.start_ms
    unknown = timeline.total(UNKNOWN)
    known = elapsed - unknown
    down = timeline.total(DOWN)
    period_ms = ctx.period.end_ms - ctx.period.start_ms
    scale = Fraction(denominator_ms(config, ctx.period), period_ms)
    assert config.op is not None and config.target is not None
    target = Fraction(str(config.target))
    if known <= 0:
        return Verdict(measured=None, met=None, target=config.target, timeline=timeline,
                       note="no evidence in the period")
    divisor = (known if config.denominator == "evidence" else elapsed) * scale
    ratio = 1 - Fraction(down) / divisor
    allowed = (1 - target) * denominator_ms(config, ctx.period)
    note = None
    if unknown and config.denominator == "period":
        note = (f"{format_duration(unknown / 1000)} without evidence is in the denominator "
                "(denominator = period): see coverage")
    elif unknown:
        note = f"{format_duration(unknown / 1000)} without evidence is left out (denominator = evidence)"
    return Verdict(measured=float(ratio), met=compare(ratio, config.op, target), target=config.target,
                   timeline=timeline, budget_used=_used(down, allowed),
                   budget_left=round(float(allowed - down) / 1000, 3), denominator_ms=round(divisor),
                   note=note)


def duration_verdict(config: ObjectiveConfig, measured_ms: int, timeline: Timeline | None) -> Verdict:
    assert config.op is not None and config.limit is not None
    limit_ms = round(config.limit * 1000)
    return Verdict(measured=measured_ms / 1000, met=compare(Fraction(measured_ms), config.op, Fraction(limit_ms)),
                   target=limit_ms / 1000, timeline=timeline, budget_used=_used(measured_ms, limit_ms),
                   budget_left=(limit_ms - measured_ms) / 1000)


def _used(used: float | Fraction, allowed: float | Fraction) -> float | None:
    if allowed <= 0:
        return None
    return round(float(Fraction(used) / Fraction(allowed)), 6)




__all__ = ["DOWN", "EXCLUDED", "UNKNOWN", "UP"]
