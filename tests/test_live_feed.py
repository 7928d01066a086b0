"""A build's live feed (SSE) stays open: through a quiet stretch longer than redis-py's default
5 s socket timeout, through a Redis failure (a ``retry:`` hint, never a traceback), and one
founder's streams cannot take every connection (429)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from cofounder_contracts import AgentIterationCompleted, BuildStatus, BuildStatusChanged
from cofounder_gateway.feed import Feed
from cofounder_gateway.testing import ADMIN, Running, start_gateway
from cofounder_runtime.connections import connect_redis
from cofounder_runtime.publisher import Publisher
from cofounder_testing.servers import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def gateway(own_redis_url: str, migrated_database_url: str) -> AsyncIterator[Running]:
    async for running in start_gateway(
        own_redis_url, migrated_database_url, sse_max_streams_per_user=2
    ):
        yield running


async def _build(gw: Running) -> tuple[str, dict[str, str], dict[str, str]]:
    demo = (await gw.client.post("/v1/admin/demo", headers=ADMIN)).json()
    user, project = demo["user_id"], demo["project_id"]
    auth = gw.auth(user)
    started = await gw.client.post(f"/v1/projects/{project}/builds", json={}, headers=auth)
    assert started.status_code == 202
    envelope = {
        "build_id": started.json()["id"],
        "project_id": project,
        "user_id": user,
        "producer": "agent-runner",
    }
    return started.json()["id"], auth, envelope


async def _next_event(lines: AsyncIterator[str]) -> tuple[str, str]:
    """(event type, id) of the next event; comments (keep-alives) are skipped."""
    kind = sse_id = ""
    async for line in lines:
        if line.startswith("id: "):
            sse_id = line[4:]
        elif line.startswith("event: "):
            kind = line[7:]
        elif not line and kind:
            return kind, sse_id
    raise AssertionError("the stream ended")


async def test_a_quiet_stretch_longer_than_five_seconds_does_not_cut_the_feed(
    gateway: Running,
) -> None:
    build_id, auth, envelope = await _build(gateway)
    publisher = Publisher(gateway.gw.redis)
    url = f"/v1/builds/{build_id}/events"
    async with gateway.client.stream("GET", url, headers=auth) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        assert (await _next_event(lines))[0] == "build.status_changed"  # queued
        # Nothing happens for longer than redis-py 8's default socket timeout (5 s), as during
        # a long model call or npm install: the read in flight must outlive it.
        await asyncio.sleep(7)
        await publisher.emit(BuildStatusChanged(**envelope, status=BuildStatus.RUNNING))
        await publisher.emit(AgentIterationCompleted(**envelope, iteration=1, tool_calls=0))
        seen = [await asyncio.wait_for(_next_event(lines), 20) for _ in range(2)]
    assert [kind for kind, _ in seen] == ["build.status_changed", "agent.iteration_completed"]


async def test_a_redis_failure_ends_the_stream_with_a_retry_hint(
    gateway: Running, caplog: pytest.LogCaptureFixture
) -> None:
    build_id, auth, _ = await _build(gateway)
    dead = connect_redis(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    broken = Feed(gateway.gw.redis, max_len=100, reader=dead)
    real = gateway.gw.feed
    object.__setattr__(gateway.gw, "feed", broken)
    try:
        response = await gateway.client.get(f"/v1/builds/{build_id}/events", headers=auth)
    finally:
        object.__setattr__(gateway.gw, "feed", real)
        await broken.close()
    assert response.status_code == 200
    assert "retry: 2000" in response.text
    assert "Traceback" not in caplog.text


async def test_one_founder_cannot_hold_more_than_their_streams(gateway: Running) -> None:
    build_id, auth, _ = await _build(gateway)
    url = f"/v1/builds/{build_id}/events"
    async with (
        gateway.client.stream("GET", url, headers=auth) as one,
        gateway.client.stream("GET", url, headers=auth) as two,
    ):
        assert (one.status_code, two.status_code) == (200, 200)
        third = await gateway.client.get(url, headers=auth)
        assert third.status_code == 429
        assert third.headers["content-type"].startswith("application/problem+json")
        assert third.json()["type"] == "too_many_streams"
        # Another founder is not affected.
        other_id, other_auth, _ = await _build(gateway)
        async with gateway.client.stream(
            "GET", f"/v1/builds/{other_id}/events", headers=other_auth
        ) as theirs:
            assert theirs.status_code == 200
    # Closed streams give their room back.
    async with gateway.client.stream("GET", url, headers=auth) as again:
        assert again.status_code == 200


async def test_blocking_reads_outlive_the_default_socket_timeout(redis_url: str) -> None:
    redis: Redis = connect_redis(redis_url, longest_block_ms=6_000)
    try:
        key = f"test-block-{free_port()}"
        started = asyncio.get_running_loop().time()
        reply = await redis.xread({key: "$"}, block=6_000)  # nothing comes: a 6 s wait
        assert reply in (None, [], {})
        assert asyncio.get_running_loop().time() - started >= 5.5
    finally:
        await redis.aclose()
