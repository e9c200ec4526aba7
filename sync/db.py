"""Engines for the durable store: one per process and URL, created after any fork.

SQLite (the embedded default) runs in WAL mode with a busy timeout and opens every write
transaction with BEGIN IMMEDIATE, so two writers queue for the lock instead of failing
half-way through a transaction; what still fails with "database is locked" is retried.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from sync import limits

T = TypeVar("T")

# Heroku, Render, Fly and psql write PostgreSQL URLs without a driver, often with the scheme
# `postgres`, which SQLAlchemy does not know; without a driver SQLAlchemy < 2.1 would pick
# psycopg2, which is not installed. The driver we ship is psycopg 3.
POSTGRES_SCHEMES = ("postgres://", "postgresql://")
POSTGRES_DRIVER_SCHEME = "postgresql+psycopg://"

_engines: dict[tuple[int, str], Engine] = {}


def normalise_url(url: str) -> str:
    """`url` with the driver we ship named: postgres:// and postgresql:// are psycopg's."""
    for scheme in POSTGRES_SCHEMES:
        if url.startswith(scheme):
            return POSTGRES_DRIVER_SCHEME + url.removeprefix(scheme)
    return url


def engine_for(url: str) -> Engine:
    """The engine of this process for `url` (a forked RQ work-horse gets its own pool)."""
    url = normalise_url(url)
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is None:
        engine = _create(url)
        _engines[key] = engine
    return engine


def _create(url: str) -> Engine:
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_engine(
            url,
            connect_args={"timeout": limits.SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=limits.SQL_POOL_SIZE,
        connect_args={"connect_timeout": limits.SQL_CONNECT_TIMEOUT_S},
    )


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite URL names; None for another database or an in-memory SQLite."""
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _ensure_sqlite_dir(url: str) -> None:
    path = sqlite_path(url)
    if path is not None:
        path.absolute().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling would BEGIN lazily (DEFERRED); we BEGIN ourselves.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_locked(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and "database is locked" in str(exc)


def write_transaction(engine: Engine, fn: Callable[[Connection], T]) -> T:
    """fn(conn) in one transaction, committed; the whole transaction runs again while SQLite
    answers "database is locked"."""
    for attempt in range(limits.SQLITE_LOCKED_ATTEMPTS):
        try:
            with engine.begin() as conn:
                return fn(conn)
        except OperationalError as exc:
            if not is_locked(exc) or attempt == limits.SQLITE_LOCKED_ATTEMPTS - 1:
                raise
            time.sleep(min(1.0, 0.01 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")
