"""The status projection on real PostgreSQL and Redis: counters only grow, whatever order a
build's events are handled in (the consumer runs handlers concurrently; redeliveries are late);
feeds only for builds that exist, each with a TTL; counts beyond the contract dead-lettered."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from cofounder_contracts import (
    AgentIterationCompleted,
    BudgetUsage,
    BudgetWarning,
    BuildCompleted,
    BuildStatus,
    BuildStatusChanged,
    ToolCalled,
    build_feed_key,
    encode_fields,
)
from cofounder_contracts.streams import BUDGET_USAGE
from cofounder_db.models import Build
from cofounder_gateway.projection import (
    ProjectionDeps,
    on_budget_signal,
    on_build_event,
    on_usage,
)
from cofounder_gateway.testing import ADMIN, Running, start_gateway
from cofounder_runtime.streamreply import read_entries
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def gateway(own_redis_url: str, migrated_database_url: str) -> AsyncIterator[Running]:
    async for running in start_gateway(own_redis_url, migrated_database_url):
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


async def _started_build(gateway: Running) -> tuple[dict[str, str], dict[str, str]]:
    """A queued build: (its envelope, the owner's auth headers)."""
    demo = (await gateway.client.post("/v1/admin/demo", headers=ADMIN)).json()
    auth = gateway.auth(demo["user_id"])
    started = await gateway.client.post(
        f"/v1/projects/{demo['project_id']}/builds", json={}, headers=auth
    )
    assert started.status_code == 202, started.text
    envelope = {
        "build_id": started.json()["id"],
        "project_id": demo["project_id"],
        "user_id": demo["user_id"],
        "producer": "agent-runner",
    }
    return envelope, auth


def _unknown_builds_counted(event_type: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "cofounder_gateway_events_for_unknown_builds_total", {"type": event_type}
        )
        or 0.0
    )


async def test_events_of_a_build_with_no_row_make_no_feed_key(gateway: Running) -> None:
    """No row, no feed: the event is settled (counted, logged; the consumer acks it), and
    nothing is left in Redis for it."""
    deps = ProjectionDeps(engine=gateway.gw.engine, feed=gateway.gw.feed)
    redis = gateway.gw.redis
    envelope = {
        "build_id": str(uuid.uuid4()),
        "project_id": str(uuid.uuid4()),
        "user_id": str(uuid.uuid4()),
        "producer": "agent-runner",
    }
    events: list[Any] = [
        ToolCalled(**envelope, iteration=1, tool_use_id="toolu_1", name="bash", input_preview=""),
        BudgetUsage(**envelope, model="m", input_tokens=10, output_tokens=1),
        BudgetWarning(**envelope, day=datetime.now(UTC).date(), spent_micros=8, budget_micros=10),
    ]
    before = {e.type: _unknown_builds_counted(e.type) for e in events}
    await on_build_event(events[0], deps)
    await on_usage(events[1], deps)
    await on_budget_signal(events[2], deps)
    assert not await redis.exists(build_feed_key(envelope["build_id"]))
    for event in events:
        assert _unknown_builds_counted(event.type) == before[event.type] + 1


async def test_every_feed_key_expires_and_a_day_after_the_build_ends(gateway: Running) -> None:
    deps = ProjectionDeps(engine=gateway.gw.engine, feed=gateway.gw.feed)
    redis = gateway.gw.redis
    settings = gateway.gw.settings
    after_end_ms = settings.feed_ttl_after_end_s * 1000
    idle_ms = settings.feed_idle_ttl_s * 1000
    assert idle_ms > after_end_ms

    async def ttl_of(envelope: dict[str, str]) -> int:
        return int(await redis.pttl(build_feed_key(envelope["build_id"])))

    # A running build's feed lives the idle TTL, renewed by each entry.
    running, _ = await _started_build(gateway)
    await on_build_event(AgentIterationCompleted(**running, iteration=1, tool_calls=1), deps)
    assert after_end_ms < await ttl_of(running) <= idle_ms
    await redis.pexpire(build_feed_key(running["build_id"]), idle_ms - 60_000)
    await on_usage(BudgetUsage(**running, model="m", input_tokens=5, output_tokens=1), deps)
    assert idle_ms - 60_000 < await ttl_of(running) <= idle_ms  # renewed

    # The end caps it at a day, in the same script as the entry that ends the build...
    completed = BuildCompleted(
        **running, build_version=1, preview_url=None, summary="ok", iterations=1, tool_calls=1
    )
    await on_build_event(completed, deps)
    assert after_end_ms - 60_000 < await ttl_of(running) <= after_end_ms
    # ...and no late entry raises it again...
    await redis.pexpire(build_feed_key(running["build_id"]), 5_000)
    await on_build_event(AgentIterationCompleted(**running, iteration=2, tool_calls=2), deps)
    await on_usage(BudgetUsage(**running, model="m", input_tokens=5, output_tokens=1), deps)
    assert 0 < await ttl_of(running) <= 5_000
    # ...nor makes a feed that lives longer once the old one is gone (the row says it ended).
    await redis.delete(build_feed_key(running["build_id"]))
    await on_build_event(AgentIterationCompleted(**running, iteration=3, tool_calls=3), deps)
    assert after_end_ms - 60_000 < await ttl_of(running) <= after_end_ms

    # A cancel (the row is written by the API; its status event reaches the feed later).
    cancelled, auth = await _started_build(gateway)
    await on_build_event(AgentIterationCompleted(**cancelled, iteration=1, tool_calls=1), deps)
    assert await ttl_of(cancelled) > after_end_ms
    response = await gateway.client.post(f"/v1/builds/{cancelled['build_id']}/cancel", headers=auth)
    assert response.status_code in (200, 202), response.text

    async def capped() -> bool:  # the relay publishes the cancel's status event to the projection
        return 0 < await ttl_of(cancelled) <= after_end_ms

    await eventually(capped, what="the cancelled build's feed capped at the after-end TTL")
    # A status event that ends the build caps its feed even when the state machine ignores it.
    stale = BuildStatusChanged(**cancelled, status=BuildStatus.FAILED, reason="late")
    await redis.pexpire(build_feed_key(cancelled["build_id"]), idle_ms)
    await on_build_event(stale, deps)
    assert 0 < await ttl_of(cancelled) <= after_end_ms


async def test_usage_beyond_any_model_call_is_dead_lettered_by_the_projection(
    gateway: Running,
) -> None:
    """The contract bounds tokens: the projection refuses at decode the very entry the budget
    service refuses (10^12 input tokens), instead of adding it to the build."""
    envelope, auth = await _started_build(gateway)
    redis = gateway.gw.redis
    absurd = BudgetUsage(**envelope, model="m", input_tokens=10**12, output_tokens=1)
    fine = BudgetUsage(**envelope, model="m", input_tokens=1_000, output_tokens=10)
    await redis.xadd(BUDGET_USAGE.name, encode_fields(absurd))
    await redis.xadd(BUDGET_USAGE.name, encode_fields(fine))

    async def settled() -> bool:
        body = (await gateway.client.get(f"/v1/builds/{envelope['build_id']}", headers=auth)).json()
        return body["input_tokens"] == 1_000 and await redis.xlen(BUDGET_USAGE.dlq) >= 1

    await eventually(settled, what="the good usage counted and the absurd one dead-lettered")
    dead = read_entries([[b"dlq", await redis.xrange(BUDGET_USAGE.dlq)]])
    [fields] = [f for _, f in dead if f and f[b"event_id"] == absurd.event_id.encode()]
    assert b"<= 5000000 - at `$.input_tokens`" in fields[b"dlq.error"], fields[b"dlq.error"]
    async with gateway.gw.engine.connect() as conn:
        tokens = await conn.scalar(
            select(Build.input_tokens).where(Build.id == envelope["build_id"])
        )
    assert tokens == 1_000
    feed = await redis.xrange(build_feed_key(envelope["build_id"]))
    assert absurd.event_id.encode() not in {f[b"event_id"] for _, f in feed}
