"""``probe demo``: loopback services with injected failures, and the demo profile against them.

The services are plain trio TCP servers on 127.0.0.1 (ports from the embedded demo profile):

* ``greeting`` (18301) greets with ``220 probecore demo ready``;
* ``flaky`` (18302) accepts connections except between 25 % and 55 % of the run, when its port
  is closed (connections refused): two failures in a row confirm an incident, the first success
  after it resolves it;
* ``slow`` (18303) answers ``PING`` with ``PONG``, but once, at 75 % of the run, too late for the
  check's timeout: one failure, a flap that never becomes an incident.
"""

from __future__ import annotations

import statistics
import sys
from collections import Counter
from functools import partial
from importlib import resources
from pathlib import Path

import trio

from ._errors import UsageError
from ._plugins import PluginHost
from ._profile import load_profile
from ._runner import RunOptions, default_vantage, run_profile
from ._store import data_dir, open_store


def demo_profile_path() -> Path:
    """The embedded demo profile (also at ``profiles/demo.toml`` in the source tree)."""
    return Path(str(resources.files("probecore") / "data" / "demo.toml"))


class DemoServices:
    """The demo's services; their failures are scheduled on trio's clock from :meth:`serve`."""

    def __init__(self, duration: float, ports: dict[str, int]):
        self.duration = duration
        self.ports = ports
        self.started = 0.0

    def elapsed_share(self) -> float:
        return (trio.current_time() - self.started) / self.duration

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.started = trio.current_time()
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(partial(trio.serve_tcp, self._greet, self.ports["greeting"], host="127.0.0.1"))
                await nursery.start(partial(trio.serve_tcp, self._pong, self.ports["slow"], host="127.0.0.1"))
            except OSError as exc:
                raise UsageError(f"demo: cannot listen on 127.0.0.1 ({exc.strerror}); "
                                 "is another demo running?") from None
            nursery.start_soon(self._flaky)
            task_status.started()

    async def _greet(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                await stream.send_all(b"220 probecore demo ready\r\n")
            except trio.BrokenResourceError:
                pass

    async def _pong(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                await stream.receive_some(64)
                share = self.elapsed_share()
                if 0.75 <= share < 0.75 + 1.0 / self.duration:  # one slot's worth of slowness
                    await trio.sleep(1.0)
                await stream.send_all(b"PONG\r\n")
            except trio.BrokenResourceError:
                pass

    async def _flaky(self) -> None:
        async def accept_and_close(stream: trio.SocketStream) -> None:
            await stream.aclose()

        flaky_server = partial(trio.serve_tcp, accept_and_close, self.ports["flaky"], host="127.0.0.1")
        while True:
            with trio.CancelScope() as up:
                async with trio.open_nursery() as nursery:
                    await nursery.start(flaky_server)
                    await trio.sleep_until(self.started + 0.25 * self.duration)
                    up.cancel()
            await trio.sleep_until(self.started + 0.55 * self.duration)
            async with trio.open_nursery() as nursery:
                await nursery.start(flaky_server)
                await trio.sleep_forever()


def run_demo(host: PluginHost, *, duration: float, store_url: str | None, json_mode: bool) -> int:
    from rich.live import Live
    from rich.table import Table

    from ._display import JsonLines, LiveTable, format_seconds, make_console

    if duration < 5:
        raise UsageError("demo: --for must be at least 5s (the demo needs time for an outage)")
    profile = load_profile(demo_profile_path(), host.probes)
    ports = {c.id: c.config.port for c in profile.checks}  # type: ignore[attr-defined]
    if store_url is None:
        path = data_dir() / "demo.sqlite3"
        for suffix in ("", "-wal", "-shm"):  # the demo's own store starts empty each time
            Path(str(path) + suffix).unlink(missing_ok=True)
        store_url = f"sqlite:{path}"
    store = open_store(store_url, host.stores.get)
    console = make_console(stderr=json_mode)
    console.print(f"[bold]probecore demo[/]: {len(profile.checks)} checks against loopback services "
                  f"for {duration:g}s; the 'flaky' service goes down from {0.25 * duration:.0f}s "
                  f"to {0.55 * duration:.0f}s")
    options = RunOptions(vantage=default_vantage(), duration=duration)
    table = LiveTable(profile, options.vantage)
    services = DemoServices(duration, ports)

    async def main():  # type: ignore[no-untyped-def]
        async with trio.open_nursery() as nursery:
            await nursery.start(services.serve)
            result = await run_profile(profile, host, store, options, on_observed=[table.observed],
                                       on_stored=[JsonLines().stored] if json_mode else [])
            nursery.cancel_scope.cancel()
        return result

    try:
        if json_mode or not console.is_terminal:
            result = trio.run(main)
        else:
            with Live(table, console=console, refresh_per_second=4):
                result = trio.run(main)
        records = list(store.records(prefix=profile.name + "/"))
    finally:
        store.close()

    summary = Table(title="What happened", title_justify="left")
    for name in ("check", "attempts", "ok", "fail", "error", "median value", "failure codes"):
        summary.add_column(name)
    by_check: dict[str, list] = {}
    for record in records:
        by_check.setdefault(record.check, []).append(record)
    for check in profile.checks:
        mine = by_check.get(check.full_id, [])
        outcomes = Counter(r.outcome for r in mine)
        values = [r.value for r in mine if r.value is not None]
        codes = Counter(r.failure.code for r in mine if r.failure)
        summary.add_row(check.id, str(len(mine)), str(outcomes["ok"]), str(outcomes["fail"]),
                        str(outcomes["error"]), format_seconds(statistics.median(values)) if values else "–",
                        ", ".join(f"{c} ×{n}" for c, n in codes.items()))
    console.print(summary)
    for event in result.events:
        console.print(f"  {event.at}  {event.kind:<9} {event.check}"
                      + (f"  ({event.failure.code}: {event.failure.message})" if event.failure else ""))
    confirmed = [e for e in result.events if e.kind == "confirmed"]
    console.print(f"{len(records)} records stored in {store.url}; {len(confirmed)} incident(s) confirmed. "
                  f"See them with: probe records {demo_profile_path()} --store {store.url}")
    if not records:
        print("probe: demo: no records were stored", file=sys.stderr)
        return 1
    return 0
