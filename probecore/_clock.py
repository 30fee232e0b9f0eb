"""Wall-clock time, injected: the scheduler never reads the system clock directly.

Scheduling decisions use trio's clock (``trio.current_time``/``sleep_until``), which tests
replace with ``trio.testing.MockClock``; the timestamps written into records come from a
:class:`WallClock`, which tests replace with :class:`TrioWallClock` so both move together.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol

import trio


class WallClock(Protocol):
    def now(self) -> datetime:
        """The current UTC time (timezone-aware)."""


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class TrioWallClock:
    """A wall clock that follows trio's clock from a fixed *start* (for tests and simulations).

    The first call inside trio pins ``start`` to the trio time of that moment; afterwards
    ``now()`` is ``start`` plus the trio time that has passed, so under a ``MockClock`` a
    simulated month of records carries a month of timestamps.
    """

    def __init__(self, start: datetime):
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.start = start
        self._origin: float | None = None

    def now(self) -> datetime:
        current = trio.current_time()
        if self._origin is None:
            self._origin = current
        return self.start + timedelta(seconds=current - self._origin)
