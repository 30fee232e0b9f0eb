"""Report benchmark: a month of 1-minute records for N checks, then ``probe report`` on it.

Run from the repository root::

    .venv/bin/python benchmarks/report.py --checks 10          # quick
    .venv/bin/python benchmarks/report.py                      # 1,000 checks (44.6 M records)
    .venv/bin/python benchmarks/report.py --checks 100 --json --keep

Steps (keys and figures in benchmarks/README.md):

1. **Profile**: N ``tcp`` checks (192.0.2.1:80, never probed), ``interval`` from the flag,
   ``confirm = 2``, time zone Asia/Shanghai, and per check one ``availability`` (``>= 0.999``)
   and one ``downtime`` (``< "44m"``) objective.
2. **Records**: every slot of the month for every check, written straight into the SQLite store
   (schema created by ``SQLiteStore`` itself; rows built exactly as its ``_record_row`` does,
   a sample of them checked against it), time-major like a live store. A seeded pattern per
   check: 0–3 outages of 2–60 failed slots, 0–2 single-failure flaps, 0–2 ``error`` records and
   one gap of missing records. The seeded truth (down time, unknown time, availability, verdict
   per objective) is computed from the plan alone and kept in a sidecar ``.json`` file, so a
   store that already holds the data is reused (``--keep`` / ``--store``).
3. **Reference** (fresh subprocess): a plain SQL aggregation over the same store — per check,
   records and records not ok in the period.
4. **probe report** (fresh subprocess of ``.venv/bin/probe``): ``probe report PROFILE --month M
   --format json --store sqlite:PATH``; its per-objective measured values and verdicts are
   compared with the seeded truth for every check (``--sample`` limits how many).

Each measured process is started by a small launcher process (bare Python, no imports beyond
the standard library) that takes wall time around it and CPU time and peak RSS from
``os.wait4``: ``ru_maxrss`` survives ``fork``/``exec``, so the launcher must be smaller than what
it measures (it is: ~10 MiB). Exit status: 0 report within ``--max-seconds`` and matching the
truth, 1 it was slower or disagreed, 2 bad usage, a crash, or ``probe report`` not available.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

SCHEMA = "probecore.bench.report/1"
GENERATOR = 2  # 2: rows carry gap_ms (store schema v3)
"""Bump when the generated data changes: a sidecar of another version is not reused."""
PROFILE_NAME = "bench"
VANTAGE = "bench"
HOST = "192.0.2.1"
PORT = 80
TIMEZONE = "Asia/Shanghai"
CONFIRM = 2
STALENESS = 2
AVAILABILITY_TARGET = 0.999
DOWNTIME_LIMIT_MS = 44 * 60_000
DEFAULT_DIR = Path("/tmp/probecore-bench")
ROOT = Path(__file__).resolve().parent.parent


# ---- the plan: what every check's month looks like (pure, from the seed) -----------------------

@dataclass
class CheckPlan:
    index: int
    check: str
    """Full id, ``bench/c0000``."""
    outages: list[tuple[int, int]] = field(default_factory=list)
    """(first failed slot, failed slots) — confirmed outages (≥ CONFIRM failures)."""
    flaps: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    gap: tuple[int, int] = (0, 0)
    """(first missing slot, missing slots)."""


@dataclass
class Truth:
    records: int
    not_ok: int
    down_ms: int
    unknown_ms: int
    availability: float
    availability_met: bool
    downtime_met: bool
    outages: int
    spans: list[tuple[int, int]] = field(default_factory=list)
    """(start, end) epoch ms of every outage: first failure to the next record."""


def check_ids(count: int) -> list[str]:
    width = max(4, len(str(count - 1)))
    return [f"c{i:0{width}d}" for i in range(count)]


def month_bounds(month: str) -> tuple[int, int]:
    """The month in the profile's time zone, as epoch milliseconds ``[start, end)``."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(TIMEZONE)
    year, mon = (int(x) for x in month.split("-"))
    start = datetime(year, mon, 1, tzinfo=zone)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=zone)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def jitter_ms(index: int, slot: int, seed: int) -> int:
    """How late a record started after its slot, 0–499 ms: a pure function so the truth needs no
    record. (Knuth's multiplicative hash of the check, slot and seed.)"""
    return (((index * 1_000_003 + slot * 7_919 + seed * 104_729) * 2_654_435_761) >> 11) % 500


def plan_checks(count: int, slots: int, seed: int) -> list[CheckPlan]:
    plans = []
    for index, cid in enumerate(check_ids(count)):
        rng = random.Random(f"probecore-bench-report/{seed}/{index}")
        plan = CheckPlan(index, f"{PROFILE_NAME}/{cid}")
        taken: list[tuple[int, int]] = []

        def place(length: int, margin: int = 3) -> int:
            # Away from the month's edges and from each other, with ok records on both sides.
            for _ in range(1000):
                first = rng.randrange(10, slots - length - 10)
                if all(first + length + margin <= a or b + margin <= first for a, b in taken):
                    taken.append((first, first + length))
                    return first
            raise SystemExit("report benchmark: the month is too short for the seeded pattern")

        gap_len = rng.randint(5, 30)
        plan.gap = (place(gap_len), gap_len)
        for _ in range(rng.randint(0, 3)):
            length = rng.randint(CONFIRM, 60)
            plan.outages.append((place(length), length))
        plan.flaps = [place(1) for _ in range(rng.randint(0, 2))]
        plan.errors = [place(1) for _ in range(rng.randint(0, 2))]
        plan.outages.sort()
        plan.flaps.sort()
        plan.errors.sort()
        plans.append(plan)
    return plans


def truth_of(plan: CheckPlan, start_ms: int, end_ms: int, interval_ms: int, seed: int, slots: int) -> Truth:
    """What a correct report says about *plan*, from the evaluation semantics of
    docs/objectives.md: an outage of k failed slots (k ≥ confirm) is down from the first failure's
    start to the next (ok) record's start; a flap is up; an ``error`` record's time (to the next
    record) is unknown; a gap is unknown beyond the last record's hold (staleness × interval);
    availability = 1 − down / (period − unknown). Records fill the first *slots* of the period."""

    def started(slot: int) -> int:
        return start_ms + slot * interval_ms + jitter_ms(plan.index, slot, seed)

    hold = STALENESS * interval_ms
    spans = [(started(first), started(first + k)) for first, k in plan.outages]
    down = sum(b - a for a, b in spans)
    unknown = started(0) - start_ms
    gap_first, gap_len = plan.gap
    unknown += max(0, started(gap_first + gap_len) - (started(gap_first - 1) + hold))
    for slot in plan.errors:
        unknown += min(started(slot + 1), started(slot) + hold) - started(slot)
    last_held = started(slots - 1) + hold
    unknown += max(0, end_ms - last_held)
    known = (end_ms - start_ms) - unknown
    availability = 1.0 - down / known
    failures = sum(k for _, k in plan.outages) + len(plan.flaps)
    return Truth(records=slots - gap_len, not_ok=failures + len(plan.errors), down_ms=down,
                 unknown_ms=unknown, availability=availability,
                 availability_met=availability >= AVAILABILITY_TARGET,
                 downtime_met=down < DOWNTIME_LIMIT_MS, outages=len(plan.outages), spans=spans)


# ---- the profile --------------------------------------------------------------------------------

def profile_text(count: int, interval_s: int) -> str:
    lines = [
        "# Generated by benchmarks/report.py: never probed (192.0.2.1 is TEST-NET-1).",
        "[profile]",
        f'name = "{PROFILE_NAME}"',
        f'timezone = "{TIMEZONE}"',
        'description = "report benchmark"',
        "",
        "[defaults]",
        f'interval = "{interval_s}s"',
        'timeout = "5s"',
        f"confirm = {CONFIRM}",
        "",
    ]
    for cid in check_ids(count):
        lines += ["[[check]]", f'id = "{cid}"', 'probe = "tcp"', f'host = "{HOST}"', f"port = {PORT}", ""]
    for cid in check_ids(count):
        lines += ["[[objective]]", f'id = "{cid}-availability"', 'clause = "bench"',
                  'kind = "availability"', f'check = "{cid}"', 'op = ">="', f"target = {AVAILABILITY_TARGET}",
                  'denominator = "evidence"',  # the seeded truth: 1 − down / (period − unknown)
                  "",
                  "[[objective]]", f'id = "{cid}-downtime"', 'clause = "bench"', 'kind = "downtime"',
                  f'check = "{cid}"', 'op = "<"', f'limit = "{DOWNTIME_LIMIT_MS // 60_000}m"', ""]
    return "\n".join(lines)


# ---- the records ------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _stamp_prefix(ms: int) -> str:
    """``2026-09-30T16:00:00.`` of a whole-second epoch ms (the record's timestamp sans millis)."""
    return (_EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.")


def _float_texts(values: list[float]) -> list[str]:
    import msgspec

    return [msgspec.json.encode(v).decode() for v in values]


class Generator:
    """Builds the rows of the ``records`` table exactly as ``SQLiteStore._record_row`` would."""

    def __init__(self, plans: list[CheckPlan], start_ms: int, interval_ms: int, seed: int, slots: int):
        self.plans = plans
        self.start_ms, self.interval_ms, self.seed, self.slots = start_ms, interval_ms, seed, slots
        # Connect times 1.000–80.999 ms; failures (refused) 0.2–3 ms. msgspec's float text.
        rng = random.Random(seed)
        self.ok_durations = _float_texts([round(rng.uniform(0.001, 0.081), 6) for _ in range(997)])
        self.fail_durations = _float_texts([round(rng.uniform(0.0002, 0.003), 6) for _ in range(101)])
        # slot -> [(check index, "fail" | "error")]; a missing slot is "gap".
        special: dict[int, list[tuple[int, str]]] = {}
        for p in plans:
            for first, k in p.outages:
                for s in range(first, first + k):
                    special.setdefault(s, []).append((p.index, "fail"))
            for s in p.flaps:
                special.setdefault(s, []).append((p.index, "fail"))
            for s in p.errors:
                special.setdefault(s, []).append((p.index, "error"))
            first, k = p.gap
            for s in range(first, first + k):
                special.setdefault(s, []).append((p.index, "gap"))
        self.special = special
        self.total = self.slots * len(plans) - sum(p.gap[1] for p in plans)

    def rows(self, slot: int) -> list[tuple[str, str, int, str, str]]:
        """The rows of every check's record in *slot*."""
        seed = self.seed
        slot_ms = self.start_ms + slot * self.interval_ms
        prefix = _stamp_prefix(slot_ms)
        scheduled = prefix + "000Z"
        head = '{"schema":"probecore.sli/1","check":"'
        mid = (f'","probe":"tcp","target":"{HOST}:{PORT}","vantage":"{VANTAGE}","scheduled_at":"'
               f'{scheduled}","started_at":"{prefix}')
        ok_durations = self.ok_durations
        n_ok = len(ok_durations)
        special = dict(self.special.get(slot, ()))
        salt = slot * 7_919 + seed * 104_729
        out = []
        append = out.append
        for p in self.plans:
            index = p.index
            jitter = (((index * 1_000_003 + salt) * 2_654_435_761) >> 11) % 500
            kind = special.get(index) if special else None
            if kind is None:
                d = ok_durations[(jitter * 31 + index) % n_ok]
                append((p.check, VANTAGE, slot_ms + jitter, "ok",
                        f'{head}{p.check}{mid}{jitter:03d}Z","duration_s":{d},"outcome":"ok","value":{d},'
                        f'"unit":"s","phases":{{"connect":{d}}},"failure":null,'
                        f'"details":{{"address":"{HOST}"}},"labels":{{}}}}'))
            elif kind == "fail":
                d = self.fail_durations[(jitter * 7 + index) % len(self.fail_durations)]
                append((p.check, VANTAGE, slot_ms + jitter, "fail",
                        f'{head}{p.check}{mid}{jitter:03d}Z","duration_s":{d},"outcome":"fail","value":null,'
                        f'"unit":null,"phases":{{"connect":{d}}},"failure":{{"code":"connect_refused",'
                        f'"attribution":"provider","message":"connect to {HOST} port {PORT}: '
                        f'Connection refused"}},"details":{{"address":"{HOST}"}},"labels":{{}}}}'))
            elif kind == "error":
                append((p.check, VANTAGE, slot_ms + jitter, "error",
                        f'{head}{p.check}{mid}{jitter:03d}Z","duration_s":0.0,"outcome":"error","value":null,'
                        f'"unit":null,"phases":{{}},"failure":{{"code":"probe_crashed","attribution":"probe",'
                        f'"message":"the probe raised RuntimeError (bench)"}},"details":{{}},"labels":{{}}}}'))
            # "gap": no record
        return out


def verify_rows(rows: list[tuple[str, str, int, str, str]]) -> None:
    """Each row must be what ``SQLiteStore`` would store for the record its body decodes to."""
    from probecore import decode_record
    from probecore_plugins.sqlite import _record_row

    for row in rows:
        expected = _record_row(decode_record(row[4]))
        if tuple(row) != expected:
            raise SystemExit(f"report benchmark: generated row differs from the store's:\n{row}\n{expected}")


def generate(path: Path, gen: Generator, *, batch: int, quiet: bool) -> dict[str, float]:
    """Create the store at *path* (schema by ``SQLiteStore``) and fill it. Returns timings."""
    from probecore_plugins.sqlite import SQLiteStore

    store = SQLiteStore(f"sqlite:{path}")  # creates and migrates the schema (WAL mode)
    store.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-262144")  # 256 MiB
    from probecore_plugins.sqlite import FIRST_GAP

    # gap_ms as SQLiteStore keeps it (the gap to the stream's previous record): rows go in in
    # time order, so the previous start of each check is known here.
    insert = ("INSERT INTO records (check_id, vantage, started_ms, outcome, body, gap_ms) "
              "VALUES (?, ?, ?, ?, ?, ?)")
    previous: dict[str, int] = {}
    began = time.monotonic()
    last = began
    done = 0
    pending: list[tuple[str, str, int, str, str]] = []
    sample = random.Random(gen.seed)
    build_s = 0.0

    def with_gaps(rows: list[tuple[str, str, int, str, str]]):  # type: ignore[no-untyped-def]
        for row in rows:
            before = previous.get(row[0])
            previous[row[0]] = row[2]
            yield (*row, FIRST_GAP if before is None else row[2] - before)

    def flush() -> None:
        db.execute("BEGIN")
        db.executemany(insert, with_gaps(pending))
        db.execute("COMMIT")
        pending.clear()

    for slot in range(gen.slots):
        t0 = time.perf_counter()
        rows = gen.rows(slot)
        build_s += time.perf_counter() - t0
        if slot in gen.special or slot == 0 or sample.random() < 0.002:
            verify_rows([r for r in rows if r[3] != "ok"] + rows[:1])
        pending.extend(rows)
        done += len(rows)
        if len(pending) >= batch:
            flush()
        now = time.monotonic()
        if not quiet and now - last >= 5:
            last = now
            rate = done / (now - began)
            eta = (gen.total - done) / rate if rate else 0
            print(f"generate: {done:,}/{gen.total:,} records ({done / gen.total:.1%}), "
                  f"{rate:,.0f} records/s, {_mib(path):,.0f} MiB, about {eta:,.0f} s left",
                  file=sys.stderr, flush=True)
    if pending:
        flush()
    insert_s = time.monotonic() - began
    t0 = time.monotonic()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("ANALYZE")
    db.close()
    return {"generate_s": insert_s + (time.monotonic() - t0), "build_s": build_s,
            "records": done, "records_per_s": done / insert_s if insert_s else 0.0}


def _mib(path: Path) -> float:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.path.getsize(f"{path}{suffix}")
        except OSError:
            pass
    return total / 2**20


# ---- measured processes -----------------------------------------------------------------------

def launcher(command: list[str], out_path: str) -> dict[str, Any]:
    """Run *command* with stdout to *out_path*; wall, CPU and peak RSS of it (``os.wait4``)."""
    with open(out_path, "wb") as out:
        began = time.monotonic()
        proc = subprocess.Popen(command, stdout=out)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {"exit": proc.returncode, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024}


REFERENCE_QUERIES = {
    # What a report must read at least, from the store's own indexes: every record's start per
    # check (covering index records_by_check_time) and the records not ok (partial index).
    "index": (
        "SELECT check_id, COUNT(*), 0 FROM records WHERE check_id >= ? AND check_id < ? "
        "AND started_ms >= ? AND started_ms < ? GROUP BY check_id",
        "SELECT check_id, COUNT(*) FROM records WHERE outcome != 'ok' AND started_ms >= ? "
        "AND started_ms < ? GROUP BY check_id",
    ),
    # The plain aggregation over the table: outcome is not in an index, so every row is read.
    "scan": (
        "SELECT check_id, COUNT(*), SUM(outcome != 'ok') FROM records WHERE check_id >= ? "
        "AND check_id < ? AND started_ms >= ? AND started_ms < ? GROUP BY check_id",
        None,
    ),
}


def sql_worker(path: str, since_ms: int, until_ms: int, kind: str) -> None:
    """The reference: a plain SQL aggregation over the same store, per check: records and records
    not ok in the period, printed as JSON."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    counts, not_ok = REFERENCE_QUERIES[kind]
    prefix = PROFILE_NAME + "/"
    result = {c: [n, bad] for c, n, bad in db.execute(counts, (prefix, prefix + "\U0010ffff", since_ms, until_ms))}
    if not_ok is not None:
        for c, bad in db.execute(not_ok, (since_ms, until_ms)):
            result[c][1] = bad
    json.dump(result, sys.stdout)


def measure(command: list[str], out_path: Path) -> dict[str, Any]:
    """Start the launcher (a fresh, bare Python) which starts and measures *command*."""
    launch = [sys.executable, "-S", "-c",
              "import json, sys; sys.path.insert(0, sys.argv[1]); import report; "
              "print(json.dumps(report.launcher(json.loads(sys.argv[2]), sys.argv[3])))",
              str(Path(__file__).resolve().parent), json.dumps(command), str(out_path)]
    done = subprocess.run(launch, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"report benchmark: the launcher failed (exit status {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def probe_executable() -> str:
    candidate = Path(sys.executable).with_name("probe")
    return str(candidate) if candidate.exists() else (shutil.which("probe") or "probe")


def report_available() -> str | None:
    """None when ``probe report`` can run, else why not."""
    try:
        import probecore._report  # noqa: F401
    except ImportError as exc:
        return f"probe report is not available yet ({exc}); the store was generated and the reference measured"
    return None


# ---- comparing the report's JSON with the truth -----------------------------------------------

def compare(document: Any, plans: list[CheckPlan], truths: dict[str, Truth], sample: int | None,
            seed: int) -> tuple[int, list[str]]:
    """(objectives compared, disagreements) for every check, or a seeded sample of them.

    Per objective (``probe schema report``): ``measured`` (a ratio, or seconds of down time),
    ``met``, ``unknown_s`` and every outage's ``start``/``end``/``down_s`` against the seed.
    Durations are compared to the millisecond (the report's seconds are exact milliseconds).
    """
    from probecore import timestamp_ms

    objectives = {o.get("id"): o for o in document.get("objectives", []) if isinstance(o, dict)}
    chosen = plans if sample is None or sample >= len(plans) else random.Random(seed).sample(plans, sample)
    problems: list[str] = []
    compared = 0

    def differs(got: Any, want: float, tolerance: float) -> bool:
        return not isinstance(got, (int, float)) or isinstance(got, bool) or abs(got - want) > tolerance

    for plan in chosen:
        cid = plan.check.split("/", 1)[1]
        truth = truths[plan.check]
        for kind, want, met in (("availability", truth.availability, truth.availability_met),
                                ("downtime", truth.down_ms / 1000, truth.downtime_met)):
            oid = f"{cid}-{kind}"
            obj = objectives.get(oid)
            if obj is None:
                problems.append(f"{oid}: not in the report")
                continue
            compared += 1
            got = obj.get("measured")
            if differs(got, want, 1e-9 if kind == "availability" else 0.0015):
                problems.append(f"{oid}: measured {got!r}, seeded truth {want!r}")
            if obj.get("met") is not met:
                problems.append(f"{oid}: met {obj.get('met')!r}, seeded truth {met!r}")
            if differs(obj.get("unknown_s"), truth.unknown_ms / 1000, 0.0015):
                problems.append(f"{oid}: unknown_s {obj.get('unknown_s')!r}, seeded truth {truth.unknown_ms / 1000!r}")
            try:
                spans = [(timestamp_ms(o["start"]), timestamp_ms(o["end"]), round(o["down_s"] * 1000))
                         for o in obj.get("outages", [])]
            except (KeyError, TypeError, ValueError) as exc:
                problems.append(f"{oid}: outages unreadable ({exc!r})")
                continue
            seeded = [(x, y, y - x) for x, y in truth.spans]
            if sorted(spans) != seeded:
                problems.append(f"{oid}: outages {spans}, seeded truth {seeded}")
    return compared, problems


# ---- the run ----------------------------------------------------------------------------------

def default_store(args: argparse.Namespace, interval_s: int) -> Path:
    days = f"-{args.days}d" if args.days else ""
    return DEFAULT_DIR / f"report-{args.checks}c-{args.month}{days}-{interval_s}s-seed{args.seed}.sqlite3"


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + ".bench.json")


def prepare_store(args: argparse.Namespace, path: Path, params: dict[str, Any], gen: Generator,
                  quiet: bool) -> dict[str, Any]:
    """Reuse the store at *path* when its sidecar says it holds exactly this data; else make it."""
    sidecar = sidecar_of(path)
    if path.exists():
        meta = json.loads(sidecar.read_text()) if sidecar.exists() else None
        if meta is not None and meta.get("params") == params:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            count = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
            db.close()
            if count == meta["records"]:
                if not quiet:
                    print(f"store: reusing {path} ({count:,} records, {_mib(path):,.0f} MiB)", file=sys.stderr)
                return {**meta, "reused": True}
        if meta is None:
            raise SystemExit(f"report benchmark: {path} exists and was not made by this benchmark "
                             f"(no {sidecar.name}); remove it or choose another --store")
        if not quiet:
            print(f"store: {path} holds other data; generating it again", file=sys.stderr)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    estimate = gen.total * 420  # bytes per record, table and indexes (measured: ~400)
    if not quiet:
        print(f"store: generating {gen.total:,} records into {path} (about {estimate / 2**30:,.1f} GiB; "
              f"{free / 2**30:,.0f} GiB free)", file=sys.stderr)
    if estimate > free * 0.9:
        raise SystemExit(f"report benchmark: not enough disk for about {estimate / 2**30:.1f} GiB at {path.parent}")
    timings = generate(path, gen, batch=args.batch, quiet=quiet)
    meta = {"params": params, "records": timings["records"], "generate_s": timings["generate_s"],
            "build_s": timings["build_s"], "generate_records_per_s": timings["records_per_s"],
            "store_mib": _mib(path)}
    sidecar.write_text(json.dumps(meta))
    if not quiet:
        print(f"store: {timings['records']:,} records in {timings['generate_s']:,.1f} s "
              f"({timings['records_per_s']:,.0f} records/s), {meta['store_mib']:,.0f} MiB", file=sys.stderr)
    return {**meta, "reused": False}


@dataclass
class Setup:
    start_ms: int
    end_ms: int
    interval_s: int
    slots: int
    """Slots with records: the whole month, or its first ``--days``."""
    plans: list[CheckPlan]
    truths: dict[str, Truth]
    generator: Generator
    params: dict[str, Any]


def make_setup(checks: int, month: str, interval: str, seed: int, days: int | None = None) -> Setup:
    """The plan, truth and generator of a run (raises SystemExit with a message on bad input)."""
    from probecore import parse_duration

    try:
        seconds = float(parse_duration(interval))
    except ValueError as exc:
        raise SystemExit(f"report benchmark: --interval: {exc}") from None
    if seconds < 1 or seconds != int(seconds):
        raise SystemExit("report benchmark: --interval must be a whole number of seconds, at least 1s")
    interval_s = int(seconds)
    interval_ms = interval_s * 1000
    try:
        start_ms, end_ms = month_bounds(month)
    except ValueError:
        raise SystemExit(f"report benchmark: --month {month!r}: expected YYYY-MM") from None
    slots = (end_ms - start_ms) // interval_ms
    if days is not None:
        slots = min(slots, days * 86_400 // interval_s)
    if slots < 300:
        raise SystemExit("report benchmark: fewer than 300 slots: too few for the seeded pattern")
    plans = plan_checks(checks, slots, seed)
    truths = {p.check: truth_of(p, start_ms, end_ms, interval_ms, seed, slots) for p in plans}
    params: dict[str, Any] = {"generator": GENERATOR, "checks": checks, "month": month,
                              "interval_s": interval_s, "seed": seed}
    if days is not None:
        params["days"] = days
    return Setup(start_ms, end_ms, interval_s, slots, plans, truths,
                 Generator(plans, start_ms, interval_ms, seed, slots), params)


def write_profile(path: Path, checks: int, interval_s: int) -> Path:
    """The profile beside the store: ``<store>.profile.toml``."""
    profile = path.with_name(path.name + ".profile.toml")
    path.parent.mkdir(parents=True, exist_ok=True)
    profile.write_text(profile_text(checks, interval_s))
    return profile


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup = make_setup(args.checks, args.month, args.interval, args.seed, args.days)
    start_ms, end_ms, interval_s = setup.start_ms, setup.end_ms, setup.interval_s
    plans, truths = setup.plans, setup.truths
    quiet = args.quiet
    path = Path(args.store) if args.store else default_store(args, interval_s)
    profile = write_profile(path, args.checks, interval_s)
    meta = prepare_store(args, path, setup.params, setup.generator, quiet)

    out_dir = path.parent
    ref_out = out_dir / (path.name + ".reference.json")
    report_out = out_dir / (path.name + ".report.json")
    reference = None
    if not args.no_reference:
        if not quiet:
            print(f"reference: plain SQL aggregation ({args.reference}) …", file=sys.stderr)
        reference = measure([sys.executable, "-S", "-c",
                             "import sys; sys.path.insert(0, sys.argv[1]); import report; "
                             "report.sql_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])",
                             str(Path(__file__).resolve().parent), str(path), str(start_ms), str(end_ms),
                             args.reference],
                            ref_out)
        counts = json.loads(ref_out.read_text()) if reference["exit"] == 0 else {}
        wrong = [c for c, t in truths.items() if counts.get(c) != [t.records, t.not_ok]]
        reference["counts_match"] = not wrong
    unavailable = report_available()
    report = None
    compared, problems = 0, []
    if unavailable is None:
        if not quiet:
            print("probe report …", file=sys.stderr)
        command = [probe_executable(), "report", str(profile), "--month", args.month, "--format", "json",
                   "--store", f"sqlite:{path}"]
        report = measure(command, report_out)
        report["command"] = command
        if report["exit"] not in (0, 1):
            problems.append(f"probe report exited with status {report['exit']}")
        else:
            try:
                document = json.loads(report_out.read_text())
            except ValueError as exc:
                problems.append(f"probe report printed no JSON: {exc}")
            else:
                compared, problems = compare(document, plans, truths, args.sample, args.seed)
    elif not quiet:
        print(f"report benchmark: {unavailable}", file=sys.stderr)

    figures = combine(args, interval_s, meta, path, reference, report, compared, problems, truths,
                      unavailable)
    if not args.keep and not args.store:
        for suffix in ("", "-wal", "-shm", ".bench.json", ".profile.toml", ".reference.json", ".report.json"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return figures


def combine(args: argparse.Namespace, interval_s: int, meta: dict[str, Any], path: Path,
            reference: dict[str, Any] | None, report: dict[str, Any] | None, compared: int,
            problems: list[str], truths: dict[str, Truth], unavailable: str | None) -> dict[str, Any]:
    def ratio(key: str) -> float | None:
        if reference is None or report is None or not reference[key]:
            return None
        return report[key] / reference[key]

    failures: list[str] = []
    if unavailable:
        failures.append(unavailable)
    if report is not None and report["wall_s"] > args.max_seconds:
        failures.append(f"probe report took {report['wall_s']:.2f} s > {args.max_seconds:g} s")
    failures += problems[:20]
    if len(problems) > 20:
        failures.append(f"… and {len(problems) - 20} more disagreements")
    if reference is not None and (reference["exit"] != 0 or not reference["counts_match"]):
        failures.append("the reference's per-check counts differ from the generated records")
    values = list(truths.values())
    return {
        "schema": SCHEMA,
        "checks": args.checks, "month": args.month, "interval_s": interval_s, "seed": args.seed,
        "reference": None if args.no_reference else args.reference, "store": str(path), "store_mib": meta["store_mib"], "records": meta["records"],
        "store_reused": meta["reused"], "generate_s": meta["generate_s"],
        "generate_records_per_s": meta["generate_records_per_s"],
        "seeded_outages": sum(t.outages for t in values),
        "seeded_not_ok": sum(t.not_ok for t in values),
        "seeded_downtime_missed": sum(not t.downtime_met for t in values),
        "seeded_availability_missed": sum(not t.availability_met for t in values),
        "report_available": unavailable is None,
        "report_exit": report["exit"] if report else None,
        "wall_s": report["wall_s"] if report else None,
        "cpu_s": report["cpu_s"] if report else None,
        "peak_rss_mib": report["peak_rss_mib"] if report else None,
        "reference_wall_s": reference["wall_s"] if reference else None,
        "reference_cpu_s": reference["cpu_s"] if reference else None,
        "reference_peak_rss_mib": reference["peak_rss_mib"] if reference else None,
        "wall_ratio": ratio("wall_s"), "cpu_ratio": ratio("cpu_s"), "rss_ratio": ratio("peak_rss_mib"),
        "objectives_compared": compared, "disagreements": len(problems),
        "thresholds": {"max_seconds": args.max_seconds},
        "failures": failures, "passed": not failures,
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count(),
    }


def show(figures: dict[str, Any]) -> None:
    f = figures

    def num(value: Any, fmt: str = "{:,.2f}") -> str:
        return "–" if value is None else fmt.format(value)

    lines = [
        f"probecore report: {f['checks']:,} checks × {f['month']} every {f['interval_s']} s "
        f"= {f['records']:,} records, {f['store_mib']:,.0f} MiB ({f['store']})",
        f"  generated in {f['generate_s']:,.1f} s ({f['generate_records_per_s']:,.0f} records/s)"
        + (" — reused" if f["store_reused"] else ""),
        f"  seeded: {f['seeded_outages']:,} outages, {f['seeded_not_ok']:,} records not ok; "
        f"{f['seeded_downtime_missed']:,} downtime and {f['seeded_availability_missed']:,} availability "
        "objectives missed",
        f"  {'':24} {'probe report':>14} {'SQL (' + (f['reference'] or '–') + ')':>14} {'ratio':>8}",
        f"  {'wall s':24} {num(f['wall_s']):>14} {num(f['reference_wall_s']):>14} {num(f['wall_ratio'], '{:.2f}×'):>8}"
        f"   (≤ {f['thresholds']['max_seconds']:g} s)",
        f"  {'CPU s':24} {num(f['cpu_s']):>14} {num(f['reference_cpu_s']):>14} {num(f['cpu_ratio'], '{:.2f}×'):>8}",
        f"  {'peak RSS MiB':24} {num(f['peak_rss_mib'], '{:,.1f}'):>14} "
        f"{num(f['reference_peak_rss_mib'], '{:,.1f}'):>14} {num(f['rss_ratio'], '{:.2f}×'):>8}",
        f"  objectives compared with the seeded truth: {f['objectives_compared']:,}, "
        f"disagreements: {f['disagreements']:,}",
    ]
    print("\n".join(lines))
    if f["failures"]:
        print("FAIL: " + "\n      ".join(f["failures"]))
    else:
        print("PASS: within the time limit and matching the seeded truth")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/report.py",
        description="Generate a month of records for N checks with a seeded outage pattern, then time "
        "'probe report' on it beside a plain SQL aggregation, and check its verdicts against the seed.",
        epilog="Exit status: 0 within --max-seconds and matching the truth, 1 slower or wrong, "
        "2 usage error, crash, or probe report not available.")
    parser.add_argument("--checks", type=int, default=1000, help="number of checks (default 1000)")
    parser.add_argument("--month", default="2026-10", help="the month, YYYY-MM (default 2026-10)")
    parser.add_argument("--interval", default="60s", help="record interval (default 60s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the outage pattern (default 1)")
    parser.add_argument("--days", type=int, default=None, metavar="N",
                        help="records for the month's first N days only (the rest is unknown time; "
                        "for quick runs and the smoke test)")
    parser.add_argument("--store", metavar="PATH", default=None,
                        help=f"the SQLite file; reused when it already holds this data (default: under "
                        f"{DEFAULT_DIR}, removed afterwards unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the generated store in the default place")
    parser.add_argument("--batch", type=int, default=50_000, help="rows per insert transaction (default 50000)")
    parser.add_argument("--sample", type=int, default=None, metavar="N",
                        help="compare only N checks (seeded choice) with the truth (default: all)")
    parser.add_argument("--reference", choices=("index", "scan"), default="index",
                        help="the SQL reference: per-check counts from the store's indexes (default), "
                        "or an aggregation that reads every row of the table")
    parser.add_argument("--no-reference", action="store_true", help="skip the plain SQL reference")
    parser.add_argument("--max-seconds", type=float, default=10.0, metavar="S",
                        help="threshold: wall seconds of probe report (default 10)")
    parser.add_argument("--generate-only", action="store_true",
                        help="only make the store (implies --keep) and print its figures")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON line on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.checks < 1:
        parser.error("--checks must be at least 1")
    if args.generate_only:
        args.keep = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.generate_only:
        args.no_reference = True
    try:
        if args.generate_only:
            figures = generate_only(args)
        else:
            figures = run(args)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 2
    if args.json:
        sys.stdout.write(json.dumps(figures) + "\n")
    elif not args.generate_only:
        show(figures)
    else:
        print(json.dumps(figures, indent=2))
    if args.generate_only:
        return 0
    if not figures["report_available"]:
        return 2
    return 0 if figures["passed"] else 1


def generate_only(args: argparse.Namespace) -> dict[str, Any]:
    setup = make_setup(args.checks, args.month, args.interval, args.seed, args.days)
    path = Path(args.store) if args.store else default_store(args, setup.interval_s)
    write_profile(path, args.checks, setup.interval_s)
    meta = prepare_store(args, path, setup.params, setup.generator, args.quiet)
    return {"store": str(path), **{k: v for k, v in meta.items() if k != "params"}, **setup.params}


if __name__ == "__main__":
    sys.exit(main())
