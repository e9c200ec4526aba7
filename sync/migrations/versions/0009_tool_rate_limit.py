"""tools.rate_limit: a tool's rate limit per account, "N/second|minute|hour" or "" (none)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 07:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "tools",
        sa.Column("rate_limit", sa.String(length=32), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_column("tools", "rate_limit")
