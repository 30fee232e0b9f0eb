"""Real nsd instances on 127.0.0.1, for tests of the ``dns`` probe kind (authoritative DNS).

Load it with ``pytest_plugins = ["tests.servers.nsd"]`` in a test module and ask for the
``nsd_factory`` fixture (one per session): ``nsd_factory.start(label, zones)`` starts an nsd on
a free high port serving *zones* (``{"probe.test": zone file text}``) and returns an :class:`Nsd`.
Build zone files with :func:`zone_text`. Every instance is stopped at the end of the session,
or earlier with :meth:`Nsd.stop`. Do not import this module there at run time (pytest must be
the first to import it); ``if TYPE_CHECKING: from tests.servers.nsd import Nsd`` is fine.

Each instance has its own temp dir (config, zone files, pid file, log, control socket). The
config turns response-rate limiting off (Debian's default of 200 q/s drops answers under test
load) and enables ``nsd-control`` over a unix socket in that dir (no TLS keys needed), which
:meth:`Nsd.set_zone` uses to reload an edited zone; it then waits until the server answers with
the new SOA serial, so the next query is guaranteed to see the change.

nsd comes from the machine's packages (``nsd`` on Debian); ``./dev test`` installs it. If it is
missing the tests fail (they do not skip) with a message saying how to get it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest

from tests.servers import HOST, daemon_binary, free_port, read_text

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
RELOAD_TIMEOUT = 10.0
PORT_ATTEMPTS = 5

CONFIG = """\
server:
    ip-address: {host}@{port}
    do-ip4: yes
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{dir}"
    database: ""
    zonelistfile: "{dir}/zone.list"
    xfrdfile: "{dir}/xfrd.state"
    xfrdir: "{dir}"
    pidfile: "{dir}/nsd.pid"
    logfile: "{dir}/nsd.log"
    server-count: 1
    verbosity: 1
    hide-version: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0

remote-control:
    control-enable: yes
    control-interface: {dir}/nsd.ctl

{zones}"""

ZONE_CONFIG = """\
zone:
    name: {name}
    zonefile: {file}
"""


def zone_text(origin: str, serial: int, records: str, *, ttl: int = 300, nameserver: str = HOST) -> str:
    """A zone file for *origin*: SOA with *serial*, ``NS ns1``, ``ns1 A nameserver``, *records*.

    *records* are zone-file lines relative to the origin (``www A 192.0.2.10``).
    """
    head = (f"$ORIGIN {origin.rstrip('.')}.\n"
            f"$TTL {ttl}\n"
            f"@ IN SOA ns1 hostmaster {serial} 3600 600 86400 60\n"
            f"@ IN NS ns1\n"
            f"ns1 IN A {nameserver}\n")
    return head + textwrap.dedent(records).strip() + "\n"


def nsd_binary(name: str = "nsd") -> str:
    """The nsd (or nsd-control) executable, or a test failure that says how to get one."""
    return daemon_binary(name, "nsd")



def soa_serial(host: str, port: int, zone: str, timeout: float = 0.5) -> int | None:
    """The SOA serial *host*:*port* answers for *zone*, or ``None`` if it does not (yet)."""
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    try:
        response = dns.query.udp(query, host, port=port, timeout=timeout)
    except (dns.exception.DNSException, OSError):
        return None
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


def _serial_in(text: str) -> int:
    """The serial of the zone's SOA record (``... IN SOA mname rname serial ...``)."""
    for line in text.splitlines():
        parts = line.split(";", 1)[0].split()
        if "SOA" in parts and parts.index("SOA") > 0 and parts[parts.index("SOA") - 1].upper() == "IN":
            return int(parts[parts.index("SOA") + 3])
    raise ValueError("zone text has no SOA record")


@dataclass
class Nsd:
    """A running nsd: where it listens, what it serves, and how to change it."""

    label: str
    host: str
    port: int
    directory: Path
    zones: dict[str, str]
    proc: subprocess.Popen[bytes] = field(repr=False)

    @property
    def address(self) -> str:
        """``host:port``, as the ``servers`` key of a dns check spells it."""
        return f"{self.host}:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "nsd.log"

    def zone_file(self, zone: str) -> Path:
        return self.directory / f"{zone.rstrip('.')}.zone"

    def set_zone(self, zone: str, text: str) -> None:
        """Replace *zone*'s file with *text*, reload it, and wait until nsd serves its serial.

        *text* must carry a new SOA serial (that is how the wait knows the reload is done).
        """
        serial = _serial_in(text)
        path = self.zone_file(zone)
        before = path.stat().st_mtime_ns
        path.write_text(text)
        # nsd re-reads a zone file only if its mtime changed: make sure it did, whatever the
        # file system's timestamp granularity.
        stamp = max(time.time_ns(), before + 1_000_000_000)
        os.utime(path, ns=(stamp, stamp))
        self.zones[zone] = text
        control = subprocess.run(
            [nsd_binary("nsd-control"), "-c", str(self.directory / "nsd.conf"), "reload", zone],
            capture_output=True, timeout=RELOAD_TIMEOUT, stdin=subprocess.DEVNULL)
        if control.returncode != 0 or b"ok" not in control.stdout:
            pytest.fail(f"nsd-control reload {zone} failed ({control.returncode}): "
                        f"{(control.stdout + control.stderr).decode(errors='replace').strip()}\n"
                        f"log:\n{read_text(self.log)}", pytrace=False)
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while time.monotonic() < deadline:
            if soa_serial(self.host, self.port, zone) == serial:
                return
            time.sleep(0.01)
        pytest.fail(f"nsd {self.label} did not serve serial {serial} of {zone} within "
                    f"{RELOAD_TIMEOUT:g}s of the reload.\nlog:\n{read_text(self.log)}", pytrace=False)

    def stop(self) -> None:
        """Stop nsd (SIGTERM to the main process named in the pid file, then to the one started)."""
        if self.proc.poll() is not None:
            return
        pid = read_text(self.directory / "nsd.pid")
        try:
            if pid.isdigit():
                os.kill(int(pid), signal.SIGTERM)
            self.proc.terminate()
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)


def start_nsd(directory: Path, zones: dict[str, str], label: str = "nsd") -> Nsd:
    """Write a config and *zones* into *directory*, start nsd on a free port, wait until it answers.

    "Answers" means: the pid file names the started server and every zone's SOA serial is served.
    """
    binary = nsd_binary()
    nsd_binary("nsd-control")
    directory.mkdir(parents=True, exist_ok=True)
    zone_config = ""
    for name, text in zones.items():
        file = f"{name.rstrip('.')}.zone"
        (directory / file).write_text(text)
        zone_config += ZONE_CONFIG.format(name=name, file=file)
    serials = {name: _serial_in(text) for name, text in zones.items()}
    problems = []
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        conf = directory / "nsd.conf"
        conf.write_text(CONFIG.format(host=HOST, port=port, dir=directory, zones=zone_config))
        for stale in ("nsd.log", "nsd.pid", "nsd.ctl", "xfrd.state", "zone.list"):
            (directory / stale).unlink(missing_ok=True)
        with open(directory / "stderr.log", "wb") as stderr:
            proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=stderr)
        server = Nsd(label, HOST, port, directory, dict(zones), proc)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if read_text(directory / "nsd.pid").isdigit() and all(
                    soa_serial(HOST, port, name, timeout=0.2) == serial for name, serial in serials.items()):
                return server
            time.sleep(0.01)
        status = (f"exited with status {proc.returncode}" if proc.poll() is not None
                  else f"did not serve its zones within {START_TIMEOUT:g}s")
        server.stop()
        log, stderr_text = read_text(directory / "nsd.log"), read_text(directory / "stderr.log")
        if "already in use" in log + stderr_text:  # someone took the port: try another
            problems.append(f"port {port} taken")
            continue
        pytest.fail(f"nsd {label} ({binary}) on {HOST}:{port} {status}.\n"
                    f"log ({directory / 'nsd.log'}):\n{log or '(empty)'}"
                    + (f"\nstderr:\n{stderr_text}" if stderr_text else ""), pytrace=False)
    pytest.fail(f"nsd {label} could not get a free port after {PORT_ATTEMPTS} tries: "
                f"{'; '.join(problems)}", pytrace=False)


class NsdFactory:
    """Starts nsd instances in the session's temp dir and stops them all at its end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        self._tmp = tmp_path_factory
        self.started: list[Nsd] = []

    def start(self, label: str, zones: dict[str, str]) -> Nsd:
        """Start an nsd serving *zones* (``{origin: zone file text}``); *label* names its dir."""
        server = start_nsd(self._tmp.mktemp(f"nsd-{label}"), zones, label)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture(scope="session")
def nsd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsdFactory]:
    """Start real nsd servers with ``nsd_factory.start(label, zones)``; all stop at session end."""
    factory = NsdFactory(tmp_path_factory)
    try:
        yield factory
    finally:
        factory.stop_all()
