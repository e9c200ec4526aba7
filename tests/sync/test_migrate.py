"""Migrations: idempotent, and the models and the migrations describe the same schema."""

from __future__ import annotations

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from sync.db import engine_for
from sync.migrate import alembic_config, current, upgrade
from sync.models import Base


def _head(url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    return head


def test_upgrade_twice_is_a_no_op(sql_url: str) -> None:
    upgrade(sql_url)
    upgrade(sql_url)
    assert current(sql_url) == _head(sql_url) == "0011"


def test_every_model_table_exists_after_migrating(sql_url: str) -> None:
    tables = set(inspect(engine_for(sql_url)).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_models_match_the_migrations(sql_url: str) -> None:
    """alembic check fails when autogenerate would produce a new migration."""
    with engine_for(sql_url).connect() as conn:
        cfg = alembic_config(sql_url)
        cfg.attributes["connection"] = conn
        command.check(cfg)


def test_creditmeter_migrate_on_a_fresh_sqlite_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'sub' / 'fresh.db'}"
    upgrade(url)
    assert current(url) == _head(url)
