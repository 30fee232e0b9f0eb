"""``probe = "web"``: an HTTP(S) request timed the way contract 001 §2.4 defines response time.

One attempt is one request on a fresh connection (HTTP/1.1 with h11 over a trio stream of our
own, TLS through ``trio.SSLStream`` with one shared ``SSLContext`` per verify setting, names
resolved with dnspython after /etc/hosts). The request is an ordinary keep-alive one, as a
first visitor's; the probe closes the connection after the response. HTTP/2 is not spoken.

**Value** ``processing`` (seconds): from the request having been fully sent to the first byte
of the response (the ``wait`` phase), minus one network round trip estimated from the TCP
connect of the same attempt: "from the server having received the whole request to its
starting to send data". On Linux the three are the kernel's figures, untouched by the event
loop or by this process being descheduled: the transmit time stamp of the request's last byte,
the receive time stamp of the answer's first byte (for TLS 1.3, of the first record that holds
the answer, not of a session ticket), and the handshake's RTT from ``TCP_INFO``
(``details.timestamps = "kernel"``, ``details.rtt_source = "tcp_info"``; otherwise
``"process"`` / ``"connect"``). ``details`` keeps the raw ``wait_s`` and ``rtt_estimate_s``.
With redirects followed, phases and ``processing`` add up over the hops.

**Phases**, in order: ``resolve`` (absent for an IP literal or a ``resolve`` binding),
``connect``, ``tls`` (https only), ``send``, ``wait``, ``transfer`` (first byte to last).

**Keys**
- ``url`` (http or https), ``method`` (GET), ``headers``, ``body`` (for POST/PUT/PATCH/DELETE);
- ``resolve = "203.0.113.10"``: connect there for the URL's host (also after a redirect to the
  same host), keeping the Host header and TLS SNI, so the hosting server is judged whatever
  DNS says; ``ip_version = 4 | 6 | "any"``; ``nameservers = ["192.0.2.53:53"]`` (default: the
  system's resolv.conf, after /etc/hosts); ``dns_attribution`` (``third_party``: whose fault a
  failed lookup is); ``connect_timeout`` (``"5s"``, per address);
- ``keep_alive`` (false: a fresh connection per attempt, as a first visit; true: idle
  connections are kept per run and reused, ``details.reused`` says so, and the round trip is
  the one measured when the connection was opened);
- ``tls_verify`` (true; false is shown as ``details.tls_verify = false``), ``ca_file``,
  ``min_cert_days`` (``details.cert_days_left`` is always recorded for https);
- ``status`` (``["2xx"]``; codes, ``"3xx"`` classes or ``"200-204"`` ranges), ``body_contains``,
  ``body_not_contains``, ``body_regex`` (a string or a list: all must hold), ``header_match``
  (``{ Content-Type = "^text/html" }``: regex search, the header must exist),
  ``max_body_bytes`` (1 MiB; never unbounded), ``follow_redirects`` (true),
  ``max_redirects`` (10), ``threshold = { op = "<=", value = "1.5s" }`` on ``processing``,
  ``server_timing`` (true, or a metric name: record the ``Server-Timing`` header's durations).

**Failure codes** (attribution): ``dns`` (``dns_attribution``, default third_party; a lookup
gets at most 5 s and ends 0.2 s before the check's timeout, so a name server that never answers
is this code, not the scheduler's ``timeout``),
``connect_refused``, ``connect_timeout``, ``connect_failed`` (provider; unknown when this host
has no route), ``tls``, ``closed``, ``bad_response``, ``reply_too_large`` (a status line and
headers over 64 KiB, or more than 32 ``1xx`` responses: a server that never ends its head),
``http_status``, ``too_large`` (the body exceeds ``max_body_bytes``), ``header_mismatch``,
``body_mismatch``, ``cert_expiring``, ``too_many_redirects``, ``too_slow`` (provider); the scheduler's ``timeout`` names the phase it cut short;
``dns_config`` / ``tls_config`` are ``error`` records (this host cannot judge).
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import h11
import trio

from probecore import CheckContext, Observation, ProbeKind, hookimpl

from .._client import USER_AGENT, ResponseHeads
from ._config import REDIRECT_STATUSES, Plan, Threshold, Url, WebConfig, describe_statuses, make_plan, parse_url
from ._net import (
    Connection,
    Failed,
    Pool,
    certificate_details,
    connect,
    resolve,
    tls_context,
    tls_handshake,
)
from ._stream import keep_receive_stamps_on

__all__ = ["Threshold", "WebConfig", "WebProbe"]

PHASES = ("resolve", "connect", "tls", "send", "wait", "transfer")
RECEIVE_SIZE = 256 * 1024
PREVIEW = 120


class _Stale(Exception):
    """A kept-alive connection died before answering: retry once on a fresh one."""


@dataclass
class _Response:
    status: int
    reason: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    body_bytes: int
    too_large: bool
    url: Url

    def header(self, name: bytes) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return b", ".join(values).decode("latin-1") if values else None


@dataclass
class _Attempt:
    send: float = 0.0
    wait: float = 0.0
    transfer: float = 0.0
    rtt: float = 0.0
    answered: bool = False
    in_transfer: bool = False
    redirects: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def phases(self) -> dict[str, float]:
        """send, wait and transfer from the stream's timestamps (they replace the loop's timing)."""
        if not self.answered:
            return {}
        if self.in_transfer:  # cut short while reading: the loop's timing of transfer stays
            return {"send": self.send, "wait": self.wait}
        return {"send": self.send, "wait": self.wait, "transfer": self.transfer}


class WebProbe(ProbeKind[WebConfig]):
    kind = "web"
    Config = WebConfig
    unit = "s"

    def __init__(self) -> None:
        self._plans: dict[int, tuple[WebConfig, Plan]] = {}

    def _plan(self, config: WebConfig) -> Plan:
        cached = self._plans.get(id(config))
        if cached is None or cached[0] is not config:
            cached = self._plans[id(config)] = (config, make_plan(config))
        return cached[1]

    def target(self, config: WebConfig) -> str:
        return config.url

    def host(self, config: WebConfig) -> str:
        return self._plan(config).url.host

    async def check(self, config: WebConfig, ctx: CheckContext) -> Observation:
        plan = self._plan(config)
        attempt = _Attempt()
        if config.resolve is not None:
            attempt.details["resolve"] = config.resolve
        try:
            response = await self._fetch(config, plan, ctx, attempt)
        except Failed as failed:
            _order_phases(ctx)
            details = {**attempt.details, **failed.details}
            if failed.error:
                return Observation.error(failed.code, failed.message, details=details)
            value = self._processing(attempt) if attempt.answered else None
            return Observation.fail(failed.code, failed.message, attribution=failed.attribution,
                                    details=details, value=value, phases=attempt.phases())
        _order_phases(ctx)
        return self._judge(config, plan, response, attempt)

    # ---- one attempt: hops until a final response ------------------------------------------

    async def _fetch(self, config: WebConfig, plan: Plan, ctx: CheckContext, attempt: _Attempt) -> _Response:
        url, method, body = plan.url, config.method, plan.body
        hop = 0
        while True:
            response = await self._exchange(config, plan, url, method, body, ctx, attempt,
                                            keep_body=plan.needs_body)
            location = response.header(b"location")
            if not (config.follow_redirects and response.status in REDIRECT_STATUSES and location):
                return response
            if hop >= config.max_redirects:
                raise Failed("too_many_redirects",
                             f"more than {config.max_redirects} redirects; the last one "
                             f"(HTTP {response.status}) points to {location}",
                             details={"status": response.status, "redirects": attempt.redirects,
                                      "final_url": url.show()})
            try:
                url = parse_url(urljoin(url.show(), location.strip()), key="Location")
            except ValueError as exc:
                raise Failed("bad_response", f"HTTP {response.status} redirects to an unusable "
                             f"URL: {str(exc).split(': ', 1)[-1]}",
                             details={"status": response.status}) from None
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, body = "GET", None
            hop += 1
            attempt.redirects += 1

    async def _exchange(self, config: WebConfig, plan: Plan, url: Url, method: str, body: bytes | None,
                        ctx: CheckContext, attempt: _Attempt, *, keep_body: bool) -> _Response:
        bound = config.resolve if url.host == plan.url.host else None
        key = (url.scheme, url.host, url.port, bound, config.ip_version, config.tls_verify, config.ca_file)
        conn = Pool.current().take(key) if config.keep_alive else None
        if conn is None:
            conn = await self._open(config, url, bound, key, ctx, attempt)
        try:
            return await self._roundtrip(conn, config, plan, url, method, body, ctx, attempt, keep_body)
        except _Stale:
            conn = await self._open(config, url, bound, key, ctx, attempt)
            return await self._roundtrip(conn, config, plan, url, method, body, ctx, attempt, keep_body)

    async def _open(self, config: WebConfig, url: Url, bound: str | None, key: tuple[Any, ...],
                    ctx: CheckContext, attempt: _Attempt) -> Connection:
        context = tls_context(config.tls_verify, config.ca_file) if url.tls else None
        if bound is not None:
            addresses, via = [bound], "binding"
        elif _is_address(url.host):
            addresses, via = [url.host], "literal"
        else:
            with ctx.phase("resolve"):
                addresses, via = await resolve(url.host, config.ip_version, config.nameservers,
                                               config.dns_attribution)
        attempt.details["resolved_by"] = via
        with ctx.phase("connect"):
            raw, address, rtt, kernel_rtt = await connect(addresses, url.port, float(config.connect_timeout))
        attempt.details["address"] = address
        stream: Any = raw
        tls_details = None
        if context is not None:
            try:
                with ctx.phase("tls"):
                    stream = await tls_handshake(raw, context, url.host)
                tls_details = certificate_details(stream, config.tls_verify)
            except BaseException:
                raw.close()
                raise
            attempt.details.update(tls_details)
        return Connection(raw, stream, ResponseHeads(), address, rtt, kernel_rtt, key, tls_details)

    async def _roundtrip(self, conn: Connection, config: WebConfig, plan: Plan, url: Url, method: str,
                         body: bytes | None, ctx: CheckContext, attempt: _Attempt,
                         keep_body: bool) -> _Response:
        pooled = False
        try:
            http = conn.http
            host = plan.user_host if plan.user_host is not None and url.host == plan.url.host \
                else url.host_header
            headers = [("Host", host), ("User-Agent", USER_AGENT), ("Accept", "*/*"),
                       *plan.extra_headers]
            if body is not None:
                headers.append(("Content-Length", str(len(body))))
            # No "Connection: close" even for a one-request connection: a first visit's request
            # is a keep-alive one, and a server that closes right after answering makes the
            # answer's arrival less exact (measured on loopback: ~0.15 ms later); we close.
            data = http.send(h11.Request(method=method, target=url.target, headers=headers))
            if body:
                data += http.send(h11.Data(data=body))
            data += http.send(h11.EndOfMessage())
            stream, raw = conn.stream, conn.raw
            try:
                began_ns = time.time_ns()
                raw.begin_request()
                with ctx.phase("send"):
                    await stream.send_all(data)
                raw.arm(tls=url.tls)
                with ctx.phase("wait"):
                    chunk = await stream.receive_some(RECEIVE_SIZE)
                sent_ns, first_ns = raw.disarm()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                if conn.reused:
                    raise _Stale from None
                raise Failed("closed", f"connection to {conn.address} broken before the response: "
                             f"{_reason(exc)}") from None
            if not chunk:
                if conn.reused:
                    raise _Stale
                raise Failed("closed", f"{conn.address} closed the connection without answering")
            attempt.answered = True
            attempt.rtt += conn.rtt_s
            attempt.details["rtt_source"] = "tcp_info" if conn.kernel_rtt else "connect"
            attempt.details["timestamps"] = "kernel" if raw.kernel_timing else "process"
            if conn.reused:
                attempt.details["reused"] = True
                if conn.tls_details:
                    attempt.details.update(conn.tls_details)
                attempt.details["address"] = conn.address
            attempt.send += max(0, sent_ns - began_ns) / 1e9
            attempt.wait += max(0, first_ns - sent_ns) / 1e9
            attempt.in_transfer = True
            with ctx.phase("transfer"):
                response = await _read_response(conn, chunk, url, config.max_body_bytes, keep_body)
            attempt.transfer += max(0, time.time_ns() - first_ns) / 1e9
            attempt.in_transfer = False
            if (config.keep_alive and not response.too_large and http.our_state is h11.DONE
                    and http.their_state is h11.DONE):
                http.start_next_cycle()
                Pool.current().put(conn)
                pooled = True
            return response
        finally:
            if not pooled:
                conn.close()

    # ---- judging the final response --------------------------------------------------------

    @staticmethod
    def _processing(attempt: _Attempt) -> float:
        return max(0.0, attempt.wait - attempt.rtt)

    def _judge(self, config: WebConfig, plan: Plan, response: _Response, attempt: _Attempt) -> Observation:
        processing = self._processing(attempt)
        details = attempt.details
        details.update({
            "status": response.status, "http_version": "1.1", "body_bytes": response.body_bytes,
            "wait_s": attempt.wait, "rtt_estimate_s": attempt.rtt,
        })
        if attempt.redirects:
            details["redirects"] = attempt.redirects
            details["final_url"] = response.url.show()
        if config.server_timing:
            details.update(_server_timing(response.header(b"server-timing"), config.server_timing))

        phases = attempt.phases()

        def fail(code: str, message: str) -> Observation:
            return Observation.fail(code, message, value=processing, details=details, phases=phases)

        if not plan.status_ok(response.status):
            reason = f" {response.reason}" if response.reason else ""
            return fail("http_status", f"HTTP {response.status}{reason}; expected "
                        f"{describe_statuses(config.status)}")
        if response.too_large:
            return fail("too_large", f"the body is larger than max_body_bytes = {config.max_body_bytes}")
        for lower, shown, pattern in plan.header_rules:
            value = response.header(lower.encode("latin-1"))
            if value is None:
                return fail("header_mismatch", f"no {shown} header")
            if not pattern.search(value):
                return fail("header_mismatch", f'{shown} header "{_preview(value)}" does not match '
                            f'"{pattern.pattern}"')
        if plan.needs_body:
            text = response.body.decode(_charset(response.header(b"content-type")), "replace")
            for wanted in plan.contains:
                if wanted not in text:
                    return fail("body_mismatch", f'the body does not contain "{_preview(wanted)}"')
            for unwanted in plan.not_contains:
                if unwanted in text:
                    return fail("body_mismatch", f'the body contains "{_preview(unwanted)}"')
            for pattern in plan.regexes:
                if not pattern.search(text):
                    return fail("body_mismatch", f'the body does not match "{_preview(pattern.pattern)}"')
        days = details.get("cert_days_left")
        if config.min_cert_days is not None and isinstance(days, float) and days < config.min_cert_days:
            return fail("cert_expiring", f"the TLS certificate expires in {days:g} days "
                        f"({details.get('cert_not_after')}); min_cert_days = {config.min_cert_days:g}")
        if config.threshold is not None and not config.threshold.holds(processing):
            return fail("too_slow", f"processing {processing * 1000:.1f} ms; expected {config.threshold}")
        return Observation.ok(processing, details=details, phases=phases)


async def _read_response(conn: Connection, chunk: bytes, url: Url, limit: int, keep_body: bool) -> _Response:
    http, stream = conn.http, conn.stream
    head: h11.Response | None = None
    body = bytearray()
    size = 0
    too_large = eof = False
    heads = conn.heads
    try:
        heads.feed(chunk)
        while True:
            event = http.next_event()
            if why := heads.over(event):
                raise Failed("reply_too_large", f"{conn.address} sent {why}")
            if event is h11.NEED_DATA:
                try:
                    chunk = await stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise Failed("closed", f"connection to {conn.address} broken while reading the "
                                 f"response: {_reason(exc)}") from None
                eof = not chunk
                heads.feed(chunk)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    too_large = True
                    if keep_body:
                        body += event.data[:max(0, limit - len(body))]
                    break
                if keep_body:
                    body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise Failed("closed", f"{conn.address} closed the connection before the response "
                             "was complete")
            # h11.InformationalResponse (1xx) is skipped: the final response follows.
    except h11.RemoteProtocolError as exc:
        if eof:  # h11's words for a body or head cut short by the peer's close
            raise Failed("closed", f"{conn.address} closed the connection before the response was "
                         "complete") from None
        if why := heads.overflowed(exc):
            raise Failed("reply_too_large", f"{conn.address} sent {why}") from None
        raise Failed("bad_response", f"not a valid HTTP/1.1 response from {conn.address}: {exc}") from None
    assert head is not None
    return _Response(head.status_code, head.reason.decode("latin-1", "replace"), list(head.headers),
                     bytes(body), size, too_large, url)


def _server_timing(header: str | None, wanted: bool | str) -> dict[str, Any]:
    """``Server-Timing: db;dur=53, app;dur=47.2`` → ``server_timing.db_s`` … and ``server_timing_s``.

    ``server_timing_s`` is the metric named by the check (``server_timing = "app"``), or with
    ``true`` the one named ``total``, else the first with a duration.
    """
    found: dict[str, float] = {}
    for entry in (header or "").split(","):
        name, *params = [p.strip() for p in entry.split(";")]
        if not name:
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "dur":
                try:
                    found.setdefault(name, float(value.strip().strip('"')) / 1000.0)
                except ValueError:
                    pass
    details: dict[str, Any] = {f"server_timing.{n}_s": v for n, v in list(found.items())[:16]}
    if isinstance(wanted, str):
        pick = found.get(wanted)
    else:
        pick = found.get("total", next(iter(found.values()), None))
    details["server_timing_s"] = pick
    return details


def _order_phases(ctx: CheckContext) -> None:
    """Phases in their canonical order (a redirect can add ``resolve`` after ``transfer``)."""
    phases = ctx.phases
    if list(phases) != [p for p in PHASES if p in phases]:
        ordered = {p: phases[p] for p in PHASES if p in phases}
        ordered.update((k, v) for k, v in phases.items() if k not in ordered)
        phases.clear()
        phases.update(ordered)


def _charset(content_type: str | None) -> str:
    if content_type:
        for param in content_type.split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset":
                name = value.strip().strip('"')
                try:
                    "".encode(name)
                    return name
                except LookupError:
                    break
    return "utf-8"


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _reason(exc: BaseException) -> str:
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, OSError) and candidate.errno:
            return os.strerror(candidate.errno).lower()
    return str(exc) or type(exc).__name__


def _preview(text: str) -> str:
    return text if len(text) <= PREVIEW else text[:PREVIEW] + "…"


@hookimpl
def probecore_add_probes(registry):  # type: ignore[no-untyped-def]
    keep_receive_stamps_on()
    registry.add(WebProbe)
