"""Fixtures of the agent runner's tests: the scripted model server and an in-process runner."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as sync_redis

from cofounder_agent_runner.testing import Harness, fast_settings
from cofounder_runtime.connections import connect_redis
from cofounder_scripted_model.process import ScriptedModel, start

#: The Redis logical database of the in-process runner tests (real stream names live here).
RUNNER_DB = 11


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
def runner_redis_url(redis_url: str) -> str:
    url = redis_url.rsplit("/", 1)[0] + f"/{RUNNER_DB}"
    client = sync_redis.Redis.from_url(url)
    client.flushdb()  # consumers here read the real streams: start them empty
    client.close()
    return url


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
