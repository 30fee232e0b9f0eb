"""``probe agent`` and ``probe judge``: probecore over a shared PostgreSQL store.

A three-vantage deployment is one judge (or several, for high availability) and any number of
agents per vantage, all pointed at the same ``--store postgresql://…``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import trio

from ._errors import UsageError
from ._plugins import PluginHost
from ._profile import load_profile
from ._scheduler import DEFAULT_MAX_CONCURRENCY, DEFAULT_PER_HOST
from ._store import open_store

PROG = "probe"


def add_parsers(sub: Any) -> None:
    """Add ``probe agent`` and ``probe judge`` to the ``probe`` parser's *sub* parsers."""
    from ._cli import _duration, _positive

    agent = sub.add_parser(
        "agent", help="run the probes of one vantage and write records to a shared store",
        description="Run the checks of PROFILEs that run from --vantage (those whose vantages name "
        "it, and those naming none) and store every record in the shared --store. Agents of one "
        "vantage share its checks (a check runs on one of them at a time; an agent that dies has "
        "its checks taken over after its --lease). No incidents, no notices: 'probe judge' does that.",
        epilog="Example: probe agent site.toml --vantage bj --store postgresql://probe@db/probe --metrics :9464")
    agent.add_argument("profiles", metavar="PROFILE", nargs="+", help="service profiles (TOML)")
    agent.add_argument("--vantage", metavar="NAME", required=True, help="where this agent probes from")
    _shared_store_option(agent)
    agent.add_argument("--lease", metavar="DURATION", type=_duration, default=None,
                       help='how long a silent agent keeps its checks (default "15s", or 3/4 of the '
                       'shortest check interval if less, at least 1.5s; heartbeats every third of it)')
    agent.add_argument("--for", dest="run_for", metavar="DURATION", default=None, type=_duration,
                       help='stop after DURATION (default: until SIGINT/SIGTERM)')
    agent.add_argument("--max-concurrency", type=_positive, default=DEFAULT_MAX_CONCURRENCY, metavar="N",
                       help=f"attempts in flight at once (default {DEFAULT_MAX_CONCURRENCY})")
    agent.add_argument("--per-host", type=_positive, default=DEFAULT_PER_HOST, metavar="N",
                       help=f"attempts in flight at once against one host (default {DEFAULT_PER_HOST})")
    metrics_option(agent)

    judge = sub.add_parser(
        "judge", help="follow every agent's records, track incidents (vantage quorum), send notices",
        description="Follow the records every agent writes to the shared --store, run the incident "
        "tracker (with the vantage quorum of checks that name vantages), and own the notification "
        "outbox: each notice is sent once however many agents saw the outage. Several judges may "
        "run: one leads (a PostgreSQL advisory lock), the others take over when it stops.",
        epilog="Example: probe judge site.toml --store postgresql://probe@db/probe --metrics :9465")
    judge.add_argument("profiles", metavar="PROFILE", nargs="+", help="service profiles (TOML)")
    _shared_store_option(judge)
    judge.add_argument("--name", default="default",
                       help="leader lock name: judges with the same name share one leader (default: default)")
    judge.add_argument("--poll", metavar="DURATION", type=_duration, default=1.0,
                       help='how often to look for new records and for the lock (default "1s")')
    judge.add_argument("--for", dest="run_for", metavar="DURATION", default=None, type=_duration,
                       help='stop after DURATION (default: until SIGINT/SIGTERM)')
    metrics_option(judge)


def _shared_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="URL", required=True,
                        help="the shared store: postgresql://USER@HOST[:PORT]/DATABASE (password from "
                        "~/.pgpass or PGPASSWORD)")


def metrics_option(parser: argparse.ArgumentParser) -> None:
    """``--metrics [HOST]:PORT``: serve Prometheus metrics (``/metrics``)."""
    parser.add_argument("--metrics", metavar="[HOST]:PORT", default=None, type=metrics_address,
                        help="serve Prometheus metrics at http://HOST:PORT/metrics; ':9464' binds "
                        "127.0.0.1 only (give 0.0.0.0:9464 to expose them)")


def metrics_address(text: str) -> tuple[str, int]:
    """``":9464"`` or ``"9464"`` → ``("127.0.0.1", 9464)``; ``"0.0.0.0:9464"``, ``"[::]:9464"``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected [HOST]:PORT like :9464, got {text!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port {number} is out of range (0-65535)")
    return host, number


def _profiles(args: argparse.Namespace, host: PluginHost) -> list[Any]:
    return [load_profile(p, host.probes, host.evaluators, host.notifiers) for p in args.profiles]


def cmd_agent(args: argparse.Namespace, host: PluginHost) -> int:
    from ._agent import AgentOptions, run_agent

    profiles = _profiles(args, host)
    options = AgentOptions(vantage=args.vantage, lease=args.lease, duration=args.run_for,
                           max_concurrency=args.max_concurrency, per_host=args.per_host)
    store = open_store(args.store, host.stores.get)
    try:
        metrics = _serve_metrics(args.metrics, "agent", vantage=args.vantage)
        print(f"probe agent {options.agent_id}: vantage {args.vantage} · store {store.url} · "
              f"{', '.join(p.name for p in profiles)}"
              + (f" · metrics http://{_show(args.metrics)}/metrics" if metrics else ""), file=sys.stderr)

        def started(scheduler: Any, membership: Any) -> None:
            if metrics is not None:
                metrics.watch_scheduler(scheduler)
                metrics.watch_membership(membership)

        observed = [metrics.observed] if metrics is not None else []
        result = trio.run(lambda: run_agent(profiles, host, store, options, on_observed=observed,
                                            on_started=started))
    finally:
        store.close()
    print(f"probe agent {options.agent_id}: stopped"
          f"{' by ' + result.stopped_by if result.stopped_by else ''}: {result.stored_records} records stored",
          file=sys.stderr)
    return 0


def cmd_judge(args: argparse.Namespace, host: PluginHost) -> int:
    from ._judge import JudgeOptions, describe, run_judge

    profiles = _profiles(args, host)
    options = JudgeOptions(name=args.name, poll=args.poll, duration=args.run_for)
    store = open_store(args.store, host.stores.get)
    try:
        metrics = _serve_metrics(args.metrics, "judge")
        print(f"probe judge {options.judge_id}: store {store.url} · {', '.join(p.name for p in profiles)}"
              + (f" · metrics http://{_show(args.metrics)}/metrics" if metrics else ""), file=sys.stderr)

        async def main() -> Any:
            async with trio.open_nursery() as nursery:
                def started(judge: Any) -> None:
                    if metrics is not None:
                        metrics.watch_judge(judge)
                        nursery.start_soon(metrics.refresh_store, store, profiles, host.evaluators)
                judge = await run_judge(profiles, host, store, options, on_started=started)
                nursery.cancel_scope.cancel()
            return judge

        judge = trio.run(main)
    finally:
        store.close()
    print(describe(judge), file=sys.stderr)
    return 0


def _show(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _serve_metrics(address: tuple[str, int] | None, role: str, **labels: str) -> Any:
    if address is None:
        return None
    from ._metrics import Metrics

    metrics = Metrics(role)
    try:
        metrics.serve(*address)
    except OSError as exc:
        raise UsageError(f"probe {role}: --metrics {_show(address)}: cannot listen: {exc.strerror}") from None
    return metrics


def with_metrics(address: tuple[str, int] | None, role: str, store: Any, profiles: list[Any],
                 host: PluginHost) -> Callable[[Callable[..., Any]], Any]:
    """``trio.run`` for ``probe run``: with ``--metrics``, also serve them and refresh the
    store's figures (outbox, objectives) beside the run. The function given is called with the
    ``on_observed`` callbacks and the ``on_started`` callback to pass to the run."""
    metrics = _serve_metrics(address, role)

    def run(function: Callable[..., Any]) -> Any:
        if metrics is None:
            return trio.run(lambda: function([], None))

        async def main() -> Any:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(metrics.refresh_store, store, profiles, host.evaluators)
                result = await function([metrics.observed], metrics.watch_scheduler)
                nursery.cancel_scope.cancel()
            return result
        try:
            return trio.run(main)
        finally:
            metrics.close()
    return run


COMMANDS: dict[str, Callable[..., int]] = {"agent": cmd_agent, "judge": cmd_judge}
