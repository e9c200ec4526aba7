"""stripe inbound: disputes and refunds by state, invoice payments, Adaptive Pricing

Disputes are kept by id with their status (an inquiry takes nothing, a won one gives back);
refunds keep their status (a failed refund gives back); `invoice_payment` objects link an
invoice to its payment intent on API versions from 2025-03-31; a purchase records what was
given back and, under Adaptive Pricing, what the customer paid in their own currency.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 06:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stripe_disputes",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_disputes")),
    )
    op.create_index(
        op.f("ix_stripe_disputes_payment_intent_id"),
        "stripe_disputes",
        ["payment_intent_id"],
        unique=False,
    )
    op.create_table(
        "stripe_invoice_payments",
        sa.Column("invoice_id", sa.String(length=255), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "invoice_id", "payment_intent_id", name=op.f("pk_stripe_invoice_payments")
        ),
    )
    with op.batch_alter_table("stripe_refunds", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="succeeded")
        )
    with op.batch_alter_table("purchases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("returned", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("presentment_amount_minor", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("presentment_currency", sa.String(length=3), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("purchases", schema=None) as batch_op:
        batch_op.drop_column("presentment_currency")
        batch_op.drop_column("presentment_amount_minor")
        batch_op.drop_column("returned")
    with op.batch_alter_table("stripe_refunds", schema=None) as batch_op:
        batch_op.drop_column("status")
    op.drop_table("stripe_invoice_payments")
    op.drop_index(op.f("ix_stripe_disputes_payment_intent_id"), table_name="stripe_disputes")
    op.drop_table("stripe_disputes")
