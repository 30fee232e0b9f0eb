"""The ``ftp`` probe kind against a real vsftpd (plain, explicit and implicit FTPS) and small trio
servers, through the real scheduler.

Real sockets, so real time: no MockClock. vsftpd answers a wrong password only after PAM's
failure delay (about 2 s), so the two wrong-credential cases run together in one attempt round.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

import probecore
from probecore import ProfileError, SLIRecord, encode_record, load_profile
from probecore._asyncio_bridge import bridge_loop
from probecore._runner import RunOptions, run_profile
from probecore.testing import MemoryStore, make_host, write_profile
from tests.conftest import assert_valid_records
from tests.servers.hostile import Hostile, hostile_in_thread, start_hostile

if TYPE_CHECKING:
    from tests.servers.vsftpd import FtpUser, Vsftpd, VsftpdFactory

pytest_plugins = ["tests.servers.vsftpd"]

PASSWORD_ENV = "PROBECORE_TEST_FTP_PASSWORD"
WRONG_ENV = "PROBECORE_TEST_FTP_WRONG"
WRONG_PASSWORD = "wrong-Zq7-distinctive-passphrase"

HEAD = """\
[profile]
name = "ftp-test"

[defaults]
interval = "1m"
timeout = "5s"
confirm = 1
"""


@pytest.fixture(autouse=True)
def _passwords(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    monkeypatch.setenv(WRONG_ENV, WRONG_PASSWORD)
    if "ftp_user" in request.fixturenames or any(
            name.startswith("vsftpd") for name in request.fixturenames):
        user: FtpUser = request.getfixturevalue("ftp_user")
        monkeypatch.setenv(PASSWORD_ENV, user.password)


async def run_once(tmp_path: Path, checks: str) -> dict[str, SLIRecord]:
    """Run *checks* (``[[check]]`` tables) once through the runner; records by check id."""
    host = make_host()
    profile = load_profile(write_profile(tmp_path, HEAD + checks), host.probes)
    store = MemoryStore()
    result = await run_profile(profile, host, store,
                               RunOptions(once=True, handle_signals=False, vantage="test"))
    assert len(result.records) == len(profile.checks)
    return {r.check.split("/", 1)[1]: r for r in result.records}


def check_table(check_id: str, server: Vsftpd, *, password_env: str = PASSWORD_ENV,
                **keys: object) -> str:
    """A ``[[check]]`` table for *server* (its URL), with extra keys in TOML syntax."""
    lines = ['[[check]]', f'id = "{check_id}"', 'probe = "ftp"', f'url = "{server.url}"',
             f'password = {{ env = "{password_env}" }}']
    for key, value in keys.items():
        lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return f'"{value}"'


def assert_no_secret(record: SLIRecord, *secrets: str) -> None:
    """No revealed password anywhere in the record, as stored and exported."""
    encoded = encode_record(record).decode()
    for secret in secrets:
        assert secret not in encoded, f"password leaked into {record.check}: {encoded}"


async def _other_tasks() -> list[object]:
    import asyncio

    me = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not me]


async def assert_no_asyncio_task_left() -> None:
    assert await probecore.run_asyncio(_other_tasks) == []


def established_to(ports: set[int]) -> list[str]:
    """This process's TCP sockets in state ESTABLISHED whose remote port is one of *ports*."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    found = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == "01" and inode in inodes and int(remote.rsplit(":", 1)[1], 16) in ports:
                found.append(f"{local} -> {remote}")
    return found


def server_data_sockets(server: Vsftpd) -> list[str]:
    """Open TCP connections (ESTABLISHED or CLOSE_WAIT) on the server's passive ports."""
    low, high = server.pasv_ports
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if state in ("01", "08") and low <= int(local.rsplit(":", 1)[1], 16) <= high:
                found.append(f"{local} state {state} tx:rx {queues}")
    return found


def make_dir(user: FtpUser, name: str, *, writable: bool = True, files: int = 0) -> Path:
    """A directory in the FTP user's home (owned by the user unless read-only)."""
    path = user.home / name
    path.mkdir()
    for n in range(files):
        (path / f"file{n}.txt").write_text(f"file {n}\n")
    if writable:
        uid, gid = user.home.stat().st_uid, user.home.stat().st_gid
        os.chown(path, uid, gid)
    return path


async def serve(nursery: trio.Nursery, handler) -> int:  # type: ignore[no-untyped-def]
    """Start a trio TCP server on 127.0.0.1 for the duration of the test; return its port."""
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


# ---- login ----------------------------------------------------------------------------------

async def test_good_login(tmp_path: Path, vsftpd: Vsftpd) -> None:
    records = await run_once(tmp_path, check_table("ftp", vsftpd))
    record = records["ftp"]
    assert record.outcome == "ok", record.failure
    assert record.failure is None
    assert record.probe == "ftp"
    assert record.target == vsftpd.url
    assert list(record.phases) == ["connect", "banner", "login", "quit"]
    assert record.value == record.phases["login"]
    assert 0 < record.value < 5
    assert record.unit == "s"
    assert record.details == {
        "address": "127.0.0.1",
        "banner_reply": 220,
        "banner": "probecore test FTP",
        "user_reply": 331,
        "pass_reply": 230,
        "quit_reply": 221,
    }
    assert sum(record.phases.values()) <= record.duration_s
    assert_no_secret(record, vsftpd.user.password)
    await assert_no_asyncio_task_left()
    assert established_to(vsftpd.ports()) == []


async def test_wrong_password_and_unknown_user_are_the_customers(tmp_path: Path,
                                                                 vsftpd: Vsftpd) -> None:
    unknown = f"""\
[[check]]
id = "unknown"
probe = "ftp"
host = "{vsftpd.host}"
port = {vsftpd.port}
user = "nosuchuser-{os.getpid()}"
password = {{ env = "{PASSWORD_ENV}" }}

"""
    records = await run_once(tmp_path, check_table("wrong", vsftpd, password_env=WRONG_ENV) + unknown)
    for name in ("wrong", "unknown"):
        record = records[name]
        assert record.outcome == "fail", name
        assert record.failure is not None
        assert record.failure.code == "auth_rejected"
        assert record.failure.attribution == "customer"  # 001 §2.3.2: wrong user or password
        assert record.failure.message == "PASS: 530 Login incorrect."
        assert list(record.phases) == ["connect", "banner", "login"]
        assert record.value is None
        assert record.details["user_reply"] == 331
        assert record.details["pass_reply"] == 530
        assert record.details["banner"] == "probecore test FTP"
        assert_no_secret(record, WRONG_PASSWORD, vsftpd.user.password)
    assert records["unknown"].target == f"ftp://nosuchuser-{os.getpid()}@127.0.0.1:{vsftpd.port}/"


async def test_plain_login_to_a_server_that_requires_tls_is_the_customers(
        tmp_path: Path, vsftpd_tls: Vsftpd) -> None:
    # A misconfigured client (001 §2.3.2): vsftpd refuses USER before asking for a password.
    records = await run_once(tmp_path, check_table("plain", vsftpd_tls))
    record = records["plain"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("auth_rejected", "customer")
    assert record.failure.message == "USER: 530 Non-anonymous sessions must use encryption."
    assert record.details["user_reply"] == 530


async def test_stopped_server_is_connect_refused(tmp_path: Path,
                                                 vsftpd_factory: VsftpdFactory) -> None:
    server = vsftpd_factory()
    vsftpd_factory.stop(server)
    records = await run_once(tmp_path, check_table("down", server))
    record = records["down"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert record.failure.code == "connect_refused"
    assert record.failure.attribution == "provider"
    assert record.failure.message == f"connect to 127.0.0.1 port {server.port}: connection refused"
    assert list(record.phases) == ["connect"]
    assert record.details == {}
    assert record.value is None


async def test_too_many_connections_is_421_service_unavailable(
        tmp_path: Path, vsftpd_factory: VsftpdFactory) -> None:
    server = vsftpd_factory(max_per_ip=1)
    with hold_connection(server) as held:
        assert held.startswith(b"220 ")  # the one connection vsftpd allows from 127.0.0.1
        records = await run_once(tmp_path, check_table("busy", server))
    record = records["busy"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("service_unavailable", "provider")
    assert record.failure.message.startswith("banner: 421 There are too many connections")
    assert record.details["banner_reply"] == 421
    assert list(record.phases) == ["connect", "banner"]


@contextmanager
def hold_connection(server: Vsftpd) -> Iterator[bytes]:
    """Keep one control connection open; yields its greeting. vsftpd counts a connection until
    its session process has exited, so the fixture's readiness probe may still count briefly."""
    deadline = time.monotonic() + 5
    while True:
        sock = socket.create_connection((server.host, server.port), timeout=5)
        greeting = sock.recv(200)
        if greeting.startswith(b"220 ") or time.monotonic() > deadline:
            break
        sock.close()
        time.sleep(0.02)
    try:
        yield greeting
    finally:
        sock.close()


# ---- data connections -----------------------------------------------------------------------

async def test_pasv_listing(tmp_path: Path, vsftpd: Vsftpd) -> None:
    make_dir(vsftpd.user, "listing", files=3)
    records = await run_once(tmp_path, check_table("ls", vsftpd, directory="listing", list=True,
                                                   passive="pasv"))
    record = records["ls"]
    assert record.outcome == "ok", record.failure
    assert list(record.phases) == ["connect", "banner", "login", "list", "quit"]
    assert record.value == record.phases["login"]
    assert record.target == f"ftp://{vsftpd.user.name}@127.0.0.1:{vsftpd.port}/listing"
    details = record.details
    assert details["passive"] == "PASV"
    assert details["type_reply"] == 200
    assert details["pasv_reply"] == 227
    assert details["list_reply"] == 226
    assert details["list_entries"] == 3
    assert "epsv_reply" not in details
    assert established_to(vsftpd.ports()) == []


async def test_upload_download_delete_with_checksum(tmp_path: Path, vsftpd: Vsftpd) -> None:
    target = make_dir(vsftpd.user, "xfer")
    records = await run_once(tmp_path, check_table("xfer", vsftpd, directory="xfer", list=True,
                                                   transfer=True, transfer_size=300_000))
    record = records["xfer"]
    assert record.outcome == "ok", record.failure
    assert list(record.phases) == ["connect", "banner", "login", "list", "transfer", "quit"]
    details = record.details
    assert details["passive"] == "EPSV"  # the default tries EPSV first
    assert details["epsv_reply"] == 229
    assert (details["stor_reply"], details["retr_reply"], details["dele_reply"]) == (226, 226, 250)
    assert details["transfer_bytes"] == 300_000
    assert list(target.iterdir()) == []  # the probe's file was deleted
    assert established_to(vsftpd.ports()) == []


async def test_refused_upload_is_unexpected_reply(tmp_path: Path, vsftpd: Vsftpd) -> None:
    make_dir(vsftpd.user, "readonly", writable=False)  # root's, 0755: the user cannot write
    records = await run_once(tmp_path, check_table("ro", vsftpd, directory="readonly",
                                                   transfer=True))
    record = records["ro"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("unexpected_reply", "provider")
    assert record.failure.message == "STOR: 553 Could not create file."
    assert record.details["stor_reply"] == 553
    assert list(record.phases) == ["connect", "banner", "login", "transfer"]
    assert established_to(vsftpd.ports()) == []


async def test_passive_mode_refused_is_data_channel(tmp_path: Path,
                                                    vsftpd_factory: VsftpdFactory) -> None:
    server = vsftpd_factory(pasv_enable="NO")
    records = await run_once(tmp_path, check_table("nopasv", server, list=True))
    record = records["nopasv"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("data_channel", "provider")
    # 550 is a refusal, not "not implemented" (500–504), so the probe does not go on to PASV.
    assert record.failure.message == "passive mode refused: EPSV: 550 Permission denied."
    assert record.details["epsv_reply"] == 550
    assert list(record.phases) == ["connect", "banner", "login", "list"]


# ---- TLS ------------------------------------------------------------------------------------

async def test_explicit_ftps_verified_against_the_test_ca(tmp_path: Path,
                                                           vsftpd_tls: Vsftpd) -> None:
    make_dir(vsftpd_tls.user, "tls-xfer", files=2)
    records = await run_once(tmp_path, check_table(
        "ftps", vsftpd_tls, tls="explicit", ca_file=str(vsftpd_tls.ca_file), directory="tls-xfer",
        list=True, transfer=True))
    record = records["ftps"]
    assert record.outcome == "ok", record.failure
    assert list(record.phases) == ["connect", "banner", "tls", "login", "list", "transfer", "quit"]
    assert record.value == record.phases["login"]
    details = record.details
    assert details["auth_reply"] == 234
    assert str(details["tls_version"]).startswith("TLSv1.")
    assert details["tls_cipher"]
    assert (details["pbsz_reply"], details["prot_reply"]) == (200, 200)  # private data channel
    assert details["list_entries"] == 2
    assert (details["stor_reply"], details["retr_reply"], details["dele_reply"]) == (226, 226, 250)
    assert_no_secret(record, vsftpd_tls.user.password)
    assert established_to(vsftpd_tls.ports()) == []


async def test_explicit_ftps_certificate_checks(tmp_path: Path, vsftpd_tls: Vsftpd) -> None:
    records = await run_once(
        tmp_path,
        check_table("untrusted", vsftpd_tls, tls="explicit")  # the system store lacks the test CA
        + check_table("unverified", vsftpd_tls, tls="explicit", verify=False, list=True))
    untrusted = records["untrusted"]
    assert untrusted.outcome == "fail"
    assert untrusted.failure is not None
    assert (untrusted.failure.code, untrusted.failure.attribution) == ("tls", "provider")
    assert untrusted.failure.message.startswith("TLS handshake: certificate verify failed")
    assert list(untrusted.phases) == ["connect", "banner", "tls"]
    assert untrusted.details["auth_reply"] == 234

    unverified = records["unverified"]
    assert unverified.outcome == "ok", unverified.failure
    assert list(unverified.phases) == ["connect", "banner", "tls", "login", "list", "quit"]


async def test_tls_refused_by_a_plain_server(tmp_path: Path, vsftpd: Vsftpd) -> None:
    records = await run_once(
        tmp_path,
        check_table("verified", vsftpd, tls="explicit")
        + check_table("unverified", vsftpd, tls="explicit", verify=False))
    for name, attribution in (("verified", "provider"), ("unverified", "unknown")):
        record = records[name]
        assert record.outcome == "fail"
        assert record.failure is not None
        assert (record.failure.code, record.failure.attribution) == ("tls", attribution)
        assert record.failure.message.startswith("AUTH: 5")  # vsftpd without ssl_enable
        assert list(record.phases) == ["connect", "banner", "tls"]


async def test_implicit_ftps(tmp_path: Path, vsftpd_factory: VsftpdFactory) -> None:
    server = vsftpd_factory(tls="implicit")
    assert server.url.startswith("ftps://")
    records = await run_once(tmp_path, check_table("implicit", server, ca_file=str(server.ca_file),
                                                   list=True))
    record = records["implicit"]
    assert record.outcome == "ok", record.failure
    # The TLS handshake comes before the greeting, which is sent inside TLS.
    assert list(record.phases) == ["connect", "tls", "banner", "login", "list", "quit"]
    assert "auth_reply" not in record.details
    assert record.details["banner_reply"] == 220
    assert record.details["prot_reply"] == 200


# ---- servers that misbehave -----------------------------------------------------------------

async def test_silent_server_times_out_in_banner_phase(tmp_path: Path,
                                                       nursery: trio.Nursery) -> None:
    async def never_speak(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    port = await serve(nursery, never_speak)
    records = await run_once(tmp_path, f"""
[[check]]
id = "mute"
probe = "ftp"
host = "127.0.0.1"
port = {port}
timeout = "300ms"
""")
    record = records["mute"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("timeout", "provider")
    assert record.failure.message == "no result within 300ms (during banner)"
    assert list(record.phases) == ["connect", "banner"]
    assert 0.2 <= record.phases["banner"] < 1.0
    assert record.duration_s < 1.5
    await assert_no_asyncio_task_left()
    assert established_to({port}) == []


async def test_banner_timeout_key(tmp_path: Path, nursery: trio.Nursery) -> None:
    async def never_speak(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    port = await serve(nursery, never_speak)
    records = await run_once(tmp_path, f"""
[[check]]
id = "mute"
probe = "ftp"
host = "127.0.0.1"
port = {port}
banner_timeout = "150ms"
""")
    record = records["mute"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("banner_timeout", "provider")
    assert record.failure.message == "no greeting from the server within 150ms"
    assert list(record.phases) == ["connect", "banner"]
    assert record.duration_s < 1.0
    await assert_no_asyncio_task_left()


@pytest.mark.parametrize(("hostile", "during", "what"), [
    pytest.param(Hostile("endless_multiline", line=b"220-hostile\r\n"), "banner",
                 "a reply of more than 500 lines", id="endless-220-banner"),
    pytest.param(Hostile("endless_multiline", line=b"220-" + b"x" * 1000 + b"\r\n"), "banner",
                 "a reply longer than 64 KiB", id="long-220-lines"),
    pytest.param(Hostile("endless_multiline", line=b"120 wait\r\n"), "banner",
                 "a reply of more than 500 lines", id="endless-120-wait"),
    pytest.param(Hostile("megabyte_line", lead=b"220 "), "banner",
                 "a reply line longer than 64 KiB", id="megabyte-banner"),
    pytest.param(Hostile("megabyte_line", greeting=b"220 hi\r\n", await_command=True, lead=b"331 "),
                 "login", "a reply line longer than 64 KiB",
                 id="megabyte-user-reply"),
])
async def test_oversized_replies_are_reply_too_large(tmp_path: Path, nursery: trio.Nursery,
                                                     hostile: Hostile, during: str, what: str) -> None:
    """A reply that never ends, or one line over 64 KiB, is the provider's failure, found at
    once (was: the attempt ran to its timeout parsing lines, or a line over asyncio's 64 KiB
    stream limit crashed the plugin: an ``error``, which never opens an incident)."""
    server = await start_hostile(nursery, hostile)
    records = await run_once(tmp_path, f"""
[[check]]
id = "hostile"
probe = "ftp"
url = "ftp://someone@127.0.0.1:{server.port}/"
password = {{ env = "{WRONG_ENV}" }}
timeout = "20s"
""")
    record = records["hostile"]
    assert record.outcome == "fail", record.failure
    assert record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("reply_too_large", "provider")
    assert record.failure.message == f"the server sent {what} during {during}"
    assert list(record.phases)[-1] == during
    assert record.duration_s < 10  # found by the bound, not by the 20 s timeout
    await assert_no_asyncio_task_left()
    assert established_to({server.port}) == []


@pytest.mark.parametrize("tls", ["implicit", "explicit"])
async def test_stalled_tls_handshake_is_cut_at_the_timeout(tmp_path: Path, nursery: trio.Nursery,
                                                           tls: str) -> None:
    """A server that never answers the ClientHello: the attempt ends at its timeout, its socket
    closed (was: the close then waited its whole 2 s grace for a stream that no longer owned
    its transport, so the attempt took the timeout + 2 s)."""
    hostile = Hostile("tls_stall", **({"greeting": b"220 hi\r\n", "script": (b"234 go\r\n",)}
                                      if tls == "explicit" else {}))
    server = await start_hostile(nursery, hostile)
    scheme = "ftps" if tls == "implicit" else "ftp"
    extra = 'tls = "explicit"\n' if tls == "explicit" else ""
    records = await run_once(tmp_path, f"""
[[check]]
id = "stall"
probe = "ftp"
url = "{scheme}://someone@127.0.0.1:{server.port}/"
verify = false
timeout = "1s"
{extra}""")
    record = records["stall"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert record.failure.message == "no result within 1s (during tls)"
    assert record.duration_s < 2.5  # 1 s, and a close that takes no grace
    await assert_no_asyncio_task_left()
    assert established_to({server.port}) == []


async def test_endless_banners_do_not_slow_other_ftp_checks(tmp_path: Path, vsftpd: Vsftpd) -> None:
    """30 checks against servers whose ``220-`` banner never ends, beside 10 logins to vsftpd:
    the logins are not held up (was: a median 3.9 s instead of ~10 ms, 138–250 MB)."""
    hostile = Hostile("endless_multiline", line=b"220-" + b"x" * 70 + b"\r\n")
    # In a thread of its own, so that its sending is not charged to this trio loop.
    serving = hostile_in_thread(hostile)
    server = await trio.to_thread.run_sync(serving.__enter__)
    try:
        checks = "".join(f"""
[[check]]
id = "hostile{n}"
probe = "ftp"
host = "127.0.0.1"
port = {server.port}
timeout = "5s"
""" for n in range(30))
        checks += "".join(check_table(f"good{n}", vsftpd) for n in range(10))
        host = make_host()
        profile = load_profile(write_profile(tmp_path, HEAD + checks), host.probes)
        # per_host: every server here is on 127.0.0.1; the per-host politeness limit would
        # queue the logins behind the hostile checks, and this test is about the bridge.
        result = await run_profile(profile, host, MemoryStore(),
                                   RunOptions(once=True, handle_signals=False, vantage="test",
                                              per_host=100))
    finally:
        await trio.to_thread.run_sync(serving.__exit__, None, None, None)
    records = {r.check.split("/", 1)[1]: r for r in result.records}
    logins = sorted(records[f"good{n}"].phases.get("login", 99.0) for n in range(10))
    assert all(records[f"good{n}"].outcome == "ok" for n in range(10)), logins
    # Loose on purpose (a login takes ~10 ms): the bound that matters is "not seconds".
    assert logins[len(logins) // 2] < 1.0, logins
    hostile_codes = {records[f"hostile{n}"].failure.code for n in range(30)}  # type: ignore[union-attr]
    assert hostile_codes == {"reply_too_large"}
    await assert_no_asyncio_task_left()


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops further SYNs, so connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    held = []
    try:
        for _ in range(4):
            sock = socket.socket()
            sock.setblocking(False)
            if sock.connect_ex(("127.0.0.1", port)) not in (0, errno.EINPROGRESS):
                sock.close()
                continue
            held.append(sock)
        yield port
    finally:
        for sock in held:
            sock.close()
        listener.close()


async def test_connect_timeout_key(tmp_path: Path, full_backlog: int) -> None:
    records = await run_once(tmp_path, f"""
[[check]]
id = "hang"
probe = "ftp"
host = "127.0.0.1"
port = {full_backlog}
connect_timeout = "150ms"
""")
    record = records["hang"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("connect_timeout", "provider")
    assert record.failure.message == f"no TCP connection to 127.0.0.1 port {full_backlog} within 150ms"
    assert list(record.phases) == ["connect"]
    await assert_no_asyncio_task_left()


async def test_password_echoed_by_the_server_is_scrubbed(tmp_path: Path,
                                                         nursery: trio.Nursery) -> None:
    """A server that repeats the password in its reply: the record shows ``***`` instead."""

    async def echo(stream: trio.SocketStream) -> None:
        await stream.send_all(b"220 echo server\r\n")
        buffer = b""
        while True:
            while b"\r\n" not in buffer:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                buffer += chunk
            line, buffer = buffer.split(b"\r\n", 1)
            if line.startswith(b"USER "):
                await stream.send_all(b"331 password please\r\n")
            elif line.startswith(b"PASS "):
                await stream.send_all(b"530 no user with password " + line[5:] + b"\r\n")
            else:
                await stream.send_all(b"500 what\r\n")

    port = await serve(nursery, echo)
    records = await run_once(tmp_path, f"""
[[check]]
id = "echo"
probe = "ftp"
url = "ftp://someone@127.0.0.1:{port}/"
password = {{ env = "{WRONG_ENV}" }}
""")
    record = records["echo"]
    assert record.failure is not None
    assert record.failure.code == "auth_rejected"
    assert record.failure.message == "PASS: 530 no user with password ***"
    assert_no_secret(record, WRONG_PASSWORD)


async def test_checksum_mismatch_is_the_providers(tmp_path: Path, nursery: trio.Nursery) -> None:
    """A (fake) server that corrupts what it stores: the download does not match the upload."""
    files: dict[str, bytes] = {}
    passive: list[trio.SocketListener] = []

    async def corrupting(stream: trio.SocketStream) -> None:
        async def say(line: str) -> None:
            await stream.send_all(line.encode() + b"\r\n")

        async def data() -> trio.SocketStream:
            listener = passive.pop()
            try:
                return await listener.accept()
            finally:
                await listener.aclose()

        await say("220 corrupting server")
        buffer = b""
        while True:
            while b"\r\n" not in buffer:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                buffer += chunk
            raw, buffer = buffer.split(b"\r\n", 1)
            verb, _, argument = raw.decode().partition(" ")
            if verb == "USER":
                await say("331 password please")
            elif verb in ("PASS", "TYPE"):
                await say("230 welcome" if verb == "PASS" else "200 ok")
            elif verb == "EPSV":
                listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
                passive.append(listener)
                await say(f"229 Entering Extended Passive Mode (|||{listener.socket.getsockname()[1]}|)")
            elif verb == "STOR":
                await say("150 send it")
                async with await data() as conn:
                    received = b""
                    while chunk := await conn.receive_some():
                        received += chunk
                files[argument] = bytes([received[0] ^ 0xFF]) + received[1:]
                await say("226 stored")
            elif verb == "RETR":
                await say("150 here it comes")
                async with await data() as conn:
                    await conn.send_all(files[argument])
                await say("226 sent")
            elif verb == "DELE":
                files.pop(argument, None)
                await say("250 deleted")
            elif verb == "QUIT":
                await say("221 bye")
                return
            else:
                await say("502 not implemented")

    port = await serve(nursery, corrupting)
    records = await run_once(tmp_path, f"""
[[check]]
id = "bad-disk"
probe = "ftp"
url = "ftp://someone@127.0.0.1:{port}/"
password = {{ env = "{WRONG_ENV}" }}
transfer = true
transfer_size = 5000
""")
    record = records["bad-disk"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("checksum_mismatch", "provider")
    assert record.failure.message.startswith("downloaded 5000 bytes (sha256 ")
    assert list(record.phases) == ["connect", "banner", "login", "transfer"]
    assert (record.details["stor_reply"], record.details["retr_reply"]) == (226, 226)
    assert record.details["dele_reply"] == 250
    assert files == {}  # the probe deleted its file even though the check failed
    assert established_to({port}) == []


async def test_endless_listing_is_cut_at_its_bound(tmp_path: Path, nursery: trio.Nursery) -> None:
    """A server whose LIST data never ends: the probe stops at 4 MiB (``reply_too_large``) and
    resets the data connection, instead of reading (and holding) it until the timeout."""
    sent = [0]

    async def endless(stream: trio.SocketStream) -> None:
        lines = [b"220 endless lister"]
        buffer = b""
        listener: trio.SocketListener | None = None
        await stream.send_all(lines[0] + b"\r\n")
        while True:
            while b"\r\n" not in buffer:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                buffer += chunk
            raw, buffer = buffer.split(b"\r\n", 1)
            verb = raw.decode().partition(" ")[0]
            if verb == "USER":
                await stream.send_all(b"331 password please\r\n")
            elif verb in ("PASS", "TYPE"):
                await stream.send_all(b"230 welcome\r\n" if verb == "PASS" else b"200 ok\r\n")
            elif verb == "EPSV":
                listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
                port = listener.socket.getsockname()[1]
                await stream.send_all(f"229 Entering Extended Passive Mode (|||{port}|)\r\n".encode())
            elif verb == "LIST" and listener is not None:
                await stream.send_all(b"150 here it comes\r\n")
                conn = await listener.accept()
                await listener.aclose()
                async with conn:
                    entry = b"-rw-r--r-- 1 ftp ftp 0 Jan 01 00:00 file\r\n" * 256
                    try:
                        while True:
                            await conn.send_all(entry)
                            sent[0] += len(entry)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                await stream.send_all(b"426 aborted\r\n")
            else:
                await stream.send_all(b"502 not implemented\r\n")

    port = await serve(nursery, endless)
    records = await run_once(tmp_path, f"""
[[check]]
id = "lister"
probe = "ftp"
url = "ftp://someone@127.0.0.1:{port}/"
password = {{ env = "{WRONG_ENV}" }}
list = true
timeout = "20s"
""")
    record = records["lister"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("reply_too_large", "provider")
    assert record.failure.message == "LIST data: more than 4194304 bytes"
    assert list(record.phases) == ["connect", "banner", "login", "list"]
    assert record.duration_s < 10  # the bound, not the 20 s timeout
    assert 4 * 1024 * 1024 < sent[0] < 64 * 1024 * 1024  # it stopped reading soon after
    await assert_no_asyncio_task_left()


async def test_missing_secret_and_missing_password_are_probe_errors(
        tmp_path: Path, vsftpd: Vsftpd) -> None:
    records = await run_once(tmp_path, f"""
[[check]]
id = "unset"
probe = "ftp"
url = "{vsftpd.url}"
password = {{ env = "PROBECORE_TEST_FTP_NOT_SET" }}

[[check]]
id = "anonymous"
probe = "ftp"
host = "{vsftpd.host}"
port = {vsftpd.port}
""")
    unset = records["unset"]
    assert unset.outcome == "error"
    assert unset.failure is not None
    assert (unset.failure.code, unset.failure.attribution) == ("probe_error", "probe")
    assert unset.failure.message == "secret: environment variable PROBECORE_TEST_FTP_NOT_SET is not set"
    assert unset.phases == {}

    anonymous = records["anonymous"]  # vsftpd asks even anonymous for a password
    assert anonymous.outcome == "error"
    assert anonymous.failure is not None
    assert (anonymous.failure.code, anonymous.failure.attribution) == ("no_password", "probe")
    assert anonymous.details["user_reply"] == 331
    assert anonymous.target == f"ftp://anonymous@127.0.0.1:{vsftpd.port}/"


# ---- cancellation ---------------------------------------------------------------------------

async def test_cancellation_mid_transfer_leaves_no_task_or_socket(
        tmp_path: Path, vsftpd_factory: VsftpdFactory, ftp_user: FtpUser) -> None:
    # 64 KB/s: a 32 MiB upload (more than the loopback socket buffers hold) would take nine
    # minutes; the check's timeout stops it after 0.6 s, with the upload still being written.
    server = vsftpd_factory(local_max_rate=65536)
    target = make_dir(ftp_user, "slow")
    records = await run_once(tmp_path, check_table("slow", server, directory="slow", transfer=True,
                                                   transfer_size=32 * 1024 * 1024, timeout="600ms"))
    record = records["slow"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert record.failure.code == "timeout"
    assert record.failure.message == "no result within 600ms (during transfer)"
    assert list(record.phases) == ["connect", "banner", "login", "transfer"]
    assert record.duration_s < 0.6 + 2.5  # the close after cancellation is bounded
    await assert_no_asyncio_task_left()
    assert not [t for t in await probecore.run_asyncio(_other_tasks)]
    assert established_to(server.ports()) == []
    # The abandoned upload was reset, not closed: the server's end of the data connection is gone
    # at once with what it had buffered, instead of sitting in CLOSE_WAIT on megabytes that
    # vsftpd would go on reading at 64 KB/s for minutes.
    assert server_data_sockets(server) == []
    # The next attempt on the same bridge works.
    records = await run_once(tmp_path, check_table("again", server))
    assert records["again"].outcome == "ok", records["again"].failure
    vsftpd_factory.stop(server)
    leftovers = [p.name for p in target.iterdir()]
    assert all(name.startswith("probecore-") and name.endswith(".tmp") for name in leftovers)
    assert bridge_loop().is_running()


# ---- configuration --------------------------------------------------------------------------

@pytest.mark.parametrize(("keys", "expected"), [
    pytest.param('url = "ftp://u:hunter2-Xq@example.test/"',
                 'key "url": the URL holds a password', id="password-in-url"),
    pytest.param('url = "ftp://example.test/"\nhost = "example.test"',
                 'key "url": give either url, or host and port, not both', id="url-and-host"),
    pytest.param('port = 21', 'key "url": required (or give host)', id="no-target"),
    pytest.param('url = "http://example.test/"', 'key "url": expected a URL like', id="scheme"),
    pytest.param('url = "ftps://example.test/"\ntls = "explicit"',
                 'key "tls": an ftps:// URL is implicit FTPS, not "explicit"', id="ftps-explicit"),
    pytest.param('host = "example.test"\nca_file = "ca.pem"',
                 'key "ca_file": only used with tls', id="ca-without-tls"),
    pytest.param('host = "example.test"\npassword = "literal"',
                 'key "password": expected a secret reference', id="literal-password"),
    pytest.param('host = "example.test"\ntls = "starttls"', 'key "tls"', id="bad-tls"),
    pytest.param('host = "example.test"\npassive = "active"', 'key "passive"', id="bad-passive"),
])
def test_config_errors_name_the_key(tmp_path: Path, keys: str, expected: str) -> None:
    path = write_profile(tmp_path, HEAD + f'[[check]]\nid = "ftp"\nprobe = "ftp"\n{keys}\n')
    with pytest.raises(ProfileError) as info:
        load_profile(path, make_host().probes)
    message = str(info.value)
    assert f'check "ftp": {expected}' in message, message
    assert "hunter2-Xq" not in message


def test_url_and_keys_give_the_same_target(tmp_path: Path) -> None:
    path = write_profile(tmp_path, HEAD + """
[[check]]
id = "a"
probe = "ftp"
url = "ftp://acme@ftp.example.test/pub/site"

[[check]]
id = "b"
probe = "ftp"
host = "ftp.example.test"
user = "acme"
directory = "pub/site"

[[check]]
id = "c"
probe = "ftp"
url = "ftps://ftp.example.test"
""")
    host = make_host()
    profile = load_profile(path, host.probes)
    kind = host.probes.get("ftp")()
    targets = {c.id: kind.target(c.config) for c in profile.checks}
    assert targets == {"a": "ftp://acme@ftp.example.test:21/pub/site",
                       "b": "ftp://acme@ftp.example.test:21/pub/site",
                       "c": "ftps://anonymous@ftp.example.test:990/"}
    assert {kind.host(c.config) for c in profile.checks} == {"ftp.example.test"}


# ---- probe run --once -----------------------------------------------------------------------

def test_cli_run_once_good_and_wrong_password(tmp_path: Path, vsftpd: Vsftpd) -> None:
    """``probe run --once`` as a CI gate: exit 1, right outcomes, no password anywhere."""
    path = write_profile(tmp_path, HEAD + check_table("good", vsftpd)
                         + check_table("wrong", vsftpd, password_env=WRONG_ENV))
    env = {**os.environ, "PROBECORE_DATA_DIR": str(tmp_path / "data"),
           PASSWORD_ENV: vsftpd.user.password, WRONG_ENV: WRONG_PASSWORD}
    run = subprocess.run(
        [sys.executable, "-m", "probecore", "run", "--once", str(path),
         "--store", f"sqlite:{tmp_path / 'ftp.sqlite3'}"],
        env=env, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)

    stdout, stderr = run.stdout.decode(), run.stderr.decode()
    assert run.returncode == 1, stderr
    assert "Traceback" not in stderr
    for secret in (vsftpd.user.password, WRONG_PASSWORD):
        assert secret not in stdout
        assert secret not in stderr
    records = {r["check"]: r for r in assert_valid_records(stdout.splitlines())}
    assert set(records) == {"ftp-test/good", "ftp-test/wrong"}
    good, wrong = records["ftp-test/good"], records["ftp-test/wrong"]
    assert good["outcome"] == "ok"
    assert list(good["phases"]) == ["connect", "banner", "login", "quit"]
    assert good["value"] == good["phases"]["login"]
    assert good["details"]["pass_reply"] == 230
    assert wrong["outcome"] == "fail"
    assert wrong["failure"] == {"code": "auth_rejected", "attribution": "customer",
                                "message": "PASS: 530 Login incorrect."}
    assert "2 checks: 1 ok, 1 not ok" in " ".join(stderr.split())
    assert json.dumps(records).count("***") == 0  # nothing needed scrubbing: nothing leaked
