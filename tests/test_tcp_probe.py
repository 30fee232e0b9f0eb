"""The ``tcp`` probe kind against a real nginx and small trio servers, through the real scheduler.

Real sockets, so real time: no MockClock here (autojump could fire a timeout while a loopback
connect is still in flight). Timeouts are short so that the slowest case takes ~0.2 s.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from probecore import SLIRecord, load_profile
from probecore._runner import RunOptions, run_profile
from probecore.testing import MemoryStore, make_host, write_profile
from tests.servers import free_port

if TYPE_CHECKING:
    from tests.servers.nginx import Nginx

pytest_plugins = ["tests.servers.nginx"]

HEAD = """\
[profile]
name = "tcp-test"

[defaults]
interval = "1m"
timeout = "2s"
confirm = 1
"""


async def run_once(tmp_path: Path, checks: str) -> dict[str, SLIRecord]:
    """Run *checks* (``[[check]]`` tables) once through the runner; records by check id."""
    host = make_host()
    profile = load_profile(write_profile(tmp_path, HEAD + checks), host.probes)
    store = MemoryStore()
    result = await run_profile(profile, host, store,
                               RunOptions(once=True, handle_signals=False, vantage="test"))
    assert len(result.records) == len(profile.checks)
    assert sorted(store.records(), key=lambda r: r.check) == sorted(result.records, key=lambda r: r.check)
    assert result.stored_records == len(profile.checks)
    return {r.check.split("/", 1)[1]: r for r in result.records}


async def serve(nursery: trio.Nursery, handler) -> int:  # type: ignore[no-untyped-def]
    """Start a trio TCP server on 127.0.0.1 for the duration of the test; return its port."""
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def test_plain_connect_is_ok_and_measures_connect(tmp_path: Path, nginx: Nginx) -> None:
    records = await run_once(tmp_path, f"""
        [[check]]
        id = "web"
        probe = "tcp"
        host = "{nginx.host}"
        port = {nginx.port}
        """)
    record = records["web"]
    assert record.outcome == "ok"
    assert record.failure is None
    assert record.probe == "tcp"
    assert record.target == f"127.0.0.1:{nginx.port}"
    assert record.vantage == "test"
    assert list(record.phases) == ["connect"]  # a literal address is not resolved
    assert record.value == record.phases["connect"]
    assert 0 < record.value < 2
    assert record.unit == "s"
    assert record.details == {"address": "127.0.0.1"}
    assert record.duration_s >= record.value


async def test_host_name_adds_resolve_phase(tmp_path: Path, nginx: Nginx) -> None:
    records = await run_once(tmp_path, f"""
        [[check]]
        id = "web"
        probe = "tcp"
        host = "localhost"
        port = {nginx.port}
        """)
    record = records["web"]
    assert record.outcome == "ok", record.failure
    assert list(record.phases) == ["resolve", "connect"]
    assert record.value == record.phases["connect"]
    assert record.target == f"localhost:{nginx.port}"
    assert record.details["address"] == "127.0.0.1"


async def test_send_and_expect_http(tmp_path: Path, nginx: Nginx) -> None:
    records = await run_once(tmp_path, rf"""
        [[check]]
        id = "web"
        probe = "tcp"
        host = "{nginx.host}"
        port = {nginx.port}
        send = "GET / HTTP/1.0\r\n\r\n"
        expect = "HTTP/1.1 "
        """)
    record = records["web"]
    assert record.outcome == "ok", record.failure
    assert list(record.phases) == ["connect", "banner"]
    assert record.value == record.phases["connect"]
    assert record.unit == "s"
    assert isinstance(record.details["received"], str)
    assert record.details["received"].startswith("HTTP/1.1 200 OK")
    assert record.details["address"] == "127.0.0.1"


async def test_closed_port_is_connect_refused(tmp_path: Path) -> None:
    port = free_port()  # bound and released: nothing listens there now
    records = await run_once(tmp_path, f"""
        [[check]]
        id = "down"
        probe = "tcp"
        host = "127.0.0.1"
        port = {port}
        """)
    record = records["down"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert record.failure.code == "connect_refused"
    assert record.failure.attribution == "provider"
    assert record.failure.message == f"connect to 127.0.0.1 port {port}: connection refused"
    assert list(record.phases) == ["connect"]
    assert record.value is None and record.unit is None
    assert record.details == {"address": "127.0.0.1"}
    assert record.target == f"127.0.0.1:{port}"


async def test_expect_never_seen_before_nginx_closes(tmp_path: Path, nginx: Nginx) -> None:
    # HTTP/1.0 without keep-alive: nginx answers, then closes; the expected text never comes.
    records = await run_once(tmp_path, rf"""
        [[check]]
        id = "web"
        probe = "tcp"
        host = "{nginx.host}"
        port = {nginx.port}
        send = "GET / HTTP/1.0\r\n\r\n"
        expect = "SSH-2.0"
        """)
    record = records["web"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert record.failure.code == "closed"
    assert record.failure.attribution == "provider"
    assert record.failure.message == "connection closed before 'SSH-2.0' was seen"
    assert list(record.phases) == ["connect", "banner"]
    assert str(record.details["received"]).startswith("HTTP/1.1 200 OK")
    assert record.value is None


async def test_banner_server_closes_without_expected_text(tmp_path: Path, nursery: trio.Nursery) -> None:
    async def greet_and_close(stream: trio.SocketStream) -> None:
        await stream.send_all(b"554 go away\r\n")
        await stream.aclose()

    port = await serve(nursery, greet_and_close)
    records = await run_once(tmp_path, f"""
        [[check]]
        id = "smtp"
        probe = "tcp"
        host = "127.0.0.1"
        port = {port}
        expect = "220 "
        """)
    record = records["smtp"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("closed", "provider")
    assert record.details["received"] == "554 go away"
    assert list(record.phases) == ["connect", "banner"]


async def test_silent_server_times_out_in_banner_phase(tmp_path: Path, nursery: trio.Nursery) -> None:
    async def never_speak(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()  # the test's nursery cancels this at the end

    port = await serve(nursery, never_speak)
    records = await run_once(tmp_path, f"""
        [[check]]
        id = "mute"
        probe = "tcp"
        host = "127.0.0.1"
        port = {port}
        expect = "220 "
        timeout = "200ms"
        """)
    record = records["mute"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert record.failure.code == "timeout"
    assert record.failure.attribution == "provider"
    assert record.failure.message == "no result within 200ms (during banner)"
    # The completed connect phase and the cut-off banner phase are both kept.
    assert list(record.phases) == ["connect", "banner"]
    assert record.phases["connect"] < 0.2
    assert 0.15 <= record.phases["banner"] < 0.5  # until the cancellation arrived
    assert 0.2 <= record.duration_s < 1.0
    assert record.phases["connect"] + record.phases["banner"] <= record.duration_s
    assert record.value is None


async def test_banner_mismatch_when_read_limit_is_reached(tmp_path: Path, nursery: trio.Nursery) -> None:
    async def chatter(stream: trio.SocketStream) -> None:
        await stream.send_all(b"x" * 64)
        await trio.sleep_forever()

    port = await serve(nursery, chatter)
    records = await run_once(tmp_path, f"""
        [[check]]
        id = "chatty"
        probe = "tcp"
        host = "127.0.0.1"
        port = {port}
        expect = "220 "
        read_limit = 16
        """)
    record = records["chatty"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("banner_mismatch", "provider")
    assert record.failure.message == "'220 ' not in the first 16 bytes"
    assert record.details["received"] == "x" * 16


async def test_unresolvable_host_is_resolve_failed(tmp_path: Path) -> None:
    records = await run_once(tmp_path, """
        [[check]]
        id = "nowhere"
        probe = "tcp"
        host = "nonexistent.invalid"
        port = 80
        """)
    record = records["nowhere"]
    assert record.outcome == "fail"
    assert record.failure is not None
    assert record.failure.code == "resolve_failed"
    assert record.failure.attribution == "unknown"
    assert record.failure.message.startswith("cannot resolve nonexistent.invalid: ")
    assert list(record.phases) == ["resolve"]
    assert record.target == "nonexistent.invalid:80"
    assert record.value is None
