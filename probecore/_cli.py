"""The ``probe`` command line.

Exit status: 0 success (``run --once``: every check ok), 1 a check was not ok or the work
failed, 2 bad usage or a bad profile. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, time, timedelta, timezone
from typing import NoReturn

import msgspec

from ._durations import parse_duration
from ._errors import ProbecoreError, UsageError
from ._groups import is_member
from ._incidents import IncidentEvent
from ._plugins import PluginHost, _own_version, make_plugin_manager
from ._profile import Profile, load_profile
from ._record import SLIRecord, decode_record, encode_record, format_timestamp, record_json_schema
from ._runner import RunOptions, default_vantage, run_profile
from ._scheduler import DEFAULT_MAX_CONCURRENCY, DEFAULT_PER_HOST
from ._store import Store, default_store_url, open_store

PROG = "probe"


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line that points at --help."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=(
        "Run synthetic probes declared in a service profile, store every result as an SLI "
        "record, and track incidents the way the service-level agreement defines them."),
        epilog="Start with 'probe demo', then 'probe check PROFILE' and 'probe run PROFILE'.")
    parser.add_argument("--version", action="version", version=f"probecore {_own_version()}")
    parser.add_argument("--no-plugin", metavar="NAME", action="append", default=[],
                        help="do not load the plugin NAME (repeatable; 'probe plugins' lists names)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="run a profile's checks (continuously, or once with --once)",
                         description="Run every check of PROFILE at its interval until stopped "
                         "(SIGINT/SIGTERM stop cleanly after storing what was measured).",
                         epilog="Exit status with --once: 0 every check ok, 1 any check not ok, "
                         "2 bad usage or profile.")
    run.add_argument("profile", metavar="PROFILE", help="service profile (TOML)")
    run.add_argument("--once", action="store_true", help="run every check once, concurrently, then exit")
    run.add_argument("--junit", metavar="FILE", default=None,
                     help="with --once: write a JUnit XML report to FILE (one test case per check)")
    run.add_argument("--github", action="store_true",
                     help="with --once: print GitHub Actions annotations (::error per failed check)")
    _store_option(run)
    run.add_argument("--json", action="store_true",
                     help="write one SLI record per line to stdout (the default when stdout is not a terminal)")
    run.add_argument("--vantage", metavar="NAME", default=None,
                     help="name of this agent in the records (default: the host name)")
    run.add_argument("--for", dest="run_for", metavar="DURATION", default=None, type=_duration,
                     help='stop after DURATION, e.g. "10m" (default: run until stopped)')
    run.add_argument("--max-concurrency", type=_positive, default=DEFAULT_MAX_CONCURRENCY, metavar="N",
                     help=f"attempts in flight at once (default {DEFAULT_MAX_CONCURRENCY})")
    run.add_argument("--per-host", type=_positive, default=DEFAULT_PER_HOST, metavar="N",
                     help=f"attempts in flight at once against one host (default {DEFAULT_PER_HOST})")
    from ._cli_scale import metrics_option
    metrics_option(run)

    check = sub.add_parser("check", help="validate a profile without probing and summarise it")
    check.add_argument("profile", metavar="PROFILE")

    plugins = sub.add_parser("plugins", help="list the plugins, their versions and hooks")
    plugins.add_argument("--json", action="store_true", help="as JSON")

    schema = sub.add_parser("schema", help="print the JSON Schema of an SLI record or incident event")
    schema.add_argument("what", nargs="?", choices=("sli", "event", "report"), default="sli")

    records = sub.add_parser("records", help="print stored records as JSON Lines, or import them",
                             description="probe records PROFILE [--check ID] [--since T] [--until T]\n"
                             "probe records import FILE.jsonl [--store URL]",
                             formatter_class=argparse.RawDescriptionHelpFormatter,
                             epilog="T is RFC 3339 (2026-11-01T00:00:00+08:00), a date or a naive "
                             "date-time in the profile's time zone (2026-11-01), or an age like 2h.")
    records.add_argument("profile", metavar="PROFILE|import", help="the profile whose records to print, "
                         "or 'import' followed by a JSON Lines file")
    records.add_argument("file", nargs="?", metavar="FILE", help="with 'import': the JSON Lines file ('-': stdin)")
    records.add_argument("--check", metavar="ID", help="only this check (its id in the profile)")
    records.add_argument("--since", metavar="T", help="records that started at or after T")
    records.add_argument("--until", metavar="T", help="records that started before T")
    records.add_argument("--events", action="store_true", help="print incident events instead of records")
    _store_option(records)

    report = sub.add_parser(
        "report", help="judge a month (or year) of records against the profile's objectives",
        description="Judge every [[objective]] of PROFILE over a calendar month or year in the "
        "profile's time zone: measured value, operator, target, met, budget, coverage, the "
        "outages with their exclusions, and the remedy owed (docs/objectives.md).",
        epilog="Exit status: 0 every objective met, 1 any objective missed or unknown, 2 bad usage.")
    report.add_argument("profile", metavar="PROFILE")
    when = report.add_mutually_exclusive_group()
    when.add_argument("--month", metavar="YYYY-MM", help="the month to judge (default: the current one, to date)")
    when.add_argument("--year", metavar="YYYY", help="judge the yearly objectives (period = \"year\") of this year")
    report.add_argument("--format", choices=("table", "json", "markdown", "html", "pdf"), default="table",
                        help="table (default), json (schema: 'probe schema report'), markdown, html "
                        "(one self-contained page with charts) or pdf (that page on A4, with -o; "
                        "needs probecore[pdf])")
    report.add_argument("-o", "--output", metavar="FILE", default=None,
                        help="write the report to FILE instead of stdout")
    report.add_argument("--objective", metavar="ID", action="append", default=None,
                        help="only this objective (repeatable)")
    _store_option(report)

    serve = sub.add_parser(
        "serve", help="a read-only status page over the store (checks, open incidents, objectives)",
        description="Serve one page, refreshing itself, with each check's latest record and last 24 h "
        "of values, the open incidents and the month-to-date objectives of every PROFILE. Nothing "
        "it serves writes.")
    serve.add_argument("profiles", metavar="PROFILE", nargs="+")
    serve.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:8080",
                       help="where to listen (default 127.0.0.1:8080, loopback only; port 0 picks one)")
    serve.add_argument("--refresh", metavar="DURATION", default=30.0, type=_duration,
                       help='how often the page reloads and is rebuilt (default "30s")')
    _store_option(serve)

    from ._cli_ledger import add_parsers
    add_parsers(sub)
    from ._cli_notify import add_parsers as add_notify_parsers
    add_notify_parsers(sub)
    from ._cli_scale import add_parsers as add_scale_parsers
    add_scale_parsers(sub)

    demo = sub.add_parser("demo", help="start loopback demo services and run the demo profile against them",
                          description="Starts small services on 127.0.0.1, runs the embedded demo "
                          "profile against them for a while with failures injected, stores the "
                          "records in SQLite and prints what happened.")
    demo.add_argument("--for", dest="run_for", metavar="DURATION", default=20.0, type=_duration,
                      help='how long to run (default "20s")')
    _store_option(demo)
    demo.add_argument("--json", action="store_true", help="write the records as JSON Lines too")
    return parser


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="URL", default=None,
                        help="where records go: sqlite:PATH or a path, or postgresql://USER@HOST:PORT/DB "
                        "(password from PGPASSWORD or ~/.pgpass; default: one SQLite file per "
                        "profile in $PROBECORE_DATA_DIR, else ~/.local/share/probecore)")


def _duration(text: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f'expected a duration longer than zero, got "{text}"')
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``probe`` console script; returns (and exits with) the status."""
    try:
        try:
            status = _main(list(sys.argv[1:] if argv is None else argv))
        except BaseExceptionGroup as group:  # trio wraps errors raised inside nurseries
            raise _user_error(group) or group
    except ProbecoreError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        status = exc.exit_status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        status = 130
    except BrokenPipeError:
        # The reader went away (probe records … | head): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = 0
    if argv is None:
        sys.exit(status)
    return status


def _user_error(group: BaseExceptionGroup) -> BaseException | None:
    """The first user-facing error (or interrupt) inside *group*, if that is all it holds."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for kind in (ProbecoreError, KeyboardInterrupt):
        if leaves and all(isinstance(e, kind) for e in leaves):
            return leaves[0]
    return None


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    host = make_plugin_manager(blocked=args.no_plugin)
    from ._cli_ledger import COMMANDS as ledger_commands
    from ._cli_notify import COMMANDS as notify_commands
    from ._cli_scale import COMMANDS as scale_commands
    command = {"run": cmd_run, "check": cmd_check, "plugins": cmd_plugins, "schema": cmd_schema,
               "records": cmd_records, "report": cmd_report, "demo": cmd_demo, "serve": cmd_serve,
               **ledger_commands, **notify_commands, **scale_commands}[args.command]
    return command(args, host)


# ---- probe check ------------------------------------------------------------------------------

def cmd_check(args: argparse.Namespace, host: PluginHost) -> int:
    from rich.table import Table

    from ._display import make_console
    from ._durations import format_duration
    from ._probe import describe_target

    profile = load_profile(args.profile, host.probes, host.evaluators, host.notifiers)
    console = make_console()
    console.print(f"[bold]{profile.path}[/]: profile [bold]{profile.name}[/] is valid"
                  + (f" (contract {profile.contract})" if profile.contract else ""))
    console.print(f"time zone {profile.timezone.key}"
                  + (f" · fee {profile.fee.monthly:g} {profile.fee.currency}/month" if profile.fee else ""))
    table = Table(title=f"{len(profile.checks)} checks", title_justify="left")
    vantages = any(c.vantages for c in profile.checks)
    for name in ("id", "probe", "target", "interval", "timeout", "retry", "confirm", "phase",
                 *(["vantages (quorum)"] if vantages else [])):
        table.add_column(name)
    for check in profile.checks:
        kind = host.probes.get(check.probe)()
        where = [f"{', '.join(check.vantages)} ({check.quorum})" if check.vantages else "every agent"]
        table.add_row(check.id, check.probe, describe_target(kind, check.config), format_duration(check.interval),
                      format_duration(check.timeout), format_duration(check.retry_interval),
                      str(check.confirm), f"+{check.phase_offset:g}s", *(where if vantages else []))
    console.print(table)
    if profile.objective_configs:
        objectives = Table(title=f"{len(profile.objective_configs)} objectives", title_justify="left")
        for name in ("id", "clause", "kind", "checks", "period", "threshold", "remedy"):
            objectives.add_column(name)
        for o in profile.objective_configs:
            threshold = (f"{o.op} {format_duration(o.limit) if o.limit is not None else f'{o.target:g}'}"
                         if o.op else "–")
            objectives.add_row(o.id, o.clause or "–", o.kind, ", ".join(o.check_ids), o.period,
                               threshold, o.remedy.kind if o.remedy else "–")
        console.print(objectives)
    console.print(f"{len(profile.objectives)} objectives · {len(profile.maintenance)} maintenance windows"
                  f" · {len(profile.notify)} notification routes")
    return 0


# ---- probe plugins / schema -------------------------------------------------------------------

def cmd_plugins(args: argparse.Namespace, host: PluginHost) -> int:
    infos = host.plugins()
    if args.json:
        print(json.dumps([{"name": i.name, "version": i.version, "hooks": list(i.hooks),
                           "builtin": i.builtin, "adds": {k: list(v) for k, v in i.adds.items()}}
                          for i in infos], indent=2))
        return 0
    from rich.table import Table

    from ._display import make_console

    table = Table()
    for name in ("plugin", "version", "hooks", "adds", "kind"):
        table.add_column(name, overflow="fold")
    for info in infos:
        adds = "; ".join(f"{what}: {', '.join(items)}" for what, items in info.adds.items())
        table.add_row(info.name, info.version, ", ".join(info.hooks), adds,
                      "built-in" if info.builtin else "third party")
    console = make_console()
    console.print(table)
    blocked = host.blocked()
    if blocked:
        console.print("blocked: " + ", ".join(blocked))
    console.print("probe kinds: " + ", ".join(host.probes) + " · stores: " + ", ".join(host.stores))
    return 0


def cmd_schema(args: argparse.Namespace, host: PluginHost) -> int:
    if args.what == "sli":
        schema = record_json_schema()
    elif args.what == "report":
        from ._evaluation import report_json_schema
        schema = report_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    else:
        schema = msgspec.json.schema(IncidentEvent)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    print(json.dumps(schema, indent=2))
    return 0


# ---- probe run ------------------------------------------------------------------------------

def _open(url: str | None, profile_name: str, host: PluginHost) -> Store:
    return open_store(url or default_store_url(profile_name), host.stores.get)


def _header(profile: Profile, store: Store, vantage: str, host: PluginHost) -> str:
    plugins = ", ".join(f"{i.name} {i.version}" for i in host.plugins(loaded_only=True))
    return (f"probecore {_own_version()} · profile {profile.name} ({len(profile.checks)} checks) · "
            f"store {store.url} · vantage {vantage}\nplugins: {plugins}")


def cmd_run(args: argparse.Namespace, host: PluginHost) -> int:
    from ._display import JsonLines, LiveTable, make_console, results_table

    if (args.junit or args.github) and not args.once:
        raise UsageError(f"{PROG} run: --junit and --github report one round: they need --once")
    profile = load_profile(args.profile, host.probes, host.evaluators, host.notifiers)
    options = RunOptions(once=args.once, vantage=args.vantage or default_vantage(),
                         max_concurrency=args.max_concurrency, per_host=args.per_host, duration=args.run_for)
    json_mode = args.json or not sys.stdout.isatty()
    store = _open(args.store, profile.name, host)
    try:
        console = make_console(stderr=json_mode, plain_when_piped=json_mode)
        console.print(_header(profile, store, options.vantage, host), style="dim")
        on_stored = [JsonLines().stored] if json_mode else []
        from ._cli_scale import with_metrics
        run = with_metrics(args.metrics, "run", store, [profile], host)
        if json_mode or args.once:
            result = run(lambda observed, started: run_profile(
                profile, host, store, options, on_stored=on_stored, on_observed=observed, on_started=started))
        else:
            from rich.live import Live

            table = LiveTable(profile, options.vantage)
            with Live(table, console=console, refresh_per_second=4, transient=False):
                result = run(lambda observed, started: run_profile(
                    profile, host, store, options, on_observed=[table.observed, *observed], on_started=started))
    finally:
        store.close()
    if args.once:
        if args.junit:
            from ._ci_output import write_junit

            try:
                write_junit(args.junit, profile, result.records)
            except OSError as exc:
                raise UsageError(f"{PROG} run: --junit {args.junit}: cannot write: {exc.strerror}") from None
        if args.github:
            from ._ci_output import github_annotations

            for line in github_annotations(args.profile, result.records):
                print(line, flush=True)
        if not json_mode:
            console.print(results_table(result.records))
        checks = [r for r in result.records if not is_member(r.check)]
        bad = [r for r in checks if r.outcome != "ok"]
        console.print(f"{len(checks)} checks: {len(checks) - len(bad)} ok, {len(bad)} not ok",
                      style="bold red" if bad else "bold green")
        return 0 if result.all_ok else 1
    confirmed = sum(e.kind == "confirmed" for e in result.events)
    console.print(f"stopped{' by ' + result.stopped_by if result.stopped_by else ''}: "
                  f"{result.stored_records} records stored in {store.url}, {confirmed} incidents confirmed")
    return 0


# ---- probe records ----------------------------------------------------------------------------

def cmd_records(args: argparse.Namespace, host: PluginHost) -> int:
    if args.profile == "import":
        return _import(args, host)
    if args.file is not None:
        raise UsageError(f"{PROG} records: unexpected argument {args.file!r}")
    profile = load_profile(args.profile, host.probes)
    check = f"{profile.name}/{profile.check(args.check).id}" if args.check else None
    since = _moment(args.since, profile, "--since")
    until = _moment(args.until, profile, "--until")
    store = _open(args.store, profile.name, host)
    out = sys.stdout.buffer
    try:
        if args.events:
            from ._incidents import encode_event
            for event in store.events(check=check, prefix=None if check else profile.name + "/"):
                out.write(encode_event(event) + b"\n")
        else:
            for record in store.records(check=check, prefix=None if check else profile.name + "/",
                                        since=since, until=until):
                out.write(encode_record(record) + b"\n")
        out.flush()
    finally:
        store.close()
    return 0


def _moment(text: str | None, profile: Profile, option: str, command: str = "records") -> str | None:
    """*text* (an RFC 3339 time, a date or naive time in the profile's zone, or an age) as a
    record timestamp; a bad one is a usage error naming ``probe <command> <option>``."""
    if text is None:
        return None
    try:
        return format_timestamp(datetime.now(timezone.utc) - timedelta(seconds=parse_duration(text)))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{PROG} {command}: {option}: expected a date-time like 2026-11-01T00:00:00+08:00, "
                         f"a date like 2026-11-01, or an age like 2h; got {text!r}") from None
    if len(text) == 10:  # a date: its midnight
        moment = datetime.combine(moment.date(), time())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=profile.timezone)
    return format_timestamp(moment)


def _import(args: argparse.Namespace, host: PluginHost) -> int:
    if not args.file:
        raise UsageError(f"{PROG} records import: name the JSON Lines file to import ('-' for stdin)")
    records = list(read_records(args.file))
    if not records:
        print(f"{PROG}: {args.file}: no records", file=sys.stderr)
        return 0
    url = args.store
    if url is None:
        profiles = sorted({r.check.split("/", 1)[0] for r in records})
        if len(profiles) > 1:
            raise UsageError(f"{PROG} records import: {args.file} holds records of several profiles "
                             f"({', '.join(profiles)}); choose one store with --store")
        url = default_store_url(profiles[0])
    store = open_store(url, host.stores.get)
    try:
        added, skipped = store.import_records(records)
    finally:
        store.close()
    print(f"{args.file}: {added} records imported into {store.url}"  # store.url: no password
          + (f", {skipped} already there" if skipped else ""), file=sys.stderr)
    return 0


def read_records(name: str) -> list[SLIRecord]:
    """Read and validate a JSON Lines file of SLI records; any bad line is a one-line error."""
    try:
        stream = sys.stdin.buffer if name == "-" else open(name, "rb")
    except OSError as exc:
        raise UsageError(f"{name}: cannot read: {exc.strerror}") from None
    records = []
    with stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                records.append(decode_record(line))
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise UsageError(f"{name}: line {number}: not a {SLIRecord.__name__} "
                                 f"(probecore.sli/1): {exc}; nothing was imported") from None
            except ValueError as exc:
                raise UsageError(f"{name}: line {number}: {exc}; nothing was imported") from None
    return records


# ---- probe report -----------------------------------------------------------------------------

def cmd_report(args: argparse.Namespace, host: PluginHost) -> int:
    from ._report import run_report

    return run_report(args, host)


# ---- probe serve ------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace, host: PluginHost) -> int:
    from ._serve import parse_listen, run_serve

    parse_listen(args.listen)  # a bad address is a usage error before any store is opened
    profiles = [load_profile(p, host.probes, host.evaluators, host.notifiers) for p in args.profiles]
    stores: list[Store] = []
    try:
        for profile in profiles:
            stores.append(open_store(args.store or default_store_url(profile.name), host.stores.get))
        return run_serve(profiles, stores, host.evaluators, listen=args.listen, refresh=args.refresh)
    finally:
        for store in stores:
            store.close()


# ---- probe demo -------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace, host: PluginHost) -> int:
    from ._demo import run_demo

    return run_demo(host, duration=args.run_for, store_url=args.store, json_mode=args.json)


if __name__ == "__main__":  # pragma: no cover
    main()
