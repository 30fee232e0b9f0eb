"""Service profiles: TOML files that declare checks, objectives, maintenance and routes.

:func:`load_profile` reads and validates a profile against the probe kinds a plugin host
provides. Every problem is a :class:`ProfileError` of one line naming the file, the table, the
key and what was expected; the loader never lets a traceback reach the user.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import msgspec.inspect

from ._durations import Duration, format_duration, parse_duration
from ._errors import ProfileError, UsageError
from ._groups import GroupRule
from ._probe import ProbeConfig, ProbeKind
from ._secrets import Secret

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
QUORUM_VANTAGE = "quorum"
"""The ``vantage`` of a check's merged rounds (:mod:`probecore._quorum`); no agent may take it."""
OPERATORS = ("<", "<=", ">=", ">")
TABLES = ("profile", "defaults", "check", "objective", "maintenance", "channel", "notify")
CHECK_KEYS = ("id", "probe", "interval", "timeout", "retry_interval", "confirm", "labels", "binding", "group",
              "vantages", "quorum")
DEFAULT_KEYS = ("interval", "timeout", "retry_interval", "confirm", "labels", "vantages", "quorum")
MAINTENANCE_KEYS = ("id", "start", "end", "every", "until", "check", "checks", "agreed", "announced", "note")
PROFILE_KEYS = ("name", "contract", "timezone", "fee", "description")

DEFAULT_INTERVAL = Duration(60.0)
DEFAULT_TIMEOUT = Duration(10.0)
DEFAULT_CONFIRM = 2


@dataclass(frozen=True)
class Check:
    """One ``[[check]]``, with defaults applied and the probe kind's keys validated."""

    id: str
    probe: str
    interval: Duration
    timeout: Duration
    retry_interval: Duration
    confirm: int
    labels: dict[str, str]
    config: ProbeConfig
    profile: str
    binding: str | None = None
    """Id of the check that says whether this check's target is bound right (e.g. its DNS)."""
    group: GroupRule = GroupRule("all")
    """How a round over several members is judged (see :mod:`probecore._groups`)."""
    vantages: tuple[str, ...] = ()
    """Where the check runs (``probe agent --vantage NAME``); empty: on every agent, each
    vantage's records tracked on their own."""
    quorum: int | None = None
    """With ``vantages``: how many of them must see a provider failure in one round for the
    round to count against the provider (default: all of them); see :mod:`probecore._quorum`."""

    @property
    def full_id(self) -> str:
        """``<profile name>/<check id>``, the ``check`` field of its records."""
        return f"{self.profile}/{self.id}"

    @property
    def phase_offset(self) -> float:
        """Seconds after each interval boundary at which this check runs.

        Derived from the full id with a stable hash, so load is spread evenly across the
        interval and a restarted agent keeps every check's phase.
        """
        millis = max(1, round(self.interval * 1000))
        digest = hashlib.sha256(self.full_id.encode()).digest()
        return (int.from_bytes(digest[:8], "big") % millis) / 1000.0


@dataclass(frozen=True)
class Fee:
    monthly: float
    currency: str


@dataclass(frozen=True)
class Profile:
    """A validated profile. ``objectives``, ``maintenance`` and ``notify`` keep their tables
    (structure checked, references to checks resolved) for the evaluator and notifiers."""

    path: str
    name: str
    contract: str | None
    timezone: ZoneInfo
    fee: Fee | None
    description: str | None
    checks: tuple[Check, ...]
    objectives: tuple[dict[str, Any], ...] = ()
    maintenance: tuple[dict[str, Any], ...] = ()
    notify: tuple[dict[str, Any], ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    objective_configs: tuple[Any, ...] = ()
    """The objectives validated by their evaluators' ``Config`` (when the profile was loaded
    with the evaluator registry, as ``probe check``, ``run`` and ``report`` do)."""
    channels: tuple[Any, ...] = ()
    """``[[channel]]`` tables validated by their notifiers' ``Config`` (with the notifier registry)."""
    route_configs: tuple[Any, ...] = ()
    """``[[notify]]`` routes as :class:`probecore._notify.RouteConfig` (with the notifier registry)."""

    def check(self, check_id: str) -> Check:
        # A dict built on first use: a report of 10,000 checks asks 20,000 times (a scan was 6 s).
        by_id = self.__dict__.get("_checks_by_id")
        if by_id is None:
            by_id = {item.id: item for item in reversed(self.checks)}  # the first of an id wins
            object.__setattr__(self, "_checks_by_id", by_id)  # frozen: a cache, not state
        if check_id in by_id:
            return by_id[check_id]
        raise UsageError(f'{self.path}: no check "{check_id}"; checks: '
                         + ", ".join(c.id for c in self.checks))


def load_profile(path: str | Path, probes: Any, evaluators: Any = None, notifiers: Any = None) -> Profile:
    """Read and validate the profile at *path*.

    :param probes: the probe-kind registry (``PluginHost.probes``) that ``probe = "..."`` names.
    :param evaluators: the objective-kind registry (``PluginHost.evaluators``); with it every
        ``[[objective]]`` is checked against its kind's ``Config``.
    :param notifiers: the notifier registry (``PluginHost.notifiers``); with it ``[[channel]]``
        and ``[[notify]]`` tables are checked.
    :raises ProfileError: for anything wrong, with a one-line message.
    """
    path = Path(path)
    shown = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProfileError(shown, "no such file") from None
    except OSError as exc:
        raise ProfileError(shown, f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProfileError(shown, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(shown, f"invalid TOML: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively; no profile nests this deep.
        raise ProfileError(shown, "invalid TOML: arrays or tables nested too deeply") from None
    return _Loader(shown, path.parent, probes, evaluators, notifiers).profile(data)


class _Loader:
    def __init__(self, path: str, base_dir: Path, probes: Any, evaluators: Any = None, notifiers: Any = None):
        self.path = path
        self.base_dir = base_dir
        self.probes = probes
        self.evaluators = evaluators
        self.notifiers = notifiers

    def error(self, problem: str, table: str | None = None, key: str | None = None) -> ProfileError:
        return ProfileError(self.path, problem, table=table, key=key)

    # ---- top level -------------------------------------------------------------------------

    def profile(self, data: dict[str, Any]) -> Profile:
        for key, value in data.items():
            if key not in TABLES:
                raise self.error(f"unknown table [{key}]; expected one of " + ", ".join(TABLES))
        head = self.table(data, "profile", "[profile]", required=True)
        self.known_keys(head, PROFILE_KEYS, "[profile]")
        name = self.string(head, "name", "[profile]", required=True)
        if not NAME_RE.match(name):
            raise self.error(f'expected a lower-case name of letters, digits, ".", "_" or "-", got "{name}"',
                             "[profile]", "name")
        zone_name = self.string(head, "timezone", "[profile]") or "UTC"
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise self.error(f'unknown time zone "{zone_name}" (expected an IANA name like "Asia/Shanghai")',
                             "[profile]", "timezone") from None
        fee = None
        if "fee" in head:
            fee_table = self.table(head, "fee", "[profile]")
            for key in fee_table:
                if key not in ("monthly", "currency"):
                    raise self.error("unknown key; expected one of monthly, currency", "[profile]", f"fee.{key}")
            if "monthly" not in fee_table:
                raise self.error("required key is missing", "[profile]", "fee.monthly")
            monthly = fee_table["monthly"]
            if (isinstance(monthly, bool) or not isinstance(monthly, (int, float)) or not math.isfinite(monthly)
                    or monthly < 0):
                raise self.error(f"expected a non-negative number, got {_show(monthly)}", "[profile]", "fee.monthly")
            if "currency" not in fee_table:
                raise self.error("required key is missing", "[profile]", "fee.currency")
            currency = fee_table["currency"]
            if not isinstance(currency, str) or not currency:
                raise self.error(f"expected a non-empty string, got {_show(currency)}", "[profile]", "fee.currency")
            fee = Fee(float(monthly), currency)

        defaults = self.table(data, "defaults", "[defaults]")
        self.known_keys(defaults, DEFAULT_KEYS, "[defaults]")
        base = self.timing(defaults, "[defaults]", {
            "interval": DEFAULT_INTERVAL, "timeout": DEFAULT_TIMEOUT, "confirm": DEFAULT_CONFIRM,
            "labels": {}})
        base["vantages"], base["quorum"] = defaults.get("vantages"), defaults.get("quorum")
        # Only an explicit [defaults] retry_interval is inherited: without one, each check retries
        # at its own interval (not at the default interval, which may be longer than the check's).
        base["retry_interval"] = self.duration(defaults, "retry_interval", "[defaults]")

        checks: list[Check] = []
        ids: set[str] = set()
        for i, item in enumerate(self.array(data, "check")):
            check = self.check(item, i, name, base)
            if check.id in ids:
                raise self.error(f'the id "{check.id}" is used by an earlier check', f'check #{i + 1}', "id")
            ids.add(check.id)
            checks.append(check)
        if not checks:
            raise self.error("no [[check]] tables; a profile needs at least one check")
        for check in checks:
            if check.binding is not None and check.binding not in ids:
                raise self.error(f'no check "{check.binding}" in this profile', f'check "{check.id}"', "binding")
        objectives = tuple(self.objective(t, i, ids) for i, t in enumerate(self.array(data, "objective")))
        maintenance = tuple(self.maintenance(t, i, ids) for i, t in enumerate(self.array(data, "maintenance")))
        notify = tuple(self.route(t, i, ids) for i, t in enumerate(self.array(data, "notify")))
        self.unique(objectives, "objective")
        self.unique(notify, "notify")
        configs = tuple(self.objective_config(t) for t in objectives) if self.evaluators is not None else ()
        channels: tuple[Any, ...] = ()
        routes: tuple[Any, ...] = ()
        if self.notifiers is not None:
            channels = tuple(self.channel(t, i) for i, t in enumerate(self.array(data, "channel")))
            self.unique(tuple({"id": c.id} for c in channels), "channel")
            routes = tuple(self.route_config(t, {c.id for c in channels}) for t in notify)
            for route in routes:
                if route.escalate and route.escalate.route not in {r.id for r in routes}:
                    raise self.error(f'no [[notify]] route "{route.escalate.route}" in this profile',
                                     f'notify "{route.id}"', "escalate.route")
        return Profile(path=self.path, name=name, contract=self.string(head, "contract", "[profile]"),
                       timezone=zone, fee=fee, description=self.string(head, "description", "[profile]"),
                       checks=tuple(checks), objectives=objectives, maintenance=maintenance,
                       notify=notify, defaults=base, objective_configs=configs, channels=channels,
                       route_configs=routes)

    # ---- [[check]] -----------------------------------------------------------------------------

    def check(self, table: Any, index: int, profile: str, base: dict[str, Any]) -> Check:
        where = f"check #{index + 1}"
        if not isinstance(table, dict):
            raise self.error("expected a table", where)
        check_id = self.string(table, "id", where, required=True)
        if not NAME_RE.match(check_id):
            raise self.error(f'expected a lower-case id of letters, digits, ".", "_" or "-", got "{check_id}"',
                             where, "id")
        where = f'check "{check_id}"'
        kind_name = self.string(table, "probe", where, required=True)
        if kind_name not in self.probes:
            raise self.error(self.probes.unknown_message(kind_name), where, "probe")
        kind: type[ProbeKind[Any]] = self.probes.get(kind_name)
        timing = self.timing(table, where, base)
        own = {k: v for k, v in table.items() if k not in CHECK_KEYS}
        config = self.probe_config(kind, own, where)
        binding = self.string(table, "binding", where)
        if binding == check_id:
            raise self.error("a check cannot be its own binding", where, "binding")
        group = GroupRule("all")
        if "group" in table:
            try:
                group = GroupRule.parse(table["group"])
            except ValueError as exc:
                raise self.error(str(exc), where, "group") from None
        vantages, quorum = self.vantages(table, where, base)
        return Check(id=check_id, probe=kind_name, config=config, profile=profile, binding=binding,
                     group=group, vantages=vantages, quorum=quorum, **timing)

    def vantages(self, table: dict[str, Any], where: str, base: dict[str, Any]) -> tuple[tuple[str, ...], int | None]:
        """``vantages`` and ``quorum`` of a check (or inherited from ``[defaults]``)."""
        names = table.get("vantages", base.get("vantages"))
        quorum = table.get("quorum", base.get("quorum"))
        source = where if "vantages" in table else "[defaults]"
        if names is None:
            if quorum is not None:
                raise self.error('a quorum needs the vantages it counts (add vantages = ["bj", "sh", "gz"])',
                                 where if "quorum" in table else "[defaults]", "quorum")
            return (), None
        if (not isinstance(names, list) or not names
                or not all(isinstance(n, str) and NAME_RE.match(n) for n in names)):
            raise self.error(f'expected a non-empty list of vantage names like ["bj", "sh"] (lower-case '
                             f'letters, digits, ".", "_" or "-"), got {_show(names)}', source, "vantages")
        if QUORUM_VANTAGE in names:
            raise self.error(f'"{QUORUM_VANTAGE}" is reserved (the vantage of the rounds merged by the '
                             'quorum); name the agent otherwise', source, "vantages")
        if len(set(names)) < len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise self.error(f'the vantage "{twice}" is named twice', source, "vantages")
        if quorum is None:
            return tuple(names), len(names)
        quorum_at = where if "quorum" in table else "[defaults]"
        if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 1:
            raise self.error(f"expected a whole number of vantages of at least 1, got {_show(quorum)}",
                             quorum_at, "quorum")
        if quorum > len(names):
            raise self.error(f"{quorum} is more than the {len(names)} vantages named "
                             f"({', '.join(names)}): no round could ever reach it", quorum_at, "quorum")
        return tuple(names), quorum

    def timing(self, table: dict[str, Any], where: str, base: dict[str, Any]) -> dict[str, Any]:
        interval = self.duration(table, "interval", where) or base["interval"]
        timeout = self.duration(table, "timeout", where) or base["timeout"]
        retry = self.duration(table, "retry_interval", where) or base.get("retry_interval") or interval
        inherited_retry = "retry_interval" not in table and base.get("retry_interval") is not None
        confirm = table.get("confirm", base["confirm"])
        if isinstance(confirm, bool) or not isinstance(confirm, int) or not 1 <= confirm <= 1000:
            raise self.error(f"expected a whole number from 1 to 1000, got {_show(confirm)}", where, "confirm")
        labels = dict(base.get("labels", {}))
        if "labels" in table:
            given = table["labels"]
            if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
                raise self.error('expected a table of strings, like { team = "web" }', where, "labels")
            labels.update(given)
        if timeout > interval:
            if "interval" in table and "timeout" not in table:
                raise self.error(f"{format_duration(interval)} is shorter than the timeout "
                                 f"{format_duration(timeout)}", where, "interval")
            raise self.error(f"{format_duration(timeout)} is longer than the interval "
                             f"{format_duration(interval)}", where, "timeout")
        if retry > interval and inherited_retry:
            raise self.error(f"{format_duration(interval)} is shorter than the retry_interval "
                             f"{format_duration(retry)} set in [defaults]; give this check its own "
                             "retry_interval", where, "interval")
        if retry > interval:
            raise self.error(f"{format_duration(retry)} is longer than the interval "
                             f"{format_duration(interval)}", where, "retry_interval")
        return {"interval": interval, "timeout": timeout, "retry_interval": retry,
                "confirm": confirm, "labels": labels}

    def probe_config(self, kind: Any, own: dict[str, Any], where: str) -> Any:
        """*own* converted to ``kind.Config`` (a probe's or an evaluator's), or a profile error."""
        def dec_hook(tp: type, obj: Any) -> Any:
            if tp is Duration:
                return parse_duration(obj)
            if tp is Secret:
                return Secret.from_table(obj, self.base_dir)
            raise NotImplementedError(f"no conversion to {tp.__name__}")

        try:
            return msgspec.convert(own, kind.Config, dec_hook=dec_hook, strict=True)
        except msgspec.ValidationError as exc:
            key, problem = _explain(str(exc), own, kind.Config)
            raise self.error(problem, where, key) from None

    # ---- [[objective]], [[maintenance]], [[notify]] ---------------------------------------------

    def objective(self, table: Any, index: int, ids: set[str]) -> dict[str, Any]:
        where = self.named(table, index, "objective")
        self.string(table, "kind", where, required=True)
        self.references(table, where, ids, required=True)
        if "op" in table and table["op"] not in OPERATORS:
            raise self.error(f"expected one of {', '.join(OPERATORS)}, got {_show(table['op'])}", where, "op")
        if "target" in table:
            target = table["target"]
            if isinstance(target, bool) or not isinstance(target, (int, float)):
                raise self.error(f"expected a number, got {_show(target)}", where, "target")
        for key in ("limit", "period_length"):
            self.duration(table, key, where)
        return dict(table)

    def objective_config(self, table: dict[str, Any]) -> Any:
        where = f'objective "{table["id"]}"'
        if table["kind"] not in self.evaluators:
            raise self.error(self.evaluators.unknown_message(table["kind"]), where, "kind")
        evaluator = self.evaluators.get(table["kind"])()
        config = self.probe_config(evaluator, table, where)
        for key in evaluator.requires:
            if getattr(config, key) is None:
                raise self.error(f'required key is missing (kind "{table["kind"]}" compares with '
                                 f'{" and ".join(evaluator.requires)})', where, key)
        if config.staleness < 1:
            raise self.error(f"expected a factor of at least 1, got {config.staleness}", where, "staleness")
        if not 0 <= config.min_coverage <= 1:
            raise self.error(f"expected a share from 0 to 1, got {config.min_coverage}", where, "min_coverage")
        problem = evaluator.validate(config)
        if problem is not None:
            raise self.error(problem[1], where, problem[0])
        return config

    def channel(self, table: Any, index: int) -> Any:
        where = self.named(table, index, "channel")
        kind = self.string(table, "kind", where, required=True)
        if kind not in self.notifiers:
            raise self.error(self.notifiers.unknown_message(kind), where, "kind")
        return self.probe_config(self.notifiers.get(kind), table, where)

    def route_config(self, table: dict[str, Any], channel_ids: set[str]) -> Any:
        from ._notify import RouteConfig

        where = f'notify "{table["id"]}"'
        holder = type("Route", (), {"Config": RouteConfig})
        route = self.probe_config(holder, table, where)
        if not route.channels:
            raise self.error("names no channel (add channels = [\"<channel id>\"])", where, "channels")
        for channel in route.channels:
            if channel not in channel_ids:
                raise self.error(f'no [[channel]] "{channel}" in this profile', where, "channels")
        return route

    def maintenance(self, table: Any, index: int, ids: set[str]) -> dict[str, Any]:
        where = f"maintenance #{index + 1}"
        if not isinstance(table, dict):
            raise self.error("expected a table", where)
        self.known_keys(table, MAINTENANCE_KEYS, where)
        start = self.moment(table, "start", where)
        end = self.moment(table, "end", where)
        if end <= start:
            raise self.error(f"ends at or before its start ({table['start']})", where, "end")
        self.references(table, where, ids, required=False)
        if table.get("every") not in (None, "week", "month"):
            raise self.error(f'expected "week" or "month", got {_show(table["every"])}', where, "every")
        for flag in ("agreed", "announced"):
            if not isinstance(table.get(flag, False), bool):
                raise self.error(f"expected true or false, got {_show(table[flag])}", where, flag)
        if "note" in table and not isinstance(table["note"], str):
            raise self.error(f"expected a string, got {_show(table['note'])}", where, "note")
        until = self.moment(table, "until", where) if "until" in table else None
        return {**table, "start": start, "end": end, "until": until}

    def route(self, table: Any, index: int, ids: set[str]) -> dict[str, Any]:
        where = self.named(table, index, "notify")
        self.references(table, where, ids, required=False)
        return dict(table)

    # ---- helpers --------------------------------------------------------------------------------

    def named(self, table: Any, index: int, kind: str) -> str:
        if not isinstance(table, dict):
            raise self.error("expected a table", f"{kind} #{index + 1}")
        ident = self.string(table, "id", f"{kind} #{index + 1}", required=True)
        return f'{kind} "{ident}"'

    def references(self, table: dict[str, Any], where: str, ids: set[str], *, required: bool) -> None:
        refs: list[Any] = []
        if "check" in table:
            refs.append(table["check"])
        if "checks" in table:
            if not isinstance(table["checks"], list):
                raise self.error("expected a list of check ids", where, "checks")
            refs.extend(table["checks"])
        if required and not refs:
            raise self.error('names no check (add check = "<id>" or checks = [...])', where)
        for ref in refs:
            if not isinstance(ref, str):
                raise self.error(f"expected a check id, got {_show(ref)}", where,
                                 "check" if "check" in table else "checks")
            if ref not in ids:
                raise self.error(f'no check "{ref}" in this profile', where,
                                 "check" if table.get("check") == ref else "checks")

    def unique(self, tables: tuple[dict[str, Any], ...], kind: str) -> None:
        seen: set[str] = set()
        for table in tables:
            if table["id"] in seen:
                raise self.error(f'the id "{table["id"]}" is used twice', f'{kind} "{table["id"]}"', "id")
            seen.add(table["id"])

    def table(self, data: dict[str, Any], key: str, where: str, *, required: bool = False) -> dict[str, Any]:
        if key not in data:
            if required:
                raise self.error(f"missing table {where}")
            return {}
        value = data[key]
        if not isinstance(value, dict):
            top = key == where.strip("[]")
            raise self.error(f"expected a table, got {_show(value)}", where, None if top else key)
        return value

    def array(self, data: dict[str, Any], key: str) -> list[Any]:
        value = data.get(key, [])
        if not isinstance(value, list):
            raise self.error(f"expected [[{key}]] tables (an array of tables), got [{key}]")
        return value

    def known_keys(self, table: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
        for key in table:
            if key not in keys:
                raise self.error("unknown key; expected one of " + ", ".join(keys), where, key)

    def string(self, table: dict[str, Any], key: str, where: str, *, required: bool = False) -> Any:
        if key not in table:
            if required:
                raise self.error("required key is missing", where, key)
            return None
        value = table[key]
        if not isinstance(value, str) or not value:
            raise self.error(f"expected a non-empty string, got {_show(value)}", where, key)
        return value

    def duration(self, table: dict[str, Any], key: str, where: str) -> Duration | None:
        if key not in table:
            return None
        try:
            value = parse_duration(table[key])
        except ValueError as exc:
            raise self.error(str(exc), where, key) from None
        if value <= 0:
            raise self.error(f'expected a duration longer than zero, got "{table[key]}"', where, key)
        return value

    def moment(self, table: dict[str, Any], key: str, where: str) -> datetime:
        if key not in table:
            raise self.error("required key is missing", where, key)
        value = table[key]
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.astimezone(timezone.utc)
        if isinstance(value, (datetime, date, time)):
            raise self.error("expected a date-time with a UTC offset, like 2026-11-01T02:00:00+08:00",
                             where, key)
        raise self.error(f"expected a date-time like 2026-11-01T02:00:00+08:00, got {_show(value)}", where, key)


_TYPE_WORDS = {
    "int": "a whole number", "float": "a number", "str": "a string", "bool": "true or false",
    "object": "a table", "array": "a list", "null": "nothing", "Duration": 'a duration like "90s"',
    "Secret": 'a secret reference { env = "NAME" } or { file = "path" }',
}


def _explain(message: str, data: dict[str, Any], config: type[ProbeConfig]) -> tuple[str | None, str]:
    """Turn a msgspec validation message into (key, user-facing problem)."""
    text, _, path = message.partition(" - at `$")
    path = path.rstrip("`")
    key = path.lstrip(".").replace("]", "").replace("[", ".") or None
    if m := re.match(r"Object contains unknown field `(.+)`", text):
        fields = ", ".join(config.__struct_fields__) or "none"
        return (f"{key}.{m[1]}" if key else m[1]), f"unknown key; expected one of {fields}"
    if m := re.match(r"Object missing required field `(.+)`", text):
        return (f"{key}.{m[1]}" if key else m[1]), "required key is missing"
    value: Any = data
    for part in (key or "").split("."):
        if not part:
            continue
        try:
            value = value[int(part)] if isinstance(value, list) else value[part]
        except (KeyError, IndexError, ValueError, TypeError):
            value = None
            break
    if m := re.match(r"Expected `(.+?)`, got `(.+?)`", text):
        wanted = " or ".join(_TYPE_WORDS.get(w.strip(), w.strip()) for w in m[1].split("|"))
        return key, f"expected {wanted}, got {_show(value)}"
    if m := re.match(r"Expected `(\w+)` (of length )?[<>]=? ?-?\d", text):
        info = _field_info(config, key)
        word = _TYPE_WORDS.get(m[1], m[1])
        if m[1] == "str" and getattr(info, "min_length", None) == 1 and getattr(info, "max_length", None) is None:
            return key, f"expected a non-empty string, got {_show(value)}"
        lo, hi = getattr(info, "ge", None), getattr(info, "le", None)
        if lo is not None and hi is not None:
            return key, f"expected {word} from {lo} to {hi}, got {_show(value)}"
        bound = text.split("`", 2)[2].strip()  # e.g. ">= 1"
        return key, f"expected {word} {bound}, got {_show(value)}"
    if text.startswith("Expected"):
        return key, f"{text[0].lower()}{text[1:]}, got {_show(value)}".replace("`", "")
    return key, text[0].lower() + text[1:]


def _field_info(config: type[ProbeConfig], key: str | None) -> Any:
    if not key or "." in key:
        return None
    for f in msgspec.inspect.type_info(config).fields:
        if f.name == key:
            return f.type
    return None


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)
