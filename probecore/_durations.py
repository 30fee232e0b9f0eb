"""Durations as people write them in profiles: ``"90s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


class Duration(float):
    """A length of time in seconds, written in a profile as ``"90s"``, ``"5m"``, ``"1h"``.

    Use it as the type of a probe configuration field; the profile loader parses the string.
    It *is* a float (seconds), so it can be passed straight to ``trio.move_on_after``.
    """

    def __repr__(self) -> str:
        return f"Duration({format_duration(self)!r})"

    def __str__(self) -> str:
        return format_duration(self)


def parse_duration(text: str) -> Duration:
    """Parse ``"90s"``, ``"5m"``, ``"1h30m"``, ``"1.5s"``, ``"250ms"``, ``"1d"`` into seconds.

    Raises ``ValueError`` with a message fit for the user for anything else, including bare
    numbers (a unit is required, so that ``timeout = 10`` is never read as 10 ms or 10 minutes).
    """
    if not isinstance(text, str):
        raise ValueError(f'expected a duration like "90s", "5m" or "1h", got {text!r}')
    compact = text.strip().replace(" ", "")
    if not compact or not _WHOLE.fullmatch(compact):
        raise ValueError(f'expected a duration like "90s", "5m" or "1h", got "{text}"')
    return Duration(sum(float(n) * _UNITS[u] for n, u in _PART.findall(compact)))


def format_duration(seconds: float) -> str:
    """The shortest profile spelling of *seconds* (``90.0`` → ``"90s"``, ``3600`` → ``"1h"``)."""
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
