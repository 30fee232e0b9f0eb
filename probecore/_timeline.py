"""How a period of records divides into up, down, excluded and unknown time.

This is the evaluation semantics of DESIGN.md in one place; every objective kind builds on it.

* **Evidence holds.** A record's outcome holds from its start until the next record's start, but
  never longer than its stream's ``hold`` (the check's interval × a staleness factor); time no
  record holds is **unknown** — shown as coverage, never counted as up or down. An ``error``
  record (the probe could not judge) is no evidence: its time is unknown too.
* **Down time is outage time.** Outages are the confirmed incidents of the one incident state
  machine (:class:`probecore.IncidentTracker`, the live tracker's code): from the first failure
  of the run (or its confirmation, with ``outage_start="confirmation"``) to the first ``ok``
  after it, where there is evidence. Flaps (runs shorter than ``confirm``) are up time.
* **Attribution classes.** Failures of a class the objective counts (default: the provider's
  only) make outages. Runs of failures of the other classes that would have made an outage had
  they counted are *excluded* time, with the class as the reason.
* **Exclusions subtract from down time, not from the period.** A window (maintenance, force
  majeure, a customer-caused period entered after the fact, an outage nobody reported in time)
  turns the down time it covers into excluded time with its reason; up and unknown time stay.
* **Several streams.** The vantages of one check must all see it down (the check is up while any
  vantage with evidence reaches it); several checks of one objective form a service that is down
  while any of them is down.

Every second of ``[start, end)`` lands in exactly one of the four states, so
``up + down + excluded + unknown == end − start``. Times are integer epoch milliseconds, so
sums are exact and a verdict at a threshold (exactly 99 %, exactly 44 minutes) is decided exactly.

Speed: a month of a 1-minute check is 43,200 records, nearly all ``ok``. The timeline is cut
from the runs of records without gaps (:meth:`Store.evidence`) plus the few records that are not ``ok``;
the state machine is fed those and the first ``ok`` after each — the only records that change
its state — so it runs the live tracker's code without decoding 43,200 records.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from ._incidents import PROVIDER_ONLY, IncidentEvent, IncidentTracker
from ._record import SLIRecord, format_timestamp_ms, timestamp_ms

UP, DOWN, EXCLUDED, UNKNOWN = "up", "down", "excluded", "unknown"
STATES = (UP, DOWN, EXCLUDED, UNKNOWN)


@dataclass(frozen=True)
class Window:
    """A span of time excluded from down time, with the reason the report shows.

    ``check`` limits it to one check (full id); ``None`` applies it to every check.
    """

    start: int
    end: int
    reason: str
    check: str | None = None
    note: str = ""


class Exclusions:
    """The one place that says whether a moment is excluded, and why.

    Built from the objective's windows (maintenance, exclusions entered after the fact, outages
    not reported in time); the timeline asks it about down time, and the sample-based objective
    kinds (latency, success ratios, heartbeats) ask it about each sample, so every kind honours
    the same exclusions the same way.
    """

    def __init__(self, windows: Iterable[Window]):
        self.windows = sorted(windows, key=lambda w: (w.start, w.end))

    def for_check(self, check: str) -> Exclusions:
        """The windows that apply to *check* (full id): its own and those of every check."""
        return Exclusions(w for w in self.windows if w.check is None or w.check == check)

    def at(self, moment: float, check: str | None = None) -> Window | None:
        """The first window (by start) covering *moment* for *check*, or ``None``."""
        for w in self.windows:
            if w.start > moment:
                break
            if moment < w.end and (check is None or w.check is None or w.check == check):
                return w
        return None

    def overlapping(self, start: int, end: int, check: str | None = None) -> Window | None:
        """The first window overlapping ``[start, end)`` for *check*, or ``None``."""
        for w in self.windows:
            if w.start >= end:
                break
            if w.end > start and (check is None or w.check is None or w.check == check):
                return w
        return None


@dataclass(frozen=True)
class Segment:
    start: int
    end: int
    state: str
    reason: str | None = None

    @property
    def ms(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Outage:
    """A confirmed incident (or a would-be one of an excluded class), clipped to the period."""

    incident_id: str
    check: str
    vantage: str
    start: int
    end: int
    resolved: bool
    counted: bool
    """Whether its failures count against the provider (else ``attribution`` excludes it)."""
    attribution: str
    confirmed_at: int
    code: str
    down_ms: int = 0
    excluded_ms: int = 0
    reasons: tuple[str, ...] = ()
    unclipped_start: int = 0


@dataclass
class Stream:
    """One (check, vantage) stream's evidence, in the compact form the store hands out."""

    check: str
    vantage: str
    runs: Sequence[tuple[int, int]]
    """``(first start, last start)`` of each run of records no more than ``hold`` apart, epoch
    ms, in order (:meth:`probecore.Store.evidence`)."""
    not_ok: Sequence[SLIRecord]
    """The ``fail`` and ``error`` records, in start order."""
    following: dict[int, int | None]
    """Start (ms) of a not-``ok`` record → start of the next record of the stream, or ``None``."""
    confirm: int
    hold: int
    """Milliseconds a record's outcome holds at most."""

    @classmethod
    def from_records(cls, records: Iterable[SLIRecord], *, confirm: int, hold: int) -> list[Stream]:
        """Streams of *records* (any checks and vantages, each in start order)."""
        grouped: dict[tuple[str, str], list[SLIRecord]] = {}
        for record in records:
            grouped.setdefault((record.check, record.vantage), []).append(record)
        streams = []
        for (check, vantage), mine in grouped.items():
            starts = [timestamp_ms(r.started_at) for r in mine]
            runs: list[tuple[int, int]] = []
            for at in starts:
                if runs and at - runs[-1][1] <= hold:
                    runs[-1] = (runs[-1][0], at)
                else:
                    runs.append((at, at))
            following = {starts[i]: (starts[i + 1] if i + 1 < len(starts) else None)
                         for i, r in enumerate(mine) if r.outcome != "ok"}
            streams.append(cls(check, vantage, runs, [r for r in mine if r.outcome != "ok"], following,
                               confirm, hold))
        return streams


@dataclass
class Timeline:
    """The period ``[start, end)``, cut into segments of one state each, with its outages."""

    start: int
    end: int
    segments: list[Segment] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)

    def total(self, state: str) -> int:
        """Milliseconds in *state*."""
        return sum(s.ms for s in self.segments if s.state == state)

    @property
    def coverage(self) -> float:
        """The share of the period with evidence (not unknown)."""
        length = self.end - self.start
        return 1.0 - self.total(UNKNOWN) / length if length > 0 else 0.0

    def excluded_by_reason(self) -> dict[str, int]:
        by: dict[str, int] = {}
        for s in self.segments:
            if s.state == EXCLUDED:
                by[s.reason or ""] = by.get(s.reason or "", 0) + s.ms
        return by


Unreported = Callable[[Outage], "Window | None"]
"""Given a counted outage, the window that excludes it for want of a timely report, or None."""


def build_timeline(streams: Stream | Sequence[Stream], *, start: int, end: int,
                   counted: frozenset[str] = PROVIDER_ONLY, exclusions: Iterable[Window] = (),
                   outage_start: str = "first_failure",
                   unreported: Unreported | None = None) -> Timeline:
    """Cut ``[start, end)`` for *streams* (records before *start* set the state at *start*).

    :param counted: attribution classes whose failures count against the provider.
    :param exclusions: windows whose overlap with down time becomes excluded time.
    :param outage_start: ``"first_failure"`` or ``"confirmation"``.
    :param unreported: 002's rule: an outage the customer did not report in time is excluded.
    """
    if end <= start:
        raise ValueError("the period must end after it starts")
    if isinstance(streams, Stream):
        streams = [streams]
    windows = list(exclusions)
    per_check: dict[str, list[list[Segment]]] = {}
    outages: list[Outage] = []
    for stream in streams:
        spans = _outage_spans(stream, counted, outage_start)
        if unreported is not None:
            for span in spans:
                if span.counted and (window := unreported(span)) is not None:
                    windows.append(window)
        mine = Exclusions(windows).for_check(stream.check)
        per_check.setdefault(stream.check, []).append(_sweep(stream, spans, mine, start, end))
        outages.extend(spans)
    checks = [_combine(parts, _all_must_be_down, start, end) for parts in per_check.values()]
    if not checks:
        checks = [[Segment(start, end, UNKNOWN)]]
    timeline = Timeline(start, end, _combine(checks, _any_down, start, end))
    timeline.outages = _clip_outages(outages, timeline)
    return timeline


# ---- one stream -----------------------------------------------------------------------------------

def _evidence(stream: Stream) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(evidence runs, error spans) in epoch milliseconds."""
    runs = [(first, last + stream.hold) for first, last in stream.runs]
    errors = []
    for record in stream.not_ok:
        if record.outcome != "error":
            continue
        at = timestamp_ms(record.started_at)
        following = stream.following.get(at)
        until = at + stream.hold if following is None else min(following, at + stream.hold)
        if until > at:
            errors.append((at, until))
    return runs, errors


def _outage_spans(stream: Stream, counted: frozenset[str], outage_start: str) -> list[Outage]:
    """Outages of one stream from the live tracker's state machine (and would-be outages of the
    classes not counted, from a second tracker that counts every failure)."""
    feed = _state_changing_records(stream)
    found: list[Outage] = []
    everything = frozenset(c for r in stream.not_ok if r.failure for c in [r.failure.attribution]) | counted
    for counts, tracker in ((True, IncidentTracker(stream.confirm, counted)),
                            (False, IncidentTracker(stream.confirm, everything))):
        if not counts and everything == counted:
            break
        opened: dict[str, tuple[int, int, SLIRecord]] = {}
        last_failure: dict[str, SLIRecord] = {}
        for record in feed:
            for event in tracker.feed(record):
                if event.kind == "confirmed":
                    opened[event.incident_id] = (_epoch(event.incident_started_at), _epoch(event.at), record)
                elif event.kind == "resolved" and event.incident_id in opened:
                    began, confirmed, first = opened.pop(event.incident_id)
                    found.append(_span(stream, event.incident_id, began, confirmed, _epoch(record.started_at),
                                       True, counts, last_failure.get(event.incident_id, first), outage_start))
            if record.outcome == "fail" and tracker.incident_id:
                last_failure[tracker.incident_id] = record
        for incident_id, (began, confirmed, first) in opened.items():
            found.append(_span(stream, incident_id, began, confirmed, _open_end(stream, began), False,
                               counts, last_failure.get(incident_id, first), outage_start))
    if len(found) > 1:
        found = _drop_counted_overlaps(found)
    return found


def _span(stream: Stream, incident_id: str, began: int, confirmed: int, ended: int,
          resolved: bool, counts: bool, failure_record: SLIRecord, outage_start: str) -> Outage:
    failure = failure_record.failure
    start = confirmed if outage_start == "confirmation" else began
    return Outage(incident_id=incident_id, check=stream.check, vantage=stream.vantage,
                  start=start, end=max(start, ended), resolved=resolved, counted=counts,
                  attribution=failure.attribution if failure else "unknown", confirmed_at=confirmed,
                  code=failure.code if failure else "", unclipped_start=start)


def _drop_counted_overlaps(spans: list[Outage]) -> list[Outage]:
    """The all-classes tracker also sees the counted outages; keep those only once."""
    counted = [(s.start, s.end) for s in spans if s.counted]
    return [s for s in spans if s.counted or not any(a < s.end and s.start < b for a, b in counted)]


def _open_end(stream: Stream, began: int) -> int:
    """Where an outage still open at the end of the evidence ends: its last record's hold."""
    last = stream.runs[-1][1] if stream.runs else began
    return max(began, last + stream.hold)


def stream_events(stream: Stream) -> list[IncidentEvent]:
    """The incident events of *stream* exactly as the live tracker of ``probe run`` emits them
    (same ids, same moments): the tracker fed only the records that change its state. This is
    how incidents exist for records that no tracker saw live (``probe records import``)."""
    tracker = IncidentTracker(stream.confirm)
    events: list[IncidentEvent] = []
    for record in _state_changing_records(stream):
        events.extend(tracker.feed(record))
    return events


def _state_changing_records(stream: Stream) -> list[SLIRecord]:
    """The not-``ok`` records, each followed by the first ``ok`` after it (synthesised from its
    start time): every other ``ok`` record leaves the state machine where it is."""
    if not stream.not_ok:
        return []
    not_ok_ms = {timestamp_ms(r.started_at) for r in stream.not_ok}
    feed: list[SLIRecord] = []
    for record in stream.not_ok:
        feed.append(record)
        after = stream.following.get(timestamp_ms(record.started_at))
        if after is not None and after not in not_ok_ms:
            following = format_timestamp_ms(after)
            feed.append(SLIRecord(check=record.check, probe=record.probe, target=record.target,
                                  vantage=record.vantage, scheduled_at=following, started_at=following,
                                  duration_s=0.0, outcome="ok"))
    feed.sort(key=lambda r: r.started_at)
    return feed


def _sweep(stream: Stream, spans: list[Outage], exclusions: Exclusions, start: int,
           end: int) -> list[Segment]:
    runs, errors = _evidence(stream)
    down = sorted((s.start, s.end, s.attribution) for s in spans if s.counted)
    other = sorted((s.start, s.end, s.attribution) for s in spans if not s.counted)
    cuts = {start, end}
    for group in (runs, errors, down, other):
        for item in group:
            cuts.add(item[0])
            cuts.add(item[1])
    for w in exclusions.windows:
        cuts.update((w.start, w.end))
    points = sorted(c for c in cuts if start <= c <= end)
    run_starts = [a for a, _ in runs]
    error_starts = [a for a, _ in errors]
    down_starts = [a for a, _, _ in down]
    other_starts = [a for a, _, _ in other]
    segments: list[Segment] = []
    for a, b in pairwise(points):
        middle = (a + b) / 2
        if not _inside(runs, run_starts, middle) or _inside(errors, error_starts, middle):
            state, reason = UNKNOWN, None
        elif _inside(down, down_starts, middle):
            active = exclusions.at(middle)
            state, reason = (EXCLUDED, active.reason) if active else (DOWN, None)
        elif (hit := _inside(other, other_starts, middle)):
            state, reason = EXCLUDED, hit[2]
        else:
            state, reason = UP, None
        _append(segments, Segment(a, b, state, reason))
    return segments


def _inside(spans: list, starts: list[int], moment: float):  # type: ignore[type-arg]
    """The span of *spans* (disjoint, sorted by start) that contains *moment*, if any."""
    i = bisect.bisect_right(starts, moment) - 1
    if i >= 0 and spans[i][1] > moment:
        return spans[i]
    return None


# ---- several streams ----------------------------------------------------------------------------

def _all_must_be_down(states: list[tuple[str, str | None]]) -> tuple[str, str | None]:
    """Vantages of one check: down only where every vantage with evidence sees it down."""
    known = [s for s in states if s[0] != UNKNOWN]
    if not known:
        return UNKNOWN, None
    if all(s[0] == DOWN for s in known):
        return DOWN, None
    if all(s[0] in (DOWN, EXCLUDED) for s in known):
        return next(s for s in known if s[0] == EXCLUDED)
    return UP, None


def _any_down(states: list[tuple[str, str | None]]) -> tuple[str, str | None]:
    """Checks of one service: down while any of them is down."""
    for wanted in (DOWN, EXCLUDED, UNKNOWN):
        for s in states:
            if s[0] == wanted:
                return s
    return UP, None


def _combine(parts: list[list[Segment]], rule: Callable[[list[tuple[str, str | None]]], tuple[str, str | None]],
             start: int, end: int) -> list[Segment]:
    if len(parts) == 1:
        return parts[0]
    points = sorted({start, end} | {p for part in parts for s in part for p in (s.start, s.end)})
    indexes = [0] * len(parts)
    combined: list[Segment] = []
    for a, b in pairwise(points):
        middle = (a + b) / 2
        states = []
        for k, part in enumerate(parts):
            while part[indexes[k]].end <= middle:
                indexes[k] += 1
            states.append((part[indexes[k]].state, part[indexes[k]].reason))
        state, reason = rule(states)
        _append(combined, Segment(a, b, state, reason))
    return combined


def _clip_outages(outages: list[Outage], timeline: Timeline) -> list[Outage]:
    """Outages within the period, each with the down and excluded time the timeline gives it."""
    segments = timeline.segments
    segment_starts = [s.start for s in segments]
    clipped = []
    for outage in sorted(outages, key=lambda o: (o.start, o.check, o.vantage)):
        lo, hi = max(outage.start, timeline.start), min(outage.end, timeline.end)
        if hi <= lo:
            continue
        down_ms = excluded_ms = 0
        reasons: set[str] = set()
        for segment in segments[max(0, bisect.bisect_right(segment_starts, lo) - 1):]:
            if segment.start >= hi:
                break
            overlap = min(segment.end, hi) - max(segment.start, lo)
            if overlap <= 0:
                continue
            if segment.state == DOWN:
                down_ms += overlap
            elif segment.state == EXCLUDED:
                excluded_ms += overlap
                reasons.add(segment.reason or "")
        if down_ms or excluded_ms:
            clipped.append(Outage(**{**outage.__dict__, "start": lo, "end": hi, "down_ms": down_ms,
                                     "excluded_ms": excluded_ms, "reasons": tuple(sorted(reasons))}))
    return clipped


# ---- helpers --------------------------------------------------------------------------------------

def _epoch(stamp: str) -> int:
    return timestamp_ms(stamp)


def _append(segments: list[Segment], segment: Segment) -> None:
    """Add *segment*, merging it into the previous one when they say the same."""
    if segments and segments[-1].state == segment.state and segments[-1].reason == segment.reason \
            and segments[-1].end == segment.start:
        segments[-1] = Segment(segments[-1].start, segment.end, segment.state, segment.reason)
    else:
        segments.append(segment)
