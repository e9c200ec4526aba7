"""Throwaway PostgreSQL databases on the server a test run is given.

A pass against a shared PostgreSQL (CI's TEST_DATABASE_URL) migrates a new database of its
own instead of the named one: rows and schema left by earlier runs, by another checkout's
migrations or by a concurrent run can then neither fail nor fake a test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sqlalchemy import create_engine, make_url

from sync.migrate import upgrade


def is_postgres(url: str | None) -> bool:
    return bool(url) and str(url).startswith("postgresql")


@contextmanager
def throwaway_database(server_url: str, purpose: str) -> Iterator[str]:
    """URL of a new, empty database on the server of `server_url`, dropped afterwards (its
    name says `purpose`; a killed run leaves it behind under that name)."""
    name = f"cm_{purpose}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def fresh_database(suite_url: str, tmp_dir: Path, purpose: str) -> Iterator[str]:
    """URL of a migrated database nobody else writes to, of the suite's kind: a new SQLite
    file in `tmp_dir`, or a throwaway database on the suite's PostgreSQL server."""
    with ExitStack() as stack:
        if is_postgres(suite_url):
            url = stack.enter_context(throwaway_database(suite_url, purpose))
        else:
            url = f"sqlite:///{tmp_dir / (purpose + '.db')}"
        upgrade(url)
        yield url
