"""``probe = "ping"``: ICMP echo (IPv4 and IPv6), the way ping(8) measures and the way contract 002
art.4 asks ("the provider pings the customer's equipment every 5 minutes").

One attempt sends ``count`` echo requests, one every ``spacing``, and waits for each reply up
to ``echo_timeout`` after that request was sent (ping's ``-c``, ``-i`` and ``-W``); it ends as
soon as every request is answered or given up on.

**Sockets.** An unprivileged ICMP datagram socket (``SOCK_DGRAM`` + ``IPPROTO_ICMP`` /
``IPPROTO_ICMPV6``) where ``net.ipv4.ping_group_range`` admits one of the process's groups (the
same sysctl governs IPv6); the kernel then chooses the echo identifier and hands this socket only
its own replies, matched here by sequence number and a per-attempt random cookie at the start of
the payload. Otherwise a raw socket (root or ``CAP_NET_RAW``), which sees every ICMP message the
host receives: replies are matched by a random identifier, the sequence number, the source
address and the cookie, and ICMP errors by the echo request quoted inside them. Neither possible
gives an ``error`` record ``no_icmp_socket`` (attribution ``probe``) saying how to allow one.
``details.socket`` says which was used (``dgram`` / ``raw``).

**Timing.** A round trip runs from the clock read just before the request's ``sendto`` to the
kernel's receive time stamp of the reply (``SO_TIMESTAMPNS``; ``details.timestamps = "kernel"``),
so neither the event loop's latency nor this process being descheduled adds to it; without
kernel stamps, to when the process read the reply (``"process"``). A reply that comes later than
``echo_timeout`` after its request counts as lost (``details.late``), a repeated one as a
duplicate (``details.duplicates``), as ping(8) counts them.

**Value**: the median round trip of the answered echoes, in seconds (``None`` when none was).

**Keys**
- ``host``: an IPv4/IPv6 address or a name (resolved with the system resolver, first address);
- ``count`` (3, 1–100) echo requests per attempt; ``spacing`` ("200ms", at least 10 ms) between
  them; ``echo_timeout`` ("1s") per echo. An attempt lasts at most ``(count − 1) × spacing +
  echo_timeout``: keep the check's ``timeout`` above that, or the scheduler cuts it short
  (``timeout``);
- ``max_loss``: the largest share of lost echoes (0 ≤ max_loss < 1, compared with ``<=``) for
  which the attempt is still ``ok``; ``max_loss = 0`` demands every reply, ``0.2`` with
  ``count = 10`` tolerates two lost. Unset (the default): ok as soon as any echo is answered,
  whatever the loss. Never ok without a reply;
- ``ip_version`` (4, 6 or "any": the resolver's first address); ``size`` (56): payload bytes per
  echo (8–65507), as ping's ``-s``.

**Phases**: ``resolve`` (names only), ``echo`` (first request sent to last reply or give-up).

**Details**: ``address``, ``socket``, ``sent``, ``received``, ``loss`` (0–1, of ``count``),
``rtt_min_s`` / ``rtt_avg_s`` / ``rtt_max_s`` / ``rtt_mdev_s`` (as ping(8)'s summary, when any
reply came), ``timestamps``; when they occur ``errors`` (ICMP errors for our echoes) with
``error_from``, ``late``, ``duplicates``, ``send_errors``.

**Failure codes** (attribution): ``no_reply`` (provider): no echo answered; ``packet_loss``
(provider): answers came but the loss is above ``max_loss`` (the value is still the median);
``host_unreachable`` / ``net_unreachable`` (provider): no echo answered and a router (or this
host's neighbour discovery) said so with ICMP destination unreachable (network codes, incl.
ICMPv6 "no route", are ``net_unreachable``; every other code ``host_unreachable``);
``ttl_exceeded`` (provider): ICMP time exceeded (a routing loop); ``no_route`` (unknown): this
host has no route to the address (``sendto`` failed: our network, nobody's fault yet);
``resolve_failed`` (unknown); ``error`` records ``no_icmp_socket`` and ``send_failed``
(probe: e.g. a local firewall rejects the request). The scheduler's ``timeout`` names the phase.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import random
import socket
import statistics
import struct
import time
from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec
import trio

from probecore import CheckContext, Duration, Observation, ProbeConfig, ProbeKind, hookimpl

# Linux values the socket module does not export (all architectures: asm-generic).
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
SOL_RAW = 255
ICMP_FILTER = 1
ICMP6_FILTER = 1
SO_EE_ORIGIN_LOCAL = 1
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
UNREACHABLE = {4: 3, 6: 1}
TIME_EXCEEDED = {4: 11, 6: 3}
# Destination-unreachable codes that say "no route to that network" (the rest: that host).
NET_CODES = {4: {0, 6, 9, 11}, 6: {0, 5, 6, 7}}
UNREACHABLE_WORDS = {
    4: {0: "network unreachable", 1: "host unreachable", 2: "protocol unreachable",
        3: "port unreachable", 4: "fragmentation needed", 5: "source route failed",
        6: "network unknown", 7: "host unknown", 9: "network prohibited", 10: "host prohibited",
        11: "network unreachable for TOS", 12: "host unreachable for TOS",
        13: "communication administratively prohibited"},
    6: {0: "no route to destination", 1: "communication administratively prohibited",
        2: "beyond scope of source address", 3: "address unreachable", 4: "port unreachable",
        5: "source address failed ingress/egress policy", 6: "reject route to destination"},
}
COOKIE_SIZE = 8
RECEIVE_SIZE = 65536 + 512
READ_BATCH = 64      # messages handled before the receiver yields to the event loop
FINAL_READ = 1024    # at most, after the last echo's deadline
_TIMESPEC = struct.Struct("@ll")
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err
_ECHO = struct.Struct("!BBHHH")           # type, code, checksum, identifier, sequence
_CMSG = socket.CMSG_SPACE if hasattr(socket, "CMSG_SPACE") else (lambda n: 64)
_ANCILLARY = _CMSG(_TIMESPEC.size)
_ERR_ANCILLARY = _CMSG(_TIMESPEC.size) + _CMSG(_EXTENDED_ERR.size + 32)


class PingConfig(ProbeConfig):
    host: Annotated[str, msgspec.Meta(min_length=1)]
    count: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    spacing: Duration = Duration(0.2)
    echo_timeout: Duration = Duration(1.0)
    max_loss: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)] | None = None
    ip_version: Literal[4, 6, "any"] = "any"
    size: Annotated[int, msgspec.Meta(ge=COOKIE_SIZE, le=65507)] = 56

    def __post_init__(self) -> None:
        # Messages name the key themselves: msgspec gives no path for errors raised here.
        if float(self.spacing) < 0.01:
            raise ValueError(f'key "spacing": expected at least 10ms, got "{self.spacing}"')
        if not 0 < float(self.echo_timeout) <= 60:
            raise ValueError(f'key "echo_timeout": expected more than 0s and at most 60s, got '
                             f'"{self.echo_timeout}"')
        literal = _literal(self.host)
        if literal is not None and self.ip_version != "any" and literal.version != self.ip_version:
            raise ValueError(f'key "host": {self.host} is not an IPv{self.ip_version} address '
                             f"(ip_version = {self.ip_version})")


class NoIcmpSocket(Exception):
    """Neither an unprivileged ICMP socket nor a raw one can be opened here."""


@dataclass
class _Echo:
    seq: int
    sent_ns: int = 0
    sent_at: float = 0.0           # trio time
    rtt: float | None = None       # answered in time
    late: bool = False
    error: tuple[int, int, str] | None = None  # (ICMP type, code, reporter)
    send_error: OSError | None = None

    @property
    def settled(self) -> bool:
        return self.rtt is not None or self.error is not None or self.send_error is not None


@dataclass
class _Exchange:
    version: int
    address: str
    kind: str                      # "dgram" | "raw"
    ident: int
    cookie: bytes
    echoes: dict[int, _Echo] = field(default_factory=dict)
    duplicates: int = 0
    kernel_stamps: bool = True
    done: trio.Event = field(default_factory=trio.Event)

    def check_done(self, count: int) -> None:
        if len(self.echoes) == count and all(e.settled for e in self.echoes.values()):
            self.done.set()


class PingProbe(ProbeKind[PingConfig]):
    kind = "ping"
    Config = PingConfig
    unit = "s"

    def target(self, config: PingConfig) -> str:
        return config.host

    def host(self, config: PingConfig) -> str:
        return config.host

    async def check(self, config: PingConfig, ctx: CheckContext) -> Observation:
        if _literal(config.host) is not None:
            sockaddr = _numeric(config.host)
        else:
            family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(config.ip_version, socket.AF_UNSPEC)  # type: ignore[call-overload]
            with ctx.phase("resolve"):
                try:
                    infos = await trio.socket.getaddrinfo(config.host, None, family, socket.SOCK_DGRAM)
                except socket.gaierror as exc:
                    return Observation.fail("resolve_failed", f"cannot resolve {config.host}: {exc.strerror}",
                                            attribution="unknown")
            sockaddr = infos[0][4]
        address = str(sockaddr[0])
        version = 6 if ":" in address else 4
        try:
            sock, kind = open_icmp_socket(version)
        except NoIcmpSocket as exc:
            return Observation.error("no_icmp_socket", str(exc), details={"address": address})
        with sock:
            exchange = _Exchange(version, address, kind, ident=random.getrandbits(16),
                                 cookie=os.urandom(COOKIE_SIZE))
            with ctx.phase("echo"):
                await _run(sock, sockaddr, exchange, config)
        return _judge(config, exchange)


# ---- sockets -----------------------------------------------------------------------------------

def open_icmp_socket(version: int) -> tuple[socket.socket, str]:
    """A non-blocking ICMP socket for IP *version*: ``(socket, "dgram" | "raw")``.

    Raises :class:`NoIcmpSocket` with an operator's explanation when neither kind is allowed.
    """
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    proto = socket.IPPROTO_ICMP if version == 4 else socket.IPPROTO_ICMPV6
    problems: list[str] = []
    for kind, type_ in (("dgram", socket.SOCK_DGRAM), ("raw", socket.SOCK_RAW)):
        try:
            sock = socket.socket(family, type_, proto)
        except OSError as exc:
            problems.append(f"{kind}: {_strerror(exc)}")
            continue
        try:
            sock.setblocking(False)
            _configure(sock, version, kind)
        except BaseException:
            sock.close()
            raise
        return sock, kind
    groups = sorted({os.getgid(), *os.getgroups()})
    raise NoIcmpSocket(
        f"cannot open an ICMP socket for IPv{version} ({'; '.join(problems)}): unprivileged ICMP "
        f"sockets need one of this process's groups ({', '.join(map(str, groups))}) inside "
        f"net.ipv4.ping_group_range (now \"{_ping_group_range()}\"), raw ones root or CAP_NET_RAW")


def _configure(sock: socket.socket, version: int, kind: str) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        pass
    if kind == "dgram":
        # ICMP errors about our requests arrive on the error queue, with the offender's address.
        if version == 4:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        return
    # A raw socket gets every ICMP message the host receives: let only replies and errors in.
    try:
        if version == 4:
            wanted = (1 << ECHO_REPLY[4]) | (1 << UNREACHABLE[4]) | (1 << TIME_EXCEEDED[4])
            sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", ~wanted & 0xFFFFFFFF))
        else:
            blocked = bytearray(b"\xff" * 32)  # a set bit blocks that type
            for kind_ in (ECHO_REPLY[6], UNREACHABLE[6], TIME_EXCEEDED[6]):
                blocked[kind_ >> 3] &= ~(1 << (kind_ & 7)) & 0xFF
            sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, bytes(blocked))
    except OSError:
        pass  # only an optimisation: every message is checked anyway


def _ping_group_range() -> str:
    try:
        with open("/proc/sys/net/ipv4/ping_group_range", encoding="ascii") as file:
            return " ".join(file.read().split())
    except OSError:
        return "unknown"


# ---- one attempt -------------------------------------------------------------------------------

async def _run(sock: socket.socket, sockaddr: tuple, exchange: _Exchange, config: PingConfig) -> None:  # type: ignore[type-arg]
    spacing, timeout, count = float(config.spacing), float(config.echo_timeout), config.count
    payload = exchange.cookie + bytes((i & 0xFF) for i in range(config.size - COOKIE_SIZE))
    first_seq = random.getrandbits(16)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_receive, sock, exchange, count, timeout)
        start = trio.current_time()
        for i in range(count):
            await trio.sleep_until(start + i * spacing)
            seq = (first_seq + i) & 0xFFFF
            echo = exchange.echoes[seq] = _Echo(seq)
            packet = _echo_request(exchange.version, exchange.ident, seq, payload)
            while True:
                echo.sent_at = trio.current_time()
                echo.sent_ns = time.time_ns()
                try:
                    sock.sendto(packet, sockaddr)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
                    continue
                except OSError as exc:
                    echo.send_error = exc
                break
            if exchange.kind == "dgram" and i == 0:
                try:  # the identifier the kernel gave this socket (its "port")
                    exchange.ident = sock.getsockname()[1]
                except OSError:
                    pass
        exchange.check_done(count)
        last = max(e.sent_at for e in exchange.echoes.values())
        with trio.move_on_at(last + timeout):
            await exchange.done.wait()
        nursery.cancel_scope.cancel()
    # Replies the kernel received in time but this process had no chance to read yet (it was
    # descheduled, the loop busy): their time stamps decide, not when we got round to them.
    _read_queued(sock, exchange, timeout, FINAL_READ)


async def _receive(sock: socket.socket, exchange: _Exchange, count: int, timeout: float) -> None:
    while True:
        more = _read_queued(sock, exchange, timeout, READ_BATCH)
        exchange.check_done(count)
        if more:  # a flood of ICMP on a raw socket must not starve the event loop
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.wait_readable(sock)  # POLLERR (the error queue) wakes it too


def _read_queued(sock: socket.socket, exchange: _Exchange, timeout: float, limit: int) -> bool:
    """Handle up to *limit* messages already queued, without waiting; whether more may be left."""
    for _ in range(limit):
        if exchange.kind == "dgram":
            _drain_error_queue(sock, exchange)
        try:
            data, ancillary, _, source = sock.recvmsg(RECEIVE_SIZE, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            continue  # a pending ICMP error reported here (it cleared); the error queue has it
        arrived_ns = _stamp(ancillary)
        if arrived_ns is None:
            exchange.kernel_stamps = False
            arrived_ns = time.time_ns()
        _handle(exchange, data, str(source[0]), arrived_ns, trio.current_time(), timeout)
    return True


def _handle(exchange: _Exchange, data: bytes, source: str, arrived_ns: int, now: float,
            timeout: float) -> None:
    version = exchange.version
    if version == 4 and exchange.kind == "raw":
        if len(data) < 20:
            return
        data = data[(data[0] & 0x0F) * 4:]  # the IP header comes with a raw IPv4 socket
    if len(data) < _ECHO.size:
        return
    type_, code, _, ident, seq = _ECHO.unpack_from(data)
    if type_ == ECHO_REPLY[version]:
        if exchange.kind == "raw" and (ident != exchange.ident or not _same(source, exchange.address)):
            return
        echo = exchange.echoes.get(seq)
        if echo is None or data[_ECHO.size:_ECHO.size + COOKIE_SIZE] != exchange.cookie:
            return
        if echo.rtt is not None or echo.late:
            exchange.duplicates += 1
            return
        rtt = (arrived_ns - echo.sent_ns) / 1e9
        waited = now - echo.sent_at
        if not 0 <= rtt <= waited + 0.05:  # the wall clock stepped: the loop's figure is safer
            rtt = waited
        if rtt > timeout:
            echo.late = True
        else:
            echo.rtt = rtt
    elif type_ in (UNREACHABLE[version], TIME_EXCEEDED[version]) and exchange.kind == "raw":
        quoted = _quoted_echo(version, data[8:], exchange)
        if quoted is not None and quoted in exchange.echoes:
            _note_error(exchange.echoes[quoted], type_, code, source)


def _quoted_echo(version: int, inner: bytes, exchange: _Exchange) -> int | None:
    """The sequence number of our echo request quoted in an ICMP error, if it is ours."""
    if version == 4:
        if len(inner) < 20 or inner[9] != socket.IPPROTO_ICMP:
            return None
        if socket.inet_ntop(socket.AF_INET, inner[16:20]) != exchange.address:
            return None
        inner = inner[(inner[0] & 0x0F) * 4:]
    else:
        if len(inner) < 40 or inner[6] != socket.IPPROTO_ICMPV6:
            return None  # (extension headers are not followed: we send none)
        if not _same(socket.inet_ntop(socket.AF_INET6, inner[24:40]), exchange.address):
            return None
        inner = inner[40:]
    if len(inner) < _ECHO.size:
        return None
    type_, _, _, ident, seq = _ECHO.unpack_from(inner)
    if type_ != ECHO_REQUEST[version] or ident != exchange.ident:
        return None
    return seq


def _drain_error_queue(sock: socket.socket, exchange: _Exchange) -> None:
    """ICMP errors about a datagram socket's requests: the request itself, the error, the reporter."""
    while True:
        try:
            data, ancillary, _, _ = sock.recvmsg(RECEIVE_SIZE, _ERR_ANCILLARY, MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        for level, kind, payload in ancillary:
            if kind not in (IP_RECVERR, IPV6_RECVERR) or level not in (socket.IPPROTO_IP, socket.IPPROTO_IPV6):
                continue
            if len(payload) < _EXTENDED_ERR.size:
                continue
            _, origin, type_, code, _, _, _ = _EXTENDED_ERR.unpack_from(payload)
            if origin not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6) or len(data) < _ECHO.size:
                continue
            _, _, _, _, seq = _ECHO.unpack_from(data)
            echo = exchange.echoes.get(seq)
            if echo is None or data[_ECHO.size:_ECHO.size + COOKIE_SIZE] != exchange.cookie:
                continue
            _note_error(echo, type_, code, _offender(payload[_EXTENDED_ERR.size:]))


def _note_error(echo: _Echo, type_: int, code: int, reporter: str) -> None:
    if echo.rtt is None and echo.error is None:
        echo.error = (type_, code, reporter)


def _offender(raw: bytes) -> str:
    """The address in the ``sockaddr`` that follows ``sock_extended_err`` (SO_EE_OFFENDER)."""
    if len(raw) >= 8 and int.from_bytes(raw[:2], "little") == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if len(raw) >= 24 and int.from_bytes(raw[:2], "little") == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return "?"


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
            seconds, nanos = _TIMESPEC.unpack_from(payload)
            return seconds * 1_000_000_000 + nanos
    return None


def _echo_request(version: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An echo request; the IPv4 checksum is ours to compute (the kernel fills ICMPv6's)."""
    header = _ECHO.pack(ECHO_REQUEST[version], 0, 0, ident, seq)
    if version == 6:
        return header + payload
    checksum = _checksum(header + payload)
    return _ECHO.pack(ECHO_REQUEST[version], 0, checksum, ident, seq) + payload


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# ---- the verdict -------------------------------------------------------------------------------

def _judge(config: PingConfig, exchange: _Exchange) -> Observation:
    echoes = list(exchange.echoes.values())
    count = config.count
    rtts = [e.rtt for e in echoes if e.rtt is not None]
    received = len(rtts)
    loss = (count - received) / count
    details: dict[str, str | int | float | bool | None] = {
        "address": exchange.address, "socket": exchange.kind,
        "sent": sum(1 for e in echoes if e.send_error is None), "received": received,
        "loss": round(loss, 6),
        "timestamps": "kernel" if exchange.kernel_stamps else "process",
    }
    value = None
    if rtts:
        mean = sum(rtts) / received
        details.update({
            "rtt_min_s": min(rtts), "rtt_avg_s": mean, "rtt_max_s": max(rtts),
            "rtt_mdev_s": math.sqrt(max(0.0, sum(r * r for r in rtts) / received - mean * mean)),
        })
        value = statistics.median(rtts)
    errors = [e.error for e in echoes if e.error is not None]
    send_errors = [e.send_error for e in echoes if e.send_error is not None]
    late = sum(1 for e in echoes if e.late)
    if errors:
        details["errors"] = len(errors)
        details["error_from"] = errors[-1][2]
    if late:
        details["late"] = late
    if exchange.duplicates:
        details["duplicates"] = exchange.duplicates
    if send_errors:
        details["send_errors"] = len(send_errors)

    target = exchange.address if exchange.address == config.host else f"{config.host} ({exchange.address})"
    if received and (config.max_loss is None or loss <= config.max_loss):
        return Observation.ok(value, details=details)
    if received:
        return Observation.fail(
            "packet_loss", f"{target}: {_percent(loss)} loss ({count - received} of {count} echoes "
            f"unanswered), more than max_loss = {_percent(config.max_loss or 0.0)}",
            value=value, details=details)
    if errors:
        type_, code, reporter = errors[-1]
        version = exchange.version
        if type_ == TIME_EXCEEDED[version]:
            return Observation.fail("ttl_exceeded", f"{target}: time to live exceeded in transit "
                                    f"(reported by {reporter}; {len(errors)} of {count} echoes)",
                                    details=details)
        words = UNREACHABLE_WORDS[version].get(code, f"destination unreachable, code {code}")
        failure = "net_unreachable" if code in NET_CODES[version] else "host_unreachable"
        return Observation.fail(failure, f"{target}: ICMP{'v6' if version == 6 else ''} {words} "
                                f"from {reporter} ({len(errors)} of {count} echoes)", details=details)
    if send_errors and len(send_errors) == len(echoes):
        exc = send_errors[-1]
        reason = _strerror(exc)
        if exc.errno in (errno.ENETUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            return Observation.fail("no_route", f"{target}: no route from this host ({reason})",
                                    attribution="unknown", details=details)
        if exc.errno == errno.EHOSTUNREACH:
            return Observation.fail("host_unreachable", f"{target}: {reason} (neighbour discovery "
                                    "got no answer)", details=details)
        return Observation.error("send_failed", f"cannot send an echo request to {target}: {reason}",
                                 details=details)
    unanswered = f"{count} echo request{'s' if count > 1 else ''}"
    why = f" ({late} answered too late)" if late else ""
    return Observation.fail("no_reply", f"{target}: no reply to {unanswered} within "
                            f"{config.echo_timeout} each{why}", details=details)


# ---- small helpers -----------------------------------------------------------------------------

def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _numeric(host: str) -> tuple:  # type: ignore[type-arg]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.getaddrinfo(host, None, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)[0][4]


def _same(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.split("%", 1)[0]) == ipaddress.ip_address(b.split("%", 1)[0])
    except ValueError:
        return a == b


def _percent(share: float) -> str:
    return f"{share * 100:.4g}%"


def _strerror(exc: OSError) -> str:
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)


@hookimpl
def probecore_add_probes(registry):  # type: ignore[no-untyped-def]
    registry.add(PingProbe)
