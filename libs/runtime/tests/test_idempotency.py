"""Idempotent effects: the Redis script form and the database-transaction form."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cofounder_contracts.ids import new_event_id
from cofounder_runtime.conflict import PayloadConflict
from cofounder_runtime.consumer import Poison
from cofounder_runtime.idempotency import RedisOnce
from cofounder_runtime.idempotency_sql import processed_events, record_once
from cofounder_testing.fixtures import Names

pytestmark = pytest.mark.integration


async def test_redis_once_applies_each_event_id_once(redis: Redis, names: Names) -> None:
    add = RedisOnce(redis, scope=names.prefix, body="return redis.call('INCRBY', KEYS[1], ARGV[1])")
    first, second = new_event_id(), new_event_id()
    results = await asyncio.gather(
        *[
            add.apply(eid, keys=[names.key("total")], args=[5])
            for eid in [first, first, second, first, second]
        ]
    )
    assert [r.applied for r in results].count(True) == 2
    assert sorted(r.result for r in results if r.applied) == [5, 10]
    assert int(await redis.get(names.key("total")) or 0) == 10


async def test_redis_once_marker_expires(redis: Redis, names: Names) -> None:
    add = RedisOnce(
        redis,
        scope=names.prefix,
        ttl=timedelta(milliseconds=200),
        body="return redis.call('INCR', KEYS[1])",
    )
    eid = new_event_id()
    assert (await add.apply(eid, keys=[names.key("n")])).applied
    ttl = await redis.pttl(add.marker(eid))
    assert 0 < ttl <= 200


async def test_a_failing_effect_leaves_no_marker_so_the_retry_applies_it(
    redis: Redis, names: Names
) -> None:
    incr = RedisOnce(redis, scope=names.prefix, body="return redis.call('INCR', KEYS[1])")
    eid = new_event_id()
    await redis.set(names.key("n"), "not a number")
    with pytest.raises(ResponseError, match="not an integer"):
        await incr.apply(eid, keys=[names.key("n")])
    assert await redis.exists(incr.marker(eid)) == 0
    await redis.set(names.key("n"), "41")
    assert (await incr.apply(eid, keys=[names.key("n")])).result == 42
    assert not (await incr.apply(eid, keys=[names.key("n")])).applied


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    """A database of this test's own, migrated (``processed_events`` as the services have it)."""
    url = migrated_database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    eng = create_async_engine(url)
    yield eng
    await eng.dispose()


async def test_record_once_in_the_handler_transaction(engine: AsyncEngine) -> None:
    scope = f"test-{uuid.uuid4().hex[:8]}"
    ledger = Table(
        f"ledger_{scope.replace('-', '_')}",
        MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(36)),
    )
    async with engine.begin() as conn:
        await conn.run_sync(ledger.metadata.create_all)

    async def handle(event_id: str, *, crash: bool = False) -> bool:
        async with engine.begin() as conn:
            if not await record_once(conn, scope=scope, event_id=event_id):
                return False
            await conn.execute(ledger.insert().values(event_id=event_id))
            if crash:
                raise RuntimeError("crash after the writes, before commit")
        return True

    eid = new_event_id()
    with pytest.raises(RuntimeError):
        await handle(eid, crash=True)  # rolled back: neither the mark nor the write stayed
    assert await handle(eid) is True
    assert await handle(eid) is False  # the redelivery changes nothing
    async with engine.connect() as conn:
        rows = (await conn.execute(select(func.count()).select_from(ledger))).scalar_one()
        marks = (
            await conn.execute(
                select(func.count())
                .select_from(processed_events)
                .where(processed_events.c.scope == scope)
            )
        ).scalar_one()
        await conn.run_sync(ledger.drop)
        await conn.commit()
    assert (rows, marks) == (1, 1)


async def test_an_event_id_with_another_payload_is_refused_with_both_digests(
    engine: AsyncEngine, redis: Redis, names: Names
) -> None:
    scope = f"test-{uuid.uuid4().hex[:8]}"
    eid = new_event_id()
    async with engine.begin() as conn:
        assert await record_once(conn, scope=scope, event_id=eid, digest="a" * 32)
    async with engine.begin() as conn:  # the same payload again: a plain redelivery
        assert not await record_once(conn, scope=scope, event_id=eid, digest="a" * 32)
    with pytest.raises(PayloadConflict) as refused:
        async with engine.begin() as conn:
            await record_once(conn, scope=scope, event_id=eid, digest="b" * 32)
    assert "a" * 32 in str(refused.value)
    assert "b" * 32 in str(refused.value)
    assert isinstance(refused.value, Poison)  # dead-lettered at once by the consumer

    add = RedisOnce(redis, scope=names.prefix, body="return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert (await add.apply(eid, keys=[names.key("n")], args=[1], digest="a" * 32)).applied
    assert not (await add.apply(eid, keys=[names.key("n")], args=[1], digest="a" * 32)).applied
    with pytest.raises(PayloadConflict, match="b" * 32):
        await add.apply(eid, keys=[names.key("n")], args=[5], digest="b" * 32)
    assert int(await redis.get(names.key("n")) or 0) == 1  # the second payload changed nothing
