"""``probe = "dns"``: does a name point where the contract assumes, at every authoritative server?

Contract 001 §2.2.2.3 excludes downtime caused by the domain's DNS binding going wrong "for the
customer's or other reasons". This probe asks the zone's authoritative servers directly (not a
cache) and states an unambiguous verdict: ``ok`` means the binding points where it should;
``fail`` with code ``mismatch`` or ``nxdomain`` means it points elsewhere (or nowhere), and
``details["binding"]`` says the same in one word for every record.

Keys
  ``name``            the name to query (required), e.g. ``"www.example.cn"``.
  ``type``            record type, default ``"A"`` (``AAAA``, ``CNAME``, ``MX``, ``TXT`` … allowed).
  ``servers``         authoritative servers to query: ``"host"``, ``"host:port"``, ``"[v6]:port"``.
                      A host name is resolved by the system resolver (its first IPv4 address).
  ``zone``            discover the zone's authoritative servers from its ``NS`` records (their
                      IPv4 addresses), through ``resolvers``. Given with ``servers``, the
                      discovered ones are queried after the listed ones.
                      With neither ``servers`` nor ``zone``, the zone of ``name`` is found through
                      ``resolvers`` (the closest enclosing SOA) and its servers discovered.
  ``resolvers``       recursive resolvers (IP addresses, optional ``:port``) used for discovery
                      and for ``dnssec``; default: the system's (``/etc/resolv.conf``).
  ``port``            port of servers, discovered servers and resolvers given without one (53).
  ``server_timeout``  time allowed to each server for its answer, UDP and TCP fallback together
                      (default ``"2s"``). Servers are asked one after another, so the check's
                      ``timeout`` should exceed servers × server_timeout.
  ``expect``          ``{ addresses = [...], match = "equal", cname = "...", rcode = "NOERROR" }``:
      ``addresses``   the expected record data of ``type`` (IP addresses for A/AAAA; presentation
                      form for other types, e.g. ``"10 mx.example.cn."`` for MX), compared as sets
                      with the data at the end of the CNAME chain.
      ``match``       how ``addresses`` (E) must relate to the answer (A):
                      ``equal`` (default) A = E; ``subset`` E ⊆ A (every expected address is
                      answered, extra ones allowed); ``superset`` E ⊇ A and A not empty (every
                      answered address is expected, some may be missing); ``any`` E ∩ A not empty.
      ``cname``       the CNAME chain starting at ``name`` must end at this name (e.g. the
                      provider's vhost name). A chain that leaves the servers' zones is fine then;
                      check the target's own records with a second dns check.
      ``rcode``       the expected response code (default ``NOERROR``; ``NXDOMAIN`` checks that a
                      name is gone).
                      Without ``addresses`` and ``cname``, a ``NOERROR`` answer must hold at least
                      one record of ``type`` (no records means the name points nowhere).
  ``consistent``      ``true``: all answering servers must give the same answer (rcode, chain end,
                      record set) and the same SOA serial (one more query per server).
  ``min_ttl``         the answer's TTL (smallest in the chain) must be at least this, e.g. ``"5m"``.
  ``dnssec``          ``true``: ask each of ``resolvers`` (which must validate) with DO set; each
                      must answer with the AD flag. The resolvers' answers are judged only for
                      validation, not against ``expect`` (a cache may lag the zone).
  ``zone_owner``      who runs the zone's contents: ``customer`` (default; contract 001),
                      ``provider`` or ``third_party``.
  ``nameserver_owner``  who runs the authoritative servers; default: ``zone_owner``.

Phases (in this order): ``discover`` (only when servers are discovered or a server is given by
name), ``query <server>`` for each server, ``soa <server>`` for each answering server (only with
``consistent``), ``validate <resolver>`` for each resolver (only with ``dnssec``). ``<server>`` is
``host:port`` as listed, or ``address:port`` for discovered servers.

Headline value: seconds of the slowest authoritative answer (``None`` if no server answered).
UDP first (EDNS, 1232-byte payload); a truncated answer is asked again over TCP.

Details: ``binding`` (``as_expected`` · ``elsewhere`` · ``unknown``), ``servers`` (queried, in
order), ``answers`` (``server=data`` per server, ``; ``-separated; data sorted and
comma-joined, or ``NXDOMAIN``/``SERVFAIL``…, ``(none)`` for no records, ``!timeout`` … for a
server that gave no answer), ``rcode``, ``cname`` (the chain's end, if there was a chain), ``ttl``
(smallest), ``tcp_fallback`` (servers whose UDP answer was truncated), ``serials``
(``consistent``), ``ad`` (``dnssec``), ``zone`` and ``nameservers`` (when discovered). ``rcode``
and ``cname`` are one value when every server agrees, else ``server=value`` per server.

Failure codes and attribution. The record carries the most telling failure (first in this
list) and its message names every problem found:
  ``nxdomain``, ``mismatch``     the binding points nowhere / elsewhere (wrong or missing
                                 addresses, chain ends elsewhere, no records, other rcode than
                                 expected, CNAME loop) → ``zone_owner``;
  ``inconsistent``, ``ttl_low``  servers disagree / TTL below ``min_ttl`` → ``zone_owner``;
  ``insecure``, ``bogus``        no AD flag / the resolver found the signatures bad (Extended
                                 DNS Error) → ``zone_owner`` (whoever signs the zone);
  ``servfail``, ``refused``, ``bad_rcode``, ``malformed``, ``timeout``, ``connect_refused``
  (nothing listens: ICMP port unreachable or TCP reset), ``connect_failed`` (also: the TCP
  connection closed mid-answer; answers are bounded by DNS itself: 64 KiB, one message)
                                 an authoritative server failed → ``nameserver_owner``. The rule:
                                 a failing server is the fault of whoever runs the servers, and
                                 that is by default whoever runs the zone. Contract 001's customer
                                 runs the zone (at a DNS host of their choice), so by default a
                                 dead nameserver excludes web downtime like a wrong record does;
                                 if the provider hosts the zone, say ``zone_owner = "provider"``;
                                 if the customer edits the records on the provider's nameservers,
                                 say ``nameserver_owner = "provider"``.
  ``servfail`` from a validating resolver without a DNSSEC reason, ``resolve_failed`` (a
  listed server's host name does not resolve) → ``unknown``.
  ``error`` outcomes (attribution ``probe``): ``discovery_failed`` (the resolvers could not find
  the zone's servers: timeout, refusal, SERVFAIL — from the probe's side a broken resolver cannot
  be told from a broken zone; list ``servers`` to judge nameserver outages), ``resolver_timeout``,
  ``resolver_unreachable`` (a ``dnssec`` resolver did not answer).
A ``nxdomain`` or ``no_nameservers`` (NS names without addresses) found during discovery is
attributed to ``zone_owner``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Literal

import dns.asyncbackend
import dns.asyncquery
import dns.asyncresolver
import dns.edns
import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import msgspec
import trio

from probecore import CheckContext, Duration, Observation, ProbeConfig, ProbeKind, hookimpl

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Owner = Literal["customer", "provider", "third_party"]
Match = Literal["equal", "subset", "superset", "any"]
Scalar = str | int | float | bool | None

HOST_NAME = re.compile(r"(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                       r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?")
EDNS_PAYLOAD = 1232  # DNS flag day 2020: no IP fragmentation
# Extended DNS Errors that mean "the signatures are wrong", not "could not reach the servers".
DNSSEC_EDE = {1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 25, 27}

# Headline order: the binding verdict first (the core's binding rule reads it), then the rest.
CODE_ORDER = ("nxdomain", "mismatch", "inconsistent", "ttl_low", "insecure", "bogus", "servfail",
              "refused", "bad_rcode", "malformed", "timeout", "connect_refused", "connect_failed",
              "resolve_failed", "no_nameservers")
ELSEWHERE = {"nxdomain", "mismatch"}
ZONE_CODES = {"nxdomain", "mismatch", "inconsistent", "ttl_low", "insecure", "bogus", "no_nameservers"}


class Expect(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``expect`` table of a dns check (see the module docstring)."""

    addresses: list[str] | None = None
    match: Match = "equal"
    cname: str | None = None
    rcode: str = "NOERROR"


class DnsConfig(ProbeConfig):
    name: NonEmpty
    type: NonEmpty = "A"
    servers: list[NonEmpty] = []
    zone: str | None = None
    resolvers: list[NonEmpty] = []
    port: Port = 53
    server_timeout: Duration = Duration(2.0)
    expect: Expect = Expect()
    consistent: bool = False
    min_ttl: Duration | None = None
    dnssec: bool = False
    zone_owner: Owner = "customer"
    nameserver_owner: Owner | None = None

    def __post_init__(self) -> None:
        # Every value is parsed once here so that a profile with a typo fails at load time;
        # messages start with the key, as the profile loader shows them after the check's name.
        _plan(self)


# ---- the parsed config ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Server:
    label: str            # as shown in phases and details: host:port
    host: str             # as written (a name or an address)
    port: int
    address: str | None   # None until a host name is resolved


@dataclass(frozen=True)
class _Plan:
    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    servers: tuple[_Server, ...]
    zone: dns.name.Name | None
    resolvers: tuple[_Server, ...]
    expected: frozenset[dns.rdata.Rdata] | None
    cname: dns.name.Name | None
    rcode: dns.rcode.Rcode

    @property
    def shown(self) -> str:
        return f"{_text(self.name)} {dns.rdatatype.to_text(self.rdtype)}"


def _plan(config: DnsConfig) -> _Plan:
    def bad(key: str, problem: str) -> ValueError:
        return ValueError(f'key "{key}": {problem}')

    try:
        name = dns.name.from_text(config.name)
    except dns.exception.DNSException as exc:
        raise bad("name", f'"{config.name}" is not a valid domain name ({exc})') from None
    try:
        rdtype = dns.rdatatype.from_text(config.type.upper())
    except dns.exception.DNSException:
        rdtype = None
    if rdtype is None or dns.rdatatype.is_metatype(rdtype) or rdtype == dns.rdatatype.NONE:
        raise bad("type", f'expected a record type like "A", "AAAA", "CNAME", "MX" or "TXT", '
                          f'got "{config.type}"')
    servers = tuple(_parse_server(text, config.port, f"servers.{i}")
                    for i, text in enumerate(config.servers))
    resolvers = tuple(_parse_server(text, config.port, f"resolvers.{i}", address_only=True)
                      for i, text in enumerate(config.resolvers))
    zone = None
    if config.zone is not None:
        try:
            zone = dns.name.from_text(config.zone)
        except dns.exception.DNSException as exc:
            raise bad("zone", f'"{config.zone}" is not a valid domain name ({exc})') from None
        if not name.is_subdomain(zone):
            raise bad("zone", f'"{config.zone}" does not contain the name "{config.name}"')
    expect = config.expect
    expected = None
    if expect.addresses is not None:
        parsed = []
        for i, text in enumerate(expect.addresses):
            try:
                parsed.append(dns.rdata.from_text(dns.rdataclass.IN, rdtype, text, origin=dns.name.root,
                                                  relativize=False))
            except (dns.exception.DNSException, ValueError) as exc:
                if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    what, why = f"an IPv{4 if rdtype == dns.rdatatype.A else 6} address", ""
                else:
                    what, why = f"{dns.rdatatype.to_text(rdtype)} record data", f" ({exc})"
                raise bad(f"expect.addresses.{i}", f'expected {what}, got "{text}"{why}') from None
        expected = frozenset(parsed)
    cname = None
    if expect.cname is not None:
        try:
            cname = dns.name.from_text(expect.cname)
        except dns.exception.DNSException as exc:
            raise bad("expect.cname", f'"{expect.cname}" is not a valid domain name ({exc})') from None
    try:
        rcode = dns.rcode.from_text(expect.rcode.upper())
    except dns.exception.DNSException:
        raise bad("expect.rcode", f'expected a response code like "NOERROR" or "NXDOMAIN", '
                                  f'got "{expect.rcode}"') from None
    if config.server_timeout <= 0:
        raise bad("server_timeout", "expected a duration longer than zero")
    if config.dnssec and not resolvers:
        raise bad("dnssec", 'needs "resolvers": the validating resolvers whose AD flag is checked')
    return _Plan(name, rdtype, servers, zone, resolvers, expected, cname, rcode)


def _parse_server(text: str, default_port: int, key: str, *, address_only: bool = False) -> _Server:
    host, port = text.strip(), default_port
    if host.startswith("["):  # [v6] or [v6]:port
        inside, _, rest = host[1:].partition("]")
        host = inside
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f'key "{key}": expected "host", "host:port" or "[v6]:port", got "{text}"')
            port = _port(rest[1:], key, text)
    elif host.count(":") == 1:
        host, _, rest = host.partition(":")
        port = _port(rest, key, text)
    address: str | None = None
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        if address_only or not host:
            raise ValueError(f'key "{key}": expected an IP address (optionally with ":port"), '
                             f'got "{text}"') from None
        if not HOST_NAME.fullmatch(host):
            raise ValueError(f'key "{key}": "{text}" is not a host name or address') from None
    return _Server(_label(host, port), host, port, address)


def _port(text: str, key: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f'key "{key}": expected a port from 1 to 65535 in "{whole}"')
    return int(text)


def _label(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)


# ---- talking to one server -----------------------------------------------------------------------

@dataclass
class _Exchange:
    """One query to one server: the response, or why there was none."""

    response: dns.message.Message | None = None
    tcp: bool = False
    code: str | None = None      # timeout, connect_refused, connect_failed, malformed
    reason: str = ""


async def _exchange(query: dns.message.Message, address: str, port: int, timeout: float) -> _Exchange:
    """Ask over UDP (a connected socket, so a closed port fails at once), then TCP if truncated."""
    backend = dns.asyncbackend.get_backend("trio")
    af = dns.inet.af_for_address(address)
    result = _Exchange()
    with trio.move_on_after(timeout) as scope:
        try:
            sock = await backend.make_socket(af, socket.SOCK_DGRAM, 0, None, (address, port))
            try:
                result.response = await dns.asyncquery.udp(query, address, port=port, sock=sock,
                                                           raise_on_truncation=True, backend=backend)
            except dns.message.Truncated:
                result.tcp = True
                result.response = await dns.asyncquery.tcp(query, address, port=port, backend=backend)
            finally:
                await sock.close()
        except ConnectionRefusedError:
            result.code, result.reason = "connect_refused", "nothing listens (connection refused)"
        except (EOFError, trio.BrokenResourceError) as exc:
            # dnspython's TCP read: the server closed (or reset) before the whole answer came.
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else None
            result.code = "connect_failed"
            result.reason = ("connection closed before the answer"
                             + (f" ({(cause.strerror or str(cause)).lower()})" if cause else "")
                             + (" (TCP after truncation)" if result.tcp else ""))
        except OSError as exc:
            result.code, result.reason = "connect_failed", (exc.strerror or str(exc)).lower()
        except dns.exception.DNSException as exc:
            result.code, result.reason = "malformed", f"unusable answer: {exc}"
    if scope.cancelled_caught:
        result.code = "timeout"
        result.reason = f"no answer within {Duration(timeout)}" + (" (TCP after truncation)" if result.tcp else "")
    return result


# ---- judging ------------------------------------------------------------------------------------

@dataclass(order=True)
class _Problem:
    rank: int
    code: str = field(compare=False)
    message: str = field(compare=False)
    attribution: str = field(compare=False)
    outcome: str = field(compare=False, default="fail")


@dataclass
class _Answer:
    """What one authoritative server said, reduced to what the expectations talk about."""

    rcode: dns.rcode.Rcode
    canonical: dns.name.Name
    chained: bool
    data: frozenset[dns.rdata.Rdata]
    ttl: int | None

    @property
    def signature(self) -> tuple[object, ...]:
        return (self.rcode, self.canonical, self.data)

    def shown(self) -> str:
        if self.rcode != dns.rcode.NOERROR:
            return dns.rcode.to_text(self.rcode)
        return _set_text(self.data) or "(none)"


def _set_text(data: Iterable[dns.rdata.Rdata]) -> str:
    return ",".join(sorted(r.to_text() for r in data))


class _Judge:
    def __init__(self, config: DnsConfig, plan: _Plan):
        self.config = config
        self.plan = plan
        self.zone_owner = config.zone_owner
        self.ns_owner = config.nameserver_owner or config.zone_owner
        self.problems: list[_Problem] = []

    def add(self, code: str, message: str, *, attribution: str | None = None, outcome: str = "fail") -> None:
        if attribution is None:
            attribution = self.zone_owner if code in ZONE_CODES else self.ns_owner
        rank = CODE_ORDER.index(code) if code in CODE_ORDER else len(CODE_ORDER)
        self.problems.append(_Problem(rank, code, message, attribution, outcome))

    def answer(self, label: str, response: dns.message.Message) -> _Answer | None:
        """Reduce *response*, and note every way it misses the expectations."""
        plan = self.plan
        rcode = response.rcode()
        try:
            chain = response.resolve_chaining()  # type: ignore[attr-defined]
        except dns.message.ChainTooLong:
            self.add("mismatch", f"{label}: the CNAME chain from {_text(plan.name)} is too long or loops")
            return None
        except dns.exception.DNSException as exc:
            self.add("malformed", f"{label}: unusable answer: {exc}")
            return None
        data = frozenset(chain.answer) if chain.answer is not None else frozenset()
        ttl = chain.minimum_ttl if (chain.answer is not None or chain.cnames) else None
        answer = _Answer(rcode, chain.canonical_name, bool(chain.cnames), data, ttl)
        if rcode != plan.rcode:
            self.rcode_problem(label, answer)
            return answer
        if rcode != dns.rcode.NOERROR:
            return answer
        chain_end = f" (CNAME chain ends at {_text(answer.canonical)})" if answer.chained else ""
        if plan.cname is not None and answer.canonical != plan.cname:
            got = f"ends at {_text(answer.canonical)}" if answer.chained else "has no CNAME"
            self.add("mismatch", f"{label}: the CNAME chain from {_text(plan.name)} {got}, "
                                 f"expected it to end at {_text(plan.cname)}")
        if plan.expected is not None:
            self.compare(label, data, chain_end)
        elif plan.cname is None and not data:
            self.add("mismatch", f"{label}: {plan.shown} has no records{chain_end}")
        if self.config.min_ttl is not None and ttl is not None and ttl < self.config.min_ttl:
            self.add("ttl_low", f"{label}: {plan.shown} TTL {ttl}s is below {self.config.min_ttl}")
        return answer

    def rcode_problem(self, label: str, answer: _Answer) -> None:
        plan = self.plan
        got, wanted = dns.rcode.to_text(answer.rcode), dns.rcode.to_text(plan.rcode)
        if answer.rcode == dns.rcode.NXDOMAIN:
            where = (f" (CNAME chain ends at {_text(answer.canonical)}, which does not exist)"
                     if answer.chained else "")
            self.add("nxdomain", f"{label}: {_text(plan.name)} does not exist (NXDOMAIN){where}")
        elif answer.rcode == dns.rcode.SERVFAIL:
            self.add("servfail", f"{label}: SERVFAIL for {plan.shown}")
        elif answer.rcode == dns.rcode.REFUSED:
            self.add("refused", f"{label}: REFUSED {plan.shown} (not authoritative for it?)")
        elif answer.rcode == dns.rcode.NOERROR:
            self.add("mismatch", f"{label}: {plan.shown} exists ({answer.shown()}), expected {wanted}")
        else:
            self.add("bad_rcode", f"{label}: {got} for {plan.shown}, expected {wanted}")

    def compare(self, label: str, data: frozenset[dns.rdata.Rdata], chain_end: str) -> None:
        expected = self.plan.expected
        assert expected is not None
        match = self.config.expect.match
        ok = {
            "equal": data == expected,
            "subset": expected <= data,
            "superset": bool(data) and data <= expected,
            "any": bool(data & expected),
        }[match]
        if ok:
            return
        notes = []
        extra, missing = data - expected, expected - data
        if extra and match in ("equal", "superset"):
            notes.append(f"unexpected {_set_text(extra)}")
        if missing and match in ("equal", "subset"):
            notes.append(f"missing {_set_text(missing)}")
        if not data and match in ("superset", "any"):
            notes.append("no records")
        elif match == "any":
            notes.append("none of them answered")
        relation = {"equal": "equal to", "subset": "to include", "superset": "within",
                    "any": "any of"}[match]
        self.add("mismatch", f"{label}: {self.plan.shown} is {_set_text(data) or '(none)'}{chain_end}; "
                             f"expected {relation} {_set_text(expected) or '(none)'} "
                             f"({'; '.join(notes)})")

    def observation(self, value: float | None, details: dict[str, Scalar]) -> Observation:
        if not self.problems:
            return Observation.ok(value, details=details)
        self.problems.sort()
        failures = [p for p in self.problems if p.outcome == "fail"]
        head = (failures or self.problems)[0]
        message = "; ".join(dict.fromkeys(p.message for p in ([head] + self.problems)))
        if head.outcome == "error":
            return Observation.error(head.code, message, value=value, details=details)
        return Observation.fail(head.code, message, attribution=head.attribution,  # type: ignore[arg-type]
                                value=value, details=details)


def _collapse(values: dict[str, str]) -> str:
    """One value if every server agrees, else ``server=value; …``."""
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return "; ".join(f"{k}={v}" for k, v in values.items())


# ---- the probe kind ----------------------------------------------------------------------------

class DnsProbe(ProbeKind[DnsConfig]):
    kind = "dns"
    Config = DnsConfig
    unit = "s"

    def target(self, config: DnsConfig) -> str:
        where = ",".join(_parse_server(s, config.port, "servers").label for s in config.servers)
        if config.zone is not None or not config.servers:
            discovered = f"NS {config.zone.rstrip('.')}" if config.zone else "NS"
            where = f"{where},{discovered}" if where else discovered
        return f"{config.name.rstrip('.')} {config.type.upper()} @{where}"

    async def check(self, config: DnsConfig, ctx: CheckContext) -> Observation:
        plan = _plan(config)
        judge = _Judge(config, plan)
        details: dict[str, Scalar] = {}
        timeout = float(config.server_timeout)

        servers = list(plan.servers)
        zone = plan.zone
        if any(s.address is None for s in servers) or zone is not None or not servers:
            with ctx.phase("discover"):
                found = await self._discover(config, plan, judge, details)
            if found is None:  # discovery itself decided the attempt
                details["binding"] = _binding(judge, {})
                return judge.observation(None, details)
            servers, zone = found

        query = dns.message.make_query(plan.name, plan.rdtype, use_edns=0, payload=EDNS_PAYLOAD)
        answers: dict[str, _Answer] = {}
        shown: dict[str, str] = {}
        tcp: list[str] = []
        for server in servers:
            if server.address is None:  # a listed host name that did not resolve
                shown[server.label] = "!resolve_failed"
                continue
            with ctx.phase(f"query {server.label}"):
                exchange = await _exchange(query, server.address, server.port, timeout)
            if exchange.tcp:
                tcp.append(server.label)
            if exchange.response is None:
                judge.add(exchange.code or "malformed", f"{server.label}: {exchange.reason}")
                shown[server.label] = f"!{exchange.code}"
                continue
            answer = judge.answer(server.label, exchange.response)
            if answer is None:
                shown[server.label] = "!unusable"
                continue
            answers[server.label] = answer
            shown[server.label] = answer.shown()
        value = max((ctx.phases[f"query {label}"] for label in answers), default=None)

        details["servers"] = ",".join(s.label for s in servers)
        details["answers"] = "; ".join(f"{k}={v}" for k, v in shown.items())
        if answers:
            details["rcode"] = _collapse({k: dns.rcode.to_text(a.rcode) for k, a in answers.items()})
            chains = {k: _text(a.canonical) for k, a in answers.items() if a.chained}
            if chains:
                details["cname"] = _collapse({k: chains.get(k, "(none)") for k in answers})
            ttls = [a.ttl for a in answers.values() if a.ttl is not None]
            if ttls:
                details["ttl"] = min(ttls)
        if tcp:
            details["tcp_fallback"] = ",".join(tcp)

        if config.consistent:
            await self._consistency(plan, zone, [s for s in servers if s.label in answers], answers,
                                    judge, details, ctx, timeout)
        if config.dnssec:
            await self._validate(plan, judge, details, ctx, timeout)

        details["binding"] = _binding(judge, answers)
        return judge.observation(value, details)

    # ---- discovery ----

    async def _discover(self, config: DnsConfig, plan: _Plan, judge: _Judge, details: dict[str, Scalar]
                        ) -> tuple[list[_Server], dns.name.Name | None] | None:
        """The listed servers with their addresses, then the zone's discovered servers; the zone.

        ``None`` when discovery itself decides the attempt (its problem is in *judge*)."""
        servers: list[_Server] = []
        for server in plan.servers:
            if server.address is None:
                server = await self._resolve_listed(server, judge)
            servers.append(server)
        if plan.zone is None and plan.servers:
            return _unique(servers), None
        try:
            resolver = self._resolver(config, plan)
        except dns.resolver.NoResolverConfiguration:
            judge.add("discovery_failed", 'no resolvers: set "resolvers" or list "servers"',
                      attribution="probe", outcome="error")
            return None
        lifetime = resolver.lifetime
        budget = lifetime * 4
        zone = plan.zone
        with trio.move_on_after(budget) as scope:
            try:
                zone = zone or await dns.asyncresolver.zone_for_name(
                    plan.name, resolver=resolver, lifetime=lifetime * 2)
                details["zone"] = _text(zone)
                ns = await resolver.resolve(zone, dns.rdatatype.NS)
                names = sorted({r.target for r in ns}, key=str)
                found: list[str] = []
                for target in names:
                    try:
                        a = await resolver.resolve(target, dns.rdatatype.A)
                    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                        found.append(f"{_text(target)}=(none)")
                        continue
                    addresses = sorted(r.address for r in a)
                    found.append(f"{_text(target)}={','.join(addresses)}")
                    servers += [_Server(_label(ad, config.port), ad, config.port, ad) for ad in addresses]
                details["nameservers"] = "; ".join(found)
            except dns.resolver.NXDOMAIN:
                judge.add("nxdomain", f"discovery: the zone {_text(plan.zone or plan.name)} does not exist "
                                      "(NXDOMAIN at the resolvers)")
                return None
            except dns.resolver.NoAnswer:
                judge.add("no_nameservers", f"discovery: {details.get('zone', '?')} has no NS records")
                return None
            except dns.exception.DNSException as exc:
                judge.add("discovery_failed", f"discovery through the resolvers failed: {exc}",
                          attribution="probe", outcome="error")
                return None
        if scope.cancelled_caught:
            judge.add("discovery_failed", f"discovery through the resolvers took over {Duration(budget)}",
                      attribution="probe", outcome="error")
            return None
        servers = _unique(servers)
        if not servers:
            judge.add("no_nameservers", f"discovery: no NS of {details.get('zone', '?')} has an IPv4 "
                                        "address")
            return None
        return servers, zone

    async def _resolve_listed(self, server: _Server, judge: _Judge) -> _Server:
        try:
            infos = await trio.socket.getaddrinfo(server.host, server.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            judge.add("resolve_failed", f"{server.label}: cannot resolve {server.host}: {exc.strerror}",
                      attribution="unknown")
            return server
        ordered = sorted(infos, key=lambda info: info[0] != socket.AF_INET)
        return _Server(server.label, server.host, server.port, str(ordered[0][4][0]))

    def _resolver(self, config: DnsConfig, plan: _Plan) -> dns.asyncresolver.Resolver:
        if plan.resolvers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(r.address, r.port)  # type: ignore[arg-type]
                                    for r in plan.resolvers]
        else:
            resolver = dns.asyncresolver.Resolver(configure=True)
        resolver.cache = None
        resolver.timeout = float(config.server_timeout)
        resolver.lifetime = float(config.server_timeout) * max(1, len(resolver.nameservers))
        return resolver

    # ---- consistency and DNSSEC ----

    async def _consistency(self, plan: _Plan, zone: dns.name.Name | None, servers: list[_Server],
                           answers: dict[str, _Answer], judge: _Judge, details: dict[str, Scalar],
                           ctx: CheckContext, timeout: float) -> None:
        signatures = {label: a.signature for label, a in answers.items()}
        if len(set(signatures.values())) > 1:
            judge.add("inconsistent", "servers disagree: " + "; ".join(
                f"{label}={answers[label].shown()}" + (f" via {_text(answers[label].canonical)}"
                                                       if answers[label].chained else "")
                for label in answers))
        query = dns.message.make_query(zone or plan.name, dns.rdatatype.SOA, use_edns=0,
                                       payload=EDNS_PAYLOAD)
        serials: dict[str, str] = {}
        for server in servers:
            assert server.address is not None
            with ctx.phase(f"soa {server.label}"):
                exchange = await _exchange(query, server.address, server.port, timeout)
            serial = _serial(exchange.response) if exchange.response is not None else None
            if serial is None:
                why = exchange.reason or "no SOA record in the answer"
                judge.add(exchange.code or "malformed", f"{server.label}: SOA serial: {why}")
                serials[server.label] = f"!{exchange.code or 'none'}"
            else:
                serials[server.label] = str(serial)
        if serials:
            details["serials"] = "; ".join(f"{k}={v}" for k, v in serials.items())
        known = {v for v in serials.values() if not v.startswith("!")}
        if len(known) > 1:
            judge.add("inconsistent", "SOA serials differ: " + details["serials"])  # type: ignore[operator]

    async def _validate(self, plan: _Plan, judge: _Judge, details: dict[str, Scalar],
                        ctx: CheckContext, timeout: float) -> None:
        query = dns.message.make_query(plan.name, plan.rdtype, use_edns=0, payload=EDNS_PAYLOAD,
                                       want_dnssec=True)
        query.flags |= dns.flags.AD
        validated = []
        for resolver in plan.resolvers:
            assert resolver.address is not None
            with ctx.phase(f"validate {resolver.label}"):
                exchange = await _exchange(query, resolver.address, resolver.port, timeout)
            response = exchange.response
            if response is None:
                code = "resolver_timeout" if exchange.code == "timeout" else "resolver_unreachable"
                judge.add(code, f"resolver {resolver.label}: {exchange.reason}", attribution="probe",
                          outcome="error")
                validated.append(False)
                continue
            ad = bool(response.flags & dns.flags.AD)
            validated.append(ad)
            rcode = response.rcode()
            if rcode == dns.rcode.SERVFAIL:
                reasons = [e for e in response.extended_errors()]
                why = "; ".join(f"EDE {int(e.code)} {e.text or dns.edns.EDECode.to_text(e.code)}"
                                for e in reasons)
                if any(int(e.code) in DNSSEC_EDE for e in reasons):
                    judge.add("bogus", f"resolver {resolver.label}: {plan.shown} fails DNSSEC validation "
                                       f"({why})")
                else:
                    judge.add("servfail", f"resolver {resolver.label}: SERVFAIL for {plan.shown}"
                                          + (f" ({why})" if why else ""), attribution="unknown")
            elif not ad:
                judge.add("insecure", f"resolver {resolver.label}: {plan.shown} "
                                      f"({dns.rcode.to_text(rcode)}) is not validated (no AD flag)")
        details["ad"] = bool(validated) and all(validated)


def _binding(judge: _Judge, answers: dict[str, _Answer]) -> str:
    """``elsewhere`` if any server (or discovery) says the name points elsewhere or nowhere;
    ``as_expected`` if none does and at least one gave a real answer; else ``unknown``.
    A refusal or SERVFAIL is an answer, but says nothing about where the name points."""
    if any(p.code in ELSEWHERE for p in judge.problems):
        return "elsewhere"
    if any(a.rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) for a in answers.values()):
        return "as_expected"
    return "unknown"


def _serial(response: dns.message.Message) -> int | None:
    for section in (response.answer, response.authority):
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.SOA:
                return int(rrset[0].serial)
    return None


def _unique(servers: list[_Server]) -> list[_Server]:
    seen: set[tuple[str | None, int]] = set()
    kept = []
    for server in servers:
        key = (server.address or server.host, server.port)
        if key not in seen:
            seen.add(key)
            kept.append(server)
    return kept


@hookimpl
def probecore_add_probes(registry):  # type: ignore[no-untyped-def]
    registry.add(DnsProbe)
