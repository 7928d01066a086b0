"""The outbox is claimed by id alone: its (published_at, id) index goes

Published rows have been deleted rather than marked since the relay moved to deletes, so
``published_at`` is always null and the claim (``order by id ... for update skip locked``) uses
the primary key. The column stays one more release: a gateway of the previous release, still
running during a rolling update, filters on it. The migration after this one drops it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 19:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_outbox_unpublished"


def upgrade() -> None:
    # The relay claims rows while this runs: drop the index without blocking it.
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="outbox", postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(INDEX, "outbox", ["published_at", "id"], postgresql_concurrently=True)
