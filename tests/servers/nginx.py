"""A real nginx on 127.0.0.1, for tests that need a web server (or any TCP service that answers).

Load it with ``pytest_plugins = ["tests.servers.nginx"]`` in a test module and ask for the
``nginx`` fixture: an :class:`Nginx` with ``host``, ``port`` and ``url``. Do not import this
module there at run time (pytest must be the first to import it, to rewrite and register it);
``if TYPE_CHECKING: from tests.servers.nginx import Nginx`` is fine. One server per session;
its config, pid file, logs, temp paths and www root live in a temp dir.

The server answers ``GET /`` with ``index.html`` (``probecore test page``) and ``GET /fast``
with ``ok``. nginx comes from the machine's packages (``nginx-light`` on Debian); ``./dev test``
installs it.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import HOST, daemon_binary, free_port, read_text, stop_process

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 5
INDEX_TEXT = "probecore test page\n"

CONFIG = """\
{user}worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    keepalive_requests 1000000;
    server {{
        listen {host}:{port};
        server_name localhost;
        root {dir}/www;
        location = /fast {{ default_type text/plain; return 200 "ok\\n"; }}
{extra}
    }}
}}
"""


@dataclass(frozen=True)
class Nginx:
    """A running nginx: where it listens and where its files are."""

    host: str
    port: int
    directory: Path
    pid: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def error_log(self) -> Path:
        return self.directory / "error.log"


def nginx_binary() -> str:
    return daemon_binary("nginx", "nginx-light")



def _ready(directory: Path, pid: int, port: int, host: str = HOST) -> bool:
    """Whether *this* nginx serves on *port*: another process may hold the port meanwhile.

    nginx writes its pid file only after it has bound its listening sockets; then a request
    to ``/fast`` must be answered by nginx.
    """
    if read_text(directory / "nginx.pid") != str(pid):
        return False
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"GET /fast HTTP/1.0\r\nHost: localhost\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
    except OSError:
        return False
    return answer.startswith(b"HTTP/1.1 200 ") and b"\r\nServer: nginx" in answer


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # SIGTERM: nginx's fast shutdown; the master stops its workers
    stop_process(proc, STOP_TIMEOUT)


def start_nginx(directory: Path, *, host: str = HOST, extra: str = "",
                wrap: Sequence[str] = ()) -> tuple[Nginx, subprocess.Popen[bytes]]:
    """Write a config into *directory* and start nginx on a free port; wait until it answers.

    :param host: the address to listen on (an address of a network-lab namespace, with *wrap*).
    :param extra: more directives for the ``server`` block (``location`` blocks: slow
        sub-resources with ``limit_rate``, a login that sets a cookie …).
    :param wrap: a command prefix to start nginx with, e.g. ``NetLab.exec("a")``'s
        ``ip netns exec NS`` (it execs nginx: the process is nginx itself).
    """
    binary = nginx_binary()
    for sub in ("www", "tmp"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    (directory / "www" / "index.html").write_text(INDEX_TEXT)
    # Workers read the www root in a 0700 temp dir: as root, let them run as root too.
    user = "user root;\n" if os.geteuid() == 0 else ""
    problems = []
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        conf = directory / "nginx.conf"
        conf.write_text(CONFIG.format(user=user, dir=directory, host=host, port=port, extra=extra))
        error_log = directory / "error.log"
        error_log.unlink(missing_ok=True)
        (directory / "nginx.pid").unlink(missing_ok=True)
        with open(directory / "stderr.log", "wb") as stderr:
            proc = subprocess.Popen(
                [*wrap, binary, "-p", str(directory), "-c", str(conf), "-e", str(error_log)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _ready(directory, proc.pid, port, host):
                return Nginx(host, port, directory, proc.pid), proc
            time.sleep(0.02)
        status = (f"exited with status {proc.returncode}" if proc.poll() is not None
                  else f"did not answer HTTP within {START_TIMEOUT:g}s")
        _stop(proc)
        log, stderr_text = read_text(error_log), read_text(directory / "stderr.log")
        if "Address already in use" in log + stderr_text:  # someone took the port: try another
            problems.append(f"port {port} taken")
            continue
        pytest.fail(f"nginx ({binary}) on {host}:{port} {status}.\n"
                    f"error log ({error_log}):\n{log or '(empty)'}"
                    + (f"\nstderr:\n{stderr_text}" if stderr_text else ""), pytrace=False)
    pytest.fail(f"nginx could not get a free port after {PORT_ATTEMPTS} tries: {'; '.join(problems)}",
                pytrace=False)


def png(width: int, height: int) -> bytes:
    """A valid PNG of random pixels (incompressible: its size is its transfer size), so that
    Chromium decodes all of it rather than giving up on garbage after the first bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + os.urandom(width * 3) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 0)) + chunk(b"IEND", b""))


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """A real nginx on ``127.0.0.1:<free port>`` for the whole session (stopped at its end)."""
    server, proc = start_nginx(tmp_path_factory.mktemp("nginx"))
    try:
        yield server
    finally:
        _stop(proc)
