"""``probe serve``: the status page over a store holding the last day, opened in headless Chromium
from a real ``probe serve`` process on a free loopback port."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from probecore import Failure, IncidentTracker, SLIRecord, format_timestamp
from probecore._cli import build_parser
from probecore._serve import is_loopback, parse_listen
from tests.browser import open_browser

PROFILE = """
[profile]
name = "ops"
timezone = "Asia/Shanghai"
[defaults]
interval = "5m"
confirm = 2
[[check]]
id = "api"
probe = "tcp"
host = "192.0.2.1"
port = 443
[[check]]
id = "db"
probe = "tcp"
host = "192.0.2.2"
port = 5432
[[objective]]
id = "api-availability"
clause = "X-1"
kind = "availability"
check = "api"
op = ">="
target = 0.999
description = "接口每月可用性不低于99.9%。"
"""


def _stream(check: str, start: datetime, end: datetime, failing: list[tuple[datetime, datetime]]) -> list[SLIRecord]:
    out, t, i = [], start, 0
    while t < end:
        down = any(a <= t < b for a, b in failing)
        stamp = format_timestamp(t)
        out.append(SLIRecord(check=f"ops/{check}", probe="tcp", target="192.0.2.1:443", vantage="v1",
                             scheduled_at=stamp, started_at=stamp, duration_s=0.02, outcome="fail" if down else "ok",
                             failure=Failure("connect_refused", "provider", "connection refused") if down else None,
                             value=None if down else 0.020 + 0.004 * (i % 5), unit="s"))
        t += timedelta(minutes=5)
        i += 1
    return out


def recent_store(tmp_path: Path) -> tuple[Path, str, datetime]:
    """The last 26 hours: api had a 30-minute outage three hours ago; db has been down for the
    last 20 minutes (an open incident). Records and the incident tracker's events are stored."""
    from probecore_plugins.sqlite import SQLiteStore

    profile = tmp_path / "ops.toml"
    profile.write_text(PROFILE, encoding="utf-8")
    url = f"sqlite:{tmp_path / 'ops.sqlite3'}"
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    start = now - timedelta(hours=26)
    streams = {"api": _stream("api", start, now, [(now - timedelta(hours=3), now - timedelta(hours=2, minutes=30))]),
               "db": _stream("db", start, now, [(now - timedelta(minutes=20), now)])}
    store = SQLiteStore(url)
    for records in streams.values():
        tracker = IncidentTracker(2)
        events = [e for r in records for e in tracker.feed(r)]
        store.write(records, events)
    store.close()
    return profile, url, now


@contextmanager
def serving(*args: str) -> Iterator[str]:
    """``probe serve ARGS --listen 127.0.0.1:0``; yields its address; always stops it."""
    process = subprocess.Popen([sys.executable, "-m", "probecore", "serve", *args, "--listen", "127.0.0.1:0"],
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found, line + process.stderr.read() if process.poll() is not None else line
        yield found[0]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stderr.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    profile, url, now = recent_store(tmp)
    with serving(str(profile), "--store", url, "--refresh", "2s") as address:
        yield address, now


def test_the_status_page_in_a_browser(server):
    server, now = server
    with open_browser() as page:
        page.open(server)
        states = {row.get_attribute("data-check"): row.get_attribute("data-state")
                  for row in page.page.query_selector_all("tr.check")}
        assert states == {"api": "ok", "db": "fail"}
        assert page.texts("tr.incident td:first-child") == ["db"]
        assert "connect_refused (provider)" in page.text("tr.incident")
        # Month to date: the api's 30 minutes down (unless the month began since), judged by the
        # report's own card and charts.
        card = 'section.objective[data-objective="api-availability"]'
        local = now.astimezone(ZoneInfo("Asia/Shanghai"))
        month_start = local.replace(day=1, hour=0, minute=0)
        outages = page.texts(f"{card} tr.outage")
        if now - timedelta(hours=3) >= month_start:
            assert len(outages) == 1 and outages[0].startswith("api\t")
        else:
            assert outages == []
        assert "接口每月可用性" in page.text(f"{card} .contract")
        assert page.page.query_selector(f"{card} .chart.timeline svg")
        assert len(page.page.query_selector_all(".card.response svg")) == 2
        refresh = page.page.query_selector('meta[http-equiv="refresh"]').get_attribute("content")
        assert refresh == "2"
        assert page.requests == []


def test_the_server_only_reads(server):
    server, _ = server
    with urllib.request.urlopen(server + "status.json", timeout=30) as response:
        data = json.loads(response.read())
    (ops,) = data["profiles"]
    assert [i["check"] for i in ops["open_incidents"]] == ["db"]
    assert {c["id"]: c["state"] for c in ops["checks"]} == {"api": "ok", "db": "fail"}
    assert ops["month_to_date"]["schema"] == "probecore.report/1"
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        request = urllib.request.Request(server, data=b"x", method=method)
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=10)
        error.value.close()
        assert error.value.code == 405 and error.value.headers["Allow"] == "GET, HEAD"
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(server + "admin", timeout=10)
    error.value.close()
    assert error.value.code == 404


def test_loopback_is_the_default_and_bad_addresses_are_one_line(tmp_path, capsys):
    from probecore._cli import main

    assert build_parser().parse_args(["serve", "p.toml"]).listen == "127.0.0.1:8080"
    assert parse_listen("[::1]:0") == ("::1", 0) and is_loopback("::1") and is_loopback("127.0.0.1")
    assert not is_loopback("0.0.0.0")
    profile = tmp_path / "ops.toml"
    profile.write_text(PROFILE, encoding="utf-8")
    assert main(["serve", str(profile), "--listen", "localhost"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--listen" in err


async def _ask(page, request: bytes) -> bytes:
    import trio
    import trio.testing

    from probecore._serve import handle

    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handle, server, page)
        await client.send_all(request)
        response = b""
        while chunk := await client.receive_some(65536):
            response += chunk
    return response


async def test_a_broken_store_is_a_500_line_and_the_server_goes_on(tmp_path, capsys):
    from probecore._plugins import make_plugin_manager
    from probecore._profile import load_profile
    from probecore._serve import StatusPage, Watched

    class BrokenStore:  # a unit seam: the store's disk fails under the page
        blocking = False

        def records(self, **_):
            raise OSError("disk I/O error")

    host = make_plugin_manager()
    path = tmp_path / "ops.toml"
    path.write_text(PROFILE, encoding="utf-8")
    page = StatusPage([Watched(load_profile(path, host.probes, host.evaluators, host.notifiers), BrokenStore())],
                      host.evaluators)
    for _ in range(2):  # not cached: the next request tries again
        response = await _ask(page, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 500 ") and b"OSError: disk I/O error" in response
    assert capsys.readouterr().err.count("could not be built") == 2
    head = await _ask(page, b"HEAD /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 ") and head.endswith(b"\r\n\r\n")  # HEAD: no body
    garbage = await _ask(page, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert garbage == b"" or garbage.startswith(b"HTTP/1.1 400")
