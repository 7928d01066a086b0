"""The status projection on real PostgreSQL and Redis: counters only grow, whatever order a
build's events are handled in (the consumer runs handlers concurrently; redeliveries are late)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cofounder_contracts import AgentIterationCompleted, BuildCompleted
from cofounder_gateway.projection import ProjectionDeps, on_build_event
from cofounder_gateway.testing import ADMIN, Running, start_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
async def gateway(redis_url: str, migrated_database_url: str) -> AsyncIterator[Running]:
    async for running in start_gateway(redis_url, migrated_database_url):
        yield running


async def test_iterations_and_tool_calls_never_move_backwards(gateway: Running) -> None:
    demo = (await gateway.client.post("/v1/admin/demo", headers=ADMIN)).json()
    auth = gateway.auth(demo["user_id"])
    started = await gateway.client.post(
        f"/v1/projects/{demo['project_id']}/builds", json={}, headers=auth
    )
    build_id = started.json()["id"]
    envelope = {
        "build_id": build_id,
        "project_id": demo["project_id"],
        "user_id": demo["user_id"],
        "producer": "agent-runner",
    }
    deps = ProjectionDeps(engine=gateway.gw.engine, feed=gateway.gw.feed)

    async def counters() -> tuple[int, int]:
        body = (await gateway.client.get(f"/v1/builds/{build_id}", headers=auth)).json()
        return body["iterations"], body["tool_calls"]

    await on_build_event(AgentIterationCompleted(**envelope, iteration=8, tool_calls=12), deps)
    assert await counters() == (8, 12)
    # Iteration 7's event handled after 8's (a slow handler, a redelivery): no step back.
    await on_build_event(AgentIterationCompleted(**envelope, iteration=7, tool_calls=10), deps)
    assert await counters() == (8, 12)
    await on_build_event(AgentIterationCompleted(**envelope, iteration=9, tool_calls=13), deps)
    assert await counters() == (9, 13)
    completed = BuildCompleted(
        **envelope, build_version=1, preview_url=None, summary="ok", iterations=9, tool_calls=13
    )
    await on_build_event(completed, deps)
    await on_build_event(AgentIterationCompleted(**envelope, iteration=5, tool_calls=6), deps)
    assert await counters() == (9, 13)
