"""The scale-out lab: three vantages in three network namespaces, a service in a fourth, a real
PostgreSQL, real agents and judges as processes (``probe agent`` / ``probe judge``).

Topology (tests/netlab.py, as root): hosts ``bj`` (two agents), ``sh``, ``gz`` and ``svc`` (the
service), links ``vb``, ``vs``, ``vg`` from each vantage to the service, each through the
user-space relay that can cut it. The service answers on 10.201.0.1 (an address on ``svc``'s
loopback, routed from each vantage over its own link), so every vantage
probes the same target by its own path. Agents and judges reach PostgreSQL by its unix socket
(the namespaces share the file system, not the network).

One scenario, in order: all well; bj's link cut (no provider outage: bj's failures are its
network's); an agent of bj killed (its checks move to the other bj agent); bj's and sh's links
cut (an outage: confirmed, one notice) with the leading judge killed (-9) as it begins (the
other judge takes over: the outage is confirmed, noticed and resolved once each).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.netlab import LinkSpec, ip, lab_or_skip

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "10.201.0.1"
# Host names of their own (the session's lab of other tests, in this process, has a, b, c).
VANTAGES = {"bj": "bj", "sh": "sh", "gz": "gz"}
LINKS = {"bj": "vb", "sh": "vs", "gz": "vg"}
CHECKS = 4
LEASE = "2s"

PROFILE = """\
[profile]
name = "lab"
[defaults]
interval = "1s"
timeout = "500ms"
confirm = 2
vantages = ["bj", "sh", "gz"]
quorum = 2
{checks}
[[channel]]
id = "pager"
kind = "console"
path = "{notices}"
[[notify]]
id = "oncall"
check = "c0"
channels = ["pager"]
events = ["confirmed", "resolved"]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    links = [LinkSpec(LINKS[vantage], host, "svc") for vantage, host in VANTAGES.items()]
    with lab_or_skip(hosts=(*VANTAGES.values(), "svc"), links=links,
                     workdir=tmp_path_factory.mktemp("netlab-scale")) as lab:
        ip("addr", "add", f"{SERVICE}/32", "dev", "lo", netns=lab.hosts["svc"])
        for vantage, host in VANTAGES.items():
            link = lab.links[LINKS[vantage]]
            ip("route", "add", f"{SERVICE}/32", "via", link.right4, netns=lab.hosts[host])
        yield lab


def socket_url(server, url: str) -> str:
    """The database of *url* through the server's unix socket (reachable from every namespace)."""
    database = url.rsplit("/", 1)[1]
    return f"postgresql://{server.user}@/{database}?host={server.socket_dir}&port={server.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def leading(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return False
    return "probecore_judge_leader 1.0" in text


def wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_three_vantages_quorum_failover(lab, postgresql_server, postgresql_url, tmp_path):
    from probecore_plugins.postgresql import PostgreSQLStore

    url = socket_url(postgresql_server, postgresql_url)
    notices = tmp_path / "notices.txt"
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PROBECORE_DATA_DIR": str(tmp_path / "data")}
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, argv: list[str], host: str | None = None) -> None:
        with open(logs / f"{name}.log", "wb") as log:
            cmd = [sys.executable, "-m", "probecore", *argv]
            if host is None:
                procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL, stderr=log)
            else:
                procs[name] = lab.spawn(host, *cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=log)

    with lab.http_backend("svc", SERVICE) as port:
        checks = "".join(f'[[check]]\nid = "c{i}"\nprobe = "tcp"\nhost = "{SERVICE}"\nport = {port}\n'
                         for i in range(CHECKS))
        profile = tmp_path / "lab.toml"
        profile.write_text(PROFILE.format(checks=checks, notices=notices))
        judge_ports = {"j1": free_port(), "j2": free_port()}
        try:
            for name, metrics in judge_ports.items():
                start(name, ["judge", str(profile), "--store", url, "--poll", "200ms", "--metrics", f":{metrics}"])
            for name, vantage in (("bj1", "bj"), ("bj2", "bj"), ("sh", "sh"), ("gz", "gz")):
                start(name, ["agent", str(profile), "--vantage", vantage, "--store", url, "--lease", LEASE],
                      host=VANTAGES[vantage])
            wait(lambda: sum(leading(p) for p in judge_ports.values()) == 1, 30, "one leading judge")

            time.sleep(4)                                    # all well
            lab.links[LINKS["bj"]].down()                           # bj alone cut off
            time.sleep(5)
            lab.links[LINKS["bj"]].up()
            time.sleep(2)
            one_cut_over = time.time()
            procs["bj1"].send_signal(signal.SIGKILL)         # an agent of bj dies
            procs["bj1"].wait(10)
            time.sleep(5)
            killed_checked = time.time()

            leader = next(n for n, p in judge_ports.items() if leading(p))
            lab.links[LINKS["bj"]].down()                           # bj and sh cut off: a quorum
            lab.links[LINKS["sh"]].down()
            time.sleep(0.5)
            procs[leader].send_signal(signal.SIGKILL)        # the leading judge dies
            procs[leader].wait(10)
            survivor = next(n for n in judge_ports if n != leader)
            wait(lambda: leading(judge_ports[survivor]), 15, "the other judge to lead")
            time.sleep(6)
            lab.links[LINKS["bj"]].up()
            lab.links[LINKS["sh"]].up()
            time.sleep(6)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    output = {p.name: p.read_text(errors="replace") for p in logs.iterdir()}

    store = PostgreSQLStore(postgresql_url)
    try:
        events = list(store.events(prefix="lab/"))
        records = list(store.records(prefix="lab/"))
    finally:
        store.close()
    assert records, output
    # bj's lone cut: bj saw failures, but no incident opened before the quorum cut.
    bj_failures = [r for r in records if r.vantage == "bj" and r.outcome == "fail" and r.started.timestamp() < one_cut_over]
    assert bj_failures, output
    assert not [e for e in events if timestamp(e.at) < killed_checked], events
    # The killed bj agent's checks moved: every check has bj records in the seconds before the quorum cut.
    late_bj = {r.check for r in records if r.vantage == "bj" and killed_checked - 2.5 <= r.started.timestamp() < killed_checked}
    assert late_bj == {f"lab/c{i}" for i in range(CHECKS)}, output
    # Never a double probe: one attempt per (check, vantage, slot).
    assert max(Counter((r.check, r.vantage, r.scheduled_at) for r in records).values()) == 1
    # The quorum cut: every check confirmed and resolved once, on the merged rounds.
    kinds = Counter((e.check, e.kind) for e in events)
    for i in range(CHECKS):
        assert kinds[(f"lab/c{i}", "confirmed")] == 1 and kinds[(f"lab/c{i}", "resolved")] == 1, (kinds, output)
    assert {e.vantage for e in events} == {"quorum"}
    lines = notices.read_text().splitlines() if notices.exists() else []
    assert len([x for x in lines if "OUTAGE" in x]) == 1, (lines, output)
    assert len([x for x in lines if "resolved" in x]) == 1, (lines, output)


def timestamp(stamp: str) -> float:
    from probecore._record import parse_timestamp
    return parse_timestamp(stamp).timestamp()
