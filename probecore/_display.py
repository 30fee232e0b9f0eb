"""What ``probe run`` shows: a live table on a terminal, JSON Lines otherwise.

rich is imported only where a terminal is shown something: a CI gate (`probe run --once` with
stdout and stderr piped) never pays its import (~40 ms of a ~250 ms run).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any

from ._incidents import IncidentEvent
from ._profile import Profile
from ._record import SLIRecord, encode_record

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

OUTCOME_STYLE = {"ok": "green", "fail": "bold red", "error": "yellow"}
STATE_STYLE = {"ok": "green", "suspected": "yellow", "confirmed": "bold red"}


def format_seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 0.001:
        return f"{value * 1e6:.0f}µs"
    if value < 1:
        return f"{value * 1000:.1f}ms"
    return f"{value:.2f}s"


def format_value(record: SLIRecord) -> str:
    if record.value is None:
        return "–"
    if record.unit == "s":
        return format_seconds(record.value)
    return f"{record.value:g}{' ' + record.unit if record.unit else ''}"


class JsonLines:
    """Writes each stored record as one JSON line (after it is stored)."""

    def __init__(self, stream: IO[bytes] | None = None):
        self.stream = stream or sys.stdout.buffer

    def stored(self, records: Sequence[SLIRecord], events: Sequence[IncidentEvent]) -> None:
        if records:
            self.stream.write(b"".join(encode_record(r) + b"\n" for r in records))
            self.stream.flush()


class LiveTable:
    """One row per check: last outcome, value, phases, incident state, attempts."""

    def __init__(self, profile: Profile, vantage: str):
        self.vantage = vantage
        self.rows: dict[str, dict[str, Any]] = {
            c.full_id: {"check": c, "last": None, "state": "ok", "attempts": 0, "fails": 0}
            for c in profile.checks}
        self.incidents = 0
        self.scheduler: Any = None

    def observed(self, record: SLIRecord, events: Sequence[IncidentEvent]) -> None:
        row = self.rows.get(record.check)
        if row is None:
            return
        row["last"] = record
        row["attempts"] += 1
        row["fails"] += record.outcome != "ok"
        for event in events:
            if event.kind in ("suspected", "confirmed"):
                row["state"] = event.kind
            else:
                row["state"] = "ok"
            self.incidents += event.kind == "confirmed"
        if record.outcome == "ok":
            row["state"] = "ok"

    def __rich__(self) -> Table:
        from rich.table import Table
        from rich.text import Text

        table = Table(expand=False, title_justify="left", caption_justify="left",
                      caption=f"vantage {self.vantage} · {self.incidents} incidents confirmed · "
                              f"{datetime.now(timezone.utc):%H:%M:%S} UTC")
        for name in ("check", "probe", "target", "outcome", "value", "phases", "incident", "attempts"):
            table.add_column(name, no_wrap=name != "phases", justify="right" if name == "attempts" else "left")
        for row in self.rows.values():
            check, record = row["check"], row["last"]
            if record is None:
                table.add_row(check.id, check.probe, "", Text("pending", style="dim"), "", "", "", "0")
                continue
            outcome = Text(record.outcome, style=OUTCOME_STYLE[record.outcome])
            if record.failure is not None:
                outcome.append(f" {record.failure.code}", style="dim")
            phases = " ".join(f"{k} {format_seconds(v)}" for k, v in record.phases.items())
            table.add_row(check.id, check.probe, record.target, outcome, format_value(record), phases,
                          Text(row["state"], style=STATE_STYLE[row["state"]]),
                          f"{row['attempts']} ({row['fails']} not ok)" if row["fails"] else str(row["attempts"]))
        return table


def results_table(records: Sequence[SLIRecord]) -> Table:
    """The records of ``probe run --once`` as a table."""
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for name in ("check", "target", "outcome", "value", "reason"):
        table.add_column(name)
    for record in sorted(records, key=lambda r: r.check):
        table.add_row(record.check, record.target,
                      Text(record.outcome, style=OUTCOME_STYLE[record.outcome]), format_value(record),
                      f"{record.failure.code}: {record.failure.message}" if record.failure else "")
    return table


class PlainConsole:
    """``print(text, style=…)`` for a stream that is no terminal, where rich would drop the
    styles anyway; only for plain strings (no tables, no markup)."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def print(self, text: str, style: str | None = None) -> None:
        print(text, file=self.stream, flush=True)


def make_console(stderr: bool = False, *, plain_when_piped: bool = False) -> Console | PlainConsole:
    """A rich console on stdout (or stderr); with *plain_when_piped*, a :class:`PlainConsole`
    when that stream is not a terminal (the caller then prints only plain strings)."""
    stream = sys.stderr if stderr else sys.stdout
    if plain_when_piped and not stream.isatty():
        return PlainConsole(stream)
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:  # a pipe or a file: wide enough that tables are not cut
        console = Console(stderr=stderr, highlight=False, width=200)
    return console
