"""``probe = "power"``: is power delivered to the load from any of its sources (contracts 001 §2.5,
002 art.2, 003 §3: "mains, UPS or diesel generator, any one of them")?

Keys (a ``[[check]]`` table)::

    [[check]]
    id = "power"
    probe = "power"
    group = "any"                 # the core's group rule: power is ok while any source delivers
    sources = [
      { url = "nut://ups1@10.0.0.5:3493", role = "ups" },
      { url = "nut://meter@10.0.0.6", role = "mains", name = "mains",
        username = "monitor", password = { env = "NUT_PASSWORD" } },
      { url = "snmp://10.0.0.7", role = "generator", name = "genset",
        community = { env = "SNMP_COMMUNITY" } },
      { url = "redfish://10.0.0.8/redfish/v1/Chassis/1U", role = "mains", name = "psu",
        username = "monitor", password = { env = "BMC_PASSWORD" }, auth = "session" },
    ]

* ``sources`` (required, at least one): a table per telemetry source. Common keys:

  * ``url``: ``nut://UPS@HOST[:PORT]`` — the UPS named ``UPS`` on the NUT ``upsd`` at ``HOST``
    (port 3493 by default), as ``upsc`` writes it; or ``snmp://HOST[:PORT]`` — an SNMP agent
    with the UPS-MIB (RFC 1628), UDP port 161 by default; or
    ``redfish://HOST[:PORT]/redfish/v1/Chassis/ID`` — a Redfish chassis over HTTPS (port 443 by
    default; ``redfish+http://`` for plain HTTP, port 80). A password in the URL is refused.
  * ``role``: ``"mains"``, ``"ups"`` or ``"generator"`` — what the source is. It is reported
    (``details.role``) and does not change the judgement: every source is asked the same
    question, "does it deliver power to the load?".
  * ``name`` (optional): the member name in the records (``<profile>/<check>:<name>``); by
    default the UPS name for NUT and the role for SNMP and Redfish. Names must be unique in the check,
    without spaces, ``/`` or ``:``.

  NUT keys: ``username`` and ``password`` (a secret reference, ``{ env = "NAME" }`` or
  ``{ file = "path" }``; optional). upsd checks credentials only for commands that need rights,
  so with a username the probe also sends ``LOGIN <UPS>``: the user needs ``upsmon secondary``
  (or primary) in ``upsd.users``; the probe logs out at once. ``tls`` (``"none"`` or
  ``"starttls"``, default ``"none"``): ``STARTTLS`` before anything else; ``verify`` (default
  ``true``) checks the certificate and host name, ``ca_file`` trusts that CA bundle instead.

  SNMP keys: v2c by default, with ``community`` (a secret reference; default ``public``). With
  ``username`` it is SNMPv3 (USM): ``password`` is the authentication passphrase
  (``auth_protocol`` ``MD5``/``SHA``/``SHA224``/``SHA256``/``SHA384``/``SHA512``, default
  ``SHA``) and ``priv_password`` the privacy passphrase (``priv_protocol``
  ``DES``/``3DES``/``AES``/``AES192``/``AES256``, default ``AES``): both give authPriv, only
  ``password`` authNoPriv, neither noAuthNoPriv.

  Redfish keys: ``username`` and ``password`` (optional: without them no credentials are sent);
  ``auth`` ``"basic"`` (default: HTTP basic on every request) or ``"session"`` (``POST
  /redfish/v1/SessionService/Sessions``, then ``X-Auth-Token``; the session is deleted
  afterwards); ``verify`` and ``ca_file`` as for NUT's TLS.

  Keys of another protocol are refused.

* ``source_timeout`` (duration, default ``"5s"``): the most one source may take. A source that
  does not answer in time is ``unreachable`` (no evidence), so one hung endpoint does not cost
  the other sources' readings. Keep it below the check's ``timeout``.

Sources are read concurrently. The probe returns one member observation per source (a record
per source, check ``<profile>/<check>:<name>``) and the core judges the round by the check's
``group`` key: use ``group = "any"`` for power. (The default, ``"all"``, would call the round
down whenever any one source is.) A round whose every source failed is a ``fail`` with the
core's code ``group``, its message listing each source's code (``ups1: no_power; …``).

Value: per source, ``1`` when it delivers power to the load, ``0`` when not (unit ``bool``;
none when the probe could not judge). The round's value is the number of sources delivering
power (unit ``sources``).

Phases: per source record, NUT ``connect`` (TCP), ``tls`` (STARTTLS and the handshake),
``login`` (USERNAME, PASSWORD, LOGIN), ``read`` (LIST VAR); SNMP ``read`` (one GET); Redfish
``login`` (session auth only) and ``read`` (chassis, PowerSubsystem, PowerSupplies and each
supply, or chassis and Power; one HTTPS connection per request). The round
record has one phase, ``sources`` (all of them, concurrently).

``details`` per source: ``role``, ``protocol`` (``nut``/``snmp``/``redfish``), ``status`` (NUT: the raw
``ups.status`` flags, e.g. ``"OB LB"``; SNMP: the ``upsOutputSource`` name, e.g. ``battery``;
Redfish: ``"PowerState=On; 2/2 supplies delivering"``),
``on_battery``, ``low_battery``, and when reported ``battery_charge`` (%), ``battery_runtime``
(s), ``input_voltage``, ``output_voltage`` (V), ``load`` (%); NUT adds ``ups_alarm``; SNMP adds
``battery_status`` (``batteryNormal`` …), ``seconds_on_battery`` and ``input_line_bads``
(upsInputLineBads, a counter of input-out-of-tolerance events); Redfish adds ``power_state``,
``health`` (the chassis's), ``resource`` (``PowerSubsystem`` or ``Power``), ``supplies`` and
``supplies_delivering`` (``on_battery`` is always false there). The round's details add
``on_battery`` (true when any source delivering power is on battery: a power event without an
interruption, reported as such) and ``sources_delivering``.

Failure codes (all but ``no_power`` are ``error`` outcomes, attribution ``probe``: they are no
evidence about the power, so the group rule leaves them out of the count):

* ``no_power`` (``fail``, provider): the source says it does not deliver power to the load.
* ``unreachable``: the telemetry endpoint cannot be reached or has no current data (connection
  refused, no answer within ``source_timeout``, ``ERR DATA-STALE``,
  ``ERR DRIVER-NOT-CONNECTED``, status ``WAIT``; SNMP: no response — which is also how a v2c
  agent answers a wrong community, and the message says so).
* ``auth``: the credentials were refused (NUT ``ERR ACCESS-DENIED`` and the other
  ``USERNAME``/``PASSWORD`` errors; SNMPv3 unknown user, wrong digest, decryption error; Redfish
  HTTP 401 or 403), or a secret reference is missing.
* ``not_found``: upsd has no UPS of that name (``ERR UNKNOWN-UPS``; the message lists the UPSes
  it has), the SNMP agent has no ``upsOutputSource``, or the Redfish chassis (or a resource it
  links) answers 404 or links neither ``PowerSubsystem`` nor ``Power``.
* ``reply_too_large``: the endpoint's reply is over the probe's bounds and was cut off unread
  (a NUT line over 64 KiB or a ``LIST`` over 10,000 lines or 1 MiB; a Redfish head over 64 KiB,
  a body over 4 MiB, more than 32 ``1xx`` answers or 64 power supplies): a server that never ends its reply.
* ``protocol``: any other ``ERR`` reply, SNMP error status or HTTP status, a reply the protocol
  does not allow (not JSON, not HTTP), a state that does not say whether power is delivered
  (below), or a TLS failure (the message carries the certificate error).

NUT ``ups.status`` flags → power delivered (first matching row wins):

======================  ================  ===========================================
``ups.status`` has      power delivered   outcome
======================  ================  ===========================================
``OFF``                 no (0)            ``fail no_power`` (the UPS output is off)
``FSD``                 no (0)            ``fail no_power`` (forced shutdown under way)
``OB`` (± ``LB``, …)    yes (1)           ``ok``, ``on_battery = true``
``OL`` (± ``BYPASS``,   yes (1)           ``ok`` (``BYPASS``: mains straight through,
``TRIM``, ``BOOST``…)                     unprotected, still delivered)
only ``WAIT``, or none  unknown           ``error unreachable`` (no data from the driver)
anything else           unknown           ``error protocol``
======================  ================  ===========================================

``LB`` (low battery), ``RB``, ``CHRG``, ``DISCHRG``, ``OVER``, ``ALARM``, ``CAL``, ``HB`` do not
change the verdict; they are in ``details.status`` (and ``LB`` in ``low_battery``).

SNMP UPS-MIB ``upsOutputSource`` (1.3.6.1.2.1.33.1.4.1.0) → power delivered:

==========================================  ================  ================================
``upsOutputSource``                         power delivered   outcome
==========================================  ================  ================================
``normal(3)``, ``bypass(4)``, ``booster(6)``,  yes (1)        ``ok``
``reducer(7)``
``battery(5)``                              yes (1)           ``ok``, ``on_battery = true``
``none(2)``                                 no (0)            ``fail no_power``
``other(1)`` or any other number            unknown           ``error protocol``
missing (noSuchObject/noSuchInstance)       unknown           ``error not_found``
==========================================  ================  ================================

``upsBatteryStatus`` ``batteryLow(3)`` or ``batteryDepleted(4)`` sets ``low_battery`` and does
not change the verdict. The probe GETs upsBatteryStatus, upsSecondsOnBattery,
upsEstimatedMinutesRemaining, upsEstimatedChargeRemaining, upsInputLineBads, upsOutputSource
and the first line of upsInputVoltage, upsOutputVoltage and upsOutputPercentLoad in one request.
SNMP goes through pysnmp (asyncio) on probecore's asyncio bridge; the NUT client
(:mod:`._nut`) speaks the protocol itself on trio streams.

Redfish chassis → power delivered (first matching row wins). A supply *delivers* when its
``Status.State`` is ``Enabled`` (or absent), its ``Status.Health`` is not ``Critical`` and its
``LineInputStatus`` (PowerSubsystem only) is not ``LossOfInput``, ``NoInput`` or ``OutOfRange``:

=================================================  ================  ========================
chassis                                            power delivered   outcome
=================================================  ================  ========================
``PowerState`` ``Off`` or ``PoweringOff``          no (0)            ``fail no_power``
power supplies listed, none delivers               no (0)            ``fail no_power``
a supply delivers, or none listed and ``PowerState``  yes (1)        ``ok``
``On``/``PoweringOn``
no supplies and no ``PowerState``                  unknown           ``error protocol``
=================================================  ================  ========================

Redfish goes over HTTP/1.1 with h11 on trio streams (:mod:`._redfish`).
"""

from __future__ import annotations

import math
import ssl
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import msgspec
import trio

from probecore import (
    CheckContext,
    Duration,
    Observation,
    ProbeConfig,
    ProbecoreError,
    ProbeKind,
    Secret,
    hookimpl,
    run_asyncio,
)

from . import _nut, _redfish, _snmp

Role = Literal["mains", "ups", "generator"]
NameStr = Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[^\s/:]+$")]
Scalar = str | int | float | bool | None

NUMERIC_VARS = {
    "battery.charge": "battery_charge",
    "battery.runtime": "battery_runtime",
    "input.voltage": "input_voltage",
    "output.voltage": "output_voltage",
    "ups.load": "load",
}


NUT_ONLY = ("tls",)
SNMP_ONLY = ("community", "auth_protocol", "priv_protocol", "priv_password")
REDFISH_ONLY = ("auth",)
TLS_KEYS = ("verify", "ca_file")


class Source(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One telemetry source of a power check (an element of ``sources``)."""

    url: Annotated[str, msgspec.Meta(min_length=1)]
    role: Role
    name: NameStr | None = None
    username: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    password: Secret | None = None
    # NUT
    tls: Literal["none", "starttls"] = "none"
    verify: bool = True
    ca_file: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    # SNMP
    community: Secret | None = None
    auth_protocol: Literal[_snmp.AUTH_PROTOCOLS] = "SHA"  # type: ignore[valid-type]
    priv_protocol: Literal[_snmp.PRIV_PROTOCOLS] = "AES"  # type: ignore[valid-type]
    priv_password: Secret | None = None
    # Redfish
    auth: Literal["basic", "session"] = "basic"

    def __post_init__(self) -> None:
        address = parse_url(self.url)  # raises ValueError with the reason
        if self.password is not None and self.username is None:
            raise ValueError(f"source {self.url}: a password needs a username")
        if self.priv_password is not None and self.password is None:
            raise ValueError(f"source {self.url}: priv_password needs a password (SNMPv3 authPriv)")
        if self.community is not None and self.username is not None:
            raise ValueError(f"source {self.url}: community is SNMP v2c, username SNMPv3: give one")
        defaults = Source.__struct_defaults__
        fields = Source.__struct_fields__
        foreign = {"nut": SNMP_ONLY + REDFISH_ONLY, "snmp": NUT_ONLY + REDFISH_ONLY + TLS_KEYS,
                   "redfish": NUT_ONLY + SNMP_ONLY}[address.protocol]
        if address.protocol == "redfish" and not address.https:
            foreign += TLS_KEYS
        for key in foreign:
            if getattr(self, key) != defaults[fields.index(key) - (len(fields) - len(defaults))]:
                raise ValueError(f"source {self.url}: key {key!r} is not for {address.protocol}:// sources")

    @property
    def member(self) -> str:
        address = parse_url(self.url)
        return self.name or (address.ups if address.protocol == "nut" else self.role)


REDFISH_FORM = "redfish://HOST[:PORT]/redfish/v1/Chassis/ID (or redfish+http://)"


class Address(msgspec.Struct, frozen=True):
    protocol: str
    host: str
    port: int
    ups: str = ""
    path: str = ""
    https: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "redfish+http" if self.protocol == "redfish" and not self.https else self.protocol
        return f"{scheme}://{self.ups + '@' if self.ups else ''}{host}:{self.port}{self.path}"


def parse_url(url: str) -> Address:
    """``nut://UPS@HOST[:PORT]``, ``snmp://HOST[:PORT]`` or a Redfish chassis URL;
    ``ValueError`` naming the problem otherwise."""
    parts = urlsplit(url)
    forms = f"nut://UPS@HOST[:PORT], snmp://HOST[:PORT] or {REDFISH_FORM}"
    scheme = parts.scheme
    if scheme not in ("nut", "snmp", "redfish", "redfish+http"):
        raise ValueError(f"source url {url!r}: expected {forms} "
                         f"(scheme {scheme or 'missing'!r} is not supported)")
    if parts.password is not None:
        raise ValueError(f"source url {url!r}: no password in the url; use password = {{ env = ... }}")
    if not parts.hostname or (scheme == "nut") != bool(parts.username):
        raise ValueError(f"source url {url!r}: expected {forms}")
    redfish = scheme.startswith("redfish")
    if redfish:
        if not parts.path.startswith("/redfish/v1/Chassis/") or parts.path.rstrip("/").count("/") != 4:
            raise ValueError(f"source url {url!r}: expected {REDFISH_FORM}")
        if parts.query or parts.fragment:
            raise ValueError(f"source url {url!r}: expected nothing after the chassis path")
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"source url {url!r}: expected nothing after HOST[:PORT]")
    default_port = {"nut": _nut.DEFAULT_PORT, "snmp": 161, "redfish": 443, "redfish+http": 80}[scheme]
    try:
        port = parts.port or default_port
    except ValueError:
        raise ValueError(f"source url {url!r}: bad port") from None
    ups = unquote(parts.username or "")
    if any(c.isspace() or c in "/:" for c in ups):
        raise ValueError(f"source url {url!r}: bad UPS name {ups!r}")
    return Address("redfish" if redfish else scheme, parts.hostname, port, ups,
                   parts.path.rstrip("/") if redfish else "", scheme == "redfish")


class PowerConfig(ProbeConfig):
    sources: Annotated[list[Source], msgspec.Meta(min_length=1)]
    source_timeout: Duration | None = None

    def __post_init__(self) -> None:
        names = [s.member for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"two sources are named {duplicates[0]!r}; give each a unique name = \"...\"")


DEFAULT_SOURCE_TIMEOUT = 5.0
V2C_HINT = " (an SNMP v2c agent does not answer a wrong community either)"


class PowerProbe(ProbeKind[PowerConfig]):
    kind = "power"
    Config = PowerConfig
    unit = "sources"

    def target(self, config: PowerConfig) -> str:
        return ", ".join(str(parse_url(s.url)) for s in config.sources)

    async def check(self, config: PowerConfig, ctx: CheckContext) -> Observation:
        limit = (float(config.source_timeout) if config.source_timeout is not None
                 else DEFAULT_SOURCE_TIMEOUT)
        results: list[Observation | None] = [None] * len(config.sources)

        async def one(index: int, source: Source) -> None:
            results[index] = await read_source(source, ctx, limit)

        with ctx.phase("sources"):
            async with trio.open_nursery() as nursery:
                for index, source in enumerate(config.sources):
                    nursery.start_soon(one, index, source)
        members = [r for r in results if r is not None]
        delivering = [m for m in members if m.outcome == "ok"]
        return Observation.ok(
            float(len(delivering)), unit="sources", members=members,
            details={"sources_delivering": len(delivering),
                     "on_battery": any(m.details.get("on_battery") is True for m in delivering)})


async def read_source(source: Source, ctx: CheckContext, limit: float) -> Observation:
    """One source's member observation; never raises for what the source does."""
    address = parse_url(source.url)
    member = source.member
    base: dict[str, Scalar] = {"role": source.role, "protocol": address.protocol}
    phases: dict[str, float] = {}
    try:
        password = ctx.reveal(source.password) if source.password is not None else None
        community = ctx.reveal(source.community) if source.community is not None else "public"
        priv = ctx.reveal(source.priv_password) if source.priv_password is not None else None
    except ProbecoreError as exc:
        return Observation.error("auth", str(exc), member=member, target=str(address), details=base)
    result: Observation | None = None
    with trio.move_on_after(limit):
        if address.protocol == "nut":
            result = await _read_nut(source, address, password, base, phases)
        elif address.protocol == "redfish":
            result = await _read_redfish(source, address, password, base, phases)
        else:
            auth = _snmp.SnmpAuth(community=community, username=source.username,
                                  auth_protocol=source.auth_protocol, auth_key=password,
                                  priv_protocol=source.priv_protocol, priv_key=priv)
            result = await _read_snmp(address, auth, limit, base, phases)
    if result is None:
        running = next(reversed(phases), None) if phases else None
        result = Observation.error(
            "unreachable", f"{address}: no answer within {limit:g}s"
            + (f" (during {running})" if running else "")
            + (V2C_HINT if address.protocol == "snmp" and source.username is None else ""),
            details=base)
    result.member = member
    result.target = str(address)
    result.phases = phases
    return result


class _Timer:
    """Time one step of a source into its own phases (sources run concurrently, so the check
    context's single current phase cannot be used)."""

    def __init__(self, phases: dict[str, float], name: str):
        self.phases, self.name = phases, name

    def __enter__(self) -> None:
        self.start = trio.current_time()
        self.phases[self.name] = 0.0

    def __exit__(self, *exc: object) -> None:
        self.phases[self.name] = trio.current_time() - self.start


async def _read_nut(source: Source, address: Address, password: str | None,
                    base: dict[str, Scalar], phases: dict[str, float]) -> Observation:
    where = str(address)
    step = "connect"
    try:
        with _Timer(phases, "connect"):
            client = await _nut.NutClient.connect(address.host, address.port)
        async with client:
            if source.tls == "starttls":
                step = "tls"
                with _Timer(phases, "tls"):
                    await client.starttls(_tls_context(source), address.host)
            if source.username is not None:
                step = "login"
                with _Timer(phases, "login"):
                    await client.login(source.username, password)
                    await client.command("LOGIN", address.ups)
            step = "read"
            with _Timer(phases, "read"):
                variables = await client.list_var(address.ups)
            step = "logout"
            try:
                await client.logout()
            except (_nut.NutError, _nut.NutProtocolError, trio.BrokenResourceError, OSError):
                pass  # the reading is complete; a rude goodbye does not change it
        return judge_nut(variables, where, base)
    except _nut.NutError as exc:
        if exc.code in _nut.AUTH_ERRORS:
            return Observation.error("auth", f"{where}: {exc} (user {source.username or 'none'})",
                                     details=base)
        if exc.code == "UNKNOWN-UPS":
            known = await _known_ups(address)
            return Observation.error("not_found", f"{where}: upsd has no UPS {address.ups!r} "
                                     f"(ERR UNKNOWN-UPS){known}", details=base)
        if exc.code in _nut.UNAVAILABLE_ERRORS:
            return Observation.error("unreachable", f"{where}: upsd has no current data ({exc})",
                                     details=base)
        return Observation.error("protocol", f"{where}: {exc}", details=base)
    except _nut.NutReplyTooLarge as exc:
        return Observation.error("reply_too_large", f"{where}: during {step}: {exc}", details=base)
    except _nut.NutProtocolError as exc:
        return Observation.error("protocol", f"{where}: during {step}: {exc}", details=base)
    except ssl.SSLError as exc:
        return Observation.error("protocol", f"{where}: TLS: {exc.reason or exc}", details=base)
    except (OSError, trio.BrokenResourceError) as exc:
        if step == "tls" and isinstance(exc.__cause__, ssl.SSLError):
            return Observation.error("protocol", f"{where}: TLS: {exc.__cause__}", details=base)
        code = "unreachable" if step == "connect" else "protocol"
        return Observation.error(code, f"{where}: during {step}: {_reason(exc)}", details=base)


async def _read_snmp(address: Address, auth: _snmp.SnmpAuth, limit: float,
                     base: dict[str, Scalar], phases: dict[str, float]) -> Observation:
    where = str(address)
    # pysnmp's own timeout, two tries, ends before the source's limit so its reason is kept.
    per_try = max(0.1, limit / 3)
    try:
        with _Timer(phases, "read"):
            values = await run_asyncio(_snmp.read_ups_mib, address.host, address.port, auth,
                                       per_try, 1)
    except _snmp.SnmpFailure as exc:
        hint = V2C_HINT if exc.code == "unreachable" and auth.username is None else ""
        return Observation.error(exc.code, f"{where}: {exc}{hint}", details=base)
    return judge_snmp(values, where, base)


def judge_snmp(values: dict[str, int | str], where: str, base: dict[str, Scalar]) -> Observation:
    """The member observation for an agent's UPS-MIB values (the mapping table in the docs)."""
    source = values.get("upsOutputSource")
    battery = values.get("upsBatteryStatus")
    name = _snmp.OUTPUT_SOURCE.get(source, str(source)) if isinstance(source, int) else source
    details: dict[str, Scalar] = {**base, "status": name, "on_battery": source == 5,
                                  "low_battery": battery in (3, 4)}
    if isinstance(battery, int):
        details["battery_status"] = _snmp.BATTERY_STATUS.get(battery, str(battery))
    for key, mib in (("battery_charge", "upsEstimatedChargeRemaining"),
                     ("seconds_on_battery", "upsSecondsOnBattery"),
                     ("input_voltage", "upsInputVoltage"), ("output_voltage", "upsOutputVoltage"),
                     ("load", "upsOutputPercentLoad"), ("input_line_bads", "upsInputLineBads")):
        if isinstance(values.get(mib), int):
            details[key] = values[mib]
    minutes = values.get("upsEstimatedMinutesRemaining")
    if isinstance(minutes, int):
        details["battery_runtime"] = minutes * 60
    if source is None:
        return Observation.error("not_found", f"{where}: the agent has no UPS-MIB upsOutputSource "
                                 f"(1.3.6.1.2.1.33.1.4.1.0)", details=details)
    if source == 2:
        return Observation.fail("no_power", f"{where}: upsOutputSource is none(2): the load is "
                                "not powered", value=0.0, unit="bool", details=details)
    if source in (3, 4, 5, 6, 7):
        return Observation.ok(1.0, unit="bool", details=details)
    return Observation.error("protocol", f"{where}: upsOutputSource {name}({source}) does not say "
                             "whether the load is powered", details=details)


async def _read_redfish(source: Source, address: Address, password: str | None,
                        base: dict[str, Scalar], phases: dict[str, float]) -> Observation:
    where = str(address)
    endpoint = _redfish.Endpoint(address.host, address.port, address.https, None)
    location = None
    try:
        if address.https:
            endpoint.context = _tls_context(source)
        if source.username is not None:
            if source.auth == "session":
                with _Timer(phases, "login"):
                    location = await _redfish.open_session(endpoint, source.username, password or "")
            else:
                endpoint.headers.append(_redfish.basic_auth(source.username, password or ""))
        with _Timer(phases, "read"):
            power = await _redfish.read_chassis_power(endpoint, address.path)
    except _redfish.RedfishFailure as exc:
        return Observation.error(exc.code, f"{where}: {exc}", details=base)
    except OSError as exc:  # ca_file unreadable
        return Observation.error("protocol", f"{where}: TLS: {_reason(exc)}", details=base)
    finally:
        if location is not None:
            with trio.move_on_after(1.0) as cleanup:
                cleanup.shield = True
                await _redfish.close_session(endpoint, location)
    return judge_redfish(power, where, base)


def judge_redfish(power: _redfish.ChassisPower, where: str, base: dict[str, Scalar]) -> Observation:
    """The member observation for a chassis's power resources (the mapping table in the docs)."""
    delivering = [p for p in power.supplies if p.state in (None, "Enabled") and p.health != "Critical"
                  and p.line_input not in LOST_INPUT]
    state = power.power_state or "unknown"
    details: dict[str, Scalar] = {
        **base, "status": f"PowerState={state}; {len(delivering)}/{len(power.supplies)} supplies "
        "delivering", "on_battery": False, "low_battery": False, "power_state": power.power_state,
        "health": power.health, "resource": power.model,
        "supplies": len(power.supplies), "supplies_delivering": len(delivering)}
    voltages = [p.input_voltage for p in delivering if p.input_voltage is not None]
    if voltages:
        details["input_voltage"] = voltages[0]
    if power.power_state in ("Off", "PoweringOff"):
        return Observation.fail("no_power", f"{where}: chassis PowerState is {power.power_state}",
                                value=0.0, unit="bool", details=details)
    if power.supplies and not delivering:
        states = ", ".join(f"{p.name}: {p.state or '-'}/{p.health or '-'}"
                           + (f"/{p.line_input}" if p.line_input else "") for p in power.supplies)
        return Observation.fail("no_power", f"{where}: no power supply delivers ({states})",
                                value=0.0, unit="bool", details=details)
    if delivering or power.power_state in ("On", "PoweringOn"):
        return Observation.ok(1.0, unit="bool", details=details)
    return Observation.error("protocol", f"{where}: no power supplies and no PowerState: cannot "
                             "tell whether the chassis is powered", details=details)


LOST_INPUT = frozenset({"LossOfInput", "NoInput", "OutOfRange"})


async def _known_ups(address: Address) -> str:
    """``"; it has: a, b"`` from a fresh LIST UPS (best effort, bounded)."""
    with trio.move_on_after(1.0):
        try:
            async with await _nut.NutClient.connect(address.host, address.port) as client:
                names = sorted(await client.list_ups())
                return f"; it has: {', '.join(names) if names else 'none'}"
        except (_nut.NutError, _nut.NutProtocolError, OSError, trio.BrokenResourceError):
            pass
    return ""


def judge_nut(variables: dict[str, str], where: str, base: dict[str, Scalar]) -> Observation:
    """The member observation for a UPS's variables (the mapping table in the module docs)."""
    status = variables.get("ups.status", "")
    flags = set(status.split())
    details: dict[str, Scalar] = {**base, "status": status,
                                  "on_battery": "OB" in flags, "low_battery": "LB" in flags}
    for var, key in NUMERIC_VARS.items():
        number = _number(variables.get(var))
        if number is not None:
            details[key] = number
    if variables.get("ups.alarm"):
        details["ups_alarm"] = variables["ups.alarm"]
    if "OFF" in flags:
        return Observation.fail("no_power", f"{where}: UPS output is off (ups.status {status!r})",
                                value=0.0, unit="bool", details=details)
    if "FSD" in flags:
        return Observation.fail("no_power", f"{where}: forced shutdown (ups.status {status!r})",
                                value=0.0, unit="bool", details=details)
    if "OB" in flags or "OL" in flags:
        return Observation.ok(1.0, unit="bool", details=details)
    if flags <= {"WAIT"}:
        return Observation.error("unreachable", f"{where}: upsd has no data from the driver yet "
                                 f"(ups.status {status!r})", details=details)
    return Observation.error("protocol", f"{where}: ups.status {status!r} has none of OL, OB, OFF",
                             details=details)


def _number(text: str | None) -> float | int | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return int(value) if value.is_integer() and "." not in text else value


def _tls_context(source: Source) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=source.ca_file)
    if not source.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _reason(exc: BaseException) -> str:
    import os

    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, BaseExceptionGroup):
            candidate = candidate.exceptions[0]
        if isinstance(candidate, OSError) and candidate.errno:
            return os.strerror(candidate.errno).lower()
    return str(exc) or type(exc).__name__


@hookimpl
def probecore_add_probes(registry: Any) -> None:
    registry.add(PowerProbe)
