"""The ``web`` probe kind against a real nginx (plain, TLS, redirects, a slow upstream), through
the real runner and scheduler; and ``probe run --once`` with web checks as a subprocess.

Real sockets, so real time (no MockClock). The slowest case is the accuracy test's 1.6 s
backend delay; the checks of one test run concurrently, so each test takes about as long as
its slowest check.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from probecore import CheckContext, ProfileError, SLIRecord, load_profile
from probecore._runner import RunOptions, run_profile
from probecore.testing import MemoryStore, make_host, write_profile
from tests.conftest import assert_valid_records
from tests.servers import free_port

if TYPE_CHECKING:
    from tests.servers.web_backends import WebNginx

pytest_plugins = ["tests.servers.web_backends"]

HEAD = """\
[profile]
name = "web-test"

[defaults]
interval = "1m"
timeout = "5s"
confirm = 1
"""
PHASES_PLAIN = ["connect", "send", "wait", "transfer"]
ACCURACY_MS = 15.0  # |processing − backend delay| on loopback, with nginx proxying in between


async def run_once(tmp_path: Path, checks: str) -> dict[str, SLIRecord]:
    """Run *checks* (``[[check]]`` tables) once, concurrently, through the runner; records by id."""
    host = make_host()
    profile = load_profile(write_profile(tmp_path, HEAD + checks), host.probes)
    store = MemoryStore()
    result = await run_profile(profile, host, store, RunOptions(once=True, handle_signals=False, vantage="test"))
    assert len(result.records) == len(profile.checks) == result.stored_records
    return {r.check.split("/", 1)[1]: r for r in result.records}


def check(ident: str, url: str, **keys: object) -> str:
    """A ``[[check]]`` table of the web kind; values are written as TOML literals."""
    lines = [f'[[check]]\nid = "{ident}"\nprobe = "web"\nurl = "{url}"']
    for key, value in keys.items():
        lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + " }"
    return str(value)


def failure(record: SLIRecord) -> tuple[str, str]:
    assert record.failure is not None, record
    return record.failure.code, record.failure.attribution


# ---- plain HTTP: phases, value, expectations ---------------------------------------------------

async def test_plain_page_is_ok_with_phases_value_and_details(tmp_path: Path, web_nginx: WebNginx) -> None:
    records = await run_once(tmp_path, check(
        "page", web_nginx.url("/page.html"), body_contains="build 4711", body_regex="<h1>probecore",
        body_not_contains="Traceback", header_match={"X-Probe": "^probecore-", "Content-Type": "text/html"},
        threshold={"op": "<=", "value": "1.5s"}))
    record = records["page"]
    assert record.outcome == "ok", record.failure
    assert record.probe == "web"
    assert record.target == web_nginx.url("/page.html")
    assert list(record.phases) == PHASES_PLAIN  # a literal address is not resolved; no TLS
    assert all(v >= 0 for v in record.phases.values())
    assert record.unit == "s"
    details = record.details
    assert details["status"] == 200
    assert details["address"] == "127.0.0.1"
    assert details["resolved_by"] == "literal"
    assert details["body_bytes"] == 76
    assert details["http_version"] == "1.1"
    # processing = wait − the round trip estimated from this attempt's TCP connect (never < 0)
    wait, rtt = details["wait_s"], details["rtt_estimate_s"]
    assert isinstance(wait, float) and isinstance(rtt, float)
    assert wait == pytest.approx(record.phases["wait"], abs=1e-4)
    assert 0 < rtt <= record.phases["connect"]
    assert record.value == pytest.approx(max(0.0, wait - rtt))
    assert record.value < 0.05
    assert "tls_verify" not in details and "reused" not in details
    if sys.platform.startswith("linux"):  # the kernel's time stamps and handshake RTT
        assert details["timestamps"] == "kernel"
        assert details["rtt_source"] == "tcp_info"


async def test_http_500_and_status_expectations(tmp_path: Path, web_nginx: WebNginx) -> None:
    url = web_nginx.url("/error")
    records = await run_once(tmp_path, check("default", url)
                             + check("listed", url, status=[200, 500])
                             + check("range", url, status=["500-503"])
                             + check("class", url, status=["5xx"])
                             + check("not-page", web_nginx.url("/page.html"), status=["3xx", 404]))
    default = records["default"]
    assert default.outcome == "fail"
    assert failure(default) == ("http_status", "provider")
    assert default.failure is not None and default.failure.message == "HTTP 500 Internal Server Error; expected 2xx"
    assert default.details["status"] == 500
    assert default.value is not None and list(default.phases) == PHASES_PLAIN  # the response was timed
    for ok in ("listed", "range", "class"):
        assert records[ok].outcome == "ok", (ok, records[ok].failure)
    assert failure(records["not-page"]) == ("http_status", "provider")
    assert records["not-page"].failure.message == "HTTP 200 OK; expected 3xx, 404"  # type: ignore[union-attr]


async def test_body_mismatch(tmp_path: Path, web_nginx: WebNginx) -> None:
    url = web_nginx.url("/page.html")
    records = await run_once(tmp_path, check("contains", url, body_contains=["build 4711", "build 4712"])
                             + check("regex", url, body_regex=r"build \d{5}")
                             + check("absent", url, body_not_contains="probecore web"))
    messages = {}
    for ident, record in records.items():
        assert record.outcome == "fail", ident
        assert failure(record) == ("body_mismatch", "provider")
        assert record.details["status"] == 200
        messages[ident] = record.failure.message  # type: ignore[union-attr]
    assert messages == {"contains": 'the body does not contain "build 4712"',
                        "regex": r'the body does not match "build \d{5}"',
                        "absent": 'the body contains "probecore web"'}


async def test_header_match_mismatch_and_missing(tmp_path: Path, web_nginx: WebNginx) -> None:
    url = web_nginx.url("/page.html")
    records = await run_once(tmp_path, check("wrong", url, header_match={"X-Probe": "^apache$"})
                             + check("missing", url, header_match={"X-Cache": "HIT"})
                             + check("right", url, header_match={"server": "^nginx"}))
    assert failure(records["wrong"]) == ("header_mismatch", "provider")
    assert records["wrong"].failure.message == 'X-Probe header "probecore-test" does not match "^apache$"'  # type: ignore[union-attr]
    assert failure(records["missing"]) == ("header_mismatch", "provider")
    assert records["missing"].failure.message == "no X-Cache header"  # type: ignore[union-attr]
    assert records["right"].outcome == "ok"  # header names are case-insensitive


async def test_large_body_is_too_large_and_reading_stops(tmp_path: Path, web_nginx: WebNginx) -> None:
    url = web_nginx.url("/big.bin")
    records = await run_once(tmp_path, check("default", url) + check("small", url, max_body_bytes=1000)
                             + check("roomy", url, max_body_bytes=4 * 1024 * 1024))
    default = records["default"]
    assert failure(default) == ("too_large", "provider")
    assert default.failure.message == "the body is larger than max_body_bytes = 1048576"  # type: ignore[union-attr]
    assert 1024 * 1024 < default.details["body_bytes"] < 2 * 1024 * 1024  # stopped early  # type: ignore[operator]
    assert failure(records["small"]) == ("too_large", "provider")
    roomy = records["roomy"]
    assert roomy.outcome == "ok", roomy.failure
    assert roomy.details["body_bytes"] == 2 * 1024 * 1024
    assert roomy.phases["transfer"] > 0


# ---- redirects -------------------------------------------------------------------------------

async def test_redirect_chain_followed_or_not_and_limited(tmp_path: Path, web_nginx: WebNginx) -> None:
    records = await run_once(tmp_path, check("chain", web_nginx.url("/r1"), body_contains="build 4711")
                             + check("unfollowed", web_nginx.url("/r1"), follow_redirects=False)
                             + check("unfollowed-ok", web_nginx.url("/r1"), follow_redirects=False, status=["3xx"])
                             + check("limited", web_nginx.url("/r1"), max_redirects=2)
                             + check("loop", web_nginx.url("/loop")))
    chain = records["chain"]
    assert chain.outcome == "ok", chain.failure
    assert chain.details["redirects"] == 3
    assert chain.details["final_url"] == web_nginx.url("/page.html")
    assert list(chain.phases) == PHASES_PLAIN  # summed over the four requests
    assert failure(records["unfollowed"]) == ("http_status", "provider")
    assert records["unfollowed"].details["status"] == 302
    assert records["unfollowed-ok"].outcome == "ok"
    assert "redirects" not in records["unfollowed-ok"].details
    limited = records["limited"]
    assert failure(limited) == ("too_many_redirects", "provider")
    assert limited.failure.message == ("more than 2 redirects; the last one (HTTP 307) points to "  # type: ignore[union-attr]
                                       + web_nginx.url("/page.html"))  # nginx makes Location absolute
    assert failure(records["loop"]) == ("too_many_redirects", "provider")
    assert records["loop"].details["redirects"] == 10


# ---- TLS --------------------------------------------------------------------------------------

async def test_tls_verified_against_the_test_ca(tmp_path: Path, web_nginx: WebNginx) -> None:
    records = await run_once(tmp_path, check(
        "site", f"https://localhost:{web_nginx.tls_port}/page.html", ca_file=str(web_nginx.ca_file),
        min_cert_days=30, body_contains="build 4711"))
    record = records["site"]
    assert record.outcome == "ok", record.failure
    # "localhost" comes from /etc/hosts, as the system resolver would find it
    assert list(record.phases) == ["resolve", "connect", "tls", "send", "wait", "transfer"]
    assert record.details["resolved_by"] == "hosts"
    assert record.details["tls_verify"] is True
    assert str(record.details["tls_version"]).startswith("TLSv1.")
    assert record.details["cert_days_left"] > 365  # type: ignore[operator]
    assert record.phases["tls"] > 0


async def test_untrusted_certificate(tmp_path: Path, web_nginx: WebNginx) -> None:
    url = f"https://localhost:{web_nginx.untrusted_port}/"
    records = await run_once(tmp_path, check("verified", url, ca_file=str(web_nginx.ca_file))
                             + check("system-cas", url)
                             + check("unverified", url, tls_verify=False)
                             + check("expiring", url, tls_verify=False, min_cert_days=30))
    for ident in ("verified", "system-cas"):
        record = records[ident]
        assert record.outcome == "fail", ident
        assert failure(record) == ("tls", "provider")
        assert record.failure.message.startswith("TLS certificate of localhost not accepted: ")  # type: ignore[union-attr]
        assert list(record.phases) == ["resolve", "connect", "tls"]
        assert record.value is None
    unverified = records["unverified"]
    assert unverified.outcome == "ok", unverified.failure
    assert unverified.details["tls_verify"] is False  # the opt-out is in the record
    assert 9 < unverified.details["cert_days_left"] <= 10  # type: ignore[operator]
    expiring = records["expiring"]
    assert failure(expiring) == ("cert_expiring", "provider")
    assert re.match(r"the TLS certificate expires in (9\.\d+|10) days \(20\d\d-\d\d-\d\dT[\d:]+Z\); "
                    r"min_cert_days = 30$", expiring.failure.message), expiring.failure  # type: ignore[union-attr]


# ---- where to connect: resolve binding, DNS, ip_version ---------------------------------------

async def test_resolve_binding_keeps_host_header_and_sni(tmp_path: Path, web_nginx: WebNginx) -> None:
    # www.probe.test is in no DNS: only the binding can reach the server, with the right Host/SNI.
    records = await run_once(tmp_path, check(
        "plain", f"http://www.probe.test:{web_nginx.port}/host", resolve="127.0.0.1",
        body_regex=r"\Awww\.probe\.test\n\Z")
        + check("tls", f"https://www.probe.test:{web_nginx.tls_port}/host", resolve="127.0.0.1",
                ca_file=str(web_nginx.ca_file), body_regex=r"\Awww\.probe\.test\n\Z"))
    for ident in ("plain", "tls"):
        record = records[ident]
        assert record.outcome == "ok", (ident, record.failure)
        assert "resolve" not in record.phases
        assert record.details["resolve"] == "127.0.0.1"
        assert record.details["resolved_by"] == "binding"
        assert record.target.startswith(("http://www.probe.test:", "https://www.probe.test:"))
    assert records["tls"].details["tls_verify"] is True  # the name in the certificate matched SNI


async def test_dns_through_a_name_server(tmp_path: Path, web_nginx: WebNginx, nursery: trio.Nursery) -> None:
    from tests.servers.web_backends import serve_dns

    dns_port = await nursery.start(serve_dns, {"www.probe.test": "127.0.0.1"})
    servers = [f"127.0.0.1:{dns_port}"]
    records = await run_once(tmp_path, check(
        "found", f"http://www.probe.test:{web_nginx.port}/host", nameservers=servers,
        body_contains="www.probe.test")
        + check("v4", f"http://www.probe.test:{web_nginx.port}/host", nameservers=servers, ip_version=4)
        + check("nxdomain", f"http://nowhere.probe.test:{web_nginx.port}/", nameservers=servers)
        + check("no-aaaa", f"http://www.probe.test:{web_nginx.port}/", nameservers=servers, ip_version=6)
        + check("ours", f"http://nowhere.probe.test:{web_nginx.port}/", nameservers=servers,
                dns_attribution="provider"))
    for ident in ("found", "v4"):
        record = records[ident]
        assert record.outcome == "ok", (ident, record.failure)
        assert list(record.phases) == ["resolve", *PHASES_PLAIN]
        assert record.details["resolved_by"] == "dns"
        assert record.details["address"] == "127.0.0.1"
    nxdomain = records["nxdomain"]
    assert failure(nxdomain) == ("dns", "third_party")
    assert nxdomain.failure.message == "cannot resolve nowhere.probe.test: no such domain (NXDOMAIN)"  # type: ignore[union-attr]
    assert list(nxdomain.phases) == ["resolve"]
    assert failure(records["no-aaaa"]) == ("dns", "third_party")
    assert records["no-aaaa"].failure.message == "cannot resolve www.probe.test: no AAAA record"  # type: ignore[union-attr]
    assert failure(records["ours"]) == ("dns", "provider")


async def test_silent_name_server_is_dns_within_the_checks_timeout(tmp_path: Path, nursery: trio.Nursery) -> None:
    """The lookup ends before the check's timeout (its own cap is 5 s), so the record is ``dns``
    with its attribution, not the scheduler's ``timeout`` in ``resolve``."""
    from tests.servers.hostile import Hostile, start_hostile

    server = await start_hostile(nursery, Hostile("silence", transport="udp"))
    records = await run_once(tmp_path, check("silent", "http://www.probe.test/", timeout="1.5s",
                                             nameservers=[f"127.0.0.1:{server.port}"]))
    record = records["silent"]
    assert failure(record) == ("dns", "third_party")
    assert re.fullmatch(r"cannot resolve www\.probe\.test: no answer within 1\.\d+s",
                        record.failure.message), record.failure  # type: ignore[union-attr]
    assert server.connections >= 1


# ---- connection failures and timeouts -----------------------------------------------------------

async def test_closed_port_is_connect_refused(tmp_path: Path) -> None:
    port = free_port()
    records = await run_once(tmp_path, check("down", f"http://127.0.0.1:{port}/"))
    record = records["down"]
    assert failure(record) == ("connect_refused", "provider")
    assert record.failure.message == f"connect to 127.0.0.1 port {port}: connection refused"  # type: ignore[union-attr]
    assert list(record.phases) == ["connect"]
    assert record.value is None


async def test_unanswered_connect_is_connect_timeout(tmp_path: Path) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, connect hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            records = await run_once(tmp_path, check("hung", f"http://127.0.0.1:{port}/",
                                                     connect_timeout="200ms"))
    record = records["hung"]
    assert failure(record) == ("connect_timeout", "provider")
    assert record.failure.message == f"connect to 127.0.0.1 port {port}: no answer within 200ms"  # type: ignore[union-attr]
    assert 0.2 <= record.phases["connect"] < 1.0


async def test_slow_answer_is_the_schedulers_timeout_in_wait(tmp_path: Path, web_nginx: WebNginx) -> None:
    records = await run_once(tmp_path, check("slow", web_nginx.url("/delay?ms=3000"), timeout="300ms"))
    record = records["slow"]
    assert failure(record) == ("timeout", "provider")
    assert record.failure.message == "no result within 300ms (during wait)"  # type: ignore[union-attr]
    assert list(record.phases) == ["connect", "send", "wait"]
    assert 0.25 <= record.phases["wait"] < 1.0


async def serve(nursery: trio.Nursery, handler) -> int:  # type: ignore[no-untyped-def]
    """A trio TCP server on 127.0.0.1 for the duration of the test; returns its port."""
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def test_broken_servers_are_closed_or_bad_response(tmp_path: Path, nursery: trio.Nursery) -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.aclose()

    async def babble(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await stream.aclose()

    async def cut_short(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await stream.aclose()

    ports = {name: await serve(nursery, handler)
             for name, handler in (("hang-up", hang_up), ("babble", babble), ("cut-short", cut_short))}
    records = await run_once(tmp_path, "".join(check(name, f"http://127.0.0.1:{port}/")
                                               for name, port in ports.items()))
    assert failure(records["hang-up"]) == ("closed", "provider")
    assert records["hang-up"].failure.message == "127.0.0.1 closed the connection without answering"  # type: ignore[union-attr]
    assert records["hang-up"].value is None
    assert failure(records["babble"]) == ("bad_response", "provider")
    assert records["babble"].failure.message.startswith("not a valid HTTP/1.1 response from 127.0.0.1: ")  # type: ignore[union-attr]
    cut = records["cut-short"]
    assert failure(cut) == ("closed", "provider")
    assert cut.failure.message == "127.0.0.1 closed the connection before the response was complete"  # type: ignore[union-attr]
    assert cut.value is not None  # the first byte came: the server's time is known
    assert list(cut.phases) == PHASES_PLAIN


async def test_response_head_is_bounded(tmp_path: Path, nursery: trio.Nursery) -> None:
    """A head just under 64 KiB is read; one over it, or 1xx answers without end, are
    ``reply_too_large`` (the probe stops reading; the scheduler's timeout is not needed)."""
    from probecore_plugins._client import MAX_INFORMATIONAL
    from probecore_plugins._client import MAX_RESPONSE_HEAD as MAX_HEAD

    def headers(size: int) -> bytes:
        line = b"X-Filler: " + b"f" * 90 + b"\r\n"
        return line * (size // len(line))

    def answer(head: bytes, informational: int = 0):  # type: ignore[no-untyped-def]
        async def handler(stream: trio.SocketStream) -> None:
            await stream.receive_some(4096)
            try:
                await stream.send_all(b"HTTP/1.1 102 Processing\r\n\r\n" * informational
                                      + b"HTTP/1.1 200 OK\r\n" + head + b"Content-Length: 2\r\n\r\nok")
                await stream.receive_some(4096)
            except trio.BrokenResourceError:
                pass
        return handler

    cases = {"under": answer(headers(MAX_HEAD - 1024)), "over": answer(headers(MAX_HEAD + 1024)),
             "some-1xx": answer(b"", MAX_INFORMATIONAL), "endless-1xx": answer(b"", MAX_INFORMATIONAL + 1)}
    ports = {name: await serve(nursery, handler) for name, handler in cases.items()}
    records = await run_once(tmp_path, "".join(check(name, f"http://127.0.0.1:{port}/")
                                               for name, port in ports.items()))
    assert records["under"].outcome == "ok", records["under"].failure
    assert records["some-1xx"].outcome == "ok", records["some-1xx"].failure
    assert failure(records["over"]) == ("reply_too_large", "provider")
    assert records["over"].failure.message == "127.0.0.1 sent a response head longer than 64 KiB"  # type: ignore[union-attr]
    assert failure(records["endless-1xx"]) == ("reply_too_large", "provider")
    assert f"more than {MAX_INFORMATIONAL} informational" in records["endless-1xx"].failure.message  # type: ignore[union-attr]


async def test_missing_ca_file_is_an_error_of_the_probe(tmp_path: Path, web_nginx: WebNginx) -> None:
    records = await run_once(tmp_path, check("site", f"https://localhost:{web_nginx.tls_port}/",
                                             ca_file=str(tmp_path / "missing.pem")))
    record = records["site"]
    assert record.outcome == "error"
    assert failure(record) == ("tls_config", "probe")
    assert record.failure.message.startswith(f"cannot load ca_file {tmp_path / 'missing.pem'}: ")  # type: ignore[union-attr]


# ---- the contract's response time ---------------------------------------------------------------

async def test_processing_matches_backend_delay_and_threshold(tmp_path: Path, web_nginx: WebNginx) -> None:
    threshold = {"op": "<=", "value": "1.5s"}
    records = await run_once(tmp_path, check("d200", web_nginx.url("/delay?ms=200"), threshold=threshold)
                             + check("d1600", web_nginx.url("/delay?ms=1600"), threshold=threshold)
                             + check("d200-tls", f"https://localhost:{web_nginx.tls_port}/delay?ms=200",
                                     ca_file=str(web_nginx.ca_file), threshold=threshold))
    for ident, delay in (("d200", 0.2), ("d200-tls", 0.2), ("d1600", 1.6)):
        record = records[ident]
        assert record.value is not None
        error_ms = (record.value - delay) * 1000
        assert abs(error_ms) < ACCURACY_MS, f"{ident}: processing {record.value:.4f} s, error {error_ms:.2f} ms"
        assert record.value == pytest.approx(record.details["wait_s"] - record.details["rtt_estimate_s"])  # type: ignore[operator]
        if sys.platform.startswith("linux"):
            assert record.details["timestamps"] == "kernel", ident  # also through TLS
    assert records["d200"].outcome == "ok" and records["d200-tls"].outcome == "ok"
    # TLS 1.3: session tickets arrive after the request; they must not count as the answer
    assert records["d200-tls"].details["tls_version"] == "TLSv1.3"
    slow = records["d1600"]
    assert failure(slow) == ("too_slow", "provider")
    assert slow.failure.message.startswith("processing 16")  # type: ignore[union-attr]
    assert slow.failure.message.endswith(" ms; expected <= 1.5s")  # type: ignore[union-attr]
    assert slow.details["status"] == 200


async def test_server_timing_is_recorded_when_asked(tmp_path: Path, web_nginx: WebNginx) -> None:
    url = web_nginx.url("/delay?ms=50")
    records = await run_once(tmp_path, check("on", url, server_timing=True)
                             + check("named", url, server_timing="app")
                             + check("off", url))
    for ident in ("on", "named"):
        details = records[ident].details
        assert 0.05 <= details["server_timing_s"] < 0.05 + ACCURACY_MS / 1000  # type: ignore[operator]
        assert details["server_timing.app_s"] == details["server_timing_s"]
        # the backend's own figure is at most what the probe saw through nginx
        assert details["server_timing_s"] <= records[ident].value + 0.001  # type: ignore[operator]
    assert not any(k.startswith("server_timing") for k in records["off"].details)


async def test_keep_alive_reuses_the_connection(tmp_path: Path, web_nginx: WebNginx) -> None:
    host = make_host()
    path = write_profile(tmp_path, HEAD + check("warm", web_nginx.url("/delay?ms=20"), keep_alive=True)
                         + check("cold", web_nginx.url("/delay?ms=20")))
    profile = load_profile(path, host.probes)
    kind = host.probes.get("web")()
    results = []
    for _ in range(2):
        for item in profile.checks:
            ctx = CheckContext(item.full_id, "test")
            results.append((item.id, await kind.check(item.config, ctx), dict(ctx.phases)))
    (_, warm1, phases1), (_, cold1, _), (_, warm2, phases2), (_, cold2, cold_phases2) = results
    assert all(o.outcome == "ok" for _, o, _ in results)
    assert list(phases1) == PHASES_PLAIN and "reused" not in warm1.details
    assert list(phases2) == ["send", "wait", "transfer"]  # no new connection
    assert warm2.details["reused"] is True
    assert warm2.details["rtt_estimate_s"] == warm1.details["rtt_estimate_s"]  # the connection's own
    assert abs(warm2.value - 0.02) * 1000 < ACCURACY_MS  # type: ignore[operator]
    assert list(cold_phases2) == PHASES_PLAIN and "reused" not in cold2.details


async def test_keep_alive_drops_a_connection_the_server_closed(tmp_path: Path, nursery: trio.Nursery) -> None:
    served = []

    async def once_then_close(stream: trio.SocketStream) -> None:  # keep-alive promised, then broken
        served.append(await stream.receive_some(4096))
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await stream.aclose()

    port = await serve(nursery, once_then_close)
    host = make_host()
    profile = load_profile(write_profile(tmp_path, HEAD + check("warm", f"http://127.0.0.1:{port}/", keep_alive=True)),
                           host.probes)
    item, kind = profile.checks[0], host.probes.get("web")()
    observations = [await kind.check(item.config, CheckContext(item.full_id, "test")) for _ in range(2)]
    assert [o.outcome for o in observations] == ["ok", "ok"]
    assert "reused" not in observations[1].details  # the dead connection was noticed and replaced
    assert len(served) == 2


# ---- profile validation --------------------------------------------------------------------------

@pytest.mark.parametrize(("keys", "expected"), [
    pytest.param({"url": "ftp://example.com/"}, 'check "w": key "url": expected an http:// or https:// URL',
                 id="scheme"),
    pytest.param({"url": "http://user:pw@example.com/"}, 'key "url": user names and passwords do not belong',
                 id="credentials"),
    pytest.param({"url": "http://example.com/", "resolve": "example.org"},
                 'check "w": key "resolve": expected an IP address', id="resolve-name"),
    pytest.param({"url": "http://example.com/", "resolve": "127.0.0.1", "ip_version": 6},
                 'key "resolve": 127.0.0.1 is not an IPv6 address', id="resolve-version"),
    pytest.param({"url": "http://example.com/", "status": ["2yy"]},
                 'check "w": key "status": expected a code (200), a class ("2xx") or a range', id="status"),
    pytest.param({"url": "http://example.com/", "body_regex": "("},
                 'check "w": key "body_regex": not a valid regular expression', id="regex"),
    pytest.param({"url": "http://example.com/", "threshold": {"op": "=<", "value": "1s"}},
                 'check "w": key "threshold.op"', id="threshold-op"),
    pytest.param({"url": "http://example.com/", "max_body_bytes": -1},
                 'check "w": key "max_body_bytes"', id="max-body"),
    pytest.param({"url": "http://example.com/", "tls_verify": False, "ca_file": "/x"},
                 'key "ca_file": has no effect with tls_verify = false', id="ca-without-verify"),
    pytest.param({"url": "http://example.com/", "ip_version": 5}, 'check "w": key "ip_version"', id="ip-version"),
    pytest.param({"url": "http://example.com/", "colour": "red"}, 'check "w": key "colour": unknown key',
                 id="unknown"),
])
def test_bad_keys_are_one_line_profile_errors(tmp_path: Path, keys: dict[str, object], expected: str) -> None:
    url = keys.pop("url")
    path = write_profile(tmp_path, HEAD + check("w", str(url), **keys))
    with pytest.raises(ProfileError) as caught:
        load_profile(path, make_host().probes)
    message = str(caught.value)
    assert expected in message, message
    assert "\n" not in message


# ---- probe run --once, as the CI gate runs it --------------------------------------------------

def test_run_once_cli_with_an_ok_and_a_failing_web_check(tmp_path: Path, web_nginx: WebNginx) -> None:
    path = write_profile(tmp_path, HEAD
                         + check("site", f"http://www.probe.test:{web_nginx.port}/page.html", resolve="127.0.0.1",
                                 body_contains="build 4711", threshold={"op": "<=", "value": "1.5s"})
                         + check("broken", web_nginx.url("/error")))
    store = f"sqlite:{tmp_path / 'web.sqlite3'}"
    env = {**os.environ, "PROBECORE_DATA_DIR": str(tmp_path / "data")}
    run = subprocess.run([sys.executable, "-m", "probecore", "run", "--once", str(path), "--store", store],
                         env=env, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    stderr = run.stderr.decode()
    assert run.returncode == 1, stderr
    assert "Traceback" not in stderr
    records = {r["check"]: r for r in assert_valid_records(run.stdout.splitlines())}
    assert set(records) == {"web-test/site", "web-test/broken"}
    site, broken = records["web-test/site"], records["web-test/broken"]
    assert site["outcome"] == "ok"
    assert site["probe"] == "web" and site["unit"] == "s"
    assert list(site["phases"]) == PHASES_PLAIN
    assert site["details"]["resolved_by"] == "binding" and site["details"]["status"] == 200
    if sys.platform.startswith("linux"):  # kernel time stamps from the first probe of a process on
        assert site["details"]["timestamps"] == "kernel"
    assert broken["outcome"] == "fail"
    assert broken["failure"]["code"] == "http_status"
    assert broken["failure"]["attribution"] == "provider"
    assert broken["details"]["status"] == 500
    assert "2 checks: 1 ok, 1 not ok" in " ".join(stderr.split())
