"""``probe = "tcp"``: can a TCP connection be made, and does the service answer as expected?

Keys: ``host``, ``port``; optional ``send`` (text written after connecting, with ``\\r\\n``
escapes as TOML writes them) and ``expect`` (text that must appear in what the service sends
back, e.g. a banner ``"220 "`` or ``"SSH-2.0"``); ``read_limit`` caps how much is read.

Phases: ``resolve`` (host name to address; absent for a literal address), ``connect``,
``banner`` (send and read until ``expect`` is seen). The headline value is the connect time.

Failure codes: ``resolve_failed`` (unknown), ``connect_refused``, ``connect_failed``,
``closed`` (connection closed before ``expect`` was seen) and ``banner_mismatch`` — the last
four attributed to the provider. The scheduler's timeout gives ``timeout`` naming the phase.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import Annotated

import msgspec
import trio

from probecore import CheckContext, Observation, ProbeConfig, ProbeKind, hookimpl

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class TcpConfig(ProbeConfig):
    host: Annotated[str, msgspec.Meta(min_length=1)]
    port: Port
    send: str | None = None
    expect: str | None = None
    read_limit: Annotated[int, msgspec.Meta(ge=1, le=1_048_576)] = 65536


class TcpProbe(ProbeKind[TcpConfig]):
    kind = "tcp"
    Config = TcpConfig
    unit = "s"

    def target(self, config: TcpConfig) -> str:
        host = f"[{config.host}]" if ":" in config.host else config.host
        return f"{host}:{config.port}"

    def host(self, config: TcpConfig) -> str:
        return config.host

    async def check(self, config: TcpConfig, ctx: CheckContext) -> Observation:
        addresses = [config.host]
        if not _is_address(config.host):
            with ctx.phase("resolve"):
                try:
                    infos = await trio.socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM)
                except socket.gaierror as exc:
                    return Observation.fail("resolve_failed", f"cannot resolve {config.host}: {exc.strerror}",
                                            attribution="unknown")
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        # Every address in turn, as a client would: a service that listens only on IPv4 is up
        # even where the name resolves to ::1 first.
        with ctx.phase("connect"):
            errors: list[OSError] = []
            for address in addresses:
                try:
                    stream = await trio.open_tcp_stream(address, config.port)
                    break
                except OSError as exc:
                    errors.append(exc)
            else:
                refused = all(_refused(exc) for exc in errors)
                return Observation.fail(
                    "connect_refused" if refused else "connect_failed",
                    f"connect to {', '.join(addresses)} port {config.port}: {_reason(errors[-1])}",
                    details={"address": addresses[-1]})
        connect_s = ctx.phases["connect"]
        details: dict[str, str | int | float | bool | None] = {"address": address}
        async with stream:
            if config.send is None and config.expect is None:
                return Observation.ok(connect_s, details=details)
            with ctx.phase("banner"):
                received = b""
                try:
                    if config.send is not None:
                        await stream.send_all(config.send.encode())
                    if config.expect is None:
                        return Observation.ok(connect_s, details=details)
                    wanted = config.expect.encode()
                    while wanted not in received and len(received) < config.read_limit:
                        chunk = await stream.receive_some(config.read_limit - len(received))
                        if not chunk:
                            break
                        received += chunk
                except (trio.BrokenResourceError, OSError) as exc:
                    return Observation.fail("closed", f"connection broken: {_reason(exc)}",
                                            details={**details, "received": _preview(received)})
            details["received"] = _preview(received)
            if wanted in received:
                return Observation.ok(connect_s, details=details)
            if len(received) >= config.read_limit:
                return Observation.fail("banner_mismatch",
                                        f"{config.expect!r} not in the first {config.read_limit} bytes",
                                        details=details)
            return Observation.fail("closed", f"connection closed before {config.expect!r} was seen",
                                    details=details)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _refused(exc: OSError) -> bool:
    if exc.errno == errno.ECONNREFUSED:
        return True
    # trio raises an OSError summarising every address it tried; look at the causes.
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        return all(isinstance(e, OSError) and e.errno == errno.ECONNREFUSED for e in cause.exceptions)
    return isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED


def _reason(exc: BaseException) -> str:
    """The operating system's words for *exc* (trio wraps per-address errors in a summary)."""
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, BaseExceptionGroup):
            candidate = candidate.exceptions[0]
        if isinstance(candidate, OSError) and candidate.errno:
            return os.strerror(candidate.errno).lower()
    return str(exc) or type(exc).__name__


def _preview(data: bytes, limit: int = 120) -> str:
    text = data[:limit].decode("utf-8", "replace").strip()
    return text + ("…" if len(data) > limit else "")


@hookimpl
def probecore_add_probes(registry):  # type: ignore[no-untyped-def]
    registry.add(TcpProbe)
