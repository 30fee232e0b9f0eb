"""``probe demo``: loopback services with injected failures, and the demo profile against them.

The services (ports from the embedded demo profile, all on 127.0.0.1) and what happens to them,
as shares of the run (``--for``, default 20 s):

* ``greeting`` (tcp 18301) greets with ``220 probecore demo ready``;
* ``flaky`` (tcp 18302) is closed from 25 % to 55 %: connections are refused, two failures in a
  row confirm an incident and the first success after it resolves it;
* ``slow`` (tcp 18303) answers ``PING`` with ``PONG``, but once, at 75 %, too late for the
  check's timeout: one failure, a flap that never becomes an incident;
* ``site`` (HTTP 18380) serves "demo site", but 503 from 60 % to 80 %;
* ``site-dns`` (DNS 18353, UDP and TCP) says ``www.demo.test`` is 127.0.0.1, but 192.0.2.99 from
  50 % to 85 %: the site's binding is wrong, so its 503s are attributed to the customer and make
  no incident;
* ``ftp`` (aioftp 18321, through the asyncio bridge) lets ``demo`` log in with a password the
  demo puts in ``PROBECORE_DEMO_FTP_PASSWORD``;
* ``mail`` (a small SMTP server, 18325, delivering to a POP3 server, 18326): alice mails bob,
  who reads it over POP3; the password is made up per run like the FTP one;
* ``power`` (a NUT server, 18349) reports UPS ``ups1`` on line (``OL``), but on battery
  (``OB``) from 30 % to 45 %: power is still delivered, so the records are ok with
  ``on_battery`` set.
"""

from __future__ import annotations

import os
import secrets
import statistics
import sys
from collections import Counter
from functools import partial
from importlib import resources
from datetime import datetime, timezone
from pathlib import Path

import trio

from ._errors import UsageError
from ._evaluation import Period, evaluate_profile
from ._plugins import PluginHost
from ._profile import load_profile
from ._report import render_table
from ._report_html import render_html, report_extras
from ._runner import RunOptions, default_vantage, run_profile
from ._store import data_dir, open_store


def demo_profile_path() -> Path:
    """The embedded demo profile (also at ``profiles/demo.toml`` in the source tree)."""
    return Path(str(resources.files("probecore") / "data" / "demo.toml"))


DEMO_PASSWORD_ENV = "PROBECORE_DEMO_FTP_PASSWORD"
DEMO_MAIL_PASSWORD_ENV = "PROBECORE_DEMO_MAIL_PASSWORD"
SITE_NAME = "www.demo.test."

# When each injected failure happens, as shares of the run.
FLAKY_DOWN = (0.25, 0.55)
SLOW_AT = 0.75
DNS_WRONG = (0.50, 0.85)
SITE_DOWN = (0.60, 0.80)
ON_BATTERY = (0.30, 0.45)


class DemoServices:
    """The demo's services; their failures are scheduled on trio's clock from :meth:`serve`."""

    def __init__(self, duration: float, ports: dict[str, int]):
        self.duration = duration
        self.ports = ports
        self.started = 0.0
        self.mailboxes: dict[str, list[bytes]] = {}

    def elapsed_share(self) -> float:
        return (trio.current_time() - self.started) / self.duration

    def during(self, window: tuple[float, float]) -> bool:
        return window[0] <= self.elapsed_share() < window[1]

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.started = trio.current_time()
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(partial(trio.serve_tcp, self._greet, self.ports["greeting"], host="127.0.0.1"))
                await nursery.start(partial(trio.serve_tcp, self._pong, self.ports["slow"], host="127.0.0.1"))
                await nursery.start(partial(trio.serve_tcp, self._site, self.ports["site"], host="127.0.0.1"))
                await nursery.start(self._dns)
                await nursery.start(self._ftp)
                await nursery.start(partial(trio.serve_tcp, self._nut, self.ports["power"], host="127.0.0.1"))
                await nursery.start(partial(trio.serve_tcp, self._smtp, self.ports["smtp"], host="127.0.0.1"))
                await nursery.start(partial(trio.serve_tcp, self._pop3, self.ports["pop3"], host="127.0.0.1"))
            except OSError as exc:
                raise UsageError(f"demo: cannot listen on 127.0.0.1 ({exc.strerror}); "
                                 "is another demo running?") from None
            nursery.start_soon(self._flaky)
            task_status.started()

    async def _greet(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                await stream.send_all(b"220 probecore demo ready\r\n")
            except trio.BrokenResourceError:
                pass

    async def _pong(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                await stream.receive_some(64)
                share = self.elapsed_share()
                if SLOW_AT <= share < SLOW_AT + 1.0 / self.duration:  # one slot's worth of slowness
                    await trio.sleep(1.0)
                await stream.send_all(b"PONG\r\n")
            except trio.BrokenResourceError:
                pass

    async def _flaky(self) -> None:
        async def accept_and_close(stream: trio.SocketStream) -> None:
            await stream.aclose()

        flaky_server = partial(trio.serve_tcp, accept_and_close, self.ports["flaky"], host="127.0.0.1")
        while True:
            with trio.CancelScope() as up:
                async with trio.open_nursery() as nursery:
                    await nursery.start(flaky_server)
                    await trio.sleep_until(self.started + FLAKY_DOWN[0] * self.duration)
                    up.cancel()
            await trio.sleep_until(self.started + FLAKY_DOWN[1] * self.duration)
            async with trio.open_nursery() as nursery:
                await nursery.start(flaky_server)
                await trio.sleep_forever()


    async def _site(self, stream: trio.SocketStream) -> None:
        """A minimal HTTP/1.1 server: one request per connection, then close."""
        async with stream:
            try:
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 65536:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    request += chunk
                if self.during(SITE_DOWN):
                    status, body = b"503 Service Unavailable", b"down for the demo\n"
                else:
                    status, body = b"200 OK", b"<html><body>demo site</body></html>\n"
                await stream.send_all(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/html\r\n"
                                      b"Content-Length: " + str(len(body)).encode() +
                                      b"\r\nConnection: close\r\n\r\n" + body)
            except trio.BrokenResourceError:
                pass

    async def _smtp(self, stream: trio.SocketStream) -> None:
        """Enough SMTP for a probe: EHLO, AUTH PLAIN, MAIL, RCPT, DATA (delivered at once), QUIT."""
        import base64
        from email.utils import formatdate

        password = os.environ[DEMO_MAIL_PASSWORD_ENV]
        lines = _Lines(stream)
        try:
            await stream.send_all(b"220 mail.demo.test ESMTP probecore demo\r\n")
            recipients: list[str] = []
            while (line := await lines.next()) is not None:
                verb = line.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    await stream.send_all(b"250-mail.demo.test\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n")
                elif verb == "AUTH":
                    words = line.split()
                    blob = words[2] if len(words) > 2 else ""
                    parts = base64.b64decode(blob + "==").split(b"\0") if blob else []
                    ok = len(parts) == 3 and parts[2].decode(errors="replace") == password
                    await stream.send_all(b"235 2.7.0 authenticated\r\n" if ok else b"535 5.7.8 bad credentials\r\n")
                elif verb == "MAIL":
                    recipients = []
                    await stream.send_all(b"250 2.1.0 ok\r\n")
                elif verb == "RCPT":
                    recipients.append(line.split(":", 1)[1].strip().strip("<>").lower())
                    await stream.send_all(b"250 2.1.5 ok\r\n")
                elif verb == "DATA":
                    await stream.send_all(b"354 end with <CRLF>.<CRLF>\r\n")
                    body = []
                    while (data := await lines.next()) not in (".", None):
                        body.append(data[1:] if data.startswith("..") else data)
                    received = f"Received: from probe by mail.demo.test; {formatdate(localtime=False)}"
                    message = "\r\n".join([received, *body]).encode() + b"\r\n"
                    for recipient in recipients:
                        self.mailboxes.setdefault(recipient, []).append(message)
                    await stream.send_all(b"250 2.0.0 delivered\r\n")
                elif verb == "QUIT":
                    await stream.send_all(b"221 2.0.0 bye\r\n")
                    return
                elif verb in ("RSET", "NOOP"):
                    await stream.send_all(b"250 2.0.0 ok\r\n")
                else:
                    await stream.send_all(b"502 5.5.2 not implemented\r\n")
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    async def _pop3(self, stream: trio.SocketStream) -> None:
        """Enough POP3 for a probe: USER, PASS, STAT, LIST, TOP, RETR, DELE, QUIT."""
        password = os.environ[DEMO_MAIL_PASSWORD_ENV]
        lines = _Lines(stream)
        user, box, deleted = "", [], set()

        def dotted(text: bytes) -> bytes:
            return b"".join(b"." + part if part.startswith(b".") else part
                            for part in text.splitlines(keepends=True)) + b".\r\n"

        try:
            await stream.send_all(b"+OK probecore demo POP3\r\n")
            while (line := await lines.next()) is not None:
                words = line.split()
                verb = words[0].upper() if words else ""
                number = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
                valid = 1 <= number <= len(box) and number not in deleted
                if verb == "USER":
                    user = words[1].lower() if len(words) > 1 else ""
                    await stream.send_all(b"+OK\r\n")
                elif verb == "PASS":
                    if line[5:] == password:
                        box = list(self.mailboxes.get(user, []))
                        await stream.send_all(b"+OK logged in\r\n")
                    else:
                        await stream.send_all(b"-ERR [AUTH] authentication failed\r\n")
                elif verb == "STAT":
                    await stream.send_all(f"+OK {len(box)} {sum(map(len, box))}\r\n".encode())
                elif verb == "LIST":
                    listing = "".join(f"{i} {len(m)}\r\n" for i, m in enumerate(box, 1) if i not in deleted)
                    await stream.send_all(f"+OK\r\n{listing}.\r\n".encode())
                elif verb in ("TOP", "RETR") and valid:
                    message = box[number - 1]
                    if verb == "TOP":
                        message = message.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                    await stream.send_all(b"+OK\r\n" + dotted(message))
                elif verb == "DELE" and valid:
                    deleted.add(number)
                    await stream.send_all(b"+OK deleted\r\n")
                elif verb == "QUIT":
                    mine = self.mailboxes.get(user, [])
                    for gone in (box[i - 1] for i in deleted):
                        if gone in mine:
                            mine.remove(gone)
                    await stream.send_all(b"+OK bye\r\n")
                    return
                else:
                    await stream.send_all(b"-ERR unknown command or message\r\n")
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    async def _nut(self, stream: trio.SocketStream) -> None:
        """Enough of the NUT network protocol (upsd) for a power check: LIST UPS/VAR, LOGOUT."""
        async with stream:
            buffer = b""
            try:
                while True:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        words = line.decode(errors="replace").split()
                        if words[:2] == ["LIST", "UPS"]:
                            reply = 'BEGIN LIST UPS\nUPS ups1 "Demo UPS"\nEND LIST UPS\n'
                        elif words[:3] == ["LIST", "VAR", "ups1"]:
                            status = "OB" if self.during(ON_BATTERY) else "OL"
                            charge = "87" if status == "OB" else "100"
                            reply = ("BEGIN LIST VAR ups1\n" + "".join(
                                f'VAR ups1 {name} "{value}"\n' for name, value in (
                                    ("ups.status", status), ("battery.charge", charge),
                                    ("battery.runtime", "1800"), ("input.voltage", "0.0" if status == "OB" else "230.0"),
                                    ("output.voltage", "230.0"), ("ups.load", "12")))
                                     + "END LIST VAR ups1\n")
                        elif words[:2] == ["LIST", "VAR"]:
                            reply = "ERR UNKNOWN-UPS\n"
                        elif words[:1] == ["LOGOUT"]:
                            await stream.send_all(b"OK Goodbye\n")
                            return
                        else:
                            reply = "ERR UNKNOWN-COMMAND\n"
                        await stream.send_all(reply.encode())
            except trio.BrokenResourceError:
                pass

    def _dns_answer(self, wire: bytes) -> bytes | None:
        import dns.exception
        import dns.flags
        import dns.message
        import dns.rcode
        import dns.rrset

        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0] if query.question else None
        if question is None or question.name.to_text().lower() != SITE_NAME:
            response.set_rcode(dns.rcode.REFUSED)
        elif question.rdtype == 1:  # A
            address = "192.0.2.99" if self.during(DNS_WRONG) else "127.0.0.1"
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", address))
        return response.to_wire()

    async def _dns(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with sock:
            await sock.bind(("127.0.0.1", self.ports["site-dns"]))
            task_status.started()
            while True:
                wire, peer = await sock.recvfrom(4096)
                answer = self._dns_answer(wire)
                if answer is not None:
                    await sock.sendto(answer, peer)

    async def _ftp(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        import tempfile

        import aioftp

        from ._asyncio_bridge import run_asyncio

        with tempfile.TemporaryDirectory(prefix="probecore-demo-ftp-") as home:
            Path(home, "welcome.txt").write_text("probecore demo\n")
            user = aioftp.User("demo", os.environ[DEMO_PASSWORD_ENV], home_path="/", base_path=Path(home))
            server = aioftp.Server([user], data_ports=range(18330, 18340))
            await run_asyncio(server.start, "127.0.0.1", self.ports["ftp"])
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                with trio.move_on_after(2) as scope:
                    scope.shield = True
                    await run_asyncio(server.close)


class _Lines:
    """CRLF-terminated lines from a stream (``None`` at end of stream)."""

    def __init__(self, stream: trio.SocketStream):
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str | None:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.rstrip(b"\r").decode(errors="replace")


def _median(values: list[float], unit: str | None) -> str:
    from ._display import format_seconds

    if not values:
        return "–"
    middle = statistics.median(values)
    return format_seconds(middle) if unit == "s" else f"{middle:g} {unit or ''}".strip()


def run_demo(host: PluginHost, *, duration: float, store_url: str | None, json_mode: bool) -> int:
    from rich.live import Live
    from rich.table import Table

    from ._display import JsonLines, LiveTable, make_console

    if duration < 10:
        raise UsageError("demo: --for must be at least 10s (the demo needs time for an outage)")
    profile = load_profile(demo_profile_path(), host.probes, host.evaluators, host.notifiers)
    ports = {"greeting": 18301, "flaky": 18302, "slow": 18303, "site": 18380, "site-dns": 18353, "ftp": 18321,
             "power": 18349, "smtp": 18325, "pop3": 18326}
    # The demo's FTP password: made up for this run, read by the ftp check through its secret
    # reference like any other, and never shown.
    os.environ.setdefault(DEMO_PASSWORD_ENV, secrets.token_urlsafe(12))
    os.environ.setdefault(DEMO_MAIL_PASSWORD_ENV, secrets.token_urlsafe(12))
    if store_url is None:
        path = data_dir() / "demo.sqlite3"
        for suffix in ("", "-wal", "-shm"):  # the demo's own store starts empty each time
            Path(str(path) + suffix).unlink(missing_ok=True)
        store_url = f"sqlite:{path}"
    store = open_store(store_url, host.stores.get)
    console = make_console(stderr=json_mode)
    def at(share: float) -> str:
        return f"{share * duration:.0f}s"

    console.print(f"[bold]probecore demo[/]: {len(profile.checks)} checks against loopback services for "
                  f"{duration:g}s. Injected: 'flaky' down {at(FLAKY_DOWN[0])}–{at(FLAKY_DOWN[1])}; 'slow' "
                  f"late once at {at(SLOW_AT)}; the site's DNS points elsewhere {at(DNS_WRONG[0])}–"
                  f"{at(DNS_WRONG[1])} while the site answers 503 {at(SITE_DOWN[0])}–{at(SITE_DOWN[1])}; the UPS "
                  f"is on battery {at(ON_BATTERY[0])}–{at(ON_BATTERY[1])}")
    options = RunOptions(vantage=default_vantage(), duration=duration)
    table = LiveTable(profile, options.vantage)
    services = DemoServices(duration, ports)

    async def main():  # type: ignore[no-untyped-def]
        async with trio.open_nursery() as nursery:
            await nursery.start(services.serve)
            result = await run_profile(profile, host, store, options, on_observed=[table.observed],
                                       on_stored=[JsonLines().stored] if json_mode else [])
            nursery.cancel_scope.cancel()
        return result

    try:
        if json_mode or not console.is_terminal:
            result = trio.run(main)
        else:
            with Live(table, console=console, refresh_per_second=4):
                result = trio.run(main)
        records = list(store.records(prefix=profile.name + "/"))
        deliveries = store.deliveries(profile.name)
        now = datetime.now(timezone.utc)
        local = now.astimezone(profile.timezone)
        period = Period.month(local.year, local.month, profile.timezone)
        report = evaluate_profile(profile, store, host.evaluators, period, now=now)
        html = render_html(report, report_extras(profile, store, period, now, report))
    finally:
        store.close()

    summary = Table(title="What happened", title_justify="left")
    for name in ("check", "attempts", "ok", "fail", "error", "median value", "failure codes"):
        summary.add_column(name)
    by_check: dict[str, list] = {}
    for record in records:
        by_check.setdefault(record.check, []).append(record)
    for check in profile.checks:
        mine = by_check.get(check.full_id, [])
        outcomes = Counter(r.outcome for r in mine)
        values = [r.value for r in mine if r.value is not None]
        codes = Counter(f"{r.failure.code} ({r.failure.attribution})" for r in mine if r.failure)
        summary.add_row(check.id, str(len(mine)), str(outcomes["ok"]), str(outcomes["fail"]),
                        str(outcomes["error"]), _median(values, mine[-1].unit if mine else None),
                        ", ".join(f"{c} ×{n}" for c, n in codes.items()))
    console.print(summary)
    for event in result.events:
        console.print(f"  {event.at}  {event.kind:<9} {event.check}"
                      + (f"  ({event.failure.code}: {event.failure.message})" if event.failure else ""))
    for delivery in deliveries:
        console.print(f"  notice {delivery.notice.kind:<9} {delivery.notice.check} via {delivery.channel}: "
                      f"{delivery.status}" + (f" after {(delivery.delivered_ms - delivery.created_ms) / 1000:.1f}s"
                                              if delivery.delivered_ms else ""))
    if not json_mode:
        render_table(report)
    confirmed = [e for e in result.events if e.kind == "confirmed"]
    console.print(f"{len(records)} records stored in {store.url}; {len(confirmed)} incident(s) confirmed. "
                  f"See them with: probe records {demo_profile_path()} --store {store.url}")
    report_path = data_dir() / "demo-report.html"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(html, encoding="utf-8")
    console.print(f"The month's report as a page (open it in a browser): {report_path}", soft_wrap=True)
    if not records:
        print("probe: demo: no records were stored", file=sys.stderr)
        return 1
    return 0
