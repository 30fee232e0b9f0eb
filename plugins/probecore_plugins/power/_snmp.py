"""Reading the UPS-MIB (RFC 1628) over SNMP v2c or v3 with pysnmp (asyncio, on probecore's bridge).

:func:`read_ups_mib` sends one GET for the scalars and the first input/output line's columns and
returns what the agent has, by the names in :data:`OIDS`. pysnmp's problems come back as
:class:`SnmpFailure` with a code the probe uses (``unreachable``, ``auth``, ``protocol``).

Reads that run at the same time with the same credentials share one pysnmp engine, closed when
the last of them ends: building an engine costs 0.1–0.4 s of the bridge loop's time, and an
engine per read serialised the sources of a round (30 sources against one snmpd took 10.7 s,
past their ``source_timeout``; shared, 0.6 s). Engines are per credential set, so two sources
with the same SNMPv3 user name but different keys never share (and re-key) one USM table, and
none outlives its reads (no pysnmp timer task is left on the bridge loop).
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Any

UPS_MIB = "1.3.6.1.2.1.33.1"
OIDS = {
    "upsBatteryStatus": f"{UPS_MIB}.2.1.0",
    "upsSecondsOnBattery": f"{UPS_MIB}.2.2.0",
    "upsEstimatedMinutesRemaining": f"{UPS_MIB}.2.3.0",
    "upsEstimatedChargeRemaining": f"{UPS_MIB}.2.4.0",
    "upsInputLineBads": f"{UPS_MIB}.3.1.0",
    "upsInputVoltage": f"{UPS_MIB}.3.3.1.3.1",
    "upsOutputSource": f"{UPS_MIB}.4.1.0",
    "upsOutputVoltage": f"{UPS_MIB}.4.4.1.2.1",
    "upsOutputPercentLoad": f"{UPS_MIB}.4.4.1.5.1",
}
OUTPUT_SOURCE = {1: "other", 2: "none", 3: "normal", 4: "bypass", 5: "battery", 6: "booster",
                 7: "reducer"}
BATTERY_STATUS = {1: "unknown", 2: "batteryNormal", 3: "batteryLow", 4: "batteryDepleted"}

_ENGINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[SnmpAuth, _Shared]] = \
    weakref.WeakKeyDictionary()

AUTH_PROTOCOLS = ("MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512")
PRIV_PROTOCOLS = ("DES", "3DES", "AES", "AES192", "AES256")


class SnmpFailure(Exception):
    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class SnmpAuth:
    """v2c (``community``) or v3 USM (``username`` with optional auth and privacy keys)."""

    community: str = "public"
    username: str | None = None
    auth_protocol: str = "SHA"
    auth_key: str | None = None
    priv_protocol: str = "AES"
    priv_key: str | None = None


def _auth_data(hl: Any, auth: SnmpAuth) -> Any:
    if auth.username is None:
        return hl.CommunityData(auth.community, mpModel=1)
    auth_protocols = {"MD5": hl.usmHMACMD5AuthProtocol, "SHA": hl.usmHMACSHAAuthProtocol,
                      "SHA224": hl.usmHMAC128SHA224AuthProtocol,
                      "SHA256": hl.usmHMAC192SHA256AuthProtocol,
                      "SHA384": hl.usmHMAC256SHA384AuthProtocol,
                      "SHA512": hl.usmHMAC384SHA512AuthProtocol}
    priv_protocols = {"DES": hl.usmDESPrivProtocol, "3DES": hl.usm3DESEDEPrivProtocol,
                      "AES": hl.usmAesCfb128Protocol, "AES192": hl.usmAesCfb192Protocol,
                      "AES256": hl.usmAesCfb256Protocol}
    kw: dict[str, Any] = {}
    if auth.auth_key is not None:
        kw["authKey"] = auth.auth_key
        kw["authProtocol"] = auth_protocols[auth.auth_protocol]
        if auth.priv_key is not None:
            kw["privKey"] = auth.priv_key
            kw["privProtocol"] = priv_protocols[auth.priv_protocol]
    return hl.UsmUserData(auth.username, **kw)


def _code(indication: str) -> str:
    text = indication.lower()
    if "timeout" in text or "no snmp response" in text:
        return "unreachable"
    if any(w in text for w in ("unknown usm user", "wrong digest", "wrong snmp pdu digest",
                               "authentication", "unsupported security level", "decryption",
                               "unknownusername", "wrongdigest", "decryptionerror",
                               "unsupportedseclevel")):
        return "auth"
    return "protocol"


async def read_ups_mib(host: str, port: int, auth: SnmpAuth, timeout: float,
                       retries: int) -> dict[str, int | str]:
    """GET the UPS-MIB objects of :data:`OIDS` (asyncio). Objects the agent lacks are left out."""
    from pysnmp.error import PySnmpError
    from pysnmp.hlapi.v3arch import asyncio as hl
    from pysnmp.proto import rfc1905

    engines = _ENGINES.setdefault(asyncio.get_running_loop(), {})
    shared = engines.get(auth)
    if shared is None:
        shared = engines[auth] = _Shared(hl.SnmpEngine())
    shared.reads += 1
    engine = shared.engine
    try:
        try:
            target = await hl.UdpTransportTarget.create((host, port), timeout=timeout, retries=retries)
        except PySnmpError as exc:  # pysnmp wraps resolution failures in its own error type
            raise SnmpFailure("unreachable", f"cannot resolve {host}: {exc}") from None
        indication, status, index, binds = await hl.get_cmd(
            engine, _auth_data(hl, auth), target, hl.ContextData(),
            *(hl.ObjectType(hl.ObjectIdentity(oid)) for oid in OIDS.values()))
        if indication:
            raise SnmpFailure(_code(str(indication)), str(indication))
        if status:
            raise SnmpFailure("protocol", f"agent answered {status.prettyPrint()} at varbind {index}")
        names = {oid: name for name, oid in OIDS.items()}
        values: dict[str, int | str] = {}
        for oid, value in binds:
            if isinstance(value, (rfc1905.NoSuchObject, rfc1905.NoSuchInstance, rfc1905.EndOfMibView)):
                continue
            name = names.get(str(oid))
            if name is None:
                continue
            try:
                values[name] = int(value)
            except (TypeError, ValueError):
                values[name] = value.prettyPrint()
        return values
    finally:
        shared.reads -= 1
        if not shared.reads:
            del engines[auth]
            engine.close_dispatcher()


@dataclass
class _Shared:
    """An engine and how many reads use it now."""

    engine: Any
    reads: int = 0
