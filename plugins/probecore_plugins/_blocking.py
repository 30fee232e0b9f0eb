"""Blocking network clients (smtplib, imaplib, poplib) run in worker threads that trio can abort.

Shared by the mail probe and the email channel. trio cannot cancel a thread; instead every
socket the clients open is registered, and on cancellation the sockets are shut down so the
blocked call fails at once, the thread is waited for (bounded), and the sockets are closed.

Every reply is bounded in bytes and lines (:class:`Budget`). The stdlib clients bound one line
(smtplib 8 KiB, poplib 2 KiB, imaplib 1 MB) but not how many lines a reply has (an endless
``250-`` EHLO reply, an endless POP3 ``LIST``, endless untagged IMAP data) nor the size of an
IMAP literal (``{N}`` is read whole). Rather than replace three well-kept clients, the file
object each reads its replies from is wrapped (:class:`BoundedReads` intercepts their
``self.file = sock.makefile("rb")``): every byte and line is charged to the budget, which is
renewed when the client sends a command, so the bound is per reply whatever the protocol.
Over the bound the reader raises :class:`ReplyTooLarge` (an ``OSError``, so the client
unwinds as from a lost connection) and :meth:`Worker.run` reports the step as
:class:`ReplyTooLarge` whatever the client turned it into. Bounding bytes is also what keeps a
worker thread from holding the GIL for seconds while it parses megabytes (which starved trio).
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")
CLOSE_GRACE = 2.0
"""Seconds a cancelled step's thread is waited for after its sockets are shut down."""
MAX_REPLY_BYTES = 4 * 1024 * 1024
"""Bytes one reply (everything read between two commands) may have: a probe message with its
attachment or the headers of a few thousand messages fit; an endless stream does not."""
MAX_REPLY_LINES = 20_000
"""Lines one reply may have (a POP3 ``LIST`` of a 20,000-message maildrop)."""


class ReplyTooLarge(OSError):
    """A server's reply went over :class:`Budget`'s bound; the message says where and how."""


class Budget:
    """What the replies of one worker's clients may still read (renewed by :meth:`renew` when
    a command is sent). Used from the worker thread only."""

    def __init__(self, max_bytes: int = MAX_REPLY_BYTES, max_lines: int = MAX_REPLY_LINES):
        self.max_bytes, self.max_lines = max_bytes, max_lines
        self.bytes = self.lines = 0
        self.exceeded: str | None = None

    def renew(self) -> None:
        self.bytes = self.lines = 0

    def room(self) -> int:
        return self.max_bytes - self.bytes

    def charge(self, where: str, size: int, lines: int = 0) -> None:
        self.bytes += size
        self.lines += lines
        if self.bytes > self.max_bytes:
            self.overflow(where, f"over {self.max_bytes // 1024} KiB")
        if self.lines > self.max_lines:
            self.overflow(where, f"over {self.max_lines} lines")

    def overflow(self, where: str, how: str) -> None:
        self.exceeded = f"{where}: reply too large ({how}); stopped reading"
        raise ReplyTooLarge(self.exceeded)


class BoundedFile:
    """A client's ``makefile("rb")`` reader whose reads are charged to a :class:`Budget`.

    Once a reply went over the bound the reader stays broken: the rest of that reply is still
    coming, so nothing read afterwards (a ``LOGOUT`` on the way out) could be trusted or
    would be worth reading."""

    def __init__(self, raw: Any, budget: Budget, where: str):
        self._raw, self._budget, self._where = raw, budget, where
        self._broken: str | None = None

    def readline(self, limit: int = -1) -> bytes:
        budget = self._check()
        try:
            room = budget.room() + 1
            line = self._raw.readline(room if limit is None or limit < 0 else min(limit, room))
            if limit is not None and 0 < limit <= len(line) and not line.endswith(b"\n"):
                # The client asks for one byte over its own line limit and would refuse the line.
                budget.overflow(self._where, f"a line over {limit - 1} bytes")
            budget.charge(self._where, len(line), 1)
        except ReplyTooLarge as exc:
            self._broken = str(exc)
            raise
        return line

    def read(self, size: int = -1) -> bytes:
        budget = self._check()
        try:
            if size is None or size < 0 or size > budget.room():
                # An IMAP literal announces its size: refuse it before reading (or allocating) it.
                budget.overflow(self._where, f"over {budget.max_bytes // 1024} KiB")
            data = self._raw.read(size)
            budget.charge(self._where, len(data))
        except ReplyTooLarge as exc:
            self._broken = str(exc)
            raise
        return data

    def _check(self) -> Budget:
        if self._broken:
            raise ReplyTooLarge(self._broken)
        return self._budget

    def close(self) -> None:
        self._raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class BoundedReads:
    """Mixin for a stdlib client class: the file it reads replies from is a :class:`BoundedFile`,
    and sending a command renews the budget. The client sets ``_pc_sockets`` (whose budget it
    charges) and ``_pc_where`` (``"SMTP host port 25"``, for the message) before connecting."""

    _pc_sockets: Sockets
    _pc_where: str = "server"

    @property
    def file(self) -> Any:
        return self.__dict__.get("_pc_file")

    @file.setter
    def file(self, raw: Any) -> None:
        if raw is not None and not isinstance(raw, BoundedFile):
            raw = BoundedFile(raw, self._pc_sockets.budget, self._pc_where)
        self.__dict__["_pc_file"] = raw

    def _pc_sent(self) -> None:
        self._pc_sockets.budget.renew()


class Sockets:
    """Every socket the blocking clients of one pair open, so that trio can abort them."""

    def __init__(self, io_timeout: float):
        self.io_timeout = io_timeout
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.aborted = False
        self.budget = Budget()

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.append(sock)
            aborted = self.aborted
        if aborted:
            shutdown(sock)

    def connect(self, host: str, port: int, context: ssl.SSLContext | None) -> socket.socket:
        """Like ``socket.create_connection`` (+ TLS), but every socket is registered first."""
        error: OSError | None = None
        for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            self.register(sock)
            sock.settimeout(self.io_timeout)
            try:
                sock.connect(address)
            except OSError as exc:
                error = exc
                sock.close()
                continue
            if context is not None:
                sock = self.wrap(sock, context, host)
            return sock
        raise error or OSError(f"cannot resolve {host}")

    def wrap(self, sock: socket.socket, context: ssl.SSLContext, host: str | None) -> ssl.SSLSocket:
        """TLS over *sock*, registered before the handshake. ``wrap_socket`` detaches the plain
        socket (its registration then reaches nothing), so a handshake that stalls could not be
        aborted if the TLS socket were registered only once the handshake is done."""
        tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        self.register(tls)
        tls.do_handshake()
        return tls

    def starttls(self, context: ssl.SSLContext | None) -> Any:
        """What to pass the clients' ``starttls``/``stls`` as their context: *context*, whose
        ``wrap_socket`` goes through :meth:`wrap` (the clients call nothing else on it)."""
        return None if context is None else _RegisteringContext(self, context)

    def abort(self) -> None:
        """From any thread: wake every blocked call on these sockets (they then fail)."""
        with self._lock:
            self.aborted = True
            sockets = list(self._open)
        for sock in sockets:
            shutdown(sock)

    def close(self) -> None:
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            # Not sock.close(): while a client's makefile() reader holds the socket, close()
            # only marks it closed and the connection stays open until garbage collection.
            try:
                if sock.fileno() != -1:
                    os.close(sock.detach())
            except OSError:
                pass


class _RegisteringContext:
    def __init__(self, sockets: Sockets, context: ssl.SSLContext):
        self._sockets, self._context = sockets, context

    def wrap_socket(self, sock: socket.socket, server_hostname: str | None = None, **_: Any) -> ssl.SSLSocket:
        return self._sockets.wrap(sock, self._context, server_hostname)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def shutdown(sock: socket.socket) -> None:
    try:
        if sock.fileno() != -1:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # not SSLSocket's: no TLS state touched
    except OSError:
        pass


class Worker:
    """Runs blocking steps in threads; on cancellation aborts the sockets and waits for them."""

    def __init__(self, io_timeout: float, limiter: trio.CapacityLimiter):
        self.sockets = Sockets(io_timeout)
        self.limiter = limiter
        self._running: list[trio.Event] = []

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        budget = self.sockets.budget

        def work() -> T:
            budget.exceeded = None
            try:
                return fn(*args)
            except BaseException:
                # Whatever the client made of the overflow (SMTPServerDisconnected, a Failed
                # "connection lost" …), the step's verdict is the reply that was too large.
                if budget.exceeded:
                    raise ReplyTooLarge(budget.exceeded) from None
                raise
            finally:
                try:
                    token.run_sync_soon(done.set)
                except trio.RunFinishedError:
                    pass

        self._running.append(done)
        try:
            return await trio.to_thread.run_sync(work, abandon_on_cancel=True,
                                                 limiter=self.limiter)
        finally:
            if done.is_set():
                self._running.remove(done)

    @property
    def busy(self) -> bool:
        """Whether a step was abandoned (cancelled) and its thread has not returned yet."""
        return any(not event.is_set() for event in self._running)

    async def close(self) -> None:
        """Abort every socket, wait (shielded, bounded) for abandoned threads, close sockets."""
        with trio.move_on_after(CLOSE_GRACE) as scope:
            scope.shield = True
            if any(not e.is_set() for e in self._running):
                self.sockets.abort()
            for event in self._running:
                await event.wait()
        self._running.clear()
        self.sockets.close()


class SMTPClient(BoundedReads, smtplib.SMTP):
    """smtplib's client whose connections go through :class:`Sockets` (so trio can abort them)
    and whose replies are bounded (:class:`BoundedReads`)."""

    AUTH_PREFERENCE = ("PLAIN", "LOGIN", "CRAM-MD5")
    """SASL mechanisms in the order :meth:`login` picks them from those the server offers.
    PLAIN first: one round trip, and what every server behind TLS offers; CRAM-MD5 last, as it
    needs the password stored in clear on the server and fails where it is hashed."""

    def __init__(self, sockets: Sockets, context: ssl.SSLContext | None, **kw: Any):
        self._pc_sockets = sockets
        self._pc_context = context
        super().__init__(**kw)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:  # type: ignore[override]
        self._pc_where = f"SMTP {host} port {port}"
        return self._pc_sockets.connect(host, port, self._pc_context)

    def send(self, s: Any) -> None:
        self._pc_sent()
        super().send(s)

    def login(self, user: str, password: str, *, initial_response_ok: bool = True) -> tuple[int, bytes]:
        """AUTH once, with the best mechanism the server offers (:attr:`AUTH_PREFERENCE`).

        smtplib's own ``login`` tries every mechanism in turn, so a wrong password is refused
        two or three times per attempt and counts that often towards the account's lockout.
        Raises ``SMTPNotSupportedError`` without AUTH, ``SMTPException`` when no offered
        mechanism is supported, ``SMTPAuthenticationError`` when refused.
        """
        self.ehlo_or_helo_if_needed()
        if not self.has_extn("auth"):
            raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
        offered = self.esmtp_features["auth"].upper().split()
        mechanism = next((m for m in self.AUTH_PREFERENCE if m in offered), None)
        if mechanism is None:
            raise smtplib.SMTPException("No suitable authentication method found.")
        self.user, self.password = user, password
        method = getattr(self, "auth_" + mechanism.lower().replace("-", "_"))
        code, resp = self.auth(mechanism, method, initial_response_ok=initial_response_ok)
        if code not in (235, 503):  # 503: already authenticated
            raise smtplib.SMTPAuthenticationError(code, resp)
        return code, resp


def reason(exc: BaseException) -> str:
    """A network or TLS error in a few words, for a failure message."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def one_line(text: Any) -> str:
    """A server's text (``str`` or ``bytes``) on one line. Not shortened: the caller redacts the
    secrets first and then shortens (:func:`clip`), so a cut never leaves part of a secret."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return " ".join(str(text).split())


def smtp_reply(code: int, text: Any) -> str:
    """``"550 text"``; smtplib's code -1 (the line was no reply at all) as such."""
    return "not an SMTP reply" if code == -1 else f"{code} {one_line(text)}".rstrip()


def clip(text: str, limit: int = 300) -> str:
    """*text* shortened to *limit* characters (with an ellipsis), after redaction."""
    return text if len(text) <= limit else text[:limit - 1] + "…"
