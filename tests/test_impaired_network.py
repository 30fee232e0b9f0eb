"""The ``tcp`` and ``web`` probes across a real link with latency (the network lab), where loopback's
~50 µs round trip would hide any confusion between network time and server time.

* tcp: the connect time is one round trip (SYN out, SYN-ACK back), so ≈ 2 × the one-way delay.
* web: a backend in host a's namespace answers after a known D. Across a 20 ms round trip the raw
  ``wait`` (request sent → first byte) is D + RTT, and ``processing`` — wait minus the kernel's
  RTT of the TCP handshake — is D again: contract 001 §2.4's "from the server having received the
  whole request to its starting to send data", which the RTT correction is meant to measure.

Real sockets, so real time (no MockClock). Only addresses inside the lab's namespaces are probed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from probecore import SLIRecord, load_profile
from probecore._runner import RunOptions, run_profile
from probecore.testing import MemoryStore, make_host, write_profile

if TYPE_CHECKING:
    from tests.netlab import NetLab

pytest_plugins = ["tests.netlab"]

HEAD = """\
[profile]
name = "impaired"

[defaults]
interval = "1m"
timeout = "5s"
confirm = 1
"""
PLUGINS = ("probecore_plugins.tcp", "probecore_plugins.web")
ONE_WAY = 0.010
RTT = 2 * ONE_WAY
SLACK = 0.0002            # below the injected round trip: clock reads and time stamps only
KERNEL_LATE = 0.004       # above it, for figures from kernel time stamps (the relay's release)
LOOP_LATE_MEDIAN = 0.010  # above it, for the best of several figures timed by the event loop
SANE = 0.5                # above it, for any one of them (a starved process can pause for long)
ROUNDS = 3
PROCESSING_MS = 5.0       # |processing − D| across the link: "within a few ms"


async def run_once(tmp_path: Path, checks: str) -> dict[str, SLIRecord]:
    host = make_host(builtins=PLUGINS)
    profile = load_profile(write_profile(tmp_path, HEAD + checks), host.probes)
    result = await run_profile(profile, host, MemoryStore(),
                               RunOptions(once=True, handle_signals=False, vantage="test"))
    assert len(result.records) == len(profile.checks) == result.stored_records
    return {r.check.split("/", 1)[1]: r for r in result.records}


def ms(values: list[float]) -> str:
    return ", ".join(f"{v * 1000:.2f}" for v in sorted(values)) + " ms"


async def test_tcp_connect_takes_one_round_trip(tmp_path: Path, netlab: NetLab) -> None:
    a = netlab.links["a"]
    a.set(delay=ONE_WAY)
    connects: list[float] = []
    banners: list[float] = []
    with netlab.http_backend("a", a.right4) as port:
        checks = "".join(f'[[check]]\nid = "c{i}"\nprobe = "tcp"\nhost = "{a.right4}"\nport = {port}\n\n'
                         for i in range(2))
        checks += (f'[[check]]\nid = "http"\nprobe = "tcp"\nhost = "{a.right4}"\nport = {port}\n'
                   'send = "GET /delay?ms=0 HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n"\nexpect = "HTTP/1.1 200"\n')
        # Rounds one after another: the tcp probe times connect with the event loop, so a pause
        # of this process (a busy machine, a CPU quota) lengthens every figure of a round at once.
        for _ in range(ROUNDS):
            records = await run_once(tmp_path, checks)
            for record in records.values():
                assert record.outcome == "ok", record.failure
                assert record.details["address"] == a.right4
                assert record.value is not None
                connects.append(record.value)
            banners.append(records["http"].phases["banner"])
    print(f"tcp connect across {RTT * 1000:g} ms: {ms(connects)}")
    print(f"tcp send → expected answer: {ms(banners)}")
    # Never less than the round trip (the relay cannot be early); at best about one round trip.
    assert min(connects) >= RTT - SLACK
    assert min(connects) <= RTT + LOOP_LATE_MEDIAN
    assert min(banners) >= RTT - SLACK  # the request out, the answer back: one more round trip
    assert min(banners) <= RTT + LOOP_LATE_MEDIAN
    assert max(connects + banners) < RTT + SANE  # and nothing like a retransmitted SYN (1 s)


async def test_web_processing_is_the_server_time_across_a_20ms_round_trip(tmp_path: Path,
                                                                           netlab: NetLab) -> None:
    a = netlab.links["a"]
    delays = (0.050, 0.100, 0.200)
    with netlab.http_backend("a", a.right4) as port:
        checks = "".join(f'[[check]]\nid = "d{round(d * 1000)}"\nprobe = "web"\n'
                         f'url = "http://{a.right4}:{port}/delay?ms={round(d * 1000)}"\nserver_timing = "app"\n\n'
                         for d in delays)
        plain = await run_once(tmp_path, checks)     # the same backend without the link's delay
        a.set(delay=ONE_WAY)
        across = await run_once(tmp_path, checks)
    rows = []
    for delay in delays:
        ident = f"d{round(delay * 1000)}"
        for label, record in (("plain", plain[ident]), ("20ms", across[ident])):
            assert record.outcome == "ok", record.failure
            details = record.details
            assert details["timestamps"] == "kernel" and details["rtt_source"] == "tcp_info"
            wait, rtt, held = details["wait_s"], details["rtt_estimate_s"], details["server_timing_s"]
            assert isinstance(wait, float) and isinstance(rtt, float) and isinstance(held, float)
            assert record.value is not None
            rows.append(f"D={delay * 1000:g} ms {label:>5}: processing {record.value * 1000:8.3f}  "
                        f"wait {wait * 1000:8.3f}  rtt {rtt * 1000:7.3f}  server held {held * 1000:8.3f} ms")
            # The server held the request at least D; processing is that, within a few ms.
            assert held >= delay
            assert abs(record.value - delay) * 1000 < PROCESSING_MS, rows[-1]
            assert abs(record.value - held) * 1000 < PROCESSING_MS, rows[-1]
            if label == "20ms":
                # The kernel's handshake RTT saw the relay's delay both ways …
                assert RTT - SLACK <= rtt <= RTT + KERNEL_LATE, rows[-1]
                # … and raw time-to-first-byte is off by that round trip, processing is not.
                assert RTT - SLACK <= wait - held <= RTT + PROCESSING_MS / 1000, rows[-1]
                assert wait - delay >= RTT - SLACK
            else:
                assert rtt < 0.002, rows[-1]
    print("\n".join(rows))
