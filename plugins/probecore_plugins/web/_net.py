"""Name resolution (dnspython, /etc/hosts), TCP connect, TLS contexts and certificates, keep-alive pool."""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import h11
import trio

from probecore import Attribution

from .._client import ResponseHeads
from .._client import tls_context as shared_tls_context
from ._config import parse_nameserver
from ._stream import TimedSocketStream

HOSTS_FILE = "/etc/hosts"
DNS_LIFETIME = 5.0
DNS_MARGIN = 0.2        # left of the attempt's deadline for the failure record
DNS_MIN_LIFETIME = 0.1


class Failed(Exception):
    """An attempt ends with a failure record; raised from deep inside, turned into an Observation."""

    def __init__(self, code: str, message: str, attribution: Attribution = "provider", *,
                 details: dict[str, Any] | None = None, error: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.attribution: Attribution = attribution
        self.details = details or {}
        self.error = error


# ---- name resolution --------------------------------------------------------------------------

@dataclass
class _Hosts:
    mtime: float = -1.0
    names: dict[str, list[str]] = field(default_factory=dict)


_hosts = _Hosts()


def hosts_lookup(name: str, path: str = HOSTS_FILE) -> list[str]:
    """Addresses for *name* in the hosts file (re-read when it changes), as the system resolver would."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return []
    if mtime != _hosts.mtime:
        names: dict[str, list[str]] = {}
        try:
            with open(path, encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    fields = line.split("#", 1)[0].split()
                    if len(fields) < 2:
                        continue
                    address = fields[0].split("%", 1)[0]
                    try:
                        ipaddress.ip_address(address)
                    except ValueError:
                        continue
                    for alias in fields[1:]:
                        names.setdefault(alias.lower().rstrip("."), []).append(address)
        except OSError:
            return []
        _hosts.names, _hosts.mtime = names, mtime
    return list(_hosts.names.get(name.rstrip("."), ()))


_resolvers: dict[tuple[str, ...], Any] = {}


def _resolver(nameservers: Sequence[str]) -> Any:
    key = tuple(nameservers)
    resolver = _resolvers.get(key)
    if resolver is None:
        import dns.asyncresolver  # imported on first use: it costs ~50 ms at start-up
        import dns.nameserver
        import dns.resolver

        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(s)) for s in nameservers]
        else:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration as exc:
                raise Failed("dns_config", f"no DNS resolver configured on this host: {exc}",
                             error=True) from None
        resolver.cache = None  # every attempt measures a real lookup
        resolver.lifetime = DNS_LIFETIME
        _resolvers[key] = resolver
    return resolver


async def resolve(name: str, ip_version: int | str, nameservers: Sequence[str],
                  attribution: Attribution) -> tuple[list[str], str]:
    """Addresses of *name* (IPv6 before IPv4 for ``"any"``) and how they were found."""
    if not nameservers:
        listed = hosts_lookup(name)
        if ip_version != "any":
            listed = [a for a in listed if ipaddress.ip_address(a).version == ip_version]
        if listed:
            return _order(listed), "hosts"
    import dns.exception
    import dns.resolver

    resolver = _resolver(nameservers)
    # Within the attempt's own deadline: a name server that never answers (or answers noise,
    # which dnspython ignores) is a `dns` failure with its attribution, not the scheduler's timeout.
    lifetime = min(DNS_LIFETIME, max(DNS_MIN_LIFETIME, (trio.current_effective_deadline()
                                                         - trio.current_time()) - DNS_MARGIN))
    types: tuple[str, ...] = ("A",) if ip_version == 4 else ("AAAA",) if ip_version == 6 else ("AAAA", "A")
    answers: dict[str, list[str]] = {}
    problems: dict[str, BaseException] = {}

    async def lookup(rdtype: str) -> None:
        # dnspython may overrun its lifetime by a retry's back-off: our own scope is exact.
        with trio.move_on_after(lifetime) as scope:
            try:
                answer = await resolver.resolve(name, rdtype, search=False, lifetime=lifetime)
                answers[rdtype] = [r.to_text() for r in answer]
            except (dns.exception.DNSException, OSError) as exc:
                problems[rdtype] = exc
        if scope.cancelled_caught:
            problems[rdtype] = dns.exception.Timeout(timeout=lifetime)

    if len(types) == 1:
        await lookup(types[0])
    else:
        async with trio.open_nursery() as nursery:
            for rdtype in types:
                nursery.start_soon(lookup, rdtype)
    addresses = [a for t in types for a in answers.get(t, ())]
    if addresses:
        return _order(addresses), "dns"
    # Report the most telling problem: NXDOMAIN beats "no AAAA record".
    exc = next((e for e in problems.values() if isinstance(e, dns.resolver.NXDOMAIN)), None) \
        or next((e for e in problems.values() if not isinstance(e, dns.resolver.NoAnswer)), None) \
        or next(iter(problems.values()), None)
    wanted = " or ".join(types) + " record"
    if isinstance(exc, dns.resolver.NXDOMAIN):
        reason = "no such domain (NXDOMAIN)"
    elif isinstance(exc, dns.resolver.NoAnswer) or exc is None:
        reason = f"no {wanted}"
    elif isinstance(exc, dns.exception.Timeout):  # LifetimeTimeout is one
        reason = f"no answer within {lifetime:.3g}s"
    elif isinstance(exc, dns.resolver.NoNameservers):
        reason = "every name server failed (SERVFAIL or refused)"
    else:
        reason = str(exc) or type(exc).__name__
    raise Failed("dns", f"cannot resolve {name}: {reason}", attribution)


def _order(addresses: list[str]) -> list[str]:
    """IPv6 and IPv4 interleaved, IPv6 first (RFC 8305's order, tried one at a time)."""
    unique = list(dict.fromkeys(addresses))
    six = [a for a in unique if ":" in a]
    four = [a for a in unique if ":" not in a]
    ordered: list[str] = []
    for i in range(max(len(six), len(four))):
        ordered += six[i:i + 1] + four[i:i + 1]
    return ordered


# ---- TCP connect -------------------------------------------------------------------------------

async def connect(addresses: list[str], port: int, timeout: float) -> tuple[TimedSocketStream, str, float, bool]:
    """Connect to each address in turn: (stream, address, round-trip estimate, kernel-measured?).

    The estimate is the kernel's RTT sample of the handshake that succeeded (or, without
    ``TCP_INFO``, that connect's duration); failed addresses before it count in the ``connect``
    phase but not in the estimate.
    """
    errors: list[tuple[str, OSError | None]] = []
    for address in addresses:
        try:
            with trio.move_on_after(timeout):
                stream, rtt, kernel = await TimedSocketStream.connect(address, port)
                return stream, address, rtt, kernel
            errors.append((address, None))  # our connect_timeout
        except OSError as exc:
            errors.append((address, exc))
    raise _connect_failure(errors, port, timeout)


def _connect_failure(errors: list[tuple[str, OSError | None]], port: int, timeout: float) -> Failed:
    tried = ", ".join(a for a, _ in errors)
    detail = {"address": errors[-1][0]} if errors else {}
    codes = [None if e is None else e.errno for _, e in errors]
    if codes and all(c == errno.ECONNREFUSED for c in codes):
        return Failed("connect_refused", f"connect to {tried} port {port}: connection refused",
                      details=detail)
    if codes and all(c is None or c == errno.ETIMEDOUT for c in codes):
        return Failed("connect_timeout", f"connect to {tried} port {port}: no answer within "
                      f"{_seconds(timeout)}", details=detail)
    last = next(e for _, e in reversed(errors) if e is not None)
    reason = os.strerror(last.errno).lower() if last.errno else str(last)
    # No route from here: most likely this host's own network, so nobody's fault yet.
    attribution: Attribution = "unknown" if last.errno in (errno.ENETUNREACH, errno.EADDRNOTAVAIL,
                                                           errno.EAFNOSUPPORT) else "provider"
    return Failed("connect_failed", f"connect to {tried} port {port}: {reason}", attribution,
                  details=detail)


def _seconds(value: float) -> str:
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


# ---- TLS ---------------------------------------------------------------------------------------

def tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """The probe's TLS context: *ca_file* instead of the system store, offering HTTP/1.1."""
    try:
        return shared_tls_context(verify, ca_file, alpn=("http/1.1",))
    except (OSError, ssl.SSLError) as exc:
        raise Failed("tls_config", f"cannot load ca_file {ca_file}: {exc}", error=True) from None


async def tls_handshake(stream: TimedSocketStream, context: ssl.SSLContext,
                        server_hostname: str) -> trio.SSLStream[TimedSocketStream]:
    tls = trio.SSLStream(stream, context, server_hostname=server_hostname, https_compatible=True)
    try:
        await tls.do_handshake()
    except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
        stream.close()
        cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or str(cause)
            raise Failed("tls", f"TLS certificate of {server_hostname} not accepted: {reason}") from None
        if isinstance(cause, ssl.SSLError):
            reason = cause.reason or str(cause)
            raise Failed("tls", f"TLS handshake with {server_hostname} failed: {reason}") from None
        raise Failed("tls", f"TLS handshake with {server_hostname} failed: connection closed") from None
    return tls


def certificate_details(tls: trio.SSLStream[Any], verified: bool) -> dict[str, Any]:
    """TLS version and the peer certificate's expiry, also when it was not verified."""
    details: dict[str, Any] = {"tls_version": tls.version(), "tls_verify": verified}
    der = tls.getpeercert(binary_form=True)
    not_after = not_after_of(der) if der else None
    if not_after is not None:
        details["cert_not_after"] = not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
        details["cert_days_left"] = round((not_after.timestamp() - time.time()) / 86400.0, 2)
    return details


def not_after_of(der: bytes) -> datetime | None:
    """The ``notAfter`` of a DER X.509 certificate, read with a minimal DER walk (no dependency)."""
    def header(pos: int) -> tuple[int, int, int]:
        tag, length = der[pos], der[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(der[pos:pos + count], "big")
            pos += count
        return tag, pos, length

    try:
        _, pos, _ = header(0)                 # Certificate
        _, pos, _ = header(pos)               # TBSCertificate
        tag, body, length = header(pos)
        if tag == 0xA0:                       # [0] version
            pos = body + length
            tag, body, length = header(pos)
        pos = body + length                   # serialNumber
        for _ in range(2):                    # signature, issuer
            _, body, length = header(pos)
            pos = body + length
        _, body, _ = header(pos)              # validity
        _, start, length = header(body)       # notBefore
        tag, start, length = header(start + length)  # notAfter
        text = der[start:start + length].decode("ascii")
        if tag == 0x17:                       # UTCTime YYMMDDHHMMSSZ
            year = int(text[:2])
            text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
        return datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


# ---- connections -------------------------------------------------------------------------------

@dataclass
class Connection:
    raw: TimedSocketStream
    stream: Any  # the raw stream, or a trio.SSLStream over it
    heads: ResponseHeads  # the h11 connection, its response heads bounded
    address: str
    rtt_s: float
    kernel_rtt: bool
    key: tuple[Any, ...]
    tls_details: dict[str, Any] | None = None
    idle_since: float = 0.0
    reused: bool = False

    @property
    def http(self) -> h11.Connection:
        return self.heads.http

    def close(self) -> None:
        """Close at once, without a TLS close_notify: the probe has what it needs."""
        self.raw.close()


MAX_IDLE = 300.0
MAX_IDLE_PER_KEY = 8

_POOL: trio.lowlevel.RunVar[Pool] = trio.lowlevel.RunVar("probecore_web_pool")


class Pool:
    """Idle keep-alive connections of one trio run (``keep_alive = true`` checks only).

    It lives in a RunVar, so it is per run; a system task closes what is left when the run ends.
    """

    def __init__(self) -> None:
        self.idle: dict[tuple[Any, ...], list[Connection]] = {}

    @classmethod
    def current(cls) -> Pool:
        try:
            return _POOL.get()
        except LookupError:
            pool = cls()
            _POOL.set(pool)
            trio.lowlevel.spawn_system_task(pool._close_at_exit, name="probecore web pool")
            return pool

    async def _close_at_exit(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self.close_all()

    def take(self, key: tuple[Any, ...]) -> Connection | None:
        idle = self.idle.get(key)
        now = trio.current_time()
        while idle:
            conn = idle.pop()
            if now - conn.idle_since <= MAX_IDLE and _still_open(conn):
                conn.reused = True
                return conn
            conn.close()
        return None

    def put(self, conn: Connection) -> None:
        conn.idle_since = trio.current_time()
        idle = self.idle.setdefault(conn.key, [])
        idle.append(conn)
        while len(idle) > MAX_IDLE_PER_KEY:
            idle.pop(0).close()

    def close_all(self) -> None:
        for idle in self.idle.values():
            for conn in idle:
                conn.close()
        self.idle.clear()


def _still_open(conn: Connection) -> bool:
    """An idle connection has nothing to read; EOF or stray bytes (a TLS alert) mean it is dead."""
    try:
        poller = select.poll()
        poller.register(conn.raw.socket.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False
