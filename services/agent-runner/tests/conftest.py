"""Fixtures of the agent runner's tests: the scripted model server and an in-process runner."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cofounder_agent_runner.testing import Harness, OnSandbox, fast_settings
from cofounder_e2b_standin import serve
from cofounder_runtime.connections import connect_redis
from cofounder_scripted_model.process import ScriptedModel, start
from cofounder_snapshots.store import LocalStore
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


#: Starts an in-process runner on one kind of sandbox, with the given model server's URL and
#: settings overrides (see :func:`runner_on`).
RunnerOn = Callable[..., contextlib.AbstractAsyncContextManager[OnSandbox]]


@pytest.fixture
def runner_on(
    runner_redis_url: str,
    migrated_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> RunnerOn:
    """``async with runner_on(kind, model_url, **settings) as on``: the runner on a ``local``
    sandbox or on ``e2b-standin`` (E2B through the unmodified SDK against the stand-in)."""

    @contextlib.asynccontextmanager
    async def start(kind: str, model_url: str, **settings: Any) -> AsyncIterator[OnSandbox]:
        async with contextlib.AsyncExitStack() as stack:
            standin = None
            overrides: dict[str, object] = {}
            root = tmp_path / "sandboxes"
            if kind == "e2b-standin":
                root = tmp_path / "e2b"
                running = await stack.enter_async_context(serve(root))
                for name, value in running.env.items():
                    monkeypatch.setenv(name, value)  # the SDK's own settings
                standin = running.standin
                overrides = {"sandbox": "e2b", "e2b_api_key": running.api_key}
            redis = connect_redis(runner_redis_url)
            stack.push_async_callback(redis.aclose)
            config = fast_settings(
                redis_url=runner_redis_url,
                database_url=migrated_database_url,
                model_url=model_url,
                sandbox_root=tmp_path / "sandboxes",
                **overrides,
                **settings,
            )
            harness = Harness(settings=config, redis=redis)
            stack.push_async_callback(harness.close)
            harness.deps.snapshots = LocalStore(tmp_path / "snapshots")
            yield OnSandbox(kind, harness, root, standin)

    return start


@pytest.fixture(params=["local", "e2b-standin"])
async def on_sandbox(
    request: pytest.FixtureRequest, runner_on: RunnerOn, scripted: ScriptedModel
) -> AsyncIterator[OnSandbox]:
    """The runner on each sandbox in turn, with the demo script: one suite for both."""
    async with runner_on(request.param, scripted.url) as running:
        yield running
