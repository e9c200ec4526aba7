"""accounts.rate_limits: an account's own rate limits, JSON {"TOOL" or "*": "N/unit"}, NULL none

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 09:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("rate_limits", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("accounts", "rate_limits")
