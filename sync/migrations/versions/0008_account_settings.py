"""account settings: status (active | suspended), email and metadata on accounts

The overdraft limit was there already; PATCH /v1/accounts/{id} now sets all four. Existing
accounts are active, with no email and no metadata.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 07:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="active")
        )
        batch_op.add_column(sa.Column("email", sa.String(length=254), nullable=True))
        batch_op.add_column(sa.Column("metadata", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("metadata")
        batch_op.drop_column("email")
        batch_op.drop_column("status")
