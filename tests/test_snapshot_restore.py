"""The agent runner and the snapshot service as real processes on real Redis and PostgreSQL, the
scripted model, local sandboxes and a folder store: the build's sandbox is lost while the build
sleeps; the woken build restores the latest snapshot into a new sandbox and completes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.exceptions import ResponseError

from cofounder_agent_runner.testing import context_ready, read_build_events
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
from cofounder_contracts.streams import AGENT_RUNNER, AGENT_WORK, SNAPSHOT, SNAPSHOT_REQUESTS
from cofounder_runtime.connections import connect_redis
from cofounder_runtime.publisher import Publisher
from cofounder_sandbox.local import LocalSandboxes
from cofounder_scripted_model.process import ScriptedModel, start
from cofounder_testing.services import offline_env, service_processes
from cofounder_testing.waiting import Watched, eventually, until_started

pytestmark = pytest.mark.e2e


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with start("demo-webapp", latency_ms=200) as server:
        yield server


@pytest.fixture
def services(
    own_redis_url: str, migrated_database_url: str, model: ScriptedModel, tmp_path: Path
) -> Iterator[tuple[str, list[Watched]]]:
    """The runner and the snapshot service as processes: their Redis URL, and them."""
    url = own_redis_url  # a server of its own: the services read the real stream names
    env = offline_env(
        REDIS_URL=url,
        DATABASE_URL=migrated_database_url,
        ANTHROPIC_BASE_URL=model.url,
        SANDBOX="local",
        SANDBOX_ROOT=str(tmp_path / "sandboxes"),
        SNAPSHOT_LOCAL_DIR=str(tmp_path / "snapshots"),
        SNAPSHOT_EVERY="1",
        CONSUMER_BLOCK_MS="100",
        CONSUMER_MIN_IDLE_MS="3000",
        CONSUMER_RETRY_MAX_MS="500",
        LEASE_TTL_MS="2000",
        LOG_JSON="false",
    )
    with service_processes([("agent-runner", env), ("snapshot", env)], tmp_path) as started:
        yield url, started


async def test_a_lost_sandbox_is_replaced_from_the_latest_snapshot(
    services: tuple[str, list[Watched]], tmp_path: Path
) -> None:
    url, started = services
    redis = connect_redis(url)
    context = context_ready()
    try:

        async def ready() -> bool:
            try:
                snap = await redis.xinfo_consumers(SNAPSHOT_REQUESTS.name, SNAPSHOT)
                runner = await redis.xinfo_consumers(AGENT_WORK.name, AGENT_RUNNER)
            except ResponseError:
                return False  # a group does not exist yet
            return bool(snap) and bool(runner)

        await until_started(ready, what="the services to join their groups", watch=started)
        await Publisher(redis).emit(context)

        async def events() -> list[object]:
            return list(await read_build_events(redis, context.build_id))

        async def snapshot_of_three_files() -> bool:
            return any(isinstance(e, SnapshotCompleted) and e.files >= 3 for e in await events())

        await eventually(
            snapshot_of_three_files, what="a snapshot holding the first files", timeout=60
        )
        resets = datetime.now(UTC) + timedelta(hours=1)
        await redis.set(
            budget_gate_key(context.user_id), json.dumps({"resets_at": resets.isoformat()})
        )

        async def asleep() -> bool:
            return any(isinstance(e, AgentSleeping) for e in await events())

        await eventually(asleep, what="the build to sleep", timeout=60)
        first = next(e.sandbox_id for e in await events() if isinstance(e, SnapshotRequested))
        assert first is not None
        # The sandbox is lost while the build sleeps (an E2B sandbox past its timeout).
        lost = await LocalSandboxes(tmp_path / "sandboxes").connect(first)
        await lost.kill()
        shutil.rmtree(lost.workspace)

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
            return any(isinstance(e, BuildCompleted) for e in await events())

        await eventually(completed, what="the build to complete", timeout=90)
        seen = await read_build_events(redis, context.build_id)
    finally:
        await redis.aclose()
    sandboxes = {e.sandbox_id for e in seen if isinstance(e, SnapshotRequested)}
    assert len(sandboxes) == 2  # the lost one and its replacement
    replacement = tmp_path / "sandboxes" / next(s for s in sandboxes if s != first) / "project"
    # Written before the loss, so back only through the snapshot:
    for name in ("app.py", "public/index.html", "test_app.py"):
        assert (replacement / name).is_file(), name
    assert "restored the latest snapshot" in (tmp_path / "agent-runner.log").read_text()
    assert [e.iteration for e in seen if isinstance(e, AgentIterationCompleted)][-1] >= 8
