"""The transactional outbox: events committed with the rows that caused them, then relayed.

``enqueue`` adds rows in the caller's transaction. The :class:`Relay` publishes the rows in id
order (pipelined ``XADD``, length-capped like every publish: :class:`Publisher`) and deletes
them in the same transaction as their claim, so the table holds only what is unsent. A crash
between commit and publish leaves rows in the table, and the relay publishes them when it runs
again; a crash between publish and delete publishes them twice, which consumers absorb by
``event_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping

import asyncpg
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from cofounder_contracts import Event, encode
from cofounder_contracts.codec import DATA, EVENT_ID, TYPE
from cofounder_contracts.streams import stream_for
from cofounder_db.engine import DRIVER_TIMEOUTS, driver_dsn
from cofounder_db.models import OutboxRow
from cofounder_runtime.publisher import Publisher

__all__ = ["Relay", "enqueue"]

_log = structlog.get_logger("cofounder.outbox")

_CLAIM = """
select id, stream, event_type, event_id, payload from outbox
order by id limit $1 for update skip locked
"""
# Published rows are deleted, not marked: the table holds only what is still to send (the claim
# stays an index probe at any age, nothing to prune), and a delete writes no new row version or
# index entries, where marking did both on every build (measured with benchmarks/gateway.py).
# The events themselves live on in their Redis streams, whose retention is the record.
_DELETE = "delete from outbox where id = any($1::bigint[])"


async def enqueue(conn: AsyncConnection | AsyncSession, events: Iterable[Event]) -> None:
    """Add events to the outbox in the caller's transaction (to their contract streams)."""
    rows = [
        {
            "stream": stream_for(type(e)).name,
            "event_type": e.type,
            "event_id": e.event_id,
            "payload": encode(e),
        }
        for e in events
    ]
    if rows:  # one multi-row INSERT (not the ORM's bulk path: this runs on every request)
        await conn.execute(insert(OutboxRow).values(rows))


class Relay:
    """Publishes the outbox to Redis, on a PostgreSQL connection of its own (through
    SQLAlchemy it cost about a quarter of the gateway's throughput: it runs once per accepted
    build under load, see docs/benchmarks.md). Safe to run in several gateway processes at once:
    rows are locked with ``SKIP LOCKED``."""

    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis,
        *,
        batch: int = 200,
        idle_s: float = 0.1,
        gather_s: float = 0.002,
        max_len: Mapping[str, int] | None = None,
    ) -> None:
        """``gather_s``: after a poke, how long to let more commits join the batch. Under load a
        poke per request made batches of one or two rows, each costing a claim, a pipeline and
        a mark; a few milliseconds turn them into one batch (events reach Redis that much
        later, responses are not delayed).

        ``max_len``: per-stream length caps overriding the contract streams' own, as
        :class:`Publisher` takes them (it is what adds the rows)."""
        self._engine = engine
        self._redis = redis
        self._publisher = Publisher(redis, max_len=max_len)
        self._batch = batch
        self._idle_s = idle_s
        self._gather_s = gather_s
        self._wake = asyncio.Event()
        self._conn: asyncpg.Connection | None = None

    async def close(self) -> None:
        """Close the relay's own PostgreSQL connection, if it opened one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await conn.close(timeout=5)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(driver_dsn(self._engine), **DRIVER_TIMEOUTS)
        return self._conn

    def poke(self) -> None:
        """Publish now rather than at the next poll (called after a commit that enqueued)."""
        self._wake.set()

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished rows; return how many."""
        conn = await self._connection()
        try:
            async with conn.transaction():
                rows = await conn.fetch(_CLAIM, self._batch)
                if not rows:
                    return 0
                async with self._redis.pipeline(transaction=False) as pipe:
                    for row in rows:
                        self._publisher.add_fields(
                            pipe,
                            row["stream"],
                            {
                                TYPE: row["event_type"],
                                EVENT_ID: row["event_id"],
                                DATA: row["payload"],
                            },
                        )
                    await pipe.execute()
                await conn.execute(_DELETE, [r["id"] for r in rows])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await self.close()  # a fresh connection next time
            raise
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; errors are logged and retried.

        The wake flag is cleared *before* publishing, so a build committed while a batch is in
        flight wakes the next round at once; a batch smaller than the limit means the outbox was
        drained, so no empty query follows it.
        """
        try:
            await self._run(stop)
        finally:
            await self.close()

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                while await self.publish_pending() >= self._batch:
                    pass
            except (RedisError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                _log.warning("outbox relay failed; retrying", error=repr(exc))
            waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
            _, idle = await asyncio.wait(
                waiters, timeout=self._idle_s, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in idle:
                waiter.cancel()
            if self._wake.is_set() and not stop.is_set() and self._gather_s > 0:
                await asyncio.sleep(self._gather_s)
