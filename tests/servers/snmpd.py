"""A real net-snmp ``snmpd`` on 127.0.0.1 serving a UPS-MIB (RFC 1628) that the tests control.

Load it with ``pytest_plugins = ["tests.servers.snmpd"]`` and ask for the ``snmpd`` fixture: an
:class:`Snmpd` with ``host``, ``port``, the v2c community and the v3 user, and
:meth:`Snmpd.set` to change UPS-MIB values while a probe runs. The agent serves the UPS-MIB
subtree through a ``pass_persist`` script (in the temp dir) that reads a JSON state file on every
request, so a change is served at once. One agent per session; the ``snmpd`` fixture puts the
initial values back after each test.

Access: community ``public`` (v2c, read-only, 127.0.0.1), USM user ``probev3`` with SHA
``V3_AUTH`` and AES ``V3_PRIV`` (authPriv). snmpd comes from Debian's ``snmpd`` (``./dev test``
installs it); MIB files are not needed (``MIBS`` is emptied).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import HOST, daemon_binary, read_text, stop_process

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 5
V3_USER = "probev3"
V3_AUTH = "auth-pass-123"
V3_PRIV = "priv-pass-456"
MIB = "1.3.6.1.2.1.33.1"
NAMES = {  # UPS-MIB object → (OID, pass_persist type)
    "upsBatteryStatus": (f"{MIB}.2.1.0", "integer"),
    "upsSecondsOnBattery": (f"{MIB}.2.2.0", "integer"),
    "upsEstimatedMinutesRemaining": (f"{MIB}.2.3.0", "integer"),
    "upsEstimatedChargeRemaining": (f"{MIB}.2.4.0", "integer"),
    "upsInputLineBads": (f"{MIB}.3.1.0", "counter"),
    "upsInputVoltage": (f"{MIB}.3.3.1.3.1", "integer"),
    "upsOutputSource": (f"{MIB}.4.1.0", "integer"),
    "upsOutputVoltage": (f"{MIB}.4.4.1.2.1", "integer"),
    "upsOutputPercentLoad": (f"{MIB}.4.4.1.5.1", "integer"),
}
INITIAL = {"upsBatteryStatus": 2, "upsSecondsOnBattery": 0, "upsEstimatedMinutesRemaining": 30,
           "upsEstimatedChargeRemaining": 100, "upsInputLineBads": 0, "upsInputVoltage": 230,
           "upsOutputSource": 3, "upsOutputVoltage": 229, "upsOutputPercentLoad": 12}

PASS_PERSIST = r'''
import json, sys
state_file = sys.argv[1]
def load():
    with open(state_file) as f:
        return {tuple(int(x) for x in k.split(".")): v for k, v in json.load(f).items()}
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "PING":
        print("PONG", flush=True)
    elif cmd in ("get", "getnext"):
        oid = tuple(int(x) for x in sys.stdin.readline().strip().strip(".").split("."))
        data = load()
        hit = (oid if oid in data else None) if cmd == "get" else next((k for k in sorted(data) if k > oid), None)
        if hit is None:
            print("NONE", flush=True)
        else:
            print("." + ".".join(map(str, hit)), *data[hit], sep="\n", flush=True)
    elif cmd == "set":
        sys.stdin.readline(); sys.stdin.readline()
        print("not-writable", flush=True)
    elif not cmd:
        break
'''


def free_udp_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class Snmpd:
    host: str
    port: int
    directory: Path
    community: str = "public"
    v3: tuple[str, str, str] = (V3_USER, V3_AUTH, V3_PRIV)

    @property
    def url(self) -> str:
        return f"snmp://{self.host}:{self.port}"

    def set(self, **values: int | None) -> None:
        """Change UPS-MIB objects by name (``None`` removes one); served from the next request."""
        state = json.loads((self.directory / "values.json").read_text())
        state.update(values)
        _write_state(self.directory, {k: v for k, v in state.items() if v is not None})

    def reset(self) -> None:
        _write_state(self.directory, INITIAL)


def _write_state(directory: Path, values: dict[str, int]) -> None:
    (directory / "values.json").write_text(json.dumps(values))
    served = {NAMES[k][0]: [NAMES[k][1], str(v)] for k, v in values.items()}
    tmp = directory / "state.json.tmp"
    tmp.write_text(json.dumps(served))
    os.replace(tmp, directory / "state.json")


def _ready(port: int) -> bool:
    from probecore_plugins.power import _snmp

    try:
        values = asyncio.run(_snmp.read_ups_mib(HOST, port, _snmp.SnmpAuth(), 0.2, 0))
    except _snmp.SnmpFailure:
        return False
    return values.get("upsOutputSource") == 3


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, STOP_TIMEOUT)


def start_snmpd(directory: Path) -> tuple[Snmpd, subprocess.Popen[bytes]]:
    binary = daemon_binary("snmpd", "snmpd")
    (directory / "persist").mkdir(exist_ok=True)
    (directory / "ups_mib.py").write_text(PASS_PERSIST)
    _write_state(directory, INITIAL)
    env = {**os.environ, "MIBS": "", "SNMP_PERSISTENT_DIR": str(directory / "persist")}
    problems = []
    for _ in range(PORT_ATTEMPTS):
        port = free_udp_port()
        conf = directory / "snmpd.conf"
        conf.write_text(
            f"agentAddress udp:{HOST}:{port}\n"
            f"rocommunity public {HOST}\n"
            f'createUser {V3_USER} SHA "{V3_AUTH}" AES "{V3_PRIV}"\n'
            f"rouser {V3_USER} priv\n"
            f"pass_persist .{MIB.rsplit('.', 1)[0]} {sys.executable} {directory / 'ups_mib.py'} "
            f"{directory / 'state.json'}\n")
        with open(directory / "snmpd.log", "wb") as log:
            proc = subprocess.Popen([binary, "-f", "-Lo", "-C", "-c", str(conf), "-p",
                                     str(directory / "snmpd.pid")], env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _ready(port):
                return Snmpd(HOST, port, directory), proc
            time.sleep(0.05)
        _stop(proc)
        text = read_text(directory / "snmpd.log")
        if "Address already in use" in text:
            problems.append(f"port {port} taken")
            continue
        pytest.fail(f"snmpd on {HOST}:{port} did not serve the UPS-MIB.\nlog:\n{text or '(empty)'}",
                    pytrace=False)
    pytest.fail(f"snmpd could not get a free port: {'; '.join(problems)}", pytrace=False)


@pytest.fixture(scope="session")
def snmpd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    server, proc = start_snmpd(tmp_path_factory.mktemp("snmpd"))
    try:
        yield server
    finally:
        _stop(proc)


@pytest.fixture
def snmpd(snmpd_server: Snmpd) -> Iterator[Snmpd]:
    try:
        yield snmpd_server
    finally:
        snmpd_server.reset()
