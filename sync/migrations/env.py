"""Alembic environment: the URL comes from the caller (sync.migrate), never from a file."""

from __future__ import annotations

from alembic import context

from sync.db import engine_for
from sync.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    with engine_for(config.get_main_option("sqlalchemy.url") or "").connect() as conn:
        _run(conn)


def _ours(name: str | None, type_: str, _parent: object) -> bool:
    """Only our tables: a shared database may hold others (the bench's, say)."""
    return type_ != "table" or name in target_metadata.tables


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite needs table rebuilds for ALTERs
        compare_type=True,
        include_name=_ours,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `creditmeter migrate`")
run_migrations_online()
