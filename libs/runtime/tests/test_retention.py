"""Retention of ``processed_events``: old rows pruned in batches, recent ones kept, on schedule."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cofounder_db.engine import create_engine
from cofounder_runtime.idempotency_sql import processed_events
from cofounder_runtime.retention import (
    ProcessedEventsPruner,
    ProcessedEventsRetentionSettings,
    Pruned,
    prune_batch,
    prune_processed_events,
)
from cofounder_testing.waiting import eventually

RETENTION = timedelta(days=14)
#: The engine of the schedule's tests, which never reach a database.
UNUSED = cast(AsyncEngine, None)


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(migrated_database_url, pool_size=2)
    yield eng
    await eng.dispose()


def _pruned_total() -> float:
    return REGISTRY.get_sample_value("cofounder_processed_events_pruned_total") or 0.0


@pytest.mark.integration
async def test_ten_thousand_old_rows_are_pruned_in_batches_and_recent_ones_stay(
    engine: AsyncEngine,
) -> None:
    scope = f"test-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    old = [
        {
            "scope": scope,
            "event_id": str(uuid.uuid4()),
            "processed_at": now - RETENTION - timedelta(days=1, seconds=i),
        }
        for i in range(10_000)
    ]
    # Recent enough to be redelivered still: one just inside the retention, the rest newer.
    recent = [
        {
            "scope": scope,
            "event_id": str(uuid.uuid4()),
            "processed_at": now - RETENTION + timedelta(minutes=5 + i),
        }
        for i in range(100)
    ]
    async with engine.begin() as conn:
        await conn.execute(processed_events.insert(), old + recent)
    before = _pruned_total()

    pruned = await prune_processed_events(engine, older_than=RETENTION, batch=1_000)

    assert pruned.batches > 1, "one transaction per batch, not one for the whole backlog"
    assert pruned.rows >= 10_000  # this test's rows, and any other old ones in a shared database
    assert _pruned_total() - before == pruned.rows
    async with engine.connect() as conn:
        left = set(
            (
                await conn.execute(
                    select(processed_events.c.event_id).where(processed_events.c.scope == scope)
                )
            ).scalars()
        )
    assert left == {r["event_id"] for r in recent}
    # Nothing old is left: the next pass is one empty batch.
    assert await prune_processed_events(engine, older_than=RETENTION, batch=1_000) == Pruned(
        rows=0, batches=1
    )


@pytest.mark.integration
async def test_a_pass_stops_between_batches_when_asked(engine: AsyncEngine) -> None:
    scope = f"test-{uuid.uuid4().hex[:8]}"
    old = datetime.now(UTC) - RETENTION - timedelta(days=1)
    async with engine.begin() as conn:
        await conn.execute(
            processed_events.insert(),
            [
                {"scope": scope, "event_id": str(uuid.uuid4()), "processed_at": old}
                for _ in range(30)
            ],
        )
    stop = asyncio.Event()
    stop.set()
    assert await prune_processed_events(
        engine, older_than=RETENTION, batch=10, stop=stop
    ) == Pruned(rows=10, batches=1)
    async with engine.connect() as conn:
        count = select(func.count()).where(processed_events.c.scope == scope)
        assert (await conn.execute(count)).scalar_one() == 20
    await prune_processed_events(engine, older_than=RETENTION, batch=10)


#: The index migration 0007 made for the prune's reads by age.
PROCESSED_AT_INDEX = "ix_processed_events_processed_at"


async def _plan(conn: AsyncConnection, sql: str) -> dict[str, Any]:
    explained = (await conn.execute(text(f"EXPLAIN (FORMAT JSON) {sql}"))).scalar_one()
    document = json.loads(explained) if isinstance(explained, str) else explained
    plan: dict[str, Any] = document[0]["Plan"]
    return plan


def _scans(node: dict[str, Any]) -> set[tuple[str, str | None]]:
    """Each scan of ``processed_events`` in the plan: its node type and index."""
    found = set()
    if node.get("Relation Name") == "processed_events" and "Scan" in node["Node Type"]:
        found.add((node["Node Type"], node.get("Index Name")))
    for child in node.get("Plans", []):
        found |= _scans(child)
    return found


@pytest.mark.integration
async def test_a_batch_finds_its_rows_on_the_processed_at_index(engine: AsyncEngine) -> None:
    """The batch's delete as the pruner runs it, on a table of tens of thousands of rows: its
    rows are found with an index scan on ``processed_at`` (in order, stopping at the batch),
    not by reading the table. No planner setting is changed: the index is what the planner
    picks for the statement as written."""
    scope = f"test-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    # Inside the retention (no other test's pass prunes them), spread over hours.
    rows = [
        {
            "scope": scope,
            "event_id": str(uuid.uuid4()),
            "processed_at": now - timedelta(hours=12, seconds=i),
        }
        for i in range(30_000)
    ]
    statement = prune_batch(now - timedelta(hours=16), 1_000)
    sql = statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    try:
        async with engine.begin() as conn:
            await conn.execute(processed_events.insert(), rows)
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE processed_events"))
            plan = await _plan(conn, sql)
            # The batch's rows: in processed_at order off the index, LIMIT stopping the scan.
            assert ("Index Scan", PROCESSED_AT_INDEX) in _scans(plan), plan
            # Their deletes by primary key: what the planner does once the table is large (at
            # this size a hash join over the whole table costs about the same), usable as is.
            primary_key = (
                await conn.execute(
                    text(
                        "SELECT conname FROM pg_constraint "
                        "WHERE conrelid = 'processed_events'::regclass AND contype = 'p'"
                    )
                )
            ).scalar_one()
            await conn.execute(text("SET LOCAL enable_seqscan = off"))
            plan = await _plan(conn, sql)
            scans = _scans(plan)
            assert ("Index Scan", PROCESSED_AT_INDEX) in scans, plan
            assert ("Index Scan", primary_key) in scans, plan
            assert not {s for s in scans if s[0] == "Seq Scan"}, plan
    finally:
        async with engine.begin() as conn:
            await conn.execute(delete(processed_events).where(processed_events.c.scope == scope))


class _CountingPruner(ProcessedEventsPruner):
    """The schedule with the database pass replaced: fails once, then counts."""

    def __init__(self) -> None:
        super().__init__(UNUSED, older_than=RETENTION, every_s=0.01, batch=10)
        self.passes = 0

    async def prune_once(self, stop: asyncio.Event | None = None) -> Pruned:
        self.passes += 1
        if self.passes == 1:
            raise OperationalError("delete", {}, Exception("database restarting"))
        return Pruned(rows=0, batches=1)


async def test_the_schedule_survives_a_failed_pass_and_ends_when_stopped() -> None:
    pruner = _CountingPruner()
    stop = asyncio.Event()
    running = asyncio.create_task(pruner.run(stop))

    async def passed_again() -> bool:
        return pruner.passes >= 3

    await eventually(passed_again, what="passes after a failed one")
    stop.set()
    await asyncio.wait_for(running, timeout=1)


async def test_a_stop_during_the_wait_ends_the_schedule_at_once() -> None:
    pruner = ProcessedEventsPruner(UNUSED, older_than=RETENTION, every_s=3_600, batch=10)
    stop = asyncio.Event()
    running = asyncio.create_task(pruner.run(stop))
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(running, timeout=1)


def test_a_retention_within_the_redelivery_window_is_refused() -> None:
    with pytest.raises(ValidationError, match="must be more than 7 days"):
        ProcessedEventsRetentionSettings(processed_events_retention_days=7)
    settings = ProcessedEventsRetentionSettings()
    assert timedelta(days=settings.processed_events_retention_days) > timedelta(days=7)
