"""What agents and judges need from a shared store to work together (``probe agent``, ``probe judge``).

A store that can coordinate (the ``postgresql:`` store) returns a :class:`Coordination` from its
``coordination()`` method: a separate handle with its own database sessions, because a leader's
advisory lock lives exactly as long as the session that took it. Every method is synchronous
and may block (call them through :func:`probecore._store.call_store`-style worker threads).

* **Membership** (agents): each agent of a vantage heartbeats a row; the live members of a
  vantage are those seen within the lease. Times are the database's (``now()``), so the agents'
  own clocks may disagree. Checks are shared by rendezvous hashing (:func:`owner`) over the live
  members: every agent computes the same owner from the same member list, an agent that joins
  takes about 1/N of the checks, and an agent that stops heartbeating loses its checks to the
  others once its lease runs out.
* **Leadership** (judges): :meth:`Coordination.try_lead` takes a session-level advisory lock; the
  database drops it when the session ends (the judge died, its connection broke), and another
  judge's next :meth:`~Coordination.try_lead` gets it.
* **State**: a small key → text table (the judge's marks).
* **Records in insertion order** for the judge to follow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ._errors import UsageError
from ._record import SLIRecord


@runtime_checkable
class Coordination(Protocol):
    """Membership, leadership and a little state, shared through the store's database."""

    def heartbeat(self, vantage: str, agent: str, lease_s: float) -> list[str]:
        """Mark *agent* of *vantage* alive now; return the agents of *vantage* seen within the
        last *lease_s* seconds (this one included), sorted."""

    def leave(self, vantage: str, agent: str) -> None:
        """Remove *agent* (a clean stop: the others take its checks at their next heartbeat)."""

    def try_lead(self, name: str) -> bool:
        """Whether this handle holds (now, or already held and still connected) the leader lock
        *name*. Never waits for it."""

    def resign(self) -> None:
        """Give the leader lock up (close its session)."""

    def get_state(self, key: str) -> str | None:
        """The value stored under *key*, or ``None``."""

    def set_state(self, key: str, value: str) -> None:
        """Store *value* under *key*."""

    def last_record_id(self) -> int:
        """The highest record id (the store's insertion sequence) stored now; 0 if none."""

    def first_id_since(self, started_ms: int, prefixes: list[str]) -> int | None:
        """The lowest id of the records (of *prefixes*) that started at or after *started_ms*."""

    def records_after(self, after_id: int, prefixes: list[str], limit: int = 5000) -> list[tuple[int, SLIRecord]]:
        """``(id, record)`` of the records stored with an id above *after_id* whose check starts
        with one of *prefixes*, in id order, at most *limit*. Ids are taken at insert and seen
        at commit: a later id may be seen before an earlier one (the judge re-reads)."""

    def record_ids(self, after_id: int, upto_id: int, prefixes: list[str]) -> list[int]:
        """Ids of the records in ``(after_id, upto_id]`` whose check starts with one of *prefixes*."""

    def records_by_id(self, ids: list[int]) -> list[tuple[int, SLIRecord]]:
        """``(id, record)`` of the records with these ids, in id order."""

    def close(self) -> None:
        """Release every session (and with it the leader lock). Calling it twice is harmless."""


def coordination_of(store: Any, command: str) -> Coordination:
    """The store's coordination handle; a usage error naming *command* if it has none."""
    factory = getattr(store, "coordination", None)
    if factory is None:
        raise UsageError(f"probe {command}: the store {store.url} cannot coordinate agents and judges; "
                         "use a shared PostgreSQL store: --store postgresql://USER@HOST/DB")
    return factory()


def owner(key: str, members: Sequence[str]) -> str | None:
    """The member that owns *key* by rendezvous (highest random weight) hashing, or ``None``.

    Only the members a key moves between change its owner when one joins or leaves: the others
    keep theirs, so no check moves needlessly.
    """
    best: tuple[bytes, str] | None = None
    for member in members:
        weight = hashlib.blake2b(f"{key}\0{member}".encode(), digest_size=8).digest()
        if best is None or weight > best[0]:
            best = (weight, member)
    return best[1] if best else None
