"""``probe = "ftp"``: can a common FTP client log in (contract 001 §2.3), and optionally list and
transfer a file?

Keys (a ``[[check]]`` table):

* ``url = "ftp://user@host:21/dir"`` (``ftps://`` is implicit FTPS, port 990 by default), or
  ``host`` with optional ``port`` (21) and ``user``; without a user the probe logs in as
  ``anonymous``. The URL path, or ``directory``, is the directory to list and upload into,
  relative to the login directory (``/`` or no path: the login directory itself). A password
  in the URL is refused: passwords live only in ``password = { env = "NAME" }`` or
  ``{ file = "path" }``.
* ``tls = "none" | "explicit" | "implicit"`` (default ``none``, or ``implicit`` for ``ftps://``);
  ``verify = true`` checks the server's certificate and name; ``ca_file`` trusts that CA bundle
  instead of the system's (give an absolute path: a relative one is taken from the working
  directory).
* ``list = true`` lists the directory over a passive data connection; ``transfer = true``
  uploads ``transfer_size`` bytes (default 1024) of random data under a unique name
  (``probecore-<hex>.tmp``), downloads them, compares SHA-256 checksums and deletes the file.
  ``passive = "auto"`` tries EPSV, then PASV if the server answers EPSV with 500–504 (not
  implemented; a 550 is a refusal and fails the check); ``"epsv"`` or ``"pasv"`` use only that
  command. Data connections go to the address the control connection reached
  (as FileZilla does by default); the address in a PASV reply is ignored, so a server behind
  NAT that announces a private address still works. Active mode (PORT) is not offered.
* ``connect_timeout`` and ``banner_timeout`` (durations, optional) end those steps early with
  their own failure codes; without them the check's ``timeout`` applies to the whole attempt.

Phases, in the order they happen: ``connect`` (name resolution and TCP), ``tls`` for implicit
FTPS (handshake), ``banner`` (the 220 greeting), ``tls`` for explicit FTPS (``AUTH TLS`` and
the handshake), ``login`` (USER/PASS up to 230), ``list`` (TYPE I, with TLS ``PBSZ 0`` /
``PROT P``, EPSV/PASV, LIST and its data), ``transfer`` (STOR, RETR, DELE, each with its own
data connection), ``quit``. The headline value is the ``login`` phase in seconds.

``details``: every reply code as ``<command>_reply`` (``banner_reply``, ``auth_reply``,
``user_reply``, ``pass_reply``, ``epsv_reply`` or ``pasv_reply``, ``list_reply``,
``stor_reply``, ``retr_reply``, ``dele_reply``, ``quit_reply`` …; a data command's is its
final reply), ``banner`` (the greeting's text, whitespace collapsed, at most 120 characters),
``address`` (the server address connected to), ``tls_version`` and ``tls_cipher``,
``passive`` (``EPSV`` or ``PASV``), ``list_entries``, ``transfer_bytes``. They are kept on
failures too, as evidence.

Failure codes and attribution (001 §2.3.2 excludes wrong credentials and a misconfigured
client, so those are the customer's):

* ``auth_rejected`` (customer): 530 to USER or PASS.
* ``resolve_failed`` (unknown): the host name does not resolve.
* ``connect_refused``, ``connect_timeout`` (the OS gave up, or ``connect_timeout`` passed),
  ``connect_failed`` (any other connect error): provider.
* ``service_unavailable`` (provider): a 421 reply at any step (too many connections, shutting
  down).
* ``banner_timeout`` (provider): no greeting within ``banner_timeout``.
* ``tls`` (provider, or ``unknown`` when the check set ``verify = false``: a client that
  skips verification is not the "common client" of the contract, so the probe does not blame
  the provider for what it could not judge): AUTH TLS, PBSZ or PROT refused, or the handshake
  failed (the message carries the certificate error).
* ``data_channel`` (provider): EPSV/PASV refused, the data connection could not be opened or
  secured, or a 425/426/522 reply.
* ``checksum_mismatch`` (provider): the downloaded file differs from the upload.
* ``unexpected_reply`` (provider): any other reply than the step expects (e.g. 550 to LIST,
  553 to STOR); the message names the command (never its argument) and the reply.
* ``closed`` (provider): the server closed the control connection mid-conversation.
* ``reply_too_large`` (provider): a reply longer than 64 KiB or 500 lines (``1xx`` replies
  before it included), e.g. a ``220-`` banner that never ends or a line without end;
  or a listing over 4 MiB. Reading stops there: one hostile server costs its own check
  a few milliseconds, not the bridge loop's time until the timeout. A download longer
  than the upload is a ``checksum_mismatch``, found without reading on.
* The scheduler's own ``timeout`` names the phase that was running (``during banner``).
* ``error`` outcomes (the probe could not judge): the password's secret is missing
  (``probe_error``), ``ca_file`` is unreadable (``ca_file``), a password with a line break
  (``bad_password``), the server asks for a password and none is configured (``no_password``).

How aioftp is used: aioftp (asyncio-only) runs on probecore's asyncio bridge
(:func:`probecore.run_asyncio`), **one bridge call per phase**, each inside
``ctx.phase(name)`` on the trio side. So phase times are trio-clock times, the scheduler's
timeout cancels whichever step is running (the bridge cancels the asyncio task and waits for its
cleanup), and a timeout record names the phase. One :class:`_Session` object, holding one
``aioftp.Client``, lives on the bridge loop across the calls. aioftp's high-level helpers
(``Client.connect``, ``login``, ``list``, ``upload``) each span several phases, so the probe uses
its lower-level pieces: ``BaseClient.connect`` (TCP only), ``client.command()`` for every reply,
``client.stream.start_tls()`` for explicit and implicit TLS (the TLS handshake is then its own
phase for implicit FTPS too), and aioftp's reply parsers and ``SSLSessionBoundContext``. Data
connections are opened by the probe itself: aioftp starts a data connection's TLS handshake
before sending the command, but vsftpd (like ftplib and curl expect) starts it only after the
``150`` reply, so with aioftp's helpers every FTPS listing stalls; the probe connects, sends the
command, waits for ``1xx``, then starts TLS resuming the control connection's session (vsftpd's
``require_ssl_reuse``). Replies are decoded as UTF-8 with replacement, so a GBK or Latin-1
banner never crashes the probe. ``PASS`` is sent with aioftp's log censoring, the password is
read through ``ctx.reveal`` (the scheduler scrubs it from the record), and no message the probe
writes contains a command's argument. The client's sockets are closed in ``finally``: a final
bridge call, shielded and bounded, aborts the control and any data connection and waits until
they are closed, whether the attempt succeeded, failed or was cancelled. A data connection
abandoned half-way (a timeout during a transfer) is closed with a TCP reset (SO_LINGER 0), so
the server drops what it buffered at once instead of reading it on, throttled, for minutes. The
partial file of a transfer cancelled half-way stays on the server (its name starts
``probecore-``).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import secrets
import socket
import ssl
import struct
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import aioftp
import msgspec
import trio

from probecore import (
    Attribution,
    CheckContext,
    Duration,
    Observation,
    ProbeConfig,
    ProbeKind,
    Secret,
    format_duration,
    hookimpl,
    run_asyncio,
)

from ._client import load_failure, tls_context

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
TlsMode = Literal["none", "explicit", "implicit"]
CLOSE_GRACE = 2.0
"""Seconds the final, shielded close of the client's sockets may take (it is near-instant)."""
BANNER_LIMIT = 120
ENCODING = "utf-8"
REPLY_MAX_BYTES = 64 * 1024
"""At most this many bytes in one reply (all its lines, and any ``1xx`` replies before it)."""
REPLY_MAX_LINES = 500
"""At most this many lines in one reply: a banner or FEAT list is tens of lines, not thousands."""
LIST_MAX_BYTES = 4 * 1024 * 1024
"""At most this much listing data (tens of thousands of entries) is read."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class FtpConfig(ProbeConfig):
    url: str | None = None
    host: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    port: Port | None = None
    user: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    password: Secret | None = None
    tls: TlsMode | None = None
    verify: bool = True
    ca_file: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    directory: str | None = None
    list: bool = False
    transfer: bool = False
    transfer_size: Annotated[int, msgspec.Meta(ge=1, le=64 * 1024 * 1024)] = 1024
    passive: Literal["auto", "epsv", "pasv"] = "auto"
    connect_timeout: Duration | None = None
    banner_timeout: Duration | None = None

    def __post_init__(self) -> None:
        plan(self)  # raises ValueError with a message naming the key


@dataclass(frozen=True)
class Plan:
    """What one attempt does, derived from the config (URL or host/port/user keys)."""

    scheme: str
    host: str
    port: int
    user: str
    directory: str | None
    tls: str
    verify: bool
    ca_file: str | None
    list: bool
    transfer: bool
    transfer_size: int
    passive: tuple[str, ...]

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{self.user}@{host}:{self.port}/{self.directory or ''}"


def plan(config: FtpConfig) -> Plan:
    """The attempt's plan; ``ValueError`` (naming the key) for contradictory keys."""
    scheme, user, directory, tls = "ftp", config.user, config.directory, config.tls
    if config.url is not None:
        if config.host is not None or config.port is not None:
            raise ValueError('key "url": give either url, or host and port, not both')
        try:
            parts = urlsplit(config.url)
            url_port = parts.port
        except ValueError:
            raise ValueError('key "url": expected a URL like "ftp://user@host:21/dir"') from None
        if parts.scheme not in ("ftp", "ftps") or not parts.hostname:
            raise ValueError('key "url": expected a URL like "ftp://user@host:21/dir" '
                             '(or ftps:// for implicit FTPS)')
        if parts.password is not None:
            # The password itself must not appear in this message.
            raise ValueError('key "url": the URL holds a password; passwords never live in '
                             'profiles: use password = { env = "NAME" } or { file = "path" }')
        if parts.query or parts.fragment:
            raise ValueError('key "url": an FTP URL has no query or fragment')
        scheme, host = parts.scheme, parts.hostname
        if parts.username:
            if user is not None:
                raise ValueError('key "user": the url already names the user')
            user = unquote(parts.username)
        path = unquote(parts.path).strip("/")
        if path:
            if directory is not None:
                raise ValueError('key "directory": the url already names the directory')
            directory = path
        if scheme == "ftps":
            if tls not in (None, "implicit"):
                raise ValueError(f'key "tls": an ftps:// URL is implicit FTPS, not "{tls}"')
            tls = "implicit"
        port = url_port
    else:
        if config.host is None:
            raise ValueError('key "url": required (or give host)')
        host, port = config.host, config.port
    tls = tls or "none"
    if port is None:
        port = 990 if tls == "implicit" else 21
    user = user or "anonymous"
    for key, value in (("host", host), ("user", user), ("directory", directory)):
        if value is not None and _CONTROL.search(value):
            raise ValueError(f'key "{key}": contains a control character')
    if config.ca_file is not None:
        if tls == "none":
            raise ValueError('key "ca_file": only used with tls = "explicit" or "implicit"')
        if not config.verify:
            raise ValueError('key "ca_file": not used with verify = false')
    if directory == "":
        directory = None
    passive = {"auto": ("EPSV", "PASV"), "epsv": ("EPSV",), "pasv": ("PASV",)}[config.passive]
    return Plan(scheme, host, port, user, directory, tls, config.verify, config.ca_file,
                config.list, config.transfer, config.transfer_size, passive)


class FtpProbe(ProbeKind[FtpConfig]):
    kind = "ftp"
    Config = FtpConfig
    unit = "s"

    def target(self, config: FtpConfig) -> str:
        return plan(config).target

    def host(self, config: FtpConfig) -> str:
        return plan(config).host

    async def check(self, config: FtpConfig, ctx: CheckContext) -> Observation:
        steps = plan(config)
        password = ctx.reveal(config.password) if config.password is not None else None
        if password is not None and ("\r" in password or "\n" in password):
            return Observation.error("bad_password", "the password contains a line break, "
                                     "which FTP cannot send")
        session = _Session(steps, password)
        try:
            await self._converse(steps, session, config, ctx)
        except Failed as failed:
            if failed.outcome == "error":
                return Observation.error(failed.code, failed.message, details=dict(session.details))
            return Observation.fail(failed.code, failed.message, attribution=failed.attribution,
                                    details=dict(session.details))
        finally:
            # Close the client's sockets whatever happened, cancellation included.
            with trio.move_on_after(CLOSE_GRACE) as scope:
                scope.shield = True
                await run_asyncio(session.close)
        return Observation.ok(ctx.phases["login"], details=dict(session.details))

    async def _converse(self, steps: Plan, session: _Session, config: FtpConfig,
                        ctx: CheckContext) -> None:
        await _step(ctx, session, "connect", config.connect_timeout, "connect_timeout",
                    f"no TCP connection to {steps.host} port {steps.port}")
        if steps.tls == "implicit":
            await _step(ctx, session, "tls")
        await _step(ctx, session, "banner", config.banner_timeout, "banner_timeout",
                    "no greeting from the server")
        if steps.tls == "explicit":
            await _step(ctx, session, "tls")
        await _step(ctx, session, "login")
        if steps.list:
            await _step(ctx, session, "list")
        if steps.transfer:
            await _step(ctx, session, "transfer")
        await _step(ctx, session, "quit")


async def _step(ctx: CheckContext, session: _Session, phase: str, limit: float | None = None,
                code: str = "", what: str = "") -> None:
    """Run one phase on the bridge, timed by ``ctx.phase``; an optional own time limit."""
    with ctx.phase(phase):
        if limit is None:
            await run_asyncio(session.run, phase)
            return
        with trio.move_on_after(limit) as scope:
            await run_asyncio(session.run, phase)
    if scope.cancelled_caught:
        raise Failed(code, f"{what} within {format_duration(limit)}")


class Failed(Exception):
    """A classified failure: becomes the attempt's ``failure`` (raised on the bridge loop)."""

    def __init__(self, code: str, message: str, attribution: Attribution = "provider",
                 outcome: str = "fail"):
        super().__init__(message)
        self.code = code
        self.message = message
        self.attribution: Attribution = attribution
        self.outcome = outcome


class Reply(Exception):
    """A reply the step did not expect; ``verb`` is the command without its argument."""

    def __init__(self, verb: str, code: str, text: str):
        super().__init__(f"{verb}: {code} {text}".strip())
        self.verb = verb
        self.code = code
        self.text = text


class ReplyTooLarge(Exception):
    """The server's reply went over :data:`REPLY_MAX_BYTES` or :data:`REPLY_MAX_LINES`."""


class _Client(aioftp.Client):
    """aioftp's client with replies decoded leniently and bounded in bytes and lines.

    Without the bounds, a server that never ends its ``220-`` banner keeps the bridge loop busy
    parsing lines (and growing a list of them) until the timeout, slowing every other check on
    the loop; and a line longer than asyncio's 64 KiB stream limit raised a bare ``ValueError``.
    """

    reply_bytes = 0
    reply_lines = 0

    async def command(self, *args: Any, **kw: Any) -> Any:
        self.reply_bytes = self.reply_lines = 0  # one budget per command, 1xx replies included
        return await super().command(*args, **kw)

    async def parse_line(self) -> tuple[aioftp.Code, str]:
        try:
            line = await self.stream.readline()
        except ValueError:  # asyncio's LimitOverrunError: no line end within 64 KiB
            raise ReplyTooLarge(f"a reply line longer than {REPLY_MAX_BYTES // 1024} KiB") from None
        if not line:
            self.stream.close()
            raise ConnectionResetError("connection closed by the server")
        self.reply_bytes += len(line)
        self.reply_lines += 1
        if self.reply_bytes > REPLY_MAX_BYTES:
            raise ReplyTooLarge(f"a reply longer than {REPLY_MAX_BYTES // 1024} KiB")
        if self.reply_lines > REPLY_MAX_LINES:
            raise ReplyTooLarge(f"a reply of more than {REPLY_MAX_LINES} lines")
        # aioftp decodes strictly; a server greeting in GBK or Latin-1 must not crash the probe.
        text = line.decode(self.encoding, errors="replace").rstrip()
        return aioftp.Code(text[:3]), text[3:]


@dataclass
class _Session:
    """One FTP conversation. Every coroutine method runs on the asyncio bridge loop."""

    plan: Plan
    password: str | None
    details: dict[str, Any] = field(default_factory=dict)
    client: _Client | None = None
    tls_context: ssl.SSLContext | None = None
    protected: bool = False
    data_ready: bool = False
    data_writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def run(self, phase: str) -> None:
        try:
            await getattr(self, f"_{phase}")()
        except (Failed, asyncio.CancelledError):
            raise
        except Reply as reply:
            raise self._classify_reply(phase, reply) from None
        except ReplyTooLarge as exc:
            raise Failed("reply_too_large", f"the server sent {exc} during {phase}") from None
        except Exception as exc:
            failed = self._classify(phase, exc)
            if failed is None:
                raise
            raise failed from None

    # ---- phases ---------------------------------------------------------------------------

    async def _connect(self) -> None:
        self.client = _Client(encoding=ENCODING)
        # TCP only: aioftp's Client.connect would also read the greeting (the banner phase).
        await aioftp.BaseClient.connect(self.client, self.plan.host, self.plan.port)
        peer = self.client.stream.writer.get_extra_info("peername")
        if peer:
            self.details["address"] = str(peer[0])

    async def _tls(self) -> None:
        assert self.client is not None
        context = self._context()
        if self.plan.tls == "explicit":
            await self._ask("AUTH TLS", "AUTH", "234")
        await self.client.stream.start_tls(sslcontext=context, server_hostname=self.plan.host)
        self.tls_context = context
        ssl_object = self.client.stream.writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.details["tls_version"] = ssl_object.version()
            cipher = ssl_object.cipher()
            if cipher:
                self.details["tls_cipher"] = cipher[0]

    async def _banner(self) -> None:
        assert self.client is not None
        try:
            code, info = await self.client.command(None, "220", "120")
        except aioftp.StatusCodeError as exc:
            self.details["banner"] = _trim(exc.info)
            raise _reply("banner", exc, self.details) from None
        self.details["banner_reply"] = int(code)
        self.details["banner"] = _trim(info)

    async def _login(self) -> None:
        code, _ = await self._ask(f"USER {self.plan.user}", "USER", ("230", "331"))
        if code == "331":
            if self.password is None:
                raise Failed("no_password", "the server asks for a password and the check has "
                             "none (set password = { env = \"NAME\" })", outcome="error")
            await self._ask("PASS " + self.password, "PASS", ("230", "202"), censor_after=5)

    async def _list(self) -> None:
        await self._prepare_data()
        command = f"LIST {self.plan.directory}" if self.plan.directory else "LIST"
        data = await self._receive(command, "LIST", LIST_MAX_BYTES, "reply_too_large")
        self.details["list_entries"] = sum(1 for line in data.splitlines() if line.strip())

    async def _transfer(self) -> None:
        await self._prepare_data()
        name = f"probecore-{secrets.token_hex(8)}.tmp"
        path = f"{self.plan.directory}/{name}" if self.plan.directory else name
        payload = os.urandom(self.plan.transfer_size)
        await self._send(f"STOR {path}", "STOR", payload)
        try:
            # More than was uploaded is a mismatch already: no need to read on.
            received = await self._receive(f"RETR {path}", "RETR", len(payload), "checksum_mismatch")
        except Reply:
            await self._delete_quietly(path)
            raise
        await self._ask(f"DELE {path}", "DELE", "2xx")
        self.details["transfer_bytes"] = len(payload)
        sent_sum, got_sum = hashlib.sha256(payload).hexdigest(), hashlib.sha256(received).hexdigest()
        if sent_sum != got_sum:
            raise Failed("checksum_mismatch",
                         f"downloaded {len(received)} bytes (sha256 {got_sum[:16]}…), uploaded "
                         f"{len(payload)} bytes (sha256 {sent_sum[:16]}…)")

    async def _quit(self) -> None:
        try:
            await self._ask("QUIT", "QUIT", "2xx")
        except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError):
            pass  # closing without a 221 is the server's way of saying goodbye too

    async def close(self) -> None:
        """Abort the control and every data connection and wait until their sockets are closed.

        Abort rather than aioftp's ``client.close()``: after a cancellation or failure there is
        nothing left to say, and a TLS close would wait for the server's close_notify. A data
        connection still open here was left half-way, so it is reset.
        """
        data = list(self.data_writers)
        self.data_writers.clear()
        control = []
        if self.client is not None:
            try:
                stream = self.client.stream
            except ConnectionError:  # never connected (aioftp ≥ 0.26; before: stream is None)
                stream = None
            if stream is not None:
                control.append(stream.writer)
        for writer in data:
            _reset(writer)
        # A writer whose TLS handshake was cut short no longer owns its transport (asyncio's
        # TLS protocol does) and never hears of the close: waiting for it took the whole
        # CLOSE_GRACE. abort() closes every socket on the loop's next turn all the same.
        owned = [w for w in data + control if _owns_transport(w)]
        for writer in data + control:
            writer.transport.abort()
        await asyncio.sleep(0)
        for writer in owned:
            try:
                await writer.wait_closed()
            except Exception:  # noqa: BLE001 — the connection's own error, already judged
                pass

    # ---- helpers ----------------------------------------------------------------------------

    async def _ask(self, command: str | None, verb: str, expected: str | tuple[str, ...],
                   wait: str | tuple[str, ...] = (), censor_after: int | None = None,
                   ) -> tuple[str, list[str]]:
        """Send *command* (None: only read), read the reply; :class:`Reply` if unexpected."""
        assert self.client is not None
        try:
            code, info = await self.client.command(command, expected, wait, censor_after)
        except aioftp.StatusCodeError as exc:
            raise _reply(verb, exc, self.details) from None
        self.details[f"{verb.lower()}_reply"] = int(code) if code.isdigit() else code
        return str(code), info

    def _context(self) -> ssl.SSLContext:
        try:
            return tls_context(self.plan.verify, self.plan.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise Failed("ca_file", f"cannot load ca_file {self.plan.ca_file}: {load_failure(exc)}",
                         outcome="error") from None

    async def _prepare_data(self) -> None:
        """Binary type, and private data connections under TLS (once per session)."""
        if self.data_ready:
            return
        await self._ask("TYPE I", "TYPE", "200")
        if self.plan.tls != "none":
            try:
                await self._ask("PBSZ 0", "PBSZ", "200")
                await self._ask("PROT P", "PROT", "200")
            except Reply as reply:
                if reply.code == "421":
                    raise
                raise self._tls_failed(f"data protection refused: {reply}") from None
            self.protected = True
        self.data_ready = True

    async def _open_data(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """EPSV/PASV, then a TCP connection to the announced port (not yet TLS)."""
        assert self.client is not None
        port: int | None = None
        for index, verb in enumerate(self.plan.passive):
            try:
                _, info = await self._ask(verb, verb, "229" if verb == "EPSV" else "227")
            except Reply as reply:
                last = index == len(self.plan.passive) - 1
                if reply.code.startswith("50") and not last:
                    continue  # EPSV not implemented: fall back to PASV, as clients do
                if reply.code == "421":
                    raise
                raise Failed("data_channel", f"passive mode refused: {reply}") from None
            try:
                if verb == "EPSV":
                    _, port = self.client.parse_epsv_response(info[-1])
                else:
                    _, port = self.client.parse_pasv_response(info[-1])
            except (ValueError, IndexError, TypeError):
                raise Failed("data_channel", f"{verb}: cannot read a port in "
                             f"{_trim(info)!r}") from None
            self.details["passive"] = verb
            break
        assert port is not None
        address = self.details.get("address") or self.plan.host
        try:
            reader, writer = await asyncio.open_connection(address, port)
        except OSError as exc:
            raise Failed("data_channel", f"data connection to {address} port {port}: "
                         f"{_os_reason(exc)}") from None
        self.data_writers.add(writer)
        return reader, writer

    async def _secure(self, writer: asyncio.StreamWriter) -> None:
        """TLS on a data connection, resuming the control connection's session."""
        if not self.protected:
            return
        assert self.client is not None and self.tls_context is not None
        control = self.client.stream.writer.get_extra_info("ssl_object")
        context: ssl.SSLContext = self.tls_context
        if control is not None and control.session is not None:
            context = aioftp.SSLSessionBoundContext(ssl.PROTOCOL_TLS_CLIENT, context=context,
                                                    session=control.session)
        try:
            await writer.start_tls(context, server_hostname=self.plan.host)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            raise Failed("data_channel", f"TLS on the data connection: {_tls_reason(exc)}") from None

    async def _receive(self, command: str, verb: str, limit: int, overflow: str) -> bytes:
        """The data of *command*. At most *limit* bytes are read: past that, the connection is
        reset and the attempt fails with code *overflow*."""
        reader, writer = await self._open_data()
        complete = False
        try:
            await self._ask(command, verb, "1xx")
            await self._secure(writer)
            try:
                data = await _read_at_most(reader, limit + 1)
            except (OSError, ssl.SSLError) as exc:
                raise Failed("data_channel", f"{verb} data: {_tls_reason(exc)}") from None
            if len(data) > limit:
                raise Failed(overflow, f"{verb} data: more than {limit} bytes")
            complete = True
        finally:
            self._drop(writer, complete)
        await self._ask(None, verb, "2xx", "1xx")
        return data

    async def _send(self, command: str, verb: str, payload: bytes) -> None:
        reader, writer = await self._open_data()
        complete = False
        try:
            await self._ask(command, verb, "1xx")
            await self._secure(writer)
            try:
                writer.write(payload)
                await writer.drain()
                writer.close()  # end of file for the server (with TLS: after close_notify)
                await writer.wait_closed()
            except (OSError, ssl.SSLError) as exc:
                raise Failed("data_channel", f"{verb} data: {_tls_reason(exc)}") from None
            complete = True
        finally:
            self._drop(writer, complete)
        await self._ask(None, verb, "2xx", "1xx")

    def _drop(self, writer: asyncio.StreamWriter, complete: bool) -> None:
        """Close a data connection; one left half-way (failure, cancellation) is reset."""
        self.data_writers.discard(writer)
        if not complete:
            _reset(writer)
        writer.transport.abort()  # no-op once closed

    async def _delete_quietly(self, path: str) -> None:
        try:
            await self._ask(f"DELE {path}", "DELE", "2xx")
        except (Reply, OSError):
            pass

    def _tls_failed(self, message: str) -> Failed:
        return Failed("tls", message, "provider" if self.plan.verify else "unknown")

    def _classify_reply(self, phase: str, reply: Reply) -> Failed:
        if reply.code == "421":
            return Failed("service_unavailable", str(reply))
        if phase == "login" and reply.code == "530":
            return Failed("auth_rejected", str(reply), "customer")
        if phase == "tls":
            return self._tls_failed(str(reply))
        if reply.code in ("425", "426", "522"):
            return Failed("data_channel", str(reply))
        return Failed("unexpected_reply", str(reply))

    def _classify(self, phase: str, exc: Exception) -> Failed | None:
        where = f"{self.plan.host} port {self.plan.port}"
        if phase == "connect":
            if isinstance(exc, socket.gaierror):
                return Failed("resolve_failed", f"cannot resolve {self.plan.host}: "
                              f"{exc.strerror or exc}", "unknown")
            if isinstance(exc, ConnectionRefusedError) or _errno(exc) == errno.ECONNREFUSED:
                return Failed("connect_refused", f"connect to {where}: connection refused")
            if isinstance(exc, TimeoutError) or _errno(exc) == errno.ETIMEDOUT:
                return Failed("connect_timeout", f"connect to {where}: timed out")
            if isinstance(exc, OSError):
                return Failed("connect_failed", f"connect to {where}: {_os_reason(exc)}")
        if phase == "tls" and isinstance(exc, (OSError, EOFError, asyncio.IncompleteReadError)):
            return self._tls_failed(f"TLS handshake: {_tls_reason(exc)}")  # SSLError is an OSError
        if isinstance(exc, (ConnectionError, asyncio.IncompleteReadError, EOFError)):
            return Failed("closed", f"the server closed the connection during {phase}")
        if isinstance(exc, OSError):
            return Failed("closed", f"connection lost during {phase}: {_os_reason(exc)}")
        return None


async def _read_at_most(reader: asyncio.StreamReader, count: int) -> bytes:
    """Read until end of file or *count* bytes, whichever comes first."""
    chunks: list[bytes] = []
    size = 0
    while size < count:
        chunk = await reader.read(min(65536, count - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _owns_transport(writer: asyncio.StreamWriter) -> bool:
    """Whether the writer's stream still gets its transport's events (so can wait for its close)."""
    try:
        return isinstance(writer.transport.get_protocol(), asyncio.StreamReaderProtocol)
    except AttributeError:  # a TLS transport already closed has no protocol left
        return False


def _reset(writer: asyncio.StreamWriter) -> None:
    """Make the coming close a TCP reset (SO_LINGER 0), not a FIN.

    A server that is still receiving an abandoned upload then drops what it has buffered at once,
    instead of reading (and, if it throttles, waiting on) megabytes nobody will look at.
    """
    sock = writer.get_extra_info("socket")
    if sock is None or writer.transport.is_closing():
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


def _reply(verb: str, exc: aioftp.StatusCodeError, details: dict[str, Any] | None = None) -> Reply:
    code = str(exc.received_codes[-1]) if exc.received_codes else "???"
    if details is not None:
        details[f"{verb.lower()}_reply"] = int(code) if code.isdigit() else code
    return Reply(verb, code, _trim(exc.info))


def _trim(info: Any) -> str:
    """Reply text as one line: continuation dashes dropped, whitespace collapsed, capped."""
    lines = info if isinstance(info, list) else [str(info)]
    text = " ".join(str(line).lstrip("-").strip() for line in lines)
    text = " ".join(text.split())
    return text if len(text) <= BANNER_LIMIT else text[: BANNER_LIMIT - 1] + "…"


def _errno(exc: BaseException) -> int | None:
    return exc.errno if isinstance(exc, OSError) else None


def _os_reason(exc: OSError) -> str:
    if exc.errno:
        return os.strerror(exc.errno).lower()
    # asyncio reports every address it tried in one OSError("Multiple exceptions: …").
    return str(exc) or type(exc).__name__


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed during the handshake"
    if isinstance(exc, OSError):
        return _os_reason(exc)
    return str(exc) or type(exc).__name__


@hookimpl
def probecore_add_probes(registry):  # type: ignore[no-untyped-def]
    registry.add(FtpProbe)
