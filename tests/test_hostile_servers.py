"""Every protocol probecore speaks, against servers that misbehave (tests/servers/hostile.py).

Each row runs one check through the real runner against a hostile server on 127.0.0.1 and
asserts what an operator needs: the record is a clean ``fail`` (the provider's, with a specific
code) or, where the probe truly cannot judge, a clean ``error`` — never ``plugin_crash`` —
that it came within the check's timeout + 2 s, and that the probe's memory stayed bounded
(peak RSS growth, read from ``/proc/self/status`` after resetting the peak).

The rows: HTTP and HTTPS (web), FTP and FTPS (ftp), DNS over UDP and TCP (dns), SMTP, IMAP,
POP3 (mail), NUT, SNMP and Redfish (power), TCP (tcp, with ``send`` and ``expect``), each with
the behaviours that apply to it: silence, an endless line, an endless multi-line reply, a
megabyte line, garbage, a stalled TLS handshake (where TLS is spoken) and an early close.
Real sockets, so real time: the check timeout is short (2 s; 1 s inside the probes that have
their own per-server limit) so the whole matrix takes well under a minute.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from probecore import SLIRecord, load_profile
from probecore._runner import RunOptions, run_profile
from probecore.testing import MemoryStore, make_host, write_profile
from tests.servers.hostile import (
    Hostile,
    HostileServer,
    hostile_in_thread,
    start_hostile,
)

if TYPE_CHECKING:
    from tests.servers.mail import MailServer

pytest_plugins = ["tests.servers.mail"]

TIMEOUT = 1.5          # the check's timeout
SMTP_TIMEOUT = 2.0     # SMTP rows log in to a real IMAP mailbox first
INNER_TIMEOUT = 1.0    # dns server_timeout, power source_timeout
SLACK = 2.0            # a record must come within its timeout + SLACK
HANG_UP = 1.0          # the probe's connections must be closed this soon after its record
MEMORY_BOUND = 32 * 1024 * 1024  # peak RSS growth allowed for one row (an unbounded reader
                                 # of a hostile server gets ~16 MiB/s, stored several times over)
PASSWORD_ENV = "PROBECORE_TEST_HOSTILE_PASSWORD"

HEAD = f"""\
[profile]
name = "hostile"

[defaults]
interval = "1m"
timeout = "{TIMEOUT:g}s"
confirm = 1
"""

# Codes a row may end with, by kind of misbehaviour.
TOO_LARGE = "reply_too_large"
GIVE_UP = {"timeout"}  # silence and a stalled handshake: the scheduler's timeout is the verdict


@dataclass(frozen=True)
class Row:
    protocol: str
    name: str
    hostile: Hostile
    codes: frozenset[str]
    plain: bool = False  # no TLS from the server even where the protocol speaks it
    attribution: str = "provider"  # of a fail

    @property
    def id(self) -> str:
        return f"{self.protocol}-{self.name}"

    @property
    def timeout(self) -> float:
        return SMTP_TIMEOUT if self.protocol.startswith("smtp") else TIMEOUT


def _row(protocol: str, name: str, hostile: Hostile, *codes: str, plain: bool = False) -> Row:
    return Row(protocol, name, hostile, frozenset(codes), plain or hostile.behaviour == "tls_stall")


def _http_rows(protocol: str, big: str) -> list[Row]:
    """The HTTP-shaped rows (web and Redfish): misbehaviour in answer to the request."""
    status = b"HTTP/1.1 200 OK\r\n"
    rows = [
        _row(protocol, "silence", Hostile("silence", await_command=True), *big_silence(protocol)),
        _row(protocol, "endless_line", Hostile("endless_line", await_command=True,
                                               lead=status + b"X-Hostile: "), TOO_LARGE),
        _row(protocol, "endless_multiline", Hostile("endless_multiline", await_command=True, lead=status,
                                                    line=b"X-Hostile: 1\r\n"), TOO_LARGE),
        _row(protocol, "megabyte_line", Hostile("megabyte_line", await_command=True,
                                                lead=status + b"X-Hostile: "), TOO_LARGE),
        _row(protocol, "endless_body", Hostile("endless_multiline", await_command=True,  # 64 MiB/s at most
                                               lead=status + b"Content-Type: text/plain\r\n\r\n",
                                               line=b"hostile body line\r\n", chunk=65536), big),
        _row(protocol, "huge_head", Hostile("silence", await_command=True,  # complete, but 128 KiB
                                            lead=status + (b"X-Filler: " + b"f" * 118 + b"\r\n") * 1024
                                            + b"Content-Length: 0\r\n\r\n"), TOO_LARGE),
        _row(protocol, "endless_1xx", Hostile("endless_multiline", await_command=True,
                                              line=b"HTTP/1.1 100 Continue\r\n\r\n"), TOO_LARGE),
        _row(protocol, "garbage", Hostile("garbage", await_command=True), *garbage_codes(protocol)),
        _row(protocol, "early_close", Hostile("early_close"), *closed_codes(protocol)),
        _row(protocol, "early_close_after_request", Hostile("early_close", await_command=True),
             *closed_codes(protocol)),
    ]
    if protocol in ("https", "redfish"):
        rows.append(_row(protocol, "tls_stall", Hostile("tls_stall"), *big_silence(protocol)))
        rows.append(_row(protocol, "garbage_instead_of_tls", Hostile("garbage"),
                         "protocol" if protocol == "redfish" else "tls", plain=True))
    return rows


def big_silence(protocol: str) -> set[str]:
    return {"unreachable"} if protocol in ("nut", "snmp", "redfish") else GIVE_UP


def garbage_codes(protocol: str) -> set[str]:
    # Noise holds a blank line (h11 takes a bare "\n\n") within the bound, or it does not.
    if protocol == "redfish":
        return {"protocol", TOO_LARGE}
    return {"protocol"} if protocol == "nut" else {"bad_response", TOO_LARGE}


def closed_codes(protocol: str) -> set[str]:
    return {"protocol"} if protocol in ("nut", "redfish") else {"closed"}


def _line_rows(protocol: str, *, greeting: bytes, script: tuple[bytes, ...] = (), multiline: bytes,
               lead: bytes = b"", prefix: bytes, silence: set[str], garbage: set[str],
               closed: set[str], tls_stall: bool = False, stall_script: tuple[bytes, ...] = ()) -> list[Row]:
    """Rows for a line protocol: after *greeting* and *script*, the next reply misbehaves
    (*greeting* empty: the greeting itself misbehaves)."""
    command = bool(greeting or script)
    first = {"greeting": greeting, "script": script, "await_command": command}
    rows = [
        _row(protocol, "silence", Hostile("silence", **first), *silence),
        _row(protocol, "endless_line", Hostile("endless_line", **first, lead=lead + prefix), TOO_LARGE),
        _row(protocol, "endless_multiline", Hostile("endless_multiline", **first, lead=lead, line=multiline),
             TOO_LARGE),
        _row(protocol, "megabyte_line", Hostile("megabyte_line", **first, lead=lead + prefix), TOO_LARGE),
        _row(protocol, "garbage", Hostile("garbage", **first), *garbage),
        _row(protocol, "early_close", Hostile("early_close"), *closed),
    ]
    if command:
        rows.append(_row(protocol, "early_close_after_command", Hostile("early_close", **first), *closed))
    if tls_stall:
        rows.append(_row(protocol, "tls_stall", Hostile("tls_stall", script=stall_script,
                                                        greeting=greeting if stall_script else b""),
                         *silence, "tls"))
    return rows


FTP_CODES = {"silence": GIVE_UP | {"banner_timeout"},
             "garbage": {"unexpected_reply", "bad_reply", TOO_LARGE},  # noise may hold no line end
             "closed": {"closed"}}
MAIL_CODES = {p: {"silence": GIVE_UP | {f"{p}_connect"}, "garbage": {f"{p}_connect", TOO_LARGE},
                  "closed": {f"{p}_connect"}} for p in ("smtp", "imap", "pop3")}

ROWS: list[Row] = [
    *_http_rows("http", "too_large"),
    *_http_rows("https", "too_large"),
    *_http_rows("redfish", TOO_LARGE),
    *_line_rows("ftp", greeting=b"", multiline=b"220-hostile\r\n", prefix=b"220 ", **FTP_CODES),
    *_line_rows("ftps", greeting=b"", multiline=b"220-hostile\r\n", prefix=b"220 ", tls_stall=True,
                **FTP_CODES),
    _row("ftps", "garbage_instead_of_tls", Hostile("garbage"), "tls", plain=True),
    *[dataclasses.replace(r, protocol="ftps_explicit") for r in _line_rows(
        "ftps", greeting=b"220 hostile FTP\r\n", multiline=b"234-hostile\r\n", prefix=b"234 ",
        tls_stall=True, stall_script=(b"234 go ahead\r\n",), **FTP_CODES) if r.name == "tls_stall"],
    *_line_rows("smtp", greeting=b"220 hostile ESMTP\r\n", multiline=b"250-hostile\r\n", prefix=b"250 ",
                **MAIL_CODES["smtp"]),
    *_line_rows("imap", greeting=b"", multiline=b"* OK hostile\r\n", prefix=b"* OK ", **MAIL_CODES["imap"]),
    *_line_rows("pop3", greeting=b"+OK hostile POP3\r\n", script=(b"+OK\r\n", b"+OK\r\n"),
                lead=b"+OK\r\n", multiline=b"1 100\r\n", prefix=b"+OK ", **MAIL_CODES["pop3"]),
    *_line_rows("nut", greeting=b"", script=(), multiline=b'VAR ups ups.status "OL"\n',
                lead=b"BEGIN LIST VAR ups\n", prefix=b"VAR ups x ", silence={"unreachable"},
                garbage={"protocol"}, closed={"protocol"}),
    *_line_rows("tcp", greeting=b"", multiline=b"NOT-IT\r\n", prefix=b"", silence=GIVE_UP,
                garbage={"banner_mismatch"}, closed={"closed"}),
    # mail over TLS: a handshake that never completes (implicit TLS, and SMTP after STARTTLS)
    *[_row(p, "tls_stall", Hostile("tls_stall"), "timeout", f"{p[:4]}_connect") for p in ("imaps", "pop3s", "smtps")],
    _row("smtp_starttls", "tls_stall", Hostile("tls_stall", greeting=b"220 hostile ESMTP\r\n", script=(
        b"250-hostile\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n", b"220 go ahead\r\n")), "timeout", "smtp_connect"),
    _row("imap", "early_close_after_command", Hostile("early_close", greeting=b"* OK hostile IMAP\r\n",
                                                      await_command=True), "imap_connect"),
    _row("ftp", "early_close_after_command", Hostile("early_close", greeting=b"220 hostile FTP\r\n",
                                                     await_command=True), "closed"),
    _row("nut_starttls", "tls_stall", Hostile("tls_stall", script=(b"OK STARTTLS\n",)), "unreachable"),
    _row("snmp", "silence", Hostile("silence", transport="udp"), "unreachable"),
    _row("snmp", "garbage", Hostile("garbage", transport="udp", size=1400), "unreachable", "protocol"),
    _row("snmp", "flood", Hostile("flood", transport="udp", size=1400), "unreachable", "protocol"),
    _row("dns_udp", "silence", Hostile("silence", transport="udp"), "timeout"),
    # echo=3: the query's id and first flags byte (so TC is clear: no fallback to TCP here)
    _row("dns_udp", "garbage", Hostile("garbage", transport="udp", echo=3, size=512), "malformed"),
    _row("dns_udp", "flood", Hostile("flood", transport="udp", echo=3, size=512), "malformed"),
    _row("dns_udp", "megabyte", Hostile("garbage", transport="udp", echo=3, size=65507), "malformed"),
    # zone discovery through a hostile resolver: the probe cannot judge (an error, its own)
    _row("dns_discover", "silence", Hostile("silence", transport="udp"), "discovery_failed"),
    _row("dns_discover", "garbage", Hostile("garbage", transport="udp", echo=3, size=512), "discovery_failed"),
    _row("dns_discover", "flood", Hostile("flood", transport="udp", echo=3, size=512), "discovery_failed"),
    # the web probe's own lookup through a hostile name server: whose fault is dns_attribution's
    *[dataclasses.replace(r, attribution="third_party") for r in (
        _row("web_dns", "garbage", Hostile("garbage", transport="udp", echo=3, size=512), "dns"),
        _row("web_dns", "flood", Hostile("flood", transport="udp", echo=3, size=512), "dns"))],
    _row("dns_tcp", "silence", Hostile("silence"), "timeout"),
    _row("dns_tcp", "endless_line", Hostile("endless_line"), "malformed", TOO_LARGE),
    _row("dns_tcp", "megabyte_line", Hostile("megabyte_line", lead=b"\xff\xff"), "malformed", TOO_LARGE),
    _row("dns_tcp", "garbage", Hostile("garbage"), "malformed"),
    _row("dns_tcp", "early_close", Hostile("early_close"), "connect_failed"),
]
# tcp's endless rows are judged by expect within read_limit: banner_mismatch, not too large.
ROWS = [dataclasses.replace(r, codes=frozenset({"banner_mismatch"}))
        if r.protocol == "tcp" and TOO_LARGE in r.codes else r for r in ROWS]
TLS_PROTOCOLS = {"https", "redfish", "ftps"}
POWER = {"nut", "nut_starttls", "snmp", "redfish"}
EXPECT = "HOSTILE-EXPECT-4711"  # the tcp check's expect: never in what a hostile server sends


# ---- the TLS identity of the hostile servers --------------------------------------------------------

@pytest.fixture(scope="module")
def tls_identity(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    """A server context for 127.0.0.1 and the CA file that trusts it."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    ca_file = tmp_path_factory.mktemp("hostile-tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server, str(ca_file)


@pytest.fixture(scope="module", autouse=True)
def _snmp_imported() -> None:
    """pysnmp imported before the rows (~0.5 s on first use, inside the source's 1 s otherwise:
    under load the first SNMP row's datagram would not leave before its time is up)."""
    import pysnmp.hlapi.v3arch.asyncio  # noqa: F401


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "hostile-test-password")


# ---- memory ------------------------------------------------------------------------------------------

def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/self/status has no {field}")


def reset_peak() -> int:
    """Reset the peak RSS (Linux: ``5`` to ``/proc/self/clear_refs``); the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return _status_kib("VmRSS") * 1024


def peak() -> int:
    return _status_kib("VmHWM") * 1024


# ---- checks -----------------------------------------------------------------------------------------

def check_table(row: Row, port: int, ca_file: str, mail: MailServer | None = None) -> str:
    """The ``[[check]]`` table that points *row*'s probe at the hostile server on *port*."""
    p = row.protocol
    where = f"127.0.0.1:{port}"
    head = f'[[check]]\nid = "{row.id}"\ntimeout = "{row.timeout:g}s"\n'
    if p == "web_dns":
        return head + f'probe = "web"\nurl = "http://www.probe.test/"\nnameservers = ["{where}"]\n'
    if p in ("http", "https"):
        return head + f'probe = "web"\nurl = "{p}://{where}/"\nca_file = "{ca_file}"\n'
    if p in ("ftp", "ftps", "ftps_explicit"):
        scheme = "ftps" if p == "ftps" else "ftp"
        tls = '\ntls = "explicit"' if p == "ftps_explicit" else ""
        ca = f'\nca_file = "{ca_file}"' if p != "ftp" else ""
        return head + f'probe = "ftp"\nurl = "{scheme}://{where}/"{ca}{tls}\n'
    if p == "dns_discover":  # discovery's budget (4 × server_timeout) ends before the check's
        return head + (f'probe = "dns"\nname = "www.probe.test"\nresolvers = ["{where}"]\n'
                       'server_timeout = "0.3s"\nzone_owner = "provider"\n')
    if p in ("dns_udp", "dns_tcp"):
        return head + (f'probe = "dns"\nname = "www.probe.test"\nservers = ["{where}"]\n'
                       f'server_timeout = "{INNER_TIMEOUT:g}s"\nzone_owner = "provider"\n'
                       'expect = { addresses = ["192.0.2.1"] }\n')
    if p == "tcp":
        return head + (f'probe = "tcp"\nhost = "127.0.0.1"\nport = {port}\nsend = "HELLO\\r\\n"\n'
                       f'expect = "{EXPECT}"\n')
    if p in POWER:
        url = {"nut": f"nut://ups@{where}", "nut_starttls": f"nut://ups@{where}", "snmp": f"snmp://{where}",
               "redfish": f"redfish://{where}/redfish/v1/Chassis/1"}[p]
        extra = f', ca_file = "{ca_file}"' if p in ("redfish", "nut_starttls") else ""
        extra += ', tls = "starttls"' if p == "nut_starttls" else ""
        return head + (f'probe = "power"\ngroup = "any"\nsource_timeout = "{INNER_TIMEOUT:g}s"\n'
                       f'sources = [{{ url = "{url}", role = "ups", name = "src"{extra} }}]\n')
    # mail: the hostile side is the one tested; SMTP needs a real receiving mailbox first.
    password = f'{{ env = "{PASSWORD_ENV}" }}'
    tls = {"smtps": "implicit", "smtp_starttls": "starttls"}.get(p, "none")
    receive_tls = "implicit" if p in ("imaps", "pop3s") else "none"
    if p.startswith("smtp"):
        assert mail is not None
        receive = f'receive_port = {mail.imap_port}\nreceive_host = "{mail.host}"\n'
        smtp = f"smtp_port = {port}\n"
        password = '{ env = "PROBECORE_TEST_MAIL_PASSWORD" }'
        sender, recipient = mail.address("alice"), mail.address("bob")
    else:
        receive = f"receive = \"{p[:4]}\"\nreceive_port = {port}\n"
        smtp = "smtp_port = 9\n"  # never reached: the receiving side fails first
        sender, recipient = "alice@probe.test", "bob@probe.test"
    return head + (f'probe = "mail"\nsmtp_host = "127.0.0.1"\nsmtp_tls = "{tls}"\nreceive_tls = "{receive_tls}"\n'
                   f'ca_file = "{ca_file}"\n'
                   f'{smtp}{receive}sender = "{sender}"\nrecipient = "{recipient}"\n'
                   f"sender_password = {password}\nrecipient_password = {password}\n"
                   'deliver_within = "10s"\n')


async def run_once(tmp_path: Path, table: str) -> list[SLIRecord]:
    """Run one check once through the runner; every record it produced (members first)."""
    host = make_host()
    profile = load_profile(write_profile(tmp_path, HEAD + table), host.probes)
    store = MemoryStore()
    result = await run_profile(profile, host, store,
                               RunOptions(once=True, handle_signals=False, vantage="test"))
    return list(result.records)


async def serve_truncation(nursery: trio.Nursery, port: int) -> None:
    """On UDP *port*: answer every DNS query with an empty, truncated (TC) response, so that the
    dns probe asks again over TCP, where the hostile server waits on the same port number."""
    import dns.flags
    import dns.message

    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", port))

    async def answer() -> None:
        with sock:
            while True:
                data, peer = await sock.recvfrom(4096)
                response = dns.message.make_response(dns.message.from_wire(data))
                response.flags |= dns.flags.TC
                await sock.sendto(response.to_wire(), peer)

    nursery.start_soon(answer)


async def judge_row(row: Row, tmp_path: Path, nursery: trio.Nursery, tls: tuple[ssl.SSLContext, str],
                    mail: MailServer | None = None) -> tuple[SLIRecord, HostileServer]:
    """Start *row*'s hostile server, run the check, assert the common rules; the verdict record."""
    server_context, ca_file = tls
    hostile = row.hostile
    if row.protocol in TLS_PROTOCOLS and not row.plain:
        hostile = dataclasses.replace(hostile, tls=server_context)
    server = await start_hostile(nursery, hostile)
    if row.protocol == "dns_tcp":
        await serve_truncation(nursery, server.port)
    table = check_table(row, server.port, ca_file, mail)
    before = reset_peak()
    began = time.monotonic()
    records = await run_once(tmp_path, table)
    took = time.monotonic() - began
    grown = peak() - before
    print(f"hostile {row.id}: {took:.2f}s, peak RSS +{grown / 2**20:.1f} MiB")  # -rP shows the figures

    verdict = records[0]  # a member's record (power) comes before its round's
    shown = f"{row.id}: {verdict.outcome} {verdict.failure}"
    assert server.connections >= 1, f"{row.id}: the probe never reached the hostile server"
    with trio.move_on_after(HANG_UP):  # the server sees the close (EOF, or a failed write) at once
        while server.active:
            await trio.sleep(0.01)
    assert server.active == 0, f"{shown}: {server.active} connection(s) still open after the record"
    assert took < row.timeout + SLACK, f"{shown}: took {took:.1f}s (timeout {row.timeout:g}s)"
    assert grown < MEMORY_BOUND, f"{shown}: peak RSS grew by {grown / 2**20:.1f} MiB"
    for record in records:
        assert record.outcome in ("fail", "error"), f"{row.id}: {record}"
        assert record.failure is not None
        assert record.failure.code not in ("plugin_crash", "unspecified", "probe_error"), shown
    assert verdict.failure is not None
    assert verdict.failure.code in row.codes, f"{shown}; expected one of {sorted(row.codes)}"
    if verdict.outcome == "fail":
        assert verdict.failure.attribution == row.attribution, shown
    return verdict, server


@pytest.mark.parametrize("row", [r for r in ROWS if not r.protocol.startswith("smtp")], ids=lambda r: r.id)
async def test_hostile_server(row: Row, tmp_path: Path, nursery: trio.Nursery,
                              tls_identity: tuple[ssl.SSLContext, str]) -> None:
    verdict, _ = await judge_row(row, tmp_path, nursery, tls_identity)
    if row.protocol == "dns_discover":
        assert verdict.outcome == "error", verdict
    elif row.protocol in POWER:
        # Telemetry that cannot be read is no evidence about the power: an error, the probe's.
        assert verdict.outcome == "error", verdict
    else:  # the service misbehaved: the provider's failure
        assert verdict.outcome == "fail", verdict


@pytest.mark.parametrize("row", [r for r in ROWS if r.protocol.startswith("smtp")], ids=lambda r: r.id)
async def test_hostile_smtp_server(row: Row, tmp_path: Path, nursery: trio.Nursery,
                                   tls_identity: tuple[ssl.SSLContext, str], mail_server: MailServer,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBECORE_TEST_MAIL_PASSWORD", mail_server.password)
    verdict, _ = await judge_row(row, tmp_path, nursery, tls_identity, mail_server)
    assert verdict.outcome == "fail", verdict


# ---- the hostile server itself -------------------------------------------------------------------------

def _read_for(port: int, send: bytes, seconds: float) -> tuple[bytes, int]:
    """Connect, send, read for *seconds*: (the first 64 bytes, how many bytes came in all)."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        sock.sendall(send)
        head, total, end = b"", 0, time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            head = (head + data)[:64]
            total += len(data)
        return head, total


def test_hostile_server_behaviours_from_a_thread() -> None:
    script = Hostile("endless_multiline", greeting=b"220 hi\r\n", script=(b"250 ok\r\n",), await_command=True,
                     lead=b"250-start\r\n")
    with hostile_in_thread(script) as server:
        head, total = _read_for(server.port, b"EHLO a\r\nMAIL b\r\n", 0.3)
    assert head.startswith(b"220 hi\r\n250 ok\r\n250-start\r\n250-hostile\r\n")
    assert total > 100_000  # endless, throttled: at most ~16 MiB/s
    assert server.received == [b"EHLO a\r\n", b"MAIL b\r\n"]
    with hostile_in_thread(Hostile("megabyte_line", lead=b"220 ")) as server:
        head, total = _read_for(server.port, b"", 0.5)
    assert head.startswith(b"220 xxxx") and total == 4 + 2**20 + 1 + 2
    with hostile_in_thread(Hostile("early_close", greeting=b"220 bye\r\n")) as server:
        head, total = _read_for(server.port, b"", 0.5)
    assert head == b"220 bye\r\n" and total == 9
    with hostile_in_thread(Hostile("silence")) as server:
        head, total = _read_for(server.port, b"hello", 0.2)
        held = socket.create_connection(("127.0.0.1", server.port))
        deadline = time.monotonic() + 5
        while server.active != 1 and time.monotonic() < deadline:  # the first one has left
            time.sleep(0.01)
        assert server.active == 1  # the one still held
        held.close()
        while server.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.active == 0
    assert total == 0 and server.connections == 2
    with pytest.raises(ValueError, match="unknown behaviour 'flood'"):
        Hostile("flood")


async def test_hostile_udp_flood_echoes_the_id(nursery: trio.Nursery) -> None:
    server = await start_hostile(nursery, Hostile("flood", transport="udp", echo=2, size=100, flood=5))
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.sendto(b"\x12\x34query", ("127.0.0.1", server.port))
        replies = [await sock.recv(70000) for _ in range(5)]
        await trio.testing.wait_all_tasks_blocked()  # the server has counted its last send
    assert all(len(r) == 100 and r[:2] == b"\x12\x34" for r in replies)
    assert server.connections == 1 and server.bytes_sent == 500


def test_memory_probe_is_linux_proc() -> None:
    before = reset_peak()
    block = bytearray(os.urandom(1)) * (48 * 2**20)  # touched: really resident
    assert peak() - before > 40 * 2**20
    del block
