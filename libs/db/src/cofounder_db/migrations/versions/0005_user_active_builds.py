"""user_active_builds: each user's builds that have not ended, kept by the gateway

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_active_builds",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("active", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_active_builds")),
    )
    # The builds that have not ended count from the start.
    op.execute(
        "insert into user_active_builds (user_id, active) select user_id, count(*) from builds"
        " where status in ('queued', 'assembling', 'running', 'sleeping', 'finishing')"
        " group by user_id"
    )


def downgrade() -> None:
    op.drop_table("user_active_builds")
