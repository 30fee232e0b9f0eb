"""Where records go: incident trackers, then the store in batches, then hooks and outputs.

The scheduler calls :meth:`Pipeline.submit` for each record; it never blocks. Records and the
incident events they cause are written to the store in one transaction per batch, in a worker
thread (never on the event loop); only then are they passed to the ``probecore_record`` /
``probecore_event`` hooks and the run's outputs, so what a run prints is what it has stored.
A failed write keeps the batch and retries with backoff: nothing is dropped.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import trio

from ._groups import is_member, parent_check
from ._incidents import IncidentEvent, IncidentTracker
from ._record import SLIRecord, encode_record
from ._store import Store, call_store, data_dir

StoredCallback = Callable[[Sequence[SLIRecord], Sequence[IncidentEvent]], None]
ObservedCallback = Callable[[SLIRecord, Sequence[IncidentEvent]], None]


class Pipeline:
    """Carries records from the scheduler to the store, the hooks and the outputs.

    :param confirm: the ``confirm`` count of every check (full id), for its incident tracker.
    :param on_observed: called at once for each record and its events (live displays).
    :param on_stored: called with each batch after it is committed (hooks, JSON output).
    :param attribute: the cross-check attribution rules (:class:`~probecore._attribution.Attributor`),
        applied to each record before anything else sees it.
    :param route: turns a batch's events into outbox deliveries (:class:`~probecore._notify.Router`),
        written in the same transaction as the events.
    :param track: run the incident trackers; ``probe agent`` does not (its judge does).
    """

    def __init__(self, store: Store, confirm: dict[str, int], *,
                 on_observed: Sequence[ObservedCallback] = (), on_stored: Sequence[StoredCallback] = (),
                 batch_size: int = 500, flush_interval: float = 0.5, warn: Callable[[str], None] | None = None,
                 attribute: Callable[[SLIRecord], SLIRecord] | None = None,
                 route: Callable[[Sequence[IncidentEvent]], list[Any]] | None = None,
                 track: bool = True):
        self.store = store
        self._route = route
        self._attribute = attribute
        self._confirm = confirm
        self._track = track
        self._trackers: dict[tuple[str, str], IncidentTracker] = {}
        self._records: list[SLIRecord] = []
        self._events: list[IncidentEvent] = []
        self._on_observed = list(on_observed)
        self._on_stored = list(on_stored)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._wake = trio.Event()
        self._warn = warn or (lambda message: print(f"probe: {message}", file=sys.stderr))
        self._failures = 0
        self.stored_records = 0
        self.stored_events = 0

    def tracker(self, check: str, vantage: str) -> IncidentTracker:
        key = (check, vantage)
        tracker = self._trackers.get(key)
        if tracker is None:
            # A member stream (``acme/mail:alice``) is confirmed like its check.
            tracker = self._trackers[key] = IncidentTracker(self._confirm.get(parent_check(check), 1))
        return tracker

    async def restore(self, vantage: str) -> None:
        """Resume every check's incident state from the store (records since its last ok), and
        every member stream's with an incident still open."""
        def load() -> dict[str, list[SLIRecord]]:
            tails = {check: self.store.tail(check, vantage) for check in self._confirm}
            # Members (``acme/mail:alice``) whose last event left an incident open resume too.
            last: dict[str, str] = {}
            for prefix in sorted({check.split("/", 1)[0] + "/" for check in self._confirm}):
                for event in self.store.events(prefix=prefix):
                    if is_member(event.check) and event.vantage == vantage:
                        last[event.check] = event.kind
            for member, kind in last.items():
                if kind in ("suspected", "confirmed"):
                    tails[member] = self.store.tail(member, vantage)
            return tails

        for check, records in (await self._call(load)).items():
            self.tracker(check, vantage).restore(records)

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        return await call_store(self.store, function, *args)

    def submit(self, record: SLIRecord) -> None:
        """Take one record from the scheduler. Never blocks."""
        if self._attribute is not None:
            record = self._attribute(record)
        events = self.tracker(record.check, record.vantage).feed(record) if self._track else []
        self._records.append(record)
        self._events.extend(events)
        for callback in self._on_observed:
            callback(record, events)
        if len(self._records) >= self.batch_size:
            self._wake.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Flush every ``flush_interval`` (sooner when a batch fills) until cancelled."""
        task_status.started()
        while True:
            with trio.move_on_after(self.flush_interval * (2 ** min(self._failures, 6))):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.flush()

    async def flush(self) -> bool:
        """Write what is pending; on success hand it on. Shielded: a batch is never half-done.

        :returns: whether everything pending was written.
        """
        if not self._records and not self._events:
            return True
        records, events = self._records, self._events
        self._records, self._events = [], []
        with trio.CancelScope(shield=True):
            try:
                if self._route is not None and events:
                    deliveries = self._route(events)
                    await self._call(self.store.write, records, events, deliveries)
                else:
                    await self._call(self.store.write, records, events)
            except Exception as exc:  # keep the batch and retry: nothing is dropped
                self._records[:0] = records
                self._events[:0] = events
                self._failures += 1
                self._warn(f"store {self.store.url}: write failed, {len(self._records)} records "
                           f"kept for retry: {exc}")
                return False
        self._failures = 0
        self.stored_records += len(records)
        self.stored_events += len(events)
        for callback in self._on_stored:
            callback(records, events)
        return True

    def rescue(self) -> Path | None:
        """Write records the store would not take to a JSON Lines file, and say where.

        Used at shutdown when the store keeps failing; ``probe records import FILE`` loads them
        later. Events are not written: a replay of the records derives them again.
        """
        if not self._records:
            return None
        stamp = self._records[0].started_at.replace(":", "")
        path = data_dir() / f"unsaved-{stamp}-{os.getpid()}.jsonl"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as out:
                for record in self._records:
                    out.write(encode_record(record) + b"\n")
        except OSError as exc:
            self._warn(f"{len(self._records)} records could not be stored nor saved to {path}: "
                       f"{exc.strerror}")
            return None
        self._warn(f"{len(self._records)} records could not be stored; saved to {path} "
                   "(load them with: probe records import FILE --store URL)")
        self._records = []
        return path
