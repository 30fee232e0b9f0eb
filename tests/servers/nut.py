"""A real NUT ``upsd`` with ``dummy-ups`` drivers on 127.0.0.1, for the power probe's tests.

Load it with ``pytest_plugins = ["tests.servers.nut"]`` and ask for the ``nut`` fixture: a
:class:`Nut` with ``host``, ``port``, the UPS names (``ups1``, ``ups2``), the users and
:meth:`Nut.set_status` to change a UPS's ``ups.status`` while a probe runs (``SET VAR`` as the
admin user; the driver publishes it at its next poll, within a second, and ``set_status`` waits
for that). One server per session; its config, state directory and ``.dev`` files live in a temp
dir. The ``nut`` fixture puts every UPS a test changed back to its initial values afterwards
(``nut_server`` is the bare session server).

Users in ``upsd.users``: ``admin`` / ``ADMIN_PASSWORD`` (may SET), ``monitor`` /
``MONITOR_PASSWORD`` (``upsmon secondary``: may ``LOGIN``). Both UPSes start ``OL`` with
battery.charge 100, battery.runtime 1800, input.voltage 230.0, output.voltage 229.5, ups.load 12.

The daemons come from Debian's ``nut-server`` (``/lib/nut/upsd``, ``/lib/nut/dummy-ups``; the
``/sbin/upsd`` wrapper reads ``/etc/nut/nut.conf`` and refuses to start unless configured, so
it is not used). ``./dev test`` installs the package.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import HOST, free_port, read_text, stop_process

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 5
NUT_DIR = Path("/lib/nut")
UPS_NAMES = ("ups1", "ups2")
ADMIN_PASSWORD = "admin-secret"
MONITOR_PASSWORD = "monitor-secret"
INITIAL = {
    "device.mfr": "Fake", "device.model": "ProbeUPS 1000", "device.type": "ups",
    "ups.status": "OL", "battery.charge": "100", "battery.runtime": "1800",
    "input.voltage": "230.0", "output.voltage": "229.5", "ups.load": "12",
}


def nut_binary(name: str) -> str:
    path = NUT_DIR / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not installed; run the tests with './dev test', which installs it "
                    "(or: apt-get install nut-server nut-client)", pytrace=False)
    return str(path)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Nut:
    """A running upsd with dummy UPSes ``ups1`` and ``ups2``."""

    host: str
    port: int
    directory: Path
    ups: tuple[str, ...] = UPS_NAMES
    admin: tuple[str, str] = ("admin", ADMIN_PASSWORD)
    monitor: tuple[str, str] = ("monitor", MONITOR_PASSWORD)
    pids: list[int] = field(default_factory=list)
    dirty: set[str] = field(default_factory=set)

    def url(self, ups: str) -> str:
        return f"nut://{ups}@{self.host}:{self.port}"

    def _talk(self, *commands: str) -> list[str]:
        """Send *commands* as one conversation; return the reply line of each."""
        with socket.create_connection((self.host, self.port), timeout=5.0) as sock:
            reader = sock.makefile("r", encoding="utf-8", newline="\n")
            replies = []
            for command in commands:
                sock.sendall(command.encode() + b"\n")
                replies.append(reader.readline().rstrip("\n"))
            return replies

    def set_vars(self, values: dict[str, dict[str, str]]) -> None:
        """``SET VAR`` each ``{ups: {var: value}}`` as the admin user, in one conversation."""
        sets = [f"SET VAR {ups} {var} {_quote(value)}"
                for ups, variables in values.items() for var, value in variables.items()]
        self.dirty.update(values)
        replies = self._talk(f"USERNAME {self.admin[0]}", f"PASSWORD {self.admin[1]}", *sets, "LOGOUT")
        assert replies[:-1] == ["OK"] * (len(sets) + 2), replies

    def get_var(self, ups: str, var: str) -> str:
        (reply,) = self._talk(f"GET VAR {ups} {var}")
        return reply

    def wait_for(self, values: dict[str, dict[str, str]]) -> None:
        """Until upsd serves every ``{ups: {var: value}}`` (the driver publishes a SET at its
        next poll, up to ``pollinterval`` = 1 s later)."""
        deadline = time.monotonic() + 5.0
        for ups, variables in values.items():
            for var, value in variables.items():
                while self.get_var(ups, var) != f"VAR {ups} {var} {_quote(value)}":
                    assert time.monotonic() < deadline, f"upsd does not serve {ups} {var} = {value!r}"
                    time.sleep(0.02)

    def set_status(self, ups: str, status: str) -> None:
        """Set ``ups.status`` of one UPS (``"OB LB"`` …) and wait until upsd serves it."""
        self.set_statuses({ups: status})

    def set_statuses(self, statuses: dict[str, str]) -> None:
        """Set ``ups.status`` of several UPSes at once and wait until upsd serves them all."""
        values = {ups: {"ups.status": status} for ups, status in statuses.items()}
        self.set_vars(values)
        self.wait_for(values)

    def reset(self) -> None:
        """Put every UPS a test changed back to its initial values."""
        if not self.dirty:
            return
        values = {ups: {var: INITIAL[var] for var in ("ups.status", "battery.charge", "battery.runtime")}
                  for ups in sorted(self.dirty)}
        self.set_vars(values)
        self.wait_for(values)
        self.dirty.clear()


def _write_config(directory: Path, port: int) -> None:
    (directory / "state").mkdir(mode=0o700, exist_ok=True)
    ups_conf = ["maxretry = 3"]
    for ups in UPS_NAMES:
        ups_conf += [f"[{ups}]", "    driver = dummy-ups", f"    port = {ups}.dev",
                     "    mode = dummy-once", "    pollinterval = 1", f'    desc = "Fake UPS {ups}"']
        (directory / f"{ups}.dev").write_text("".join(f"{k}: {v}\n" for k, v in INITIAL.items()))
    (directory / "ups.conf").write_text("\n".join(ups_conf) + "\n")
    (directory / "upsd.conf").write_text(f"LISTEN {HOST} {port}\nMAXAGE 60\n")
    users = directory / "upsd.users"
    users.write_text(f"[admin]\n    password = {ADMIN_PASSWORD}\n    actions = SET\n    instcmds = ALL\n"
                     f"[monitor]\n    password = {MONITOR_PASSWORD}\n    upsmon secondary\n")
    users.chmod(0o600)


def _serving(host: str, port: int) -> bool:
    """Whether upsd answers with real data (not ``WAIT``) for every UPS."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            reader = sock.makefile("r", encoding="utf-8", newline="\n")
            for ups in UPS_NAMES:
                sock.sendall(f"GET VAR {ups} ups.status\n".encode())
                if reader.readline().strip() != f'VAR {ups} ups.status "OL"':
                    return False
    except OSError:
        return False
    return True


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):  # upsd first, then the driver it reads
        stop_process(proc, STOP_TIMEOUT)


def start_nut(directory: Path) -> tuple[Nut, list[subprocess.Popen[bytes]]]:
    """Write configs into *directory*, start the drivers and upsd; wait until upsd serves data."""
    upsd, dummy = nut_binary("upsd"), nut_binary("dummy-ups")
    env = {**os.environ, "NUT_CONFPATH": str(directory), "NUT_STATEPATH": str(directory / "state")}
    user = ["-u", "root"] if os.geteuid() == 0 else []
    problems = []
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        _write_config(directory, port)
        procs: list[subprocess.Popen[bytes]] = []
        log = open(directory / "nut.log", "wb")  # noqa: SIM115 - closed below
        try:
            for ups in UPS_NAMES:
                procs.append(subprocess.Popen([dummy, "-a", ups, *user, "-F"], env=env,
                                              stdin=subprocess.DEVNULL, stdout=log, stderr=log))
            deadline = time.monotonic() + START_TIMEOUT
            while not all((directory / "state" / f"dummy-ups-{ups}").exists() for ups in UPS_NAMES):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    _stop(procs)
                    pytest.fail(f"dummy-ups did not start:\n{read_text(directory / 'nut.log')}",
                                pytrace=False)
                time.sleep(0.02)
            procs.append(subprocess.Popen([upsd, *user, "-F"], env=env, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log))
            while time.monotonic() < deadline and procs[-1].poll() is None:
                if _serving(HOST, port):
                    return Nut(HOST, port, directory, pids=[p.pid for p in procs]), procs
                time.sleep(0.05)
        finally:
            log.close()
        status = (f"exited with status {procs[-1].returncode}" if procs[-1].poll() is not None
                  else f"did not serve data within {START_TIMEOUT:g}s")
        _stop(procs)
        text = read_text(directory / "nut.log")
        if "Address already in use" in text or "not listening on" in text.lower():
            problems.append(f"port {port} taken")
            continue
        pytest.fail(f"upsd on {HOST}:{port} {status}.\nlog:\n{text or '(empty)'}", pytrace=False)
    pytest.fail(f"upsd could not get a free port after {PORT_ATTEMPTS} tries: {'; '.join(problems)}",
                pytrace=False)


@pytest.fixture(scope="session")
def nut_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nut]:
    """A real upsd on ``127.0.0.1:<free port>`` with ``ups1`` and ``ups2``, for the session."""
    server, procs = start_nut(tmp_path_factory.mktemp("nut"))
    try:
        yield server
    finally:
        _stop(procs)


@pytest.fixture
def nut(nut_server: Nut) -> Iterator[Nut]:
    """The session's upsd, with both UPSes put back to ``OL`` (and full battery) afterwards."""
    try:
        yield nut_server
    finally:
        nut_server.reset()
