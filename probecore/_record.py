"""The SLI record (schema ``probecore.sli/1``): one per probe attempt, the same for every kind.

Probes return an :class:`Observation`; only the scheduler turns it into an :class:`SLIRecord`,
adding what the probe cannot know (check id, slot, vantage, timing, labels). Timestamps are
RFC 3339 strings in UTC with milliseconds (``2026-11-22T03:47:48.123Z``) so that a record
encodes to exactly the same JSON line wherever it is written.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

import msgspec

SCHEMA_ID = "probecore.sli/1"

Outcome = Literal["ok", "fail", "error"]
"""``ok``; ``fail`` (the service failed the check); ``error`` (the probe could not judge)."""

Attribution = Literal["provider", "customer", "third_party", "probe", "unknown"]
"""Whose fault a failure is; contract exclusions are applied by attribution class."""

ATTRIBUTIONS: tuple[str, ...] = ("provider", "customer", "third_party", "probe", "unknown")

Timestamp = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
        description="UTC, RFC 3339 with milliseconds",
        examples=["2026-11-22T03:47:48.123Z"],
    ),
]
Scalar = str | int | float | bool | None
Seconds = Annotated[float, msgspec.Meta(ge=0)]
Identifier = Annotated[str, msgspec.Meta(min_length=1)]


class Failure(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Why an attempt did not come out ``ok``.

    ``code`` is a stable machine name (``connect_refused``, ``timeout``, ``auth_rejected`` …);
    ``attribution`` says whose fault it is; ``message`` is one human line, secrets removed.
    """

    code: Identifier
    attribution: Attribution
    message: str


class SLIRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One probe attempt, as stored and exported. See DESIGN.md for the meaning of each field."""

    schema: Literal["probecore.sli/1"] = SCHEMA_ID
    check: Annotated[str, msgspec.Meta(pattern=r"^[^/\s]+/[^/\s]+$",
                                       description="<profile name>/<check id>")]
    probe: Identifier
    target: str
    vantage: Identifier
    scheduled_at: Timestamp
    started_at: Timestamp
    duration_s: Seconds
    outcome: Outcome
    value: float | None = None
    unit: str | None = None
    phases: dict[str, Seconds] = {}
    failure: Failure | None = None
    details: dict[str, Scalar] = {}
    labels: dict[str, str] = {}

    @property
    def started(self) -> datetime:
        return parse_timestamp(self.started_at)

    @property
    def scheduled(self) -> datetime:
        return parse_timestamp(self.scheduled_at)

    @property
    def lateness_s(self) -> float:
        """How much later than its slot the attempt started (scheduler and limiter delay)."""
        return (self.started - self.scheduled).total_seconds()


class Observation(msgspec.Struct, kw_only=True):
    """What a probe's ``check()`` returns: the outcome and measurements of one attempt.

    Phases timed with :meth:`CheckContext.phase` are added by the scheduler; a probe only
    fills ``phases`` itself for phases it measured some other way. A probe that checks several
    members at once (mailboxes, power sources) returns the round's observation with ``members``;
    the round's outcome is then decided by the core, not by the probe. ``target`` overrides the
    probe kind's description of the target for this attempt (e.g. the address connected to).
    """

    outcome: Outcome = "ok"
    value: float | None = None
    unit: str | None = None
    phases: dict[str, float] = {}
    failure: Failure | None = None
    details: dict[str, Scalar] = {}
    target: str | None = None
    member: str | None = None
    """With several members in one attempt: this member's name (a mailbox pair, a power source)."""
    members: list[Observation] = []
    """One observation per member; the core then judges the round by the check's ``group`` rule
    and writes a record per member (see :mod:`probecore._groups`)."""

    @classmethod
    def ok(cls, value: float | None = None, **kw: Any) -> Observation:
        """A successful attempt with headline *value*."""
        return cls(outcome="ok", value=value, **kw)

    @classmethod
    def fail(cls, code: str, message: str, *, attribution: Attribution = "provider",
             **kw: Any) -> Observation:
        """The service failed the check (default attribution: the provider)."""
        return cls(outcome="fail", failure=Failure(code, attribution, message), **kw)

    @classmethod
    def error(cls, code: str, message: str, **kw: Any) -> Observation:
        """The probe could not judge (its own fault: attribution ``probe``)."""
        return cls(outcome="error", failure=Failure(code, "probe", message), **kw)


def format_timestamp(moment: datetime) -> str:
    """UTC RFC 3339 with milliseconds; naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """Inverse of :func:`format_timestamp` (accepts any RFC 3339 string with an offset)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return moment.astimezone(timezone.utc)


def timestamp_ms(text: str) -> int:
    """Milliseconds since the epoch, for indexes and range queries."""
    return round(parse_timestamp(text).timestamp() * 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def format_timestamp_ms(ms: int) -> str:
    """Inverse of :func:`timestamp_ms` (integer arithmetic: no rounding drift)."""
    return format_timestamp(_EPOCH + timedelta(milliseconds=ms))


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SLIRecord)


def encode_record(record: SLIRecord) -> bytes:
    """The record as one compact JSON object (no trailing newline)."""
    return _encoder.encode(record)


def decode_record(data: bytes | str) -> SLIRecord:
    """Parse and validate one JSON record; raises ``msgspec.ValidationError`` / ``DecodeError``."""
    return _decoder.decode(data)


def record_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``probecore.sli/1``, generated from :class:`SLIRecord`."""
    schema = msgspec.json.schema(SLIRecord)
    schema = json.loads(json.dumps(schema))  # plain dicts, detached from msgspec's cache
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://probecore.dev/schema/probecore.sli/1.json"
    schema["title"] = SCHEMA_ID
    return schema
