"""Web probe benchmark: CPU per probe, probes/s and processing-time error, beside blackbox_exporter.

Run from the repository root::

    .venv/bin/python benchmarks/web.py                 # about 40 s
    .venv/bin/python benchmarks/web.py --json          # one JSON line on stdout
    .venv/bin/python benchmarks/web.py --tls --seconds 2 --no-blackbox

The benchmark starts its own servers on 127.0.0.1 (config and files in a temp dir): a delay
backend (trio + h11, its own process: ``GET /delay?ms=D`` answers after D ms with
``Server-Timing: app;dur=<ms held>``), nginx (``worker_processes 1``; ``/fast`` answers ``ok``,
``/delay`` is proxied to the backend over kept-alive upstream connections) and, when the Debian
package is installed, Prometheus' blackbox_exporter (``/usr/bin/prometheus-blackbox-exporter``).

Every measurement runs in a fresh subprocess, one after the other:

* **throughput** at each ``--concurrency`` (50 and 500): probecore runs C ``web`` checks of
  ``/fast`` through the real scheduler (``Scheduler.run_once`` rounds, every record built and
  JSON-encoded), a fresh connection per attempt, for ``--seconds``; CPU is the worker's
  ``time.process_time()`` over the rounds. blackbox_exporter is driven with C concurrent
  ``/probe?module=http_2xx&target=…/fast`` requests (kept-alive connections from a trio + h11
  driver process); its CPU is read from ``/proc/PID/stat`` (utime + stime) around the run.
* **accuracy** at each ``--rates`` (50 and 500 probes/s, open loop): probes of
  ``/delay?ms=D&id=N`` (``--delay-ms``, 50) started at a fixed rate for ``--seconds``, each
  over a fresh connection, once straight to the backend (``direct``) and once through nginx
  (``nginx``). The **server's truth** for each request is the backend's hold as its kernel saw
  it: from the receive time stamp of the request's last byte to the transmit time stamp of the
  response (``SO_TIMESTAMPNS`` / ``SO_TIMESTAMPING``), collected by id from ``GET /truths``.
  The error is ``processing − truth`` for probecore and blackbox's
  ``probe_http_duration_seconds{phase="processing"} − truth``; ``processing − D`` is shown too
  (it adds the backend's timer overshoot and, through nginx, nginx's own time). p50 and p99 are
  of the absolute error.

Exit status: 0 every threshold met, 1 a threshold failed, 2 bad usage or a measurement crashed.
Thresholds (the issue's targets): CPU per probe no more than blackbox_exporter's
(``--max-cpu-ratio 1.0``, at every concurrency) and p99 of ``|processing − truth|`` on the
direct path at the highest rate ``<= --max-error-p99`` ms (1.0). Ratios are null, and not
checked, without blackbox_exporter. The JSON line (``--json``) has ``schema``
(``probecore.bench.web/1``), the parameters, ``throughput`` (per concurrency: ``probecore`` and
``blackbox`` figures with ``probes``, ``probes_per_s``, ``cpu_s``, ``cpu_ms_per_probe``, and
``cpu_ratio``), ``accuracy`` (per rate and path: ``vs_server`` and ``vs_delay`` with
``samples``, ``abs_p50_ms``, ``abs_p99_ms``, ``abs_max_ms``, ``signed_p50_ms``), ``thresholds``,
``failures``, ``passed``, ``blackbox_version``, ``python``, ``cpus``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCHEMA = "probecore.bench.web/1"
HOST = "127.0.0.1"
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
START_TIMEOUT = 10.0

NGINX_CONFIG = """\
{user}worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    keepalive_requests 1000000;
    upstream delay_backend {{ server {host}:{backend}; keepalive 128; }}
    server {{
        listen {host}:{port} backlog=4096;
        {tls_listen}
        server_name _;
        location = /fast {{ default_type text/plain; return 200 "ok\\n"; }}
        location /delay {{
            proxy_pass http://delay_backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

BLACKBOX_CONFIG = """\
modules:
  http_2xx:
    prober: http
    timeout: 10s
    http:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
  https_2xx:
    prober: http
    timeout: 10s
    http:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      tls_config:
        ca_file: {ca}
"""


# ---- helpers --------------------------------------------------------------------------------

def num(value: Any, fmt: str = "{:,.3f}") -> str:
    return "–" if value is None else fmt.format(value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def error_figures(errors_ms: list[float]) -> dict[str, Any]:
    absolute = sorted(abs(e) for e in errors_ms)
    signed = sorted(errors_ms)
    return {"samples": len(errors_ms), "abs_p50_ms": percentile(absolute, 0.5),
            "abs_p99_ms": percentile(absolute, 0.99), "abs_max_ms": absolute[-1] if absolute else None,
            "signed_p50_ms": percentile(signed, 0.5)}


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* (all its threads) from /proc, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # fields 14 and 15 of stat(5)


def wait_for_http(port: int, path: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"web benchmark: {what} exited with status {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1.0) as sock:
                sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
                if sock.recv(64)[:12] in (b"HTTP/1.1 200", b"HTTP/1.0 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"web benchmark: {what} did not answer on port {port} within {START_TIMEOUT:g}s")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def worker(kind: str, *args: str) -> dict[str, Any]:
    command = [sys.executable, os.path.abspath(__file__), "--worker", kind, *args]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if run.returncode != 0 or not run.stdout.strip():
        sys.stderr.write(run.stderr)
        raise SystemExit(f"web benchmark: the {kind} worker failed (exit status {run.returncode})")
    return json.loads(run.stdout.strip().splitlines()[-1])


# ---- the delay backend (worker) ---------------------------------------------------------------

def backend_worker(port: int) -> None:
    """``GET /delay?ms=D[&id=N]``: answer after D ms; ``GET /truths``: every id's true hold, as JSON.

    The true hold is what the contract calls response time, measured at this server by the
    kernel: from the arrival of the request's last byte (its ``SO_TIMESTAMPNS`` receive
    timestamp) to the departure of the response (its ``SO_TIMESTAMPING`` software transmit
    timestamp, read back from the error queue). ``Server-Timing: app;dur=<ms>`` carries the
    server's own estimate (the clock just before ``send``), since the transmit stamp exists only
    after the headers are sent.
    """
    import struct

    import h11
    import trio

    truths: dict[str, float] = {}
    rx_option = getattr(socket, "SO_TIMESTAMPNS", 35)
    tx_option = getattr(socket, "SO_TIMESTAMPING", 37)
    tx_flags = 2 | 16 | 128 | 2048  # TX_SOFTWARE | SOFTWARE | OPT_ID | OPT_TSONLY
    errqueue = getattr(socket, "MSG_ERRQUEUE", 0x2000)

    def kernel_ns(ancillary: list[tuple[int, int, bytes]], kind: int) -> int | None:
        for level, got, data in ancillary:
            if level == socket.SOL_SOCKET and got == kind:
                seconds, nanos = struct.unpack_from("@ll", data)
                return seconds * 1_000_000_000 + nanos
        return None

    async def sent_at(sock: Any) -> int | None:
        for _ in range(100):  # on loopback the stamp is there when send() returns
            try:
                _, ancillary, _, _ = sock._sock.recvmsg(0, 512, errqueue | socket.MSG_DONTWAIT)
                return kernel_ns(ancillary, tx_option)
            except BlockingIOError:
                await trio.sleep(0)
        return None

    async def handle(stream: trio.SocketStream) -> None:
        sock = stream.socket
        sock.setsockopt(socket.SOL_SOCKET, rx_option, 1)
        conn = h11.Connection(h11.SERVER)
        target, arrived = "", 0
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data, ancillary, _, _ = await sock.recvmsg(65536, 256)
                    arrived = kernel_ns(ancillary, rx_option) or time.time_ns()
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                elif isinstance(event, h11.Request):
                    target = event.target.decode()
                elif isinstance(event, h11.EndOfMessage):
                    query = dict(p.split("=", 1) for p in target.partition("?")[2].split("&") if "=" in p)
                    if target.startswith("/truths"):
                        body = json.dumps(truths).encode()
                        await stream.send_all(conn.send(h11.Response(status_code=200, headers=[
                            ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]))
                            + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
                    else:
                        await trio.sleep(float(query.get("ms", "0")) / 1000.0)
                        body = b"slept\n"
                        head = conn.send(h11.Response(status_code=200, headers=[
                            ("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                            ("Server-Timing", "app;dur=" + "0" * 12)]))
                        out = head + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
                        at = out.index(b"app;dur=") + 8
                        sock.setsockopt(socket.SOL_SOCKET, tx_option, tx_flags)
                        before = time.time_ns()
                        out = out[:at] + f"{(before - arrived) / 1e6:012.6f}"[:12].encode() + out[at + 12:]
                        await sock.send(out)
                        departed = await sent_at(sock) or before
                        sock.setsockopt(socket.SOL_SOCKET, tx_option, 0)
                        if "id" in query:
                            truths[query["id"]] = (departed - arrived) / 1e6
                    if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (trio.BrokenResourceError, OSError, h11.ProtocolError):
            return
        finally:
            await stream.aclose()

    trio.run(lambda: trio.serve_tcp(handle, port, host=HOST, backlog=4096))


# ---- probecore (workers) ----------------------------------------------------------------------

def _profile(directory: Path, count: int, url: str, extra: str) -> Path:
    lines = ['[profile]\nname = "bench"\n', '[defaults]\ninterval = "1m"\ntimeout = "10s"\n']
    for i in range(count):
        lines.append(f'[[check]]\nid = "w{i:04d}"\nprobe = "web"\nurl = "{url}"\n{extra}')
    path = directory / "bench.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def probecore_throughput(url: str, concurrency: int, seconds: float, ca: str | None) -> dict[str, Any]:
    import trio

    import probecore
    from probecore._scheduler import Scheduler
    from probecore.testing import make_host

    host = make_host()
    extra = f'ca_file = "{ca}"\n' if ca else ""
    with tempfile.TemporaryDirectory(prefix="probecore-bench-web-") as tmp:
        profile = probecore.load_profile(_profile(Path(tmp), concurrency, url, extra), host.probes)
    counts = {"records": 0, "ok": 0, "bytes": 0}
    failures: dict[str, int] = {}

    def submit(record: probecore.SLIRecord) -> None:
        counts["records"] += 1
        counts["bytes"] += len(probecore.encode_record(record))
        if record.outcome == "ok":
            counts["ok"] += 1
        elif record.failure is not None:
            failures[record.failure.code] = failures.get(record.failure.code, 0) + 1

    scheduler = Scheduler(profile.checks, host.probes, submit=submit, clock=probecore.SystemClock(),
                          vantage="bench", max_concurrency=concurrency, per_host=concurrency)
    figures: dict[str, Any] = {}

    async def main() -> None:
        await scheduler.run_once()  # warm-up: imports, SSL context, plans
        for key in counts:
            counts[key] = 0
        failures.clear()
        cpu, began = time.process_time(), time.perf_counter()
        rounds = 0
        while time.perf_counter() - began < seconds:
            await scheduler.run_once()
            rounds += 1
        figures.update(cpu_s=time.process_time() - cpu, elapsed_s=time.perf_counter() - began, rounds=rounds)

    trio.run(main)
    probes = counts["records"]
    return {**figures, "probes": probes, "ok": counts["ok"], "failures": failures,
            "probes_per_s": probes / figures["elapsed_s"],
            "cpu_ms_per_probe": figures["cpu_s"] / probes * 1000 if probes else None}


def probecore_accuracy(url: str, backend_port: int, rate: float, seconds: float,
                       delay_ms: float) -> dict[str, Any]:
    import msgspec
    import trio

    import probecore
    from probecore.testing import make_host

    host = make_host()
    with tempfile.TemporaryDirectory(prefix="probecore-bench-web-") as tmp:
        profile = probecore.load_profile(_profile(Path(tmp), 1, url, ""), host.probes)
    check = profile.checks[0]
    kind = host.probes.get("web")()
    count = max(1, round(rate * seconds))
    # One config per probe (the id tells the backend's truth apart), built before the clock runs.
    configs = [msgspec.structs.replace(check.config, url=f"{url}&id={i}") for i in range(count)]
    processing: dict[str, float] = {}
    timing: dict[str, int] = {}
    bad: dict[str, int] = {}

    async def one(i: int, config: Any) -> None:
        observation = await kind.check(config, probecore.CheckContext(check.full_id, "bench"))
        if observation.outcome != "ok" or observation.value is None:
            code = observation.failure.code if observation.failure else observation.outcome
            bad[code] = bad.get(code, 0) + 1
            return
        processing[str(i)] = observation.value * 1000
        source = str(observation.details.get("timestamps"))
        timing[source] = timing.get(source, 0) + 1

    async def main() -> tuple[float, dict[str, float]]:
        await one(-1, check.config)  # warm-up
        processing.clear()
        timing.clear()
        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i, config in enumerate(configs):
                await trio.sleep_until(began + i / rate)
                nursery.start_soon(one, i, config)
        elapsed = trio.current_time() - began
        return elapsed, await _truths(backend_port)

    elapsed, truths = trio.run(main)
    return {"rate": rate, "elapsed_s": elapsed, "failures": bad, "timestamps": timing,
            "vs_delay": error_figures([v - delay_ms for v in processing.values()]),
            "vs_server": error_figures([v - truths[k] for k, v in processing.items() if k in truths])}


async def _truths(backend_port: int) -> dict[str, float]:
    import h11
    import trio

    stream = await trio.open_tcp_stream(HOST, backend_port)
    async with stream:
        return json.loads(await _exporter_get(stream, h11.Connection(h11.CLIENT), "/truths"))


# ---- blackbox_exporter (driver workers) ---------------------------------------------------------

def _metric(body: bytes, name: bytes) -> float | None:
    for line in body.split(b"\n"):
        if line.startswith(name):
            return float(line.rsplit(b" ", 1)[1])
    return None


async def _exporter_get(stream: Any, conn: Any, target: str) -> bytes:
    import h11

    request = conn.send(h11.Request(method="GET", target=target, headers=[("Host", "exporter")]))
    await stream.send_all(request + conn.send(h11.EndOfMessage()))
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            conn.start_next_cycle()
            return body
        elif isinstance(event, h11.ConnectionClosed):
            raise RuntimeError("the exporter closed the connection")


def blackbox_throughput(port: int, query: str, concurrency: int, seconds: float) -> dict[str, Any]:
    import h11
    import trio

    counts = {"probes": 0, "ok": 0}
    window: dict[str, float] = {}

    async def client() -> None:
        stream = await trio.open_tcp_stream(HOST, port)
        conn = h11.Connection(h11.CLIENT)
        async with stream:
            while trio.current_time() < window["end"]:
                body = await _exporter_get(stream, conn, query)
                counts["probes"] += 1
                counts["ok"] += _metric(body, b"probe_success ") == 1.0

    async def main() -> None:
        window["start"] = trio.current_time()
        window["end"] = window["start"] + seconds
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(client)
        window["elapsed"] = trio.current_time() - window["start"]

    trio.run(main)
    return {**counts, "elapsed_s": window["elapsed"], "probes_per_s": counts["probes"] / window["elapsed"]}


def blackbox_accuracy(port: int, target: str, backend_port: int, rate: float, seconds: float,
                      delay_ms: float) -> dict[str, Any]:
    import h11
    import trio

    processing: dict[str, float] = {}
    bad = {"failed": 0}
    idle: list[tuple[Any, Any]] = []

    async def get(query: str) -> bytes:
        if idle:
            stream, conn = idle.pop()
        else:
            stream, conn = await trio.open_tcp_stream(HOST, port), h11.Connection(h11.CLIENT)
        body = await _exporter_get(stream, conn, query)
        idle.append((stream, conn))
        return body

    async def one(ident: str) -> None:
        url = f"{target}&id={ident}".replace("?", "%3F").replace("=", "%3D").replace("&", "%26")
        body = await get(f"/probe?module=http_2xx&target={url}")
        value = _metric(body, b'probe_http_duration_seconds{phase="processing"} ')
        if _metric(body, b"probe_success ") != 1.0 or value is None:
            bad["failed"] += 1
        else:
            processing[ident] = value * 1000

    async def main() -> tuple[float, dict[str, float]]:
        await one("warm-up")
        processing.clear()
        count = max(1, round(rate * seconds))
        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(count):
                await trio.sleep_until(began + i / rate)
                nursery.start_soon(one, str(i))
        elapsed = trio.current_time() - began
        for stream, _ in idle:
            await stream.aclose()
        return elapsed, await _truths(backend_port)

    elapsed, truths = trio.run(main)
    return {"rate": rate, "elapsed_s": elapsed, "failures": bad,
            "vs_delay": error_figures([v - delay_ms for v in processing.values()]),
            "vs_server": error_figures([v - truths[k] for k, v in processing.items() if k in truths])}


# ---- the parent --------------------------------------------------------------------------------

class Servers:
    """Backend, nginx and (if installed) blackbox_exporter, in a temp dir; stopped on exit."""

    def __init__(self, directory: Path, tls: bool, blackbox: bool):
        self.dir = directory
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ca: str | None = None
        self.blackbox_pid: int | None = None
        self.blackbox_port: int | None = None
        self.blackbox_version: str | None = None
        self.backend_port = self.port = self.tls_port = 0
        try:
            self._start(tls, blackbox)
        except BaseException:
            self.close()
            raise

    def _start(self, tls: bool, blackbox: bool) -> None:
        directory = self.dir
        self.backend_port = free_port()
        backend = self._spawn([sys.executable, os.path.abspath(__file__), "--worker", "backend",
                               "--port", str(self.backend_port)], "backend")
        wait_for_http(self.backend_port, "/delay?ms=0", backend, "the delay backend")
        self.port, self.tls_port = free_port(), free_port()
        tls_listen = ""
        if tls:
            self.ca = self._certificates()
            tls_listen = (f"listen {HOST}:{self.tls_port} ssl backlog=4096; ssl_protocols TLSv1.2 TLSv1.3; "
                          f"ssl_certificate {directory}/cert.pem; ssl_certificate_key {directory}/key.pem;")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.access(nginx, os.X_OK):
            raise SystemExit("web benchmark: nginx is not installed (apt-get install nginx-light)")
        (directory / "tmp").mkdir()
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = directory / "nginx.conf"
        conf.write_text(NGINX_CONFIG.format(user=user, dir=directory, host=HOST, port=self.port,
                                            backend=self.backend_port, tls_listen=tls_listen))
        proc = self._spawn([nginx, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")],
                           "nginx")
        wait_for_http(self.port, "/fast", proc, "nginx")
        if blackbox and os.access(BLACKBOX, os.X_OK):
            self.blackbox_port = free_port()
            (directory / "blackbox.yml").write_text(BLACKBOX_CONFIG.format(ca=self.ca or "/dev/null"))
            proc = self._spawn([BLACKBOX, f"--config.file={directory / 'blackbox.yml'}",
                                f"--web.listen-address={HOST}:{self.blackbox_port}", "--log.level=error"],
                               "blackbox")
            wait_for_http(self.blackbox_port, "/metrics", proc, "blackbox_exporter")
            self.blackbox_pid = proc.pid
            version = subprocess.run([BLACKBOX, "--version"], capture_output=True, text=True)
            self.blackbox_version = (version.stdout + version.stderr).split("\n", 1)[0].strip()

    def _spawn(self, command: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the temp dir)
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def _certificates(self) -> str:
        try:
            import trustme
        except ImportError:
            raise SystemExit("web benchmark: --tls needs trustme (pip install -e '.[test]')") from None
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.dir / "ca.pem"))
        leaf = ca.issue_cert("localhost", HOST)
        leaf.private_key_pem.write_to_path(str(self.dir / "key.pem"))
        leaf.cert_chain_pems[0].write_to_path(str(self.dir / "cert.pem"))
        return str(self.dir / "ca.pem")

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)


def measure(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="probecore-bench-web-") as tmp:
        servers = Servers(Path(tmp), args.tls, not args.no_blackbox)
        try:
            return _measure(args, servers, say)
        finally:
            servers.close()


def _measure(args: argparse.Namespace, servers: Servers, say: Any) -> dict[str, Any]:
    if args.tls:
        fast = f"https://localhost:{servers.tls_port}/fast"
        module = "https_2xx"
    else:
        fast = f"http://{HOST}:{servers.port}/fast"
        module = "http_2xx"
    seconds = str(args.seconds)
    throughput = []
    for concurrency in args.concurrency:
        say(f"throughput, {concurrency} concurrent: probecore …")
        pc = worker("probecore-throughput", "--url", fast, "--concurrency", str(concurrency),
                    "--seconds", seconds, *(["--ca", servers.ca] if servers.ca else []))
        row: dict[str, Any] = {"concurrency": concurrency, "probecore": pc, "blackbox": None, "cpu_ratio": None}
        if servers.blackbox_pid is not None:
            say(f"throughput, {concurrency} concurrent: blackbox_exporter …")
            query = f"/probe?module={module}&target={fast}"
            before = proc_cpu_seconds(servers.blackbox_pid)
            bb = worker("blackbox-throughput", "--port", str(servers.blackbox_port), "--query", query,
                        "--concurrency", str(concurrency), "--seconds", seconds)
            bb["cpu_s"] = proc_cpu_seconds(servers.blackbox_pid) - before
            bb["cpu_ms_per_probe"] = bb["cpu_s"] / bb["probes"] * 1000 if bb["probes"] else None
            row["blackbox"] = bb
            if pc["cpu_ms_per_probe"] and bb["cpu_ms_per_probe"]:
                row["cpu_ratio"] = pc["cpu_ms_per_probe"] / bb["cpu_ms_per_probe"]
        throughput.append(row)
    accuracy = []
    paths = {"direct": f"http://{HOST}:{servers.backend_port}/delay?ms={args.delay_ms:g}",
             "nginx": f"http://{HOST}:{servers.port}/delay?ms={args.delay_ms:g}"}
    for rate in args.rates:
        for path, url in paths.items():
            say(f"accuracy, {rate:g} probes/s, {args.delay_ms:g} ms backend ({path}): probecore …")
            pc = worker("probecore-accuracy", "--url", url, "--backend-port", str(servers.backend_port),
                        "--rate", str(rate), "--seconds", seconds, "--delay-ms", str(args.delay_ms))
            row = {"rate": rate, "path": path, "probecore": pc, "blackbox": None}
            if servers.blackbox_pid is not None:
                say(f"accuracy, {rate:g} probes/s ({path}): blackbox_exporter …")
                row["blackbox"] = worker("blackbox-accuracy", "--port", str(servers.blackbox_port), "--url", url,
                                         "--backend-port", str(servers.backend_port), "--rate", str(rate),
                                         "--seconds", seconds, "--delay-ms", str(args.delay_ms))
            accuracy.append(row)
    return {"throughput": throughput, "accuracy": accuracy, "blackbox_version": servers.blackbox_version,
            "target": fast}


def judge(args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    failures = []
    for row in data["throughput"]:
        pc = row["probecore"]
        if pc["ok"] != pc["probes"]:
            failures.append(f"{pc['probes'] - pc['ok']} probecore probes not ok at {row['concurrency']} "
                            f"concurrent: {pc['failures']}")
        if args.max_cpu_ratio is not None and row["cpu_ratio"] is not None and row["cpu_ratio"] > args.max_cpu_ratio:
            failures.append(f"CPU per probe at {row['concurrency']} concurrent is {row['cpu_ratio']:.2f}× "
                            f"blackbox_exporter's (> {args.max_cpu_ratio:g})")
    direct = [r for r in data["accuracy"] if r["path"] == "direct"]
    if direct:
        top = max(direct, key=lambda r: r["rate"])
        p99 = top["probecore"]["vs_server"]["abs_p99_ms"]
        if p99 is None or p99 > args.max_error_p99:
            failures.append(f"processing error p99 at {top['rate']:g} probes/s is {num(p99)} ms "
                            f"(> {args.max_error_p99:g} ms)")
    for row in data["accuracy"]:
        if row["probecore"]["failures"]:
            failures.append(f"probecore probes failed at {row['rate']:g}/s ({row['path']}): "
                            f"{row['probecore']['failures']}")
    return {
        "schema": SCHEMA, "seconds": args.seconds, "tls": args.tls, "delay_ms": args.delay_ms, **data,
        "thresholds": {"max_cpu_ratio": args.max_cpu_ratio, "max_error_p99_ms": args.max_error_p99},
        "failures": failures, "passed": not failures,
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }


def show(figures: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    scheme = "https" if figures["tls"] else "http"
    table = Table(title=f"web probe throughput: {scheme} /fast on local nginx, a fresh connection per probe, "
                        f"{figures['seconds']:g} s each", title_justify="left")
    for column in ("concurrent", "probecore probes/s", "CPU ms/probe", "blackbox probes/s", "CPU ms/probe",
                   "CPU ratio"):
        table.add_column(column, justify="right")
    for row in figures["throughput"]:
        pc, bb = row["probecore"], row["blackbox"] or {}
        table.add_row(str(row["concurrency"]), num(pc["probes_per_s"], "{:,.0f}"), num(pc["cpu_ms_per_probe"]),
                      num(bb.get("probes_per_s"), "{:,.0f}"), num(bb.get("cpu_ms_per_probe")),
                      num(row["cpu_ratio"], "{:.2f}×"))
    console.print(table)
    table = Table(title=f"processing-time error, backend delay {figures['delay_ms']:g} ms, open loop "
                        "(ms: |error| p50 / p99, median signed error)", title_justify="left")
    for column in ("probes/s", "path", "probecore − server's truth", "blackbox − server's truth",
                   "probecore − delay", "blackbox − delay"):
        table.add_column(column, justify="right")

    def cell(f: dict[str, Any] | None) -> str:
        if not f or not f["samples"]:
            return "–"
        return f"{num(f['abs_p50_ms'])} / {num(f['abs_p99_ms'])} ({num(f['signed_p50_ms'], '{:+.3f}')})"

    for row in figures["accuracy"]:
        pc, bb = row["probecore"], row["blackbox"] or {}
        table.add_row(f"{row['rate']:g}", row["path"], cell(pc["vs_server"]), cell(bb.get("vs_server")),
                      cell(pc["vs_delay"]), cell(bb.get("vs_delay")))
    console.print(table)
    console.print("server's truth: the backend's hold as the kernel saw it, from the arrival of the request's "
                  "last byte to the departure of the response (receive and transmit time stamps); 'direct' "
                  "probes the backend, 'nginx' goes through nginx's proxy (the truth then leaves out nginx's "
                  "own time, so the error there includes it).")
    if figures["blackbox_version"] is None:
        console.print("blackbox_exporter: not run (not installed, or --no-blackbox); ratios are not computed")
    else:
        console.print(f"blackbox_exporter: {figures['blackbox_version']}")
    if figures["failures"]:
        console.print("[red]FAIL[/]: " + "; ".join(figures["failures"]))
    else:
        console.print("[green]PASS[/]: every threshold met")


def numbers(text: str, kind: type) -> list[Any]:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/web.py",
        description="Benchmark the web probe (CPU per probe, probes/s, processing-time error) against a "
        "local nginx, beside Prometheus' blackbox_exporter.",
        epilog="Exit status: 0 every threshold met, 1 a threshold failed, 2 usage error or crash.")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measurement (default 3)")
    parser.add_argument("--concurrency", type=lambda t: numbers(t, int), default=[50, 500],
                        help="concurrent checks for the throughput runs (default 50,500)")
    parser.add_argument("--rates", type=lambda t: numbers(t, float), default=[50.0, 500.0],
                        help="probes per second for the accuracy runs (default 50,500)")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="the backend's delay (default 50)")
    parser.add_argument("--tls", action="store_true", help="throughput over https (TLS 1.3, trustme CA)")
    parser.add_argument("--no-blackbox", action="store_true", help="measure probecore alone")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON line on stdout")
    parser.add_argument("--max-cpu-ratio", type=float, default=1.0, metavar="X",
                        help="threshold: probecore CPU per probe / blackbox_exporter's (default 1.0)")
    parser.add_argument("--max-error-p99", type=float, default=1.0, metavar="MS",
                        help="threshold: |processing − delay| p99 at the highest rate (default 1.0 ms)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    for hidden in ("--url", "--query", "--ca"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backend-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        if args.worker == "backend":
            backend_worker(args.port)
            return 0
        concurrency = args.concurrency if isinstance(args.concurrency, int) else args.concurrency[0]
        if args.worker == "probecore-throughput":
            out = probecore_throughput(args.url, concurrency, args.seconds, args.ca)
        elif args.worker == "probecore-accuracy":
            out = probecore_accuracy(args.url, args.backend_port, args.rate, args.seconds, args.delay_ms)
        elif args.worker == "blackbox-throughput":
            out = blackbox_throughput(args.port, args.query, concurrency, args.seconds)
        elif args.worker == "blackbox-accuracy":
            out = blackbox_accuracy(args.port, args.url, args.backend_port, args.rate, args.seconds, args.delay_ms)
        else:
            return 2
        sys.stdout.write(json.dumps(out) + "\n")
        return 0

    from rich.console import Console

    console = Console(stderr=True)

    def say(text: str) -> None:
        console.print(text, highlight=False)

    try:
        data = measure(args, say)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 2
    figures = judge(args, data)
    if args.json:
        sys.stdout.write(json.dumps(figures) + "\n")
    else:
        show(figures)
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
