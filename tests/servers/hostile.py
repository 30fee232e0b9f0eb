"""A scripted hostile server on 127.0.0.1: it greets like a real service, then misbehaves.

Probes must hold under servers that never answer, never stop answering, answer a megabyte per
line, answer noise, stall a TLS handshake or hang up. This module plays such servers for the
tests (``tests/test_hostile_servers.py``) and for benchmarks (many at once, in another process).

**What a connection does** (TCP), in order:

1. ``tls`` (an :class:`ssl.SSLContext`, server side) given: the connection is TLS from the start
   (HTTPS, FTPS implicit, IMAPS …); the misbehaviour happens inside TLS.
2. ``greeting`` is sent (e.g. ``b"220 hostile ESMTP\\r\\n"``; empty: nothing).
3. For each entry of ``script``: the server reads one client line (up to ``\\n``), then sends the
   entry (e.g. ``script=(b"250 hello\\r\\n", b"234 go ahead\\r\\n")`` answers EHLO and AUTH TLS).
4. ``await_command`` true: it reads one more client line (an HTTP request line, ``LIST VAR``,
   ``RETR 1`` …) before misbehaving, so the misbehaviour is the *answer* to that command.
5. ``lead`` is sent once (e.g. ``b"HTTP/1.1 200 OK\\r\\n"``, ``b"+OK follows\\r\\n"``,
   ``b"BEGIN LIST VAR ups\\n"``): the protocol-shaped start of the reply.
6. The ``behaviour``:

   ``silence``            nothing more; the connection stays open until the client leaves.
   ``endless_line``       ``b"x"`` forever, never a newline (after ``lead``: ``220 xxxx…``).
   ``endless_multiline``  ``line`` forever (default ``b"250-hostile\\r\\n"``; HTTP headers:
                          ``b"X-Hostile: 1\\r\\n"``; IMAP: ``b"* OK hostile\\r\\n"``; a POP3 list
                          with no final ``.``: ``lead=b"+OK\\r\\n", line=b"1 100\\r\\n"``).
   ``megabyte_line``      ``b"x" * size`` (default 1 MiB + 1) then ``\\r\\n``, then silence.
   ``garbage``            random bytes forever (``\\n`` now and then, as noise has).
   ``tls_stall``          reads whatever the client sends (a ClientHello) and never answers:
                          TCP is up, the handshake never completes. With a ``script`` first it
                          is a STARTTLS / AUTH TLS that stalls.
   ``early_close``        closes the connection (after greeting/script/command/lead, so with
                          none of them: right after accepting).

Endless writes go out in chunks of ``chunk`` bytes with a ``pause`` between them and wait for
TCP backpressure, so a client that stops reading stops the server too, and a client that reads
as fast as it can gets at most ``chunk / pause`` bytes/s (default 16 MiB/s): a hostile server
never eats a core. A write to a client that left ends that connection quietly.

**UDP** (``transport="udp"``, DNS and SNMP): each datagram received is answered per behaviour:
``silence`` (none), ``garbage`` (one random datagram of ``size`` bytes, at most 65,507; its
first ``echo`` bytes copied from the request, e.g. ``echo=2`` keeps a DNS message id so the
noise is not simply discarded as a stray), ``flood`` (``flood`` such datagrams per request).

**Use** — in a trio test (pytest-trio)::

    server = await start_hostile(nursery, Hostile("endless_line", greeting=b"220 "))
    ... probe 127.0.0.1:server.port ...
    assert server.connections == 1

From a plain thread (or a benchmark process), a context manager running its own trio loop::

    with hostile_in_thread(Hostile("silence")) as server:
        ... server.port ...

From another process: ``python -m tests.servers.hostile BEHAVIOUR [--udp] [--greeting TEXT]
[--script REPLY]... [--await-command] [--lead TEXT] [--line TEXT] [--count N]`` starts N
servers and prints their ports, one a line, then serves until killed (SIGINT or SIGTERM).

:class:`HostileServer` counts ``connections`` (TCP accepts or UDP requests), ``active`` (TCP
connections still open: after a probe has given up it should be 0 — nothing leaked) and
``bytes_sent``: tests use them to see that the probe really reached the misbehaviour, stopped
reading and hung up.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import trio
import trio.lowlevel

HOST = "127.0.0.1"
MEGABYTE = 1024 * 1024
UDP_MAX = 65507

Behaviour = Literal["silence", "endless_line", "endless_multiline", "megabyte_line", "garbage",
                    "tls_stall", "early_close", "flood"]
TCP_BEHAVIOURS: tuple[Behaviour, ...] = ("silence", "endless_line", "endless_multiline",
                                         "megabyte_line", "garbage", "tls_stall", "early_close")
UDP_BEHAVIOURS: tuple[Behaviour, ...] = ("silence", "garbage", "flood")
CLIENT_LINE_LIMIT = 65536  # what the server reads of one client line before giving up on it


@dataclass(frozen=True)
class Hostile:
    """How a hostile server behaves; see the module docstring for the order of events."""

    behaviour: Behaviour
    greeting: bytes = b""
    script: tuple[bytes, ...] = ()
    await_command: bool = False
    lead: bytes = b""
    line: bytes = b"250-hostile\r\n"
    size: int = MEGABYTE + 1
    tls: ssl.SSLContext | None = None
    transport: Literal["tcp", "udp"] = "tcp"
    echo: int = 0
    flood: int = 200
    chunk: int = 16384
    pause: float = 0.001

    def __post_init__(self) -> None:
        allowed = UDP_BEHAVIOURS if self.transport == "udp" else TCP_BEHAVIOURS
        if self.behaviour not in allowed:
            raise ValueError(f"hostile {self.transport} server: unknown behaviour {self.behaviour!r}; "
                             f"one of {', '.join(allowed)}")


@dataclass
class HostileServer:
    """A running hostile server: where it listens and what it has done so far."""

    hostile: Hostile
    host: str = HOST
    port: int = 0
    connections: int = 0
    active: int = 0  # TCP connections still open (the client has not left, or the server not closed)
    bytes_sent: int = 0
    # What it read: client lines (script, command), then while silent the raw chunks; UDP: datagrams.
    received: list[bytes] = field(default_factory=list)
    cancel_scope: trio.CancelScope | None = None

    def stop(self) -> None:
        """Stop serving (from inside the server's trio run)."""
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()


async def start_hostile(nursery: trio.Nursery, hostile: Hostile) -> HostileServer:
    """Start *hostile* on 127.0.0.1 on a free port inside *nursery*; return it once it listens.

    It serves until the nursery is cancelled (the test ends) or :meth:`HostileServer.stop`.
    """
    server = HostileServer(hostile)
    await nursery.start(_serve, server)
    return server


@contextmanager
def hostile_in_thread(hostile: Hostile) -> Iterator[HostileServer]:
    """Run *hostile* in its own thread and trio loop for the ``with`` block (plain code, benchmarks)."""
    server = HostileServer(hostile)
    ready = threading.Event()
    token: list[trio.lowlevel.TrioToken] = []
    failure: list[BaseException] = []

    async def main() -> None:
        token.append(trio.lowlevel.current_trio_token())
        async with trio.open_nursery() as nursery:
            await nursery.start(_serve, server)
            ready.set()

    def run() -> None:
        try:
            trio.run(main)
        except Exception as exc:  # noqa: BLE001 -- re-raised in the caller's thread below
            failure.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name=f"hostile-{hostile.behaviour}", daemon=True)
    thread.start()
    ready.wait()
    if failure:
        raise RuntimeError(f"hostile server did not start: {failure[0]!r}")
    try:
        yield server
    finally:
        trio.from_thread.run_sync(server.stop, trio_token=token[0])
        thread.join(10)


async def _serve(server: HostileServer, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
    with trio.CancelScope() as scope:
        server.cancel_scope = scope
        if server.hostile.transport == "udp":
            await _serve_udp(server, task_status)
            return
        listeners = await trio.open_tcp_listeners(0, host=server.host)
        server.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(server)
            await trio.serve_listeners(partial(_connection, server), listeners,
                                       handler_nursery=nursery)


async def _connection(server: HostileServer, stream: trio.abc.Stream) -> None:
    server.connections += 1
    server.active += 1
    hostile = server.hostile
    try:
        async with stream:
            if hostile.tls is not None:
                stream = trio.SSLStream(stream, hostile.tls, server_side=True)
                await stream.do_handshake()
            await _misbehave(server, stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
        pass  # the client left (or broke the TLS): that is its right
    finally:
        server.active -= 1


async def _misbehave(server: HostileServer, stream: trio.abc.Stream) -> None:
    hostile = server.hostile
    reader = _LineReader(stream)
    await _send(server, stream, hostile.greeting)
    for reply in hostile.script:
        if not await _read_command(server, reader):
            return
        await _send(server, stream, reply)
    if hostile.await_command and not await _read_command(server, reader):
        return
    await _send(server, stream, hostile.lead)
    behaviour = hostile.behaviour
    if behaviour == "early_close":
        return
    if behaviour == "megabyte_line":
        await _send_repeated(server, stream, b"x" * hostile.chunk, hostile.size)
        await _send(server, stream, b"\r\n")
    elif behaviour == "endless_line":
        await _send_repeated(server, stream, b"x" * hostile.chunk)
    elif behaviour == "endless_multiline":
        line = hostile.line
        await _send_repeated(server, stream, line * max(1, hostile.chunk // len(line)))
    elif behaviour == "garbage":
        while True:
            await _send(server, stream, os.urandom(hostile.chunk))
            await trio.sleep(hostile.pause)
    # silence, tls_stall and the end of a megabyte line: read and drop until the client leaves.
    while True:
        data = await stream.receive_some(65536)
        if not data:
            return
        server.received.append(data)


async def _send(server: HostileServer, stream: trio.abc.Stream, data: bytes) -> None:
    if data:
        await stream.send_all(data)
        server.bytes_sent += len(data)


async def _send_repeated(server: HostileServer, stream: trio.abc.Stream, block: bytes,
                         total: int | None = None) -> None:
    """*block* again and again (*total* bytes in all, or forever), paced, under backpressure."""
    sent = 0
    while total is None or sent < total:
        piece = block if total is None else block[:total - sent]
        await _send(server, stream, piece)
        sent += len(piece)
        await trio.sleep(server.hostile.pause)


async def _read_command(server: HostileServer, reader: _LineReader) -> bool:
    line = await reader.line()
    if line is None:
        return False
    server.received.append(line)
    return True


class _LineReader:
    """Client lines (up to ``\\n``) off a stream; what follows a line stays for the next one."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""

    async def line(self) -> bytes | None:
        while b"\n" not in self.buffer and len(self.buffer) < CLIENT_LINE_LIMIT:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buffer += data
        end = self.buffer.find(b"\n") + 1 or len(self.buffer)
        line, self.buffer = self.buffer[:end], self.buffer[end:]
        return line


async def _serve_udp(server: HostileServer, task_status) -> None:  # type: ignore[no-untyped-def]
    hostile = server.hostile
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind((server.host, 0))
        server.port = sock.getsockname()[1]
        task_status.started(server)
        size = max(hostile.echo, min(hostile.size, UDP_MAX))
        while True:
            request, peer = await sock.recvfrom(UDP_MAX)
            server.connections += 1
            server.received.append(request)
            if hostile.behaviour == "silence":
                continue
            for _ in range(hostile.flood if hostile.behaviour == "flood" else 1):
                datagram = request[:hostile.echo] + os.urandom(size - min(hostile.echo, len(request)))
                try:
                    server.bytes_sent += await sock.sendto(datagram, peer)
                except OSError:
                    break  # the client's port is gone (ICMP unreachable): stop flooding it
                await trio.lowlevel.checkpoint()


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.servers.hostile``: N hostile servers; their ports on stdout, one a line."""
    parser = argparse.ArgumentParser(prog="python -m tests.servers.hostile")
    parser.add_argument("behaviour")
    parser.add_argument("--udp", action="store_true")
    text = "(\\r\\n escapes)"
    parser.add_argument("--greeting", default="", help=f"sent after connecting {text}")
    parser.add_argument("--script", action="append", default=[],
                        help=f"a reply sent after each client line, in order; repeatable {text}")
    parser.add_argument("--await-command", action="store_true",
                        help="read one more client line before misbehaving")
    parser.add_argument("--lead", default="", help=f"sent once before the misbehaviour {text}")
    parser.add_argument("--line", default="250-hostile\\r\\n",
                        help=f"the endless_multiline line {text}")
    parser.add_argument("--count", type=int, default=1, help="how many servers (one port each)")
    args = parser.parse_args(argv)

    def raw(value: str) -> bytes:
        return value.encode().decode("unicode_escape").encode("latin-1")

    try:
        hostile = Hostile(args.behaviour, greeting=raw(args.greeting),
                          script=tuple(raw(s) for s in args.script), await_command=args.await_command,
                          lead=raw(args.lead), line=raw(args.line),
                          transport="udp" if args.udp else "tcp")
    except ValueError as exc:
        parser.error(str(exc))

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(args.count):
                server = await start_hostile(nursery, hostile)
                print(server.port, flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
