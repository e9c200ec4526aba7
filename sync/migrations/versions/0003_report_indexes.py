"""report indexes

The admin reports (sync.reports) read ledger_entries through one covering index led by
created_at_ms, which replaces the (created_at_ms, tool) index, and grants through a partial
index of the grants with credits left, which replaces the unused index on expires_at_ms.

PostgreSQL also gets statistics on the ledger's day number (created_at_ms / 86400000, the
very expression of sync.reports_sql._day): without them it takes every entry for a day of its
own and sorts a month of entries on disk to group them by day, instead of hashing a few
thousand groups in memory.

On PostgreSQL building the ledger index blocks inserts into ledger_entries until it is
built: the flush waits (charging does not, it never waits for SQL) and drains after.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 21:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LIVE_GRANT = "remaining > 0"
DAY = "created_at_ms / 86400000"
DAY_STATISTICS = "st_ledger_entries_day"


def upgrade() -> None:
    op.create_index(
        "ix_ledger_entries_reports",
        "ledger_entries",
        ["created_at_ms", "kind", "credit_type", "tool", "account_id", "amount"],
    )
    op.drop_index(op.f("ix_ledger_entries_created_at_ms_tool"), table_name="ledger_entries")
    op.create_index(
        "ix_grants_live",
        "grants",
        ["credit_type", "expires_at_ms"],
        postgresql_where=sa.text(LIVE_GRANT),
        sqlite_where=sa.text(LIVE_GRANT),
    )
    op.drop_index(op.f("ix_grants_expires_at_ms"), table_name="grants")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE STATISTICS {DAY_STATISTICS} ON ({DAY}) FROM ledger_entries")
        op.execute("ANALYZE ledger_entries")  # a sample: seconds, whatever the table's size


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP STATISTICS {DAY_STATISTICS}")
    op.create_index(op.f("ix_grants_expires_at_ms"), "grants", ["expires_at_ms"])
    op.drop_index("ix_grants_live", table_name="grants")
    op.create_index(
        op.f("ix_ledger_entries_created_at_ms_tool"), "ledger_entries", ["created_at_ms", "tool"]
    )
    op.drop_index("ix_ledger_entries_reports", table_name="ledger_entries")
