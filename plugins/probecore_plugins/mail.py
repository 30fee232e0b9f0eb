"""``probe = "mail"``: can a mailbox send to another, and how long does the message take
(contracts 003 and 004: availability, send and receive delay, hygiene)?

One attempt, per mailbox pair: log in to the receiving mailbox (IMAP or POP3) and sweep stale
probe messages; submit a uniquely tagged message over SMTP from the sender; watch the receiving
mailbox until the message is visible; read its ``Received:`` headers; delete it.

Keys (a ``[[check]]`` table):

* ``smtp_host``, ``smtp_port``, ``smtp_tls = "starttls" | "implicit" | "none"`` (default
  ``starttls``; port 587, 465 for ``implicit``, 25 for ``none``). The sender always
  authenticates, once per attempt, with the best mechanism the server offers (PLAIN, else
  LOGIN, else CRAM-MD5): a wrong password is refused once, not once per mechanism.
* ``receive = "imap" | "pop3"`` (default ``imap``), ``receive_host`` (default: ``smtp_host``),
  ``receive_port``, ``receive_tls = "implicit" | "starttls" | "none"`` (default ``implicit``:
  993 / 995; 143 / 110 otherwise).
* ``verify = true`` checks certificates and names on every TLS connection; ``ca_file`` trusts that
  CA bundle instead of the system's. ``verify = false`` makes TLS failures ``unknown``.
* The mailbox pair: ``sender``, ``sender_password``, ``recipient``, ``recipient_password``
  (addresses; ``sender_login`` / ``recipient_login`` when the login name differs), or
  ``mailboxes = [ { name = "alice-bob", sender = …, sender_password = …, recipient = …,
  recipient_password = … }, … ]``: several pairs in one attempt, checked concurrently, one
  member observation each (member name: ``name``, default ``<sender local part>-<recipient
  local part>``; a pair may set ``external``); the round is judged by the check's core key ``group`` (for 003:
  ``group = { failing = ">= 10%" }``). Passwords are secret references only.
* ``deliver_within`` (default 1h, the contracts' maximum): how long to wait for the message
  before ``not_delivered``. Set the check's own ``timeout`` longer (the core's timeout cancels
  the whole attempt and writes one ``timeout`` record, without members). ``threshold =
  { op = "<=", value = "60s" }`` judges the headline value separately (``too_slow``).
* ``folder`` (``INBOX``) is where mail should arrive; ``junk_folders`` (default ``["Junk",
  "Spam"]``) are also watched over IMAP: a message found there fails ``junk_folder``.
* ``idle = true`` uses IMAP IDLE when the server offers it; otherwise (or ``false``) the probe
  polls, with a ``NOOP`` before each search (servers such as dovecot show new mail to a
  selected mailbox only when a command lets them report it: without it the message appears
  seconds late). Either way the waits between searches grow: first 50 ms, each 1.5× the last, at most
  ``poll_max`` (default 5s). With IDLE a wait ends early when the server reports a change; the
  short first waits matter because servers batch their IDLE notices (dovecot: 0.5 s), and the
  cap keeps junk folders (which do not wake an INBOX IDLE) checked.
* ``sweep_after`` (default: ``deliver_within``): probe messages older than this (by the time
  in their ``X-Probecore-Token`` header) are deleted from the watched folders before each attempt.
  Only messages carrying that header are ever touched.
* ``external = true``: the pair crosses into another provider's system (mail to or from an outside
  domain). Delay failures (``not_delivered``, ``too_slow``) are then attributed ``third_party``,
  which contract 004 二.3.a excludes, and the records carry ``details.external = true``.
* Hygiene mode: ``hygiene = "virus"`` sends the EICAR test file as an attachment
  (``virus_format = "plain"``, default) or inside a zip (``"zip"``); ``hygiene = "spam"`` sends
  the GTUBE string. The outcome is one of ``rejected`` (SMTP refused it), ``quarantined`` (it
  never arrived within ``deliver_within``), ``junk`` (filed in a junk folder), ``stripped``
  (arrived without the test payload) or ``delivered`` (intact, in ``folder``); ``caught``
  (default all four: ``["rejected", "quarantined", "junk", "stripped"]``) lists what counts
  as caught. ``ok`` when caught; ``fail`` with ``virus_delivered`` / ``spam_delivered`` when it
  arrived intact, ``hygiene_<outcome>`` for an outcome not in ``caught``. The outcome is in
  ``details.hygiene_result``. These records feed 003-V. Over POP3 only the inbox is visible,
  so a message filed as junk counts as ``quarantined``.

The message: ``Subject: probecore <token>``, header ``X-Probecore-Token: <unix time>-<random>``,
a unique ``Message-ID``; the token is searched by header (IMAP ``SEARCH HEADER``, POP3 ``TOP``).

Phases (seconds, per pair): ``prepare`` (receiving side: connect, TLS, login, select, sweep),
``submit`` (SMTP connect to the ``250`` after DATA), ``delivery`` (that ``250`` to the message
being visible to the receiving client), ``cleanup`` (fetch headers, delete), and, when the
``Received:`` headers allow, ``send_delay`` (the submission server's own ``Received:`` stamp to
the next system's stamp: the provider accepted → handed on) and ``receive_delay`` (the last
``Received:`` stamp to the probe seeing the message: received → in the mailbox and visible).
Precision: header stamps have 1 s resolution, so both are ±1 s; they compare clocks of different
machines (and the probe's), so clock skew adds to the error; negative results (skew) are clamped
to 0, and the raw values are in ``details`` (``send_delay_raw``, ``receive_delay_raw``). With one
``Received:`` header there is no ``send_delay``. The visibility time has the resolution of the
wait: IDLE wakes at once; polling adds up to one poll interval.

Headline value: end-to-end delivery seconds, ``submit`` + ``delivery``. A round with members
carries the slowest delivered pair's value.

Failure codes: ``smtp_auth`` (customer: 535, no AUTH offered), ``imap_auth`` / ``pop3_auth``
(customer: login refused); ``smtp_connect`` (provider: refused, unreachable, TLS handshake,
connection lost), ``smtp_rejected`` (provider: a 4xx/5xx to MAIL, RCPT or DATA; reply code in
``details.smtp_reply``), ``imap_connect`` / ``pop3_connect`` (provider), ``reply_too_large``
(provider: a reply of any of the three servers over 4 MiB or 20,000 lines, or a line over
the client's own limit: the probe stops reading it), ``not_delivered``
(provider, ``third_party`` with ``external``), ``junk_folder`` (provider), ``too_slow``
(provider / ``third_party``). ``error`` outcomes: a missing secret (``probe_error``), an
unreadable ``ca_file`` (``ca_file``).

How the clients run: the stdlib's ``smtplib``, ``imaplib`` and ``poplib`` (well-kept, no
dependency; POP3 has no maintained asyncio client, and IMAP IDLE is a few lines on imaplib),
each blocking step in a worker thread (``trio.to_thread.run_sync(abandon_on_cancel=True)``).
Timeouts stay trio's: when the attempt is cancelled (the core's timeout, or ``deliver_within``)
the trio side shuts down every socket the step's client opened (``shutdown(SHUT_RDWR)`` wakes a
thread blocked in ``connect``/``recv`` at once), then waits, shielded and at most 2 s, until the
thread has returned, and closes the sockets. So no thread keeps working and no connection stays
open after an attempt. Sockets also carry ``io_timeout`` (default 60 s) as a backstop. Every
reply is bounded in bytes and lines (``_blocking``), so a hostile server costs at most a few
megabytes and milliseconds of parsing. The passwords are read through ``ctx.reveal`` (scrubbed
from every record of the attempt, in every form a protocol encodes them: see
``probecore.redact``); no message the probe writes contains a command's argument, and a
server's text in a message is redacted before it is shortened, so a cut never leaves part of a
password.

A message that another client deletes while the probe scans a POP3 maildrop (``-ERR`` to
``TOP`` or ``DELE`` of a listed message) is skipped, not a failure.
"""

from __future__ import annotations

import email.utils
import imaplib
import io
import poplib
import re
import secrets
import select
import smtplib
import socket
import ssl
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from email import policy
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import trio

from probecore import (
    Attribution,
    CheckContext,
    Duration,
    Observation,
    ProbeConfig,
    ProbeKind,
    ProbecoreError,
    Secret,
    format_duration,
    hookimpl,
    redact,
)

from ._client import load_failure, tls_context

# Blocking clients in worker threads that trio can abort: shared with the email channel.
from ._blocking import CLOSE_GRACE, BoundedReads, ReplyTooLarge, clip
from ._blocking import SMTPClient as _SMTP
from ._blocking import Sockets as _Sockets
from ._blocking import Worker as _Worker
from ._blocking import one_line as _one_line
from ._blocking import reason as _reason
from ._blocking import smtp_reply as _smtp_reply

T = TypeVar("T")
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
TOKEN_HEADER = "X-Probecore-Token"
FIRST_POLL = 0.05
POLL_GROWTH = 1.5
HELO = "probecore.invalid"
EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
CAUGHT = ("rejected", "quarantined", "junk", "stripped")
_MEMBER = re.compile(r"[^A-Za-z0-9._@+-]+")


class Threshold(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``threshold = { op = "<=", value = "60s" }``: what the delivery seconds must satisfy."""

    op: Literal["<", "<=", ">=", ">"]
    value: Duration

    def holds(self, seconds: float) -> bool:
        limit = float(self.value)
        return {"<": seconds < limit, "<=": seconds <= limit, ">=": seconds >= limit,
                ">": seconds > limit}[self.op]

    def __str__(self) -> str:
        return f"{self.op} {format_duration(self.value)}"


class Pair(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One sender → recipient pair of ``mailboxes``."""

    name: NonEmpty | None = None
    sender: NonEmpty
    sender_password: Secret
    sender_login: NonEmpty | None = None
    recipient: NonEmpty
    recipient_password: Secret
    recipient_login: NonEmpty | None = None
    external: bool | None = None

    @property
    def member(self) -> str:
        if self.name:
            return self.name
        return _MEMBER.sub("_", f"{self.sender.split('@')[0]}-{self.recipient.split('@')[0]}")


class MailConfig(ProbeConfig):
    smtp_host: NonEmpty
    smtp_port: Port | None = None
    smtp_tls: Literal["starttls", "implicit", "none"] = "starttls"
    receive: Literal["imap", "pop3"] = "imap"
    receive_host: NonEmpty | None = None
    receive_port: Port | None = None
    receive_tls: Literal["implicit", "starttls", "none"] = "implicit"
    verify: bool = True
    ca_file: NonEmpty | None = None
    sender: NonEmpty | None = None
    sender_password: Secret | None = None
    sender_login: NonEmpty | None = None
    recipient: NonEmpty | None = None
    recipient_password: Secret | None = None
    recipient_login: NonEmpty | None = None
    mailboxes: list[Pair] = []
    deliver_within: Duration = Duration(3600.0)
    threshold: Threshold | None = None
    folder: NonEmpty = "INBOX"
    junk_folders: list[NonEmpty] = msgspec.field(default_factory=lambda: ["Junk", "Spam"])
    idle: bool = True
    poll_max: Duration = Duration(5.0)
    sweep_after: Duration | None = None
    external: bool = False
    hygiene: Literal["virus", "spam"] | None = None
    virus_format: Literal["plain", "zip"] = "plain"
    caught: list[Literal["rejected", "quarantined", "junk", "stripped"]] = msgspec.field(
        default_factory=lambda: list(CAUGHT))
    io_timeout: Duration = Duration(60.0)

    def __post_init__(self) -> None:
        single = [k for k in ("sender", "sender_password", "recipient", "recipient_password")
                  if getattr(self, k) is not None]
        if self.mailboxes:
            if single or self.sender_login or self.recipient_login:
                raise ValueError('key "mailboxes": give either mailboxes, or sender and recipient '
                                 'keys, not both')
            names = [p.member for p in self.mailboxes]
            if len(set(names)) != len(names):
                raise ValueError('key "mailboxes": two pairs have the same name; set name = "…"')
        else:
            for key in ("sender", "sender_password", "recipient", "recipient_password"):
                if getattr(self, key) is None:
                    raise ValueError(f'key "{key}": required (or give mailboxes = [...])')
        if self.ca_file is not None and not self.verify:
            raise ValueError('key "ca_file": only used with verify = true')
        if float(self.poll_max) <= 0:
            raise ValueError('key "poll_max": must be more than 0s')
        if float(self.deliver_within) <= 0:
            raise ValueError('key "deliver_within": must be more than 0s')

    def pairs(self) -> list[Pair]:
        if self.mailboxes:
            return list(self.mailboxes)
        assert self.sender and self.recipient and self.sender_password and self.recipient_password
        return [Pair(sender=self.sender, sender_password=self.sender_password,
                     sender_login=self.sender_login, recipient=self.recipient,
                     recipient_password=self.recipient_password,
                     recipient_login=self.recipient_login)]

    @property
    def smtp_port_(self) -> int:
        return self.smtp_port or {"starttls": 587, "implicit": 465, "none": 25}[self.smtp_tls]

    @property
    def receive_port_(self) -> int:
        if self.receive_port:
            return self.receive_port
        if self.receive == "imap":
            return 993 if self.receive_tls == "implicit" else 143
        return 995 if self.receive_tls == "implicit" else 110


class Failed(Exception):
    """A classified failure of one pair's attempt."""

    def __init__(self, code: str, message: str, attribution: Attribution = "provider",
                 outcome: str = "fail"):
        super().__init__(message)
        self.code, self.message, self.attribution, self.outcome = code, message, attribution, outcome


class _IMAP(BoundedReads, imaplib.IMAP4):
    def __init__(self, sockets: _Sockets, context: ssl.SSLContext | None, host: str, port: int):
        self._pc_sockets = sockets
        self._pc_context = context
        self._pc_where = f"IMAP {host} port {port}"
        super().__init__(host, port, timeout=sockets.io_timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:  # type: ignore[override]
        return self._pc_sockets.connect(self.host, self.port, self._pc_context)

    def send(self, data: bytes) -> None:
        self._pc_sent()
        super().send(data)


class _POP3(BoundedReads, poplib.POP3):
    def __init__(self, sockets: _Sockets, context: ssl.SSLContext | None, host: str, port: int):
        self._pc_sockets = sockets
        self._pc_context = context
        self._pc_where = f"POP3 {host} port {port}"
        super().__init__(host, port, timeout=sockets.io_timeout)

    def _create_socket(self, timeout: float) -> socket.socket:  # type: ignore[override]
        return self._pc_sockets.connect(self.host, self.port, self._pc_context)

    def _putline(self, line: bytes) -> None:  # every command goes through it
        self._pc_sent()
        super()._putline(line)  # type: ignore[misc]


# ---- the message ------------------------------------------------------------------------------

def new_token(now: float | None = None) -> str:
    return f"{int(time.time() if now is None else now)}-{secrets.token_hex(8)}"


def token_age(token: str, now: float) -> float | None:
    head = token.strip().split("-", 1)[0]
    return now - int(head) if head.isdigit() else None


def build_message(pair: Pair, token: str, hygiene: str | None, virus_format: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = pair.sender
    msg["To"] = pair.recipient
    msg["Subject"] = f"probecore {token}"
    msg[TOKEN_HEADER] = token
    msg["Date"] = email.utils.formatdate(localtime=False)
    domain = pair.sender.rsplit("@", 1)[-1] if "@" in pair.sender else "probecore.invalid"
    msg["Message-ID"] = email.utils.make_msgid("probecore", domain=domain)
    if hygiene == "spam":
        msg.set_content(f"probecore spam-filter test message.\n\n{GTUBE}\n")
    elif hygiene == "virus":
        msg.set_content("probecore anti-virus test message (EICAR test file attached).\n")
        if virus_format == "zip":
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                archive.writestr("eicar.com", EICAR)
            msg.add_attachment(buffer.getvalue(), maintype="application", subtype="zip",
                               filename="eicar.zip")
        else:
            msg.add_attachment(EICAR.encode(), maintype="application",
                               subtype="octet-stream", filename="eicar.com")
    else:
        msg.set_content("probecore mail round-trip test message; it deletes itself.\n")
    return msg.as_bytes(policy=policy.SMTP)


def payload_intact(raw: bytes, hygiene: str) -> bool:
    """Whether the delivered message still carries the hygiene test payload."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    for part in message.walk():
        if part.is_multipart():
            continue
        data = part.get_payload(decode=True) or b""
        if hygiene == "spam" and GTUBE.encode() in data:
            return True
        if hygiene == "virus":
            if EICAR.encode() in data:
                return True
            if data[:2] == b"PK":
                try:
                    with zipfile.ZipFile(io.BytesIO(data)) as archive:
                        if any(EICAR.encode() in archive.read(n) for n in archive.namelist()):
                            return True
                except (zipfile.BadZipFile, OSError, KeyError):
                    pass
    return False


def received_times(headers: bytes) -> list[float]:
    """Epoch seconds of the ``Received:`` stamps, oldest (bottom) first."""
    message = BytesHeaderParser().parsebytes(headers)
    stamps = []
    for value in message.get_all("Received") or []:
        text = " ".join(str(value).split())
        if ";" not in text:
            continue
        try:
            moment = email.utils.parsedate_to_datetime(text.rsplit(";", 1)[1].strip())
        except (TypeError, ValueError, IndexError):
            continue
        if moment is not None and moment.tzinfo is not None:
            stamps.append(moment.timestamp())
    return stamps[::-1]


# ---- receiving side ---------------------------------------------------------------------------

@dataclass
class Hit:
    """The message, seen in *folder* at wall time *seen_wall*; *ref* is the client's handle."""

    folder: str
    ref: Any
    seen_wall: float


@dataclass
class Found:
    folder: str
    headers: bytes
    raw: bytes | None
    seen_wall: float


class _Receiver:
    """One receiving mailbox; every method but the async ones runs in a worker thread."""

    def __init__(self, config: MailConfig, pair: Pair, password: str, worker: _Worker,
                 details: dict[str, Any]):
        self.config = config
        self.pair = pair
        self.login_name = pair.recipient_login or pair.recipient
        self.password = password
        self.worker = worker
        self.details = details
        self.host = config.receive_host or config.smtp_host
        self.port = config.receive_port_
        self.context = (_load_context(config) if config.receive_tls != "none" else None)

    def _connect_failed(self, exc: BaseException) -> Failed:
        proto = self.config.receive
        attribution: Attribution = "provider"
        if isinstance(exc, ssl.SSLError) and not self.config.verify:
            attribution = "unknown"
        return Failed(f"{proto}_connect", f"{proto.upper()} {self.host} port {self.port}: "
                      f"{_reason(exc)}", attribution)


class _ImapReceiver(_Receiver):
    client: _IMAP | None = None
    folders: list[str]

    async def open(self, sweep_after: float) -> None:
        await self.worker.run(self._open, sweep_after)

    def _open(self, sweep_after: float) -> None:
        sockets = self.worker.sockets
        implicit = self.context if self.config.receive_tls == "implicit" else None
        try:
            self.client = _IMAP(sockets, implicit, self.host, self.port)
            if self.config.receive_tls == "starttls":
                self.client.starttls(ssl_context=sockets.starttls(self.context))
        except (OSError, imaplib.IMAP4.error, EOFError) as exc:
            raise self._connect_failed(exc) from None
        try:
            self.client.login(self.login_name, self.password)
        except imaplib.IMAP4.error as exc:
            raise Failed("imap_auth", f"IMAP login refused: {_imap_text(exc)}", "customer") from None
        except (OSError, EOFError) as exc:
            raise self._connect_failed(exc) from None
        self.details["imap_idle"] = bool(self.config.idle and "IDLE" in self.client.capabilities)
        self.folders = [self.config.folder]
        self._find_junk()
        swept = 0
        now = time.time()
        for name in reversed(self.folders):  # end with the watched folder selected
            self._select(name)
            for num, token in self._tokens():
                age = token_age(token, now)
                if age is not None and age > sweep_after:
                    self.client.uid("STORE", num, "+FLAGS", "(\\Deleted)")
                    swept += 1
            self.client.expunge()
        self.details["swept"] = swept

    def _find_junk(self) -> None:
        """Add the junk folders that exist (now) to the watched ones; a junk folder may be
        created by the very delivery the probe waits for (sieve ``fileinto :create``)."""
        assert self.client is not None
        for name in self.config.junk_folders:
            if name not in self.folders:
                typ, _ = self.client.status(_quote(name), "(MESSAGES)")
                if typ == "OK":
                    self.folders.append(name)

    def _select(self, name: str) -> None:
        assert self.client is not None
        typ, data = self.client.select(_quote(name))
        if typ != "OK":
            raise Failed("imap_connect", f"IMAP SELECT {name}: {_imap_text(data)}")

    def _tokens(self) -> list[tuple[bytes, str]]:
        """(UID, token) of every message with the token header in the selected folder."""
        assert self.client is not None
        typ, data = self.client.uid("SEARCH", "HEADER", TOKEN_HEADER, '""')
        nums = data[0].split() if typ == "OK" and data and data[0] else []
        found = []
        for num in nums:
            typ, parts = self.client.uid("FETCH", num, f"(BODY.PEEK[HEADER.FIELDS ({TOKEN_HEADER})])")
            for part in parts:
                if isinstance(part, tuple):
                    value = BytesHeaderParser().parsebytes(part[1]).get(TOKEN_HEADER)
                    if value:
                        found.append((num, str(value).strip()))
        return found

    def _search(self, token: str) -> bytes | None:
        assert self.client is not None
        typ, data = self.client.uid("SEARCH", "HEADER", TOKEN_HEADER, f'"{token}"')
        nums = data[0].split() if typ == "OK" and data and data[0] else []
        return nums[0] if nums else None

    def _look(self, token: str) -> Hit | None:
        """Search the watched folder (selected), then each junk folder (left selected if hit)."""
        try:
            assert self.client is not None
            # imaplib keeps every untagged response no command asked for (EXISTS, RECENT …)
            # for the whole session: over an hour of polls, or from a server that floods them,
            # that grows without bound. Nothing here reads them.
            self.client.untagged_responses.clear()
            if not self.details.get("imap_idle"):
                # Without IDLE, a NOOP lets the server sync the selected mailbox first: dovecot
                # answers a SEARCH from the view of the previous command, so a new message was
                # seen one poll late (up to poll_max: 5 s by default).
                self.client.noop()
            num = self._search(token)
            if num is not None:
                return Hit(self.config.folder, num, time.time())
            self._find_junk()
            for name in self.folders[1:]:
                self._select(name)
                num = self._search(token)
                if num is not None:
                    return Hit(name, num, time.time())
            if len(self.folders) > 1:
                self._select(self.config.folder)
        except ReplyTooLarge:
            raise
        except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
            raise Failed("imap_connect", f"IMAP connection lost: {_reason(exc)}") from None
        return None

    def _take(self, hit: Hit) -> Found:
        """Fetch the headers (the whole message in hygiene mode) and delete it."""
        assert self.client is not None
        what = "(BODY.PEEK[])" if self.config.hygiene else "(BODY.PEEK[HEADER])"
        try:
            self.client.untagged_responses.clear()  # the FETCH data below is this FETCH's only
            typ, parts = self.client.uid("FETCH", hit.ref, what)
            body = next((p[1] for p in parts if isinstance(p, tuple)), b"")
            self.client.uid("STORE", hit.ref, "+FLAGS", "(\\Deleted)")
            self.client.expunge()
        except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
            raise Failed("imap_connect", f"IMAP connection lost: {_reason(exc)}") from None
        headers = body.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        return Found(hit.folder, headers, body if self.config.hygiene else None, hit.seen_wall)

    async def take(self, hit: Hit) -> Found:
        return await self.worker.run(self._take, hit)

    def _idle(self, wait: float) -> None:
        """IDLE until the server reports anything or *wait* seconds pass (then DONE)."""
        client = self.client
        assert client is not None
        tag = client._new_tag()  # type: ignore[attr-defined]
        client.send(tag + b" IDLE\r\n")
        while True:
            line = client.readline()
            if not line:
                raise EOFError("connection closed at IDLE")
            if line.startswith(b"+"):
                break
            if line.startswith(tag):  # NO/BAD: no IDLE after all; this wait is a plain poll
                self.details["imap_idle"] = False
                return
            # An untagged update (EXISTS …) before the continuation: read on.
        # Wait with select, not a socket timeout: a timed-out makefile() reader is unusable.
        # A line already buffered by the reader is not seen here; the wait is then poll_max.
        sock = client.sock
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        if pending or select.select([sock], [], [], wait)[0]:
            client.readline()
        client.send(b"DONE\r\n")
        while True:
            line = client.readline()
            if not line:
                raise EOFError("connection closed during IDLE")
            if line.startswith(tag):
                return

    async def wait_for(self, token: str, poll_max: float) -> Hit:
        interval = FIRST_POLL
        while True:
            found = await self.worker.run(self._look, token)
            if found is not None:
                return found
            try:
                if self.details.get("imap_idle"):
                    await self.worker.run(self._idle, interval)
                else:
                    await trio.sleep(interval)
                interval = min(interval * POLL_GROWTH, poll_max)
            except ReplyTooLarge:
                raise
            except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
                raise Failed("imap_connect", f"IMAP connection lost: {_reason(exc)}") from None

    async def close(self) -> None:
        client = self.client
        if client is None or self.worker.busy:
            return  # a step was abandoned (cancelled): the worker aborts the connection

        def logout() -> None:
            try:
                client.logout()
            except Exception:  # noqa: BLE001 — leaving anyway
                pass

        with trio.move_on_after(CLOSE_GRACE) as scope:
            scope.shield = True
            await self.worker.run(logout)


class _Pop3Receiver(_Receiver):
    def _login(self) -> _POP3:
        sockets = self.worker.sockets
        implicit = self.context if self.config.receive_tls == "implicit" else None
        try:
            client = _POP3(sockets, implicit, self.host, self.port)
            if self.config.receive_tls == "starttls":
                client.stls(context=sockets.starttls(self.context))
        except (OSError, poplib.error_proto, EOFError) as exc:
            raise self._connect_failed(exc) from None
        try:
            client.user(self.login_name)
            client.pass_(self.password)
        except poplib.error_proto as exc:
            _close_pop(client)
            if not _pop_err(exc):  # garbage instead of +OK/-ERR: the server's fault, not a refusal
                raise Failed("pop3_connect", f"POP3 login: not a POP3 answer: {_pop_text(exc)}") from None
            raise Failed("pop3_auth", f"POP3 login refused: {_pop_text(exc)}", "customer") from None
        except (OSError, EOFError) as exc:
            raise self._connect_failed(exc) from None
        return client

    def _scan(self, client: _POP3) -> list[tuple[int, str, bytes]]:
        """(message number, token, headers) of every probe message in the maildrop."""
        found = []
        _, listing, _ = client.list()
        for line in listing:
            num = int(line.split()[0])
            try:
                _, lines, _ = client.top(num, 0)
            except poplib.error_proto as exc:
                if _pop_err(exc):  # "-ERR Message 3 expunged": another client deleted it
                    continue
                raise
            headers = b"\r\n".join(lines) + b"\r\n\r\n"
            value = BytesHeaderParser().parsebytes(headers).get(TOKEN_HEADER)
            if value:
                found.append((num, str(value).strip(), headers))
        return found

    def _open(self, sweep_after: float) -> None:
        client = self._login()
        try:
            now = time.time()
            swept = 0
            for num, token, _ in self._scan(client):
                age = token_age(token, now)
                if age is not None and age > sweep_after:
                    try:
                        client.dele(num)
                    except poplib.error_proto as exc:
                        if not _pop_err(exc):  # -ERR: deleted by another client meanwhile
                            raise
                        continue
                    swept += 1
            client.quit()
        except (OSError, EOFError, poplib.error_proto) as exc:
            _close_pop(client)
            raise Failed("pop3_connect", f"POP3 {self.host} port {self.port}: {_reason(exc)}") from None
        self.details["swept"] = swept

    async def open(self, sweep_after: float) -> None:
        await self.worker.run(self._open, sweep_after)

    def _look(self, token: str) -> Hit | None:
        client = self._login()
        try:
            for num, value, headers in self._scan(client):
                if value == token:
                    return Hit(self.config.folder, (client, num, headers), time.time())
            client.quit()
        except (OSError, EOFError, poplib.error_proto) as exc:
            _close_pop(client)
            raise Failed("pop3_connect", f"POP3 connection lost: {_reason(exc)}") from None
        return None

    def _take(self, hit: Hit) -> Found:
        client, num, headers = hit.ref
        try:
            raw = None
            if self.config.hygiene:
                _, lines, _ = client.retr(num)
                raw = b"\r\n".join(lines) + b"\r\n"
            client.dele(num)
            client.quit()
        except (OSError, EOFError, poplib.error_proto) as exc:
            _close_pop(client)
            raise Failed("pop3_connect", f"POP3 connection lost: {_reason(exc)}") from None
        return Found(hit.folder, headers, raw, hit.seen_wall)

    async def take(self, hit: Hit) -> Found:
        return await self.worker.run(self._take, hit)

    async def wait_for(self, token: str, poll_max: float) -> Hit:
        interval = FIRST_POLL
        while True:
            found = await self.worker.run(self._look, token)
            if found is not None:
                return found
            await trio.sleep(interval)
            interval = min(interval * POLL_GROWTH, poll_max)

    async def close(self) -> None:
        return None


def _close_pop(client: poplib.POP3) -> None:
    try:
        client.close()
    except OSError:
        pass


# ---- sending side -----------------------------------------------------------------------------

def _submit(config: MailConfig, pair: Pair, password: str, message: bytes, sockets: _Sockets,
            details: dict[str, Any]) -> None:
    host, port = config.smtp_host, config.smtp_port_
    context = _load_context(config) if config.smtp_tls != "none" else None
    where = f"SMTP {host} port {port}"

    def lost(exc: BaseException) -> Failed:
        attribution: Attribution = "provider"
        if isinstance(exc, ssl.SSLError) and not config.verify:
            attribution = "unknown"
        return Failed("smtp_connect", f"{where}: {_reason(exc)}", attribution)

    try:
        client = _SMTP(sockets, context if config.smtp_tls == "implicit" else None,
                       local_hostname=HELO, timeout=sockets.io_timeout)
        client._host = host  # smtplib sets it only when the constructor connects (for STARTTLS SNI)
        code, _ = client.connect(host, port)
        details["smtp_banner_reply"] = code
        if code != 220:
            raise Failed("smtp_connect", f"{where}: greeting {code}")
    except Failed:
        raise
    except (OSError, smtplib.SMTPException) as exc:
        raise lost(exc) from None

    def ehlo() -> None:
        # smtplib's ehlo() returns a refusal (or garbage, code -1) instead of raising; left
        # unchecked it would surface later as "no AUTH offered": the customer's fault.
        code, text = client.ehlo()
        if code != 250:
            raise Failed("smtp_connect", f"{where}: EHLO: {_smtp_reply(code, text)}")

    try:
        ehlo()
        if config.smtp_tls == "starttls":
            if not client.has_extn("starttls"):
                raise Failed("smtp_connect", f"{where}: STARTTLS not offered",
                             "provider" if config.verify else "unknown")
            client.starttls(context=sockets.starttls(context))
            ehlo()
        if config.smtp_tls != "none" and client.sock is not None and hasattr(client.sock, "version"):
            details["smtp_tls_version"] = client.sock.version()
        try:
            client.login(pair.sender_login or pair.sender, password)
        except smtplib.SMTPAuthenticationError as exc:
            details["smtp_reply"] = exc.smtp_code
            raise Failed("smtp_auth", f"SMTP AUTH refused: {exc.smtp_code} {_one_line(exc.smtp_error)}",
                         "customer") from None
        except smtplib.SMTPNotSupportedError:
            raise Failed("smtp_auth", f"{where}: the server offers no AUTH here", "customer") from None
        try:
            client.sendmail(pair.sender, [pair.recipient], message)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            details["smtp_reply"] = code
            raise Failed("smtp_rejected", f"RCPT: {code} {_one_line(text)}") from None
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            verb = "MAIL" if isinstance(exc, smtplib.SMTPSenderRefused) else "DATA"
            details["smtp_reply"] = exc.smtp_code
            raise Failed("smtp_rejected", f"{verb}: {exc.smtp_code} {_one_line(exc.smtp_error)}") from None
        details["smtp_reply"] = 250
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            pass
    except Failed:
        _close_smtp(client)
        raise
    except (OSError, smtplib.SMTPException) as exc:
        _close_smtp(client)
        raise lost(exc) from None


def _close_smtp(client: smtplib.SMTP) -> None:
    try:
        client.close()
    except OSError:
        pass


# ---- one pair ---------------------------------------------------------------------------------

class _Timer:
    """Phase timing per pair; with *ctx* (a single pair) also through ``ctx.phase``."""

    def __init__(self, ctx: CheckContext | None):
        self.ctx = ctx
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.ctx is not None:
            try:
                with self.ctx.phase(name):
                    yield
            finally:
                self.phases[name] = self.ctx.phases.get(name, 0.0)
            return
        started = trio.current_time()
        try:
            yield
        finally:
            self.phases[name] = trio.current_time() - started


async def check_pair(config: MailConfig, pair: Pair, ctx: CheckContext, single: bool,
                     limiter: trio.CapacityLimiter) -> Observation:
    timer = _Timer(ctx if single else None)
    details: dict[str, Any] = {"receive": config.receive}
    external = config.external if pair.external is None else pair.external
    if external:
        details["external"] = True
    member = None if single else pair.member
    try:
        sender_password = ctx.reveal(pair.sender_password)
        recipient_password = ctx.reveal(pair.recipient_password)
        worker = _Worker(float(config.io_timeout), limiter)
        try:
            try:
                return await _round_trip(config, pair, sender_password, recipient_password,
                                         worker, timer, details, external, member)
            except ReplyTooLarge as exc:
                raise Failed("reply_too_large", str(exc)) from None
        finally:
            await worker.close()
    except Failed as failed:
        phases = {} if single else timer.phases
        # A server's text may echo a password in any encoding; redact it before shortening.
        message = clip(redact(failed.message, ctx.revealed))
        if failed.outcome == "error":
            return Observation.error(failed.code, message, details=details, member=member,
                                     phases=phases)
        return Observation.fail(failed.code, message, attribution=failed.attribution,
                                details=details, member=member, phases=phases)
    except ProbecoreError as exc:
        return Observation.error("probe_error", str(exc), details=details, member=member)
    except Exception as exc:
        if single:
            raise
        return Observation.error("plugin_crash", f"mail probe raised {type(exc).__name__}: {exc}",
                                 member=member)


async def _round_trip(config: MailConfig, pair: Pair, sender_password: str,
                      recipient_password: str, worker: _Worker, timer: _Timer,
                      details: dict[str, Any], external: bool, member: str | None) -> Observation:
    single = member is None
    receiver_cls = _ImapReceiver if config.receive == "imap" else _Pop3Receiver
    receiver = receiver_cls(config, pair, recipient_password, worker, details)
    within = float(config.deliver_within)
    delay_party: Attribution = "third_party" if external else "provider"
    try:
        with timer.phase("prepare"):
            await receiver.open(float(config.sweep_after or config.deliver_within))
        token = new_token()
        message = build_message(pair, token, config.hygiene, config.virus_format)
        rejected: Failed | None = None
        with timer.phase("submit"):
            try:
                await worker.run(_submit, config, pair, sender_password, message, worker.sockets,
                                 details)
            except Failed as failed:
                if not (config.hygiene and failed.code == "smtp_rejected"):
                    raise
                rejected = failed
        if rejected is not None:
            return _hygiene(config, "rejected", rejected.message, details, timer, member)
        hit: Hit | None = None
        with timer.phase("delivery"):
            with trio.move_on_after(within):
                hit = await receiver.wait_for(token, float(config.poll_max))
        if hit is None:
            if config.hygiene:
                return _hygiene(config, "quarantined", f"not in {config.folder} within "
                                f"{format_duration(config.deliver_within)}", details, timer, member)
            raise Failed("not_delivered", f"{pair.recipient} did not receive the message within "
                         f"{format_duration(config.deliver_within)}", delay_party)
        with timer.phase("cleanup"):
            found = await receiver.take(hit)
        _delays(found, timer, details)
        details["folder"] = found.folder
        value = timer.phases["submit"] + timer.phases["delivery"]
        phases = {k: v for k, v in timer.phases.items()} if not single else {
            k: v for k, v in timer.phases.items() if k in ("send_delay", "receive_delay")}
        if config.hygiene:
            if found.folder != config.folder:
                result = "junk"
            elif found.raw is not None and not payload_intact(found.raw, config.hygiene):
                result = "stripped"
            else:
                result = "delivered"
            return _hygiene(config, result, f"found in {found.folder}", details, timer, member,
                            value=value)
        if found.folder != config.folder:
            return Observation.fail("junk_folder", f"the message was filed in {found.folder}, not "
                                    f"{config.folder}", value=value, phases=phases,
                                    details=details, member=member)
        if config.threshold is not None and not config.threshold.holds(value):
            return Observation.fail("too_slow", f"delivered in {value:.3f}s; expected "
                                    f"{config.threshold}", attribution=delay_party, value=value,
                                    phases=phases, details=details, member=member)
        return Observation.ok(value, unit="s", phases=phases, details=details, member=member)
    finally:
        await receiver.close()


def _delays(found: Found, timer: _Timer, details: dict[str, Any]) -> None:
    stamps = received_times(found.headers)
    details["received_hops"] = len(stamps)
    if len(stamps) >= 2:
        raw = stamps[1] - stamps[0]
        details["send_delay_raw"] = raw
        timer.phases["send_delay"] = max(0.0, raw)
    if stamps:
        raw = found.seen_wall - stamps[-1]
        details["receive_delay_raw"] = round(raw, 3)
        timer.phases["receive_delay"] = max(0.0, raw)


def _hygiene(config: MailConfig, result: str, how: str, details: dict[str, Any], timer: _Timer,
             member: str | None, value: float | None = None) -> Observation:
    details["hygiene_result"] = result
    phases = dict(timer.phases) if member is not None else {
        k: v for k, v in timer.phases.items() if k in ("send_delay", "receive_delay")}
    kind = config.hygiene
    if result in config.caught:
        return Observation.ok(value, unit="s" if value is not None else None, phases=phases,
                              details=details, member=member)
    code = f"{kind}_delivered" if result == "delivered" else f"hygiene_{result}"
    return Observation.fail(code, f"{kind} test message {result}: {how}", value=value,
                            phases=phases, details=details, member=member)


# ---- helpers ----------------------------------------------------------------------------------

def _load_context(config: MailConfig) -> ssl.SSLContext:
    try:
        return tls_context(config.verify, config.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise Failed("ca_file", f"cannot load ca_file {config.ca_file}: {load_failure(exc)}",
                     outcome="error") from None


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _imap_text(value: Any) -> str:
    if isinstance(value, imaplib.IMAP4.error):
        value = value.args[0] if value.args else ""
    if isinstance(value, list):
        value = b" ".join(v for v in value if isinstance(v, bytes))
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return _one_line(value)


def _pop_text(exc: poplib.error_proto) -> str:
    return _one_line(exc.args[0] if exc.args else "")


def _pop_err(exc: poplib.error_proto) -> bool:
    """Whether *exc* is the server's ``-ERR`` answer (not poplib's own complaint)."""
    return bool(exc.args) and isinstance(exc.args[0], bytes) and exc.args[0].startswith(b"-ERR")


class MailProbe(ProbeKind[MailConfig]):
    kind = "mail"
    Config = MailConfig
    unit = "s"

    def target(self, config: MailConfig) -> str:
        pairs = config.pairs()
        first = f"{pairs[0].sender} -> {pairs[0].recipient}"
        via = (f" via smtp://{config.smtp_host}:{config.smtp_port_}, "
               f"{config.receive}://{config.receive_host or config.smtp_host}:{config.receive_port_}")
        if len(pairs) == 1:
            return first + via
        return f"{len(pairs)} mailbox pairs ({first}, …)" + via

    def host(self, config: MailConfig) -> str | None:
        return config.smtp_host

    async def check(self, config: MailConfig, ctx: CheckContext) -> Observation:
        pairs = config.pairs()
        # Each pair runs one blocking step at a time; its own limiter keeps an IMAP IDLE wait
        # from holding one of the process-wide default limiter's 40 threads.
        limiter = trio.CapacityLimiter(len(pairs))
        if not config.mailboxes:
            return await check_pair(config, pairs[0], ctx, single=True, limiter=limiter)
        results: list[Observation | None] = [None] * len(pairs)

        async def one(index: int, pair: Pair) -> None:
            results[index] = await check_pair(config, pair, ctx, single=False, limiter=limiter)

        async with trio.open_nursery() as nursery:
            for index, pair in enumerate(pairs):
                nursery.start_soon(one, index, pair)
        members = [r for r in results if r is not None]
        values = [m.value for m in members if m.value is not None]
        return Observation.ok(max(values) if values else None, unit="s", members=members)


@hookimpl
def probecore_add_probes(registry):  # type: ignore[no-untyped-def]
    registry.add(MailProbe)
