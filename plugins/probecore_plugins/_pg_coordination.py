"""Coordination through the PostgreSQL store: agents' membership, the judge's leader lock, the
judge's state and its feed of new records (``probe agent`` / ``probe judge``; the contract is
``probecore._coordination.Coordination``).

- **Membership**: one row per agent in ``agents`` (vantage, agent, seen_ms), refreshed by each
  heartbeat with the *database's* clock, so agents whose clocks disagree still agree on who is
  alive. Rows of agents gone for ten leases are deleted by the next heartbeat of their vantage.
- **Leadership**: ``pg_try_advisory_lock`` on a connection of its own, held for as long as the
  judge leads. PostgreSQL releases it when that session ends (the judge exits, is killed, or its
  connection breaks: the server notices a closed socket at once, and a silent one by the
  session's own TCP keepalives and user timeout, set to ~15 s), and the next judge's
  :meth:`try_lead` takes it. A leader checks its session at
  each :meth:`try_lead`: a broken one means it no longer leads.
- **State**: ``judge_state`` (key → text).
- **New records**: :meth:`records_after` reads ``records`` by id (the store's insertion
  sequence; index ``records_by_id``). Ids are taken at insert but become visible at commit, so a
  reader may see a later id before an earlier one: the judge also lists the ids of the last
  seconds (:meth:`record_ids`) and reads those it has not seen (:meth:`records_by_id`).

The tables come from the store's migration 2 (:data:`probecore_plugins.postgresql.MIGRATIONS`).
"""

from __future__ import annotations

from typing import Any

from probecore import SLIRecord, StoreError, decode_record

CONNECT_TIMEOUT_S = 10
SERVER_KEEPALIVE = (("tcp_keepalives_idle", 5), ("tcp_keepalives_interval", 2), ("tcp_keepalives_count", 3),
                    ("tcp_user_timeout", 15000))


class PostgreSQLCoordination:
    """:class:`probecore._coordination.Coordination` for a :class:`PostgreSQLStore`.

    Ordinary calls use the store's pool; the leader lock has a session of its own.
    """

    def __init__(self, store: Any, conninfo: str):
        self._store = store
        self._conninfo = conninfo
        self._lock_conn: Any = None
        self._lock_key: int | None = None

    # ---- membership -------------------------------------------------------------------------------

    def heartbeat(self, vantage: str, agent: str, lease_s: float) -> list[str]:
        lease_ms = max(1, round(lease_s * 1000))
        with self._store.connection() as conn, conn.transaction():
            now = conn.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint").fetchone()[0]
            conn.execute("INSERT INTO agents (vantage, agent, seen_ms) VALUES (%s, %s, %s) "
                         "ON CONFLICT (vantage, agent) DO UPDATE SET seen_ms = EXCLUDED.seen_ms",
                         (vantage, agent, now))
            conn.execute("DELETE FROM agents WHERE vantage = %s AND seen_ms < %s", (vantage, now - 10 * lease_ms))
            rows = conn.execute("SELECT agent FROM agents WHERE vantage = %s AND seen_ms > %s ORDER BY agent",
                                (vantage, now - lease_ms)).fetchall()
        return [agent for (agent,) in rows]

    def leave(self, vantage: str, agent: str) -> None:
        with self._store.connection() as conn:
            conn.execute("DELETE FROM agents WHERE vantage = %s AND agent = %s", (vantage, agent))

    # ---- leadership -------------------------------------------------------------------------------

    def try_lead(self, name: str) -> bool:
        import psycopg

        from .postgresql import advisory_key

        key = advisory_key(f"probecore leader {name}")
        if self._lock_conn is not None:
            try:  # still our session? (a broken one has lost the lock with it)
                self._lock_conn.execute("SELECT 1").fetchone()
                if self._lock_key == key:
                    return True
            except psycopg.Error:
                pass
            self.resign()
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                   keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
                                   tcp_user_timeout=15000)  # and we notice too: no 15-minute hang
        except psycopg.Error as exc:  # said once by the judge; the password scrubbed as the store does
            raise StoreError(f"store {self._store.url}: {self._store._first_line(exc)}") from None
        try:
            # The server must notice a leader cut off (not only one that exits): its own keepalives
            # on this session end it, and with it the lock, ~15 s after the network went silent
            # (the OS default would be hours). Ignored on a unix socket, where no cut can happen.
            for setting, value in SERVER_KEEPALIVE:
                conn.execute(f"SET {setting} = {value}")
            held = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        except psycopg.Error:
            held = False
        if not held:
            conn.close()
            return False
        self._lock_conn, self._lock_key = conn, key
        return True

    def resign(self) -> None:
        conn, self._lock_conn, self._lock_key = self._lock_conn, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken session: nothing left to release
                pass

    # ---- state and records ------------------------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        with self._store.connection() as conn:
            row = conn.execute("SELECT value FROM judge_state WHERE key = %s", (key,)).fetchone()
        return row[0] if row else None

    def set_state(self, key: str, value: str) -> None:
        with self._store.connection() as conn:
            conn.execute("INSERT INTO judge_state (key, value) VALUES (%s, %s) "
                         "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (key, value))

    def last_record_id(self) -> int:
        """The highest record id stored now (0: none)."""
        with self._store.connection() as conn:
            return conn.execute("SELECT COALESCE(max(id), 0) FROM records").fetchone()[0]

    def first_id_since(self, started_ms: int, prefixes: list[str]) -> int | None:
        """The lowest id of the records (of *prefixes*) that started at or after *started_ms*."""
        if not prefixes:
            return None
        ranges, args = _prefix_ranges(prefixes)
        with self._store.connection() as conn:
            return conn.execute(f"SELECT min(id) FROM records WHERE started_ms >= %s AND ({ranges})",
                                [started_ms, *args]).fetchone()[0]

    def records_after(self, after_id: int, prefixes: list[str], limit: int = 5000) -> list[tuple[int, SLIRecord]]:
        """``(id, record)`` of records with an id above *after_id* whose check starts with one of
        *prefixes* (``"<profile>/"``), in id order, at most *limit*."""
        if not prefixes:
            return []
        ranges, args = _prefix_ranges(prefixes)
        with self._store.connection() as conn:
            rows = conn.execute(f"SELECT id, body FROM records WHERE id > %s AND ({ranges}) ORDER BY id LIMIT %s",
                                [after_id, *args, limit]).fetchall()
        return self._decode(rows)

    def record_ids(self, after_id: int, upto_id: int, prefixes: list[str]) -> list[int]:
        """Ids of the records in ``(after_id, upto_id]`` whose check starts with one of *prefixes*."""
        if not prefixes or upto_id <= after_id:
            return []
        ranges, args = _prefix_ranges(prefixes)
        with self._store.connection() as conn:
            rows = conn.execute(f"SELECT id FROM records WHERE id > %s AND id <= %s AND ({ranges})",
                                [after_id, upto_id, *args]).fetchall()
        return [ident for (ident,) in rows]

    def records_by_id(self, ids: list[int]) -> list[tuple[int, SLIRecord]]:
        """``(id, record)`` of the records with these ids, in id order."""
        if not ids:
            return []
        with self._store.connection() as conn:
            rows = conn.execute("SELECT id, body FROM records WHERE id = ANY(%s) ORDER BY id", (ids,)).fetchall()
        return self._decode(rows)

    def _decode(self, rows: list[tuple[int, str]]) -> list[tuple[int, SLIRecord]]:
        try:
            return [(ident, decode_record(body)) for ident, body in rows]
        except ValueError as exc:  # msgspec errors are ValueErrors
            raise StoreError(f"store {self._store.url}: a stored record does not decode: {exc}") from None

    def close(self) -> None:
        self.resign()


def _prefix_ranges(prefixes: list[str]) -> tuple[str, list[object]]:
    """SQL matching ``check_id`` against *prefixes* as index ranges (in the "C" collation)."""
    args: list[object] = []
    for prefix in prefixes:
        args += [prefix, prefix + "\U0010ffff"]
    return " OR ".join("(check_id >= %s AND check_id < %s)" for _ in prefixes), args
