"""A trio stream over a plain non-blocking socket that knows when the request left and the answer came.

Why not ``trio.SocketStream``: its timestamps would be the event loop's. After ``send`` trio
yields to the scheduler, and a task is woken for readable data only when the loop gets to it,
so under load both ends of ``wait`` would be late by however long other tasks held the loop (a
TLS handshake costs 1–2 ms of CPU), and a preempted process adds its time slice. So, on Linux:

* **request sent**: the kernel's software transmit timestamp (``SO_TIMESTAMPING`` with
  ``TX_SOFTWARE | OPT_ID | OPT_TSONLY``) of the last byte of the request, taken when the packet
  is handed to the network device and read back from the socket's error queue;
* **first response byte**: the kernel's receive timestamp (``SO_TIMESTAMPNS``) of the first
  byte, read with ``MSG_PEEK`` before the data is consumed. Over TLS the first records after
  the request may be TLS 1.3 session tickets, not the response; so while armed the stream hands
  ``trio.SSLStream`` one TLS record at a time and stamps each record's first byte: the record
  during which the first plaintext appeared holds the first response byte;
* **round trip**: the kernel's RTT sample of this connection's TCP handshake
  (``TCP_INFO.tcpi_rtt`` right after connect).

Each falls back on its own to what the process can see (the clock read just before the
``send`` call, the clock when data was found, the connect's duration), and the stream says
which it used, so a record shows how its figure was taken.
"""

from __future__ import annotations

import atexit
import errno
import os
import socket
import struct
import sys
import time

import trio

_LINUX = sys.platform.startswith("linux")
# asm-generic values (x86, arm, riscv …): the *_OLD options, which carry a native struct timespec.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_TIMESTAMPING = getattr(socket, "SO_TIMESTAMPING", 37)
_TX_FLAGS = 2 | 16 | 128 | 2048  # TX_SOFTWARE | SOFTWARE | OPT_ID | OPT_TSONLY
_TIMESPEC = struct.Struct("@ll")
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err
_ORIGIN_TIMESTAMPING = 4
_RECVERR = {(getattr(socket, "SOL_IP", 0), 11), (getattr(socket, "SOL_IPV6", 41), 25)}  # IP(V6)_RECVERR
_CMSG = socket.CMSG_SPACE if hasattr(socket, "CMSG_SPACE") else (lambda n: 0)
_ANCILLARY = _CMSG(_TIMESPEC.size) + _CMSG(3 * _TIMESPEC.size)
_ERRQUEUE_ANCILLARY = _CMSG(3 * _TIMESPEC.size) + _CMSG(_TIMESPEC.size) + _CMSG(_EXTENDED_ERR.size + 28)
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_TCPI_RTT = struct.Struct("@I")
_TCPI_RTT_OFFSET = 8 + 15 * 4  # 8 one-byte fields, then u32 rto … rcv_ssthresh, rtt
DEFAULT_RECEIVE = 256 * 1024


class TimedSocketStream(trio.abc.Stream):
    """A connected non-blocking socket as a trio stream, with send and arrival timestamps."""

    def __init__(self, sock: socket.socket, stamps: bool):
        self.socket = sock
        self.rx_kernel = stamps      # arrival stamps come from the kernel (so far)
        self.tx_kernel = stamps      # transmit stamps can be asked for
        self._counting = False       # between begin_request() and arm()
        self._collect = False        # between begin_request() and disarm(): keep transmit stamps
        self._tx_last: tuple[int, int] | None = None  # (OPT_ID, stamp) of the request's last byte so far
        self._tx_ns: int | None = None
        self._stamped = False        # transmit stamps were asked for: the error queue may hold some
        self._user_sent_ns = 0
        self._armed = False
        self._tls = False
        self._first_ns: int | None = None
        self._header_left = 5   # bytes of the current TLS record header still to deliver
        self._body_left = 0     # bytes of the current TLS record body still to deliver
        self._header = bytearray()
        self._record_ns: int | None = None

    @classmethod
    async def connect(cls, address: str, port: int) -> tuple[TimedSocketStream, float, bool]:
        """Connect; returns (stream, round-trip estimate in s, whether the kernel measured it)."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stamps = _LINUX
            if stamps:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                except OSError:
                    stamps = False
            await trio.lowlevel.checkpoint_if_cancelled()
            began = trio.current_time()
            code = sock.connect_ex((address, port))
            if code in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                await trio.lowlevel.wait_writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
            took = trio.current_time() - began
            if code:
                raise OSError(code, os.strerror(code))
        except BaseException:
            trio.lowlevel.notify_closing(sock)
            sock.close()
            raise
        rtt = _kernel_rtt(sock)
        return cls(sock, stamps), (rtt if rtt is not None else took), rtt is not None

    # ---- timestamps ---------------------------------------------------------------------------

    def begin_request(self) -> None:
        """The request's bytes are next: stamp the last of them on its way out."""
        self._counting = True
        self._tx_ns = self._tx_last = None
        if self.tx_kernel:
            if self._stamped:
                self._read_error_queue()  # a late stamp of an earlier request: not this one's
            try:
                self.socket.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, _TX_FLAGS)
                self._stamped = self._collect = True
            except OSError:
                self.tx_kernel = False

    def arm(self, tls: bool) -> None:
        """The request is out: stamp what arrives next (TLS: record by record)."""
        self._counting = False
        if self._stamped:
            self._read_error_queue()  # on loopback (and most NICs) the stamp is there already
        self._armed, self._tls = True, tls
        self._first_ns = None
        self._header_left, self._body_left = 5, 0
        self._header.clear()
        self._record_ns = None

    def disarm(self) -> tuple[int, int]:
        """The first response bytes were delivered: (request sent, first byte arrived), in ns."""
        self._armed = False
        if self._stamped:
            self._read_error_queue()
            # The highest byte number stamped is the request's last byte: nothing else was sent
            # since. (Numbers count from the oldest unacknowledged byte when stamping was switched
            # on, e.g. a TLS Finished not yet acknowledged, so the request's own length is no key.)
            if self._tx_last is not None:
                self._tx_ns = self._tx_last[1]
            self._collect = False
            try:  # off again: the next request on a kept connection starts a new byte count
                self.socket.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, 0)
            except OSError:
                pass
        arrived = self._record_ns if self._tls else self._first_ns
        sent = self._tx_ns if self._tx_ns is not None else self._user_sent_ns
        return sent, arrived if arrived is not None else time.time_ns()

    @property
    def kernel_timing(self) -> bool:
        """Whether the last request's send and arrival times both came from the kernel."""
        return self.rx_kernel and self._tx_ns is not None

    def _read_error_queue(self) -> None:
        """Collect transmit stamps; the one for the request's last byte is kept."""
        while True:
            try:
                _, ancillary, _, _ = self.socket.recvmsg(0, _ERRQUEUE_ANCILLARY, _MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.tx_kernel = self._stamped = False
                return
            stamp = key = None
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING and len(data) >= _TIMESPEC.size:
                    seconds, nanos = _TIMESPEC.unpack_from(data)
                    stamp = seconds * 1_000_000_000 + nanos
                elif (level, kind) in _RECVERR and len(data) >= _EXTENDED_ERR.size:
                    fields = _EXTENDED_ERR.unpack_from(data)
                    if fields[1] == _ORIGIN_TIMESTAMPING:
                        key = fields[6]
            if stamp and key is not None and self._collect:
                if self._tx_last is None or key >= self._tx_last[0]:
                    self._tx_last = (key, stamp)

    async def _arrival(self) -> int:
        """Wait for data (or EOF) and return the kernel's arrival time of the first queued byte."""
        while True:
            try:
                if not self.rx_kernel:
                    self.socket.recv(1, socket.MSG_PEEK)
                    return time.time_ns()
                data, ancillary, _, _ = self.socket.recvmsg(1, _ANCILLARY, socket.MSG_PEEK)
            except BlockingIOError:
                # A transmit stamp arriving late wakes us (POLLERR): take it, then wait on.
                if self._stamped:
                    self._read_error_queue()
                await trio.lowlevel.wait_readable(self.socket)
                continue
            except OSError:
                return time.time_ns()  # the recv that follows reports the error
            if not data:
                return time.time_ns()  # end of stream: nothing to stamp
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
                    seconds, nanos = _TIMESPEC.unpack_from(payload)
                    return seconds * 1_000_000_000 + nanos
            self.rx_kernel = False  # e.g. the kernel switched time stamping on only just now
            return time.time_ns()

    # ---- trio.abc.Stream ----------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(data)
        while view:
            # The fallback "sent" time is read *before* the call: on loopback the kernel delivers
            # the bytes, and the server may answer, before send() returns.
            before = time.time_ns()
            try:
                sent = self.socket.send(view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.socket)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"send failed: {os.strerror(exc.errno or 0)}") from exc
            if self._counting:
                self._user_sent_ns = before
            view = view[sent:]
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self.socket)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = max_bytes or DEFAULT_RECEIVE
        if not self._armed:
            return await self._receive(size)
        if not self._tls:
            if self._first_ns is None:
                self._first_ns = await self._arrival()
            return await self._receive(size)
        # TLS, armed: deliver the current record only, stamping each record's first byte.
        if self._header_left == 5:
            self._record_ns = await self._arrival()
        data = await self._receive(min(size, self._header_left or self._body_left))
        if self._header_left:
            self._header += data
            self._header_left -= len(data)
            if not self._header_left:
                self._body_left = int.from_bytes(self._header[3:5], "big")
                self._header.clear()
                if not self._body_left:
                    self._header_left = 5
        else:
            self._body_left -= len(data)
            if not self._body_left:
                self._header_left = 5
        return data

    async def _receive(self, size: int) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            try:
                data = self.socket.recv(size)
            except BlockingIOError:
                if self._stamped:  # else a queued stamp (POLLERR) would wake us again at once
                    self._read_error_queue()
                await trio.lowlevel.wait_readable(self.socket)
                waited = True
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"receive failed: {os.strerror(exc.errno or 0)}") from exc
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    def close(self) -> None:
        if self.socket.fileno() >= 0:
            trio.lowlevel.notify_closing(self.socket)
            self.socket.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()


_keeper: socket.socket | None = None


def keep_receive_stamps_on() -> None:
    """Hold one socket with ``SO_TIMESTAMPNS`` for the life of the process.

    The kernel stamps received packets only while some socket asks for it, and switches that on
    asynchronously (a deferred static-key update): a probe whose socket is the only one asking
    would often find its answer unstamped. Called when the plugin registers, well before the
    first probe; the socket is closed at exit.
    """
    global _keeper
    if _keeper is not None or not _LINUX:
        return
    try:
        keeper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return
    try:
        keeper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        keeper.close()
        return
    _keeper = keeper
    atexit.register(keeper.close)


def _kernel_rtt(sock: socket.socket) -> float | None:
    """The kernel's smoothed RTT (seconds); right after connect it is the handshake's sample."""
    if not _LINUX or _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)
    except OSError:
        return None
    if len(info) < _TCPI_RTT_OFFSET + 4:
        return None
    micros = _TCPI_RTT.unpack_from(info, _TCPI_RTT_OFFSET)[0]
    return micros / 1_000_000 if micros else None
