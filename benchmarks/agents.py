"""Agents benchmark: N ``probe agent`` processes of one vantage sharing C checks through a real
PostgreSQL, one ``probe judge`` following them; one agent killed (-9) half-way.

Run from the repository root::

    .venv/bin/python benchmarks/agents.py --short            # ~30 s
    .venv/bin/python benchmarks/agents.py --agents 4 --checks 2000 --interval 10s --seconds 60 --json
    .venv/bin/python benchmarks/scale.py --agents 3          # the same, through the scale benchmark

Each check is a ``tcp`` probe of a listener in this process (127.0.0.1), so an attempt costs a
connect. PostgreSQL is a cluster of our own (tests/servers/postgresql, fsync off) in a temp dir.
Figures (one JSON line with ``--json``):

- ``slots``, ``slots_missing``, ``slots_missing_allowed``: the slots of every check in the
  steady window (from one interval after all agents were up to one before the end), how many
  have no attempt, and how many the design allows (``lost_slots_limit`` per check of the killed
  agent), ``slots_missing_excess`` the missing beyond that; ``attempt_ratio`` = attempts ÷
  (slots − allowed);
- ``double_probes``: slots of a check attempted twice (must be 0: one owner per slot);
- ``lateness_p50_ms`` / ``p99`` / ``max``: slot → start, over every attempt of every agent;
- ``owned_min`` / ``owned_max``: checks per agent before the kill (rendezvous spread);
- ``lost_slots_max``: the most slots a check of the killed agent missed before another agent
  took it; ``lost_slots_limit`` = ⌈(lease + lease/3) / interval⌉, the design's bound (its lease
  runs out, then the others' next heartbeat);
- ``judge_ratio``: records the judge followed ÷ records stored (1: it saw every one).

Exit status: 0 thresholds met (double_probes 0, lost_slots_max <= its limit, slots_missing <=
slots_missing_allowed, judge_ratio >= 0.99), 1 a threshold failed, 2 bad usage or a crash.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "probecore.bench.agents/1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=None, help="agents of the vantage (default 3)")
    parser.add_argument("--checks", type=int, default=None, help="checks (default 1000; --short 150)")
    parser.add_argument("--interval", type=float, default=5.0, help="their interval in seconds (default 5)")
    parser.add_argument("--seconds", type=float, default=None, help="run time (default 40; --short 20)")
    parser.add_argument("--lease", type=float, default=3.0, help="agents' --lease in seconds (default 3)")
    parser.add_argument("--short", action="store_true", help="a quick run")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON line on stdout")
    args = parser.parse_args(argv)
    args.agents = args.agents or 3
    args.checks = args.checks or (150 if args.short else 1000)
    args.seconds = args.seconds or (20.0 if args.short else 40.0)
    if args.agents < 2 or args.checks < 1 or args.seconds < 4 * args.interval:
        parser.error("need at least 2 agents, 1 check, and --seconds of at least 4 intervals")
    return args


def listener() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
            text = response.read().decode()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name.split("{", 1)[0]] = float(value)
    return values


def run(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "plugins"))
    from probecore_plugins.postgresql import PostgreSQLStore
    from tests.servers.postgresql import start_postgresql

    server = start_postgresql()
    work = Path(tempfile.mkdtemp(prefix="probecore-agents-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        url = server.create_database()
        port = listener()
        checks = "".join(f'[[check]]\nid = "c{i}"\nprobe = "tcp"\nhost = "127.0.0.1"\nport = {port}\n'
                         for i in range(args.checks))
        profile = work / "fleet.toml"
        profile_text = (f'[profile]\nname = "fleet"\n[defaults]\ninterval = "{args.interval}s"\n'
                        f'timeout = "1s"\nvantages = ["v"]\nquorum = 1\n{checks}')
        profile.write_text(profile_text)
        from probecore import load_profile
        from probecore.testing import make_host
        profile_checks = load_profile(profile, make_host().probes).checks
        env = {**os.environ, "PROBECORE_DATA_DIR": str(work / "data")}
        metrics = [free_port() for _ in range(args.agents + 1)]

        def start(argv: list[str], name: str) -> None:
            with open(work / f"{name}.log", "wb") as log:
                procs.append(subprocess.Popen([sys.executable, "-m", "probecore", *argv], cwd=ROOT, env=env,
                                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log))

        start(["judge", str(profile), "--store", url, "--metrics", f":{metrics[0]}"], "judge")
        for k in range(args.agents):
            start(["agent", str(profile), "--vantage", "v", "--store", url, "--lease", f"{args.lease}s",
                   "--metrics", f":{metrics[k + 1]}"], f"agent{k}")
        deadline = time.monotonic() + 120  # started processes on a loaded machine take a while
        while any(scrape(p).get("probecore_agent_members") != args.agents for p in metrics[1:]):
            if time.monotonic() > deadline:
                raise SystemExit("the agents did not all start within 120 s (see the logs in " + str(work) + ")")
            time.sleep(0.2)
        begin = time.time()
        time.sleep(args.seconds / 2)
        owned = [scrape(p).get("probecore_agent_owned_checks", 0.0) for p in metrics[1:]]
        victim = procs[1]
        victim.send_signal(signal.SIGKILL)
        killed_at = time.time()
        victim.wait()
        time.sleep(args.seconds / 2)
        end = time.time()
        for proc in procs[1:] + procs[:1]:  # the agents first; the judge reads what they stored
            if proc is procs[0]:
                time.sleep(3.0)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        # The judge prints its figures as one JSON line when it stops.
        last = (work / "judge.log").read_text().strip().splitlines()[-1]
        judge_followed = json.loads(last)["records"] if last.startswith("{") else 0
        store = PostgreSQLStore(url)
        try:
            records = list(store.records(prefix="fleet/"))
        finally:
            store.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        server.stop()

    # The steady window: from one interval after every agent was up, to the end.
    settle = begin + args.interval
    window = [r for r in records if settle <= r.scheduled.timestamp() < end - args.interval]
    lateness = sorted(max(0.0, r.lateness_s) * 1000 for r in window)
    slots = Counter((r.check, r.scheduled_at) for r in records)
    by_check: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_check[r.check].append(r.started.timestamp())
    gaps = []
    for starts in by_check.values():
        starts.sort()
        around = [b - a for a, b in zip(starts, starts[1:]) if a <= killed_at + args.interval and b >= killed_at]
        gaps.extend(around)
    lost = max((round(g / args.interval) - 1 for g in gaps), default=0)
    limit = math.ceil((args.lease + args.lease / 3) / args.interval)
    # Every slot of every check in the window (each check's phase is its own), against the
    # attempts stored; a killed agent's checks may miss `limit` slots each.
    offsets = {c.full_id: c.phase_offset for c in profile_checks}
    expected = 0
    for offset in offsets.values():
        k = math.ceil((settle - offset) / args.interval)
        while k * args.interval + offset < end - args.interval:
            expected += 1
            k += 1
    missing = expected - len(window)
    allowed = int(owned[0]) * limit
    figures = {
        "schema": SCHEMA, "agents": args.agents, "checks": args.checks, "interval_s": args.interval,
        "seconds": round(end - begin, 1), "lease_s": args.lease, "records": len(records),
        "slots": expected, "slots_missing": missing, "slots_missing_allowed": allowed,
        "slots_missing_excess": max(0, missing - allowed),
        "attempt_ratio": round(len(window) / (expected - allowed), 4) if expected > allowed else None,
        "double_probes": sum(1 for n in slots.values() if n > 1),
        "lateness_p50_ms": round(statistics.median(lateness), 2) if lateness else None,
        "lateness_p99_ms": round(lateness[int(0.99 * (len(lateness) - 1))], 2) if lateness else None,
        "lateness_max_ms": round(lateness[-1], 2) if lateness else None,
        "owned_min": min(owned), "owned_max": max(owned),
        "lost_slots_max": lost, "lost_slots_limit": limit,
        "judge_ratio": round(judge_followed / len(records), 4) if records else None,
    }
    figures["passed"] = (figures["double_probes"] == 0 and lost <= limit and missing <= allowed and (figures["judge_ratio"] or 0) >= 0.99)
    return figures


def show(f: dict[str, Any]) -> None:
    print(f"{f['agents']} agents, {f['checks']} checks every {f['interval_s']:g}s for {f['seconds']:g}s "
          f"(lease {f['lease_s']:g}s), one agent killed half-way")
    rows = [("slots / missing (allowed)", f"{f['slots']} / {f['slots_missing']} ({f['slots_missing_allowed']})"),
            ("attempts / slots not allowed to miss", f["attempt_ratio"]), ("double probes", f["double_probes"]),
            ("lateness p50 / p99 / max ms", f"{f['lateness_p50_ms']} / {f['lateness_p99_ms']} / {f['lateness_max_ms']}"),
            ("checks per agent (min / max)", f"{f['owned_min']:g} / {f['owned_max']:g}"),
            ("slots lost by a killed agent's checks (limit)", f"{f['lost_slots_max']} ({f['lost_slots_limit']})"),
            ("judge followed / stored", f["judge_ratio"]), ("passed", f["passed"])]
    for name, value in rows:
        print(f"  {name:32} {value}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        figures = run(args)
    except KeyboardInterrupt:
        return 2
    if args.json:
        sys.stdout.write(json.dumps(figures) + "\n")
    else:
        show(figures)
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
