"""The runner and the snapshot service together (in-process consumers on real Redis and
PostgreSQL, the scripted model, local sandboxes, a folder store): the build's sandbox is lost
while the build sleeps; the woken build restores the latest snapshot into a new sandbox and
completes."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis as sync_redis

from cofounder_agent_runner.bootstrap import build_consumers
from cofounder_agent_runner.testing import Harness, context_ready, fast_settings
from cofounder_contracts import (
    AgentIterationCompleted,
    AgentSleeping,
    BudgetWake,
    BuildCompleted,
    SnapshotCompleted,
    SnapshotRequested,
    WakeReason,
)
from cofounder_contracts.keys import budget_gate_key
from cofounder_runtime.connections import connect_redis
from cofounder_runtime.publisher import Publisher
from cofounder_scripted_model.process import ScriptedModel, start
from cofounder_snapshot.bootstrap import build_consumer, deps_from
from cofounder_snapshot.settings import SnapshotSettings
from cofounder_snapshots.store import LocalStore
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration

#: A Redis logical database of its own (the consumers read the real stream names).
DB = 7


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with start("demo-webapp", latency_ms=150) as server:
        yield server


async def test_a_lost_sandbox_is_replaced_from_the_latest_snapshot(
    redis_url: str, migrated_database_url: str, model: ScriptedModel, tmp_path: Path
) -> None:
    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    client = sync_redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    redis = connect_redis(url)
    root = tmp_path / "sandboxes"
    store = LocalStore(tmp_path / "snapshots")
    runner_settings = fast_settings(
        redis_url=url,
        database_url=migrated_database_url,
        model_url=model.url,
        sandbox_root=root,
        snapshot_every=1,
        sandbox_isolation="none",
    )
    harness = Harness(settings=runner_settings, redis=redis)
    harness.deps.snapshots = store
    snapshot_settings = SnapshotSettings(
        redis_url=url,
        sandbox_root=str(root),
        consumer_block_ms=100,
        consumer_retry_max_ms=500,
        consumer_min_idle_ms=3000,
    )
    consumers = [
        *build_consumers(runner_settings, harness.deps),
        build_consumer(snapshot_settings, redis, deps_from(snapshot_settings, redis, store)),
    ]
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    context = context_ready()
    try:
        await Publisher(redis).emit(context)

        async def snapshotted_three_files() -> bool:
            events = await harness.events(context.build_id)
            done = [e for e in events if isinstance(e, SnapshotCompleted) and e.files >= 3]
            return bool(done)

        await eventually(
            snapshotted_three_files, what="a snapshot holding the first files", timeout=60
        )
        closes = datetime.now(UTC) + timedelta(hours=1)
        await redis.set(
            budget_gate_key(context.user_id), json.dumps({"resets_at": closes.isoformat()})
        )

        async def asleep() -> bool:
            return any(isinstance(e, AgentSleeping) for e in await harness.events(context.build_id))

        await eventually(asleep, what="the build to sleep", timeout=60)
        first_sandbox = next(
            e.sandbox_id
            for e in await harness.events(context.build_id)
            if isinstance(e, SnapshotRequested)
        )
        assert first_sandbox is not None
        # The sandbox is lost while the build sleeps (an E2B sandbox past its timeout).
        sandbox = await harness.sandboxes.connect(first_sandbox)
        await sandbox.kill()
        shutil.rmtree(sandbox.workspace)

        await redis.delete(budget_gate_key(context.user_id))
        await Publisher(redis).emit(
            BudgetWake(
                build_id=context.build_id,
                project_id=context.project_id,
                user_id=context.user_id,
                producer="test",
                reason=WakeReason.TOP_UP,
            )
        )

        async def completed() -> bool:
            return any(
                isinstance(e, BuildCompleted) for e in await harness.events(context.build_id)
            )

        await eventually(completed, what="the build to complete", timeout=90)
    finally:
        for consumer in consumers:
            consumer.stop()
        await asyncio.gather(*tasks)
        await harness.close()
        await redis.aclose()
    events = await harness.events(context.build_id)
    sandboxes = {e.sandbox_id for e in events if isinstance(e, SnapshotRequested)}
    assert len(sandboxes) == 2  # the lost one and its replacement
    replacement = root / next(s for s in sandboxes if s != first_sandbox) / "project"
    # The files written before the loss came back from the snapshot; the rest were written after.
    for name in ("app.py", "public/index.html", "test_app.py"):
        assert (replacement / name).is_file(), name
    assert [e.iteration for e in events if isinstance(e, AgentIterationCompleted)][-1] >= 8
