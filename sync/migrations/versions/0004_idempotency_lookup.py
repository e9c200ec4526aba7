"""idempotency lookup

After Redis lost its data, a retried request is answered from SQL (sync.loader.stored_result)
and a hydrated account's recent keys are restored into Redis (recent_idempotency_keys): both
look up an account's entries and holds by idempotency key. Not unique: a request may write
several entries, and a key is scoped by account.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 02:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_ledger_entries_account_idempotency",
        "ledger_entries",
        ["account_id", "idempotency_key"],
    )
    op.create_index("ix_holds_account_idempotency", "holds", ["account_id", "idempotency_key"])


def downgrade() -> None:
    op.drop_index("ix_holds_account_idempotency", table_name="holds")
    op.drop_index("ix_ledger_entries_account_idempotency", table_name="ledger_entries")
