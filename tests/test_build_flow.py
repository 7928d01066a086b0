"""Across services: POST → queued → build.requested → context.ready (the context assembler
running), the status visible through GET and SSE; an SSE client that reconnects with
Last-Event-ID misses nothing and sees nothing twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cofounder_context_assembler.bootstrap import build_consumer
from cofounder_context_assembler.handlers import Deps
from cofounder_context_assembler.settings import AssemblerSettings
from cofounder_contracts import (
    ALL_EVENTS,
    AgentIterationCompleted,
    BuildCompleted,
    BuildStatus,
    BuildStatusChanged,
    Codec,
    ContextReady,
    QnA,
    ToolCalled,
)
from cofounder_contracts.streams import AGENT_WORK
from cofounder_gateway.testing import ADMIN, Running, start_gateway
from cofounder_runtime.publisher import Publisher
from cofounder_testing.inprocess import entries
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration
CODEC = Codec(ALL_EVENTS)


async def seed_founder(gw: Running) -> tuple[str, str]:
    user = (
        await gw.client.post(
            "/v1/admin/users",
            headers=ADMIN,
            json={
                "email": f"f-{id(gw)}-{asyncio.get_running_loop().time()}@x.io",
                "tier": "founder",
            },
        )
    ).json()
    project = (
        await gw.client.post(
            "/v1/admin/projects", headers=ADMIN, json={"owner_id": user["id"], "name": "PlantPal"}
        )
    ).json()
    await gw.client.put(
        f"/v1/admin/projects/{project['id']}/idea-brief",
        headers=ADMIN,
        json={"content": {"name": "PlantPal"}},
    )
    await gw.client.post(
        f"/v1/admin/projects/{project['id']}/understanding-sessions",
        headers=ADMIN,
        json={"questions": [{"id": "a", "text": "Old?"}], "answers": {"a": "old"}},
    )
    await gw.client.post(
        f"/v1/admin/projects/{project['id']}/understanding-sessions",
        headers=ADMIN,
        json={
            "questions": [
                {"id": "q1", "text": "Who?"},
                {"id": "q2", "text": "Skipped?"},
                {"id": "q3", "text": "What?"},
            ],
            "answers": {"q3": "Reminders", "q1": "Renters"},
        },
    )
    return user["id"], project["id"]


async def sse_events(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], *, stop_after: int | None = None
) -> list[dict[str, Any]]:
    """Read SSE events until the server closes the stream (or ``stop_after`` events)."""
    got: list[dict[str, Any]] = []
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and current:
                got.append(current)
                current = {}
                if stop_after is not None and len(got) >= stop_after:
                    break
    return got


@pytest.fixture
async def gateway(own_redis_url: str, migrated_database_url: str) -> AsyncIterator[Running]:
    async for running in start_gateway(own_redis_url, migrated_database_url):
        yield running


@pytest.fixture
async def with_assembler(gateway: Running, migrated_database_url: str) -> AsyncIterator[Running]:
    settings = AssemblerSettings(
        environment="development",
        redis_url=gateway.gw.settings.redis_url,
        database_url=migrated_database_url,
        consumer_block_ms=100,
        consumer_name="assembler-test",
    )
    consumer = build_consumer(
        settings,
        gateway.gw.redis,
        Deps(engine=gateway.gw.engine, events=Publisher(gateway.gw.redis)),
    )
    task = asyncio.create_task(consumer.run())
    yield gateway
    consumer.stop()
    await task


async def test_post_to_context_ready_and_status_through_get_and_sse(
    with_assembler: Running,
) -> None:
    gw = with_assembler
    user, project = await seed_founder(gw)
    auth = gw.auth(user)
    started = await gw.client.post(
        f"/v1/projects/{project}/builds", json={"goal": "Ship it"}, headers=auth
    )
    assert started.status_code == 202
    build_id = started.json()["id"]

    async def context() -> list[ContextReady]:
        found = [CODEC.decode(f) for _, f in await entries(gw.gw.redis, AGENT_WORK.name)]
        return [e for e in found if isinstance(e, ContextReady) and e.build_id == build_id]

    async def has_context() -> bool:
        return bool(await context())

    await eventually(has_context, what="context.ready")
    [ready] = await context()
    assert ready.qna == [
        QnA(question="Who?", answer="Renters"),
        QnA(question="What?", answer="Reminders"),
    ]
    assert (ready.idea_brief, ready.tier, ready.goal) == (
        {"name": "PlantPal"},
        "founder",
        "Ship it",
    )

    async def status_is(expected: str) -> bool:
        got = await gw.client.get(f"/v1/builds/{build_id}", headers=auth)
        return bool(got.json()["status"] == expected)

    await eventually(lambda: status_is("assembling"), what="assembling through GET")

    # The runner's side, published directly until the agent runner exists.
    envelope = {
        "build_id": build_id,
        "project_id": project,
        "user_id": user,
        "producer": "agent-runner",
    }
    publisher = Publisher(gw.gw.redis)
    await publisher.emit(BuildStatusChanged(**envelope, status=BuildStatus.RUNNING))
    await publisher.emit(
        ToolCalled(**envelope, iteration=1, tool_use_id="t1", name="bash", input_preview="ls")
    )
    await publisher.emit(AgentIterationCompleted(**envelope, iteration=1, tool_calls=1))

    url = f"/v1/builds/{build_id}/events"
    first = await sse_events(gw.client, url, auth, stop_after=3)
    assert [e["event"] for e in first] == [
        "build.status_changed",
        "build.status_changed",
        "build.status_changed",
    ]
    assert [e["data"]["status"] for e in first] == ["queued", "assembling", "running"]

    stale = BuildStatusChanged(**envelope, status=BuildStatus.ASSEMBLING)
    await publisher.emit(stale)  # stale: ignored by the projection (still on the feed)
    await publisher.emit(
        BuildCompleted(
            **envelope,
            build_version=1,
            preview_url="http://preview.local",
            summary="done",
            iterations=1,
            tool_calls=1,
        )
    )
    # Reconnect after the third event: the rest, nothing twice, closed at the end.
    rest = await sse_events(gw.client, url, {**auth, "Last-Event-ID": first[-1]["id"]})
    assert [e["event"] for e in rest] == [
        "tool.called",
        "agent.iteration_completed",
        "build.status_changed",
        "build.completed",
    ]
    ids = [e["id"] for e in first + rest]
    assert len(ids) == len(set(ids))
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))

    await eventually(lambda: status_is("ready"), what="ready through GET")
    final = (await gw.client.get(f"/v1/builds/{build_id}", headers=auth)).json()
    assert (final["preview_url"], final["build_version"], final["iterations"]) == (
        "http://preview.local",
        1,
        1,
    )
    assert final["finished_at"] is not None
    # A client connecting after the end gets the whole story and the stream closes.
    replay = await sse_events(gw.client, url, auth)
    assert [e["id"] for e in replay] == ids
