"""A real validating resolver (unbound) on 127.0.0.1, and zone signing with ldns, for DNSSEC tests.

Load it with ``pytest_plugins = ["tests.servers.unbound"]`` and ask for ``unbound_factory``
(one per session): ``unbound_factory.start(label, stubs, trust_anchors)`` starts an unbound on
a free high port that sends the queries for each zone in *stubs* (``{"probe.test":
"127.0.0.1:5353"}``, typically an nsd from :mod:`tests.servers.nsd`) to that server, and
validates them with *trust_anchors* (DS or DNSKEY lines, e.g. from :func:`sign_zone`). Every
instance stops at the end of the session.

:func:`sign_zone` signs a zone file with a fresh ECDSA P-256 key (``ldns-keygen``,
``ldns-signzone``) and returns the signed text and the DS record to trust.

unbound and ldns come from the machine's packages (``unbound``, ``ldnsutils`` on Debian);
``./dev test`` installs them. If they are missing the tests fail with a message saying so.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest

from tests.servers import HOST, daemon_binary, free_port, read_text, stop_process

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 5

CONFIG = """\
server:
    interface: {host}@{port}
    port: {port}
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    logfile: "{dir}/unbound.log"
    use-syslog: no
    verbosity: 1
    do-daemonize: no
    num-threads: 1
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    # The stub servers are on loopback, and .test is a special-use name unbound blocks.
    do-not-query-localhost: no
    local-zone: "test." nodefault
    module-config: "validator iterator"
    trust-anchor-file: "{dir}/anchors"
    ede: yes
    val-log-level: 2
    qname-minimisation: no
    # Tests change zones: never answer from a cache.
    msg-cache-size: 0
    rrset-cache-size: 0
    key-cache-size: 0
    neg-cache-size: 0
    cache-max-ttl: 0
    cache-max-negative-ttl: 0
    val-bogus-ttl: 0

remote-control:
    control-enable: no

{stubs}"""

STUB = """\
stub-zone:
    name: "{zone}"
    stub-addr: {host}@{port}
"""


def binary(name: str, package: str) -> str:
    return daemon_binary(name, package)



def _run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({done.returncode}): "
                    f"{(done.stdout + done.stderr).decode(errors='replace').strip()}", pytrace=False)
    return done.stdout.decode().strip()


def sign_zone(directory: Path, origin: str, text: str) -> tuple[str, str]:
    """Sign zone file *text* for *origin* with a new key made in *directory*.

    Returns the signed zone text (valid for ldns-signzone's default four weeks) and the DS
    record of the key, to give unbound as a trust anchor.
    """
    directory.mkdir(parents=True, exist_ok=True)
    origin = origin.rstrip(".")
    key = _run([binary("ldns-keygen", "ldnsutils"), "-a", "ECDSAP256SHA256", "-k", origin], directory)
    unsigned = directory / f"{origin}.zone"
    unsigned.write_text(text)
    _run([binary("ldns-signzone", "ldnsutils"), "-f", str(directory / f"{origin}.signed"),
          str(unsigned), key], directory)
    return (directory / f"{origin}.signed").read_text(), (directory / f"{key}.ds").read_text().strip()


@dataclass
class Unbound:
    """A running unbound: where it listens."""

    label: str
    host: str
    port: int
    directory: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    @property
    def address(self) -> str:
        """``host:port``, as the ``resolvers`` key of a dns check spells it."""
        return f"{self.host}:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "unbound.log"

    def stop(self) -> None:
        stop_process(self.proc, STOP_TIMEOUT)


def _answers(port: int, zone: str) -> bool:
    query = dns.message.make_query(zone, "SOA")
    try:
        dns.query.udp(query, HOST, port=port, timeout=0.2)
    except (dns.exception.DNSException, OSError):
        return False
    return True


def start_unbound(directory: Path, stubs: dict[str, str], trust_anchors: list[str],
                  label: str = "unbound") -> Unbound:
    """Start unbound on a free port, forwarding *stubs* (zone → ``host:port``), validating with
    *trust_anchors*; wait until it answers."""
    exe = binary("unbound", "unbound")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "anchors").write_text("\n".join(trust_anchors) + "\n")
    stub_config = ""
    for zone, server in stubs.items():
        host, _, port = server.rpartition(":")
        stub_config += STUB.format(zone=zone.rstrip("."), host=host, port=port)
    first_zone = next(iter(stubs))
    problems = []
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        conf = directory / "unbound.conf"
        conf.write_text(CONFIG.format(host=HOST, port=port, dir=directory, stubs=stub_config))
        for stale in ("unbound.log", "unbound.pid"):
            (directory / stale).unlink(missing_ok=True)
        with open(directory / "stderr.log", "wb") as stderr:
            proc = subprocess.Popen([exe, "-d", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=stderr)
        server = Unbound(label, HOST, port, directory, proc)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if read_text(directory / "unbound.pid") == str(proc.pid) and _answers(port, first_zone):
                return server
            time.sleep(0.01)
        status = (f"exited with status {proc.returncode}" if proc.poll() is not None
                  else f"did not answer within {START_TIMEOUT:g}s")
        server.stop()
        log, stderr_text = read_text(directory / "unbound.log"), read_text(directory / "stderr.log")
        if "already in use" in log + stderr_text:
            problems.append(f"port {port} taken")
            continue
        pytest.fail(f"unbound {label} ({exe}) on {HOST}:{port} {status}.\n"
                    f"log:\n{log or '(empty)'}" + (f"\nstderr:\n{stderr_text}" if stderr_text else ""),
                    pytrace=False)
    pytest.fail(f"unbound {label} could not get a free port after {PORT_ATTEMPTS} tries: "
                f"{'; '.join(problems)}", pytrace=False)


class UnboundFactory:
    """Starts unbound instances in the session's temp dir and stops them all at its end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        self._tmp = tmp_path_factory
        self.started: list[Unbound] = []

    def start(self, label: str, stubs: dict[str, str], trust_anchors: list[str]) -> Unbound:
        server = start_unbound(self._tmp.mktemp(f"unbound-{label}"), stubs, trust_anchors, label)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture(scope="session")
def unbound_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UnboundFactory]:
    """Start validating unbound resolvers with ``unbound_factory.start(...)``; all stop at session end."""
    factory = UnboundFactory(tmp_path_factory)
    try:
        yield factory
    finally:
        factory.stop_all()
