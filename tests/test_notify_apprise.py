"""The ``apprise`` channel for real, offline: apprise's own ``json://`` and ``form://`` services
posting to a local HTTP receiver the test starts (stdlib ``http.server`` on 127.0.0.1)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
import trio
from probecore_plugins.notifiers.apprise import AppriseConfig, AppriseNotifier

from probecore import DeliveryContext, DeliveryError, Notice, ProfileError, Secret, load_profile
from probecore.testing import make_host, write_profile

TOKEN = "tok-9f8e7d6c5b4a"
"""Stands for a service token inside an apprise URL: never in a message."""


class Receiver:
    """Answers POSTs with ``status`` (after ``delay`` seconds); keeps what arrived."""

    def __init__(self, status: int = 200, delay: float = 0.0):
        self.status, self.delay = status, delay
        self.requests: list[tuple[str, str, bytes]] = []  # path, content type, body
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append((self.path, self.headers.get("Content-Type", ""), body))
                if receiver.delay:
                    receiver.release.wait(receiver.delay)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notice(kind: str = "confirmed") -> Notice:
    return Notice(notice_id=f"p/c@v@2026-11-01T00:00:00Z#{kind}/ops", event_id=f"p/c#{kind}", kind=kind,
                  profile="p", route="ops", check="p/c", vantage="v", incident="p/c@v",
                  incident_started_at="2026-11-01T00:00:00Z", at="2026-11-01T00:05:00Z",
                  title="[p] c: OUTAGE", text="[p] c: OUTAGE\ncheck: p/c from v\nevent: confirmed")


def channel(monkeypatch, *urls: str) -> AppriseConfig:
    secrets = []
    for number, url in enumerate(urls):
        monkeypatch.setenv(f"APPRISE_URL_{number}", url)
        secrets.append(Secret("env", f"APPRISE_URL_{number}"))
    return AppriseConfig(id="ops", kind="apprise", urls=secrets)


async def send(config: AppriseConfig, what: Notice | None = None, timeout: float = 10.0) -> DeliveryContext:
    ctx = DeliveryContext(timeout)
    with trio.fail_after(timeout):
        await AppriseNotifier().send(config, what or notice(), ctx)
    return ctx


async def test_title_and_body_arrive_through_json_and_form(monkeypatch):
    with Receiver() as receiver:
        config = channel(monkeypatch, f"json://127.0.0.1:{receiver.port}/hook/{TOKEN}",
                         f"form://127.0.0.1:{receiver.port}/form")
        await send(config)
    by_path = {path: (ctype, body) for path, ctype, body in receiver.requests}
    assert set(by_path) == {f"/hook/{TOKEN}", "/form"}
    ctype, body = by_path[f"/hook/{TOKEN}"]
    sent = json.loads(body)
    assert ctype.startswith("application/json")
    assert sent["title"] == "[p] c: OUTAGE"
    assert sent["message"] == "[p] c: OUTAGE\ncheck: p/c from v\nevent: confirmed"
    assert sent["type"] == "failure"  # a confirmed outage
    form = parse_qs(by_path["/form"][1].decode())
    assert form["title"] == ["[p] c: OUTAGE"] and form["message"][0].startswith("[p] c: OUTAGE\ncheck:")


@pytest.mark.parametrize("kind, expected", [("resolved", "success"), ("flap", "warning"), ("test", "info")])
async def test_the_notify_type_follows_the_notice(monkeypatch, kind, expected):
    with Receiver() as receiver:
        await send(channel(monkeypatch, f"json://127.0.0.1:{receiver.port}/"), notice(kind))
    assert json.loads(receiver.requests[0][2])["type"] == expected


async def test_a_refused_connection_is_worth_retrying_and_the_token_is_not_in_the_error(monkeypatch):
    port = closed_port()
    config = channel(monkeypatch, f"json://127.0.0.1:{port}/hook/{TOKEN}")
    with pytest.raises(DeliveryError) as caught:
        await send(config)
    message = str(caught.value)
    assert caught.value.retry is True
    assert message.startswith('channel "ops": url 1 (json): ')
    assert "connection" in message.lower()
    assert TOKEN not in message and "hook" not in message and f"json://127.0.0.1:{port}" not in message


async def test_an_http_error_status_fails_the_delivery(monkeypatch):
    with Receiver(status=500) as receiver:
        config = channel(monkeypatch, f"json://127.0.0.1:{receiver.port}/x/{TOKEN}")
        with pytest.raises(DeliveryError) as caught:
            await send(config)
    assert len(receiver.requests) == 1  # it was sent, and refused
    assert caught.value.retry is True and "500" in str(caught.value) and TOKEN not in str(caught.value)


async def test_one_failing_url_of_two_fails_the_channel_and_is_the_one_named(monkeypatch):
    with Receiver() as receiver:
        config = channel(monkeypatch, f"form://127.0.0.1:{receiver.port}/ok",
                         f"json://127.0.0.1:{closed_port()}/{TOKEN}")
        with pytest.raises(DeliveryError) as caught:
            await send(config)
    assert [path for path, _, _ in receiver.requests] == ["/ok"]
    assert "url 2 (json)" in str(caught.value) and "url 1" not in str(caught.value)


@pytest.mark.parametrize("url, expected", [
    (f"slack://{TOKEN}", 'url 1 (slack): apprise cannot use this URL'),
    (f"nonsense://{TOKEN}@example.net/", 'url 1 (nonsense): apprise has no "nonsense://" service'),
    (TOKEN, "url 1 ((no scheme)) is not an apprise URL"),
])
async def test_an_unusable_url_is_not_worth_retrying_and_is_not_shown(monkeypatch, url, expected):
    with pytest.raises(DeliveryError) as caught:
        await send(channel(monkeypatch, url))
    message = str(caught.value)
    assert caught.value.retry is False
    assert message.startswith('channel "ops": ') and expected in message
    assert TOKEN not in message


async def test_a_missing_secret_names_the_reference_only(monkeypatch):
    monkeypatch.delenv("OPS_NOWHERE", raising=False)
    config = AppriseConfig(id="ops", kind="apprise", urls=[Secret("env", "OPS_NOWHERE")])
    with pytest.raises(DeliveryError) as caught:
        await send(config)
    assert caught.value.retry is False
    assert 'channel "ops": url 1:' in str(caught.value) and "OPS_NOWHERE" in str(caught.value)


async def test_the_route_timeout_stops_a_hanging_service(monkeypatch):
    with Receiver(delay=10.0) as receiver:
        config = channel(monkeypatch, f"json://127.0.0.1:{receiver.port}/slow")
        started = time.monotonic()
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(1.0):
                await AppriseNotifier().send(config, notice(), DeliveryContext(1.0))
        assert time.monotonic() - started < 3.0
        assert len(receiver.requests) == 1


def test_target_shows_the_schemes_only(monkeypatch):
    config = channel(monkeypatch, f"json://127.0.0.1:1/{TOKEN}", f"tgram://123456:{TOKEN}/42")
    assert AppriseNotifier().target(config) == "apprise: json, tgram"
    monkeypatch.delenv("APPRISE_URL_1")
    shown = AppriseNotifier().target(config)
    assert shown == "apprise: json, (env APPRISE_URL_1: not available)" and TOKEN not in shown


PROFILE = """
[profile]
name = "p"
[[check]]
id = "c"
probe = "tcp"
host = "127.0.0.1"
port = 9
[[channel]]
id = "ops"
kind = "apprise"
"""


def test_the_profile_takes_secret_references_only(tmp_path):
    host = make_host()
    profile = load_profile(write_profile(tmp_path, PROFILE + 'urls = [{ env = "OPS_URL" }, { file = "u.txt" }]\n'),
                           host.probes, host.evaluators, host.notifiers)
    (config,) = profile.channels
    assert config.urls == [Secret("env", "OPS_URL"), Secret("file", str(tmp_path / "u.txt"))]
    with pytest.raises(ProfileError, match="not a literal string"):
        load_profile(write_profile(tmp_path, PROFILE + f'urls = ["slack://{TOKEN}"]\n'),
                     host.probes, host.evaluators, host.notifiers)
    with pytest.raises(ProfileError, match='key "urls": name at least one apprise URL'):
        load_profile(write_profile(tmp_path, PROFILE + "urls = []\n"), host.probes, host.evaluators, host.notifiers)


def test_loading_the_plugins_does_not_import_apprise():
    code = ("import sys\nfrom probecore._plugins import make_plugin_manager\nhost = make_plugin_manager()\n"
            "assert 'apprise' in host.notifiers, list(host.notifiers)\n"
            "print('apprise' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
