"""The network lab itself (tests/netlab.py): the relay's delay, jitter, loss and link cuts, measured
with plain UDP datagrams to an echo server inside a namespace (not with the ping probe, whose own
tests rely on the lab), and a lab that leaves nothing behind.

Round trips are timed from just before ``sendto`` to the kernel's receive time stamp of the echo,
so this process being descheduled on a busy machine does not count; the relay's own lateness
does, and is what the upper bounds allow for.
"""

from __future__ import annotations

import os
import select
import socket
import statistics
import struct
import subprocess
import threading
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.netlab import NetLab

pytest_plugins = ["tests.netlab"]

SO_TIMESTAMPNS = 35
SLACK = 0.0002     # below the injected delay: clock reads and time-stamp granularity only
LATE_MEDIAN = 0.003  # above it, for the median of a series (the relay's release, the echo server)
LATE_ANY = 0.025     # above it, for any one datagram on a busy two-core machine


def round_trips(address: str, port: int, count: int, spacing: float = 0.005,
                linger: float = 0.3) -> tuple[dict[int, float], list[int]]:
    """Send *count* numbered datagrams *spacing* apart; (seconds by number, numbers in arrival order)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sent: dict[int, int] = {}
    rtts: dict[int, float] = {}
    order: list[int] = []
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        start = time.monotonic()
        seq = 0
        while True:
            now = time.monotonic()
            if seq < count and now >= start + seq * spacing:
                sent[seq] = time.time_ns()
                sock.sendto(struct.pack("!I", seq) + bytes(28), (address, port))
                seq += 1
                continue
            end = start + (count - 1) * spacing + linger
            if seq >= count and (now >= end or len(rtts) == count):
                return rtts, order
            wait = (start + seq * spacing - now) if seq < count else end - now
            if not select.select([sock], [], [], max(0.0, wait))[0]:
                continue
            data, ancillary, _, _ = sock.recvmsg(2048, socket.CMSG_SPACE(16))
            number = struct.unpack_from("!I", data)[0]
            stamp = next((struct.unpack_from("@ll", payload) for level, kind, payload in ancillary
                          if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS), None)
            arrived = stamp[0] * 1_000_000_000 + stamp[1] if stamp else time.time_ns()
            rtts[number] = (arrived - sent[number]) / 1e9
            order.append(number)


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return (f"n={len(ms)} min={ms[0]:.3f} median={statistics.median(ms):.3f} "
            f"p90={ms[int(0.9 * (len(ms) - 1))]:.3f} max={ms[-1]:.3f} ms")


def test_round_trip_is_twice_the_one_way_delay(netlab: NetLab) -> None:
    a = netlab.links["a"]
    with netlab.udp_echo("a", a.right4, a.right6) as port:
        plain, _ = round_trips(a.right4, port, 10)
        a.set(delay=0.010)
        v4, _ = round_trips(a.right4, port, 30)
        v6, _ = round_trips(a.right6, port, 30)
    print("unimpaired", summary(list(plain.values())))
    assert len(plain) == 10
    assert statistics.median(plain.values()) < 0.002
    for name, rtts in (("IPv4", v4), ("IPv6", v6)):
        print(f"10 ms each way, {name}:", summary(list(rtts.values())))
        assert len(rtts) == 30, f"{name}: {30 - len(rtts)} datagrams lost on a lossless link"
        assert min(rtts.values()) >= 0.020 - SLACK, summary(list(rtts.values()))
        assert statistics.median(rtts.values()) <= 0.020 + LATE_MEDIAN, summary(list(rtts.values()))
        assert max(rtts.values()) <= 0.020 + LATE_ANY, summary(list(rtts.values()))
    from tests.netlab import DIRECTIONS  # (pytest imports the module first: see its docstring)

    stats = a.stats()
    assert stats["out"]["delivered"] >= 70 and stats["back"]["delivered"] >= 70
    assert stats["out"]["send_errors"] == stats["back"]["send_errors"] == 0
    print("relay release lateness (max):", {d: f"{stats[d]['late_max_s'] * 1000:.3f} ms" for d in DIRECTIONS})


def test_directions_and_links_are_set_independently(netlab: NetLab) -> None:
    a, b = netlab.links["a"], netlab.links["b"]
    a.set(delay=0.004, direction="out")
    a.set(delay=0.012, direction="back")
    b.set(delay=0.002)
    with netlab.udp_echo("a", a.right4) as port_a, netlab.udp_echo("b", b.right4) as port_b:
        via_a, _ = round_trips(a.right4, port_a, 20)
        via_b, _ = round_trips(b.right4, port_b, 20)
    print("a (4 ms out, 12 ms back):", summary(list(via_a.values())))
    print("b (2 ms each way):", summary(list(via_b.values())))
    assert len(via_a) == len(via_b) == 20
    assert 0.016 - SLACK <= statistics.median(via_a.values()) <= 0.016 + LATE_MEDIAN
    assert 0.004 - SLACK <= statistics.median(via_b.values()) <= 0.004 + LATE_MEDIAN
    assert min(via_a.values()) >= 0.016 - SLACK and min(via_b.values()) >= 0.004 - SLACK


def test_jitter_spreads_delays_but_never_reorders(netlab: NetLab) -> None:
    a = netlab.links["a"]
    a.set(delay=0.010, jitter=0.005, seed=3)
    with netlab.udp_echo("a", a.right4) as port:
        rtts, order = round_trips(a.right4, port, 60, spacing=0.002)
    values = list(rtts.values())
    print("10 ms ± 5 ms each way:", summary(values))
    assert len(rtts) == 60
    assert order == sorted(order), "a datagram overtook an earlier one"
    assert min(values) >= 0.010 - SLACK                 # each way at least 5 ms
    assert max(values) <= 0.030 + LATE_ANY              # each way at most 15 ms (+ lateness)
    assert max(values) - min(values) >= 0.004, "jitter did not spread the round trips"


def test_loss_share_is_within_its_binomial_band_and_repeats_with_the_seed(netlab: NetLab) -> None:
    a = netlab.links["a"]
    sent, share = 400, 0.3
    lost_sets = []
    with netlab.udp_echo("a", a.right4) as port:
        for _ in range(2):
            netlab.reset()
            a.set(delay=0.001, loss=share, direction="out", seed=7)
            rtts, _ = round_trips(a.right4, port, sent, spacing=0.001)
            stats = a.stats()
            lost = set(range(sent)) - set(rtts)
            lost_sets.append(lost)
            # Exact accounting: every datagram missing is one the relay dropped on the way out.
            assert stats["out"]["unicast"] == sent
            assert stats["out"]["dropped_loss"] == len(lost)
            assert stats["back"]["dropped_loss"] == 0
    ratio = len(lost_sets[0]) / sent
    sigma = (share * (1 - share) / sent) ** 0.5
    print(f"loss {share:.0%} out of {sent}: lost {len(lost_sets[0])} ({ratio:.3f}; band ± 4σ = "
          f"± {4 * sigma:.3f})")
    assert abs(ratio - share) <= 4 * sigma  # 99.99 % of seeds; this seed's draw is fixed
    assert lost_sets[0] == lost_sets[1], "the same seed must drop the same datagrams"


def test_link_down_drops_everything_until_it_is_up_again(netlab: NetLab) -> None:
    a = netlab.links["a"]
    a.set(delay=0.005)
    with netlab.udp_echo("a", a.right4) as port:
        before, _ = round_trips(a.right4, port, 10)
        a.down()
        during, _ = round_trips(a.right4, port, 10, linger=0.2)
        stats = a.stats()
        a.up()
        after, _ = round_trips(a.right4, port, 10)
    assert len(before) == 10 and len(after) == 10
    assert during == {}
    assert stats["down"] is True
    assert stats["out"]["dropped_down"] >= 10
    assert a.stats()["down"] is False


def test_cutting_a_link_drops_the_frames_in_flight(netlab: NetLab) -> None:
    a = netlab.links["a"]
    a.set(delay=0.150)
    with netlab.udp_echo("a", a.right4) as port, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.6)
        sock.sendto(b"in flight", (a.right4, port))
        time.sleep(0.05)
        a.down()
        a.up()
        with pytest.raises(TimeoutError):
            sock.recvfrom(2048)
    assert a.stats()["out"]["dropped_down"] == 1


def test_a_lab_leaves_no_process_thread_namespace_or_interface(netlab: NetLab) -> None:
    from tests.netlab import LinkSpec, NetLab

    threads = threading.active_count()
    lab = NetLab(hosts=("x",), links=(LinkSpec("x", None, "x"),)).build()
    try:
        relay = lab.relay
        assert relay is not None and relay.running
        assert sorted(lab.leftovers()) == sorted(
            [lab.hosts["x"], *(f"pc{os.getpid()}-x{end}" for end in ("l", "lw", "rw"))])
        x = lab.links["x"]
        assert x.index not in {link.index for link in netlab.links.values()}
        x.set(delay=0.002)
        with lab.udp_echo("x", x.right4) as port:
            rtts, _ = round_trips(x.right4, port, 5)
        assert len(rtts) == 5
    finally:
        lab.close()
    assert relay.proc.returncode is not None
    assert not os.path.exists(f"/proc/{relay.proc.pid}")
    assert lab.leftovers() == []
    assert threading.active_count() == threads
    # The session's lab is untouched by another lab's coming and going.
    a = netlab.links["a"]
    with netlab.udp_echo("a", a.right4) as port:
        assert len(round_trips(a.right4, port, 3)[0]) == 3


def test_leftovers_of_a_killed_run_are_removed_by_the_next(netlab: NetLab) -> None:
    from tests.netlab import ip, remove_stale

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = gone.pid  # a process id that is no longer alive
    netns, iface = f"pc-{dead}-z", f"pc{dead}-zl"
    ip("netns", "add", netns)
    try:
        ip("link", "add", iface, "type", "veth", "peer", "name", f"{iface}w")
        removed = remove_stale()
        assert netns in removed
        assert {iface, f"{iface}w"} & set(removed)  # deleting one end of a veth pair deletes both
        assert netns not in ip("netns", "list").stdout
        assert iface not in ip("-o", "link", "show").stdout
        # A live run's lab (this one) is left alone.
        assert all(name in ip("netns", "list").stdout for name in netlab.hosts.values())
    finally:
        ip("netns", "del", netns, check=False)
        ip("link", "del", iface, check=False)
