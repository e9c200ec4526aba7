"""auto top-up: topup_rules, topup_attempts and saved_payment_methods

A rule per wallet (threshold, credits, daily cap, the failures in a row), one attempt per
threshold crossing (its id is the Stripe idempotency key), and the card an opted-in
checkout saved. See sync/topups.py.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 09:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "topup_rules",
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("credit_type", sa.String(length=32), nullable=False),
        sa.Column("threshold", sa.BigInteger(), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("daily_max", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=255), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "credit_type", name=op.f("pk_topup_rules")),
    )
    op.create_table(
        "topup_attempts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("credit_type", sa.String(length=32), nullable=False),
        sa.Column("crossing_id", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topup_attempts")),
        sa.UniqueConstraint(
            "account_id",
            "credit_type",
            "crossing_id",
            name=op.f("uq_topup_attempts_account_id_credit_type_crossing_id"),
        ),
    )
    op.create_index(
        op.f("ix_topup_attempts_account_id_credit_type_created_at_ms"),
        "topup_attempts",
        ["account_id", "credit_type", "created_at_ms"],
    )
    op.create_table(
        "saved_payment_methods",
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("payment_method_id", sa.String(length=255), nullable=False),
        sa.Column("saved_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_saved_payment_methods")),
    )


def downgrade() -> None:
    op.drop_table("saved_payment_methods")
    op.drop_index(
        op.f("ix_topup_attempts_account_id_credit_type_created_at_ms"),
        table_name="topup_attempts",
    )
    op.drop_table("topup_attempts")
    op.drop_table("topup_rules")
