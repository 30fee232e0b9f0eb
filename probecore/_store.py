"""The store contract, store URLs, and where the default store lives.

Stores are plugins (``probecore_add_stores``), keyed by URL scheme. Their methods are plain
synchronous calls: the core calls them from a worker thread (never on the event loop), one call
at a time per store, and batches record writes. A store must keep every record and event it
acknowledged, survive a ``kill -9`` between batches, and never keep a secret (records arrive
with secrets already removed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import trio

from ._annotations import Annotation
from ._errors import UsageError
from ._notify import Delivery
from ._incidents import IncidentEvent
from ._record import SLIRecord

DATA_DIR_ENV = "PROBECORE_DATA_DIR"


@runtime_checkable
class Store(Protocol):
    """What a store back end implements. All methods are synchronous and may block."""

    url: str
    """Where the store is, as the user would write it (no password)."""

    def write(self, records: Iterable[SLIRecord], events: Iterable[IncidentEvent],
              deliveries: Iterable[Delivery] = ()) -> None:
        """Append *records*, *events* and outbox *deliveries* in one transaction; all or nothing.

        Records are keyed by (check, vantage, start), events by ``event_id``, deliveries by
        (event id, route, channel): writing one already stored is not an error and changes
        nothing (replays and restarts write the same again).
        """

    def import_records(self, records: Iterable[SLIRecord]) -> tuple[int, int]:
        """Add records, skipping those already stored (same check, vantage and start).

        :returns: ``(added, skipped)``.
        """

    def records(self, *, check: str | None = None, prefix: str | None = None,
                since: str | None = None, until: str | None = None,
                not_ok: bool = False) -> Iterator[SLIRecord]:
        """Records in start order. *check* is a full id, *prefix* matches ``"<profile>/"``;
        *since* (inclusive) and *until* (exclusive) are RFC 3339 timestamps; *not_ok* keeps
        only ``fail`` and ``error`` records (the evaluator's few, out of a month of ``ok``)."""

    def evidence(self, check: str, since_ms: int, until_ms: int,
                 max_gap_ms: int) -> dict[str, list[tuple[int, int]]]:
        """Per vantage, the runs of *check*'s records that start in ``[since_ms, until_ms)``:
        ``(first start, last start)`` of each run of records no more than *max_gap_ms* apart.
        What the evaluator's timeline is cut from, without reading every record."""

    def following(self, check: str, vantage: str, moments: Iterable[int]) -> dict[int, int | None]:
        """For each of *moments* (epoch ms), the start of the first record of the stream after
        it, or ``None``."""

    def values(self, check: str, since_ms: int, until_ms: int, metric: str) -> list[tuple[int, float]]:
        """``(start ms, number)`` of *check*'s ``ok`` records in the range, where *metric* is a
        record field path: ``"value"`` or ``"phases.<name>"``; records without it are left out."""

    def annotate(self, annotation: Annotation) -> Annotation:
        """Add *annotation*; return it with the ``id`` the store gave it."""

    def annotations(self, profile: str, kind: str | None = None) -> list[Annotation]:
        """Every annotation of *profile* (of *kind*), withdrawn ones included, oldest first."""

    def withdraw(self, annotation_id: int, *, at: str, by: str, note: str) -> Annotation:
        """Mark an annotation withdrawn (it is kept); a :class:`StoreError` if there is no such
        annotation or it was withdrawn before."""

    def tail(self, check: str, vantage: str) -> list[SLIRecord]:
        """The records of *check* from *vantage* after its last ``ok`` one, in start order
        (what the incident tracker needs to resume where a previous run stopped)."""

    def events(self, *, check: str | None = None, prefix: str | None = None) -> Iterator[IncidentEvent]:
        """Incident events in the order they happened."""

    def enqueue(self, deliveries: Iterable[Delivery]) -> int:
        """Add outbox deliveries not stored yet; returns how many were new."""

    def due_deliveries(self, profile: str, now_ms: int, limit: int = 200) -> list[Delivery]:
        """Pending deliveries of *profile* whose next attempt is due by *now_ms*, oldest first."""

    def deliveries(self, profile: str, status: str | None = None) -> list[Delivery]:
        """Every delivery of *profile* (with *status*), in the order they were queued."""

    def record_attempt(self, delivery_id: int, at_ms: int, ok: bool, error: str | None,
                       next_ms: int | None, expired: bool) -> None:
        """Record one attempt: delivered (*ok*), failed (retry at *next_ms*) or *expired*. A
        delivery that is no longer pending is left as it is (never delivered twice)."""

    def attempts(self, delivery_id: int) -> list[tuple[int, bool, str | None]]:
        """``(at ms, ok, error)`` of every attempt of a delivery."""

    def open_incidents(self, profile: str) -> list[IncidentEvent]:
        """The ``confirmed`` events of *profile*'s incidents not resolved yet."""

    def close(self) -> None:
        """Flush and release the store. Calling it twice is harmless."""


StoreFactory = Callable[[str], Store]
"""What a store plugin registers: ``factory(url) -> Store``, creating and migrating as needed."""


STORE_THREADS = 8
"""Worker threads store calls may use at once (per trio run), apart from every other thread."""
_STORE_LIMITER: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("probecore_store")


async def call_store(store: Any, function: Callable[..., Any], *args: Any) -> Any:
    """Call a store method from trio: in a worker thread (store calls block), unless the store
    says it never blocks (``blocking = False``: the in-memory test store, where a thread would
    let trio's mock clock jump while it runs).

    The threads come from a limiter of the store's own (:data:`STORE_THREADS`), not trio's
    default one: that one's 40 threads are shared by every blocking client (name resolution of
    every probe, notifier libraries), and a batch of records must never wait behind probes stuck
    on a hostile server.
    """
    if getattr(store, "blocking", True):
        try:
            limiter = _STORE_LIMITER.get()
        except LookupError:
            limiter = trio.CapacityLimiter(STORE_THREADS)
            _STORE_LIMITER.set(limiter)
        return await trio.to_thread.run_sync(function, *args, limiter=limiter)
    return function(*args)


def data_dir() -> Path:
    """Where default stores live: ``$PROBECORE_DATA_DIR``, else ``$XDG_DATA_HOME/probecore``,
    else ``~/.local/share/probecore``."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "probecore"


def default_store_url(profile_name: str) -> str:
    """The store a profile uses when no ``--store`` is given: one SQLite file per profile name."""
    return f"sqlite:{data_dir() / (profile_name + '.sqlite3')}"


def store_scheme(url: str) -> str:
    """The scheme of a store URL; a bare path (``runs/site.db``) means SQLite."""
    head, sep, _ = url.partition(":")
    if sep and head and head.replace("+", "").isalnum() and len(head) > 1:
        return head.split("+", 1)[0].lower()
    return "sqlite"


def open_store(url: str, factories: Callable[[str], StoreFactory]) -> Store:
    """Open *url* with the factory the store registry has for its scheme."""
    if not url:
        raise UsageError("store: empty store URL")
    factory = factories(store_scheme(url))
    return factory(url)
