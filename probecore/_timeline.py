"""How a period of one check's records divides into up, down, excluded and unknown time.

This is the evaluation semantics of DESIGN.md in one place, for the objective kinds to build on
(availability, downtime …). Given one (check, vantage) stream of records in start order:

* **Evidence holds.** A record's outcome holds from its start until the next record's start, but
  never longer than ``hold_limit`` (the check's interval × a staleness factor); time no record
  holds is **unknown** — shown as coverage, never counted as up or down.
* **Down time is outage time.** Outages are the confirmed incidents of the one incident state
  machine (:func:`probecore.replay`, the live tracker's code): from the first failure of the run
  (``incident_started_at``) to the first ``ok`` after it. Flaps (runs shorter than ``confirm``)
  are not outages; their time is up. An outage still open at the end of the evidence ends where
  its last record's hold ends; the rest is unknown.
* **Exclusions subtract from down time, not from the period.** An exclusion window (maintenance,
  force majeure, a customer-caused period entered after the fact) turns the down time it covers
  into excluded time with its reason; up and unknown time are left as they are.

Every second of ``[start, end)`` lands in exactly one of the four states, so
``up + down + excluded + unknown == end − start``; each outage is reported with the part of it
that was excluded and why. Times are epoch seconds (floats) for speed; callers convert.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ._incidents import IncidentTracker
from ._record import SLIRecord, parse_timestamp

UP, DOWN, EXCLUDED, UNKNOWN = "up", "down", "excluded", "unknown"


@dataclass(frozen=True)
class Window:
    """A span of time excluded from down time, with the reason the report shows."""

    start: float
    end: float
    reason: str


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    state: str
    reason: str | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Outage:
    """A confirmed incident, clipped to the period: its down and excluded parts."""

    incident_id: str
    start: float
    end: float
    resolved: bool
    down_s: float
    excluded_s: float
    reasons: tuple[str, ...]


@dataclass
class Timeline:
    """The period ``[start, end)`` of one stream, cut into segments of one state each."""

    start: float
    end: float
    segments: list[Segment] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)

    def total(self, state: str) -> float:
        return sum(s.seconds for s in self.segments if s.state == state)

    @property
    def coverage(self) -> float:
        """The share of the period with evidence (not unknown)."""
        length = self.end - self.start
        return 1.0 - self.total(UNKNOWN) / length if length > 0 else 0.0


def _epoch(stamp: str) -> float:
    return parse_timestamp(stamp).timestamp()


def build_timeline(records: Sequence[SLIRecord], *, start: float, end: float, confirm: int,
                   hold_limit: float, exclusions: Iterable[Window] = ()) -> Timeline:
    """Cut ``[start, end)`` for one stream's *records* (in start order; any before *start* set
    the state at *start*).

    :param confirm: the check's ``confirm`` count (consecutive provider failures of an outage).
    :param hold_limit: seconds a record's outcome holds at most (interval × staleness factor).
    :param exclusions: windows whose overlap with down time becomes excluded time.
    """
    if end <= start:
        raise ValueError("the period must end after it starts")
    starts = [_epoch(r.started_at) for r in records]
    # Evidence: [record start, min(next start, start + hold)) — the time each record speaks for.
    evidence: list[tuple[float, float]] = []
    for i, at in enumerate(starts):
        until = at + hold_limit
        if i + 1 < len(starts):
            until = min(until, starts[i + 1])
        if until > at:
            evidence.append((at, until))

    # Outages from the one state machine; an open one ends where its evidence ends.
    down: list[tuple[float, float, str, bool]] = []
    tracker = IncidentTracker(confirm)
    opened: dict[str, float] = {}
    for i, record in enumerate(records):
        for event in tracker.feed(record):
            if event.kind == "confirmed":
                opened[event.incident_id] = _epoch(event.incident_started_at)
            elif event.kind == "resolved":
                down.append((opened.pop(event.incident_id), starts[i], event.incident_id, True))
    for incident_id, began in opened.items():
        last = max((e[1] for e in evidence if e[0] >= began), default=began)
        down.append((began, last, incident_id, False))

    timeline = Timeline(start, end)
    down.sort()
    windows = sorted(exclusions, key=lambda w: (w.start, w.end))
    cuts = {start, end}
    for a, b in evidence:
        cuts.update((a, b))
    for a, b, _, _ in down:
        cuts.update((a, b))
    for w in windows:
        cuts.update((w.start, w.end))
    points = sorted(c for c in cuts if start <= c <= end)
    # One sweep over the elementary spans between cut points; evidence and outages are sorted
    # and disjoint, so a pointer each suffices; exclusion windows may overlap: keep the active.
    ei = di = wi = 0
    active: list[Window] = []
    for a, b in zip(points, points[1:]):
        middle = (a + b) / 2
        while ei < len(evidence) and evidence[ei][1] <= middle:
            ei += 1
        while di < len(down) and down[di][1] <= middle:
            di += 1
        while wi < len(windows) and windows[wi].start <= middle:
            active.append(windows[wi])
            wi += 1
        active = [w for w in active if w.end > middle]
        if di < len(down) and down[di][0] <= middle:
            reason = active[0].reason if active else None
            state = EXCLUDED if reason else DOWN
        elif ei < len(evidence) and evidence[ei][0] <= middle:
            state, reason = UP, None
        else:
            state, reason = UNKNOWN, None
        _append(timeline.segments, Segment(a, b, state, reason))

    segment_starts = [s.start for s in timeline.segments]
    for began, finished, incident_id, resolved in down:
        lo, hi = max(began, start), min(finished, end)
        if hi <= lo:
            continue
        first = max(0, bisect.bisect_right(segment_starts, lo) - 1)
        down_s = excluded_s = 0.0
        reasons: set[str] = set()
        for segment in timeline.segments[first:]:
            if segment.start >= hi:
                break
            overlap = min(segment.end, hi) - max(segment.start, lo)
            if overlap <= 0:
                continue
            if segment.state == DOWN:
                down_s += overlap
            elif segment.state == EXCLUDED:
                excluded_s += overlap
                reasons.add(segment.reason or "")
        timeline.outages.append(Outage(incident_id, lo, hi, resolved, down_s, excluded_s,
                                       tuple(sorted(reasons))))
    return timeline


def _append(segments: list[Segment], segment: Segment) -> None:
    """Add *segment*, merging it into the previous one when they say the same."""
    if segments and segments[-1].state == segment.state and segments[-1].reason == segment.reason \
            and segments[-1].end == segment.start:
        segments[-1] = Segment(segments[-1].start, segment.end, segment.state, segment.reason)
    else:
        segments.append(segment)
