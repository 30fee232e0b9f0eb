"""Hostile-load benchmark: healthy checks beside many checks of hostile servers, on the real clock.

Run from the repository root::

    .venv/bin/python benchmarks/hostile.py                  # 1,500 hostile + 500 healthy, 120 s
    .venv/bin/python benchmarks/hostile.py --short --json   # 300 + 100, 20 s

What it starts (each in a process of its own, so that CPU time and peak RSS are the probe
process's alone; the servers still share the machine's cores with it, which is the point):

* **servers** — one trio process serving, on loopback:

  - healthy servers on 127.0.0.1, one per kind, fast and correct: TCP (a ``220`` greeting),
    HTTP (``200``), FTP (USER/PASS/QUIT), DNS over UDP (an ``A`` answer, dnspython), and SMTP
    (EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA) + POP3 (USER/PASS/LIST/TOP/RETR/DELE) sharing
    one in-memory maildrop per recipient, so a healthy mail check is a real round trip;
  - hostile servers from ``tests/servers/hostile.py``, one per row of :data:`HOSTILE_ROWS`
    (kind × misbehaviour: silence, endless line, endless multi-line reply, megabyte line,
    garbage, TLS stall, early close; UDP silence, garbage and flood for DNS), each on its own
    loopback address ``127.0.1.<row>``: hostile targets are other hosts than the healthy ones,
    as they would be in production (the per-host limit is about politeness to one host). A
    mail check whose POP3/IMAP side is hostile sends through a healthy SMTP server on
    127.0.2.1 (the mail probe's host is its SMTP host).

* **healthy** — ``run_profile`` with only the healthy checks (the baseline);
* **mixed** — the same healthy checks plus the hostile checks, spread round-robin over the rows.

Both runs use a real SQLite store in a temp dir, interval ``--interval`` (60 s; 10 s with
``--short``) and timeout 5 s, ``confirm = 2``. Afterwards each reads its records and incident
events back and reports, for the healthy checks: slot lateness (``started_at - scheduled_at``)
p50/p99/max, records not ok (and of those timeouts), incidents confirmed (every one is false:
those servers never fail); for every check: records ``ok`` whose duration exceeds their timeout
(must be none); for the hostile checks: records by outcome and failure code (an ``error`` is no
evidence: a hostile server must give ``fail``). Also CPU seconds, peak RSS (``VmHWM``), the
largest number of threads seen, and two lags sampled every 100 ms during the run: the trio
loop's (how late a 100 ms sleep wakes) and the asyncio bridge's (a no-op ``run_asyncio`` round
trip).

Output: a table, or with ``--json`` one JSON line on stdout (schema ``probecore.bench.hostile/1``,
keys in benchmarks/README.md); progress on stderr. Ratios are mixed ÷ healthy-only, measured in
the same invocation. Thresholds: healthy lateness p99 <= ``--max-lateness-p99`` (100 ms), false
incidents <= ``--max-false-incidents`` (0), ok-over-timeout records 0, hostile ``error`` records
0, peak RSS <= ``--max-rss`` (300 MiB) in the mixed run. Exit status: 0 every threshold met, 1 a
threshold failed, 2 bad usage or a run crashed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "probecore.bench.hostile/1"
PROFILE_NAME = "hostile"
VANTAGE = "bench"
TIMEOUT_S = 5.0
PASSWORD_ENV = "PROBECORE_BENCH_PASSWORD"
PASSWORD = "bench-Pw-7c1e"
HEALTHY_KINDS = ("tcp", "web", "ftp", "dns", "mail")
MAIL_DOMAIN = "bench.test"
OTHER_SMTP_ADDRESS = "127.0.2.1"

# (row name, probe kind, how the check reaches the server, Hostile(...) keyword arguments).
# "direct": the check's own server is the hostile one; "smtp": a mail check whose SMTP server
# is hostile (its POP3 side is the healthy one); "pop3"/"imap": the receiving side is hostile.
HOSTILE_ROWS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("tcp-silence", "tcp", "direct", {"behaviour": "silence"}),
    ("tcp-endless-line", "tcp", "direct", {"behaviour": "endless_line"}),
    ("tcp-megabyte-line", "tcp", "direct", {"behaviour": "megabyte_line"}),
    ("tcp-garbage", "tcp", "direct", {"behaviour": "garbage"}),
    ("tcp-early-close", "tcp", "direct", {"behaviour": "early_close"}),
    ("web-silence", "web", "direct", {"behaviour": "silence", "await_command": True}),
    ("web-endless-headers", "web", "direct", {"behaviour": "endless_multiline", "await_command": True,
                                             "lead": b"HTTP/1.1 200 OK\r\n", "line": b"X-Hostile: 1\r\n"}),
    ("web-endless-line", "web", "direct", {"behaviour": "endless_line", "await_command": True,
                                          "lead": b"HTTP/1.1 200 "}),
    ("web-megabyte-line", "web", "direct", {"behaviour": "megabyte_line", "await_command": True,
                                           "lead": b"HTTP/1.1 200 OK\r\nX-Big: "}),
    ("web-garbage", "web", "direct", {"behaviour": "garbage", "await_command": True}),
    ("web-early-close", "web", "direct", {"behaviour": "early_close", "await_command": True}),
    ("web-tls-stall", "web", "direct", {"behaviour": "tls_stall"}),
    ("ftp-silence", "ftp", "direct", {"behaviour": "silence"}),
    ("ftp-endless-banner", "ftp", "direct", {"behaviour": "endless_multiline", "line": b"220-hostile\r\n"}),
    ("ftp-endless-line", "ftp", "direct", {"behaviour": "endless_line", "lead": b"220 "}),
    ("ftp-megabyte-line", "ftp", "direct", {"behaviour": "megabyte_line", "lead": b"220 "}),
    ("ftp-garbage", "ftp", "direct", {"behaviour": "garbage"}),
    ("ftp-early-close", "ftp", "direct", {"behaviour": "early_close"}),
    ("ftp-tls-stall", "ftp", "direct", {"behaviour": "tls_stall"}),
    ("smtp-silence", "mail", "smtp", {"behaviour": "silence"}),
    ("smtp-endless-greeting", "mail", "smtp", {"behaviour": "endless_multiline", "line": b"220-hostile\r\n"}),
    ("smtp-endless-ehlo", "mail", "smtp", {"behaviour": "endless_multiline", "greeting": b"220 hostile\r\n",
                                           "await_command": True, "line": b"250-hostile\r\n"}),
    ("smtp-megabyte-line", "mail", "smtp", {"behaviour": "megabyte_line", "lead": b"220 "}),
    ("smtp-garbage", "mail", "smtp", {"behaviour": "garbage"}),
    ("smtp-early-close", "mail", "smtp", {"behaviour": "early_close"}),
    ("pop3-silence", "mail", "pop3", {"behaviour": "silence"}),
    ("pop3-endless-line", "mail", "pop3", {"behaviour": "endless_line", "lead": b"+OK "}),
    ("pop3-megabyte-line", "mail", "pop3", {"behaviour": "megabyte_line", "lead": b"+OK "}),
    ("pop3-garbage", "mail", "pop3", {"behaviour": "garbage"}),
    ("imap-endless-greeting", "mail", "imap", {"behaviour": "endless_multiline", "line": b"* OK hostile\r\n"}),
    ("imap-megabyte-line", "mail", "imap", {"behaviour": "megabyte_line", "lead": b"* OK "}),
    ("imap-early-close", "mail", "imap", {"behaviour": "early_close"}),
    ("dns-silence", "dns", "direct", {"behaviour": "silence", "transport": "udp"}),
    ("dns-garbage", "dns", "direct", {"behaviour": "garbage", "transport": "udp", "echo": 2, "size": 512}),
    ("dns-flood", "dns", "direct", {"behaviour": "flood", "transport": "udp", "echo": 2, "size": 512}),
)


# ---- helpers shared by the processes (standard library only) ----------------------------------

def peak_rss_mib() -> float:
    """This process's own peak RSS (``VmHWM``; ``ru_maxrss`` survives exec, see scheduler.py)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def figures_of(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {"p50": percentile(ordered, 0.5), "p99": percentile(ordered, 0.99),
            "max": ordered[-1] if ordered else None}


# ---- the servers process ------------------------------------------------------------------------

def servers_worker() -> None:
    """Start every server; print one JSON line of where they listen; serve until killed."""
    import trio

    sys.path.insert(0, str(ROOT))
    from tests.servers import hostile as hostile_servers

    ports: dict[str, Any] = {"healthy": {}, "hostile": {}}
    maildrops: dict[str, list[bytes]] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for kind, handler in (("tcp", _tcp_ok), ("web", _http_ok), ("ftp", _ftp_ok),
                                  ("smtp", partial(_smtp_ok, maildrops=maildrops)),
                                  ("pop3", partial(_pop3_ok, maildrops=maildrops))):
                listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
                ports["healthy"][kind] = listeners[0].socket.getsockname()[1]
            ports["healthy"]["dns"] = await nursery.start(_dns_ok)
            # The SMTP side of mail checks whose receiving server is hostile: on an address of
            # its own, because the mail probe's host (for the per-host limit) is its SMTP host,
            # and those checks are no more the healthy host's than the other hostile ones.
            listeners = await nursery.start(partial(trio.serve_tcp, partial(_smtp_ok, maildrops=maildrops),
                                                    0, host=OTHER_SMTP_ADDRESS))
            ports["healthy"]["smtp_other"] = listeners[0].socket.getsockname()[1]
            for index, (name, _kind, _how, spec) in enumerate(HOSTILE_ROWS):
                server = hostile_servers.HostileServer(hostile_servers.Hostile(**spec),
                                                       host=hostile_address(index))
                # start_hostile() binds 127.0.0.1 only; each row needs an address of its own.
                await nursery.start(hostile_servers._serve, server)  # noqa: SLF001
                ports["hostile"][name] = [server.host, server.port]
            print(json.dumps(ports), flush=True)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass


def timeout_for(interval: float) -> float:
    """The checks' timeout: 5 s, or the interval if that is shorter (a profile requires it)."""
    return min(TIMEOUT_S, interval)


def hostile_address(index: int) -> str:
    return f"127.0.1.{index + 1}"


async def _lines(stream: Any, buffer: bytearray) -> bytes | None:
    """One line (without CRLF) from *stream*, or None at end of file."""
    while b"\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data
        if len(buffer) > 1 << 20:
            return None
    end = buffer.index(b"\n")
    line = bytes(buffer[:end]).rstrip(b"\r")
    del buffer[:end + 1]
    return line


async def _tcp_ok(stream: Any) -> None:
    import trio
    try:
        await stream.send_all(b"220 bench ready\r\n")
        with trio.move_on_after(10):
            while await stream.receive_some(4096):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _http_ok(stream: Any) -> None:
    import trio
    buffer = bytearray()
    try:
        while b"\r\n\r\n" not in buffer:
            data = await stream.receive_some(65536)
            if not data:
                return
            buffer += data
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                              b"Connection: close\r\n\r\nok\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _ftp_ok(stream: Any) -> None:
    import trio
    buffer = bytearray()
    try:
        await stream.send_all(b"220 bench FTP\r\n")
        while (line := await _lines(stream, buffer)) is not None:
            verb = line.split(b" ", 1)[0].upper()
            reply = {b"USER": b"331 password please", b"PASS": b"230 logged in",
                     b"QUIT": b"221 bye"}.get(verb, b"502 not here")
            await stream.send_all(reply + b"\r\n")
            if verb == b"QUIT":
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _smtp_ok(stream: Any, maildrops: dict[str, list[bytes]]) -> None:
    import trio
    buffer = bytearray()
    recipients: list[str] = []

    async def say(text: bytes) -> None:
        await stream.send_all(text + b"\r\n")

    try:
        await say(b"220 bench ESMTP")
        while (line := await _lines(stream, buffer)) is not None:
            verb = line.split(b" ", 1)[0].upper()
            if verb in (b"EHLO", b"HELO"):
                await say(b"250-bench\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME")
            elif verb == b"AUTH":
                words = line.split()
                if len(words) == 2:  # no initial response: ask for it
                    await say(b"334 ")
                    if await _lines(stream, buffer) is None:
                        return
                await say(b"235 accepted")
            elif verb == b"MAIL":
                recipients = []
                await say(b"250 ok")
            elif verb == b"RCPT":
                address = line.split(b":", 1)[1].strip().strip(b"<>").decode()
                recipients.append(address)
                await say(b"250 ok")
            elif verb == b"DATA":
                await say(b"354 go on")
                body = bytearray()
                while (data_line := await _lines(stream, buffer)) is not None and data_line != b".":
                    body += (data_line[1:] if data_line.startswith(b"..") else data_line) + b"\r\n"
                stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
                message = (f"Received: from bench by bench.test; {stamp}\r\n".encode() + bytes(body))
                for address in recipients:
                    maildrops.setdefault(address, []).append(message)
                await say(b"250 queued")
            elif verb == b"QUIT":
                await say(b"221 bye")
                return
            else:
                await say(b"250 ok")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _pop3_ok(stream: Any, maildrops: dict[str, list[bytes]]) -> None:
    import trio
    buffer = bytearray()
    user = ""
    deleted: set[int] = set()

    async def say(text: bytes) -> None:
        await stream.send_all(text + b"\r\n")

    def multiline(lines: list[bytes]) -> bytes:
        stuffed = [b"." + x if x.startswith(b".") else x for x in lines]
        return b"\r\n".join([b"+OK", *stuffed, b"."])

    try:
        await say(b"+OK bench POP3")
        while (line := await _lines(stream, buffer)) is not None:
            words = line.split()
            verb = words[0].upper() if words else b""
            drop = maildrops.setdefault(user, []) if user else []
            if verb == b"USER":
                user = words[1].decode() if len(words) > 1 else ""
                await say(b"+OK")
            elif verb == b"PASS":
                await say(b"+OK logged in")
            elif verb == b"STAT":
                await say(b"+OK %d 0" % len(drop))
            elif verb == b"LIST":
                await say(multiline([b"%d %d" % (n + 1, len(m)) for n, m in enumerate(drop)
                                     if n not in deleted]))
            elif verb in (b"TOP", b"RETR") and len(words) > 1:
                number = int(words[1]) - 1
                if not 0 <= number < len(drop) or number in deleted:
                    await say(b"-ERR no such message")
                    continue
                message = drop[number]
                if verb == b"TOP":
                    message = message.split(b"\r\n\r\n", 1)[0] + b"\r\n"
                await say(multiline(message.split(b"\r\n")[:-1]))
            elif verb == b"DELE" and len(words) > 1:
                deleted.add(int(words[1]) - 1)
                await say(b"+OK deleted")
            elif verb == b"QUIT":
                if user:
                    maildrops[user] = [m for n, m in enumerate(drop) if n not in deleted]
                await say(b"+OK bye")
                return
            else:
                await say(b"-ERR not here")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _dns_ok(task_status: Any) -> None:
    import dns.flags
    import dns.message
    import dns.rrset
    import trio

    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        task_status.started(sock.getsockname()[1])
        while True:
            data, peer = await sock.recvfrom(4096)
            try:
                query = dns.message.from_wire(data)
            except Exception:  # noqa: BLE001 — not a DNS message: ignore it
                continue
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            for question in query.question:
                response.answer.append(dns.rrset.from_text(question.name, 300, "IN", "A", "127.0.0.1"))
            await sock.sendto(response.to_wire(), peer)


# ---- the measured process -----------------------------------------------------------------------

def profile_text(healthy: int, hostile: int, interval: float, ports: dict[str, Any],
                 rows: list[tuple[str, str, str, dict[str, Any]]]) -> str:
    """The generated profile: *healthy* checks over the healthy kinds, *hostile* over *rows*."""
    from probecore import format_duration

    ok = ports["healthy"]
    lines = [f'[profile]\nname = "{PROFILE_NAME}"\n',
             f'[defaults]\ninterval = "{format_duration(interval)}"\n'
             f'timeout = "{format_duration(timeout_for(interval))}"\nconfirm = 2\n']
    secret = f'{{ env = "{PASSWORD_ENV}" }}'

    def mail(check_id: str, smtp: tuple[str, int], receive: str, receiver: tuple[str, int]) -> str:
        return (f'[[check]]\nid = "{check_id}"\nprobe = "mail"\nsmtp_host = "{smtp[0]}"\n'
                f'smtp_port = {smtp[1]}\nsmtp_tls = "none"\nreceive = "{receive}"\n'
                f'receive_host = "{receiver[0]}"\nreceive_port = {receiver[1]}\n'
                f'receive_tls = "none"\nsender = "s-{check_id}@{MAIL_DOMAIN}"\n'
                f'sender_password = {secret}\nrecipient = "r-{check_id}@{MAIL_DOMAIN}"\n'
                f'recipient_password = {secret}\ndeliver_within = "4s"\nidle = false\n'
                f'poll_max = "250ms"\n')

    def check(check_id: str, kind: str, host: str, port: int, tls: bool = False) -> str:
        head = f'[[check]]\nid = "{check_id}"\nprobe = "{kind}"\n'
        if kind == "tcp":
            return head + f'host = "{host}"\nport = {port}\nexpect = "220 "\n'
        if kind == "web":
            scheme = "https" if tls else "http"
            return head + f'url = "{scheme}://{host}:{port}/"\ntls_verify = false\n'
        if kind == "ftp":
            scheme = "ftps" if tls else "ftp"
            extra = "verify = false\n" if tls else ""
            return head + f'url = "{scheme}://bench@{host}:{port}/"\npassword = {secret}\n' + extra
        if kind == "dns":
            return head + (f'name = "{check_id}.{MAIL_DOMAIN}"\nservers = ["{host}:{port}"]\n'
                           'server_timeout = "2s"\n')
        raise ValueError(kind)

    for n in range(healthy):
        kind = HEALTHY_KINDS[n % len(HEALTHY_KINDS)]
        check_id = f"ok-{kind}-{n:04d}"
        if kind == "mail":
            lines.append(mail(check_id, ("127.0.0.1", ok["smtp"]), "pop3", ("127.0.0.1", ok["pop3"])))
        else:
            lines.append(check(check_id, kind, "127.0.0.1", ok[kind]))
    for n in range(hostile):
        name, kind, how, spec = rows[n % len(rows)]
        host, port = ports["hostile"][name]
        check_id = f"bad-{name}-{n:04d}"
        if how == "smtp":
            lines.append(mail(check_id, (host, port), "pop3", ("127.0.0.1", ok["pop3"])))
        elif how in ("pop3", "imap"):
            lines.append(mail(check_id, (OTHER_SMTP_ADDRESS, ok["smtp_other"]), how, (host, port)))
        else:
            lines.append(check(check_id, kind, host, port, tls=spec["behaviour"] == "tls_stall"))
    return "\n".join(lines)


def measure_worker(mode: str, healthy: int, hostile: int, interval: float, seconds: float,
                   ports: dict[str, Any], rows: list[tuple[str, str, str, dict[str, Any]]]) -> dict[str, Any]:
    import trio

    import probecore
    from probecore._runner import RunOptions, run_profile
    from probecore.testing import make_host

    os.environ[PASSWORD_ENV] = PASSWORD
    samples: dict[str, list[float]] = {"loop_lag": [], "bridge_lag": []}
    state: dict[str, Any] = {"threads": threading.active_count(), "stored": 0}

    async def noop() -> None:
        return None

    async def sample(start: float) -> None:
        next_line = start + 5.0
        while True:
            before = trio.current_time()
            await trio.sleep(0.1)
            samples["loop_lag"].append((trio.current_time() - before - 0.1) * 1000.0)
            before = trio.current_time()
            await probecore.run_asyncio(noop)
            samples["bridge_lag"].append((trio.current_time() - before) * 1000.0)
            state["threads"] = max(state["threads"], threading.active_count())
            if time.time() >= next_line:
                next_line += 5.0
                sys.stderr.write(f"  {mode}: {time.time() - start:5.1f}/{seconds:g} s, "
                                 f"{state['stored']} records\n")
                sys.stderr.flush()

    with tempfile.TemporaryDirectory(prefix="probecore-bench-hostile-") as tmp:
        host = make_host()
        path = Path(tmp) / "hostile.toml"
        path.write_text(profile_text(healthy, hostile if mode == "mixed" else 0, interval, ports,
                                     rows), encoding="utf-8")
        profile = probecore.load_profile(path, host.probes)
        timeouts = {c.full_id: float(c.timeout) for c in profile.checks}
        store = host.stores.get("sqlite")("sqlite:" + str(Path(tmp) / "bench.sqlite3"))

        def on_stored(records: Any, events: Any) -> None:
            state["stored"] += len(records)

        async def main() -> Any:
            options = RunOptions(duration=seconds, handle_signals=False, vantage=VANTAGE)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample, time.time())
                result = await run_profile(profile, host, store, options, on_stored=[on_stored])
                nursery.cancel_scope.cancel()
            return result

        cpu_before = time.process_time()
        began = time.time()
        result = trio.run(main)
        elapsed = time.time() - began
        cpu = time.process_time() - cpu_before
        rss = peak_rss_mib()

        lateness: list[float] = []
        healthy_records = healthy_not_ok = healthy_timeouts = over_timeout = 0
        healthy_codes: dict[str, int] = {}
        hostile_outcomes: dict[str, int] = {}
        hostile_codes: dict[str, int] = {}
        hostile_records = 0
        for record in store.records(prefix=f"{PROFILE_NAME}/"):
            check_id = record.check.split("/", 1)[1].split(":", 1)[0]
            full = f"{PROFILE_NAME}/{check_id}"
            if record.outcome == "ok" and record.duration_s > timeouts.get(full, math.inf):
                over_timeout += 1
            if ":" in record.check.split("/", 1)[1]:
                continue  # a member's record: its round counts
            if check_id.startswith("ok-"):
                healthy_records += 1
                lateness.append(float(probecore.timestamp_ms(record.started_at)
                                      - probecore.timestamp_ms(record.scheduled_at)))
                if record.outcome != "ok":
                    healthy_not_ok += 1
                    code = record.failure.code if record.failure else "?"
                    healthy_codes[code] = healthy_codes.get(code, 0) + 1
                    healthy_timeouts += code == "timeout"
            else:
                hostile_records += 1
                hostile_outcomes[record.outcome] = hostile_outcomes.get(record.outcome, 0) + 1
                row = check_id[len("bad-"):].rsplit("-", 1)[0]
                key = f"{row} {record.outcome}" + (f":{record.failure.code}" if record.failure else "")
                hostile_codes[key] = hostile_codes.get(key, 0) + 1
        false_incidents = suspected = 0
        for event in store.events(prefix=f"{PROFILE_NAME}/ok-"):
            false_incidents += event.kind == "confirmed"
            suspected += event.kind == "suspected"
        store.close()
    late = figures_of(lateness)
    loop_lag, bridge_lag = figures_of(samples["loop_lag"]), figures_of(samples["bridge_lag"])
    return {
        "checks": len(profile.checks), "records": result.stored_records,
        "healthy_records": healthy_records, "healthy_not_ok": healthy_not_ok,
        "healthy_timeouts": healthy_timeouts, "healthy_failure_codes": healthy_codes,
        "lateness_p50_ms": late["p50"], "lateness_p99_ms": late["p99"], "lateness_max_ms": late["max"],
        "false_incidents": false_incidents, "suspected_incidents": suspected,
        "ok_over_timeout": over_timeout, "hostile_records": hostile_records,
        "hostile_errors": hostile_outcomes.get("error", 0),
        "hostile_outcomes": hostile_outcomes, "hostile_codes": hostile_codes,
        "cpu_s": cpu, "peak_rss_mib": rss, "max_threads": state["threads"], "elapsed_s": elapsed,
        "loop_lag_p99_ms": loop_lag["p99"], "loop_lag_max_ms": loop_lag["max"],
        "bridge_lag_p50_ms": bridge_lag["p50"], "bridge_lag_p99_ms": bridge_lag["p99"],
        "bridge_lag_max_ms": bridge_lag["max"],
    }


# ---- the parent ---------------------------------------------------------------------------------

def start_servers() -> tuple[subprocess.Popen[str], dict[str, Any]]:
    command = [sys.executable, os.path.abspath(__file__), "--worker", "servers"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        fail(f"the servers did not start (exit status {proc.returncode})")
    return proc, json.loads(line)


def run_measure(mode: str, args: argparse.Namespace, ports: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, os.path.abspath(__file__), "--worker", mode,
               "--healthy", str(args.healthy), "--hostile", str(args.hostile),
               "--interval-seconds", repr(args.interval_s), "--seconds", repr(args.seconds),
               "--ports", json.dumps(ports),
               "--rows", ",".join(row[0] for row in args.rows)]
    if not args.quiet:
        sys.stderr.write(f"{mode}: {args.healthy} healthy"
                         + (f" + {args.hostile} hostile" if mode == "mixed" else "")
                         + f" checks for {args.seconds:g} s …\n")
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=None if not args.quiet else subprocess.DEVNULL,
                          text=True, cwd=ROOT, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        fail(f"the {mode} run failed (exit status {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fail(message: str) -> None:
    """A run crashed: one line on stderr, exit status 2."""
    sys.stderr.write(f"hostile benchmark: {message}\n")
    raise SystemExit(2)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def combine(args: argparse.Namespace, base: dict[str, Any], mixed: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "schema": SCHEMA, "short": args.short, "healthy_checks": args.healthy,
        "hostile_checks": args.hostile, "hostile_rows": len(args.rows),
        "interval_s": args.interval_s, "timeout_s": timeout_for(args.interval_s), "seconds": args.seconds,
        "healthy_only": base, "mixed": mixed,
        "lateness_p99_ratio": _ratio(mixed["lateness_p99_ms"], base["lateness_p99_ms"]),
        "cpu_ratio": _ratio(mixed["cpu_s"], base["cpu_s"]),
        "rss_ratio": _ratio(mixed["peak_rss_mib"], base["peak_rss_mib"]),
        "thresholds": {"max_lateness_p99_ms": args.max_lateness_p99,
                       "max_false_incidents": args.max_false_incidents, "max_rss_mib": args.max_rss},
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
    }
    failures = []
    for name, run in (("healthy-only", base), ("mixed", mixed)):
        p99 = run["lateness_p99_ms"]
        if p99 is None or p99 > args.max_lateness_p99:
            failures.append(f"{name}: healthy lateness p99 {p99} ms > {args.max_lateness_p99:g} ms")
        if run["false_incidents"] > args.max_false_incidents:
            failures.append(f"{name}: {run['false_incidents']} false incidents "
                            f"> {args.max_false_incidents}")
        if run["ok_over_timeout"]:
            failures.append(f"{name}: {run['ok_over_timeout']} ok records took longer than their timeout")
    if mixed["peak_rss_mib"] > args.max_rss:
        failures.append(f"mixed: peak RSS {mixed['peak_rss_mib']:.0f} MiB > {args.max_rss:g} MiB")
    errors = mixed["hostile_errors"]
    if errors:
        failures.append(f"mixed: {errors} hostile records are errors (no evidence), not fails")
    figures["failures"] = failures
    figures["passed"] = not failures
    return figures


def show(figures: dict[str, Any]) -> None:
    base, mixed = figures["healthy_only"], figures["mixed"]

    def fmt(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:,.1f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    print(f"probecore under hostile load: {figures['healthy_checks']} healthy + "
          f"{figures['hostile_checks']} hostile checks ({figures['hostile_rows']} hostile servers), "
          f"every {figures['interval_s']:g} s, timeout {figures['timeout_s']:g} s, "
          f"{figures['seconds']:g} s; {figures['cpus']} CPUs, load {figures['load_average']:.1f}")
    rows = [("healthy records", "healthy_records"), ("healthy not ok", "healthy_not_ok"),
            ("  of which timeouts", "healthy_timeouts"),
            ("healthy lateness p50 ms", "lateness_p50_ms"), ("healthy lateness p99 ms", "lateness_p99_ms"),
            ("healthy lateness max ms", "lateness_max_ms"), ("false incidents", "false_incidents"),
            ("suspected (healthy)", "suspected_incidents"), ("ok over timeout", "ok_over_timeout"),
            ("hostile records", "hostile_records"), ("CPU s", "cpu_s"), ("peak RSS MiB", "peak_rss_mib"),
            ("max threads", "max_threads"), ("trio loop lag p99 ms", "loop_lag_p99_ms"),
            ("asyncio bridge lag p99 ms", "bridge_lag_p99_ms"), ("asyncio bridge lag max ms", "bridge_lag_max_ms")]
    print(f"{'figure':28} {'healthy only':>14} {'mixed':>14}")
    for label, key in rows:
        print(f"{label:28} {fmt(base[key]):>14} {fmt(mixed[key]):>14}")
    print(f"ratios mixed/healthy-only: lateness p99 {fmt(figures['lateness_p99_ratio'])}, "
          f"CPU {fmt(figures['cpu_ratio'])}, RSS {fmt(figures['rss_ratio'])}")
    print("hostile outcomes:", json.dumps(mixed["hostile_outcomes"]))
    print("hostile records by server and outcome:")
    for key, count in sorted(mixed["hostile_codes"].items()):
        print(f"  {key}: {count}")
    if mixed["healthy_failure_codes"] or base["healthy_failure_codes"]:
        print("healthy failures:", json.dumps(base["healthy_failure_codes"]), "/",
              json.dumps(mixed["healthy_failure_codes"]))
    print("PASS" if figures["passed"] else "FAIL: " + "; ".join(figures["failures"]))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true",
                        help="about 20 s: 300 hostile + 100 healthy checks every 10 s")
    parser.add_argument("--healthy", type=int, help="healthy checks (default 500; 100 with --short)")
    parser.add_argument("--hostile", type=int, help="hostile checks (default 1500; 300 with --short)")
    parser.add_argument("--interval", help='check interval, e.g. "60s" (default 60s; 10s with --short)')
    parser.add_argument("--seconds", type=float, help="length of each run (default 120; 20 with --short)")
    parser.add_argument("--max-lateness-p99", type=float, default=100.0, metavar="MS")
    parser.add_argument("--max-false-incidents", type=int, default=0, metavar="N")
    parser.add_argument("--max-rss", type=float, default=300.0, metavar="MIB")
    parser.add_argument("--rows", help="only the hostile servers whose name starts with one of "
                        "these comma-separated prefixes (e.g. ftp,smtp-endless)")
    parser.add_argument("--json", action="store_true", help="one JSON line on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--worker", choices=("servers", "healthy", "mixed"), help=argparse.SUPPRESS)
    parser.add_argument("--interval-seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.healthy = args.healthy if args.healthy is not None else (100 if args.short else 500)
    args.hostile = args.hostile if args.hostile is not None else (300 if args.short else 1500)
    args.seconds = args.seconds if args.seconds is not None else (20.0 if args.short else 120.0)
    if args.interval_seconds is not None:
        args.interval_s = args.interval_seconds
    else:
        from probecore import parse_duration
        try:
            args.interval_s = float(parse_duration(args.interval or ("10s" if args.short else "60s")))
        except ValueError as exc:
            parser.error(f"--interval: {exc}")
    args.rows = [row for row in HOSTILE_ROWS
                 if not args.rows or row[0].startswith(tuple(args.rows.split(",")))]
    if not args.rows:
        parser.error(f"--rows: no hostile server is called so; they are: "
                     f"{', '.join(row[0] for row in HOSTILE_ROWS)}")
    if args.healthy < 1 or args.hostile < 0 or args.seconds <= 0 or args.interval_s <= 0:
        parser.error("--healthy must be at least 1, --hostile at least 0, --seconds and "
                     "--interval more than 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker == "servers":
        servers_worker()
        return 0
    if args.worker in ("healthy", "mixed"):
        figures = measure_worker(args.worker, args.healthy, args.hostile, args.interval_s,
                                 args.seconds, json.loads(args.ports), args.rows)
        print(json.dumps(figures))
        return 0
    servers, ports = start_servers()
    try:
        base = run_measure("healthy", args, ports)
        mixed = run_measure("mixed", args, ports)
    finally:
        servers.terminate()
        try:
            servers.wait(10)
        except subprocess.TimeoutExpired:
            servers.kill()
            servers.wait()
    figures = combine(args, base, mixed)
    if args.json:
        print(json.dumps(figures))
    else:
        show(figures)
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
