"""The ``webhook`` channel against a local HTTP(S) receiver the test controls.

The receiver (stdlib ``http.server`` in a thread, 127.0.0.1, a free port) records every request
and answers from a script (503 for a while, then 200). Real sockets and the real clock: the
delivery worker's wall clock (``now_ms``) is injected where a test needs to skip backoff.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, quote_plus

import msgspec
import pytest
import trio
import trustme
from probecore_plugins.notifiers.webhook import WebhookNotifier
from probecore_plugins.sqlite import SQLiteStore

from probecore import (
    DeliveryContext,
    DeliveryError,
    IncidentEvent,
    Notice,
    ProfileError,
    Secret,
    load_profile,
    timestamp_ms,
)
from probecore._notify import DeliveryWorker, Router
from probecore.testing import make_host, write_profile

KEY = "s3cret-hmac-key-for-tests"
WAIT = 20.0  # bound of every wait on a subprocess; never reached when things work


# ---- the receiver -----------------------------------------------------------------------------

@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int
    at: float

    @property
    def key(self) -> str:
        return self.headers.get("idempotency-key", "")


class Receiver:
    """An HTTP(S) endpoint: answers ``script`` statuses in turn, then ``status``; records all."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.requests: list[Received] = []
        self.script: list[int] = []
        self.status = 200
        self.reason: str | None = None
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    status = receiver.script.pop(0) if receiver.script else receiver.status
                    receiver.requests.append(Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body, status, time.monotonic()))
                    reason = receiver.reason
                self.send_response(status, reason)
                self.send_header("Content-Length", "2")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                receiver.errors.append(sys.exc_info()[1])  # type: ignore[arg-type]

        self.server = Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self.port = self.server.server_address[1]
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def answer(self, status: int, reason: str | None = None) -> None:
        with self.lock:
            self.status, self.reason = status, reason

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def tls_receiver(ca):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    r = Receiver(tls=context)
    yield r
    r.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- notices and configs ----------------------------------------------------------------------

def notice(kind: str = "confirmed", check: str = "a", n: int = 0) -> Notice:
    incident = f"hooks/{check}@local@2026-09-01T00:00:0{n}.000Z"
    return Notice(notice_id=f"{incident}#{kind}/ops", event_id=f"{incident}#{kind}", kind=kind,  # type: ignore[arg-type]
                  profile="hooks", route="ops", check=f"hooks/{check}", vantage="local", incident=incident,
                  incident_started_at="2026-09-01T00:00:00.000Z", at="2026-09-01T00:00:05.000Z",
                  title=f"[hooks] {check}: OUTAGE", text=f"[hooks] {check}: OUTAGE\nmore", labels={"team": "web"})


def config(url: str, **keys: object):
    """A webhook channel config, converted as the profile loader does (secrets from tables)."""
    def dec_hook(tp: type, obj: object) -> object:
        if tp is Secret:
            return Secret.from_table(obj)
        raise NotImplementedError

    table = {"id": "hook", "kind": "webhook", "url": url, **keys}
    return msgspec.convert(table, WebhookNotifier.Config, dec_hook=dec_hook, strict=True)


SECRET = {"env": "PROBE_HOOK_KEY"}


async def deliver(cfg, n: Notice | None = None) -> tuple[DeliveryContext, DeliveryError | None]:
    ctx = DeliveryContext(5.0)
    try:
        with trio.fail_after(ctx.timeout):
            await WebhookNotifier().send(cfg, n or notice(), ctx)
    except DeliveryError as exc:
        return ctx, exc
    return ctx, None


# ---- (a) the request, statuses, TLS -----------------------------------------------------------

async def test_the_post_is_the_notice_signed_with_its_idempotency_headers(receiver, monkeypatch):
    monkeypatch.setenv("PROBE_HOOK_KEY", KEY)
    sent = notice()
    cfg = config(receiver.url("/hook?token=abcdefgh12345"), secret=SECRET, headers={"X-Team": "web"})
    _, error = await deliver(cfg, sent)
    assert error is None
    (got,) = receiver.received()
    assert got.path == "/hook?token=abcdefgh12345"
    # The body is the notice, byte for byte as encoded, and it decodes back to it.
    assert got.body == msgspec.json.encode(sent)
    assert msgspec.json.decode(got.body, type=Notice) == sent
    assert json.loads(got.body)["schema"] == "probecore.notice/1"
    # A receiver verifies the signature with the shared key over the exact body bytes.
    expected = "sha256=" + hmac.new(KEY.encode(), got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(got.headers["x-probecore-signature"], expected)
    forged = "sha256=" + hmac.new(b"wrong", got.body, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(got.headers["x-probecore-signature"], forged)
    assert got.headers["content-type"] == "application/json"
    assert got.headers["idempotency-key"] == sent.notice_id
    assert got.headers["x-probecore-event"] == sent.event_id
    assert got.headers["user-agent"].startswith("probecore/")
    assert got.headers["x-team"] == "web"
    assert KEY not in str(got.headers)


async def test_without_a_secret_there_is_no_signature_and_userinfo_becomes_basic_auth(receiver):
    url = f"http://hookuser:hookpass@127.0.0.1:{receiver.port}/in?key=tokentoken99"
    cfg = config(url)
    assert WebhookNotifier().target(cfg) == f"http://127.0.0.1:{receiver.port}/in"
    _, error = await deliver(cfg)
    assert error is None
    (got,) = receiver.received()
    assert "x-probecore-signature" not in got.headers
    import base64
    assert got.headers["authorization"] == "Basic " + base64.b64encode(b"hookuser:hookpass").decode()


@pytest.mark.parametrize("status, reason, retry", [
    (503, "Service Unavailable", True), (500, "Internal Server Error", True), (502, "Bad Gateway", True),
    (408, "Request Timeout", True), (429, "Too Many Requests", True),
    (400, "Bad Request", False), (401, "Unauthorized", False), (404, "Not Found", False),
    (410, "Gone", False), (301, "Moved Permanently", False),
])
async def test_statuses_decide_whether_retrying_helps(receiver, status, reason, retry):
    receiver.answer(status)
    url = f"http://user:pa55word@127.0.0.1:{receiver.port}/hook?token=qwertyuiop"
    _, error = await deliver(config(url))
    assert error is not None and error.retry is retry
    message = str(error)
    assert message.startswith(f"POST http://127.0.0.1:{receiver.port}/hook: {status} {reason}")
    assert "\n" not in message and "pa55word" not in message and "user" not in message
    assert "qwertyuiop" not in message and "token" not in message
    assert len(receiver.received()) == 1


async def test_2xx_of_any_kind_is_delivered(receiver):
    for status in (200, 201, 202, 204):
        receiver.answer(status)
        _, error = await deliver(config(receiver.url()))
        assert error is None, status
    assert [r.status for r in receiver.received()] == [200, 201, 202, 204]


async def test_a_closed_port_is_a_connection_error_worth_retrying():
    port = free_port()
    _, error = await deliver(config(f"http://127.0.0.1:{port}/hook"))
    assert error is not None and error.retry is True
    assert str(error) == f"POST http://127.0.0.1:{port}/hook: cannot connect to 127.0.0.1:{port}: connection refused"


async def test_a_missing_secret_is_an_error_without_a_request(receiver, monkeypatch):
    monkeypatch.delenv("PROBE_HOOK_KEY", raising=False)
    _, error = await deliver(config(receiver.url(), secret=SECRET))
    assert error is not None and "PROBE_HOOK_KEY is not set" in str(error)
    assert receiver.received() == []


async def test_tls_with_the_test_ca_as_ca_file(tls_receiver, ca, tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_HOOK_KEY", KEY)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    _, error = await deliver(config(tls_receiver.url(), secret=SECRET, ca_file=str(bundle)))
    assert error is None
    (got,) = tls_receiver.received()
    assert got.headers["idempotency-key"] == notice().notice_id
    expected = "sha256=" + hmac.new(KEY.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["x-probecore-signature"] == expected


async def test_tls_without_the_ca_is_refused_before_anything_is_sent(tls_receiver):
    _, error = await deliver(config(tls_receiver.url()))
    assert error is not None and error.retry is False
    assert str(error).startswith(f"POST https://127.0.0.1:{tls_receiver.port}/hook: TLS certificate of "
                                 "127.0.0.1 not accepted")
    assert tls_receiver.received() == []
    # verify = false sends anyway (and the receiver gets it).
    _, error = await deliver(config(tls_receiver.url(), verify=False))
    assert error is None and len(tls_receiver.received()) == 1


async def test_a_silent_server_times_out_and_the_socket_is_closed():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        ctx = DeliveryContext(0.3)
        started = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(ctx.timeout):
                await WebhookNotifier().send(config(f"http://127.0.0.1:{port}/"), notice(), ctx)
        assert trio.current_time() - started < 2.0
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(2.0)
            data = b""
            while chunk := conn.recv(65536):   # the request, then EOF: the client closed it
                data += chunk
            assert data.startswith(b"POST / HTTP/1.1\r\n")
    finally:
        listener.close()


URL_TOKEN = "hk/Tq9+Zr=8w"
"""Stands for a token in a webhook URL: its query and user info are never shown."""


@pytest.mark.parametrize("echo", [
    pytest.param(lambda url: f"bad token {URL_TOKEN}", id="raw"),
    pytest.param(lambda url: f"bad token {quote_plus(URL_TOKEN)}", id="quote_plus"),
    pytest.param(lambda url: "bad token " + re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(),
                                                   quote(URL_TOKEN, safe="")), id="quote-lower-hex"),
    pytest.param(lambda url: "bad query " + url.split("?", 1)[1], id="whole-query"),
    pytest.param(lambda url: "for " + "x" * 95 + URL_TOKEN, id="cut-at-100"),
])
async def test_a_url_token_the_receiver_echoes_is_scrubbed_from_the_error(receiver, echo):
    url = receiver.url(f"/hook?v=1&token={quote_plus(URL_TOKEN)}")
    receiver.answer(401, echo(url))
    ctx, error = await deliver(config(url))
    assert error is not None and not error.retry
    message = ctx.scrub(str(error))  # what the worker stores: scrubbed again, the same
    assert message == str(error)
    assert message.startswith(f"POST {receiver.url()}: 401 ")
    for leak in (URL_TOKEN, quote_plus(URL_TOKEN), quote(URL_TOKEN, safe=""), URL_TOKEN[:8], "Tq9"):
        assert leak not in message and leak.lower() not in message.lower(), message
    assert "*" in message  # "***", or its start where the reason was shortened after scrubbing
    assert len(receiver.received()) == 1 and receiver.received()[0].path.endswith(quote_plus(URL_TOKEN))


async def test_user_info_the_receiver_echoes_is_scrubbed_in_the_basic_credentials_too(receiver):
    url = f"http://hook-user:{quote(URL_TOKEN, safe='')}@127.0.0.1:{receiver.port}/hook"
    basic = base64.b64encode(f"hook-user:{URL_TOKEN}".encode()).decode()
    receiver.answer(403, f"Basic {basic} refused for hook-user:{URL_TOKEN}")
    _, error = await deliver(config(url))
    assert error is not None
    assert receiver.received()[0].headers["authorization"] == f"Basic {basic}"
    assert str(error) == f"POST {receiver.url()}: 403 Basic *** refused for ***:***"


@pytest.mark.parametrize("keys, message", [
    ('url = "ftp://example.com/x"', 'expected an http:// or https:// URL'),
    ('url = "https:///x"', "the URL has no host name"),
    ('url = "https://example.com/x"\nheaders = { "Idempotency-Key" = "x" }', "set by the webhook channel"),
    ('url = "https://example.com/x"\nheaders = { "bad name" = "x" }', "is not a header name"),
    ('url = "https://example.com/x"\nsecret = "literal"', "not a literal string"),
    ('url = "https://example.com/x"\nverify = false\nca_file = "ca.pem"', "has no effect with verify = false"),
])
def test_bad_webhook_channels_are_profile_errors(tmp_path, keys, message):
    host = make_host()
    path = write_profile(tmp_path, f"""
[profile]
name = "p"
[[check]]
id = "c"
probe = "tcp"
host = "192.0.2.1"
port = 1
[[channel]]
id = "hook"
kind = "webhook"
{keys}
""")
    with pytest.raises(ProfileError) as caught:
        load_profile(path, host.probes, host.evaluators, host.notifiers)
    assert message in str(caught.value)


# ---- (b) the worker, the SQLite outbox, a receiver down for a while ----------------------------

def hooks_profile(tmp_path: Path, url: str, port: int, *, extra: str = "") -> Path:
    return write_profile(tmp_path, f"""
[profile]
name = "hooks"
[defaults]
interval = "1s"
timeout = "500ms"
confirm = 2
[[check]]
id = "a"
probe = "tcp"
host = "127.0.0.1"
port = {port}
[[check]]
id = "b"
probe = "tcp"
host = "127.0.0.1"
port = {port}
[[channel]]
id = "hook"
kind = "webhook"
url = "{url}"
secret = {{ env = "PROBE_HOOK_KEY" }}
[[notify]]
id = "ops"
channels = ["hook"]
events = ["suspected", "confirmed", "resolved"]
{extra}
""")


def incident_events(check: str, second: int) -> list[IncidentEvent]:
    started = f"2026-09-01T00:00:{second:02d}.000Z"
    incident = f"hooks/{check}@local@{started}"
    return [IncidentEvent(event_id=f"{incident}#{kind}", kind=kind, incident_id=incident, check=f"hooks/{check}",
                          vantage="local", at=f"2026-09-01T00:00:{second + i:02d}.000Z",
                          incident_started_at=started, failures=i + 1)  # type: ignore[arg-type]
            for i, kind in enumerate(("suspected", "confirmed", "resolved"))]


class Outbox:
    """A SQLite outbox with incident events of checks a and b, and a worker with a fake wall clock."""

    def __init__(self, tmp_path: Path, receiver: Receiver):
        host = make_host()
        self.profile = load_profile(hooks_profile(tmp_path, receiver.url(), free_port()), host.probes,
                                    host.evaluators, host.notifiers)
        self.store = SQLiteStore(f"sqlite:{tmp_path / 'outbox.db'}")
        router = Router(self.profile)
        events = incident_events("a", 0) + incident_events("b", 10)
        self.store.write([], events, router.deliveries(events))
        self.now = timestamp_ms("2026-09-01T00:01:00.000Z")   # after every event
        self.warnings: list[str] = []
        channels = {c.id: (host.notifiers.get(c.kind)(), c) for c in self.profile.channels}
        self.worker = DeliveryWorker(self.store, self.profile, channels, router, lambda: self.now, seed=1,
                                     warn=self.warnings.append)

    async def tick(self) -> None:
        await self.worker.tick()
        self.now += 15 * 60_000   # past any backoff (at most 12 min)

    def deliveries(self):
        return self.store.deliveries("hooks")


async def test_a_receiver_down_for_a_while_gets_every_event_exactly_once(tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("PROBE_HOOK_KEY", KEY)
    outbox = Outbox(tmp_path, receiver)
    assert len(outbox.deliveries()) == 6
    receiver.answer(503)
    for _ in range(3):
        await outbox.tick()
    # In order per check: only each check's first notice is tried while the receiver refuses.
    first = {d.id for d in outbox.deliveries() if d.notice.kind == "suspected"}
    assert len(first) == 2
    assert all(d.status == "pending" and d.attempts == (3 if d.id in first else 0) for d in outbox.deliveries())
    assert len(receiver.received()) == 6 and {r.status for r in receiver.received()} == {503}
    receiver.answer(200)
    for _ in range(3):  # more ticks after the success: nothing is sent again
        await outbox.tick()
    delivered = outbox.deliveries()
    assert [d.status for d in delivered] == ["delivered"] * 6
    assert all(d.attempts == (4 if d.id in first else 1) for d in delivered)
    received = receiver.received()
    ok = Counter(r.key for r in received if r.status == 200)
    assert ok == Counter({d.notice.notice_id: 1 for d in delivered})
    for d in delivered:   # nothing for a notice after the request that delivered it
        mine = [r for r in received if r.key == d.notice.notice_id]
        assert [r.status for r in mine] == ([503, 503, 503, 200] if d.id in first else [200])
        assert [ok for _, ok, _ in outbox.store.attempts(d.id)] == (
            [False, False, False, True] if d.id in first else [True])
        assert all(e == f"POST {receiver.url()}: 503 Service Unavailable"
                   for _, ok, e in outbox.store.attempts(d.id) if not ok)
        body = msgspec.json.decode(mine[-1].body, type=Notice)
        assert body == d.notice and mine[-1].headers["x-probecore-event"] == d.event_id
    # Per check, each kind arrives once, and the notices say in which order they happened.
    for check in ("hooks/a", "hooks/b"):
        got = sorted((n.at, n.kind) for n in (msgspec.json.decode(r.body, type=Notice)
                                              for r in received if r.status == 200) if n.check == check)
        assert [kind for _, kind in got] == ["suspected", "confirmed", "resolved"]
    assert len(outbox.warnings) == 6 and KEY not in "".join(outbox.warnings)
    # The order they were received in is the order they happened in.
    for check in ("hooks/a", "hooks/b"):
        arrived = [msgspec.json.decode(r.body, type=Notice).kind for r in received
                   if r.status == 200 and msgspec.json.decode(r.body, type=Notice).check == check]
        assert arrived == ["suspected", "confirmed", "resolved"]
    outbox.store.close()


async def test_retried_notices_arrive_in_event_order_per_check(tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("PROBE_HOOK_KEY", KEY)
    for round in range(8):
        directory = tmp_path / str(round)
        directory.mkdir()
        receiver.requests.clear()
        outbox = Outbox(directory, receiver)
        receiver.answer(503)
        await outbox.tick()
        receiver.answer(200)
        await outbox.tick()
        outbox.store.close()
        for check in ("hooks/a", "hooks/b"):
            kinds = [n.kind for n in (msgspec.json.decode(r.body, type=Notice) for r in receiver.received()
                                      if r.status == 200) if n.check == check]
            assert kinds == ["suspected", "confirmed", "resolved"], f"round {round}: {kinds}"


async def test_the_secret_in_a_receivers_answer_is_scrubbed_from_the_outbox(tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("PROBE_HOOK_KEY", KEY)
    outbox = Outbox(tmp_path, receiver)
    receiver.answer(401, f"Unauthorized: bad key {KEY}")
    await outbox.tick()
    tried = [d for d in outbox.deliveries() if d.attempts]
    assert len(tried) == 2     # each check's first notice; the others wait their turn
    for d in tried:
        assert d.status == "pending" and d.last_error == f"POST {receiver.url()}: 401 Unauthorized: bad key ***"
        # Not worth retrying soon: the next attempt is the 10-minute cap away (±20 %), not 5 s.
        assert d.next_ms - outbox.now + 15 * 60_000 >= 480_000
    assert KEY not in "".join(outbox.warnings)
    outbox.store.close()


# ---- (c) probe run killed with SIGKILL while the receiver is down -------------------------------

def start_run(profile: Path, db: Path, tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PROBECORE_DATA_DIR": str(tmp_path / "data"), "PROBE_HOOK_KEY": KEY}
    with open(tmp_path / "stderr.log", "ab") as stderr:
        return subprocess.Popen([sys.executable, "-m", "probecore", "run", str(profile), "--store", f"sqlite:{db}",
                                 "--vantage", "local", *extra],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env)


def test_kill_9_with_pending_notices_then_every_one_is_delivered_once(tmp_path, receiver):
    # Only check "a" exists in this profile's run; it fails (a closed port) from the start.
    profile = hooks_profile(tmp_path, receiver.url(), free_port())
    text = profile.read_text()
    profile.write_text(text[:text.index('[[check]]\nid = "b"')] + text[text.index("[[channel]]"):])
    db = tmp_path / "run.db"
    SQLiteStore(f"sqlite:{db}").close()
    receiver.answer(503)
    proc = start_run(profile, db, tmp_path)
    try:
        deadline = time.monotonic() + WAIT
        store = SQLiteStore(f"sqlite:{db}")
        try:
            # Wait for the suspected and confirmed notices to be pending, the first of them tried
            # (and refused) at least once; the confirmed one waits its turn behind it.
            while True:
                pending = store.deliveries("hooks", "pending")
                tried = {r.key for r in receiver.received()}
                if len(pending) >= 2 and pending[0].notice.notice_id in tried:
                    break
                assert proc.poll() is None, (tmp_path / "stderr.log").read_text()
                assert time.monotonic() < deadline, f"no pending deliveries: {store.deliveries('hooks')}"
                time.sleep(0.05)
        finally:
            store.close()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(WAIT) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert receiver.received() and {r.status for r in receiver.received()} == {503}
    before = len(receiver.received())

    receiver.answer(200)
    again = start_run(profile, db, tmp_path, "--for", "8s")
    try:
        assert again.wait(WAIT) == 0, (tmp_path / "stderr.log").read_text()
    finally:
        if again.poll() is None:
            again.kill()
            again.wait(WAIT)

    store = SQLiteStore(f"sqlite:{db}")
    try:
        deliveries = store.deliveries("hooks")
        attempts = {d.id: store.attempts(d.id) for d in deliveries}
    finally:
        store.close()
    kinds = [d.notice.kind for d in deliveries]
    assert kinds[:2] == ["suspected", "confirmed"] and set(kinds) <= {"suspected", "confirmed"}
    assert [d.status for d in deliveries] == ["delivered"] * len(deliveries)
    received = receiver.received()
    assert len(received) > before
    ok = Counter(r.key for r in received if r.status == 200)
    for d in deliveries:
        # Reached the receiver, accepted exactly once, nothing sent for it after that.
        assert ok[d.notice.notice_id] == 1, (d.notice.notice_id, ok)
        mine = [r for r in received if r.key == d.notice.notice_id]
        assert mine[-1].status == 200 and all(r.status == 503 for r in mine[:-1])
        assert [a[1] for a in attempts[d.id]][-1] is True
        assert sum(1 for a in attempts[d.id] if a[1]) == 1
    assert set(ok) == {d.notice.notice_id for d in deliveries}
