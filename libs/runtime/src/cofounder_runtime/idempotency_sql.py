"""The database form of idempotency: the event id recorded in the handler's own transaction.

Include :data:`processed_events` in a service's metadata (and its migrations). In a handler::

    async with engine.begin() as conn:
        if not await record_once(conn, scope="gateway", event_id=event.event_id):
            return  # a redelivery: the writes below already committed once
        await conn.execute(...)  # the handler's writes, same transaction

Both succeed or neither does, so a crash between them cannot count an event without its effect.
Rows older than the retention are deleted by :mod:`cofounder_runtime.retention` (indexed by
``processed_at`` for it).
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from cofounder_runtime.conflict import PayloadConflict

__all__ = ["metadata", "processed_events", "record_once"]

metadata = MetaData()

processed_events = Table(
    "processed_events",
    metadata,
    Column("scope", String(100), primary_key=True, comment="consumer group or handler name"),
    Column("event_id", String(36), primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("digest", String(64), nullable=True, comment="payload_digest of the event applied"),
    # The retention's range scan: without it every pruning batch reads the whole table.
    Index("ix_processed_events_processed_at", "processed_at"),
)


async def record_once(
    conn: AsyncConnection, *, scope: str, event_id: str, digest: str | None = None
) -> bool:
    """Record ``event_id`` for ``scope`` in the current transaction; False if already there.

    With the payload's ``digest``, an id recorded before with another payload raises
    :class:`~cofounder_runtime.conflict.PayloadConflict` (the transaction writes nothing)."""
    values = {"scope": scope, "event_id": event_id, "digest": digest}
    stmt = postgresql.insert(processed_events).values(values).on_conflict_do_nothing()
    result = await conn.execute(stmt.returning(processed_events.c.event_id))
    if result.first() is not None:
        return True
    if digest is not None:
        seen = (
            await conn.execute(
                select(processed_events.c.digest).where(
                    processed_events.c.scope == scope, processed_events.c.event_id == event_id
                )
            )
        ).scalar()
        if seen is not None and seen != digest:
            raise PayloadConflict(event_id, seen=seen, now=digest)
    return False
