"""Inserts many rows, skipping existing keys, and says which rows were new.

PostgreSQL: COPY into a session-private staging table, then one
`INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING` — one small statement whatever the
batch size (a multi-row VALUES of 2,000 x 18 parameters costs more to build and parse in
Python than the database spends on it). SQLite: executemany with RETURNING.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from sync.sqlops import insert_ignore


def insert_new(
    conn: Connection, table: Table, rows: list[dict[str, Any]], returning: tuple[str, ...]
) -> list[tuple[Any, ...]]:
    """Inserts rows whose primary key is absent; returns `returning` of those inserted."""
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        return _copy_insert(conn, table, rows, returning)
    stmt = insert_ignore(conn, table).returning(*(table.c[c] for c in returning))
    return [tuple(r) for r in conn.execute(stmt, rows).all()]


def _copy_insert(
    conn: Connection, table: Table, rows: list[dict[str, Any]], returning: tuple[str, ...]
) -> list[tuple[Any, ...]]:
    columns = [c.name for c in table.columns]
    stage = f"stage_{table.name}"
    col_list = ", ".join(f'"{c}"' for c in columns)
    ret_list = ", ".join(f'"{c}"' for c in returning)
    raw = conn.connection.driver_connection
    assert raw is not None
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        return _copy_insert_raw(raw, stage, table.name, col_list, ret_list, columns, rows)
    except dbapi_error as exc:
        # As SQLAlchemy would raise it (DataError, OperationalError...), so callers tell a
        # refused row from a lost connection the same way on every path.
        raise DBAPIError.instance(f"COPY {stage}", None, exc, dbapi_error) from exc


def _copy_insert_raw(
    raw: Any,
    stage: str,
    table: str,
    col_list: str,
    ret_list: str,
    columns: list[str],
    rows: list[dict[str, Any]],
) -> list[tuple[Any, ...]]:
    with raw.cursor() as cur:
        # A temp table lives as long as the connection; its rows only until the statement
        # below consumed them (and never past the transaction).
        cur.execute(
            f'CREATE TEMP TABLE IF NOT EXISTS "{stage}" '
            f'(LIKE "{table}" INCLUDING DEFAULTS) ON COMMIT DELETE ROWS'
        )
        with cur.copy(f'COPY "{stage}" ({col_list}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([row.get(c) for c in columns])
        cur.execute(
            f'WITH moved AS (DELETE FROM "{stage}" RETURNING {col_list}) '
            f'INSERT INTO "{table}" ({col_list}) SELECT {col_list} FROM moved '
            f"ON CONFLICT DO NOTHING RETURNING {ret_list}"
        )
        return [tuple(r) for r in cur.fetchall()]
