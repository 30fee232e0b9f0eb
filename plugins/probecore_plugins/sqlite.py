"""The embedded SQLite store (``sqlite:PATH``, ``sqlite:///abs/path``, or a bare path).

WAL mode, ``synchronous=NORMAL`` (a committed batch survives a killed process; the OS crashing
may lose the last batches, never corrupt the file), schema versioned with ``PRAGMA
user_version`` and migrated forward on open. Records are kept as their canonical JSON line next
to indexed columns, so what comes out is byte for byte what went in.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

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

SCHEMA_VERSION = 4

# Each entry moves the schema from version i to i + 1. Never edit a shipped entry: add one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE records (
        id          INTEGER PRIMARY KEY,
        check_id    TEXT NOT NULL,
        vantage     TEXT NOT NULL,
        started_ms  INTEGER NOT NULL,
        outcome     TEXT NOT NULL,
        body        TEXT NOT NULL
    );
    CREATE UNIQUE INDEX records_by_check_time ON records (check_id, started_ms, vantage);
    CREATE INDEX records_by_time ON records (started_ms);
    CREATE TABLE events (
        event_id    TEXT PRIMARY KEY,
        seq         INTEGER NOT NULL,
        check_id    TEXT NOT NULL,
        incident_id TEXT NOT NULL,
        kind        TEXT NOT NULL,
        at_ms       INTEGER NOT NULL,
        body        TEXT NOT NULL
    );
    CREATE INDEX events_by_check ON events (check_id, at_ms);
    CREATE INDEX events_by_incident ON events (incident_id);
    """,
    # v2: the evaluator reads failures through a small partial index (a month of a 1-minute
    # check is 43,200 records, nearly all ok); annotations keep exclusions, incident reports
    # and notices, never deleted.
    """
    CREATE INDEX records_not_ok ON records (check_id, started_ms) WHERE outcome != 'ok';
    CREATE TABLE annotations (
        id          INTEGER PRIMARY KEY,
        profile     TEXT NOT NULL,
        kind        TEXT NOT NULL,
        body        TEXT NOT NULL
    );
    CREATE INDEX annotations_by_profile ON annotations (profile, kind, id);
    """,
    # v3: each record's gap to the previous record of its (check, vantage) stream, kept by the
    # store, so the evaluator finds where evidence stops (gap > hold) through an index instead of
    # reading 43,200 start times per check-month. NULL = not computed yet (filled on demand).
    """
    ALTER TABLE records ADD COLUMN gap_ms INTEGER;
    CREATE INDEX records_gaps ON records (check_id, gap_ms);
    """,
    # v4: the notification outbox, one row per (event, route, channel), and every attempt.
    """
    CREATE TABLE outbox (
        id          INTEGER PRIMARY KEY,
        profile     TEXT NOT NULL,
        event_id    TEXT NOT NULL,
        route       TEXT NOT NULL,
        channel     TEXT NOT NULL,
        status      TEXT NOT NULL,
        next_ms     INTEGER NOT NULL,
        body        TEXT NOT NULL
    );
    CREATE UNIQUE INDEX outbox_once ON outbox (event_id, route, channel);
    CREATE INDEX outbox_due ON outbox (profile, status, next_ms);
    CREATE TABLE outbox_attempts (
        delivery_id INTEGER NOT NULL,
        at_ms       INTEGER NOT NULL,
        ok          INTEGER NOT NULL,
        error       TEXT
    );
    CREATE INDEX outbox_attempts_by_delivery ON outbox_attempts (delivery_id, at_ms);
    """,
)


FIRST_GAP = 2**53 - 1
"""``gap_ms`` of a stream's first record: a gap larger than any hold."""


def path_of(url: str) -> Path:
    """``sqlite:///abs/p.db`` → ``/abs/p.db``; ``sqlite:rel.db`` → ``rel.db``; bare paths as is."""
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://"):]
        return Path(rest if rest.startswith("/") else "/" + rest) if rest else Path("")
    if url.startswith("sqlite:"):
        return Path(url[len("sqlite:"):])
    return Path(url)


class SQLiteStore:
    """A store in one SQLite file. Thread-safe: calls are serialised with a lock."""

    def __init__(self, url: str):
        self.url = url
        path = path_of(url)
        if not str(path):
            raise StoreError(f"store {url}: no file name")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"store {url}: cannot open: {exc}") from None
        except OSError as exc:
            raise StoreError(f"store {url}: cannot create {path.parent}: {exc.strerror}") from None
        self._lock = threading.Lock()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"store {self.url}: schema version {version} is newer than this "
                             f"probecore understands ({SCHEMA_VERSION}); upgrade probecore")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # Statement by statement: executescript() would COMMIT the transaction first.
                for statement in MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {target}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def write(self, records: Iterable[SLIRecord], events: Iterable[IncidentEvent],
              deliveries: Iterable[Delivery] = ()) -> None:
        rows = [_record_row(r) for r in records]
        with self._lock, self._transaction():
            self._insert_records(rows)
            self._insert_events(events)
            self._insert_deliveries(deliveries)

    # ---- the notification outbox ----------------------------------------------------------------

    def _insert_deliveries(self, deliveries: Iterable[Delivery]) -> int:
        before = self._db.total_changes
        self._db.executemany(
            "INSERT OR IGNORE INTO outbox (profile, event_id, route, channel, status, next_ms, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(d.profile, d.event_id, d.route, d.channel, d.status, d.next_ms, _encode_delivery(d))
             for d in deliveries])
        return self._db.total_changes - before

    def enqueue(self, deliveries: Iterable[Delivery]) -> int:
        with self._lock, self._transaction():
            return self._insert_deliveries(deliveries)

    def due_deliveries(self, profile: str, now_ms: int, limit: int = 200) -> list[Delivery]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, body FROM outbox WHERE profile = ? AND status = 'pending' AND next_ms <= ? "
                "ORDER BY next_ms, id LIMIT ?", (profile, now_ms, limit)).fetchall()
        return [_decode_delivery(body, ident) for ident, body in rows]

    def deliveries(self, profile: str, status: str | None = None) -> list[Delivery]:
        query, args = "SELECT id, body FROM outbox WHERE profile = ?", [profile]
        if status is not None:
            query += " AND status = ?"
            args.append(status)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [_decode_delivery(body, ident) for ident, body in rows]

    def record_attempt(self, delivery_id: int, at_ms: int, ok: bool, error: str | None,
                       next_ms: int | None, expired: bool) -> None:
        with self._lock, self._transaction():
            row = self._db.execute("SELECT body FROM outbox WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                raise StoreError(f"store {self.url}: no delivery {delivery_id}")
            delivery = _decode_delivery(row[0], delivery_id)
            if not delivery.record(at_ms, ok, error, next_ms, expired):
                return
            self._db.execute("UPDATE outbox SET status = ?, next_ms = ?, body = ? WHERE id = ?",
                             (delivery.status, delivery.next_ms, _encode_delivery(delivery), delivery_id))
            if not expired:
                self._db.execute("INSERT INTO outbox_attempts (delivery_id, at_ms, ok, error) VALUES (?, ?, ?, ?)",
                                 (delivery_id, at_ms, int(ok), error))

    def attempts(self, delivery_id: int) -> list[tuple[int, bool, str | None]]:
        with self._lock:
            rows = self._db.execute("SELECT at_ms, ok, error FROM outbox_attempts WHERE delivery_id = ? "
                                    "ORDER BY at_ms, rowid", (delivery_id,)).fetchall()
        return [(at, bool(ok), error) for at, ok, error in rows]

    def open_incidents(self, profile: str) -> list[IncidentEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM events e WHERE kind = 'confirmed' AND check_id >= ? AND check_id < ? "
                "AND NOT EXISTS (SELECT 1 FROM events r WHERE r.incident_id = e.incident_id "
                "AND r.kind = 'resolved') ORDER BY seq", (profile + "/", profile + "/\U0010ffff")).fetchall()
        return [decode_event(body) for (body,) in rows]

    def import_records(self, records: Iterable[SLIRecord]) -> tuple[int, int]:
        rows = [_record_row(r) for r in records]
        with self._lock, self._transaction():
            added = self._insert_records(rows)
        return added, len(rows) - added

    def _insert_records(self, rows: list[tuple[str, str, int, str, str]]) -> int:
        """Insert *rows* (skipping those stored), each with its gap to the stream's previous
        record; returns how many were added. In stream and time order, so that rows of one
        batch see each other; a row that lands before or between records already stored (an
        import into the middle) changes the gap of the one after it, which is then recomputed."""
        rows = sorted(rows, key=lambda r: (r[0], r[1], r[2]))
        before = self._db.total_changes
        self._db.executemany(
            "INSERT OR IGNORE INTO records (check_id, vantage, started_ms, outcome, body, gap_ms) "
            "VALUES (?1, ?2, ?3, ?4, ?5, COALESCE(?3 - (SELECT started_ms FROM records WHERE check_id = ?1 "
            f"AND started_ms < ?3 AND vantage = ?2 ORDER BY started_ms DESC LIMIT 1), {FIRST_GAP}))", rows)
        added = self._db.total_changes - before
        starts: dict[tuple[str, str], set[int]] = {}
        for check, vantage, started, _, _ in rows:
            starts.setdefault((check, vantage), set()).add(started)
        for (check, vantage), batch in starts.items():
            first, last = min(batch), max(batch)
            later = self._db.execute(
                "SELECT 1 FROM records WHERE check_id = ? AND started_ms > ? AND vantage = ? LIMIT 1",
                (check, last, vantage)).fetchone()
            # A record stored before, lying between this batch's rows, got its gap from a
            # neighbour that is no longer its previous one (live batches hold one row per stream:
            # first == last, no query).
            inside = first < last and self._db.execute(
                "SELECT COUNT(*) FROM records WHERE check_id = ? AND vantage = ? AND started_ms BETWEEN ? AND ?",
                (check, vantage, first, last)).fetchone()[0] > len(batch)
            if later is not None or inside:
                self._fill_gaps(check, vantage, first)
        return added

    def _fill_gaps(self, check: str, vantage: str, since_ms: int) -> None:
        previous = self._db.execute(
            "SELECT started_ms FROM records WHERE check_id = ? AND started_ms < ? AND vantage = ? "
            "ORDER BY started_ms DESC LIMIT 1", (check, since_ms, vantage)).fetchone()
        lo = previous[0] if previous else -1
        # The first record of a stream gets FIRST_GAP: larger than any hold.
        self._db.execute(
            "UPDATE records SET gap_ms = w.gap FROM (SELECT id, COALESCE(started_ms - LAG(started_ms) "
            f"OVER (ORDER BY started_ms), {FIRST_GAP}) AS gap FROM records WHERE check_id = ? AND vantage = ? "
            "AND started_ms >= ?) AS w WHERE records.id = w.id AND records.started_ms >= ? "
            "AND records.gap_ms IS NOT w.gap", (check, vantage, lo, since_ms))

    def refresh_gaps(self, check: str | None = None) -> None:
        """Compute every missing ``gap_ms`` (rows written by other tools, or before schema v3)."""
        with self._lock, self._transaction():
            query = "SELECT DISTINCT check_id, vantage FROM records WHERE gap_ms IS NULL"
            args: tuple[object, ...] = ()
            if check is not None:
                query += " AND check_id = ?"
                args = (check,)
            for check_id, vantage in self._db.execute(query, args).fetchall():
                self._fill_gaps(check_id, vantage, -1)

    def _insert_events(self, events: Iterable[IncidentEvent]) -> None:
        seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        rows = []
        for offset, event in enumerate(events, start=1):
            rows.append((event.event_id, seq + offset, event.check, event.incident_id, event.kind,
                         timestamp_ms(event.at), encode_event(event).decode()))
        self._db.executemany(
            "INSERT OR IGNORE INTO events (event_id, seq, check_id, incident_id, kind, at_ms, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def records(self, *, check: str | None = None, prefix: str | None = None,
                since: str | None = None, until: str | None = None,
                not_ok: bool = False) -> Iterator[SLIRecord]:
        where, args = record_filters(check, prefix, "started_ms", since, until, "?")
        table = "records"
        if not_ok:
            where = (where + " AND " if where else "WHERE ") + "outcome != 'ok'"
            if check is not None:  # without statistics the planner may pick a worse index
                table = "records INDEXED BY records_not_ok"
        query = f"SELECT body FROM {table} {where} ORDER BY started_ms, id"
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        for (body,) in rows:
            yield decode_record(body)

    def evidence(self, check: str, since_ms: int, until_ms: int,
                 max_gap_ms: int) -> dict[str, list[tuple[int, int]]]:
        with self._lock:
            missing = self._db.execute("SELECT 1 FROM records WHERE check_id = ? AND gap_ms IS NULL LIMIT 1",
                                       (check,)).fetchone()
        if missing:
            self.refresh_gaps(check)
        with self._lock:
            # Every stream's first record has a gap larger than any hold, so the gap index
            # names the vantages; then each one's first and last record in range is a seek.
            vantages = [v for (v,) in self._db.execute(
                "SELECT DISTINCT vantage FROM records INDEXED BY records_gaps WHERE check_id = ? "
                "AND gap_ms > ?", (check, max_gap_ms))]
            bounds = []
            for vantage in vantages:
                first = self._db.execute(
                    "SELECT started_ms FROM records WHERE check_id = ? AND started_ms >= ? AND started_ms < ? "
                    "AND vantage = ? ORDER BY started_ms LIMIT 1", (check, since_ms, until_ms, vantage)).fetchone()
                if first is None:
                    continue
                last = self._db.execute(
                    "SELECT started_ms FROM records WHERE check_id = ? AND started_ms >= ? AND started_ms < ? "
                    "AND vantage = ? ORDER BY started_ms DESC LIMIT 1",
                    (check, since_ms, until_ms, vantage)).fetchone()
                bounds.append((vantage, first[0], last[0]))
            gaps = self._db.execute(
                "SELECT vantage, started_ms, gap_ms FROM records INDEXED BY records_gaps WHERE check_id = ? AND gap_ms > ? "
                "AND started_ms > ? AND started_ms < ? ORDER BY started_ms",
                (check, max_gap_ms, since_ms, until_ms)).fetchall()
        runs: dict[str, list[tuple[int, int]]] = {}
        for vantage, first, last in bounds:
            mine = [(at, gap) for v, at, gap in gaps if v == vantage and at > first]
            spans, begin = [], first
            for at, gap in mine:
                spans.append((begin, at - gap))
                begin = at
            spans.append((begin, last))
            runs[vantage] = spans
        return runs

    def following(self, check: str, vantage: str, moments: Iterable[int]) -> dict[int, int | None]:
        found: dict[int, int | None] = {}
        with self._lock:
            for moment in moments:
                row = self._db.execute(
                    "SELECT started_ms FROM records WHERE check_id = ? AND started_ms > ? AND vantage = ? "
                    "ORDER BY started_ms LIMIT 1", (check, moment, vantage)).fetchone()
                found[moment] = row[0] if row else None
        return found

    def values(self, check: str, since_ms: int, until_ms: int, metric: str) -> list[tuple[int, float]]:
        path = "$." + metric
        with self._lock:
            rows = self._db.execute(
                "SELECT started_ms, json_extract(body, ?) FROM records WHERE check_id = ? "
                "AND started_ms >= ? AND started_ms < ? AND outcome = 'ok' ORDER BY started_ms",
                (path, check, since_ms, until_ms)).fetchall()
        return [(ms, float(v)) for ms, v in rows if isinstance(v, (int, float))]

    def annotate(self, annotation: Annotation) -> Annotation:
        with self._lock, self._transaction():
            cursor = self._db.execute(
                "INSERT INTO annotations (profile, kind, body) VALUES (?, ?, ?)",
                (annotation.profile, annotation.kind, encode_annotation(annotation).decode()))
            stored = msgspec.structs.replace(annotation, id=cursor.lastrowid)
            self._db.execute("UPDATE annotations SET body = ? WHERE id = ?",
                             (encode_annotation(stored).decode(), stored.id))
        return stored

    def annotations(self, profile: str, kind: str | None = None) -> list[Annotation]:
        query = "SELECT body FROM annotations WHERE profile = ?"
        args: list[object] = [profile]
        if kind is not None:
            query += " AND kind = ?"
            args.append(kind)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [decode_annotation(body) for (body,) in rows]

    def withdraw(self, annotation_id: int, *, at: str, by: str, note: str) -> Annotation:
        with self._lock, self._transaction():
            row = self._db.execute("SELECT body FROM annotations WHERE id = ?", (annotation_id,)).fetchone()
            if row is None:
                raise StoreError(f"store {self.url}: no annotation {annotation_id}")
            current = decode_annotation(row[0])
            if current.withdrawn_at is not None:
                raise StoreError(f"store {self.url}: annotation {annotation_id} was already "
                                 f"withdrawn at {current.withdrawn_at} by {current.withdrawn_by}")
            withdrawn = msgspec.structs.replace(current, withdrawn_at=at, withdrawn_by=by,
                                                withdrawn_note=note)
            self._db.execute("UPDATE annotations SET body = ? WHERE id = ?",
                             (encode_annotation(withdrawn).decode(), annotation_id))
        return withdrawn

    def tail(self, check: str, vantage: str) -> list[SLIRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM records WHERE check_id = ? AND vantage = ? AND started_ms > "
                "COALESCE((SELECT MAX(started_ms) FROM records WHERE check_id = ? AND vantage = ? "
                "AND outcome = 'ok'), -1) ORDER BY started_ms, id",
                (check, vantage, check, vantage)).fetchall()
        return [decode_record(body) for (body,) in rows]

    def events(self, *, check: str | None = None, prefix: str | None = None) -> Iterator[IncidentEvent]:
        where, args = record_filters(check, prefix, "at_ms", None, None, "?")
        with self._lock:
            rows = self._db.execute(f"SELECT body FROM events {where} ORDER BY seq", args).fetchall()
        for (body,) in rows:
            yield decode_event(body)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None  # type: ignore[assignment]

    def _transaction(self) -> _Transaction:
        if self._db is None:
            raise StoreError(f"store {self.url}: already closed")
        return _Transaction(self._db, self.url)


class _Transaction:
    def __init__(self, db: sqlite3.Connection, url: str):
        self.db = db
        self.url = url

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.DatabaseError as err:
                exc = err
        self.db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.DatabaseError):
            raise StoreError(f"store {self.url}: write failed: {exc}") from None


@hookimpl
def probecore_add_stores(registry):  # type: ignore[no-untyped-def]
    registry.add(SQLiteStore, name="sqlite")
