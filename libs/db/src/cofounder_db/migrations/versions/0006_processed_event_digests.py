"""processed_events.digest: each applied event's payload digest, so a second payload under the
same event id is refused instead of racing the first

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("processed_events") as batch:
        batch.add_column(
            sa.Column(
                "digest",
                sa.String(length=64),
                nullable=True,
                comment="payload_digest of the event applied",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("processed_events") as batch:
        batch.drop_column("digest")
