"""A real impaired network for tests: test hosts in network namespaces, joined to this one (where the
probes run) by links with delay, jitter and loss that a user-space relay applies to every frame.

Load it with ``pytest_plugins = ["tests.netlab"]`` and ask for the ``netlab`` fixture: a
:class:`NetLab` whose links are reset (no impairment, up, counters zero) before each test. One
lab is built per session (as root; skipped with the kernel's words only when it refuses network
namespaces) and torn down at its end, also when tests fail; namespaces and interfaces that a
killed run left behind are found by the process id in their names and removed first. Only the
addresses inside the lab's namespaces are ever probed. Do not import this module at run time in
a test module (pytest must import it first); ``if TYPE_CHECKING: from tests.netlab import
NetLab`` is fine.

**Topology** (``N`` is a free 10.200.N.0/24 per link, chosen under a lock so that concurrent
runs never share one)::

    this namespace (the vantage)         relay (user space)           pc-<pid>-a
    pc<pid>-al 10.200.N.1/25 ══ veth ══ pc<pid>-alw ⇄ pc<pid>-arw ══ veth ══ pc<pid>-ar 10.200.N.2/25
               fd00:10:200:N::1/64                                          fd00:10:200:N::2/64
    pc<pid>-bl … link "b" to pc-<pid>-b, the same way
    pc-<pid>-c: pc<pid>-cal … link "ca" to pc-<pid>-a (a second vantage, for probes run as
                another user in their own namespace)

On links ``a`` and ``ca`` host ``a`` is also a router for 10.200.N.128/25 (routed to it from the
first end): it answers 10.200.N.130 (no route there: :attr:`Link.net_unreachable`) with ICMP
network unreachable and 10.200.N.200 (an ``unreachable`` route: :attr:`Link.host_unreachable`)
with host unreachable; the kernel limits those errors to 5 at once, then 1/s, per sender.

**Bandwidth** (narrowband lines): :meth:`Link.set` with ``rate`` (bits/s) puts a token bucket in
the direction(s): it fills at ``rate`` up to ``burst`` bytes (default one full-size frame, like
``tc tbf burst 1514``), a frame leaves when the bucket holds its size (in order: a frame waits for
those before it), and frames that would wait longer than ``limit`` bytes take to drain are
dropped (``dropped_queue``), as a modem's buffer overflows. The delay is added after the bucket:
a frame arrives ``delay`` after it left it. Rates count whole Ethernet frames (headers included),
and ``bytes`` in :meth:`Link.stats` counts what was delivered, so a test can compute what the
link's physics allows.

**Why a relay**: this kernel has no ``netem`` qdisc. Every veth end that faces the relay stays in
this namespace (no addresses, IPv6 off), and one relay process (``python -m tests.netlab relay``)
reads frames from each with an ``AF_PACKET`` socket and writes them to the link's other end
after the link's delay, ± a uniform jitter, in order (a frame never overtakes the one before it,
as on a wire; netem would reorder), dropping a share for loss and everything while the link is
down (frames in flight included: a cut cable). Delays count from the kernel's receive time
stamp of each frame at the relay port, so the relay's own wake-up latency adds only at release;
the relay asks for ``SCHED_FIFO`` so that a busy machine delays it little. Loss is drawn from a
seeded RNG per link and direction, and only for unicast frames, so the drops a test sees
depend on the seed alone, not on stray multicast (router solicitations, MLD). Neighbour entries
are static on both ends, so no ARP or neighbour discovery crosses a lossy link. Offloads
(checksum, segmentation) are off on the veth ends, so every frame the relay sees is a complete,
checksummed, MTU-sized one.

The relay is a separate process, not a thread: a thread would share the probes' GIL (5 ms switch
interval) and add that to the delays. It dies with its parent (``PR_SET_PDEATHSIG``), and
:meth:`NetLab.close` stops it and waits for it.
"""

from __future__ import annotations

import collections
import ctypes
import fcntl
import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK_FILE = Path(tempfile.gettempdir()) / "probecore-netlab.lock"
RELAY_START_TIMEOUT = 15.0
COMMAND_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
MAX_FRAME = 1514          # bytes: a full-size Ethernet frame (MTU 1500 + header)
DEFAULT_LIMIT = 1 << 20   # bytes that may wait for a rate-limited link
DIRECTIONS = ("out", "back")
"""``out``: from a link's first end (the vantage) to its second (the host); ``back``: the reverse."""

_TAKEN: set[int] = set()  # subnets of this process's open labs (links between namespaces too)
_NETNS = re.compile(r"^pc-(\d+)-[a-z0-9]+$")
_IFACE = re.compile(r"^pc(\d+)-[a-z0-9]+$")


class NetlabError(RuntimeError):
    """Building or driving the lab failed."""


# ---- ip(8) ---------------------------------------------------------------------------------------

def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip [-n NETNS] ARGS``; a failure raises :class:`NetlabError` with ip's words."""
    command = ["ip", *(("-n", netns) if netns else ()), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise NetlabError("the ip command (Debian package iproute2) is not installed") from None
    if check and done.returncode != 0:
        raise NetlabError(f"{' '.join(command)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done


def in_netns(netns: str | None, *argv: str) -> list[str]:
    """A command line that runs *argv* inside *netns* (unchanged for this namespace)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def write_sysctl(netns: str | None, name: str, value: str) -> None:
    """Set ``/proc/sys/<name with / for .>`` in *netns* (its own copy of the network sysctls)."""
    path = "/proc/sys/" + name.replace(".", "/")
    if netns is None:
        Path(path).write_text(value + "\n")
        return
    done = subprocess.run(in_netns(netns, "sh", "-c", 'printf "%s\\n" "$1" > "$2"', "sh", value, path),
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NetlabError(f"cannot set {name} = {value} in {netns}: {done.stderr.strip()}")


def read_sysctl(netns: str | None, name: str) -> str:
    path = "/proc/sys/" + name.replace(".", "/")
    done = subprocess.run(in_netns(netns, "cat", path), capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NetlabError(f"cannot read {name} in {netns}: {done.stderr.strip()}")
    return " ".join(done.stdout.split())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete the namespaces and interfaces of lab runs whose process is gone; return their names.

    Only names this module makes (``pc-<pid>-…`` namespaces, ``pc<pid>-…`` interfaces) whose
    process id is no longer alive are touched.
    """
    removed = []
    for line in ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        found = _NETNS.match(name)
        if found and not _alive(int(found.group(1))) and ip("netns", "del", name, check=False).returncode == 0:
            removed.append(name)
    for line in ip("-o", "link", "show").stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@", 1)[0]
        found = _IFACE.match(name)
        # (Deleting one end of a veth pair deletes the other: its own delete then fails.)
        if found and not _alive(int(found.group(1))) and ip("link", "del", name, check=False).returncode == 0:
            removed.append(name)
    return removed


# ---- offloads (no ethtool on these machines: its ioctl) -------------------------------------------

_SIOCETHTOOL = 0x8946
_ETHTOOL_SET = {"tx-checksum": 0x17, "scatter-gather": 0x19, "tso": 0x1F, "gso": 0x24, "gro": 0x2C}


def disable_offloads(ifname: str) -> None:
    """Checksum and segmentation offloads off, so frames leave complete (ethtool -K … off)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name, command in _ETHTOOL_SET.items():
            value = ctypes.create_string_buffer(struct.pack("=II", command, 0))
            ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value)) + bytes(16)
            try:
                fcntl.ioctl(sock, _SIOCETHTOOL, ifreq)
            except OSError as exc:
                raise NetlabError(f"cannot switch {name} offload off on {ifname}: {exc}") from None


# ---- the relay: a child process ------------------------------------------------------------------

_ETH_P_ALL = 0x0003
_SOL_PACKET = 263
_PACKET_IGNORE_OUTGOING = 23
_PACKET_OUTGOING = 4
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@ll")


@dataclass
class _Direction:
    link: str
    name: str
    rx: socket.socket
    tx: socket.socket
    seed: int
    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    rate: float = 0.0               # bits/s; 0: no limit
    burst: int = MAX_FRAME          # bytes the bucket holds
    limit: int = DEFAULT_LIMIT      # bytes that may wait for the bucket
    tokens: float = 0.0             # bytes in the bucket at token_time
    token_time: float = 0.0
    last_left: float = 0.0          # when the frame before left the bucket
    rng: random.Random = field(default_factory=random.Random)         # loss draws (unicast only)
    spread: random.Random = field(default_factory=random.Random)      # jitter draws
    queue: collections.deque[tuple[float, bytes]] = field(default_factory=collections.deque)
    last_due: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(f"{seed}/{self.link}/{self.name}/loss")
        self.spread = random.Random(f"{seed}/{self.link}/{self.name}/jitter")

    def zero(self) -> None:
        self.stats = {"frames": 0, "unicast": 0, "dropped_loss": 0, "dropped_down": 0, "delivered": 0,
                      "send_errors": 0, "late_max_s": 0.0, "late_sum_s": 0.0, "bytes": 0,
                      "dropped_queue": 0}

    def shape(self, arrived: float, size: int) -> float | None:
        """When a frame of *size* bytes that *arrived* leaves the token bucket (None: dropped
        because the queue before the bucket is full). Without a rate: when it arrived."""
        if not self.rate:
            return arrived
        per_second = self.rate / 8.0
        start = max(arrived, self.last_left)  # in order, behind the frames before it
        tokens = min(float(self.burst), self.tokens + (start - self.token_time) * per_second)
        left = start if tokens >= size else start + (size - tokens) / per_second
        if left - arrived > self.limit / per_second:
            return None
        self.tokens = max(0.0, tokens - size) if tokens >= size else 0.0
        self.token_time = self.last_left = left
        return left

    def refill(self) -> None:
        """A full bucket and an idle queue (after a change of rate, or a reset)."""
        self.tokens, self.token_time, self.last_left = float(self.burst), 0.0, 0.0


def relay_main(spec: dict) -> None:  # type: ignore[type-arg]
    """Relay frames between the ports of each link in *spec* until told to quit (or stdin closes).

    *spec*: ``{"links": {name: [first_port, second_port]}, "seed": int}``. Commands arrive as
    JSON lines on stdin (``set``, ``down``, ``up``, ``stats``, ``reset``, ``quit``); each gets
    one JSON line on stdout.
    """
    _die_with_parent()
    scheduling = _realtime()
    seed = int(spec.get("seed", 0))
    sockets: dict[str, socket.socket] = {}
    for ports in spec["links"].values():
        for port in ports:
            sockets[port] = _packet_socket(port)
    directions: dict[tuple[str, str], _Direction] = {}
    by_rx: dict[int, _Direction] = {}
    down: dict[str, bool] = {}
    for link, (first, second) in spec["links"].items():
        for name, rx, tx in (("out", first, second), ("back", second, first)):
            d = _Direction(link, name, sockets[rx], sockets[tx], seed)
            d.reseed(seed)
            d.zero()
            directions[(link, name)] = d
            by_rx[sockets[rx].fileno()] = d
        down[link] = False
    os.set_blocking(0, False)
    pending = b""
    _reply({"ready": True, "scheduling": scheduling, "pid": os.getpid()})
    stdin_fd = 0
    readers = [stdin_fd, *by_rx]
    while True:
        now = time.monotonic()
        timeout: float | None = None
        for d in directions.values():
            while d.queue and d.queue[0][0] <= now:
                due, frame = d.queue.popleft()
                late = now - due
                try:
                    d.tx.send(frame)
                    d.stats["delivered"] += 1
                    d.stats["bytes"] += len(frame)
                except OSError:
                    d.stats["send_errors"] += 1
                d.stats["late_max_s"] = max(d.stats["late_max_s"], late)
                d.stats["late_sum_s"] += late
                now = time.monotonic()
            if d.queue:
                wait = d.queue[0][0] - now
                timeout = wait if timeout is None else min(timeout, wait)
        readable, _, _ = select.select(readers, [], [], None if timeout is None else max(0.0, timeout))
        for fd in readable:
            if fd == stdin_fd:
                try:
                    chunk = os.read(stdin_fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    return  # the parent is gone or done
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip() and _command(json.loads(line), directions, down, seed) == "quit":
                        return
                continue
            _take_frames(by_rx[fd], down)


def _take_frames(d: _Direction, down: dict[str, bool]) -> None:
    while True:
        try:
            frame, ancillary, _, address = d.rx.recvmsg(65536, socket.CMSG_SPACE(_TIMESPEC.size),
                                                        socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        if address[2] == _PACKET_OUTGOING:  # what we sent out of this port ourselves
            continue
        mono, wall = time.monotonic(), time.time_ns()
        stamp = next((_TIMESPEC.unpack_from(data) for level, kind, data in ancillary
                      if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS), None)
        age = max(0.0, (wall - (stamp[0] * 1_000_000_000 + stamp[1])) / 1e9) if stamp else 0.0
        d.stats["frames"] += 1
        if down[d.link]:
            d.stats["dropped_down"] += 1
            continue
        if not frame[0] & 1:  # unicast destination: the frames a test sends
            d.stats["unicast"] += 1
            if d.loss and d.rng.random() < d.loss:
                d.stats["dropped_loss"] += 1
                continue
        left = d.shape(mono - age, len(frame))
        if left is None:
            d.stats["dropped_queue"] += 1
            continue
        spread = d.spread.uniform(-d.jitter, d.jitter) if d.jitter else 0.0
        due = max(left + max(0.0, d.delay + spread), d.last_due)
        d.last_due = due
        d.queue.append((due, frame))


def _command(message: dict, directions: dict[tuple[str, str], _Direction], down: dict[str, bool],
             seed: int) -> str | None:  # type: ignore[type-arg]
    cmd = message.get("cmd")
    try:
        if cmd == "set":
            link = message["link"]
            names = DIRECTIONS if message.get("direction", "both") == "both" else (message["direction"],)
            for name in names:
                d = directions[(link, name)]
                d.delay, d.jitter, d.loss = (float(message[k]) for k in ("delay", "jitter", "loss"))
                d.rate = float(message.get("rate") or 0.0)
                d.burst = int(message.get("burst") or MAX_FRAME)
                d.limit = int(message.get("limit") or DEFAULT_LIMIT)
                d.refill()
                if message.get("seed") is not None:
                    d.reseed(int(message["seed"]))
        elif cmd in ("down", "up"):
            link = message["link"]
            if link not in down:
                raise KeyError(link)
            down[link] = cmd == "down"
            if cmd == "down":
                for name in DIRECTIONS:
                    d = directions[(link, name)]
                    d.stats["dropped_down"] += len(d.queue)
                    d.queue.clear()
                    d.refill()
        elif cmd == "reset":
            for d in directions.values():
                d.delay = d.jitter = d.loss = d.rate = 0.0
                d.burst, d.limit = MAX_FRAME, DEFAULT_LIMIT
                d.refill()
                d.reseed(seed)
                d.zero()
                d.queue.clear()
                d.last_due = 0.0
            for link in down:
                down[link] = False
        elif cmd == "stats":
            _reply({"ok": True, "links": {
                link: {"down": down[link], **{name: dict(directions[(link, name)].stats) for name in DIRECTIONS}}
                for link in down}})
            return None
        elif cmd == "quit":
            _reply({"ok": True})
            return "quit"
        else:
            raise ValueError(f"unknown command {cmd!r}")
    except (KeyError, ValueError, TypeError) as exc:
        _reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return None
    _reply({"ok": True})
    return None


def _packet_socket(port: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # nothing arrives before bind
    try:
        sock.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        pass  # older kernels: outgoing frames are skipped by their packet type
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((port, _ETH_P_ALL))
    sock.setblocking(False)
    return sock


def _reply(message: dict) -> None:  # type: ignore[type-arg]
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: killed with the test process, however it ends."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:
        sys.exit(0)


def _realtime() -> str:
    """Real-time scheduling, so that a busy machine delays a frame's release as little as possible.

    The relay never spins (it sleeps in ``select`` until a frame or a release is due), and the
    kernel's real-time throttling keeps 5 % of each core for others even if it did.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return "fifo"
    except (OSError, AttributeError):
        try:
            os.nice(-10)
            return "nice"
        except OSError:
            return "normal"


# ---- the relay: the parent's handle --------------------------------------------------------------

class Relay:
    """The relay process of a lab; its methods send one command each and return the reply."""

    def __init__(self, links: dict[str, tuple[str, str]], *, seed: int, log: Path):
        self._lock = threading.Lock()
        self._buffer = b""
        self.log = log
        with open(log, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.netlab", "relay", json.dumps({"links": links, "seed": seed})],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        try:
            hello = self._read(RELAY_START_TIMEOUT)
        except NetlabError:
            self.close()
            raise
        self.scheduling = str(hello.get("scheduling"))

    def command(self, cmd: str, **args: object) -> dict:  # type: ignore[type-arg]
        with self._lock:
            if self.proc.poll() is not None:
                raise NetlabError(f"the relay exited with status {self.proc.returncode}: {self._log()}")
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            self.proc.stdin.flush()
            reply = self._read(COMMAND_TIMEOUT)
        if not reply.get("ok"):
            raise NetlabError(f"relay command {cmd} {args}: {reply.get('error')}")
        return reply

    def _read(self, timeout: float) -> dict:  # type: ignore[type-arg]
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise NetlabError(f"the relay did not answer within {timeout:g}s: {self._log()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                self.proc.wait(STOP_TIMEOUT)
                raise NetlabError(f"the relay exited with status {self.proc.returncode}: {self._log()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _log(self) -> str:
        try:
            return self.log.read_text(errors="replace").strip() or "(no output)"
        except OSError:
            return "(no log)"

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """Ask the relay to quit, then make sure: it is gone when this returns."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"cmd": "quit"}\n')
                self.proc.stdin.flush()
            except (OSError, ValueError):
                pass
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


# ---- the lab -------------------------------------------------------------------------------------

@dataclass
class Link:
    """One impaired link: its first end (``left``, None for this namespace) and its second."""

    name: str
    index: int
    left: str | None
    right: str
    left_if: str
    right_if: str
    relay: Relay | None = None

    @property
    def left4(self) -> str:
        return f"10.200.{self.index}.1"

    @property
    def right4(self) -> str:
        return f"10.200.{self.index}.2"

    @property
    def left6(self) -> str:
        return f"fd00:10:200:{self.index}::1"

    @property
    def right6(self) -> str:
        return f"fd00:10:200:{self.index}::2"

    @property
    def net_unreachable(self) -> str:
        """An address routed to the second end, which has no route for it (router links only)."""
        return f"10.200.{self.index}.130"

    @property
    def host_unreachable(self) -> str:
        """An address routed to the second end, which has an ``unreachable`` route for it."""
        return f"10.200.{self.index}.200"

    def _relay(self) -> Relay:
        if self.relay is None:
            raise NetlabError("the lab is closed")
        return self.relay

    def set(self, delay: float = 0.0, jitter: float = 0.0, loss: float = 0.0, *,
            direction: str = "both", seed: int | None = None, rate: float = 0.0,
            burst: int = MAX_FRAME, limit: int = DEFAULT_LIMIT) -> None:
        """Impair the link: *delay* ± *jitter* seconds one way, *loss* a share of frames dropped,
        and at most *rate* bits per second (0: no limit) through a token bucket of *burst* bytes
        with at most *limit* bytes waiting for it (see the module docstring).

        *direction* is ``both``, ``out`` (towards the second end) or ``back``; *seed* restarts
        the loss and jitter draws of the direction(s) from a seed.
        """
        if direction not in ("both", *DIRECTIONS):
            raise ValueError(f"direction must be both, out or back, not {direction!r}")
        if not (0 <= loss <= 1 and delay >= 0 and 0 <= jitter <= delay):
            raise ValueError("expected 0 <= loss <= 1 and 0 <= jitter <= delay")
        if not (rate >= 0 and burst >= MAX_FRAME and limit >= MAX_FRAME):
            raise ValueError(f"expected rate >= 0 and burst, limit >= {MAX_FRAME} bytes (one full frame)")
        self._relay().command("set", link=self.name, direction=direction, delay=delay, jitter=jitter,
                              loss=loss, seed=seed, rate=rate, burst=burst, limit=limit)

    def down(self) -> None:
        """Cut the link: every frame is dropped, those in flight too, until :meth:`up`."""
        self._relay().command("down", link=self.name)

    def up(self) -> None:
        self._relay().command("up", link=self.name)

    def stats(self) -> dict:  # type: ignore[type-arg]
        """``{"down": bool, "out": {...}, "back": {...}}``: per direction ``frames`` (read),
        ``unicast``, ``dropped_loss``, ``dropped_down``, ``dropped_queue``, ``delivered`` (and
        their ``bytes``), ``send_errors``,
        ``late_max_s`` / ``late_sum_s`` (how much later than due frames were released)."""
        return self._relay().command("stats")["links"][self.name]


@dataclass(frozen=True)
class LinkSpec:
    name: str          # one or two lowercase letters (interface names have 15 characters)
    left: str | None   # host name, or None for this namespace
    right: str
    router: bool = False


DEFAULT_HOSTS = ("a", "b", "c")
DEFAULT_LINKS = (LinkSpec("a", None, "a", router=True), LinkSpec("b", None, "b"),
                 LinkSpec("ca", "c", "a", router=True))


class NetLab:
    """Test hosts in network namespaces and the impaired links between them and this namespace.

    :attr:`hosts` maps a host name to its namespace, :attr:`links` a link name to its
    :class:`Link`. Build with :meth:`build` (or the ``netlab`` fixture); :meth:`close` removes
    everything, whatever state the build reached.
    """

    def __init__(self, hosts: Sequence[str] = DEFAULT_HOSTS, links: Sequence[LinkSpec] = DEFAULT_LINKS,
                 *, seed: int = 20261122, workdir: Path | None = None):
        self.pid = os.getpid()
        self.hosts = {h: f"pc-{self.pid}-{h}" for h in hosts}
        self.specs = list(links)
        self.seed = seed
        self.links: dict[str, Link] = {}
        self.relay: Relay | None = None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="netlab-"))
        self._made_netns: list[str] = []
        self._made_ifaces: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._indexes: list[int] = []

    # ---- building ---------------------------------------------------------------------------

    def build(self) -> NetLab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        remove_stale()
        for netns in self.hosts.values():
            done = ip("netns", "add", netns, check=False)
            if done.returncode != 0:
                raise NetlabError(f"ip netns add {netns}: {done.stderr.strip()}")
            self._made_netns.append(netns)
            ip("link", "set", "lo", "up", netns=netns)
        with _lock():
            used = _used_indexes() | _TAKEN
            for spec in self.specs:
                index = next(i for i in range(1, 255) if i not in used)
                used.add(index)
                _TAKEN.add(index)
                self._indexes.append(index)
                self.links[spec.name] = self._make_link(spec, index)
        for spec in self.specs:
            if spec.router:
                self._make_router(self.links[spec.name])
        ports = {name: (f"pc{self.pid}-{name}lw", f"pc{self.pid}-{name}rw") for name in self.links}
        self.relay = Relay(ports, seed=self.seed, log=self.workdir / "relay.log")
        for link in self.links.values():
            link.relay = self.relay

    def _make_link(self, spec: LinkSpec, index: int) -> Link:
        prefix = f"pc{self.pid}-{spec.name}"
        left_ns = self.hosts[spec.left] if spec.left else None
        right_ns = self.hosts[spec.right]
        link = Link(spec.name, index, left_ns, right_ns, f"{prefix}l", f"{prefix}r")
        macs = {}
        for end in ("l", "r"):
            iface, port = f"{prefix}{end}", f"{prefix}{end}w"
            ip("link", "add", iface, "type", "veth", "peer", "name", port)
            self._made_ifaces.append(iface)
            disable_offloads(iface)
            disable_offloads(port)
            write_sysctl(None, f"net.ipv6.conf.{port}.disable_ipv6", "1")  # no stray IPv6 on a port
            ip("link", "set", port, "up")
            macs[end] = Path(f"/sys/class/net/{iface}/address").read_text().strip()
        ends = ((left_ns, link.left_if, link.left4, link.left6, link.right4, link.right6, macs["r"]),
                (right_ns, link.right_if, link.right4, link.right6, link.left4, link.left6, macs["l"]))
        for netns, iface, own4, own6, peer4, peer6, peer_mac in ends:
            if netns is not None:
                ip("link", "set", iface, "netns", netns)
            ip("addr", "add", f"{own4}/25", "dev", iface, netns=netns)
            ip("-6", "addr", "add", f"{own6}/64", "dev", iface, "nodad", netns=netns)
            ip("link", "set", iface, "up", netns=netns)
            ip("neigh", "replace", peer4, "lladdr", peer_mac, "dev", iface, "nud", "permanent", netns=netns)
            ip("-6", "neigh", "replace", peer6, "lladdr", peer_mac, "dev", iface, "nud", "permanent",
               netns=netns)
        return link

    def _make_router(self, link: Link) -> None:
        """The second end routes 10.200.N.128/25: .128/26 has no route there, .192/26 is unreachable."""
        ip("route", "add", f"10.200.{link.index}.128/25", "via", link.right4, netns=link.left)
        write_sysctl(link.right, "net.ipv4.ip_forward", "1")
        # No rate limit on the ICMP errors it sends (this namespace's own sysctl); the route
        # lookup's limit (5 at once, then 1/s per source: net.ipv4.route.error_*) is global.
        write_sysctl(link.right, "net.ipv4.icmp_ratemask", "0")
        ip("route", "add", "unreachable", f"10.200.{link.index}.192/26", netns=link.right)

    # ---- using it ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Every link up and unimpaired, counters zero, RNGs back at the lab's seed."""
        if self.relay is None or not self.relay.running:
            raise NetlabError("the relay is not running")
        self.relay.command("reset")

    def exec(self, host: str, *argv: str) -> list[str]:
        """A command line that runs *argv* on *host* (inside its namespace)."""
        return in_netns(self.hosts[host], *argv)

    def spawn(self, host: str, *argv: str, **popen: object) -> subprocess.Popen[bytes]:
        """Start *argv* on *host*; the lab stops it at :meth:`close` if the test did not."""
        proc = subprocess.Popen(self.exec(host, *argv), **popen)  # type: ignore[call-overload]
        self._procs.append(proc)
        return proc

    @contextmanager
    def http_backend(self, host: str, address: str) -> Iterator[int]:
        """A delay backend (``GET /delay?ms=D`` answers after D ms) on *address* of *host*;
        yields its port. It is ``python -m tests.netlab http ADDRESS`` (trio + h11)."""
        with self._server(host, "http", address) as port:
            yield port

    @contextmanager
    def udp_echo(self, host: str, *addresses: str) -> Iterator[int]:
        """A UDP echo server on *addresses* of *host* (one port for all); yields the port."""
        with self._server(host, "udp-echo", *addresses) as port:
            yield port

    @contextmanager
    def _server(self, host: str, mode: str, *args: str) -> Iterator[int]:
        log = self.workdir / f"{mode}-{host}.log"
        with open(log, "wb") as stderr:
            proc = self.spawn(host, sys.executable, "-m", "tests.netlab", mode, *args, cwd=ROOT,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        try:
            assert proc.stdout is not None
            ready = select.select([proc.stdout], [], [], RELAY_START_TIMEOUT)[0]
            line = proc.stdout.readline() if ready else b""
            if not line.strip().isdigit():
                _stop(proc)
                raise NetlabError(f"the {mode} server on {host} did not start: "
                                  f"{log.read_text(errors='replace').strip() or '(no output)'}")
            yield int(line)
        finally:
            _stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()
            if proc in self._procs:
                self._procs.remove(proc)

    # ---- tearing down ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the relay and what was spawned, delete the namespaces and interfaces."""
        problems = []
        for proc in self._procs:
            _stop(proc)
        self._procs.clear()
        if self.relay is not None:
            self.relay.close()
        for link in self.links.values():
            link.relay = None
        for netns in reversed(self._made_netns):
            done = ip("netns", "del", netns, check=False)
            if done.returncode != 0:
                problems.append(f"ip netns del {netns}: {done.stderr.strip()}")
        self._made_netns.clear()
        # The ends of links to this namespace stay here: deleting one end deletes its pair.
        prefix = f"pc{self.pid}-"
        names = {n for n in self._made_ifaces}
        for line in ip("-o", "link", "show").stdout.splitlines():
            parts = line.split(":", 2)
            if len(parts) >= 2 and parts[1].strip().split("@", 1)[0] in names:
                name = parts[1].strip().split("@", 1)[0]
                done = ip("link", "del", name, check=False)
                if done.returncode != 0 and "Cannot find device" not in done.stderr:
                    problems.append(f"ip link del {name}: {done.stderr.strip()}")
        self._made_ifaces = [n for n in self._made_ifaces if not n.startswith(prefix)]
        _TAKEN.difference_update(self._indexes)
        self._indexes.clear()
        if problems:
            raise NetlabError("; ".join(problems))

    def leftovers(self) -> list[str]:
        """Namespaces and interfaces of this lab that still exist (none after :meth:`close`)."""
        names = set(self.hosts.values())
        found = [line.split()[0] for line in ip("netns", "list").stdout.splitlines()
                 if line.split() and line.split()[0] in names]
        ifaces = {f"pc{self.pid}-{s.name}{end}" for s in self.specs for end in ("l", "lw", "r", "rw")}
        for line in ip("-o", "link", "show").stdout.splitlines():
            parts = line.split(":", 2)
            if len(parts) >= 2 and parts[1].strip().split("@", 1)[0] in ifaces:
                found.append(parts[1].strip().split("@", 1)[0])
        return found


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


@contextmanager
def _lock() -> Iterator[None]:
    """One lab at a time chooses its subnets (another run's tests may be building one now)."""
    with open(LOCK_FILE, "a") as handle:
        try:
            os.chmod(LOCK_FILE, 0o666)
        except OSError:
            pass
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _used_indexes() -> set[int]:
    """N of every 10.200.N.x address or route in this namespace (other labs', anyone's)."""
    text = ip("-4", "-o", "addr", "show").stdout + ip("-4", "route", "show", "table", "all").stdout
    return {int(n) for n in re.findall(r"\b10\.200\.(\d{1,3})\.", text)}


def _namespaces_refused(reason: str) -> bool:
    words = reason.lower()
    return any(w in words for w in ("operation not permitted", "permission denied", "not supported",
                                    "function not implemented", "no such file or directory"))


@contextmanager
def lab_or_skip(**kwargs: object) -> Iterator[NetLab]:
    """Build a :class:`NetLab` for the duration of the block; skip when the kernel refuses."""
    if os.geteuid() != 0:
        pytest.skip("the network lab needs root: network namespaces and veth pairs (the CI runs as root)")
    lab = NetLab(**kwargs)  # type: ignore[arg-type]
    try:
        lab.build()
    except NetlabError as exc:
        if str(exc).startswith("ip netns add") and _namespaces_refused(str(exc)):
            pytest.skip(f"the kernel refuses network namespaces: {exc}")
        raise
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="session")
def netlab_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetLab]:
    """The session's lab (hosts a, b, c; links a, b, ca); prefer the ``netlab`` fixture."""
    with lab_or_skip(workdir=tmp_path_factory.mktemp("netlab")) as lab:
        yield lab


@pytest.fixture
def netlab(netlab_session: NetLab) -> NetLab:
    """The session's lab with every link up, unimpaired and its counters and RNGs reset."""
    netlab_session.reset()
    return netlab_session


# ---- a delay backend, run inside a namespace ------------------------------------------------------

def run_http(address: str) -> None:
    """Serve ``GET /delay?ms=D`` on *address* (a free port, printed on stdout) with trio + h11.

    The answer comes D ms after the request was complete, with ``Server-Timing: app;dur=<ms the
    request was held>``; connections are kept alive.
    """
    import h11
    import trio

    _die_with_parent()
    _realtime()  # so that D is D on a busy machine: the tests compare the probe's figure with it

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        target = ""
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                elif isinstance(event, h11.Request):
                    target = event.target.decode()
                elif isinstance(event, h11.EndOfMessage):
                    got = trio.current_time()
                    delay_ms = float(target.split("ms=", 1)[1].split("&", 1)[0]) if "ms=" in target else 0.0
                    await trio.sleep(delay_ms / 1000.0)
                    body = f"slept {delay_ms:g}\n".encode()
                    held = (trio.current_time() - got) * 1000.0
                    out = conn.send(h11.Response(status_code=200, headers=[
                        ("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                        ("Server-Timing", f"app;dur={held:.3f}")]))
                    out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
                    await stream.send_all(out)
                    if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (trio.BrokenResourceError, h11.ProtocolError):
            return
        finally:
            await stream.aclose()

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host=address)
        print(listeners[0].socket.getsockname()[1], flush=True)
        await trio.serve_listeners(handle, listeners)

    trio.run(main)


def run_udp_echo(addresses: Sequence[str]) -> None:
    """Send every datagram back where it came from, on *addresses* (one free port, printed)."""
    _die_with_parent()
    _realtime()
    socks, port = [], 0
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((address, port))
        port = sock.getsockname()[1]
        socks.append(sock)
    print(port, flush=True)
    while True:
        for sock in select.select(socks, [], [])[0]:
            data, peer = sock.recvfrom(65536)
            sock.sendto(data, peer)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "relay":
        relay_main(json.loads(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "http":
        run_http(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == "udp-echo":
        run_udp_echo(sys.argv[2:])
    else:
        sys.exit("usage: python -m tests.netlab relay SPEC | http ADDRESS | udp-echo ADDRESS...")
