"""wallet_thresholds: per account and credit type, the balance.low alert threshold (kind
low) and the auto top-up threshold (kind topup)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 09:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wallet_thresholds",
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("credit_type", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("threshold", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_wallet_thresholds_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "credit_type", "kind", name=op.f("pk_wallet_thresholds")
        ),
    )


def downgrade() -> None:
    op.drop_table("wallet_thresholds")
