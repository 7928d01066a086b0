"""Alembic environment: runs migrations on the async engine of the configured URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from cofounder_db.engine import create_engine
from cofounder_db.migrate import LOCK_KEY
from cofounder_db.models import all_metadata

config = context.config
target_metadata = all_metadata()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "", statement_timeout_s=None)
    try:
        # One run at a time (pods migrating at once): a session lock on a connection of its
        # own, so it outlasts the commits of the migrations' autocommit blocks; the revision is
        # read once it is held. Tried every half second rather than waited for: a session
        # blocked in pg_advisory_lock holds a snapshot, which CREATE INDEX CONCURRENTLY (run
        # by the holder) would wait for, forever.
        async with engine.connect() as session:
            lock = await session.execution_options(isolation_level="AUTOCOMMIT")
            key = {"key": LOCK_KEY}
            while True:
                taken = await lock.execute(text("SELECT pg_try_advisory_lock(:key)"), key)
                if taken.scalar():
                    break
                await asyncio.sleep(0.5)
            try:
                async with engine.connect() as connection:
                    await connection.run_sync(_run)
                    await connection.commit()
            finally:
                await lock.execute(text("SELECT pg_advisory_unlock(:key)"), key)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_online())
