"""What the SQL stores (sqlite, postgresql) share: how a record becomes a row, how a delivery
is kept, and the WHERE clause of a records query. Only the placeholder differs between them."""

from __future__ import annotations

import msgspec

from probecore import Delivery, SLIRecord, encode_record, timestamp_ms


def encode_delivery(delivery: Delivery) -> str:
    """A delivery's stored body (its id is the row's)."""
    return msgspec.json.encode(msgspec.structs.replace(delivery, id=None)).decode()


def decode_delivery(body: str, ident: int) -> Delivery:
    return msgspec.structs.replace(msgspec.json.decode(body, type=Delivery), id=ident)


def record_row(record: SLIRecord) -> tuple[str, str, int, str, str]:
    """(check_id, vantage, started_ms, outcome, body) of *record*."""
    return (record.check, record.vantage, timestamp_ms(record.started_at), record.outcome,
            encode_record(record).decode())


def record_filters(check: str | None, prefix: str | None, column: str, since: str | None,
                   until: str | None, placeholder: str) -> tuple[str, list[object]]:
    """``WHERE …`` (or "") and its arguments for a records query; *placeholder* is the driver's
    (``?`` for sqlite3, ``%s`` for psycopg)."""
    p = placeholder
    clauses: list[str] = []
    args: list[object] = []
    if check is not None:
        clauses.append(f"check_id = {p}")
        args.append(check)
    if prefix is not None:
        # A range instead of LIKE so the index is used and "_" / "%" in ids mean themselves.
        clauses.append(f"check_id >= {p} AND check_id < {p}")
        args += [prefix, prefix + "\U0010ffff"]
    if since is not None:
        clauses.append(f"{column} >= {p}")
        args.append(timestamp_ms(since))
    if until is not None:
        clauses.append(f"{column} < {p}")
        args.append(timestamp_ms(until))
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args
