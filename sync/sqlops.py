"""Dialect-neutral building blocks: INSERT ... ON CONFLICT on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection


def dialect_insert(conn: Connection, table: Table) -> Any:
    """The INSERT of the connection's dialect, which has on_conflict_do_nothing/do_update."""
    module = sqlite if conn.dialect.name == "sqlite" else postgresql
    return module.insert(table)


def insert_ignore(conn: Connection, table: Table) -> Any:
    """An INSERT that skips rows whose key exists (a replay inserts nothing)."""
    return dialect_insert(conn, table).on_conflict_do_nothing()
