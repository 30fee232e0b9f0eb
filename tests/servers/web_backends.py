"""A real nginx with TLS, redirects, a large body, a 500 and a slow upstream, for the ``web`` probe.

Load it with ``pytest_plugins = ["tests.servers.web_backends"]`` and ask for the ``web_nginx``
fixture (one per session): a :class:`WebNginx` with its ports, the test CA's file and helpers
for URLs. Do not import this module at run time in a test module (pytest must import it first
to rewrite it); ``if TYPE_CHECKING: from tests.servers.web_backends import WebNginx`` is fine.

What runs, all on 127.0.0.1 high ports, with config, certificates and files in a temp dir:

* a **delay backend** (a separate Python process, trio + h11, keep-alive) answering
  ``GET /delay?ms=D`` after sleeping D ms, with ``Server-Timing: app;dur=<ms it held the
  request>``; run it by hand with ``python -m tests.servers.web_backends backend PORT``;
* **nginx** (Debian's nginx-light) with three listeners: ``port`` (HTTP), ``tls_port`` (HTTPS,
  a certificate for ``localhost``, ``127.0.0.1`` and ``www.probe.test`` issued by a trustme CA
  whose PEM is ``ca_file``) and ``untrusted_port`` (HTTPS, a certificate from a CA nobody
  trusts, expiring in 10 days). Locations:

  ``/fast`` → ``ok``; ``/host`` → the request's host name (``$host``); ``/error`` → 500;
  ``/page.html`` → a page (:data:`PAGE_TEXT`) with header ``X-Probe: probecore-test``;
  ``/r1`` → 302 ``/r2`` → 301 ``/r3`` → 307 ``/page.html``; ``/loop`` → 302 ``/loop``;
  ``/big.bin`` → :data:`BIG_SIZE` bytes; ``/delay?ms=D`` → proxied to the delay backend
  (upstream keep-alive, so the proxy adds little).

A tiny DNS responder for dnspython's path is :func:`serve_dns` (a trio task, started by a test).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.servers import HOST, daemon_binary, free_port, read_text, stop_process

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 5
PAGE_TEXT = "<html><body><h1>probecore web test page</h1><p>build 4711</p></body></html>\n"
BIG_SIZE = 2 * 1024 * 1024
UNTRUSTED_DAYS = 10
NAMES = ("localhost", "127.0.0.1", "www.probe.test")

CONFIG = """\
{user}worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    keepalive_requests 1000000;
    types {{ text/html html; application/octet-stream bin; }}
    upstream delay_backend {{ server {host}:{backend}; keepalive 64; }}
    server {{
        listen {host}:{port};
        listen {host}:{tls_port} ssl;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate {dir}/trusted.pem;
        ssl_certificate_key {dir}/trusted.key;
        server_name _;
        root {dir}/www;
        location = /fast {{ default_type text/plain; return 200 "ok\\n"; }}
        location = /host {{ default_type text/plain; return 200 "$host\\n"; }}
        location = /error {{ default_type text/plain; return 500 "broken\\n"; }}
        location = /page.html {{ add_header X-Probe "probecore-test"; }}
        location = /r1 {{ return 302 /r2; }}
        location = /r2 {{ return 301 /r3; }}
        location = /r3 {{ return 307 /page.html; }}
        location = /loop {{ return 302 /loop; }}
        location /delay {{
            proxy_pass http://delay_backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 60s;
        }}
    }}
    server {{
        listen {host}:{untrusted_port} ssl;
        ssl_certificate {dir}/untrusted.pem;
        ssl_certificate_key {dir}/untrusted.key;
        server_name _;
        location / {{ default_type text/plain; return 200 "untrusted\\n"; }}
    }}
}}
"""


@dataclass(frozen=True)
class WebNginx:
    """A running nginx (and its delay backend): ports, files, URLs."""

    host: str
    port: int
    tls_port: int
    untrusted_port: int
    backend_port: int
    directory: Path
    ca_file: Path

    def url(self, path: str = "/", *, tls: bool = False, host: str | None = None) -> str:
        scheme, port = ("https", self.tls_port) if tls else ("http", self.port)
        return f"{scheme}://{host or self.host}:{port}{path}"

    @property
    def error_log(self) -> Path:
        return self.directory / "error.log"


def _binary() -> str:
    return daemon_binary("nginx", "nginx-light")



def _get(port: int, request: bytes) -> bytes:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            return answer
    except OSError:
        return b""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, STOP_TIMEOUT)


def write_certificates(directory: Path) -> Path:
    """A trusted CA (returned: its PEM) with a server certificate, and an untrusted one."""
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    leaf = ca.issue_cert(*NAMES)
    leaf.private_key_pem.write_to_path(str(directory / "trusted.key"))
    leaf.cert_chain_pems[0].write_to_path(str(directory / "trusted.pem"))
    for blob in leaf.cert_chain_pems[1:]:
        blob.write_to_path(str(directory / "trusted.pem"), append=True)
    stranger = trustme.CA()
    soon = datetime.now(timezone.utc) + timedelta(days=UNTRUSTED_DAYS)
    bad = stranger.issue_cert(*NAMES, not_after=soon)
    bad.private_key_pem.write_to_path(str(directory / "untrusted.key"))
    bad.cert_chain_pems[0].write_to_path(str(directory / "untrusted.pem"))
    return directory / "ca.pem"


def start_backend(directory: Path) -> tuple[int, subprocess.Popen[bytes]]:
    """Start the delay backend in its own process on a free port; wait until it answers."""
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        with open(directory / "backend.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "tests.servers.web_backends", "backend", str(port)],
                                    cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _get(port, b"GET /delay?ms=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") \
                    .startswith(b"HTTP/1.1 200 "):
                return port, proc
            time.sleep(0.02)
        _stop(proc)
        if "Address already in use" in read_text(directory / "backend.log"):
            continue
        pytest.fail(f"the delay backend did not start:\n{read_text(directory / 'backend.log')}", pytrace=False)
    pytest.fail(f"the delay backend found no free port in {PORT_ATTEMPTS} tries", pytrace=False)


def start_web_nginx(directory: Path, backend_port: int, ca_file: Path) -> tuple[WebNginx, subprocess.Popen[bytes]]:
    binary = _binary()
    for sub in ("www", "tmp"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    (directory / "www" / "page.html").write_text(PAGE_TEXT)
    (directory / "www" / "big.bin").write_bytes(b"x" * BIG_SIZE)
    user = "user root;\n" if os.geteuid() == 0 else ""
    for _ in range(PORT_ATTEMPTS):
        ports = {"port": free_port(), "tls_port": free_port(), "untrusted_port": free_port()}
        if len(set(ports.values())) < 3:
            continue
        conf = directory / "nginx.conf"
        conf.write_text(CONFIG.format(user=user, dir=directory, host=HOST, backend=backend_port, **ports))
        error_log = directory / "error.log"
        error_log.unlink(missing_ok=True)
        (directory / "nginx.pid").unlink(missing_ok=True)
        with open(directory / "stderr.log", "wb") as stderr:
            proc = subprocess.Popen([binary, "-p", str(directory), "-c", str(conf), "-e", str(error_log)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if read_text(directory / "nginx.pid") == str(proc.pid):
                answer = _get(ports["port"], b"GET /fast HTTP/1.0\r\nHost: localhost\r\n\r\n")
                if answer.startswith(b"HTTP/1.1 200 ") and b"\r\nServer: nginx" in answer:
                    return WebNginx(HOST, backend_port=backend_port, directory=directory, ca_file=ca_file,
                                    **ports), proc
            time.sleep(0.02)
        status = (f"exited with status {proc.returncode}" if proc.poll() is not None
                  else f"did not answer HTTP within {START_TIMEOUT:g}s")
        _stop(proc)
        text = read_text(error_log) + read_text(directory / "stderr.log")
        if "Address already in use" in text:
            continue
        pytest.fail(f"nginx ({binary}) {status}.\nerror log:\n{text or '(empty)'}", pytrace=False)
    pytest.fail(f"nginx could not get free ports after {PORT_ATTEMPTS} tries", pytrace=False)


@pytest.fixture(scope="session")
def web_nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNginx]:
    """nginx with TLS, redirects, a big file, a 500 and a slow upstream, for the whole session."""
    directory = tmp_path_factory.mktemp("web-nginx")
    ca_file = write_certificates(directory)
    backend_port, backend = start_backend(directory)
    try:
        server, proc = start_web_nginx(directory, backend_port, ca_file)
        try:
            yield server
        finally:
            _stop(proc)
    finally:
        _stop(backend)


# ---- a DNS responder (a trio task in the test's own run) -----------------------------------------

async def serve_dns(records: dict[str, str], *, task_status) -> None:  # type: ignore[no-untyped-def]
    """Answer A queries for *records* (``{"www.probe.test": "127.0.0.1"}``), NXDOMAIN otherwise.

    Start it with ``port = await nursery.start(serve_dns, records)``.
    """
    import dns.flags
    import dns.message
    import dns.rcode
    import dns.rdatatype
    import dns.rrset
    import trio

    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind((HOST, 0))
        task_status.started(sock.getsockname()[1])
        while True:
            data, peer = await sock.recvfrom(4096)
            query = dns.message.from_wire(data)
            answer = dns.message.make_response(query)
            answer.flags |= dns.flags.AA
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            if name not in records:
                answer.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.A:
                answer.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", records[name]))
            await sock.sendto(answer.to_wire(), peer)


# ---- the delay backend (run as ``python -m tests.servers.web_backends backend PORT``) -----------

def run_backend(port: int) -> None:
    import h11
    import trio

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                    continue
                if isinstance(event, h11.Request):
                    target = event.target.decode()
                    continue
                if isinstance(event, h11.EndOfMessage):
                    got = trio.current_time()
                    delay_ms = 0.0
                    if "ms=" in target:
                        delay_ms = float(target.split("ms=", 1)[1].split("&", 1)[0])
                    await trio.sleep(delay_ms / 1000.0)
                    body = f"slept {delay_ms:g}\n".encode()
                    held = (trio.current_time() - got) * 1000.0
                    out = conn.send(h11.Response(status_code=200, headers=[
                        ("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                        ("Server-Timing", f"app;dur={held:.3f}")]))
                    out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
                    await stream.send_all(out)
                    if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return
        except (trio.BrokenResourceError, h11.ProtocolError):
            return
        finally:
            await stream.aclose()

    async def main() -> None:
        await trio.serve_tcp(handle, port, host=HOST)

    trio.run(main)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "backend":
        run_backend(int(sys.argv[2]))
    else:
        sys.exit("usage: python -m tests.servers.web_backends backend PORT")
