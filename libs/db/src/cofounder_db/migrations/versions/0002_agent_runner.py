"""agent runner: checkpoints and build versions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_checkpoints",
        sa.Column("build_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("parts", sa.JSON(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("tool_calls", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("sandbox_kind", sa.String(length=20), nullable=True),
        sa.Column("sandbox_id", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("build_id", "seq", name=op.f("pk_agent_checkpoints")),
    )
    op.create_index(
        "ix_agent_checkpoints_build_generation",
        "agent_checkpoints",
        ["build_id", "generation"],
        unique=False,
    )
    op.create_table(
        "build_versions",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("build_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "version", name=op.f("pk_build_versions")),
        sa.UniqueConstraint("build_id", name=op.f("uq_build_versions_build_id")),
    )


def downgrade() -> None:
    op.drop_table("build_versions")
    op.drop_index("ix_agent_checkpoints_build_generation", table_name="agent_checkpoints")
    op.drop_table("agent_checkpoints")
