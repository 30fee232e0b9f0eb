"""The kit for plugin authors (and probecore's own tests).

* :func:`write_profile` — a profile file in a temp dir from a TOML string;
* :class:`HookRecorder` — a plugin that keeps every record and event a run emits;
* :class:`MemoryStore` — a store in memory that behaves like the real ones (dedup, ordering);
* :func:`make_host` — a plugin manager with only the plugins a test names;
* :func:`run_simulated` — run a profile under trio's ``MockClock`` from a fixed wall-clock start.

The pytest plugin (:mod:`probecore.testing.pytest_plugin`, loaded automatically when probecore
is installed) offers them as fixtures: ``probecore_host``, ``profile_file``, ``hook_recorder``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec

from .._annotations import Annotation
from .._clock import TrioWallClock
from .._errors import StoreError
from .._notify import Delivery
from .._incidents import IncidentEvent
from .._plugins import BUILTIN_PLUGINS, PluginHost, make_plugin_manager
from .._profile import Profile
from .._record import SLIRecord, timestamp_ms
from .._runner import RunOptions, RunResult, run_profile
from .._store import Store
from ..hookspec import hookimpl

__all__ = ["HookRecorder", "MemoryStore", "make_host", "run_simulated", "write_profile"]

DEFAULT_START = datetime(2026, 11, 1, 0, 0, tzinfo=timezone.utc)


def write_profile(directory: Path, text: str, name: str = "profile.toml") -> Path:
    """Write *text* (dedented) to ``directory/name`` and return the path."""
    path = Path(directory) / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


class HookRecorder:
    """A plugin that keeps what the event hooks saw, in order."""

    def __init__(self) -> None:
        self.records: list[SLIRecord] = []
        self.events: list[IncidentEvent] = []

    @hookimpl
    def probecore_record(self, record: SLIRecord) -> None:
        self.records.append(record)

    @hookimpl
    def probecore_event(self, event: IncidentEvent) -> None:
        self.events.append(event)


class MemoryStore:
    """A :class:`probecore.Store` in memory, with the same dedup and ordering rules as SQLite."""

    url = "memory:"
    blocking = False
    """Calls return at once: callers need no worker thread (which would let a mock clock jump)."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str, int], SLIRecord] = {}
        self._events: dict[str, IncidentEvent] = {}
        self._annotations: list[Annotation] = []
        self._outbox: dict[tuple[str, str, str], Delivery] = {}
        self._attempts: dict[int, list[tuple[int, bool, str | None]]] = {}
        self.writes = 0
        self.closed = False

    def write(self, records: Iterable[SLIRecord], events: Iterable[IncidentEvent],
              deliveries: Iterable[Delivery] = ()) -> None:
        self.import_records(records)
        for event in events:
            self._events.setdefault(event.event_id, event)
        self.enqueue(deliveries)
        self.writes += 1

    def enqueue(self, deliveries: Iterable[Delivery]) -> int:
        added = 0
        for delivery in deliveries:
            key = (delivery.event_id, delivery.route, delivery.channel)
            if key not in self._outbox:
                self._outbox[key] = msgspec.structs.replace(delivery, id=len(self._outbox) + 1)
                added += 1
        return added

    def _delivery(self, delivery_id: int) -> Delivery:
        for delivery in self._outbox.values():
            if delivery.id == delivery_id:
                return delivery
        raise StoreError(f"store memory: no delivery {delivery_id}")

    def due_deliveries(self, profile: str, now_ms: int, limit: int = 200) -> list[Delivery]:
        due = [d for d in self._outbox.values() if d.profile == profile and d.status == "pending"
               and d.next_ms <= now_ms]
        return [msgspec.structs.replace(d) for d in sorted(due, key=lambda d: (d.next_ms, d.id))[:limit]]

    def deliveries(self, profile: str, status: str | None = None) -> list[Delivery]:
        return [msgspec.structs.replace(d) for d in self._outbox.values()
                if d.profile == profile and (status is None or d.status == status)]

    def record_attempt(self, delivery_id: int, at_ms: int, ok: bool, error: str | None,
                       next_ms: int | None, expired: bool) -> None:
        if not self._delivery(delivery_id).record(at_ms, ok, error, next_ms, expired):
            return
        if not expired:
            self._attempts.setdefault(delivery_id, []).append((at_ms, ok, error))

    def attempts(self, delivery_id: int) -> list[tuple[int, bool, str | None]]:
        return list(self._attempts.get(delivery_id, []))

    def open_incidents(self, profile: str) -> list[IncidentEvent]:
        resolved = {e.incident_id for e in self._events.values() if e.kind == "resolved"}
        return [e for e in self._events.values() if e.kind == "confirmed" and e.check.startswith(profile + "/")
                and e.incident_id not in resolved]

    def import_records(self, records: Iterable[SLIRecord]) -> tuple[int, int]:
        added = skipped = 0
        for record in records:
            key = (record.check, record.vantage, timestamp_ms(record.started_at))
            if key in self._records:
                skipped += 1
            else:
                self._records[key] = record
                added += 1
        return added, skipped

    def records(self, *, check: str | None = None, prefix: str | None = None,
                since: str | None = None, until: str | None = None,
                not_ok: bool = False) -> Iterator[SLIRecord]:
        lo = timestamp_ms(since) if since else None
        hi = timestamp_ms(until) if until else None
        for key in sorted(self._records, key=lambda k: (k[2], k[0], k[1])):
            record = self._records[key]
            if not_ok and record.outcome == "ok":
                continue
            if check is not None and record.check != check:
                continue
            if prefix is not None and not record.check.startswith(prefix):
                continue
            if (lo is not None and key[2] < lo) or (hi is not None and key[2] >= hi):
                continue
            yield record

    def _starts(self, check: str, vantage: str | None = None) -> list[tuple[str, int]]:
        return sorted((key[1], key[2]) for key in self._records
                      if key[0] == check and (vantage is None or key[1] == vantage))

    def evidence(self, check: str, since_ms: int, until_ms: int,
                 max_gap_ms: int) -> dict[str, list[tuple[int, int]]]:
        runs: dict[str, list[tuple[int, int]]] = {}
        last: dict[str, int] = {}
        for vantage, at in sorted(self._starts(check), key=lambda k: k[1]):
            if not since_ms <= at < until_ms:
                continue
            mine = runs.setdefault(vantage, [])
            if mine and at - last[vantage] <= max_gap_ms:
                mine[-1] = (mine[-1][0], at)
            else:
                mine.append((at, at))
            last[vantage] = at
        return runs

    def following(self, check: str, vantage: str, moments: Iterable[int]) -> dict[int, int | None]:
        times = [at for _, at in self._starts(check, vantage)]
        return {m: next((t for t in times if t > m), None) for m in moments}

    def values(self, check: str, since_ms: int, until_ms: int, metric: str) -> list[tuple[int, float]]:
        found = []
        for key in sorted(self._records, key=lambda k: k[2]):
            record = self._records[key]
            if key[0] != check or not since_ms <= key[2] < until_ms or record.outcome != "ok":
                continue
            value: Any = msgspec.to_builtins(record)
            for part in metric.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                found.append((key[2], float(value)))
        return found

    def annotate(self, annotation: Annotation) -> Annotation:
        stored = msgspec.structs.replace(annotation, id=len(self._annotations) + 1)
        self._annotations.append(stored)
        return stored

    def annotations(self, profile: str, kind: str | None = None) -> list[Annotation]:
        return [a for a in self._annotations
                if a.profile == profile and (kind is None or a.kind == kind)]

    def withdraw(self, annotation_id: int, *, at: str, by: str, note: str) -> Annotation:
        if not 1 <= annotation_id <= len(self._annotations):
            raise StoreError(f"store memory: no annotation {annotation_id}")
        current = self._annotations[annotation_id - 1]
        if current.withdrawn_at is not None:
            raise StoreError(f"store memory: annotation {annotation_id} was already withdrawn")
        withdrawn = msgspec.structs.replace(current, withdrawn_at=at, withdrawn_by=by, withdrawn_note=note)
        self._annotations[annotation_id - 1] = withdrawn
        return withdrawn

    def tail(self, check: str, vantage: str) -> list[SLIRecord]:
        mine = [r for r in self.records(check=check) if r.vantage == vantage]
        last_ok = max((i for i, r in enumerate(mine) if r.outcome == "ok"), default=-1)
        return mine[last_ok + 1:]

    def events(self, *, check: str | None = None, prefix: str | None = None) -> Iterator[IncidentEvent]:
        for event in self._events.values():
            if (check is None or event.check == check) and (prefix is None or event.check.startswith(prefix)):
                yield event

    def close(self) -> None:
        self.closed = True


def make_host(*plugins: object, builtins: Iterable[str] = BUILTIN_PLUGINS) -> PluginHost:
    """A plugin manager with the built-ins (or those named) plus *plugins*, no entry points."""
    return make_plugin_manager(builtins=builtins, autoload=False, extra=plugins)


async def run_simulated(profile: Profile, host: PluginHost, *, store: Store | None = None,
                        duration: float, start: datetime = DEFAULT_START, **options: Any) -> RunResult:
    """Run *profile* for *duration* seconds of trio time with a wall clock starting at *start*.

    Call it inside a test that runs under ``MockClock(autojump_threshold=0)`` (pytest-trio's
    ``autojump_clock`` fixture) to simulate hours or months in milliseconds.
    """
    run_options = RunOptions(clock=TrioWallClock(start), duration=duration, vantage="test",
                             handle_signals=False, **options)
    return await run_profile(profile, host, store or MemoryStore(), run_options)
