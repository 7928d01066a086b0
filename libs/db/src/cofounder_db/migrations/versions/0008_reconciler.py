"""What the reconciler reads: unfinished and lately finished builds, checkpoints' snapshot requests

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = "ix_builds_unfinished"
FINISHED_AT = "ix_builds_finished_at"
UNFINISHED_SQL = "status in ('queued', 'assembling', 'running', 'sleeping', 'finishing')"


def upgrade() -> None:
    # A nullable column without a default: no table rewrite.
    op.add_column(
        "agent_checkpoints", sa.Column("snapshot_request_id", sa.String(36), nullable=True)
    )
    # builds is written on every request while this runs: build the indexes without blocking
    # those writes (outside a transaction; see 0007 for an invalid leftover).
    with op.get_context().autocommit_block():
        op.create_index(
            UNFINISHED,
            "builds",
            ["id"],
            postgresql_where=sa.text(UNFINISHED_SQL),
            postgresql_concurrently=True,
        )
        op.create_index(FINISHED_AT, "builds", ["finished_at"], postgresql_concurrently=True)


def downgrade() -> None:
    op.drop_index(FINISHED_AT, table_name="builds")
    op.drop_index(UNFINISHED, table_name="builds")
    op.drop_column("agent_checkpoints", "snapshot_request_id")
