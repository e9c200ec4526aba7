"""stripe purchases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 19:28:45.578116
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "stripe_customers",
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_stripe_customers")),
        sa.UniqueConstraint("customer_id", name=op.f("uq_stripe_customers_customer_id")),
    )
    op.create_table(
        "stripe_payments",
        sa.Column("payment_intent_id", sa.String(length=255), nullable=False),
        sa.Column("charge_refunded_minor", sa.BigInteger(), nullable=False),
        sa.Column("disputed_minor", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("payment_intent_id", name=op.f("pk_stripe_payments")),
    )
    op.create_table(
        "stripe_refunds",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_refunds")),
    )
    with op.batch_alter_table("stripe_refunds", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stripe_refunds_payment_intent_id"), ["payment_intent_id"], unique=False
        )

    with op.batch_alter_table("purchases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("source", sa.String(length=16), nullable=False, server_default="pack")
        )
        batch_op.add_column(sa.Column("stripe_invoice_id", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column("stripe_subscription_id", sa.String(length=255), nullable=True)
        )
        batch_op.add_column(sa.Column("period_end_ms", sa.BigInteger(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_purchases_stripe_invoice_id"), ["stripe_invoice_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_purchases_stripe_subscription_id"),
            ["stripe_subscription_id"],
            unique=False,
        )


def downgrade() -> None:

    with op.batch_alter_table("purchases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_purchases_stripe_subscription_id"))
        batch_op.drop_index(batch_op.f("ix_purchases_stripe_invoice_id"))
        batch_op.drop_column("period_end_ms")
        batch_op.drop_column("stripe_subscription_id")
        batch_op.drop_column("stripe_invoice_id")
        batch_op.drop_column("source")

    with op.batch_alter_table("stripe_refunds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_refunds_payment_intent_id"))

    op.drop_table("stripe_refunds")
    op.drop_table("stripe_payments")
    op.drop_table("stripe_customers")
