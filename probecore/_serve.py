"""``probe serve``: a read-only status page over the store, for the on-call engineer.

One small HTTP/1.1 server (trio + h11) answers ``GET /`` with a page that refreshes itself:
per profile, each check's latest record, the open incidents, the month-to-date objectives (the
report's own cards and charts, :mod:`probecore._report_html`) and each check's last 24 hours of
values (response time) as a chart. ``GET /status.json`` is the same data for scripts. There is no
endpoint that writes: every other method is ``405``, every other path ``404``.

The store is read through its public methods in a worker thread (:func:`call_store`), one page
build at a time; a built page is reused for ``refresh`` seconds, so a wall of browsers costs one
evaluation per interval. It listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any

import h11
import msgspec
import trio

from ._errors import UsageError
from ._record import format_timestamp_ms, timestamp_ms
from ._store import call_store

MAX_REQUEST_BYTES = 16_384
MAX_RESPONSE_CHARTS = 40
DAY_MS = 86_400_000


@dataclass
class Watched:
    """One profile on the page and the store that holds its records."""

    profile: Any
    store: Any


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"``, ``"[::1]:8080"`` or ``"localhost:0"`` → ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"probe serve: --listen: expected HOST:PORT like 127.0.0.1:8080, got {text!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StatusPage:
    """Builds the status page (in a worker thread) and keeps it for *refresh* seconds."""

    def __init__(self, watched: Sequence[Watched], evaluators: Any, *, refresh: float = 30.0,
                 now: Callable[[], datetime] | None = None):
        self.watched = list(watched)
        self.evaluators = evaluators
        self.refresh = refresh
        self.now = now or (lambda: datetime.now(timezone.utc))
        self._lock = trio.Lock()
        self._built_at: float | None = None
        self._page: tuple[str, bytes] = ("", b"")

    async def get(self) -> tuple[str, bytes]:
        """``(html, json)`` of the current page, rebuilt when older than ``refresh``."""
        async with self._lock:
            if self._built_at is None or trio.current_time() - self._built_at >= self.refresh:
                sections = []
                for w in self.watched:
                    sections.append(await call_store(w.store, self._section, w))
                self._page = (self._html(sections), self._json(sections))
                self._built_at = trio.current_time()
            return self._page

    # -- in the worker thread --
    def _section(self, w: Watched) -> dict[str, Any]:
        from ._evaluation import Period, evaluate_profile
        from ._report_html import page_model, report_extras

        profile, store = w.profile, w.store
        now = self.now()
        now_ms = round(now.timestamp() * 1000)
        since_ms = now_ms - DAY_MS
        zone = profile.timezone
        checks = []
        for check in profile.checks:
            records = list(store.records(check=check.full_id, since=format_timestamp_ms(since_ms),
                                         until=format_timestamp_ms(now_ms + 1)))
            last = records[-1] if records else None
            values = _with_gaps([(timestamp_ms(r.started_at), r.value) for r in records
                                 if r.outcome == "ok" and isinstance(r.value, (int, float))],
                                round(float(check.interval) * 2000))
            unit = next((r.unit for r in reversed(records) if r.unit), None)
            checks.append({
                "id": check.id, "probe": check.probe, "full_id": check.full_id, "values": values, "unit": unit,
                "state": last.outcome if last else "no evidence",
                "at": _local(last.started_at, zone) if last else None,
                "value": None if last is None or last.value is None else _value(last.value, last.unit),
                "failure": None if last is None or last.failure is None else
                f"{last.failure.code} ({last.failure.attribution}): {last.failure.message}",
                "records": len(records), "ok": sum(r.outcome == "ok" for r in records), "chart": None,
            })
        # Charts for the checks that are not ok first, then the rest, up to MAX_RESPONSE_CHARTS
        # (pygal's ~15 ms a chart would make a 1,000-check page take seconds to build).
        for index, c in enumerate(sorted(checks, key=lambda c: c["state"] == "ok")[:MAX_RESPONSE_CHARTS]):
            c["chart"] = _response_chart(f"{profile.name}-r{index}", c["id"], c["values"], c["unit"],
                                         since_ms, now_ms, zone)
        incidents = [{"check": e.check.split("/", 1)[-1], "since": _local(e.incident_started_at, zone),
                      "confirmed": _local(e.at, zone), "failures": e.failures, "incident": e.incident_id,
                      "failure": f"{e.failure.code} ({e.failure.attribution})" if e.failure else ""}
                     for e in store.open_incidents(profile.name)]
        local = now.astimezone(zone)
        period = Period.month(local.year, local.month, zone)
        report = evaluate_profile(profile, store, self.evaluators, period, now=now)
        extras = report_extras(profile, store, period, now, report)
        model = page_model(msgspec.to_builtins(report), extras, ident_prefix=f"{profile.name}-")
        return {"profile": profile.name, "contract": profile.contract, "zone": str(zone),
                "now": local.strftime("%Y-%m-%d %H:%M:%S"), "checks": checks, "incidents": incidents,
                "report": model, "json": {
                    "profile": profile.name,
                    "checks": [{k: v for k, v in c.items() if k not in ("chart", "values")} for c in checks],
                    "open_incidents": incidents, "month_to_date": msgspec.to_builtins(report)}}

    def _html(self, sections: list[dict[str, Any]]) -> str:
        from ._charts import COLOURS, FONT
        from ._report_html import environment

        return environment().get_template("status.html").render(
            sections=sections, refresh=max(1, round(self.refresh)), font=FONT, colours=COLOURS,
            generated=self.now().strftime("%Y-%m-%d %H:%M:%S UTC"))

    @staticmethod
    def _json(sections: list[dict[str, Any]]) -> bytes:
        return json.dumps({"profiles": [s["json"] for s in sections]}, ensure_ascii=False).encode()


def _with_gaps(values: list[tuple[int, float]], gap_ms: int) -> list[tuple[int, float] | None]:
    """*values* with a break (``None``) where no ok record came for *gap_ms*: the line stops
    over failures and missing evidence instead of joining across them."""
    out: list[tuple[int, float] | None] = []
    for point in values:
        previous = out[-1] if out else None
        if previous is not None and point[0] - previous[0] > gap_ms:
            out.append(None)
        out.append(point)
    return out


def _response_chart(ident: str, name: str, values: list[tuple[int, float] | None], unit: str | None,
                    start_ms: int, end_ms: int, zone: Any) -> str:
    from ._charts import response_chart

    return response_chart(ident, {name: values}, start_ms=start_ms, end_ms=end_ms, zone=zone, unit=unit)


def _local(stamp: str, zone: Any) -> str:
    return datetime.fromtimestamp(timestamp_ms(stamp) / 1000, tz=zone).strftime("%m-%d %H:%M:%S")


def _value(value: float, unit: str | None) -> str:
    if unit == "s":
        return f"{value * 1000:.4g} ms"
    return f"{value:g} {unit or ''}".strip()


# ---- HTTP -----------------------------------------------------------------------------------------

async def handle(stream: trio.abc.Stream, page: StatusPage) -> None:
    """Answer one request on *stream* (then close it): GET/HEAD only, nothing writes."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
    try:
        request = None
        with trio.move_on_after(10):  # a client that never finishes its request is dropped
            request = await _next_request(stream, connection)
        if request is None:
            return
        status, headers, body = await _answer(request, page)  # a build takes what it takes
        headers = [*headers, ("Content-Length", str(len(body))), ("Connection", "close"),
                   ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                   ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")]
        with trio.move_on_after(60):  # nor one that never reads the answer
            await stream.send_all(connection.send(h11.Response(status_code=status, headers=headers)))
            if request.method != b"HEAD":
                await stream.send_all(connection.send(h11.Data(data=body)))
            await stream.send_all(connection.send(h11.EndOfMessage()))
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        pass  # the browser went away, or sent something that is not HTTP/1.1
    finally:
        await trio.aclose_forcefully(stream)


async def _next_request(stream: trio.abc.Stream, connection: h11.Connection) -> h11.Request | None:
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(MAX_REQUEST_BYTES)
            connection.receive_data(data)
            if not data:
                return None
            continue
        return event if isinstance(event, h11.Request) else None


async def _answer(request: h11.Request, page: StatusPage) -> tuple[int, list[tuple[str, str]], bytes]:
    path = request.target.decode("ascii", "replace").split("?", 1)[0]
    if request.method not in (b"GET", b"HEAD"):
        return 405, [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")], b"read-only: GET or HEAD\n"
    if path not in ("/", "/index.html", "/status.json"):
        return 404, [("Content-Type", "text/plain")], b"not found\n"
    try:
        html, data = await page.get()
    except Exception as exc:  # a broken store must not take the server down: say so, try again later
        line = f"probe serve: the status page could not be built: {exc.__class__.__name__}: {exc}".splitlines()[0]
        print(line, file=sys.stderr, flush=True)
        return 500, [("Content-Type", "text/plain; charset=utf-8")], (line + "\n").encode()
    if path == "/status.json":
        return 200, [("Content-Type", "application/json")], data
    return 200, [("Content-Type", "text/html; charset=utf-8")], html.encode()


async def serve(page: StatusPage, listeners: list[trio.SocketListener]) -> None:
    """Serve *page* on *listeners* (``trio.open_tcp_listeners``) until cancelled."""
    await trio.serve_listeners(partial(handle, page=page), listeners)


def run_serve(profiles: Sequence[Any], stores: Sequence[Any], evaluators: Any, *, listen: str,
              refresh: float) -> int:
    """``probe serve``: run until interrupted; prints the page's address on stderr."""
    host, port = parse_listen(listen)
    page = StatusPage([Watched(p, s) for p, s in zip(profiles, stores, strict=True)], evaluators, refresh=refresh)

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, page, listeners)
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            shown = f"[{host}]" if ":" in host else host
            print(f"probe serve: http://{shown}:{bound}/ (read-only, refreshes every {refresh:g}s; "
                  "Ctrl-C stops)", file=sys.stderr, flush=True)
            if not is_loopback(host):
                print(f"probe serve: warning: listening on {host}, not loopback: anyone who can reach it "
                      "can read the page", file=sys.stderr, flush=True)

    try:
        trio.run(main)
    except OSError as exc:
        raise UsageError(f"probe serve: --listen {listen}: {exc.strerror or exc}") from None
    return 0


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    """SIGINT or SIGTERM stops the server cleanly (exit status 0)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


