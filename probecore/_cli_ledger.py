"""``probe push``, ``probe exclude`` and ``probe incident``: evidence people add after the fact.

* ``probe push`` stores one record for a passive check (``probe = "push"``: backups, tickets)
  and the incident events it causes, exactly as ``probe run`` would have;
* ``probe exclude add|list|withdraw`` keeps exclusions entered after the fact (force majeure,
  customer-caused periods …) with who entered them and when; a withdrawn one stays listed;
* ``probe incident report|list`` records when the customer reported an outage (002: outages
  not reported within 5 days are excluded) and lists the incidents;
* ``probe notice add|list|import`` records notices sent outside probecore (002-T's evidence).

Incidents are those of the stored records: the events ``probe run`` stored, and the same events
derived from the records by the one state machine where no tracker saw them live (records
brought in with ``probe records import``), with the same ids ``probe report`` prints — so a month
can be judged, and its evidence entered, from exported data alone.

Every error is a one-line :class:`UsageError` (exit status 2); nothing stored is changed or
removed by a command that fails.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from ._annotations import EXCLUSION_REASONS, Annotation, encode_annotation
from ._errors import UsageError
from ._groups import parent_check
from ._incidents import IncidentEvent, IncidentTracker
from ._plugins import PluginHost
from ._profile import Check, Profile, load_profile
from ._quorum import merge_vantages
from ._record import ATTRIBUTIONS, Failure, SLIRecord, format_timestamp, parse_timestamp, timestamp_ms
from ._store import Store
from ._timeline import Stream, stream_events

PROG = "probe"

FUTURE_TOLERANCE_S = 60.0
"""How far ahead of this host's clock a given time may be (clock skew), for --at."""

TIME_HELP = ("T is RFC 3339 (2026-11-01T00:00:00+08:00), a date or a naive date-time in the "
             "profile's time zone (2026-11-01), or an age like 2h (that long ago).")


def add_parsers(sub: Any) -> None:
    """Add this module's subcommands to the ``probe`` parser's *sub* parsers."""
    from ._cli import _store_option

    push = sub.add_parser(
        "push", help="store a record pushed from outside for a push check (backups, tickets)",
        description="Store one SLI record for CHECK, a check of PROFILE with probe = \"push\" "
        "(the scheduler never runs those): e.g. a backup job reporting its result. The record "
        "counts like a measured one: it feeds the check's incidents and the report.",
        epilog=TIME_HELP + " Pushing the same check and vantage at the same instant again "
        "changes nothing.")
    push.add_argument("profile", metavar="PROFILE", help="service profile (TOML)")
    push.add_argument("check", metavar="CHECK", help="id of a check with probe = \"push\"")
    push.add_argument("--outcome", required=True, choices=("ok", "fail"),
                      help="ok, or fail (the service failed)")
    push.add_argument("--value", type=_finite, default=None, metavar="X",
                      help="the measured number, in the check's unit (e.g. seconds to answer a ticket)")
    push.add_argument("--at", metavar="T", default=None, help="when it happened (default: now)")
    push.add_argument("--code", metavar="CODE", default=None,
                      help="with --outcome fail: a machine name for the failure (default pushed_failure)")
    push.add_argument("--message", metavar="TEXT", default=None,
                      help="with --outcome fail: one line saying what failed (default 'reported by probe push')")
    push.add_argument("--attribution", choices=ATTRIBUTIONS, default=None,
                      help="with --outcome fail: whose fault it is (default provider)")
    push.add_argument("--vantage", metavar="NAME", default=None,
                      help="who reports it, for the record (default: the host name)")
    _store_option(push)

    exclude = sub.add_parser(
        "exclude", help="add, list or withdraw exclusions entered after the fact",
        description="Exclusions are periods the report does not count against the provider "
        "(force majeure, customer-caused, third party, unannounced maintenance). Each one keeps "
        "who entered it, when, and why; withdrawing one keeps it, marked withdrawn.",
        epilog="probe exclude add PROFILE --from T --to T --reason REASON --note TEXT; "
        "probe exclude list PROFILE; probe exclude withdraw PROFILE ID --note TEXT")
    actions = exclude.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add", help="enter an exclusion", description="Exclude [--from, --to) of one check, "
        "or of every check of PROFILE, from the report, for a reason and with a note saying why.",
        epilog=TIME_HELP + " Prints the new exclusion's id.")
    add.add_argument("profile", metavar="PROFILE", help="service profile (TOML)")
    add.add_argument("--check", metavar="ID", default=None,
                     help="the check it applies to (default: every check of the profile)")
    add.add_argument("--from", dest="start", metavar="T", required=True, help="first excluded instant")
    add.add_argument("--to", dest="end", metavar="T", required=True, help="first instant no longer excluded")
    add.add_argument("--reason", required=True, choices=EXCLUSION_REASONS,
                     help="why the time is excluded: " + ", ".join(EXCLUSION_REASONS))
    add.add_argument("--note", metavar="TEXT", required=True,
                     help="what happened (the evidence: ticket number, notice, …)")
    add.add_argument("--by", metavar="NAME", default=None, help="who enters it (default: your user name)")
    _store_option(add)
    listing = actions.add_parser(
        "list", help="list the exclusions, withdrawn ones included",
        description="List every exclusion of PROFILE, oldest first; withdrawn ones are listed "
        "too, marked withdrawn, with who withdrew them, when and why.")
    listing.add_argument("profile", metavar="PROFILE", help="service profile (TOML)")
    listing.add_argument("--format", choices=("table", "json"), default="table",
                         help="table (default) or json (one annotation per line)")
    _store_option(listing)
    withdraw = actions.add_parser(
        "withdraw", help="withdraw an exclusion (it stays listed, marked withdrawn)",
        description="Withdraw exclusion ID of PROFILE: the report no longer applies it, and "
        "'probe exclude list' shows it withdrawn, with who, when and why.")
    withdraw.add_argument("profile", metavar="PROFILE", help="service profile (TOML)")
    withdraw.add_argument("id", metavar="ID", type=_annotation_id, help="the id 'probe exclude list' shows")
    withdraw.add_argument("--note", metavar="TEXT", required=True, help="why it is withdrawn")
    withdraw.add_argument("--by", metavar="NAME", default=None, help="who withdraws it (default: your user name)")
    _store_option(withdraw)

    incident = sub.add_parser(
        "incident", help="list incidents, or record when the customer reported one",
        description="Incidents are found by 'probe run' (and 'probe push'). Under some "
        "agreements an outage the customer did not report in time is excluded: "
        "'probe incident report' records when it was reported.",
        epilog="probe incident list PROFILE; probe incident report PROFILE INCIDENT [--at T]")
    actions = incident.add_subparsers(dest="action", metavar="ACTION", required=True)
    report = actions.add_parser(
        "report", help="record when the customer reported an incident",
        description="Record that the customer reported INCIDENT (an incident id from "
        "'probe incident list PROFILE') at T.", epilog=TIME_HELP)
    report.add_argument("profile", metavar="PROFILE", help="service profile (TOML)")
    report.add_argument("incident", metavar="INCIDENT", help="the incident id")
    report.add_argument("--at", metavar="T", default=None, help="when it was reported (default: now)")
    report.add_argument("--note", metavar="TEXT", default="", help="how it was reported (ticket, mail …)")
    report.add_argument("--by", metavar="NAME", default=None, help="who enters it (default: your user name)")
    _store_option(report)
    ilist = actions.add_parser(
        "list", help="list the stored incidents and when they were reported",
        description="List the incidents stored for PROFILE: id, check, vantage, when it began, "
        "when it was confirmed and resolved, and when the customer reported it.")
    ilist.add_argument("profile", metavar="PROFILE", help="service profile (TOML)")
    ilist.add_argument("--format", choices=("table", "json"), default="table",
                       help="table (default) or json (one incident per line)")
    _store_option(ilist)

    notice = sub.add_parser(
        "notice", help="record notices of incidents sent outside probecore",
        description="A notice the provider sent outside probecore (a phone call, a mail from a "
        "person, another monitoring system) is evidence for the notification objectives (002-T: "
        "within 15 minutes of the emergency being determined). Enter each one, or import them.",
        epilog="probe notice add PROFILE --incident ID --at T --channel CHANNEL --to WHOM; "
        "probe notice list PROFILE; probe notice import PROFILE FILE.jsonl")
    actions = notice.add_subparsers(dest="action", metavar="ACTION", required=True)
    nadd = actions.add_parser(
        "add", help="record one notice", description="Record that the notice of INCIDENT (an id "
        "from 'probe incident list PROFILE') reached WHOM at T through CHANNEL.", epilog=TIME_HELP)
    nadd.add_argument("profile", metavar="PROFILE", help="service profile (TOML)")
    nadd.add_argument("--incident", metavar="ID", required=True, help="the incident id")
    nadd.add_argument("--at", metavar="T", required=True, help="when the notice reached the contact")
    nadd.add_argument("--channel", metavar="CHANNEL", required=True, help="how: email, phone, sms …")
    nadd.add_argument("--to", metavar="WHOM", required=True, help="the contact it reached")
    nadd.add_argument("--note", metavar="TEXT", default="", help="the evidence (message id, call log …)")
    nadd.add_argument("--by", metavar="NAME", default=None, help="who enters it (default: your user name)")
    _store_option(nadd)
    nlist = actions.add_parser("list", help="list the notices (delivered by probe run or entered)",
                               description="List every notice of PROFILE, oldest first.")
    nlist.add_argument("profile", metavar="PROFILE", help="service profile (TOML)")
    nlist.add_argument("--format", choices=("table", "json"), default="table",
                       help="table (default) or json (one annotation per line)")
    _store_option(nlist)
    nimport = actions.add_parser(
        "import", help="record notices from a JSON Lines file",
        description='Each line: {"incident": ID, "at": T, "channel": CHANNEL, "to": WHOM, "note": TEXT} '
        "(note optional), as 'probe notice add' takes them. Every line is checked first: one bad "
        "line stores nothing. A notice already stored (same incident, time, channel and contact) "
        "is skipped.", epilog=TIME_HELP)
    nimport.add_argument("profile", metavar="PROFILE", help="service profile (TOML)")
    nimport.add_argument("file", metavar="FILE", help="JSON Lines file ('-': stdin)")
    nimport.add_argument("--by", metavar="NAME", default=None, help="who enters them (default: your user name)")
    _store_option(nimport)


# ---- argument types ---------------------------------------------------------------------------

def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _annotation_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an id like 3 (see 'probe exclude list'), got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an id of at least 1, got {value}")
    return value


# ---- helpers -----------------------------------------------------------------------------------

def _now() -> str:
    return format_timestamp(datetime.now(timezone.utc))


def _when(text: str | None, profile: Profile, option: str, command: str) -> str | None:
    """*text* (``--at`` …) as a UTC timestamp, with errors naming *command*."""
    from ._cli import _moment

    return _moment(text, profile, option, command)


def _not_in_future(moment: str, option: str, command: str) -> None:
    limit = datetime.now(timezone.utc) + timedelta(seconds=FUTURE_TOLERANCE_S)
    if parse_timestamp(moment) > limit:
        raise UsageError(f"{PROG} {command}: {option} {moment} is in the future; "
                         "evidence is entered after the fact")


def _text(value: str | None, option: str, command: str, what: str) -> str:
    text = (value or "").strip()
    if not text:
        raise UsageError(f"{PROG} {command}: {option} must not be empty: {what}")
    if "\n" in text or "\r" in text:
        raise UsageError(f"{PROG} {command}: {option} must be one line")
    return text


def _author(by: str | None, command: str) -> str:
    if by is not None:
        return _text(by, "--by", command, "say who enters it")
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (containers): make it explicit
        raise UsageError(f"{PROG} {command}: cannot tell who you are; name yourself with --by NAME") from None


def _open(args: argparse.Namespace, profile: Profile, host: PluginHost) -> Store:
    from ._cli import _open as open_cli_store

    return open_cli_store(args.store, profile.name, host)


def _print_table(table: Any, footer: str | None = None) -> None:
    from ._display import make_console

    console = make_console()
    console.print(table)
    if footer:
        console.print(footer)


# ---- probe push --------------------------------------------------------------------------------

def cmd_push(args: argparse.Namespace, host: PluginHost) -> int:
    from ._runner import default_vantage

    command = "push"
    profile = load_profile(args.profile, host.probes)
    check = profile.check(args.check)
    kind = host.probes.get(check.probe)
    if not getattr(kind, "passive", False):
        raise UsageError(f'{PROG} {command}: check "{check.id}" has probe = "{check.probe}", which '
                         "'probe run' measures; only a passive check (probe = \"push\") takes pushed records")
    if args.outcome == "ok":
        given = [o for o, v in (("--code", args.code), ("--message", args.message),
                                ("--attribution", args.attribution)) if v is not None]
        if given:
            raise UsageError(f"{PROG} {command}: {', '.join(given)} only go with --outcome fail")
    at = _when(args.at, profile, "--at", command) or _now()
    _not_in_future(at, "--at", command)
    vantage = _text(args.vantage, "--vantage", command, "name who reports it") if args.vantage is not None \
        else default_vantage()
    failure = None
    if args.outcome == "fail":
        code = args.code if args.code is not None else "pushed_failure"
        if not code or any(c.isspace() for c in code):
            raise UsageError(f"{PROG} {command}: --code: expected a machine name like backup_missing, got {code!r}")
        message = (_text(args.message, "--message", command, "say what failed")
                   if args.message is not None else "reported by probe push")
        failure = Failure(code, args.attribution or "provider", message)
    record = SLIRecord(
        check=check.full_id, probe=check.probe, target=_target(kind, check), vantage=vantage,
        scheduled_at=at, started_at=at, duration_s=0.0, outcome=args.outcome, value=args.value,
        unit=getattr(check.config, "unit", None), failure=failure, labels=dict(check.labels))

    store = _open(args, profile, host)
    try:
        same = [r for r in _at(store, check.full_id, at) if r.vantage == vantage]
        if same:
            stored = same[0]
            if stored.outcome != record.outcome:
                raise UsageError(f"{PROG} {command}: a record of {check.full_id} from {vantage} at {at} is "
                                 f"already stored with outcome {stored.outcome}; a stored record is never replaced")
            print(f"{check.full_id}: {stored.outcome} at {at} from {vantage} already stored in "
                  f"{store.url}; nothing changed", file=sys.stderr)
            return 0
        events = _events(store, check, record)
        added, _ = store.import_records([record])
        if events:
            store.write([], events)
    finally:
        store.close()
    if not added:  # stored in between by someone else: the same record
        print(f"{check.full_id}: {record.outcome} at {at} from {vantage} already stored in "
              f"{store.url}; nothing changed", file=sys.stderr)
        return 0
    host.record(record)
    for event in events or ():
        host.event(event)
    what = f"{record.outcome}" + (f" {record.value:g}{' ' + record.unit if record.unit else ''}"
                                  if record.value is not None else "")
    if failure is not None:
        what += f" ({failure.code}, {failure.attribution})"
    print(f"{check.full_id}: stored {what} at {at} from {vantage} in {store.url}"
          + "".join(f"; incident {e.kind}" for e in events or ()), file=sys.stderr)
    return 0


def _target(kind: Any, check: Check) -> str:
    target = getattr(check.config, "target", None)
    if isinstance(target, str) and target:
        return target
    try:
        return str(kind().target(check.config))
    except NotImplementedError:
        return check.probe


def _at(store: Store, check: str, at: str) -> list[SLIRecord]:
    until = format_timestamp(parse_timestamp(at) + timedelta(milliseconds=1))
    return list(store.records(check=check, since=at, until=until))


def _events(store: Store, check: Check, record: SLIRecord) -> list[IncidentEvent] | None:
    """The incident events *record* causes, as the live tracker would emit them; ``None`` when
    a later record of the stream is stored already (then the report's replay derives them)."""
    after = format_timestamp(parse_timestamp(record.started_at) + timedelta(milliseconds=1))
    if any(r.vantage == record.vantage for r in store.records(check=check.full_id, since=after)):
        return None
    tracker = IncidentTracker(check.confirm)
    tracker.restore(store.tail(check.full_id, record.vantage))
    return tracker.feed(record)


# ---- probe exclude -----------------------------------------------------------------------------

def cmd_exclude(args: argparse.Namespace, host: PluginHost) -> int:
    return {"add": _exclude_add, "list": _exclude_list, "withdraw": _exclude_withdraw}[args.action](args, host)


def _exclude_add(args: argparse.Namespace, host: PluginHost) -> int:
    command = "exclude add"
    profile = load_profile(args.profile, host.probes, host.evaluators)
    check = profile.check(args.check).full_id if args.check is not None else None
    start = _when(args.start, profile, "--from", command)
    end = _when(args.end, profile, "--to", command)
    assert start is not None and end is not None
    if timestamp_ms(end) <= timestamp_ms(start):
        raise UsageError(f"{PROG} {command}: --to ({end}) must be after --from ({start})")
    note = _text(args.note, "--note", command, "say why this time is excluded")
    annotation = Annotation(kind="exclusion", profile=profile.name, check=check, start=start, end=end,
                            reason=args.reason, note=note, author=_author(args.by, command),
                            created_at=_now())
    store = _open(args, profile, host)
    try:
        stored = store.annotate(annotation)
    finally:
        store.close()
    print(stored.id)
    print(f"exclusion {stored.id} stored: {check or 'every check of ' + profile.name} from {start} "
          f"to {end} ({args.reason}) by {stored.author}", file=sys.stderr)
    from ._evaluation import exclusion_applies_to

    applies = exclusion_applies_to(profile, args.reason, check)
    if applies:
        print(f"it applies to {', '.join(applies)}", file=sys.stderr)
    else:
        print(f"{PROG}: warning: no objective of {profile.name}"
              + (f" judging {args.check}" if check else "")
              + f" lists {args.reason!r} in its exclude: exclusion {stored.id} applies to nothing "
              f"(withdraw it with 'probe exclude withdraw {args.profile} {stored.id}' if it was a mistake)",
              file=sys.stderr)
    return 0


def _annotations_or_json(args: argparse.Namespace, host: PluginHost, kind: str) -> tuple[Profile, list[Annotation]] | None:
    """The profile and its stored annotations of *kind*; with ``--format json`` they are printed
    as JSON Lines instead and None is returned."""
    profile = load_profile(args.profile, host.probes)
    store = _open(args, profile, host)
    try:
        items = list(store.annotations(profile.name, kind))
    finally:
        store.close()
    if args.format == "json":
        for item in items:
            sys.stdout.write(encode_annotation(item).decode() + "\n")
        return None
    return profile, items


def _exclude_list(args: argparse.Namespace, host: PluginHost) -> int:
    found = _annotations_or_json(args, host, "exclusion")
    if found is None:
        return 0
    profile, exclusions = found
    from rich.table import Table

    table = Table(title=f"{len(exclusions)} exclusions of {profile.name}", title_justify="left")
    for name in ("id", "status", "check", "from", "to", "reason", "note", "entered"):
        table.add_column(name, overflow="fold")
    for item in exclusions:
        table.add_row(str(item.id), "active" if item.active else "withdrawn", item.check or "(every check)",
                      item.start, item.end or "", item.reason or "", item.note,
                      f"{item.created_at} by {item.author}")
    withdrawn = [item for item in exclusions if not item.active]
    lines = [f"{len(exclusions) - len(withdrawn)} active, {len(withdrawn)} withdrawn"] if exclusions else []
    lines += [f"exclusion {item.id} withdrawn at {item.withdrawn_at} by {item.withdrawn_by}: {item.withdrawn_note}"
              for item in withdrawn]
    _print_table(table, "\n".join(lines) or None)
    return 0


def _exclude_withdraw(args: argparse.Namespace, host: PluginHost) -> int:
    command = "exclude withdraw"
    profile = load_profile(args.profile, host.probes)
    note = _text(args.note, "--note", command, "say why it is withdrawn")
    author = _author(args.by, command)
    store = _open(args, profile, host)
    try:
        found = [a for a in store.annotations(profile.name, "exclusion") if a.id == args.id]
        if not found:
            raise UsageError(f"{PROG} {command}: {args.id} is not an exclusion of profile {profile.name}; "
                             f"'probe exclude list {args.profile}' lists them")
        if not found[0].active:
            raise UsageError(f"{PROG} {command}: exclusion {args.id} was already withdrawn at "
                             f"{found[0].withdrawn_at} by {found[0].withdrawn_by}")
        withdrawn = store.withdraw(args.id, at=_now(), by=author, note=note)
    finally:
        store.close()
    print(f"exclusion {withdrawn.id} withdrawn by {withdrawn.withdrawn_by} at {withdrawn.withdrawn_at}; "
          "it stays listed", file=sys.stderr)
    return 0


# ---- probe incident ----------------------------------------------------------------------------

def cmd_incident(args: argparse.Namespace, host: PluginHost) -> int:
    return {"report": _incident_report, "list": _incident_list}[args.action](args, host)


def _incident_report(args: argparse.Namespace, host: PluginHost) -> int:
    command = "incident report"
    profile = load_profile(args.profile, host.probes)
    at = _when(args.at, profile, "--at", command) or _now()
    _not_in_future(at, "--at", command)
    note = args.note.strip()
    if "\n" in note or "\r" in note:
        raise UsageError(f"{PROG} {command}: --note must be one line")
    author = _author(args.by, command)
    store = _open(args, profile, host)
    try:
        events = _incident(store, profile, args.incident, command, args.profile)
        started = events[0].incident_started_at
        if timestamp_ms(at) < timestamp_ms(started):
            raise UsageError(f"{PROG} {command}: --at {at} is before the incident began ({started})")
        earlier = [a for a in store.annotations(profile.name, "incident_report")
                   if a.incident == args.incident and a.active]
        stored = store.annotate(Annotation(
            kind="incident_report", profile=profile.name, check=events[0].check, start=at,
            incident=args.incident, note=note, author=author, created_at=_now()))
    finally:
        store.close()
    print(stored.id)
    print(f"incident {args.incident} reported at {at} (entered by {author}, annotation {stored.id})"
          + (f"; it was reported before at {', '.join(a.start for a in earlier)}" if earlier else ""),
          file=sys.stderr)
    return 0


def _incident_list(args: argparse.Namespace, host: PluginHost) -> int:
    profile = load_profile(args.profile, host.probes)
    store = _open(args, profile, host)
    try:
        events = incident_events(store, profile)
        reports = [a for a in store.annotations(profile.name, "incident_report") if a.active]
    finally:
        store.close()
    incidents: dict[str, dict[str, Any]] = {}
    for event in events:
        row = incidents.setdefault(event.incident_id, {
            "incident": event.incident_id, "check": event.check, "vantage": event.vantage,
            "started_at": event.incident_started_at, "confirmed_at": None, "ended_at": None,
            "ended": None, "reported_at": None})
        if event.kind == "confirmed":
            row["confirmed_at"] = event.at
        elif event.kind in ("resolved", "flap"):
            row["ended_at"], row["ended"] = event.at, event.kind
    for report in reports:
        row = incidents.get(report.incident or "")
        if row is not None and (row["reported_at"] is None or report.start < row["reported_at"]):
            row["reported_at"] = report.start
    if args.format == "json":
        for row in incidents.values():
            sys.stdout.write(json.dumps(row) + "\n")
        return 0
    from rich.table import Table

    table = Table(title=f"{len(incidents)} incidents of {profile.name}", title_justify="left")
    for name in ("incident", "check", "started", "confirmed", "resolved", "reported"):
        table.add_column(name, overflow="fold")
    for row in incidents.values():
        ended = row["ended_at"] or "no (ongoing)"
        if row["ended"] == "flap":
            ended = f"{row['ended_at']} (flap)"
        table.add_row(row["incident"], row["check"], row["started_at"], row["confirmed_at"] or "no",
                      ended, row["reported_at"] or "no")
    _print_table(table)
    return 0


EVENT_ORDER = {"suspected": 0, "confirmed": 1, "resolved": 2, "flap": 2}


def incident_events(store: Store, profile: Profile) -> list[IncidentEvent]:
    """Every incident event of *profile*'s records, in the order they happened: those ``probe
    run`` stored, and the same events derived from the stored records by the live tracker's
    code for records no tracker saw (imported ones). Same ids either way."""
    found = {e.event_id: e for e in store.events(prefix=profile.name + "/")}
    checks = {c.full_id: c for c in profile.checks}
    streams: dict[tuple[str, str], list[SLIRecord]] = {}
    for record in store.records(prefix=profile.name + "/", not_ok=True):
        streams.setdefault((record.check, record.vantage), []).append(record)
    for (check_id, vantage), not_ok in streams.items():
        check = checks.get(parent_check(check_id))
        if check is None:  # a check no longer in the profile: its stored events stand
            continue
        if check.vantages and check_id == check.full_id:
            continue  # judged by the vantage quorum: below
        following = store.following(check_id, vantage, [timestamp_ms(r.started_at) for r in not_ok])
        stream = Stream(check_id, vantage, (), not_ok, following, check.confirm, 0)
        for event in stream_events(stream):
            found.setdefault(event.event_id, event)
    # A check with vantages: its incidents are those of the merged rounds (as probe judge and
    # probe report see them), never one vantage's own.
    for check in profile.checks:
        if check.vantages:
            rounds = merge_vantages(check, store.records(check=check.full_id))
            for stream in Stream.from_records(rounds, confirm=check.confirm, hold=0):
                for event in stream_events(stream):
                    found.setdefault(event.event_id, event)
    return sorted(found.values(), key=lambda e: (timestamp_ms(e.at), EVENT_ORDER[e.kind]))


def _incident(store: Store, profile: Profile, incident: str, command: str, path: str) -> list[IncidentEvent]:
    """The events of *incident*, or a usage error saying where the ids are listed."""
    events = [e for e in incident_events(store, profile) if e.incident_id == incident]
    if not events:
        raise UsageError(f"{PROG} {command}: no incident {incident!r} in the records of profile {profile.name}; "
                         f"'probe incident list {path}' lists them (the ids 'probe report' prints)")
    return events


# ---- probe notice ------------------------------------------------------------------------------

def cmd_notice(args: argparse.Namespace, host: PluginHost) -> int:
    return {"add": _notice_add, "list": _notice_list, "import": _notice_import}[args.action](args, host)


def _notice(profile: Profile, store: Store, fields: dict[str, Any], author: str, command: str,
            where: str) -> Annotation:
    """A validated notice annotation from *fields* (incident, at, channel, to, note); *where*
    prefixes each error (``--at`` or ``FILE: line 3: at``)."""
    def text(key: str, required: bool = True) -> str:
        value = fields.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"{PROG} {command}: {where}{key}: expected a non-empty string, got {value!r}")
        if "\n" in value or "\r" in value:
            raise UsageError(f"{PROG} {command}: {where}{key}: must be one line")
        return value.strip()

    incident, channel, to, note = text("incident"), text("channel"), text("to"), text("note", False)
    at = _when(text("at"), profile, f"{where}at", command)
    assert at is not None
    _not_in_future(at, f"{where}at", command)
    events = _incident(store, profile, incident, command, str(profile.path))
    started = events[0].incident_started_at
    if timestamp_ms(at) < timestamp_ms(started):
        raise UsageError(f"{PROG} {command}: {where}at {at} is before the incident began ({started})")
    return Annotation(kind="notice", profile=profile.name, check=events[0].check, start=at, incident=incident,
                      channel=channel, to=to, note=note or f"sent through {channel} to {to}", author=author,
                      created_at=_now())


def _notice_key(a: Annotation) -> tuple[Any, ...]:
    return (a.incident, a.start, a.channel, a.to)


def _notice_add(args: argparse.Namespace, host: PluginHost) -> int:
    command = "notice add"
    profile = load_profile(args.profile, host.probes)
    author = _author(args.by, command)
    store = _open(args, profile, host)
    try:
        annotation = _notice(profile, store, {"incident": args.incident, "at": args.at, "channel": args.channel,
                                              "to": args.to, "note": args.note or None}, author, command, "--")
        if any(_notice_key(a) == _notice_key(annotation) for a in store.annotations(profile.name, "notice")):
            print(f"notice of {args.incident} at {annotation.start} through {args.channel} to {args.to} "
                  "is already stored; nothing changed", file=sys.stderr)
            return 0
        stored = store.annotate(annotation)
    finally:
        store.close()
    print(stored.id)
    print(f"notice of incident {args.incident} at {stored.start} through {args.channel} to {args.to} stored "
          f"(annotation {stored.id}, entered by {author})", file=sys.stderr)
    return 0


def _notice_list(args: argparse.Namespace, host: PluginHost) -> int:
    found = _annotations_or_json(args, host, "notice")
    if found is None:
        return 0
    profile, notices = found
    from rich.table import Table

    table = Table(title=f"{len(notices)} notices of {profile.name}", title_justify="left")
    for name in ("id", "incident", "at", "how", "to", "note", "entered"):
        table.add_column(name, overflow="fold")
    for item in notices:
        table.add_row(str(item.id), item.incident or "", item.start,
                      item.channel or (f"route {item.route}" if item.route else ""), item.to or "",
                      item.note, f"{item.created_at} by {item.author}")
    _print_table(table)
    return 0


def _notice_import(args: argparse.Namespace, host: PluginHost) -> int:
    command = "notice import"
    profile = load_profile(args.profile, host.probes)
    author = _author(args.by, command)
    try:
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{PROG} {command}: {args.file}: cannot read: {exc.strerror}") from None
    with stream:
        lines = list(stream)
    store = _open(args, profile, host)
    try:
        known = {_notice_key(a) for a in store.annotations(profile.name, "notice")}
        new: list[Annotation] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{args.file}: line {number}: "
            try:
                fields = json.loads(line)
            except ValueError as exc:
                raise UsageError(f"{PROG} {command}: {where}not JSON ({exc}); nothing was imported") from None
            if not isinstance(fields, dict):
                raise UsageError(f"{PROG} {command}: {where}expected an object; nothing was imported")
            unknown = sorted(set(fields) - {"incident", "at", "channel", "to", "note"})
            if unknown:
                raise UsageError(f"{PROG} {command}: {where}unknown key {unknown[0]!r}; expected incident, at, "
                                 "channel, to, note; nothing was imported")
            annotation = _notice(profile, store, fields, author, command, where)
            if _notice_key(annotation) not in known:
                known.add(_notice_key(annotation))
                new.append(annotation)
        for annotation in new:
            store.annotate(annotation)
    finally:
        store.close()
    print(f"{args.file}: {len(new)} notices stored for {profile.name}", file=sys.stderr)
    return 0


COMMANDS: dict[str, Callable[..., int]] = {"push": cmd_push, "exclude": cmd_exclude, "incident": cmd_incident,
                                           "notice": cmd_notice}
