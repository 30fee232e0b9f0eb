"""The ``email`` channel against a real postfix + dovecot (tests/servers/mail.py).

Notices are submitted to postfix (STARTTLS or implicit TLS, SASL AUTH through dovecot) and read
back over IMAP from the recipient's mailbox. Real sockets, so real time: no MockClock. The
end-to-end test runs a profile with ``run_profile`` on the system clock and a SQLite outbox.
"""

from __future__ import annotations

import imaplib
import socket
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest
import trio
from probecore_plugins.notifiers.email import EmailNotifier, message_id
from probecore_plugins.sqlite import SQLiteStore

from probecore import (
    DeliveryContext,
    DeliveryError,
    Notice,
    ProfileError,
    Secret,
    load_profile,
)
from probecore._notify import test_notice as make_test_notice
from probecore._runner import RunOptions, run_profile
from probecore.testing import make_host, write_profile
from tests.fakes import ScriptedPlugin

if TYPE_CHECKING:
    from tests.servers.mail import MailServer

pytest_plugins = ["tests.servers.mail"]

PASSWORD_ENV = "PROBECORE_TEST_SMTP_PASSWORD"
WRONG_ENV = "PROBECORE_TEST_SMTP_WRONG"
WRONG_PASSWORD = "wrong-Zq7-distinctive-smtp-passphrase"
RUN_FOR = 20.0
WAIT = 15.0  # bound of every wait for a message; never reached when things work


@pytest.fixture(autouse=True)
def _passwords(monkeypatch: pytest.MonkeyPatch, mail_server: MailServer) -> None:
    monkeypatch.setenv(PASSWORD_ENV, mail_server.password)
    monkeypatch.setenv(WRONG_ENV, WRONG_PASSWORD)


# ---- helpers ----------------------------------------------------------------------------------

def notice(kind: str = "confirmed", n: int = 0) -> Notice:
    incident = f"mailnote/web@local@2026-09-01T00:00:0{n}.000Z"
    title = "[mailnote] web 机房: OUTAGE <5xx> & \"more\""
    return Notice(notice_id=f"{incident}#{kind}/oncall", event_id=f"{incident}#{kind}", kind=kind,  # type: ignore[arg-type]
                  profile="mailnote", route="oncall", check="mailnote/web", vantage="local",
                  incident=incident, incident_started_at="2026-09-01T00:00:00.000Z",
                  at="2026-09-01T00:00:05.000Z", title=title,
                  text=f"{title}\ncheck: mailnote/web from local\nfailure: http_status (provider): 503 <b>x</b>")


def config(server: MailServer, **keys: object):
    """An email channel config, converted as the profile loader does (secrets from tables)."""
    def dec_hook(tp: type, obj: object) -> object:
        if tp is Secret:
            return Secret.from_table(obj)
        raise NotImplementedError

    table = {"id": "mail", "kind": "email", "host": server.host, "port": server.starttls_port,
             "username": server.address("alice"), "password": {"env": PASSWORD_ENV},
             "sender": f"Probecore <{server.address('alice')}>", "to": [server.address("n0")],
             "ca_file": str(server.ca_file), **keys}
    table = {k: v for k, v in table.items() if v is not None}
    return msgspec.convert(table, EmailNotifier.Config, dec_hook=dec_hook, strict=True)


async def deliver(cfg, n: Notice | None = None, timeout: float = 10.0) -> DeliveryError | None:
    ctx = DeliveryContext(timeout)
    try:
        with trio.fail_after(ctx.timeout):
            await EmailNotifier().send(cfg, n or notice(), ctx)
    except DeliveryError as exc:
        return exc
    return None


def mailbox(server: MailServer, user: str, count: int, wait: float = WAIT) -> list[EmailMessage]:
    """Every message in *user*'s INBOX once there are at least *count* (parsed, oldest first)."""
    deadline = time.monotonic() + wait
    client = imaplib.IMAP4(server.host, server.imap_port, timeout=10)
    try:
        client.login(server.address(user), server.password)
        while True:
            client.select("INBOX")
            typ, data = client.search(None, "ALL")
            assert typ == "OK", data
            messages = []
            for num in data[0].split():
                typ, parts = client.fetch(num, "(BODY.PEEK[])")
                # A message expunged meanwhile (the fixture's clear() of an earlier test's mail
                # racing dovecot's index) fetches no body: it is not in the mailbox.
                raw = next((p[1] for p in parts if isinstance(p, tuple)), None)
                if raw is not None:
                    messages.append(BytesParser(policy=policy.default).parsebytes(raw))
            if len(messages) >= count or time.monotonic() > deadline:
                return messages
            time.sleep(0.05)
    finally:
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


async def read_mailbox(server: MailServer, user: str, count: int) -> list[EmailMessage]:
    messages = await trio.to_thread.run_sync(mailbox, server, user, count)
    assert len(messages) >= count, f"{len(messages)} of {count} message(s) arrived\n{server.logs()}"
    return messages


def parts(message: EmailMessage) -> tuple[str, str]:
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    return plain.get_content(), html.get_content()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- (a) the message ----------------------------------------------------------------------------

async def test_the_notice_arrives_with_its_headers_and_both_parts(mail_server: MailServer) -> None:
    mail_server.clear("n0")
    mail_server.clear("n1")
    sent = notice()
    cfg = config(mail_server, to=[mail_server.address("n0"), f"Seven <{mail_server.address('n1')}>"],
                 subject_prefix="[probe] ")
    assert await deliver(cfg, sent) is None
    (got,) = await read_mailbox(mail_server, "n0", 1)
    assert got["Subject"] == "[probe] " + sent.title
    assert got["From"] == f"Probecore <{mail_server.address('alice')}>"
    assert got["To"] == f"{mail_server.address('n0')}, Seven <{mail_server.address('n1')}>"
    assert got["X-Probecore-Notice"] == sent.notice_id
    assert got["X-Probecore-Event"] == sent.event_id
    assert got["Message-ID"] == message_id(sent.notice_id)
    assert got["Date"] is not None and got["Date"].datetime.tzinfo is not None
    assert got.get_content_type() == "multipart/alternative"
    text, html = parts(got)
    assert text.replace("\r\n", "\n").rstrip("\n") == sent.text
    # The HTML part is the same text, escaped: the title's markup never becomes markup.
    assert "<h2>[mailnote] web 机房: OUTAGE &lt;5xx&gt; &amp; &quot;more&quot;</h2>" in html
    assert "503 &lt;b&gt;x&lt;/b&gt;" in html and "<b>" not in html and "<5xx>" not in html
    assert "check: mailnote/web from local" in html
    # Authenticated (postfix's Received: says ESMTPSA) on a listener that requires STARTTLS.
    received = " ".join(str(v) for v in got.get_all("Received"))
    assert "with ESMTPSA" in received
    # The second recipient got the same message.
    (other,) = await read_mailbox(mail_server, "n1", 1)
    assert other["Message-ID"] == got["Message-ID"]


async def test_a_resend_carries_the_same_message_id(mail_server: MailServer) -> None:
    mail_server.clear("n0")
    first, other = notice(n=1), notice(n=2)
    cfg = config(mail_server)
    for n in (first, first, other):
        assert await deliver(cfg, n) is None
    got = await read_mailbox(mail_server, "n0", 3)
    by_notice: dict[str, set[str]] = {}
    for message in got:
        by_notice.setdefault(message["X-Probecore-Notice"], set()).add(message["Message-ID"])
    # The same notice twice: one Message-ID (mail clients show it once); another notice: another.
    assert by_notice == {first.notice_id: {message_id(first.notice_id)},
                         other.notice_id: {message_id(other.notice_id)}}
    assert message_id(first.notice_id) != message_id(other.notice_id)
    assert message_id(first.notice_id) == message_id(first.notice_id)
    assert len(message_id(first.notice_id)) == len("<@probecore>") + 32


async def test_implicit_tls_and_a_test_notice(mail_server: MailServer, tmp_path: Path) -> None:
    mail_server.clear("n2")
    host = make_host(ScriptedPlugin())
    profile = load_profile(write_profile(tmp_path, profile_text(mail_server, "n2", extra_channel=(
        f'port = {mail_server.smtps_port}\nsecurity = "tls"\n'))), host.probes, host.evaluators, host.notifiers)
    (cfg,) = profile.channels
    assert cfg.security == "tls" and EmailNotifier().target(cfg) == mail_server.address("n2")
    sent = make_test_notice(profile, profile.route_configs[0], 1_788_220_800_000)
    assert await deliver(cfg, sent) is None
    (got,) = await read_mailbox(mail_server, "n2", 1)
    assert got["Subject"] == "[probe] " + sent.title and got["Message-ID"] == message_id(sent.notice_id)
    assert "no action needed" in parts(got)[0]


# ---- (b) failures -------------------------------------------------------------------------------

async def test_a_wrong_password_is_refused_for_good_and_never_shown(mail_server: MailServer) -> None:
    mail_server.clear("n0")
    ctx = DeliveryContext(10.0)
    with pytest.raises(DeliveryError) as caught:
        await EmailNotifier().send(config(mail_server, password={"env": WRONG_ENV}), notice(), ctx)
    error = caught.value
    message = str(error)
    # 535: a 5xx; retrying cannot fix a wrong password (the worker still retries, rarely).
    assert error.retry is False
    assert message.startswith(f"SMTP 127.0.0.1 port {mail_server.starttls_port}: AUTH as "
                              f"{mail_server.address('alice')} refused: 535 "), message
    assert "\n" not in message
    assert WRONG_PASSWORD not in message and mail_server.password not in message
    assert ctx.scrub(f"x {WRONG_PASSWORD} y") == "x *** y"  # revealed through ctx: the worker scrubs it
    assert mail_server.mailbox_files("n0") == []


async def test_a_wrong_password_is_one_sasl_failure_not_one_per_mechanism(mail_server: MailServer) -> None:
    """postfix offers PLAIN and LOGIN; smtplib's login() tries both (two lockout counts)."""
    log = mail_server.postfix_dir / "postfix.log"
    start = log.stat().st_size

    def failures() -> list[str]:
        with open(log, "rb") as f:
            f.seek(start)
            return [line for line in f.read().decode(errors="replace").splitlines()
                    if "SASL" in line and "authentication failed" in line]

    error = await deliver(config(mail_server, password={"env": WRONG_ENV}))
    assert error is not None and "535" in str(error)
    with trio.move_on_after(5):
        while not failures():
            await trio.sleep(0.05)
    await trio.sleep(0.5)  # a second failure would be logged by now
    assert [line.split("SASL ", 1)[1].split()[0] for line in failures()] == ["PLAIN"], failures()


async def test_a_refused_recipient_is_not_retried_soon(mail_server: MailServer) -> None:
    error = await deliver(config(mail_server, to=[mail_server.address("blocked")]))
    assert error is not None and error.retry is False
    assert str(error) == (f"SMTP 127.0.0.1 port {mail_server.starttls_port}: recipient refused: "
                          f"blocked@probe.test 554 5.1.1 <blocked@probe.test>: Recipient address "
                          f"rejected: mailbox unavailable (test rule)")


async def test_one_recipient_refused_of_two_is_delivered_to_the_other(mail_server: MailServer) -> None:
    mail_server.clear("n0")
    error = await deliver(config(mail_server, to=[mail_server.address("blocked"), mail_server.address("n0")]))
    assert error is None
    (got,) = await read_mailbox(mail_server, "n0", 1)
    assert got["X-Probecore-Notice"] == notice().notice_id


async def test_connection_errors_are_worth_retrying(mail_server: MailServer) -> None:
    port = free_port()
    error = await deliver(config(mail_server, port=port))
    assert error is not None and error.retry is True
    assert str(error) == f"SMTP 127.0.0.1 port {port}: connection refused"


async def test_tls_problems_and_missing_extensions_are_not_retried_soon(mail_server: MailServer,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    where = f"SMTP 127.0.0.1 port {mail_server.starttls_port}"
    # The server's certificate is issued by the test CA: without ca_file it is not trusted.
    error = await deliver(config(mail_server, ca_file=None))
    assert error is not None and error.retry is False
    assert str(error).startswith(f"{where}: TLS certificate of 127.0.0.1 not accepted: "), str(error)
    # This listener allows AUTH only after STARTTLS: security = "none" finds no AUTH.
    error = await deliver(config(mail_server, security="none", ca_file=None))
    assert error is not None and error.retry is False
    assert str(error) == f"{where}: the server offers no AUTH here"
    # The plain listener offers no STARTTLS: security = "starttls" refuses to send in clear.
    error = await deliver(config(mail_server, port=mail_server.smtp_port))
    assert error is not None and error.retry is False
    assert str(error) == f'SMTP 127.0.0.1 port {mail_server.smtp_port}: STARTTLS not offered (security = "starttls")'
    # An unreadable ca_file.
    error = await deliver(config(mail_server, ca_file="/nonexistent/ca.pem"))
    assert error is not None and error.retry is False
    assert str(error) == "cannot load ca_file /nonexistent/ca.pem: No such file or directory"
    # A missing secret: nothing is sent.
    monkeypatch.delenv(PASSWORD_ENV)
    error = await deliver(config(mail_server))
    assert error is not None and error.retry is False
    assert str(error) == f"{where}: secret: environment variable {PASSWORD_ENV} is not set"


async def scripted_smtp(nursery: trio.Nursery, rcpt: dict[str, bytes]) -> int:
    """A minimal SMTP server on a free port that answers RCPT TO:<address> with rcpt[address]
    (default 250) and everything else as a server that accepts the mail."""
    async def session(stream: trio.SocketStream) -> None:
        buffer = b""
        data = False
        await stream.send_all(b"220 fake ESMTP\r\n")
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                if data:
                    if line == b".":
                        data = False
                        await stream.send_all(b"250 2.0.0 queued\r\n")
                    continue
                verb = line[:4].upper()
                if verb == b"EHLO":
                    await stream.send_all(b"250-fake\r\n250 8BITMIME\r\n")
                elif verb == b"RCPT":
                    address = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
                    await stream.send_all(rcpt.get(address, b"250 2.1.5 ok") + b"\r\n")
                elif verb == b"DATA":
                    data = True
                    await stream.send_all(b"354 go ahead\r\n")
                elif verb == b"QUIT":
                    await stream.send_all(b"221 bye\r\n")
                    return
                else:
                    await stream.send_all(b"250 ok\r\n")

    listeners = await nursery.start(partial(trio.serve_tcp, session, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def test_temporary_and_permanent_refusals(mail_server: MailServer, nursery: trio.Nursery) -> None:
    port = await scripted_smtp(nursery, {"later@x.test": b"451 4.3.0 try again later",
                                         "gone@x.test": b"550 5.1.1 no such user"})
    plain = {"port": port, "security": "none", "username": None, "password": None, "ca_file": None}
    where = f"SMTP 127.0.0.1 port {port}"
    error = await deliver(config(mail_server, to=["later@x.test"], **plain))
    assert error is not None and error.retry is True
    assert str(error) == f"{where}: recipient refused: later@x.test 451 4.3.0 try again later"
    # One accepted, one refused for now: retried (the resend has the same Message-ID).
    error = await deliver(config(mail_server, to=["ok@x.test", "later@x.test"], **plain))
    assert error is not None and error.retry is True
    assert str(error) == (f"{where}: recipient refused: later@x.test 451 4.3.0 try again later "
                          "(the other recipients accepted it)")
    # Refused for now and for good: retried; only for good: not retried soon.
    error = await deliver(config(mail_server, to=["gone@x.test", "later@x.test"], **plain))
    assert error is not None and error.retry is True
    error = await deliver(config(mail_server, to=["gone@x.test"], **plain))
    assert error is not None and error.retry is False
    # Some accepted, the others refused for good: delivered (a resend cannot reach them either).
    assert await deliver(config(mail_server, to=["ok@x.test", "gone@x.test"], **plain)) is None
    assert str(error) == f"{where}: recipient refused: gone@x.test 550 5.1.1 no such user"


async def test_a_silent_server_times_out_and_the_connection_is_closed(mail_server: MailServer) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        started = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            await deliver(config(mail_server, port=port), timeout=0.3)
        assert trio.current_time() - started < 2.0  # the blocked thread was woken, not waited out
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(2.0)
            assert conn.recv(1024) == b""  # EOF at once: the client closed the connection
    finally:
        listener.close()


@pytest.mark.parametrize("keys, message", [
    ('to = []', 'key "to"'),
    ('to = ["nobody"]', 'key "to": "nobody" is not a mail address'),
    ('to = ["a@x.test"]\nsecurity = "ssl"', 'key "security"'),
    ('to = ["a@x.test"]\npassword = "hunter2-Lit"', "not a literal string"),
    ('to = ["a@x.test"]\nusername = "u"', 'key "username": needs a password'),
    ('to = ["a@x.test"]\nverify = false\nca_file = "ca.pem"', 'key "ca_file": has no effect'),
    ('to = ["a@x.test"]\ncolour = "red"', 'key "colour"'),
])
def test_bad_email_channels_are_profile_errors(tmp_path: Path, keys: str, message: str) -> None:
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
id = "mail"
kind = "email"
host = "smtp.example.com"
sender = "probe@example.com"
{keys}
""")
    with pytest.raises(ProfileError) as caught:
        load_profile(path, host.probes, host.evaluators, host.notifiers)
    assert message in str(caught.value) and "hunter2-Lit" not in str(caught.value)


# ---- (c) end to end ------------------------------------------------------------------------------

def profile_text(server: MailServer, user: str, *, extra_channel: str = "") -> str:
    channel = extra_channel or f"port = {server.starttls_port}\n"
    return f"""
[profile]
name = "mailnote"
[defaults]
interval = "1s"
timeout = "500ms"
confirm = 2
[[check]]
id = "web"
probe = "scripted"
fail_first = 3
[[channel]]
id = "mail"
kind = "email"
host = "{server.host}"
{channel}username = "{server.address('alice')}"
password = {{ env = "{PASSWORD_ENV}" }}
sender = "Probecore <{server.address('alice')}>"
to = ["{server.address(user)}"]
ca_file = "{server.ca_file}"
subject_prefix = "[probe] "
[[notify]]
id = "oncall"
channels = ["mail"]
events = ["confirmed", "resolved"]
obligation = "15m"
"""


async def test_a_run_mails_the_confirmed_and_resolved_notices(tmp_path: Path, mail_server: MailServer) -> None:
    mail_server.clear("n3")
    host = make_host(ScriptedPlugin())
    profile = load_profile(write_profile(tmp_path, profile_text(mail_server, "n3")), host.probes,
                           host.evaluators, host.notifiers)
    store = SQLiteStore(f"sqlite:{tmp_path / 'notify.sqlite3'}")
    try:
        # Attempts every second: fails at 0, 1 (confirmed), 2 s; ok at 3 s (resolved). The run
        # stops once both notices are delivered (at most after RUN_FOR seconds).
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(run_profile, profile, host, store,
                                       RunOptions(duration=RUN_FOR, handle_signals=False, vantage="test")))
            with trio.move_on_after(RUN_FOR + 5):
                while len(await trio.to_thread.run_sync(store.deliveries, "mailnote", "delivered")) < 2:
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        deliveries = store.deliveries("mailnote")
        assert [(d.notice.kind, d.status) for d in deliveries] == [("confirmed", "delivered"),
                                                                   ("resolved", "delivered")], \
            [(d.notice.kind, d.status, d.last_error) for d in deliveries]
        confirmed = deliveries[0]
        assert confirmed.attempts == 1 and confirmed.delivered_ms is not None
        assert confirmed.delivered_ms - confirmed.created_ms < 3_000
        (annotation,) = store.annotations("mailnote", "notice")
        assert (annotation.incident, annotation.route) == (confirmed.notice.incident, "oncall")
        assert annotation.note == "delivered through mail after 1 attempt(s)"
        got = await read_mailbox(mail_server, "n3", 2)
        assert [m["X-Probecore-Notice"] for m in got] == [d.notice.notice_id for d in deliveries]
        assert [m["Message-ID"] for m in got] == [message_id(d.notice.notice_id) for d in deliveries]
        assert got[0]["Subject"] == "[probe] [mailnote] web: OUTAGE"
        assert got[1]["Subject"] == "[probe] [mailnote] web: resolved"
        text = parts(got[0])[0]
        assert f"incident: {confirmed.notice.incident}" in text
        assert "failure: scripted_failure (provider): attempt 2 fails" in text
        assert "(15m obligation)" in text
    finally:
        store.close()
