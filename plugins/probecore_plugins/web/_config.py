"""The ``web`` check's keys, their validation, and the plan derived from them once per check."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from probecore import Duration, ProbeConfig, format_duration

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}
_STATUS_SPEC = re.compile(r"^\s*(?:([1-5])xx|(\d{3})\s*-\s*(\d{3})|(\d{3}))\s*$", re.IGNORECASE)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

Operator = Literal["<", "<=", ">=", ">"]


class Threshold(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``threshold = { op = "<=", value = "1.5s" }``: what ``processing`` must satisfy."""

    op: Operator
    value: Duration

    def holds(self, seconds: float) -> bool:
        limit = float(self.value)
        if self.op == "<":
            return seconds < limit
        if self.op == "<=":
            return seconds <= limit
        if self.op == ">=":
            return seconds >= limit
        return seconds > limit

    def __str__(self) -> str:
        return f"{self.op} {format_duration(self.value)}"


class WebConfig(ProbeConfig):
    """Keys of a ``probe = "web"`` check (see the package docstring for their meaning)."""

    url: Annotated[str, msgspec.Meta(min_length=1)]
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    headers: dict[str, str] = {}
    body: str | None = None
    # Where to connect
    resolve: str | None = None
    ip_version: Literal[4, 6, "any"] = "any"
    nameservers: list[str] = []
    dns_attribution: Literal["provider", "customer", "third_party", "unknown"] = "third_party"
    connect_timeout: Duration = Duration(5.0)
    keep_alive: bool = False
    # TLS
    tls_verify: bool = True
    ca_file: str | None = None
    min_cert_days: Annotated[float, msgspec.Meta(ge=0)] | None = None
    # Expectations
    status: list[int | str] = msgspec.field(default_factory=lambda: ["2xx"])
    body_contains: str | list[str] = []
    body_not_contains: str | list[str] = []
    body_regex: str | list[str] = []
    header_match: dict[str, str] = {}
    max_body_bytes: Annotated[int, msgspec.Meta(ge=0, le=1 << 30)] = DEFAULT_MAX_BODY
    follow_redirects: bool = True
    max_redirects: Annotated[int, msgspec.Meta(ge=0, le=50)] = 10
    threshold: Threshold | None = None
    server_timing: bool | str = False

    def __post_init__(self) -> None:
        # Messages name the key themselves: msgspec gives no path for errors raised here.
        url = parse_url(self.url)
        if self.resolve is not None:
            try:
                address = ipaddress.ip_address(self.resolve)
            except ValueError:
                raise ValueError(f'key "resolve": expected an IP address like "203.0.113.10", '
                                 f'got "{self.resolve}"') from None
            if self.ip_version != "any" and address.version != self.ip_version:
                raise ValueError(f'key "resolve": {self.resolve} is not an IPv{self.ip_version} '
                                 f"address (ip_version = {self.ip_version})")
        literal = _literal(url.host)
        if literal is not None and self.ip_version != "any" and literal.version != self.ip_version:
            raise ValueError(f'key "url": {url.host} is not an IPv{self.ip_version} address '
                             f"(ip_version = {self.ip_version})")
        for server in self.nameservers:
            parse_nameserver(server)
        if float(self.connect_timeout) <= 0:
            raise ValueError('key "connect_timeout": expected a duration longer than zero')
        if not self.status:
            raise ValueError('key "status": expected at least one status code or range')
        for spec in self.status:
            status_range(spec)
        for pattern in _strings(self.body_regex):
            _compile(pattern, "body_regex")
        for name, pattern in self.header_match.items():
            if not _TOKEN.match(name):
                raise ValueError(f'key "header_match": "{name}" is not a header name')
            _compile(pattern, f"header_match.{name}")
        for name, value in self.headers.items():
            if not _TOKEN.match(name):
                raise ValueError(f'key "headers": "{name}" is not a header name')
            if "\r" in value or "\n" in value:
                raise ValueError(f'key "headers.{name}": a header value cannot contain a line break')
        if self.body is not None and self.method in ("GET", "HEAD", "OPTIONS"):
            raise ValueError(f'key "body": a {self.method} request has no body (use method = "POST")')
        if self.ca_file is not None and not self.tls_verify:
            raise ValueError('key "ca_file": has no effect with tls_verify = false')
        if isinstance(self.server_timing, str) and not _TOKEN.match(self.server_timing):
            raise ValueError(f'key "server_timing": expected true, false or a metric name, '
                             f'got "{self.server_timing}"')


@dataclass(frozen=True)
class Url:
    scheme: str
    host: str          # without brackets, lower case
    port: int
    target: str        # path and query, as sent in the request line
    host_header: str   # host[:port] as the Host header carries it

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    def show(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.target}"


def parse_url(text: str, key: str = "url") -> Url:
    """Split an ``http``/``https`` URL; a ``ValueError`` names *key* and what is wrong."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f'key "{key}": not a valid URL ({exc}): "{text}"') from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f'key "{key}": expected an http:// or https:// URL, got "{text}"')
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f'key "{key}": the URL has no host name: "{text}"')
    if parts.username is not None or parts.password is not None:
        raise ValueError(f'key "{key}": user names and passwords do not belong in a URL '
                         "(profiles hold no secrets)")
    if any(c in text for c in " \r\n\t"):
        raise ValueError(f'key "{key}": the URL contains white space: "{text}"')
    if port == 0:
        raise ValueError(f'key "{key}": port 0 is not a port: "{text}"')
    port = port or DEFAULT_PORTS[scheme]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == DEFAULT_PORTS[scheme] else f"{shown}:{port}"
    return Url(scheme, host, port, target, host_header)


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"192.0.2.53"``, ``"192.0.2.53:5353"``, ``"[2001:db8::53]:5353"`` → (address, port)."""
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f'key "nameservers": expected an address[:port], got "{text}"')
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, digits = text.partition(":")
        if not digits.isdigit():
            raise ValueError(f'key "nameservers": expected an address[:port], got "{text}"')
        port = int(digits)
    if _literal(host) is None or not 0 < port < 65536:
        raise ValueError(f'key "nameservers": expected an IP address with an optional port, got "{text}"')
    return host, port


def status_range(spec: int | str) -> tuple[int, int]:
    """``200`` → (200, 200); ``"2xx"`` → (200, 299); ``"200-204"`` → (200, 204)."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        if 100 <= spec <= 599:
            return spec, spec
        raise ValueError(f'key "status": {spec} is not an HTTP status code (100 to 599)')
    match = _STATUS_SPEC.match(str(spec))
    if match is None:
        raise ValueError(f'key "status": expected a code (200), a class ("2xx") or a range '
                         f'("200-299"), got "{spec}"')
    if match[1]:
        base = int(match[1]) * 100
        return base, base + 99
    if match[2]:
        low, high = int(match[2]), int(match[3])
    else:
        low = high = int(match[4])
    if not 100 <= low <= high <= 599:
        raise ValueError(f'key "status": "{spec}" is not a range of status codes (100 to 599)')
    return low, high


def describe_statuses(specs: list[int | str]) -> str:
    return ", ".join(str(s) for s in specs)


def _strings(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _compile(pattern: str, key: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f'key "{key}": not a valid regular expression ({exc}): "{pattern}"') from None


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class Plan:
    """Everything derived from a config once, so an attempt does no parsing."""

    url: Url
    statuses: tuple[tuple[int, int], ...]
    contains: tuple[str, ...]
    not_contains: tuple[str, ...]
    regexes: tuple[re.Pattern[str], ...]
    header_rules: tuple[tuple[str, str, re.Pattern[str]], ...]  # (lower name, shown name, regex)
    extra_headers: tuple[tuple[str, str], ...]
    body: bytes | None
    user_host: str | None  # a Host header given in ``headers``
    needs_body: bool

    def status_ok(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.statuses)


def make_plan(config: WebConfig) -> Plan:
    url = parse_url(config.url)
    extra: list[tuple[str, str]] = []
    user_host = None
    for name, value in config.headers.items():
        if name.lower() == "host":
            user_host = value
        elif name.lower() not in ("content-length", "transfer-encoding", "connection"):
            extra.append((name, value))
    contains = tuple(_strings(config.body_contains))
    not_contains = tuple(_strings(config.body_not_contains))
    regexes = tuple(_compile(p, "body_regex") for p in _strings(config.body_regex))
    rules = tuple((name.lower(), name, _compile(p, f"header_match.{name}"))
                  for name, p in config.header_match.items())
    return Plan(
        url=url, statuses=tuple(status_range(s) for s in config.status), contains=contains,
        not_contains=not_contains, regexes=regexes, header_rules=rules, extra_headers=tuple(extra),
        body=config.body.encode() if config.body is not None else None, user_host=user_host,
        needs_body=bool(contains or not_contains or regexes))
