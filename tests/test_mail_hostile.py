"""The mail probe and the email channel against servers that misbehave on purpose.

Scripted SMTP, POP3 and IMAP servers (trio, 127.0.0.1, free ports) that do what real ones have
been seen to do: echo the ``AUTH`` exchange (the base64 of ``\\0user\\0password``) or the
``LOGIN`` arguments in a refusal, answer ``-ERR Message N expunged`` for a message another
client deleted during the scan, refuse a password (counting how often it was tried). The
generic hostile behaviours (silence, endless and megabyte lines, garbage, early close) come
from tests/servers/hostile.py; a few mail-specific ones (an endless IMAP literal, an endless
POP3 ``TOP``, an endless reply to ``AUTH``) are scripted here. The IMAP ``NOOP`` on polls is
shown against the real dovecot (tests/servers/mail.py).

Memory is measured as the growth of this process's peak RSS (``VmHWM`` after resetting it
through ``/proc/self/clear_refs``): the probe's client threads run in this process.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
from probecore_plugins.notifiers.email import EmailNotifier

from probecore import Notice, SLIRecord, encode_record, load_profile
from probecore._cli_notify import attempt
from probecore._runner import RunOptions, run_profile
from probecore.testing import MemoryStore, make_host, write_profile
from tests.servers.hostile import Hostile, start_hostile
from tests.test_mail_probe import established_to

if TYPE_CHECKING:
    from tests.servers.mail import MailServer

pytest_plugins = ["tests.servers.mail"]

PASSWORD = 'Pw"q\\7+/x=Zk-hostile'
"""ASCII (SMTP AUTH encodes it so), with a quote and a backslash (IMAP quotes and escapes it)."""
PASSWORD_ENV = "PROBECORE_TEST_HOSTILE_MAIL_PASSWORD"
TIMEOUT = 3.0
SLACK = 2.0
MEMORY_BOUND = 50 * 1024 * 1024
USER = "alice@script.test"

HEAD = f"""\
[profile]
name = "hostile-mail"

[defaults]
interval = "1m"
timeout = "{TIMEOUT:g}s"
confirm = 1
"""


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def encoded_forms(password: str = PASSWORD, user: str = USER) -> list[str]:
    """The password as protocols and libraries put it on the wire or in a message."""
    return [password, b64(f"\0{user}\0{password}"), b64(f"\0{user}\0{password}").rstrip("="),
            b64(password), b64(password).rstrip("="),
            '"' + password.replace("\\", "\\\\").replace('"', '\\"') + '"',
            json.dumps(password)[1:-1]]


def assert_nowhere(*texts: str | bytes) -> None:
    for form in encoded_forms():
        for text in texts:
            haystack = text if isinstance(text, bytes) else text.encode()
            assert form.encode() not in haystack, f"{form!r} leaked: {haystack[:2000]!r}"


# ---- scripted servers ----------------------------------------------------------------------------

@dataclass
class Mailroom:
    """Scripted SMTP + POP3 + IMAP sharing one maildrop.

    ``auth``: ``accept`` (235), ``refuse`` (535), ``echo`` (535 quoting every AUTH line the
    client sent, as a careless server's error does), ``endless`` (an endless ``535-`` reply).
    ``mechanisms``: what EHLO offers. ``ghost``: POP3 lists a message 1 that another client
    expunged (``-ERR Message 1 expunged`` to ``TOP``, ``RETR`` and ``DELE``). ``imap_login``:
    ``echo`` refuses LOGIN quoting its arguments; ``literal`` answers LOGIN with an untagged
    literal announcing a gigabyte; ``flood`` logs in and answers every SELECT, NOOP and SEARCH
    with 3 MiB of unrequested ``FETCH`` updates (and never shows the message).
    """

    auth: str = "accept"
    mechanisms: str = "PLAIN LOGIN"
    ghost: bool = False
    pop3_top: str = "normal"          # or "endless": TOP's header lines never end
    pop3_login: str = "accept"        # "refuse": -ERR to PASS; "garbage": no POP3 answer to PASS
    imap_login: str = "echo"
    messages: list[bytes] = field(default_factory=list)
    lines: list[tuple[str, bytes]] = field(default_factory=list)  # (protocol, client line)
    ports: dict[str, int] = field(default_factory=dict)

    def auth_lines(self) -> list[bytes]:
        return [line for proto, line in self.lines if proto == "smtp" and line[:5].upper() == b"AUTH "]

    async def start(self, nursery: trio.Nursery) -> Mailroom:
        for name, handler in (("smtp", self.smtp), ("pop3", self.pop3), ("imap", self.imap)):
            listeners = await nursery.start(trio.serve_tcp, handler, 0)
            self.ports[name] = listeners[0].socket.getsockname()[1]
        return self

    # SMTP -----------------------------------------------------------------------------------------
    async def smtp(self, stream: trio.SocketStream) -> None:
        reader = Lines(stream, "smtp", self.lines)
        try:
            await stream.send_all(b"220 script.test ESMTP scripted\r\n")
            while (line := await reader.line()) is not None:
                verb = line.split(b" ", 1)[0].upper()
                if verb in (b"EHLO", b"HELO"):
                    await stream.send_all(b"250-script.test\r\n250-AUTH " + self.mechanisms.encode()
                                          + b"\r\n250 8BITMIME\r\n")
                elif verb == b"AUTH":
                    await self.smtp_auth(stream, reader, line)
                elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                    await stream.send_all(b"250 2.0.0 ok\r\n")
                elif verb == b"DATA":
                    await stream.send_all(b"354 go ahead\r\n")
                    body = []
                    while (data := await reader.line()) not in (None, b"."):
                        body.append(data[1:] if data.startswith(b"..") else data)
                    self.messages.append(b"\r\n".join(body) + b"\r\n")
                    await stream.send_all(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    await stream.send_all(b"221 2.0.0 bye\r\n")
                    return
                else:
                    await stream.send_all(b"502 5.5.2 what\r\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def smtp_auth(self, stream: trio.SocketStream, reader: Lines, line: bytes) -> None:
        words = line.split()
        mechanism = words[1].upper() if len(words) > 1 else b""
        said = [line]
        if mechanism == b"LOGIN":
            if len(words) < 3:
                await stream.send_all(b"334 VXNlcm5hbWU6\r\n")
                said.append(await reader.line() or b"")
            await stream.send_all(b"334 UGFzc3dvcmQ6\r\n")
            said.append(await reader.line() or b"")
        elif len(words) < 3:
            await stream.send_all(b"334 \r\n")
            said.append(await reader.line() or b"")
        if self.auth == "accept":
            await stream.send_all(b"235 2.7.0 Authentication successful\r\n")
        elif self.auth == "echo":
            await stream.send_all(b"535 5.7.8 Authentication failed for " + b" / ".join(said) + b"\r\n")
        elif self.auth == "endless":
            while True:
                await stream.send_all(b"535-5.7.8 and another thing\r\n" * 512)
        else:
            await stream.send_all(b"535 5.7.8 Error: authentication failed\r\n")

    # POP3 -----------------------------------------------------------------------------------------
    def _drop(self) -> list[bytes | None]:
        """The maildrop as POP3 numbers it: None for the ghost that another client expunged."""
        return ([None] if self.ghost else []) + list(self.messages)

    async def pop3(self, stream: trio.SocketStream) -> None:
        reader = Lines(stream, "pop3", self.lines)
        drop = self._drop()
        deleted: set[int] = set()
        try:
            await stream.send_all(b"+OK scripted POP3\r\n")
            while (line := await reader.line()) is not None:
                words = line.split()
                verb = words[0].upper() if words else b""
                num = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
                message = drop[num - 1] if 0 < num <= len(drop) else b""
                if verb == b"PASS" and self.pop3_login == "refuse":
                    await stream.send_all(b"-ERR [AUTH] Authentication failed.\r\n")
                elif verb == b"PASS" and self.pop3_login == "garbage":
                    await stream.send_all(b"\x16\x03\x01 not pop3 at all\r\n")
                elif verb in (b"USER", b"PASS", b"NOOP", b"RSET"):
                    await stream.send_all(b"+OK\r\n")
                elif verb == b"STAT":
                    await stream.send_all(b"+OK %d 100\r\n" % len(drop))
                elif verb == b"LIST":
                    listing = b"".join(b"%d %d\r\n" % (i, len(m or b"") or 100) for i, m in
                                       enumerate(drop, 1) if i not in deleted)
                    await stream.send_all(b"+OK\r\n" + listing + b".\r\n")
                elif verb in (b"TOP", b"RETR", b"DELE") and message is None:
                    await stream.send_all(b"-ERR Message %d expunged.\r\n" % num)
                elif verb == b"TOP" and self.pop3_top == "endless":
                    await stream.send_all(b"+OK\r\n")
                    while True:
                        await stream.send_all(b"X-Hostile: 1\r\n" * 1024)
                elif verb in (b"TOP", b"RETR"):
                    text = message.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if verb == b"TOP" else message
                    stuffed = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n"
                                       for ln in text.split(b"\r\n")[:-1])
                    await stream.send_all(b"+OK\r\n" + stuffed + b".\r\n")
                elif verb == b"DELE":
                    deleted.add(num)
                    await stream.send_all(b"+OK deleted\r\n")
                elif verb == b"QUIT":
                    for index in sorted(deleted, reverse=True):
                        if drop[index - 1] is not None:
                            self.messages.remove(drop[index - 1])  # type: ignore[arg-type]
                    await stream.send_all(b"+OK bye\r\n")
                    return
                else:
                    await stream.send_all(b"-ERR what\r\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    # IMAP (just far enough to log in) -------------------------------------------------------------
    async def imap(self, stream: trio.SocketStream) -> None:
        reader = Lines(stream, "imap", self.lines)
        try:
            await stream.send_all(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] scripted\r\n")
            while (line := await reader.line()) is not None:
                tag, _, rest = line.partition(b" ")
                verb, _, args = rest.partition(b" ")
                if verb.upper() == b"LOGIN" and self.imap_login == "literal":
                    await stream.send_all(b"* OK [ALERT] {1000000000}\r\n")
                    while True:
                        await stream.send_all(b"x" * 65536)
                elif verb.upper() == b"LOGIN" and self.imap_login == "flood":
                    await stream.send_all(tag + b" OK logged in\r\n")
                elif verb.upper() == b"LOGIN":
                    await stream.send_all(tag + b" NO [AUTHENTICATIONFAILED] Authentication failed: LOGIN "
                                          + args + b"\r\n")
                elif self.imap_login == "flood" and verb.upper() in (b"NOOP", b"UID", b"SELECT"):
                    # Each reply within the bound, in updates no command asks for.
                    extra = b"* SEARCH\r\n" if args.upper().startswith(b"SEARCH") else b""
                    await stream.send_all(FLOOD + extra + tag + b" OK done\r\n")
                elif verb.upper() == b"STATUS":
                    await stream.send_all(tag + b" NO no such folder\r\n")
                elif verb.upper() == b"LOGOUT":
                    await stream.send_all(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:
                    await stream.send_all(tag + b" OK done\r\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


FLOOD = b"* 1 FETCH (FLAGS (" + b"x" * 1000 + b"))\r\n"
FLOOD *= (3 * 1024 * 1024) // len(FLOOD)  # 3 MiB of unrequested FETCH updates: under the bound


class Lines:
    """CRLF lines from a stream (recorded with their protocol)."""

    def __init__(self, stream: trio.SocketStream, protocol: str, log: list[tuple[str, bytes]]):
        self.stream, self.protocol, self.log, self.buffer = stream, protocol, log, b""

    async def line(self) -> bytes | None:
        while b"\r\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        self.log.append((self.protocol, line))
        return line


# ---- helpers -------------------------------------------------------------------------------------

def mail_check(check_id: str, room: Mailroom, *, receive: str = "pop3", smtp_port: int | None = None,
               **keys: object) -> str:
    lines = [
        "[[check]]", f'id = "{check_id}"', 'probe = "mail"', 'smtp_host = "127.0.0.1"',
        f"smtp_port = {smtp_port or room.ports['smtp']}", 'smtp_tls = "none"',
        f'receive = "{receive}"', f"receive_port = {room.ports[receive]}", 'receive_tls = "none"',
        f'sender = "{USER}"', f'sender_password = {{ env = "{PASSWORD_ENV}" }}',
        'recipient = "bob@script.test"', f'recipient_password = {{ env = "{PASSWORD_ENV}" }}',
    ]
    keys = {"deliver_within": '"2s"', "poll_max": '"0.2s"', **keys}
    lines += [f"{k} = {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n\n"


async def run_once(tmp_path: Path, checks: str, timeout: float = TIMEOUT) -> list[SLIRecord]:
    host = make_host()
    head = HEAD.replace(f'timeout = "{TIMEOUT:g}s"', f'timeout = "{timeout:g}s"')
    profile = load_profile(write_profile(tmp_path, head + checks), host.probes)
    store = MemoryStore()
    await run_profile(profile, host, store, RunOptions(once=True, handle_signals=False, vantage="test"))
    return list(store.records())


def _status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/self/status has no {name}")


def reset_peak() -> int:
    """Reset the peak RSS (``5`` to ``/proc/self/clear_refs``); the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return _status_kib("VmRSS") * 1024


def peak() -> int:
    return _status_kib("VmHWM") * 1024


class Heartbeat:
    """How late a trio task that wants to wake every 10 ms gets to run (a starved loop is late)."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def run(self) -> None:
        while True:
            due = trio.current_time() + 0.01
            await trio.sleep_until(due)
            self.worst = max(self.worst, trio.current_time() - due)


# ---- AUTH: once, and never echoed ---------------------------------------------------------------

@pytest.mark.parametrize("mechanisms, expected", [("PLAIN LOGIN", b"AUTH PLAIN"), ("LOGIN", b"AUTH LOGIN"),
                                                  ("LOGIN PLAIN CRAM-MD5", b"AUTH PLAIN")])
async def test_a_refused_password_is_tried_once_per_attempt(tmp_path: Path, nursery: trio.Nursery,
                                                           mechanisms: str, expected: bytes) -> None:
    """smtplib's login() tries every offered mechanism: a wrong password counted twice or three
    times towards the account's lockout. The probe and the email channel try the best one once."""
    room = await Mailroom(auth="refuse", mechanisms=mechanisms).start(nursery)
    records = await run_once(tmp_path, mail_check("mail", room))
    (record,) = records
    assert record.failure is not None and (record.failure.code, record.failure.attribution) == ("smtp_auth", "customer")
    assert [line.split()[:2] for line in room.auth_lines()] == [expected.split()]

    room.lines.clear()
    error = await attempt(EmailNotifier(), email_config(room), test_notice(), TIMEOUT)
    assert error is not None and "535" in error
    assert [line.split()[:2] for line in room.auth_lines()] == [expected.split()]


def email_config(room: Mailroom, port: int | None = None, security: str = "none"):
    import msgspec

    from probecore import Secret

    table = {"id": "mail", "kind": "email", "host": "127.0.0.1", "port": port or room.ports["smtp"],
             "security": security, "verify": False, "username": USER, "password": {"env": PASSWORD_ENV},
             "sender": USER, "to": ["ops@script.test"]}

    def dec_hook(tp: type, obj: object) -> object:
        if tp is Secret:
            return Secret.from_table(obj)
        raise NotImplementedError

    return msgspec.convert(table, EmailNotifier.Config, dec_hook=dec_hook, strict=True)


def test_notice() -> Notice:
    incident = "hostile/web@local@2026-09-01T00:00:00.000Z"
    return Notice(notice_id=f"{incident}#confirmed/ops", event_id=f"{incident}#confirmed", kind="confirmed",
                  profile="hostile", route="ops", check="hostile/web", vantage="local", incident=incident,
                  incident_started_at="2026-09-01T00:00:00.000Z", at="2026-09-01T00:00:05.000Z",
                  title="[hostile] web: OUTAGE", text="[hostile] web: OUTAGE\n")


test_notice.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.mark.parametrize("mechanisms", ["PLAIN", "LOGIN"])
async def test_an_echoed_auth_exchange_reaches_no_record_report_output_or_store(
        tmp_path: Path, nursery: trio.Nursery, mechanisms: str) -> None:
    """probe run --once, probe records, probe report (json) and the SQLite file, after a server
    quoted the client's AUTH lines (base64 of ``\\0user\\0password``, or LOGIN's password alone)."""
    room = await Mailroom(auth="echo", mechanisms=mechanisms).start(nursery)
    profile = write_profile(tmp_path, HEAD + mail_check("mail", room) + (
        '[[objective]]\nid = "avail"\nkind = "availability"\ncheck = "mail"\nop = ">="\ntarget = 0.99\n'))
    db = tmp_path / "store.sqlite3"
    env = {**os.environ, "PROBECORE_DATA_DIR": str(tmp_path / "data"), PASSWORD_ENV: PASSWORD}

    async def probe(*argv: str) -> tuple[int, bytes, bytes]:
        done = await trio.run_process([sys.executable, "-m", "probecore", *argv, "--store", f"sqlite:{db}"],
                                      env=env, capture_stdout=True, capture_stderr=True, check=False,
                                      stdin=b"")
        return done.returncode, done.stdout, done.stderr

    with trio.fail_after(60):
        status, out, err = await probe("run", "--once", str(profile))
        assert status == 1, err
        (record,) = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert record["failure"]["code"] == "smtp_auth"
        assert "535 5.7.8 Authentication failed for AUTH" in record["failure"]["message"]
        assert "***" in record["failure"]["message"]
        # The server really echoed the password's base64 (the test would prove nothing otherwise).
        echoed = b" ".join(room.auth_lines()) + b" " + b" ".join(
            line for proto, line in room.lines if proto == "smtp" and not line.startswith((b"EHLO", b"QUIT")))
        assert b64(PASSWORD).rstrip("=").encode()[:8] in echoed or b64(f"\0{USER}\0{PASSWORD}").encode() in echoed
        _, records_out, records_err = await probe("records", str(profile))
        _, report_out, report_err = await probe("report", str(profile), "--format", "json")
        assert b'"avail"' in report_out, report_err
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("store.sqlite3*"))
    assert stored
    assert_nowhere(out, err, records_out, records_err, report_out, report_err, stored)


async def test_the_email_channel_scrubs_an_echoed_auth_exchange_from_output_and_outbox(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    room = await Mailroom(auth="echo", mechanisms="PLAIN").start(nursery)
    profile = write_profile(tmp_path, HEAD + (
        '[[check]]\nid = "c"\nprobe = "tcp"\nhost = "127.0.0.1"\nport = 9\n'
        f'[[channel]]\nid = "mail"\nkind = "email"\nhost = "127.0.0.1"\nport = {room.ports["smtp"]}\n'
        f'security = "none"\nusername = "{USER}"\npassword = {{ env = "{PASSWORD_ENV}" }}\n'
        f'sender = "{USER}"\nto = ["ops@script.test"]\n[[notify]]\nid = "ops"\nchannels = ["mail"]\n'))
    db = tmp_path / "store.sqlite3"
    env = {**os.environ, "PROBECORE_DATA_DIR": str(tmp_path / "data"), PASSWORD_ENV: PASSWORD}
    outputs: list[bytes] = []
    with trio.fail_after(60):
        for argv in (["notify", "test", str(profile), "ops"], ["notify", "list", str(profile)],
                     ["notify", "list", str(profile), "--format", "json"]):
            done = await trio.run_process([sys.executable, "-m", "probecore", *argv, "--store", f"sqlite:{db}"],
                                          env=env, capture_stdout=True, capture_stderr=True, check=False,
                                          stdin=b"")
            outputs += [done.stdout, done.stderr]
    assert b"not delivered: SMTP 127.0.0.1 port" in outputs[0]
    assert b"535 5.7.8 Authentication failed for AUTH PLAIN ***" in outputs[0], outputs
    assert room.auth_lines() and b64(f"\0{USER}\0{PASSWORD}").encode() in room.auth_lines()[0]
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("store.sqlite3*"))
    with sqlite3.connect(db) as conn:  # the attempt really is in the store
        assert any("***" in str(row) for row in conn.execute("SELECT * FROM outbox_attempts"))
    assert_nowhere(*outputs, stored)


async def test_an_imap_login_echoed_quoted_and_escaped_is_scrubbed(tmp_path: Path, nursery: trio.Nursery) -> None:
    room = await Mailroom(imap_login="echo").start(nursery)
    records = await run_once(tmp_path, mail_check("mail", room, receive="imap"))
    (record,) = records
    assert record.failure is not None and record.failure.code == "imap_auth"
    login = next(line for proto, line in room.lines if proto == "imap" and b"LOGIN" in line)
    assert b'\\"' in login and b"\\\\" in login  # imaplib quoted and escaped it; the server echoed that
    assert record.failure.message.startswith("IMAP login refused: [AUTHENTICATIONFAILED] Authentication failed:")
    assert record.failure.message.endswith('"***"'), record.failure.message
    assert_nowhere(encode_record(record))


# ---- POP3: a message expunged by another client --------------------------------------------------

async def test_a_pop3_message_expunged_during_the_scan_is_skipped(tmp_path: Path, nursery: trio.Nursery) -> None:
    """dovecot answers ``-ERR Message N expunged`` to TOP for a message another session deleted
    after this one's LIST: that message is gone, not the server broken."""
    room = await Mailroom(ghost=True).start(nursery)
    records = await run_once(tmp_path, mail_check("mail", room))
    (record,) = records
    assert record.outcome == "ok", record.failure
    tops = [line for proto, line in room.lines if proto == "pop3" and line.startswith(b"TOP 1 ")]
    assert tops, "the probe never met the expunged message"
    assert room.messages == []  # the probe's own message was found, read and deleted


@pytest.mark.parametrize(("login", "code", "attribution"), [
    ("refuse", "pop3_auth", "customer"),       # -ERR to PASS: the probe's password is wrong
    ("garbage", "pop3_connect", "provider"),   # no POP3 answer at all: the server is broken
])
async def test_only_a_pop3_refusal_blames_the_password(tmp_path: Path, nursery: trio.Nursery, login: str,
                                                       code: str, attribution: str) -> None:
    room = await Mailroom(pop3_login=login).start(nursery)
    (record,) = await run_once(tmp_path, mail_check("mail", room))
    assert record.outcome == "fail"
    assert (record.failure.code, record.failure.attribution) == (code, attribution), record.failure


# ---- IMAP polling without IDLE: NOOP ------------------------------------------------------------

async def test_polling_without_idle_sees_a_new_message_at_the_first_poll_after_it_arrived(
        tmp_path: Path, mail_server: MailServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a NOOP, dovecot answers a SEARCH from the mailbox view of the previous command: a
    message that arrived since is seen one poll late (up to poll_max = 5 s by default)."""
    from probecore_plugins import mail

    monkeypatch.setenv(PASSWORD_ENV, mail_server.password)
    mail_server.clear("held2")
    polls: list[tuple[float, bool]] = []  # (when the poll began, whether it found the message)
    look = mail._ImapReceiver._look

    def spy(self, token):  # type: ignore[no-untyped-def]
        began = time.monotonic()
        hit = look(self, token)
        polls.append((began, hit is not None))
        return hit

    monkeypatch.setattr(mail._ImapReceiver, "_look", spy)
    arrived: list[float] = []

    async def release_and_watch() -> None:
        with trio.fail_after(20):
            while mail_server.held_count() == 0:
                await trio.sleep(0.02)
            await trio.sleep(1.0)
            await trio.to_thread.run_sync(mail_server.release_held)
            while not mail_server.mailbox_files("held2"):
                await trio.sleep(0.002)
            arrived.append(time.monotonic())

    checks = (f'[[check]]\nid = "poll"\nprobe = "mail"\nsmtp_host = "{mail_server.host}"\n'
              f'smtp_port = {mail_server.smtp_port}\nsmtp_tls = "none"\nreceive_port = {mail_server.imap_port}\n'
              f'receive_tls = "none"\nsender = "{mail_server.address("alice")}"\n'
              f'recipient = "{mail_server.address("held2")}"\nsender_password = {{ env = "{PASSWORD_ENV}" }}\n'
              f'recipient_password = {{ env = "{PASSWORD_ENV}" }}\ndeliver_within = "15s"\nidle = false\n'
              'poll_max = "0.3s"\n')
    host = make_host()
    profile = load_profile(write_profile(tmp_path, HEAD.replace(f'"{TIMEOUT:g}s"', '"20s"') + checks), host.probes)
    store = MemoryStore()
    async with trio.open_nursery() as inner:
        inner.start_soon(release_and_watch)
        await run_profile(profile, host, store, RunOptions(once=True, handle_signals=False, vantage="test"))
    (record,) = store.records()
    assert record.outcome == "ok", (record.failure, mail_server.logs())
    assert arrived, "the message never reached the maildir"
    after = [found for began, found in polls if began > arrived[0]]
    assert after and after[0], f"the first poll after the message arrived missed it: {after}"
    assert mail_server.mailbox_files("held2") == []


# ---- bounded replies: the probe ------------------------------------------------------------------

PROBE_CASES = {
    "imap-gigabyte-literal": ("imap", Mailroom(imap_login="literal")),
    "pop3-endless-top": ("pop3", Mailroom(pop3_top="endless", messages=[b"Subject: x\r\n\r\nbody\r\n"])),
    "smtp-endless-auth-reply": ("pop3", Mailroom(auth="endless")),
}


@pytest.mark.parametrize("case", list(PROBE_CASES))
async def test_an_endless_reply_is_reply_too_large_at_once_with_bounded_memory(
        tmp_path: Path, nursery: trio.Nursery, case: str) -> None:
    receive, room = PROBE_CASES[case]
    room = await Mailroom(**{k: getattr(room, k) for k in ("auth", "mechanisms", "ghost", "pop3_top",
                                                            "imap_login", "messages")}).start(nursery)
    heartbeat = Heartbeat()
    nursery.start_soon(heartbeat.run)
    before = reset_peak()
    started = time.monotonic()
    records = await run_once(tmp_path, mail_check("mail", room, receive=receive))
    elapsed = time.monotonic() - started
    growth = peak() - before
    (record,) = records
    assert record.failure is not None, record
    assert (record.outcome, record.failure.code, record.failure.attribution) == ("fail", "reply_too_large", "provider")
    assert "reply too large" in record.failure.message
    assert elapsed < TIMEOUT + SLACK
    assert growth < MEMORY_BOUND, f"peak RSS grew {growth / 2**20:.1f} MiB"
    print(f"{case}: {elapsed:.2f}s, peak RSS +{growth / 2**20:.1f} MiB, trio loop late by at most "
          f"{heartbeat.worst * 1000:.0f} ms")


@pytest.mark.parametrize("receive", ["imap", "pop3"])
async def test_a_stalled_tls_handshake_is_aborted_at_the_timeout(tmp_path: Path, nursery: trio.Nursery,
                                                                 receive: str) -> None:
    """``wrap_socket`` detaches the plain socket the probe registered: a handshake that never
    completes could not be aborted, its thread stayed blocked until the 60 s I/O timeout and
    the attempt waited the 2 s close grace on top of its timeout."""
    server = await start_hostile(nursery, Hostile("tls_stall"))
    room = Mailroom()
    room.ports = {"smtp": 9, receive: server.port}
    checks = mail_check("mail", room, receive=receive).replace('receive_tls = "none"',
                                                               'receive_tls = "implicit"\nverify = false')
    started = time.monotonic()
    (record,) = await run_once(tmp_path, checks)
    elapsed = time.monotonic() - started
    assert record.failure is not None and record.failure.code == "timeout", record
    assert server.connections == 1 and server.received, "the probe never started the handshake"
    assert established_to({server.port}) == [], "the stalled connection is still open"
    assert elapsed < TIMEOUT + SLACK, f"took {elapsed:.1f}s"


async def test_untagged_imap_updates_do_not_pile_up_over_the_polls(tmp_path: Path, nursery: trio.Nursery) -> None:
    """Each reply is within the bound, but imaplib kept every unrequested untagged response for
    the session: 3 MiB per reply, twice per poll, over a wait of many polls, grew without bound."""
    room = await Mailroom(imap_login="flood").start(nursery)
    before = reset_peak()
    (record,) = await run_once(tmp_path, mail_check("mail", room, receive="imap", idle="false",
                                                    poll_max='"0.01s"', deliver_within='"5s"'),
                               timeout=12.0)
    growth = peak() - before
    assert record.failure is not None and record.failure.code == "not_delivered", record
    polls = sum(1 for proto, line in room.lines if proto == "imap" and b"SEARCH HEADER" in line
                and not line.endswith(b'""'))
    assert polls >= 4, f"only {polls} polls: the test shows nothing"
    assert growth < MEMORY_BOUND, f"peak RSS grew {growth / 2**20:.1f} MiB over {polls} polls"
    print(f"{polls} polls, 6 MiB of untagged lines each: peak RSS +{growth / 2**20:.1f} MiB")


# ---- bounded replies: the email channel ---------------------------------------------------------

EMAIL_CASES: dict[str, tuple[Hostile, Callable[[str], bool]]] = {
    "endless-ehlo": (Hostile("endless_multiline", greeting=b"220 hostile ESMTP\r\n", await_command=True,
                             line=b"250-hostile\r\n"), lambda e: "reply too large (over 20000 lines)" in e),
    "megabyte-line": (Hostile("megabyte_line", greeting=b"220 hostile ESMTP\r\n", await_command=True,
                              lead=b"250 "), lambda e: "reply too large (a line over 8192 bytes)" in e),
    "endless-line": (Hostile("endless_line", greeting=b"220 hostile ESMTP\r\n", await_command=True,
                             lead=b"250-"), lambda e: "reply too large" in e),
    "endless-greeting": (Hostile("endless_multiline", line=b"220-hostile\r\n"),
                         lambda e: "reply too large" in e),
    "silence": (Hostile("silence"), lambda e: e.startswith("timed out after")),
    "garbage": (Hostile("garbage", greeting=b"220 hostile ESMTP\r\n", await_command=True),
                # Random bytes: mostly "not an SMTP reply"; a short first line reads as an empty
                # reply ("connection lost"), a long one as "reply too large". Never a timeout.
                lambda e: e.startswith("SMTP 127.0.0.1 port ") and any(
                    what in e for what in ("EHLO: ", "connection lost", "reply too large"))),
    "early-close": (Hostile("early_close", greeting=b"220 hostile ESMTP\r\n", await_command=True),
                    lambda e: "connection lost" in e),
    # A TLS handshake that never completes: implicit TLS, and after STARTTLS.
    "tls-stall": (Hostile("tls_stall"), lambda e: e.startswith("timed out after")),
    "starttls-stall": (Hostile("tls_stall", greeting=b"220 hostile ESMTP\r\n", script=(
        b"250-hostile\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n", b"220 go ahead\r\n")),
        lambda e: e.startswith("timed out after")),
}
SECURITY = {"tls-stall": "tls", "starttls-stall": "starttls"}


@pytest.mark.parametrize("case", list(EMAIL_CASES))
async def test_a_hostile_smtp_server_is_a_clean_email_failure_in_time_and_bounded_memory(
        nursery: trio.Nursery, case: str) -> None:
    """What 'probe notify test' does per channel (``attempt``), against each misbehaviour."""
    hostile, expected = EMAIL_CASES[case]
    server = await start_hostile(nursery, hostile)
    before = reset_peak()
    started = time.monotonic()
    cfg = email_config(Mailroom(), port=server.port, security=SECURITY.get(case, "none"))
    error = await attempt(EmailNotifier(), cfg, test_notice(), TIMEOUT)
    elapsed = time.monotonic() - started
    growth = peak() - before
    assert error is not None and expected(error), error
    assert "Traceback" not in error and "\n" not in error
    assert elapsed < TIMEOUT + SLACK
    assert growth < MEMORY_BOUND, f"peak RSS grew {growth / 2**20:.1f} MiB"
    assert server.connections == 1
    # Nothing left behind: no socket of this process still connected to the server (a stalled
    # handshake's socket used to stay open, its thread blocked, until the 60 s I/O timeout).
    assert established_to({server.port}) == []

