"""The built-in objective kinds (docs/objectives.md): availability, downtime, latency,
latency_stats, maintenance_minutes, fault_free_days, success_ratio, heartbeat, notify_delay.

Each is an :class:`probecore.Evaluator`; the semantics they share (the timeline, exclusions,
exact comparison, remedies) live in the core, so a kind only says what it measures. Exclusions
come from one place for every kind: time-based kinds read them off the timeline, sample-based
kinds ask :meth:`EvaluationContext.excluded_at` (or ``excluded_record`` / ``excluded_span``)
about each sample, record or window, which consult the same windows.
"""

from __future__ import annotations

import bisect
import math
from fractions import Fraction
from typing import Literal

import msgspec

from probecore import (
    DOWN,
    UNKNOWN,
    Duration,
    EvaluationContext,
    Evaluator,
    ObjectiveConfig,
    Verdict,
    compare,
    duration_verdict,
    format_duration,
    format_timestamp_ms,
    hookimpl,
    ratio_verdict,
    timestamp_ms,
)

MAX_EVIDENCE = 50
"""Samples listed as evidence at most (the count of all of them is in the note)."""


class Availability(Evaluator[ObjectiveConfig]):
    """Time-weighted up ratio of the period: ``1 − down / (denominator × coverage)``."""

    kind = "availability"

    def validate(self, config: ObjectiveConfig) -> tuple[str, str] | None:
        if config.target is not None and not 0 <= config.target <= 1:
            return "target", f"expected a ratio from 0 to 1 (99.9 % is 0.999), got {config.target:g}"
        return None

    def evaluate(self, config: ObjectiveConfig, ctx: EvaluationContext) -> Verdict:
        return ratio_verdict(config, ctx.timeline(config), ctx)


class Downtime(Evaluator[ObjectiveConfig]):
    """Down time of the period after exclusions, compared with ``limit`` (002: ``< 44m``)."""

    kind = "downtime"
    requires = ("op", "limit")
    unit = "s"

    def evaluate(self, config: ObjectiveConfig, ctx: EvaluationContext) -> Verdict:
        timeline = ctx.timeline(config)
        return duration_verdict(config, timeline.total(DOWN), timeline)


class LatencyConfig(ObjectiveConfig, kw_only=True, forbid_unknown_fields=True, frozen=True):
    metric: str = "value"
    """Record field holding the sample: ``"value"``, ``"duration_s"`` or ``"phases.<name>"``."""


Sample = tuple[str, int, float]
"""(check id, start ms, value)."""


def _samples(config: LatencyConfig, ctx: EvaluationContext) -> tuple[list[Sample], list[tuple[Sample, str]]]:
    """The period's samples the objective judges, and those its exclusions leave out (with the
    reason), each in start order."""
    kept: list[Sample] = []
    excluded: list[tuple[Sample, str]] = []
    for check in config.check_ids:
        full = ctx.full_id(check)
        for at, value in ctx.values(check, config.metric):
            reason = ctx.excluded_at(config, full, at)
            if reason is None:
                kept.append((check, at, value))
            else:
                excluded.append(((check, at, value), reason))
    kept.sort(key=lambda s: s[1])
    excluded.sort(key=lambda s: s[0][1])
    return kept, excluded


def _excluded_note(excluded: list[tuple[Sample, str]]) -> str:
    if not excluded:
        return ""
    reasons = sorted({reason for _, reason in excluded})
    return f"; {len(excluded)} excluded ({', '.join(reasons)})"


def _held_ms(config: LatencyConfig, ctx: EvaluationContext, misses: list[Sample],
             every: list[Sample]) -> int:
    """The time the missing samples stand for: each holds until the next sample of its check,
    at most ``staleness × interval`` (as a record's outcome does on the timeline)."""
    starts: dict[str, list[int]] = {}
    for check, at, _ in every:
        starts.setdefault(check, []).append(at)
    for values in starts.values():
        values.sort()
    total = 0
    for check, at, _ in misses:
        hold = round(float(ctx.profile.check(check).interval) * config.staleness * 1000)
        mine = starts[check]
        i = bisect.bisect_right(mine, at)
        following = mine[i] if i < len(mine) else None
        total += hold if following is None else min(hold, following - at)
    return total


def _validate_metric(config: LatencyConfig) -> tuple[str, str] | None:
    if config.metric not in ("value", "duration_s") and not (
            config.metric.startswith("phases.") and len(config.metric) > 7):
        return "metric", f'expected "value", "duration_s" or "phases.<name>", got "{config.metric}"'
    return None


class Latency(Evaluator[LatencyConfig]):
    """Every sample against ``op limit`` (001 §2.4: each response within 1.5 s)."""

    kind = "latency"
    Config = LatencyConfig
    requires = ("op", "limit")
    unit = "s"

    def validate(self, config: LatencyConfig) -> tuple[str, str] | None:
        return _validate_metric(config)

    def evaluate(self, config: LatencyConfig, ctx: EvaluationContext) -> Verdict:
        assert config.op is not None and config.limit is not None
        samples, excluded = _samples(config, ctx)
        if not samples:
            return Verdict(measured=None, met=None, target=float(config.limit), excluded_samples=len(excluded),
                           note="no samples in the period" + _excluded_note(excluded))
        limit = float(config.limit)
        misses = [s for s in samples if not compare(s[2], config.op, limit)]
        worst = max(s[2] for s in samples) if config.op in ("<", "<=") else min(s[2] for s in samples)
        evidence = [_sample(s) for s in misses[:MAX_EVIDENCE]]
        # Excluded samples that would have missed are listed too, with their reason.
        evidence += [{**_sample(s), "excluded": reason} for s, reason in excluded
                     if not compare(s[2], config.op, limit)][:MAX_EVIDENCE]
        return Verdict(measured=worst, met=not misses, target=limit, evidence=evidence,
                       budget_used=len(misses) / len(samples), excluded_samples=len(excluded),
                       interrupted_ms=_held_ms(config, ctx, misses, samples + [s for s, _ in excluded]),
                       note=f"{len(samples)} samples, {len(misses)} not {config.op} {format_duration(limit)}"
                       + _excluded_note(excluded))


class Exceed(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    limit: Duration
    times: int = 2
    """Breached when this many samples or more are over ``limit`` (004: "two or more times")."""


class LatencyStatsConfig(LatencyConfig, kw_only=True, forbid_unknown_fields=True, frozen=True):
    stat: str = "mean"
    """``mean``, ``max``, ``min`` or a percentile ``p50`` … ``p99.9`` (nearest rank)."""
    exceed: Exceed | None = None


class LatencyStats(Evaluator[LatencyStatsConfig]):
    """A statistic of the period's samples (003/004: monthly mean delay <= 60 s), optionally
    breached as well when samples over ``exceed.limit`` occur ``exceed.times`` times or more."""

    kind = "latency_stats"
    Config = LatencyStatsConfig
    requires = ("op", "limit")
    unit = "s"

    def validate(self, config: LatencyStatsConfig) -> tuple[str, str] | None:
        if _percentile_of(config.stat) is None and config.stat not in ("mean", "max", "min"):
            return "stat", f'expected mean, max, min or a percentile like p99, got "{config.stat}"'
        if config.exceed is not None and config.exceed.times < 1:
            return "exceed", f"times must be at least 1, got {config.exceed.times}"
        return _validate_metric(config)

    def evaluate(self, config: LatencyStatsConfig, ctx: EvaluationContext) -> Verdict:
        assert config.op is not None and config.limit is not None
        samples, excluded = _samples(config, ctx)
        if not samples:
            return Verdict(measured=None, met=None, target=float(config.limit), excluded_samples=len(excluded),
                           note="no samples in the period" + _excluded_note(excluded))
        values = sorted(s[2] for s in samples)
        if config.stat == "mean":
            measured = float(sum(Fraction(v) for v in values) / len(values))
        elif config.stat == "max":
            measured = values[-1]
        elif config.stat == "min":
            measured = values[0]
        else:
            rank = math.ceil(_percentile_of(config.stat) / 100 * len(values))  # type: ignore[operator]
            measured = values[max(0, rank - 1)]
        met = compare(measured, config.op, float(config.limit))
        note = f"{config.stat} of {len(values)} samples"
        evidence = []
        if config.exceed is not None:
            over = [s for s in samples if s[2] > float(config.exceed.limit)]
            evidence = [_sample(s) for s in over[:MAX_EVIDENCE]]
            note += (f"; {len(over)} over {format_duration(config.exceed.limit)} "
                     f"(breached at {config.exceed.times})")
            if len(over) >= config.exceed.times:
                met = False
        return Verdict(measured=measured, met=met, target=float(config.limit), evidence=evidence,
                       excluded_samples=len(excluded), note=note + _excluded_note(excluded))


def _percentile_of(stat: str) -> float | None:
    if not stat.startswith("p"):
        return None
    try:
        value = float(stat[1:])
    except ValueError:
        return None
    return value if 0 < value <= 100 else None


def _sample(sample: tuple[str, int, float]) -> dict[str, object]:
    return {"check": sample[0], "at": format_timestamp_ms(sample[1]), "value": sample[2]}


class MaintenanceMinutes(Evaluator[ObjectiveConfig]):
    """Maintenance time within the period (004 三: adjustment time <= 100 min a month):
    ``[[maintenance]]`` windows and ``maintenance`` exclusions, overlaps counted once.

    It measures maintenance itself, so exclusions do not apply to it: a maintenance window
    is what it counts, and force majeure or customer time is no maintenance."""

    kind = "maintenance_minutes"
    requires = ("op", "limit")
    unit = "s"

    def evaluate(self, config: ObjectiveConfig, ctx: EvaluationContext) -> Verdict:
        mine = {ctx.full_id(c) for c in config.check_ids}
        spans = [(m.start, m.end) for m in ctx.maintenance
                 if not m.checks or mine & {ctx.full_id(c) for c in m.checks}]
        spans += [(timestamp_ms(a.start), timestamp_ms(a.end)) for a in ctx.annotations("exclusion")
                  if a.reason == "maintenance" and a.end and (a.check is None or a.check in mine)]
        lo, hi = ctx.period.start_ms, ctx.until_ms
        total, reach = 0, lo
        for a, b in sorted(spans):
            a, b = max(a, reach), min(b, hi)
            if b > a:
                total += b - a
                reach = b
        return duration_verdict(config, total, None)


class FaultFreeDaysConfig(ObjectiveConfig, kw_only=True, forbid_unknown_fields=True, frozen=True):
    period: Literal["month", "year"] = "year"


class FaultFreeDays(Evaluator[FaultFreeDaysConfig]):
    """Calendar days (profile time zone) with no down time (004 三: >= 360 a year). A fault across
    midnight spoils both days."""

    kind = "fault_free_days"
    Config = FaultFreeDaysConfig
    unit = "days"

    def evaluate(self, config: FaultFreeDaysConfig, ctx: EvaluationContext) -> Verdict:
        assert config.op is not None and config.target is not None
        timeline = ctx.timeline(config)
        days = list(ctx.period.days())
        starts = [a for a, _ in days]
        faulty: set[int] = set()
        for segment in timeline.segments:
            if segment.state != DOWN:
                continue
            first = bisect.bisect_right(starts, segment.start) - 1
            last = bisect.bisect_left(starts, segment.end) - 1
            faulty.update(range(first, last + 1))
        elapsed = sum(1 for a, _ in days if a < ctx.until_ms)
        # A day without any evidence is not shown fault-free (nor faulty): it does not count.
        blind = set()
        for i, (a, b) in enumerate(days[:elapsed]):
            b = min(b, ctx.until_ms)
            if all(s.state == UNKNOWN for s in timeline.segments if s.start < b and s.end > a):
                blind.add(i)
        fault_free = elapsed - len(faulty) - len(blind - faulty)
        remaining = len(days) - elapsed
        met: bool | None = compare(fault_free, config.op, config.target)
        if ctx.to_date and met is False and compare(fault_free + remaining, config.op, config.target):
            met = None  # the rest of the period can still make it
        evidence = [{"day": ctx.period.start.date().fromordinal(ctx.period.start.date().toordinal() + i).isoformat()}
                    for i in sorted(faulty)][:MAX_EVIDENCE]
        return Verdict(measured=fault_free, met=met, target=config.target, timeline=timeline,
                       evidence=evidence, note=f"{len(faulty)} day(s) with a fault, {len(blind)} without evidence"
                       + (f", {remaining} day(s) still to come" if remaining else ""))


class SuccessRatio(Evaluator[ObjectiveConfig]):
    """``ok / (ok + fail)`` records of the period (003-V: viruses detected >= 99.9 %)."""

    kind = "success_ratio"

    def evaluate(self, config: ObjectiveConfig, ctx: EvaluationContext) -> Verdict:
        assert config.op is not None and config.target is not None
        ok = judged = 0
        excluded: dict[str, int] = {}
        for check in config.check_ids:
            for record in ctx.records(check):
                if record.outcome == "error":
                    continue
                reason = ctx.excluded_record(config, record)
                if reason is not None:
                    excluded[reason] = excluded.get(reason, 0) + 1
                    continue
                judged += 1
                ok += record.outcome == "ok"
        left_out = sum(excluded.values())
        tail = f"; {left_out} excluded ({', '.join(sorted(excluded))})" if left_out else ""
        if not judged:
            return Verdict(measured=None, met=None, target=config.target, excluded_samples=left_out,
                           note="no judged records in the period" + tail)
        ratio = Fraction(ok, judged)
        return Verdict(measured=float(ratio), met=compare(ratio, config.op, Fraction(str(config.target))),
                       target=config.target, excluded_samples=left_out, note=f"{ok} of {judged} ok" + tail)


class HeartbeatConfig(ObjectiveConfig, kw_only=True, forbid_unknown_fields=True, frozen=True):
    every: Duration = Duration(86400.0)


class Heartbeat(Evaluator[HeartbeatConfig]):
    """At least one ok (pushed) record in every window of ``every`` whole days from the period's
    start (003-B: a backup every day; 004-B: a full backup every 3 days). A window without one
    that an exclusion overlaps is excluded, not missed: the job may be due at any moment of it."""

    kind = "heartbeat"
    Config = HeartbeatConfig
    requires = ()
    unit = "windows"

    def validate(self, config: HeartbeatConfig) -> tuple[str, str] | None:
        if config.every % 86400:
            return "every", f'expected whole days like "1d" or "3d", got "{format_duration(config.every)}"'
        return None

    def evaluate(self, config: HeartbeatConfig, ctx: EvaluationContext) -> Verdict:
        size = int(config.every // 86400)
        days = list(ctx.period.days())
        windows = [(days[i][0], days[min(i + size, len(days)) - 1][1]) for i in range(0, len(days), size)]
        beats = sorted(at for check in config.check_ids for at, _ in ctx.values(check, "duration_s"))
        missed, excluded = [], []
        for a, b in windows:
            i = bisect.bisect_left(beats, a)
            if (i < len(beats) and beats[i] < b) or b > ctx.now_ms:
                continue  # a beat in it, or the window is not over yet
            reason = next((r for c in config.check_ids
                           if (r := ctx.excluded_span(config, ctx.full_id(c), a, b)) is not None), None)
            if reason is not None:
                excluded.append((a, reason))
            else:
                missed.append(a)
        evidence = [{"window_start": format_timestamp_ms(a)} for a in missed[:MAX_EVIDENCE]]
        evidence += [{"window_start": format_timestamp_ms(a), "excluded": r} for a, r in excluded[:MAX_EVIDENCE]]
        return Verdict(measured=len(missed), met=not missed, target=0, evidence=evidence, misses=missed,
                       excluded_samples=len(excluded),
                       note=f"{len(windows)} window(s) of {format_duration(config.every)}, {len(missed)} without an ok record"
                       + (f", {len(excluded)} excluded ({', '.join(sorted({r for _, r in excluded}))})"
                          if excluded else ""))


class NotifyDelay(Evaluator[ObjectiveConfig]):
    """For every confirmed outage: its confirmation → the first delivered notice (a ``notice``
    annotation written by the notifier), each ``op limit`` (002 art.4: within 15 minutes). An
    outage with no notice once the limit has passed is a miss."""

    kind = "notify_delay"
    requires = ("op", "limit")
    unit = "s"

    def evaluate(self, config: ObjectiveConfig, ctx: EvaluationContext) -> Verdict:
        assert config.op is not None and config.limit is not None
        timeline = ctx.timeline(config)
        limit_ms = round(config.limit * 1000)
        notices: dict[str, int] = {}
        for a in ctx.annotations("notice"):
            if a.incident:
                at = timestamp_ms(a.start)
                notices[a.incident] = min(at, notices.get(a.incident, at))
        evidence, misses, delays = [], [], []
        seen = set()
        excluded = 0
        for outage in timeline.outages:
            if not outage.counted or outage.incident_id in seen:
                continue
            if not ctx.period.start_ms <= outage.confirmed_at < ctx.until_ms:
                continue
            seen.add(outage.incident_id)
            # An outage confirmed during an exclusion (force majeure …) owes no notice (002 art.4).
            reason = ctx.excluded_at(config, outage.check, outage.confirmed_at)
            if reason is not None:
                excluded += 1
                evidence.append({"incident": outage.incident_id,
                                 "confirmed_at": format_timestamp_ms(outage.confirmed_at),
                                 "notified_at": None, "notice_delay_s": None, "met": None, "excluded": reason})
                continue
            notified = notices.get(outage.incident_id)
            delay = None if notified is None else notified - outage.confirmed_at
            if delay is None:
                met = None if outage.confirmed_at + limit_ms > ctx.now_ms else False
            else:
                met = compare(Fraction(delay), config.op, Fraction(limit_ms))
                delays.append(delay)
            if met is False:
                misses.append(outage.confirmed_at)
            evidence.append({"incident": outage.incident_id, "confirmed_at": format_timestamp_ms(outage.confirmed_at),
                             "notified_at": None if notified is None else format_timestamp_ms(notified),
                             "notice_delay_s": None if delay is None else delay / 1000, "met": met})
        measured = max(delays) / 1000 if delays else None
        if misses:
            met_all: bool | None = False
        else:
            met_all = None if any(e["met"] is None and "excluded" not in e for e in evidence) else True
        return Verdict(measured=measured, met=met_all, target=limit_ms / 1000, timeline=timeline,
                       evidence=evidence, misses=misses, excluded_samples=excluded,
                       note=f"{len(evidence)} confirmed outage(s), {len(misses)} notice(s) missed"
                       + (f", {excluded} excluded" if excluded else ""))


BUILTIN_EVALUATORS = (Availability, Downtime, Latency, LatencyStats, MaintenanceMinutes, FaultFreeDays,
                      SuccessRatio, Heartbeat, NotifyDelay)


@hookimpl
def probecore_add_evaluators(registry):  # type: ignore[no-untyped-def]
    for evaluator in BUILTIN_EVALUATORS:
        registry.add(evaluator)
