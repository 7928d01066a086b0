"""The gateway process prunes ``processed_events`` while its projection runs (the projection
writes them): the retention is started by the process, not only by the tests that call it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_db.engine import create_engine
from cofounder_runtime.idempotency_sql import processed_events
from cofounder_testing.servers import free_port
from cofounder_testing.services import offline_env, start_service
from cofounder_testing.waiting import eventually, http_ok, until_started

pytestmark = pytest.mark.e2e

RETENTION_DAYS = 8  # the shortest the settings allow: more than the streams' 7 days


@pytest.fixture
async def engine(own_database_url: str) -> AsyncIterator[AsyncEngine]:
    """A database of this test's own: the gateway prunes every scope's old rows."""
    eng = create_engine(own_database_url, pool_size=2)
    yield eng
    await eng.dispose()


async def _left(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.execute(select(processed_events.c.event_id))).scalars())


async def test_the_gateway_with_its_projection_prunes_old_processed_events(
    engine: AsyncEngine, own_database_url: str, own_redis_url: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    old = [
        {
            "scope": scope,
            "event_id": str(uuid.uuid4()),
            "processed_at": now - timedelta(days=RETENTION_DAYS + 1, minutes=i),
        }
        for i, scope in enumerate(["gateway.projection", "budget.usage", "other"] * 50)
    ]
    recent = [
        {
            "scope": "gateway.projection",
            "event_id": str(uuid.uuid4()),
            "processed_at": now - timedelta(days=RETENTION_DAYS - 1, minutes=i),
        }
        for i in range(20)
    ]
    async with engine.begin() as conn:
        await conn.execute(processed_events.insert(), old + recent)

    port = free_port()
    env = offline_env(
        REDIS_URL=own_redis_url,
        DATABASE_URL=own_database_url,
        PORT=str(port),
        LOG_LEVEL="WARNING",
        RUN_PROJECTION="true",
        PROCESSED_EVENTS_RETENTION_DAYS=str(RETENTION_DAYS),
        PROCESSED_EVENTS_PRUNE_EVERY_S="0.2",
        PROCESSED_EVENTS_PRUNE_BATCH="40",  # several batches per pass
    )
    gateway = start_service("gateway", env, tmp_path / "gateway.log")
    try:
        await until_started(
            lambda: http_ok(f"http://127.0.0.1:{port}/v1/healthz"),
            what="the gateway",
            watch=[gateway],
        )
        kept = {r["event_id"] for r in recent}

        async def only_recent_left() -> bool:
            return await _left(engine) == kept

        await eventually(only_recent_left, what="the gateway to prune the old rows", timeout=60)
    finally:
        gateway.stop(grace_s=30)
    assert await _left(engine) == kept  # what is within the retention stays
