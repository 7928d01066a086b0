"""Fixtures of the agent runner's tests: the scripted model server and an in-process runner."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cofounder_agent_runner.testing import Harness, fast_settings
from cofounder_runtime.connections import connect_redis
from cofounder_scripted_model.process import ScriptedModel, start
from cofounder_testing.servers import own_redis_server


@pytest.fixture(scope="session")
def scripted_server() -> Iterator[ScriptedModel]:
    with start("demo-webapp") as server:
        yield server


@pytest.fixture
def scripted(scripted_server: ScriptedModel) -> ScriptedModel:
    """The scripted model server, with no faults, no latency and an empty log."""
    scripted_server.reset()
    scripted_server.latency(0)
    return scripted_server


@pytest.fixture(scope="session")
def runner_redis_url() -> Iterator[str]:
    """A Redis of the runner tests' own: their consumers read the real stream names."""
    with own_redis_server() as url:
        yield url


@pytest.fixture
async def harness(
    runner_redis_url: str, migrated_database_url: str, scripted: ScriptedModel, tmp_path: Path
) -> AsyncIterator[Harness]:
    redis = connect_redis(runner_redis_url)
    settings = fast_settings(
        redis_url=runner_redis_url,
        database_url=migrated_database_url,
        model_url=scripted.url,
        sandbox_root=tmp_path / "sandboxes",
    )
    running = Harness(settings=settings, redis=redis)
    yield running
    await running.close()
    await redis.aclose()
