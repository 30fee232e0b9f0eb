"""Blocking network clients (smtplib, imaplib, poplib) run in worker threads that trio can abort.

Shared by the mail probe and the email channel. trio cannot cancel a thread; instead every
socket the clients open is registered, and on cancellation the sockets are shut down so the
blocked call fails at once, the thread is waited for (bounded), and the sockets are closed.
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


class Sockets:
    """Every socket the blocking clients of one pair open, so that trio can abort them."""

    def __init__(self, io_timeout: float):
        self.io_timeout = io_timeout
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.aborted = False

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
                sock = context.wrap_socket(sock, server_hostname=host)
                self.register(sock)
            return sock
        raise error or OSError(f"cannot resolve {host}")

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

        def work() -> T:
            try:
                return fn(*args)
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


class SMTPClient(smtplib.SMTP):
    """smtplib's client whose connections go through :class:`Sockets` (so trio can abort them)."""

    def __init__(self, sockets: Sockets, context: ssl.SSLContext | None, **kw: Any):
        self._pc_sockets = sockets
        self._pc_context = context
        super().__init__(**kw)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:  # type: ignore[override]
        return self._pc_sockets.connect(host, port, self._pc_context)


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


def smtp_text(text: Any) -> str:
    """An SMTP reply's text on one line, at most 200 characters."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return " ".join(str(text).split())[:200]
