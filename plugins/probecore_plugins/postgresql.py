"""The PostgreSQL store (``postgresql://user@host:port/db``, also ``postgres://``): a shared store
for many agents and for months of records from thousands of checks.

- **Connections**: psycopg 3 and a ``psycopg_pool`` pool, used from the store's worker thread
  (the core calls every method through ``call_store``). The password comes from the URL, from
  ``PGPASSWORD`` or from ``~/.pgpass`` (libpq's own rules); it is never shown: :attr:`url` is the
  URL without it, and error messages have it scrubbed. Any libpq parameter may be given in the
  URL's query (``?sslmode=require&application_name=probe``).
- **Schema**: versioned in the one-row table ``probecore_schema``; :data:`MIGRATIONS` run forward
  on open, each in one transaction under an advisory lock (several agents may open the store at
  once). The semantics are the SQLite store's: records keyed by (check, vantage, start) and kept
  as their canonical JSON line (what comes out is byte for byte what went in), each with
  ``gap_ms`` (its distance to the previous record of its stream); incident events with a global
  sequence; annotations; the notification outbox and its attempts. Text keys use the ``"C"``
  collation, so a check-id prefix is an index range and the order is the same as SQLite's.
- **Records are partitioned by month** (range partitions on ``started_ms``, UTC months, named
  ``records_pYYYYMM``), created on demand before a batch that needs them and for the current and
  next month on open. A month's report touches only its partitions; old months can be detached
  and archived (``ALTER TABLE records DETACH PARTITION records_p202601``) without a rewrite.
- **Writes**: one ``INSERT … SELECT FROM unnest(arrays)`` per batch (the whole batch in one
  round trip, as binary arrays), which computes each row's ``gap_ms`` from the batch itself and
  the stream's previous stored record; a batch landing before stored records of a stream (an
  import into the middle) recomputes that stream's gaps from its first row on.
- **Reads for the evaluator** are pushed into SQL: :meth:`PostgreSQLStore.evidence` is one query
  per check over the gap index, failures come from a partial index on records that are not ok,
  :meth:`~PostgreSQLStore.following` is one query for all moments: a month of 10,000 checks is
  judged without reading their ok records.

Extending it (agents' leases, the judge's leader lock …): add a migration to :data:`MIGRATIONS`
and bump :data:`SCHEMA_VERSION`; use :meth:`PostgreSQLStore.connection` for a pooled
connection (autocommit: open a transaction with ``conn.transaction()``), and
:func:`advisory_key` for a stable advisory-lock key.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import msgspec

from probecore import (
    Annotation,
    Delivery,
    IncidentEvent,
    SLIRecord,
    StoreError,
    decode_annotation,
    decode_event,
    decode_record,
    encode_annotation,
    encode_event,
    hookimpl,
    timestamp_ms,
)

from ._store_rows import decode_delivery as _decode_delivery
from ._store_rows import encode_delivery as _encode_delivery
from ._store_rows import record_filters
from ._store_rows import record_row as _record_row

SCHEMA_VERSION = 2

FIRST_GAP = 2**53 - 1
"""``gap_ms`` of a stream's first record: a gap larger than any hold (as in SQLite)."""

# Each entry moves the schema from version i to i + 1, in one transaction. Never edit a shipped
# entry: add one (and bump SCHEMA_VERSION).
MIGRATIONS: tuple[str, ...] = (
    # v1: everything the SQLite store has at its v4, partitioned for scale.
    f"""
    CREATE SEQUENCE records_id_seq AS bigint;
    CREATE TABLE records (
        id          bigint NOT NULL DEFAULT nextval('records_id_seq'),
        check_id    text COLLATE "C" NOT NULL,
        vantage     text COLLATE "C" NOT NULL,
        started_ms  bigint NOT NULL,
        outcome     text COLLATE "C" NOT NULL,
        gap_ms      bigint NOT NULL,
        body        text NOT NULL
    ) PARTITION BY RANGE (started_ms);
    ALTER SEQUENCE records_id_seq OWNED BY records.id;
    -- The key, and the stream's previous record (gap_ms) as one backward seek.
    CREATE UNIQUE INDEX records_by_stream ON records (check_id, vantage, started_ms);
    -- The evaluator reads failures through a small partial index: a month of a 1-minute check
    -- is 43,200 records, nearly all ok.
    CREATE INDEX records_not_ok ON records (check_id, started_ms) WHERE outcome <> 'ok';
    -- Where evidence stops (gap > hold), without reading every start time.
    CREATE INDEX records_gaps ON records (check_id, gap_ms);
    -- Time ranges over every check (records are written in time order): tiny.
    CREATE INDEX records_by_time ON records USING brin (started_ms);

    CREATE TABLE events (
        seq         bigserial PRIMARY KEY,
        event_id    text COLLATE "C" NOT NULL UNIQUE,
        check_id    text COLLATE "C" NOT NULL,
        incident_id text COLLATE "C" NOT NULL,
        kind        text COLLATE "C" NOT NULL,
        at_ms       bigint NOT NULL,
        body        text NOT NULL
    );
    CREATE INDEX events_by_check ON events (check_id, at_ms);
    CREATE INDEX events_by_incident ON events (incident_id);

    CREATE TABLE annotations (
        id          bigserial PRIMARY KEY,
        profile     text COLLATE "C" NOT NULL,
        kind        text COLLATE "C" NOT NULL,
        body        text NOT NULL
    );
    CREATE INDEX annotations_by_profile ON annotations (profile, kind, id);

    CREATE TABLE outbox (
        id          bigserial PRIMARY KEY,
        profile     text COLLATE "C" NOT NULL,
        event_id    text COLLATE "C" NOT NULL,
        route       text COLLATE "C" NOT NULL,
        channel     text COLLATE "C" NOT NULL,
        status      text COLLATE "C" NOT NULL,
        next_ms     bigint NOT NULL,
        body        text NOT NULL
    );
    CREATE UNIQUE INDEX outbox_once ON outbox (event_id, route, channel);
    CREATE INDEX outbox_due ON outbox (profile, status, next_ms);
    CREATE TABLE outbox_attempts (
        seq         bigserial PRIMARY KEY,
        delivery_id bigint NOT NULL REFERENCES outbox (id),
        at_ms       bigint NOT NULL,
        ok          boolean NOT NULL,
        error       text
    );
    CREATE INDEX outbox_attempts_by_delivery ON outbox_attempts (delivery_id, at_ms, seq);
    COMMENT ON COLUMN records.gap_ms IS 'started_ms minus the previous start of the stream; {FIRST_GAP} for its first'
    """,
    # v2: probe agent / probe judge (probecore_plugins._pg_coordination): agents' membership,
    # the judge's state, and records by insertion id for the judge to follow.
    """
    CREATE TABLE agents (
        vantage     text COLLATE "C" NOT NULL,
        agent       text COLLATE "C" NOT NULL,
        seen_ms     bigint NOT NULL,
        PRIMARY KEY (vantage, agent)
    );
    CREATE TABLE judge_state (
        key         text COLLATE "C" PRIMARY KEY,
        value       text NOT NULL
    );
    CREATE INDEX records_by_id ON records (id);
    """,
)

CONNECT_TIMEOUT_S = 10
POOL_SIZE = 4
POOL_TIMEOUT_S = 30.0
MIGRATION_LOCK = "probecore schema migration"
PARTITION_LOCK = "probecore records partitions"
_DAY_MS = 86_400_000


class StoreUnavailable(StoreError):
    """The store URL is malformed, or the server cannot be reached or refuses us: the user's
    input to fix (exit status 2), stated in one line without the password."""

    exit_status = 2


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` from a descriptive *name*."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def redact(url: str) -> str:
    """*url* without its password (in the user part or as a ``password`` query parameter)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hosts = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}@{hosts}" if user else hosts
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                           if k.lower() != "password"], safe="/:,")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return re.sub(r"(//[^/@:]*):[^/@]*@", r"\1@", url.split("?", 1)[0])


def _password_of(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        if parts.password:
            return unquote(parts.password)
        for key, value in parse_qsl(parts.query):
            if key.lower() == "password":
                return value
    except ValueError:
        return None
    return None


def month_of(ms: int) -> tuple[int, int]:
    """``(year, month)`` of an epoch-ms instant, in UTC."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.year, moment.month


def month_bounds(year: int, month: int) -> tuple[int, int]:
    """Epoch ms of the first instant of the UTC month and of the next month."""
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


class PostgreSQLStore:
    """A store in a PostgreSQL database; safe to call from several threads (pooled connections)."""

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE):
        import psycopg
        import psycopg_pool

        self.url = redact(url)
        self._password = _password_of(url)
        conninfo = self._conninfo(url)
        self._partitions: set[tuple[int, int]] = set()
        self._partition_lock = threading.Lock()
        self._pool: Any = None
        try:
            # One plain connection first: its error says exactly what is wrong (the pool would
            # only time out), and it migrates before any pooled connection prepares a statement.
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                self._migrate(conn)
                now_ms = int(datetime.now(UTC).timestamp() * 1000)
                current = month_of(now_ms)
                following = month_of(month_bounds(*current)[1])
                self._ensure_partitions(conn, {current, following})
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"store {self.url}: cannot connect: {self._first_line(exc)}") from None
        except psycopg.Error as exc:
            raise StoreError(f"store {self.url}: cannot open: {self._first_line(exc)}") from None
        self._conninfo_text = conninfo  # for sessions of their own (the judge's leader lock)
        self._pool = psycopg_pool.ConnectionPool(
            conninfo, min_size=1, max_size=max(1, pool_size), open=True, timeout=POOL_TIMEOUT_S,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S}, name="probecore-store",
            configure=_configure)

    # ---- plumbing ---------------------------------------------------------------------------------

    def _conninfo(self, url: str) -> str:
        import psycopg

        scheme = url.split(":", 1)[0].lower()
        if scheme not in ("postgresql", "postgres") or not url[len(scheme) + 1:].startswith("//"):
            raise StoreUnavailable(f"store {self.url}: not a PostgreSQL URL "
                                   "(expected postgresql://user@host:port/database)")
        try:
            parts = urlsplit(url)
            if "," not in parts.netloc:  # several hosts (h1:5432,h2:5432): libpq checks them
                parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise StoreUnavailable(f"store {self.url}: bad URL: {exc}") from None
        if not parts.path.strip("/"):
            raise StoreUnavailable(f"store {self.url}: the URL names no database "
                                   "(postgresql://user@host:port/database)")
        try:
            params = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise StoreUnavailable(f"store {self.url}: bad URL: {self._first_line(exc)}") from None
        params.setdefault("application_name", "probecore")
        return psycopg.conninfo.make_conninfo(**params)

    def _first_line(self, exc: BaseException) -> str:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        text = text.removeprefix("connection failed: ")  # "cannot connect: …" says it already
        for secret in (self._password, quote(self._password or "", safe="")):
            if secret:
                text = text.replace(secret, "***")
        return text

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled psycopg connection (autocommit; ``with conn.transaction():`` for one),
        returned to the pool afterwards. Database errors become one-line :class:`StoreError`."""
        import psycopg
        import psycopg_pool

        if self._pool is None:
            raise StoreError(f"store {self.url}: already closed")
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg_pool.PoolTimeout:
            raise StoreError(f"store {self.url}: no connection within {POOL_TIMEOUT_S:g}s "
                             "(is the server up?)") from None
        except psycopg.OperationalError as exc:
            # The server went away or ended our connections: drop the pool's dead ones now, so
            # that the caller's retry (the pipeline retries a failed batch) gets a live one.
            self._check_pool()
            raise StoreError(f"store {self.url}: {self._first_line(exc)}") from None
        except psycopg.Error as exc:
            raise StoreError(f"store {self.url}: write failed: {self._first_line(exc)}") from None

    def _check_pool(self) -> None:
        import psycopg

        pool = self._pool
        if pool is not None:
            try:
                pool.check()
            except psycopg.Error:  # the server is still down: the next call reports it
                pass

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self.connection() as conn, conn.transaction():
            yield conn

    def _migrate(self, conn: Any) -> None:
        with conn.transaction():
            # Serialise concurrent openers; the lock ends with the transaction.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(MIGRATION_LOCK),))
            conn.execute("CREATE TABLE IF NOT EXISTS probecore_schema (version integer NOT NULL)")
            row = conn.execute("SELECT version FROM probecore_schema").fetchone()
            version = row[0] if row else 0
            if row is None:
                conn.execute("INSERT INTO probecore_schema (version) VALUES (0)")
            if version > SCHEMA_VERSION:
                raise StoreUnavailable(f"store {self.url}: schema version {version} is newer than this "
                                       f"probecore understands ({SCHEMA_VERSION}); upgrade probecore")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                conn.execute(MIGRATIONS[target - 1])
                conn.execute("UPDATE probecore_schema SET version = %s", (target,))

    def _ensure_partitions(self, conn: Any, months: set[tuple[int, int]], *,
                           lock_timeout_ms: int | None = None) -> None:
        """Create the monthly partitions of *months* that do not exist (in their own committed
        transaction, under an advisory lock so that agents creating the same one do not clash).
        With *lock_timeout_ms*, give up (``LockNotAvailable``) rather than wait longer for locks."""
        with self._partition_lock:
            missing = months - self._partitions
            if not missing:
                return
            with conn.transaction():
                if lock_timeout_ms is not None:
                    conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(PARTITION_LOCK),))
                existing = {name for (name,) in conn.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'records'::regclass")}
                for year, month in sorted(missing):
                    name = f"records_p{year:04d}{month:02d}"
                    if name not in existing:
                        lo, hi = month_bounds(year, month)
                        conn.execute(f"CREATE TABLE {name} PARTITION OF records FOR VALUES FROM ({lo}) TO ({hi})")
            self._partitions |= missing

    def _partitions_for(self, conn: Any, started: Iterable[int]) -> None:
        import psycopg

        days = {ms // _DAY_MS for ms in started}
        months = {month_of(day * _DAY_MS) for day in days}
        if not months:
            return
        if months - self._partitions:
            self._ensure_partitions(conn, months)
        ahead = month_of(month_bounds(*max(months))[1])
        if ahead not in self._partitions:
            # The next month's too, so that its first batch finds it made. Making a partition
            # waits for every reader of records (a long report) and holds up writers behind it:
            # ahead of time that is not worth waiting for; a later batch tries again.
            try:
                self._ensure_partitions(conn, {ahead}, lock_timeout_ms=1000)
            except psycopg.errors.LockNotAvailable:
                pass

    # ---- records and events ---------------------------------------------------------------------

    def write(self, records: Iterable[SLIRecord], events: Iterable[IncidentEvent],
              deliveries: Iterable[Delivery] = ()) -> None:
        rows = [_record_row(r) for r in records]
        events, deliveries = list(events), list(deliveries)
        with self.connection() as conn:
            self._partitions_for(conn, (r[2] for r in rows))
            with conn.transaction():
                self._insert_records(conn, rows)
                self._insert_events(conn, events)
                self._insert_deliveries(conn, deliveries)

    def write_rows(self, rows: list[tuple[str, str, int, str, str]]) -> int:
        """Insert ready-made rows ``(check, vantage, started ms, outcome, JSON line)`` exactly as
        :meth:`write` stores records (bulk loaders and benchmarks); returns how many were new."""
        with self.connection() as conn:
            self._partitions_for(conn, (r[2] for r in rows))
            with conn.transaction():
                return self._insert_records(conn, rows)

    def import_records(self, records: Iterable[SLIRecord]) -> tuple[int, int]:
        rows = [_record_row(r) for r in records]
        return (added := self.write_rows(rows)), len(rows) - added

    def _insert_records(self, conn: Any, rows: list[tuple[str, str, int, str, str]]) -> int:
        """Insert *rows* (skipping those stored) with their gaps; returns how many were added.

        In stream and time order, as SQLite does (ids, the tie-break of equal starts, follow
        it). A row's previous record is the batch's own previous row of its stream, known here;
        only a stream's first row in the batch looks up the stream's latest stored record. A
        batch landing before stored records of a stream recomputes that stream's gaps after."""
        if not rows:
            return 0
        rows = sorted(rows, key=lambda r: (r[0], r[1], r[2]))
        previous: list[int | None] = []
        last: tuple[str, str, int] | None = None
        for check, vantage, started, _, _ in rows:
            previous.append(last[2] if last is not None and last[0] == check and last[1] == vantage else None)
            last = (check, vantage, started)
        columns = [list(c) for c in zip(*rows)]
        # Streams with a record stored after the batch's first: gaps after it change. Asked
        # before the insert (the batch's own rows do not count); appending finds none.
        later = conn.execute(
            "SELECT b.c, b.v, b.s FROM unnest(%b::text[], %b::text[], %b::int8[], %b::int8[]) AS b(c, v, s, p) "
            "WHERE b.p IS NULL AND EXISTS (SELECT 1 FROM records r WHERE r.check_id = b.c "
            "AND r.vantage = b.v AND r.started_ms > b.s)",
            (columns[0], columns[1], columns[2], previous)).fetchall()
        # Rows go in in the arrays' order (a plain scan of unnest), so ids follow it. COALESCE
        # evaluates the lookup only for a stream's first row.
        cur = conn.execute(
            "INSERT INTO records (check_id, vantage, started_ms, outcome, body, gap_ms) "
            "SELECT b.c, b.v, b.s, b.o, b.body, COALESCE(b.s - COALESCE(b.p, "
            "(SELECT r.started_ms FROM records r WHERE r.check_id = b.c AND r.vantage = b.v "
            "AND r.started_ms < b.s ORDER BY r.started_ms DESC LIMIT 1)), %b) "
            "FROM unnest(%b::text[], %b::text[], %b::int8[], %b::text[], %b::text[], %b::int8[]) "
            "AS b(c, v, s, o, body, p) "
            "ON CONFLICT (check_id, vantage, started_ms) DO NOTHING",
            (FIRST_GAP, columns[0], columns[1], columns[2], columns[3], columns[4], previous))
        added = cur.rowcount
        for check, vantage, first in later:
            self._fill_gaps(conn, check, vantage, first)
        return added

    def _fill_gaps(self, conn: Any, check: str, vantage: str, since_ms: int) -> None:
        previous = conn.execute(
            "SELECT started_ms FROM records WHERE check_id = %s AND vantage = %s AND started_ms < %s "
            "ORDER BY started_ms DESC LIMIT 1", (check, vantage, since_ms)).fetchone()
        lo = previous[0] if previous else -(2**62)
        conn.execute(
            "UPDATE records SET gap_ms = w.gap FROM (SELECT started_ms, COALESCE(started_ms - "
            "LAG(started_ms) OVER (ORDER BY started_ms), %s) AS gap FROM records WHERE check_id = %s "
            "AND vantage = %s AND started_ms >= %s) AS w WHERE records.check_id = %s AND records.vantage = %s "
            "AND records.started_ms = w.started_ms AND records.started_ms >= %s "
            "AND records.gap_ms IS DISTINCT FROM w.gap",
            (FIRST_GAP, check, vantage, lo, check, vantage, since_ms))

    def _insert_events(self, conn: Any, events: list[IncidentEvent]) -> None:
        if not events:
            return
        # seq comes from the sequence in the order given (ORDER BY the position).
        conn.execute(
            "INSERT INTO events (event_id, check_id, incident_id, kind, at_ms, body) "
            "SELECT e.id, e.c, e.i, e.k, e.at, e.body FROM unnest(%s::text[], %s::text[], %s::text[], "
            "%s::text[], %s::bigint[], %s::text[]) WITH ORDINALITY AS e(id, c, i, k, at, body, n) "
            "ORDER BY e.n ON CONFLICT (event_id) DO NOTHING",
            ([e.event_id for e in events], [e.check for e in events], [e.incident_id for e in events],
             [e.kind for e in events], [timestamp_ms(e.at) for e in events],
             [encode_event(e).decode() for e in events]))

    def records(self, *, check: str | None = None, prefix: str | None = None,
                since: str | None = None, until: str | None = None,
                not_ok: bool = False) -> Iterator[SLIRecord]:
        where, args = record_filters(check, prefix, "started_ms", since, until, "%s")
        if not_ok:
            where = (where + " AND " if where else "WHERE ") + "outcome <> 'ok'"
        query = f"SELECT body FROM records {where} ORDER BY started_ms, id"
        if check is not None:
            # One check (the evaluator asks 10,000 times a report): one round trip.
            with self.connection() as conn:
                rows = conn.execute(query, args).fetchall()
            for (body,) in rows:
                yield decode_record(body)
            return
        # A whole profile: a server-side cursor streams it instead of holding it in memory.
        with self._transaction() as conn, conn.cursor(name="probecore_records") as cur:
            cur.itersize = 5000
            cur.execute(query, args)
            for (body,) in cur:
                yield decode_record(body)

    def evidence(self, check: str, since_ms: int, until_ms: int,
                 max_gap_ms: int) -> dict[str, list[tuple[int, int]]]:
        with self.connection() as conn:
            rows = conn.execute(_EVIDENCE, {"c": check, "h": max_gap_ms, "s": since_ms, "u": until_ms}).fetchall()
        runs: dict[str, list[tuple[int, int]]] = {}
        for vantage, first, last, gaps in sorted(rows):
            spans, begin = [], first
            for at, gap in gaps or ():
                spans.append((begin, at - gap))
                begin = at
            spans.append((begin, last))
            runs[vantage] = spans
        return runs

    def following(self, check: str, vantage: str, moments: Iterable[int]) -> dict[int, int | None]:
        moments = list(moments)
        if not moments:
            return {}
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT m.at, (SELECT r.started_ms FROM records r WHERE r.check_id = %s AND r.vantage = %s "
                "AND r.started_ms > m.at ORDER BY r.started_ms LIMIT 1) FROM unnest(%b::int8[]) AS m(at)",
                (check, vantage, moments)).fetchall()
        return {moment: nxt for moment, nxt in rows}

    def values(self, check: str, since_ms: int, until_ms: int, metric: str) -> list[tuple[int, float]]:
        path = metric.split(".")
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT started_ms, (body::json #>> %s::text[])::float8 FROM records "
                "WHERE check_id = %s AND started_ms >= %s AND started_ms < %s AND outcome = 'ok' "
                "AND json_typeof(body::json #> %s::text[]) = 'number' ORDER BY started_ms, id",
                (path, check, since_ms, until_ms, path)).fetchall()
        return [(ms, float(v)) for ms, v in rows]

    def tail(self, check: str, vantage: str) -> list[SLIRecord]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT body FROM records WHERE check_id = %s AND vantage = %s AND started_ms > "
                "COALESCE((SELECT started_ms FROM records WHERE check_id = %s AND vantage = %s "
                "AND outcome = 'ok' ORDER BY started_ms DESC LIMIT 1), -1) ORDER BY started_ms, id",
                (check, vantage, check, vantage)).fetchall()
        return [decode_record(body) for (body,) in rows]

    def events(self, *, check: str | None = None, prefix: str | None = None) -> Iterator[IncidentEvent]:
        where, args = record_filters(check, prefix, "at_ms", None, None, "%s")
        with self.connection() as conn:
            rows = conn.execute(f"SELECT body FROM events {where} ORDER BY seq", args).fetchall()
        for (body,) in rows:
            yield decode_event(body)

    # ---- annotations --------------------------------------------------------------------------------

    def annotate(self, annotation: Annotation) -> Annotation:
        with self._transaction() as conn:
            (ident,) = conn.execute("SELECT nextval(pg_get_serial_sequence('annotations', 'id'))").fetchone()
            stored = msgspec.structs.replace(annotation, id=ident)
            conn.execute("INSERT INTO annotations (id, profile, kind, body) VALUES (%s, %s, %s, %s)",
                         (ident, stored.profile, stored.kind, encode_annotation(stored).decode()))
        return stored

    def annotations(self, profile: str, kind: str | None = None) -> list[Annotation]:
        query = "SELECT body FROM annotations WHERE profile = %s"
        args: list[object] = [profile]
        if kind is not None:
            query += " AND kind = %s"
            args.append(kind)
        with self.connection() as conn:
            rows = conn.execute(query + " ORDER BY id", args).fetchall()
        return [decode_annotation(body) for (body,) in rows]

    def withdraw(self, annotation_id: int, *, at: str, by: str, note: str) -> Annotation:
        with self._transaction() as conn:
            row = conn.execute("SELECT body FROM annotations WHERE id = %s FOR UPDATE", (annotation_id,)).fetchone()
            if row is None:
                raise StoreError(f"store {self.url}: no annotation {annotation_id}")
            current = decode_annotation(row[0])
            if current.withdrawn_at is not None:
                raise StoreError(f"store {self.url}: annotation {annotation_id} was already "
                                 f"withdrawn at {current.withdrawn_at} by {current.withdrawn_by}")
            withdrawn = msgspec.structs.replace(current, withdrawn_at=at, withdrawn_by=by, withdrawn_note=note)
            conn.execute("UPDATE annotations SET body = %s WHERE id = %s",
                         (encode_annotation(withdrawn).decode(), annotation_id))
        return withdrawn

    # ---- the notification outbox ----------------------------------------------------------------

    def _insert_deliveries(self, conn: Any, deliveries: list[Delivery]) -> int:
        if not deliveries:
            return 0
        cur = conn.execute(
            "INSERT INTO outbox (profile, event_id, route, channel, status, next_ms, body) "
            "SELECT d.p, d.e, d.r, d.c, d.st, d.nx, d.body FROM unnest(%s::text[], %s::text[], %s::text[], "
            "%s::text[], %s::text[], %s::bigint[], %s::text[]) WITH ORDINALITY AS d(p, e, r, c, st, nx, body, n) "
            "ORDER BY d.n ON CONFLICT (event_id, route, channel) DO NOTHING",
            ([d.profile for d in deliveries], [d.event_id for d in deliveries], [d.route for d in deliveries],
             [d.channel for d in deliveries], [d.status for d in deliveries], [d.next_ms for d in deliveries],
             [_encode_delivery(d) for d in deliveries]))
        return cur.rowcount

    def enqueue(self, deliveries: Iterable[Delivery]) -> int:
        with self._transaction() as conn:
            return self._insert_deliveries(conn, list(deliveries))

    def due_deliveries(self, profile: str, now_ms: int, limit: int = 200) -> list[Delivery]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT id, body FROM outbox WHERE profile = %s AND status = 'pending' AND next_ms <= %s "
                "ORDER BY next_ms, id LIMIT %s", (profile, now_ms, limit)).fetchall()
        return [_decode_delivery(body, ident) for ident, body in rows]

    def deliveries(self, profile: str, status: str | None = None) -> list[Delivery]:
        query, args = "SELECT id, body FROM outbox WHERE profile = %s", [profile]
        if status is not None:
            query += " AND status = %s"
            args.append(status)
        with self.connection() as conn:
            rows = conn.execute(query + " ORDER BY id", args).fetchall()
        return [_decode_delivery(body, ident) for ident, body in rows]

    def record_attempt(self, delivery_id: int, at_ms: int, ok: bool, error: str | None,
                       next_ms: int | None, expired: bool) -> None:
        with self._transaction() as conn:
            row = conn.execute("SELECT body FROM outbox WHERE id = %s FOR UPDATE", (delivery_id,)).fetchone()
            if row is None:
                raise StoreError(f"store {self.url}: no delivery {delivery_id}")
            delivery = _decode_delivery(row[0], delivery_id)
            if not delivery.record(at_ms, ok, error, next_ms, expired):
                return
            conn.execute("UPDATE outbox SET status = %s, next_ms = %s, body = %s WHERE id = %s",
                         (delivery.status, delivery.next_ms, _encode_delivery(delivery), delivery_id))
            if not expired:
                conn.execute("INSERT INTO outbox_attempts (delivery_id, at_ms, ok, error) VALUES (%s, %s, %s, %s)",
                             (delivery_id, at_ms, ok, error))

    def attempts(self, delivery_id: int) -> list[tuple[int, bool, str | None]]:
        with self.connection() as conn:
            rows = conn.execute("SELECT at_ms, ok, error FROM outbox_attempts WHERE delivery_id = %s "
                                "ORDER BY at_ms, seq", (delivery_id,)).fetchall()
        return [(at, bool(ok), error) for at, ok, error in rows]

    def open_incidents(self, profile: str) -> list[IncidentEvent]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT body FROM events e WHERE kind = 'confirmed' AND check_id >= %s AND check_id < %s "
                "AND NOT EXISTS (SELECT 1 FROM events r WHERE r.incident_id = e.incident_id "
                "AND r.kind = 'resolved') ORDER BY seq", (profile + "/", profile + "/\U0010ffff")).fetchall()
        return [decode_event(body) for (body,) in rows]

    def coordination(self) -> Any:
        """Membership, leader lock and state for ``probe agent`` / ``probe judge``
        (:class:`probecore_plugins._pg_coordination.PostgreSQLCoordination`)."""
        from ._pg_coordination import PostgreSQLCoordination

        return PostgreSQLCoordination(self, self._conninfo_text)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def _configure(conn: Any) -> None:
    """Session settings of every pooled connection: no JIT compilation (it costs tens of ms per
    query and pays off only for long analytic scans, which the store never runs), and room for a
    batch's arrays in memory instead of temp files."""
    conn.execute("SET jit = off")
    conn.execute("SET work_mem = '32MB'")


# Per vantage of the check: its first and last record in range and the gaps > hold after the
# first one, in one statement. Every stream's first record has a gap larger than any hold, so
# the gap index names the vantages; the rest are index seeks in the range's partitions.
_EVIDENCE = """
SELECT v.vantage, f.s, l.s, ARRAY(
    SELECT ARRAY[g.started_ms, g.gap_ms] FROM records g
    WHERE g.check_id = %(c)s AND g.vantage = v.vantage AND g.gap_ms > %(h)s
      AND g.started_ms > f.s AND g.started_ms > %(s)s AND g.started_ms < %(u)s
    ORDER BY g.started_ms)
FROM (SELECT DISTINCT vantage FROM records WHERE check_id = %(c)s AND gap_ms > %(h)s
      AND started_ms < %(u)s) AS v
CROSS JOIN LATERAL (SELECT started_ms FROM records WHERE check_id = %(c)s AND vantage = v.vantage
      AND started_ms >= %(s)s AND started_ms < %(u)s ORDER BY started_ms LIMIT 1) AS f(s)
CROSS JOIN LATERAL (SELECT started_ms FROM records WHERE check_id = %(c)s AND vantage = v.vantage
      AND started_ms >= %(s)s AND started_ms < %(u)s ORDER BY started_ms DESC LIMIT 1) AS l(s)
"""


@hookimpl
def probecore_add_stores(registry):  # type: ignore[no-untyped-def]
    registry.add(PostgreSQLStore, name="postgresql")
    registry.add(PostgreSQLStore, name="postgres")
