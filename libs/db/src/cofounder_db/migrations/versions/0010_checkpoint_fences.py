"""Each build's claimed lease generation, kept in PostgreSQL: the checkpoint fence

A drive claims its lease generation here before it reads the build's checkpoints, and an append
is refused once a newer generation has claimed (a row lock orders the two). The fence used to be
the checkpoints alone, which let an old drive write until its successor had written a part of
its own; a Redis round trip before every append closed that window but for an instant. The
claim closes it in the database that holds the parts, once per drive.

Existing builds get the highest generation their checkpoints hold.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 06:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "checkpoint_fences",
        sa.Column("build_id", sa.String(36), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("build_id", name=op.f("pk_checkpoint_fences")),
    )
    op.execute(
        "insert into checkpoint_fences (build_id, generation, claimed_at) "
        "select build_id, max(generation), max(created_at) from agent_checkpoints "
        "group by build_id"
    )


def downgrade() -> None:
    op.drop_table("checkpoint_fences")
