"""The outbox relay keeps both ends bounded: streams capped like every publish, the table empty."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_contracts.ids import new_event_id
from cofounder_db.engine import create_engine
from cofounder_db.models import OutboxRow
from cofounder_gateway.outbox import Relay
from cofounder_testing.fixtures import Names

pytestmark = pytest.mark.integration

EVENTS = 10_000
CAP = 1_000


@pytest.fixture
async def engine(own_database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database of this test's own: the relay publishes every row it finds."""
    eng = create_engine(own_database_url, pool_size=2)
    yield eng
    await eng.dispose()


async def test_relaying_ten_thousand_rows_leaves_the_stream_at_its_cap_and_the_outbox_empty(
    engine: AsyncEngine, redis: Redis, names: Names
) -> None:
    event_ids = [new_event_id() for _ in range(EVENTS)]
    rows = [
        {"stream": names.stream, "event_type": "test.probe", "event_id": e, "payload": b"{}"}
        for e in event_ids
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(OutboxRow), rows)
    relay = Relay(engine, redis, batch=500, max_len={names.stream: CAP})
    try:
        published = 0
        while sent := await relay.publish_pending():
            published += sent
    finally:
        await relay.close()

    assert published == EVENTS
    # MAXLEN ~ trims whole macro nodes only: at most one node's worth above the cap remains.
    node = int((await redis.config_get("stream-node-max-entries"))["stream-node-max-entries"])
    assert CAP <= await redis.xlen(names.stream) <= CAP + node
    # The newest entries are the ones kept.
    newest = await redis.xrevrange(names.stream, count=1)
    assert newest[0][1][b"event_id"] == event_ids[-1].encode()
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(OutboxRow))).scalar_one() == 0
