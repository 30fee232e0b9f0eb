"""``probe notify test`` and ``probe notify list``: try a route's channels, and read the outbox.

* ``probe notify test PROFILE ROUTE`` sends a test notice (kind ``test``, about no incident)
  through every channel of ROUTE now, each with the route's timeout, and prints per channel
  ``delivered`` or the one-line error. The notice is stored in the outbox like any other, with
  its attempt, so ``probe notify list`` shows it; a test that failed is not retried later (it is
  marked expired at once: run the test again once the channel is fixed). Exit status 0 when
  every channel delivered, 1 otherwise.
* ``probe notify list PROFILE`` lists the outbox: every delivery, its status and attempts.

Errors are scrubbed of the secrets the channel revealed before they are printed or stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import trio

from ._durations import format_duration
from ._errors import UsageError
from ._notify import (
    ChannelConfig,
    Delivery,
    DeliveryContext,
    DeliveryError,
    Notifier,
    RouteConfig,
    Router,
    test_notice,
)
from ._plugins import PluginHost
from ._profile import Profile, load_profile
from ._record import format_timestamp_ms

PROG = "probe"
STATUSES = ("pending", "delivered", "expired")
HOLD_S = 3600.0
"""A test delivery is not due for a running ``probe run`` until this long after the route's
timeout (``probe notify test`` itself attempts it at once)."""


def add_parsers(sub: Any) -> None:
    """Add ``probe notify`` to the ``probe`` parser's *sub* parsers."""
    from ._cli import _store_option

    notify = sub.add_parser(
        "notify", help="send a test notice through a route, or list the notification outbox",
        description="Notices go out through the [[channel]]s of a profile's [[notify]] routes; "
        "'probe run' queues them in the store's outbox and retries them until delivered or expired.",
        epilog="probe notify test PROFILE ROUTE; probe notify list PROFILE [--status S]")
    actions = notify.add_subparsers(dest="action", metavar="ACTION", required=True)
    test = actions.add_parser(
        "test", help="send a test notice through every channel of a route, now",
        description="Send a test notice (kind \"test\", about no incident) through every channel "
        "of ROUTE at once, each with the route's timeout, and print per channel 'delivered' or "
        "why not. The notice and its attempts are stored in the outbox ('probe notify list'); a "
        "failed test is not retried later.",
        epilog="Exit status: 0 every channel delivered, 1 any did not, 2 bad usage or profile.")
    test.add_argument("profile", metavar="PROFILE", help="service profile (TOML)")
    test.add_argument("route", metavar="ROUTE", help="id of a [[notify]] route of PROFILE")
    _store_option(test)
    listing = actions.add_parser(
        "list", help="list the notification outbox: deliveries, status, attempts",
        description="List every notice delivery of PROFILE in the order they were queued: event "
        "and kind, route, channel, status, attempts, when it was queued, when it was delivered or "
        "is next attempted, and the last error.")
    listing.add_argument("profile", metavar="PROFILE", help="service profile (TOML)")
    listing.add_argument("--status", choices=STATUSES, default=None, help="only deliveries with this status")
    listing.add_argument("--format", choices=("table", "json"), default="table",
                         help="table (default) or json (one delivery per line)")
    _store_option(listing)


def cmd_notify(args: argparse.Namespace, host: PluginHost) -> int:
    return {"test": _notify_test, "list": _notify_list}[args.action](args, host)


# ---- helpers -------------------------------------------------------------------------------------

def _profile(args: argparse.Namespace, host: PluginHost) -> Profile:
    return load_profile(args.profile, host.probes, host.evaluators, host.notifiers)


def _open(args: argparse.Namespace, profile: Profile, host: PluginHost) -> Any:
    from ._cli import _open as open_cli_store

    return open_cli_store(args.store, profile.name, host)


def _route(profile: Profile, route_id: str, command: str) -> RouteConfig:
    routes: tuple[RouteConfig, ...] = tuple(profile.route_configs)
    for route in routes:
        if route.id == route_id:
            return route
    if not routes:
        raise UsageError(f"{PROG} {command}: profile {profile.name} has no [[notify]] routes")
    raise UsageError(f"{PROG} {command}: no route {route_id!r} in profile {profile.name}; "
                     f"its routes: {', '.join(r.id for r in routes)}")


def _now_ms() -> int:
    return int(datetime.now(timezone.utc).timestamp() * 1000)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---- probe notify test ---------------------------------------------------------------------------

def _notify_test(args: argparse.Namespace, host: PluginHost) -> int:
    command = "notify test"
    profile = _profile(args, host)
    route = _route(profile, args.route, command)
    configs: dict[str, ChannelConfig] = {c.id: c for c in profile.channels}
    channels: dict[str, tuple[Notifier[Any], ChannelConfig]] = {
        cid: (host.notifiers.get(configs[cid].kind)(), configs[cid]) for cid in route.channels}
    now = _now_ms()
    notice = test_notice(profile, route, now)
    queued = Router(profile).for_route(route, notice)
    # Not due for a 'probe run' working on the same store while this command attempts them.
    hold = now + round((max(float(route.expire_after), float(route.timeout)) + HOLD_S) * 1000)
    for delivery in queued:
        delivery.next_ms = delivery.expire_ms = hold
    store = _open(args, profile, host)
    try:
        store.enqueue(queued)
        stored = {d.channel: d for d in store.deliveries(profile.name) if d.event_id == notice.event_id}
        missing = [d.channel for d in queued if d.channel not in stored or stored[d.channel].id is None]
        if missing:
            raise UsageError(f"{PROG} {command}: the store {store.url} did not keep the test delivery "
                             f"to {', '.join(missing)}")
        print(f"test notice {notice.notice_id} through route {route.id} "
              f"({len(route.channels)} channel{'s' if len(route.channels) != 1 else ''}, "
              f"timeout {format_duration(float(route.timeout))})", file=sys.stderr)
        outcomes = trio.run(_send_all, channels, route, notice)
        failed = 0
        for channel in route.channels:
            error, at = outcomes[channel]
            delivery = stored[channel]
            assert delivery.id is not None
            store.record_attempt(delivery.id, at, error is None, error, None, False)
            if error is not None:
                failed += 1
                store.record_attempt(delivery.id, at, False, error, None, True)  # a test is not retried
            print(f"{channel} ({_target(*channels[channel])}): "
                  + ("delivered" if error is None else f"not delivered: {error}"))
    finally:
        store.close()
    if failed:
        print(f"{failed} of {len(route.channels)} channels did not deliver the test notice; "
              f"'probe notify list {args.profile}' lists it", file=sys.stderr)
        return 1
    return 0


def _target(notifier: Notifier[Any], config: ChannelConfig) -> str:
    """Where the channel sends, as its notifier shows it (never a secret); the kind when the
    notifier cannot tell."""
    try:
        return _one_line(str(notifier.target(config))) or config.kind
    except Exception:
        return config.kind


async def _send_all(channels: dict[str, tuple[Notifier[Any], ChannelConfig]], route: RouteConfig,
                    notice: Any) -> dict[str, tuple[str | None, int]]:
    """Send *notice* through every channel at once; per channel ``(error or None, when)``."""
    outcomes: dict[str, tuple[str | None, int]] = {}

    async def one(channel: str) -> None:
        notifier, config = channels[channel]
        outcomes[channel] = (await attempt(notifier, config, notice, float(route.timeout)), _now_ms())

    async with trio.open_nursery() as nursery:
        for channel in channels:
            nursery.start_soon(one, channel)
    return outcomes


async def attempt(notifier: Notifier[Any], config: ChannelConfig, notice: Any, timeout: float) -> str | None:
    """One attempt, as the delivery worker makes it: ``None`` when delivered, else the one-line
    error with the secrets the notifier revealed scrubbed out."""
    ctx = DeliveryContext(timeout)
    try:
        with trio.fail_after(ctx.timeout):
            await notifier.send(config, notice, ctx)
    except trio.TooSlowError:
        return f"timed out after {format_duration(ctx.timeout)}"
    except DeliveryError as exc:
        return _one_line(ctx.scrub(str(exc))) or "not delivered"
    except Exception as exc:  # a notifier bug is that channel's failure, not the command's
        return _one_line(ctx.scrub(f"{type(exc).__name__}: {exc}"))
    return None


# ---- probe notify list ---------------------------------------------------------------------------

def _row(delivery: Delivery) -> dict[str, Any]:
    pending = delivery.status == "pending"
    return {
        "id": delivery.id, "event_id": delivery.event_id, "kind": delivery.notice.kind,
        "route": delivery.route, "channel": delivery.channel, "status": delivery.status,
        "attempts": delivery.attempts, "created_at": format_timestamp_ms(delivery.created_ms),
        "next_attempt_at": format_timestamp_ms(delivery.next_ms) if pending else None,
        "delivered_at": format_timestamp_ms(delivery.delivered_ms) if delivery.delivered_ms is not None else None,
        "last_error": delivery.last_error, "notice_id": delivery.notice.notice_id,
        "check": delivery.notice.check, "incident": delivery.notice.incident,
    }


def _notify_list(args: argparse.Namespace, host: PluginHost) -> int:
    profile = _profile(args, host)
    store = _open(args, profile, host)
    try:
        deliveries = store.deliveries(profile.name, args.status)
    finally:
        store.close()
    rows = [_row(d) for d in deliveries]
    if args.format == "json":
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return 0
    from rich.table import Table
    from rich.text import Text

    from ._display import make_console

    what = f"{args.status} deliveries" if args.status else "deliveries"
    table = Table(title=f"{len(rows)} {what} of {profile.name}", title_justify="left")
    for name in ("id", "event", "kind", "route", "channel", "status", "attempts", "created",
                 "delivered / next attempt", "last error"):
        table.add_column(name, overflow="fold")
    for row in rows:
        when = row["delivered_at"] or (f"next {row['next_attempt_at']}" if row["next_attempt_at"] else "–")
        # Text: an error message may hold [brackets] that rich would read as markup.
        table.add_row(str(row["id"]), Text(row["event_id"]), row["kind"], row["route"], row["channel"],
                      row["status"], str(row["attempts"]), row["created_at"], when,
                      Text(row["last_error"] or ""))
    console = make_console()
    console.print(table)
    if rows:
        counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
        console.print(", ".join(f"{n} {s}" for s, n in counts.items() if n or not args.status))
    return 0


COMMANDS: dict[str, Callable[..., int]] = {"notify": cmd_notify}
