"""checkout quotes

The server-side quote of each credits checkout, by Checkout Session id: the grant of
`checkout.session.completed` follows it, so a signed event whose metadata claims more credits
than were paid for grants nothing (issue 13 item 15).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 06:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkout_quotes",
        sa.Column("session_id", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("credit_type", sa.String(length=32), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("pack_id", sa.String(length=64), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_checkout_quotes")),
    )


def downgrade() -> None:
    op.drop_table("checkout_quotes")
