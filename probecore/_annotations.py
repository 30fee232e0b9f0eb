"""Annotations: what people add to the evidence after the fact, kept beside the records.

An :class:`Annotation` is an exclusion entered with ``probe exclude add`` (force majeure, a
customer-caused period …), a customer's report of an incident (``probe incident report``; 002's
"reported within 5 days"), or a delivered notice (the evidence of 002-T: written by ``probe run``
when it delivers one, or entered with ``probe notice add|import`` for notices sent outside
probecore). Annotations are never deleted: withdrawing one stamps who withdrew it, when and why,
and reports list it as withdrawn.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ._record import Timestamp

AnnotationKind = Literal["exclusion", "incident_report", "notice"]

EXCLUSION_REASONS: tuple[str, ...] = ("force_majeure", "customer", "third_party", "maintenance")
"""Reasons an exclusion entered after the fact may give (``probe exclude add --reason``)."""


class Annotation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One annotation. ``id`` is assigned by the store when it is added."""

    kind: AnnotationKind
    profile: str
    check: str | None = None
    """Full check id it applies to, or ``None`` for every check of the profile."""
    start: Timestamp
    """Exclusion: first excluded instant. Incident report / notice: when it happened."""
    end: Timestamp | None = None
    """Exclusion: first instant no longer excluded."""
    reason: str | None = None
    """Exclusion: one of :data:`EXCLUSION_REASONS`."""
    incident: str | None = None
    """Incident report / notice: the incident id it is about."""
    route: str | None = None
    """Notice: the ``[[notify]]`` route that delivered it (``None``: sent outside probecore)."""
    channel: str | None = None
    """Notice entered after the fact: how it was sent (``email``, ``phone``, ``sms`` …)."""
    to: str | None = None
    """Notice entered after the fact: whom it reached (the designated contact)."""
    note: str = ""
    author: str = ""
    created_at: Timestamp
    id: int | None = None
    withdrawn_at: Timestamp | None = None
    withdrawn_by: str | None = None
    withdrawn_note: str | None = None

    @property
    def active(self) -> bool:
        return self.withdrawn_at is None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Annotation)


def encode_annotation(annotation: Annotation) -> bytes:
    return _encoder.encode(annotation)


def decode_annotation(data: bytes | str) -> Annotation:
    return _decoder.decode(data)
