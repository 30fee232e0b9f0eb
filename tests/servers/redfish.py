"""A static Redfish mockup served over HTTPS by a real nginx, for the power probe's Redfish tests.

No Redfish emulator with power resources installs from the package registries (DMTF's
Redfish-Mockup-Server is not published; sushy-tools' emulator has no Power/PowerSubsystem and a
fixed ``PowerState``), so this does what DMTF's mockup server does — serve a mockup tree of
``index.json`` files — with nginx, which the suite already uses. Load it with
``pytest_plugins = ["tests.servers.redfish"]`` and ask for ``redfish``: a :class:`Redfish` with
``basic_url(chassis)`` (HTTP basic auth, user ``admin`` / ``REDFISH_PASSWORD``),
``session_url(chassis)`` (session auth: ``POST /redfish/v1/SessionService/Sessions`` answers
201 with ``X-Auth-Token: SESSION_TOKEN``; other requests need that header; nginx cannot check
the posted credentials, so any are accepted), ``ca_file`` (the trustme CA of the certificate
for 127.0.0.1) and :meth:`Redfish.write` to change a mockup resource while a probe runs.

Chassis ``1U`` has ``PowerSubsystem`` with supplies ``Bay1`` and ``Bay2``; chassis ``Legacy``
has the legacy ``Power`` resource with two ``PowerSupplies``. The ``redfish`` fixture writes
the mockup afresh for each test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.servers import HOST, daemon_binary, free_port, read_text, stop_process

START_TIMEOUT = 10.0
REDFISH_PASSWORD = "bmc-secret"
SESSION_TOKEN = "session-token-42"
ROOT = "/redfish/v1"

CONFIG = """\
{user}worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    default_type application/json;
    ssl_certificate {dir}/cert.pem;
    ssl_certificate_key {dir}/key.pem;
    server {{
        listen {host}:{basic_port} ssl;
        root {dir}/mockup;
        auth_basic "redfish";
        auth_basic_user_file {dir}/users;
        location / {{ try_files $uri $uri/index.json =404; }}
    }}
    server {{
        listen {host}:{session_port} ssl;
        root {dir}/mockup;
        location = {root}/SessionService/Sessions {{
            if ($request_method != POST) {{ return 405; }}
            add_header X-Auth-Token {token} always;
            add_header Location {root}/SessionService/Sessions/1 always;
            return 201 '{{"Id": "1"}}';
        }}
        location / {{
            if ($http_x_auth_token != "{token}") {{ return 401; }}
            if ($request_method = DELETE) {{ return 204; }}
            try_files $uri $uri/index.json =404;
        }}
    }}
}}
"""


def link(path: str) -> dict[str, str]:
    return {"@odata.id": path}


def psu(name: str, state: str = "Enabled", health: str = "OK", line: str = "Normal") -> dict[str, Any]:
    return {"@odata.type": "#PowerSupply.v1_5_0.PowerSupply", "Id": name, "Name": f"Power supply {name}",
            "Status": {"State": state, "Health": health}, "LineInputStatus": line}


def legacy_psu(index: int, state: str = "Enabled", health: str = "OK") -> dict[str, Any]:
    return {"MemberId": str(index), "Name": f"PSU {index}", "LineInputVoltage": 230,
            "Status": {"State": state, "Health": health}}


def initial_mockup() -> dict[str, dict[str, Any]]:
    chassis = f"{ROOT}/Chassis"
    return {
        f"{chassis}/1U": {"@odata.type": "#Chassis.v1_23_0.Chassis", "Id": "1U", "PowerState": "On",
                          "Status": {"State": "Enabled", "Health": "OK"},
                          "PowerSubsystem": link(f"{chassis}/1U/PowerSubsystem")},
        f"{chassis}/1U/PowerSubsystem": {"Id": "PowerSubsystem",
                                         "PowerSupplies": link(f"{chassis}/1U/PowerSubsystem/PowerSupplies")},
        f"{chassis}/1U/PowerSubsystem/PowerSupplies": {
            "Members": [link(f"{chassis}/1U/PowerSubsystem/PowerSupplies/Bay1"),
                        link(f"{chassis}/1U/PowerSubsystem/PowerSupplies/Bay2")]},
        f"{chassis}/1U/PowerSubsystem/PowerSupplies/Bay1": psu("Bay1"),
        f"{chassis}/1U/PowerSubsystem/PowerSupplies/Bay2": psu("Bay2"),
        f"{chassis}/Legacy": {"Id": "Legacy", "PowerState": "On", "Power": link(f"{chassis}/Legacy/Power"),
                              "Status": {"State": "Enabled", "Health": "OK"}},
        f"{chassis}/Legacy/Power": {"Id": "Power", "PowerSupplies": [legacy_psu(0), legacy_psu(1)]},
        f"{chassis}/NoPower": {"Id": "NoPower", "PowerState": "On"},
    }


@dataclass(frozen=True)
class Redfish:
    host: str
    basic_port: int
    session_port: int
    directory: Path
    username: str = "admin"
    password: str = REDFISH_PASSWORD

    @property
    def ca_file(self) -> str:
        return str(self.directory / "ca.pem")

    def basic_url(self, chassis: str) -> str:
        return f"redfish://{self.host}:{self.basic_port}{ROOT}/Chassis/{chassis}"

    def session_url(self, chassis: str) -> str:
        return f"redfish://{self.host}:{self.session_port}{ROOT}/Chassis/{chassis}"

    def write(self, path: str, resource: dict[str, Any]) -> None:
        """Serve *resource* at *path* from the next request on."""
        target = self.directory / "mockup" / path.strip("/") / "index.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(resource))
        tmp.replace(target)

    def reset(self) -> None:
        for path, resource in initial_mockup().items():
            self.write(path, resource)


def _ready(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def start(directory: Path) -> tuple[Redfish, subprocess.Popen[bytes]]:
    binary = daemon_binary("nginx", "nginx-light")
    for sub in ("tmp", "mockup"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert = ca.issue_cert(HOST)
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    (directory / "users").write_text(f"admin:{{PLAIN}}{REDFISH_PASSWORD}\n")
    user = "user root;\n" if os.geteuid() == 0 else ""
    for _ in range(5):
        basic_port, session_port = free_port(), free_port()
        (directory / "nginx.conf").write_text(CONFIG.format(
            user=user, dir=directory, host=HOST, basic_port=basic_port, session_port=session_port,
            root=ROOT, token=SESSION_TOKEN))
        with open(directory / "stderr.log", "wb") as stderr:
            proc = subprocess.Popen([binary, "-p", str(directory), "-c", str(directory / "nginx.conf"),
                                     "-e", str(directory / "error.log")],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        server = Redfish(HOST, basic_port, session_port, directory)
        server.reset()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if read_text(directory / "nginx.pid") == str(proc.pid) and _ready(basic_port) and _ready(session_port):
                return server, proc
            time.sleep(0.02)
        _stop(proc)
        log = read_text(directory / "error.log") + read_text(directory / "stderr.log")
        if "Address already in use" in log:
            continue
        pytest.fail(f"nginx for the Redfish mockup did not start:\n{log}", pytrace=False)
    pytest.fail("nginx for the Redfish mockup found no free ports", pytrace=False)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc)


@pytest.fixture(scope="session")
def redfish_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redfish]:
    server, proc = start(tmp_path_factory.mktemp("redfish"))
    try:
        yield server
    finally:
        _stop(proc)


@pytest.fixture
def redfish(redfish_server: Redfish) -> Iterator[Redfish]:
    redfish_server.reset()
    yield redfish_server
