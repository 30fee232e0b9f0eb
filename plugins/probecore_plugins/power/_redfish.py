"""Reading a Redfish chassis's power (``PowerSubsystem``/``PowerSupplies`` or legacy ``Power``)
over HTTP(S) with h11 on trio streams, with basic or session authentication.

:func:`read_chassis_power` returns a :class:`ChassisPower`; problems raise
:class:`RedfishFailure` with the probe's code (``unreachable``, ``auth``, ``not_found``,
``protocol``, ``reply_too_large``: a head over 64 KiB or more than 32 ``1xx`` answers (the
shared :class:`probecore_plugins._client.ResponseHeads`), a body over :data:`MAX_BODY`, a
collection of more than :data:`MAX_SUPPLIES` power supplies). One connection per request (``Connection: close``): a probe makes at most a
handful, and a fresh connection avoids keep-alive edge cases of BMCs.
"""

from __future__ import annotations

import base64
import json
import ssl
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

from .._client import ResponseHeads

MAX_BODY = 4 * 1024 * 1024
MAX_SUPPLIES = 64  # members of a PowerSupplies collection (each costs a request)
SESSIONS = "/redfish/v1/SessionService/Sessions"


class RedfishFailure(Exception):
    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


@dataclass
class Endpoint:
    host: str
    port: int
    https: bool
    context: ssl.SSLContext | None
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class PowerSupply:
    name: str
    state: str | None
    health: str | None
    line_input: str | None
    input_voltage: float | None


@dataclass
class ChassisPower:
    power_state: str | None
    health: str | None
    model: str  # "PowerSubsystem" or "Power"
    supplies: list[PowerSupply]


async def request(endpoint: Endpoint, method: str, path: str,
                  body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; (status, lower-cased headers, body)."""
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    except OSError as exc:
        raise RedfishFailure("unreachable", f"connect: {exc.strerror or exc}") from None
    try:
        if endpoint.https:
            assert endpoint.context is not None
            tls = trio.SSLStream(stream, endpoint.context, server_hostname=endpoint.host,
                                 https_compatible=True)
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                cause = exc.__cause__
                if isinstance(cause, ssl.SSLCertVerificationError):
                    reason = f"certificate verify failed: {cause.verify_message}"
                else:
                    reason = str(getattr(cause, "reason", None) or cause or exc)
                raise RedfishFailure("protocol", f"TLS: {reason}") from None
            stream = tls
        heads = ResponseHeads()
        conn = heads.http
        headers = [("Host", f"{endpoint.host}:{endpoint.port}"), ("Accept", "application/json"),
                   ("Connection", "close"), ("OData-Version", "4.0"), *endpoint.headers]
        if body:
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        data = conn.send(h11.Request(method=method, target=path, headers=headers))
        if body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)
        status, reply_headers, chunks, size = 0, {}, [], 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                heads.feed(await stream.receive_some(65536))
                continue
            if why := heads.over(event):
                raise RedfishFailure("reply_too_large", f"{path}: {why}")
            if isinstance(event, h11.Response):
                status = event.status_code
                reply_headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise RedfishFailure("reply_too_large", f"{path}: body larger than {MAX_BODY} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return status, reply_headers, b"".join(chunks)
    except h11.RemoteProtocolError as exc:
        if why := heads.overflowed(exc):
            raise RedfishFailure("reply_too_large", f"{path}: {why}") from None
        raise RedfishFailure("protocol", f"{path}: not HTTP: {exc}") from None
    except (trio.BrokenResourceError, OSError) as exc:
        raise RedfishFailure("protocol", f"{path}: connection broken: {exc}") from None
    finally:
        await trio.aclose_forcefully(stream)


async def get_json(endpoint: Endpoint, path: str) -> dict[str, Any]:
    status, _, body = await request(endpoint, "GET", path)
    _check_status(status, "GET", path)
    try:
        data = json.loads(body)
    except ValueError:
        raise RedfishFailure("protocol", f"GET {path}: the body is not JSON") from None
    if not isinstance(data, dict):
        raise RedfishFailure("protocol", f"GET {path}: expected a JSON object")
    return data


def _check_status(status: int, method: str, path: str) -> None:
    if status in (401, 403):
        raise RedfishFailure("auth", f"{method} {path}: HTTP {status}")
    if status == 404:
        raise RedfishFailure("not_found", f"{method} {path}: HTTP 404")
    if not 200 <= status < 300:
        raise RedfishFailure("protocol", f"{method} {path}: HTTP {status}")


def basic_auth(username: str, password: str) -> tuple[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return ("Authorization", f"Basic {token}")


async def open_session(endpoint: Endpoint, username: str, password: str) -> str | None:
    """POST a session; add its ``X-Auth-Token`` to *endpoint*; return its URI (for DELETE)."""
    body = json.dumps({"UserName": username, "Password": password}).encode()
    status, headers, _ = await request(endpoint, "POST", SESSIONS, body)
    _check_status(status, "POST", SESSIONS)
    token = headers.get("x-auth-token")
    if not token:
        raise RedfishFailure("protocol", f"POST {SESSIONS}: no X-Auth-Token in the reply")
    endpoint.headers.append(("X-Auth-Token", token))
    return headers.get("location")


async def close_session(endpoint: Endpoint, location: str | None) -> None:
    if location:
        path = location.split("://", 1)[-1]
        path = path[path.find("/"):] if "://" in location else location
        try:
            await request(endpoint, "DELETE", path)
        except RedfishFailure:
            pass


def _link(resource: dict[str, Any], key: str) -> str | None:
    value = resource.get(key)
    if isinstance(value, dict) and isinstance(value.get("@odata.id"), str):
        return value["@odata.id"]
    return None


def _status(resource: dict[str, Any]) -> tuple[str | None, str | None]:
    status = resource.get("Status")
    if not isinstance(status, dict):
        return None, None
    return status.get("State"), status.get("Health")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


async def read_chassis_power(endpoint: Endpoint, chassis: str) -> ChassisPower:
    """The chassis's power state and power supplies (PowerSubsystem first, else legacy Power)."""
    resource = await get_json(endpoint, chassis)
    power_state = resource.get("PowerState") if isinstance(resource.get("PowerState"), str) else None
    _, health = _status(resource)
    supplies: list[PowerSupply] = []
    if (subsystem := _link(resource, "PowerSubsystem")) is not None:
        model = "PowerSubsystem"
        sub = await get_json(endpoint, subsystem)
        collection = _link(sub, "PowerSupplies")
        if collection is not None:
            members = (await get_json(endpoint, collection)).get("Members", [])
            if isinstance(members, list) and len(members) > MAX_SUPPLIES:  # a GET each: bound them
                raise RedfishFailure("reply_too_large", f"{collection}: more than {MAX_SUPPLIES} members")
            for member in members if isinstance(members, list) else []:
                path = member.get("@odata.id") if isinstance(member, dict) else None
                if not isinstance(path, str):
                    raise RedfishFailure("protocol", f"{collection}: a member without @odata.id")
                psu = await get_json(endpoint, path)
                state, psu_health = _status(psu)
                supplies.append(PowerSupply(str(psu.get("Id") or path.rsplit("/", 1)[-1]), state,
                                            psu_health, psu.get("LineInputStatus"), None))
    elif (legacy := _link(resource, "Power")) is not None:
        model = "Power"
        power = await get_json(endpoint, legacy)
        for index, psu in enumerate(power.get("PowerSupplies") or []):
            if not isinstance(psu, dict):
                continue
            state, psu_health = _status(psu)
            supplies.append(PowerSupply(str(psu.get("MemberId") or psu.get("Name") or index), state,
                                        psu_health, None, _number(psu.get("LineInputVoltage"))))
    else:
        raise RedfishFailure("not_found", f"{chassis}: the chassis links neither PowerSubsystem nor Power")
    return ChassisPower(power_state, health, model, supplies)
