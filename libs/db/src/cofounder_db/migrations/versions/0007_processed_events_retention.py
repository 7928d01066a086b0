"""processed_events.processed_at indexed, for the retention's batched deletes by age

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_processed_events_processed_at"


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        # The table grew unpruned until this release, and the services keep writing it while the
        # migration runs: CONCURRENTLY builds the index without blocking their inserts. It cannot
        # run in a transaction, so the migrations before it commit first. If it fails it leaves
        # an invalid index: drop it (DROP INDEX CONCURRENTLY ix_processed_events_processed_at)
        # and upgrade again.
        with op.get_context().autocommit_block():
            op.create_index(
                INDEX, "processed_events", ["processed_at"], postgresql_concurrently=True
            )
    else:
        with op.batch_alter_table("processed_events") as batch:
            batch.create_index(INDEX, ["processed_at"])


def downgrade() -> None:
    with op.batch_alter_table("processed_events") as batch:
        batch.drop_index(INDEX)
