"""The database every command but `migrate` and `up` opens: one that exists, at the schema
this code needs.

A SQLite file that does not exist is a mistyped path far more often than a wish for a new
empty database, so only `migrate` and `up` create one, and only they migrate; every other
command refuses a missing or older database in one line that says what to run.
"""

from __future__ import annotations

from sync.settings import Settings


def refuse_missing_sqlite(settings: Settings) -> None:
    """Raise unless the configured database is not SQLite or its file exists."""
    from sync.db import sqlite_path

    path = sqlite_path(settings.database_url)
    if path is not None and not path.exists():
        raise RuntimeError(
            f"no SQLite database at {path}: run `creditmeter migrate` to create it "
            "(or correct CREDITMETER_DATABASE_URL)"
        )


def schema_checked_url(settings: Settings) -> str:
    """The configured database URL, after refusing a missing SQLite file or a database that
    is not at the newest schema: only `migrate` and `up` change the schema, never a command
    as a side effect (a read-only `report` included)."""
    from sync.migrate import require_head

    refuse_missing_sqlite(settings)
    require_head(settings.database_url)
    return settings.database_url
