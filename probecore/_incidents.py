"""The one state machine that turns a check's records into incidents.

It is a pure function of the record sequence of one (check, vantage) stream: the live tracker
in ``probe run`` and the evaluator replaying a month of stored records run this same code, so
the incidents announced while running are the incidents in the report.

Rules (DESIGN.md, "Evaluation semantics"):

* a ``fail`` attributed to the ``provider`` counts; the first one opens a *suspected* incident;
* ``confirm`` consecutive counted failures *confirm* it (an outage); it started at the first one;
* the first ``ok`` record *resolves* a confirmed incident, or ends a suspected one as a *flap*
  (reported, never counted as downtime);
* every other record (``error``: the probe could not judge; a ``fail`` attributed to the
  customer, a third party or the probe) is no evidence either way: it neither counts towards
  ``confirm`` nor breaks the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import msgspec

from ._record import Failure, SLIRecord, Timestamp

EventKind = Literal["suspected", "confirmed", "resolved", "flap"]


class IncidentEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Something that happened to an incident. ``event_id`` is the same in every replay."""

    event_id: str
    kind: EventKind
    incident_id: str
    check: str
    vantage: str
    at: Timestamp
    """Start of the record that caused the event."""
    incident_started_at: Timestamp
    """Start of the first failure of the run (when the outage is deemed to have begun)."""
    failures: int
    """Consecutive counted failures so far."""
    failure: Failure | None = None
    """The latest failure (for suspected/confirmed), or ``None`` (resolved/flap)."""


PROVIDER_ONLY: frozenset[str] = frozenset({"provider"})


def counts_as_failure(record: SLIRecord, counted: frozenset[str] = PROVIDER_ONLY) -> bool:
    """Whether *record* counts towards an incident: a ``fail`` whose attribution class is in
    *counted* (by default only the provider's, as in ``probe run``)."""
    return (record.outcome == "fail" and record.failure is not None
            and record.failure.attribution in counted)


class IncidentTracker:
    """Incident state of one (check, vantage) stream. Feed records in start order.

    :param confirm: consecutive counted failures that confirm an incident.
    :param counted: attribution classes whose failures count (the live tracker: the provider's
        only; an objective that does not exclude, say, ``third_party`` counts those too).
    """

    def __init__(self, confirm: int, counted: frozenset[str] = PROVIDER_ONLY):
        if confirm < 1:
            raise ValueError("confirm must be at least 1")
        self.confirm = confirm
        self.counted = counted
        self.failures = 0
        self.started_at: str | None = None
        self.confirmed = False

    @property
    def state(self) -> str:
        """``ok``, ``suspected`` or ``confirmed``."""
        if self.confirmed:
            return "confirmed"
        return "suspected" if self.failures else "ok"

    @property
    def incident_id(self) -> str | None:
        return self._incident_id if self.started_at else None

    def feed(self, record: SLIRecord) -> list[IncidentEvent]:
        """Advance by one record; return the events it causes (zero, one or two)."""
        events: list[IncidentEvent] = []
        if record.outcome == "ok":
            if self.failures:
                events.append(self._event("resolved" if self.confirmed else "flap", record, None))
            self.failures = 0
            self.started_at = None
            self.confirmed = False
        elif counts_as_failure(record, self.counted):
            if not self.failures:
                self.started_at = record.started_at
                self._incident_id = f"{record.check}@{record.vantage}@{record.started_at}"
            self.failures += 1
            if self.failures == 1:
                events.append(self._event("suspected", record, record.failure))
            if self.failures == self.confirm and not self.confirmed:
                self.confirmed = True
                events.append(self._event("confirmed", record, record.failure))
        return events

    def restore(self, records: Iterable[SLIRecord]) -> None:
        """Rebuild the state from stored records without emitting events (a restarted run)."""
        for record in records:
            self.feed(record)

    def _event(self, kind: EventKind, record: SLIRecord, failure: Failure | None) -> IncidentEvent:
        assert self.started_at is not None
        return IncidentEvent(
            event_id=f"{self._incident_id}#{kind}", kind=kind, incident_id=self._incident_id,
            check=record.check, vantage=record.vantage, at=record.started_at,
            incident_started_at=self.started_at, failures=self.failures, failure=failure)


def replay(records: Iterable[SLIRecord], confirm: int | dict[str, int]) -> list[IncidentEvent]:
    """The events a sequence of records causes, stream by stream, in record order.

    :param records: records of any checks and vantages, each stream in start order.
    :param confirm: the ``confirm`` count of every check, or a map from full check id to it.
    """
    trackers: dict[tuple[str, str], IncidentTracker] = {}
    events: list[IncidentEvent] = []
    for record in records:
        key = (record.check, record.vantage)
        tracker = trackers.get(key)
        if tracker is None:
            n = confirm if isinstance(confirm, int) else confirm[record.check]
            tracker = trackers[key] = IncidentTracker(n)
        events.extend(tracker.feed(record))
    return events


_event_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(IncidentEvent)


def encode_event(event: IncidentEvent) -> bytes:
    """The event as one compact JSON object."""
    return _event_encoder.encode(event)


def decode_event(data: bytes | str) -> IncidentEvent:
    """Parse and validate one JSON event."""
    return _event_decoder.decode(data)
