"""`creditmeter migrate`: brings a database to the newest schema with Alembic."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from sync.db import engine_for, write_transaction

# A package resource, "package:folder": Alembic finds it through importlib.resources, so the
# same setting works from the source tree and from an installed wheel (package data of sync).
SCRIPT_LOCATION = "sync:migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Idempotent: a database already at `revision` is left as it is."""

    def run(conn: Connection) -> None:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    write_transaction(engine_for(url), run)


def current(url: str) -> str | None:
    with engine_for(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head(url: str) -> str:
    """The newest revision this code knows."""
    revision = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert revision is not None, "no migration scripts"
    return revision


class SchemaBehind(RuntimeError):
    """The database is not at the schema this code needs: only `migrate` (or `up`) moves it."""


def require_head(url: str) -> None:
    """Raises SchemaBehind unless the database is at the newest revision."""
    at, needed = current(url), head(url)
    if at != needed:
        raise SchemaBehind(
            f"database at revision {at or 'none'}; this creditmeter needs {needed}: "
            "run `creditmeter migrate`"
        )
