"""A build's live feed after Redis lost it (a flush, a restart without persistence, a failover to
a replica whose stream ends earlier): a client whose ``Last-Event-ID`` is ahead of the feed gets
the rebuilt feed's entries instead of silence, a finished build whose feed is gone is summed up
from its row, and an ordinary resume still starts exactly after the id.

Each test deletes and writes only the feed key of the build it made."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from cofounder_contracts import (
    AgentIterationCompleted,
    BuildStatus,
    BuildStatusChanged,
    build_feed_key,
    encode_fields,
)
from cofounder_gateway.testing import ADMIN, Running
from cofounder_runtime.publisher import Publisher
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration

#: How long a test waits for an event that should come at once (an SSE read blocks 15 s before
#: its keep-alive, so silence fails the test well before that).
PROMPT_S = 10


async def _build(gw: Running) -> tuple[str, dict[str, str], dict[str, str]]:
    demo = (await gw.client.post("/v1/admin/demo", headers=ADMIN)).json()
    user, project = demo["user_id"], demo["project_id"]
    auth = gw.auth(user)
    started = await gw.client.post(f"/v1/projects/{project}/builds", json={}, headers=auth)
    assert started.status_code == 202, started.text
    build_id = started.json()["id"]
    envelope = {
        "build_id": build_id,
        "project_id": project,
        "user_id": user,
        "producer": "agent-runner",
    }
    return build_id, auth, envelope


async def _next_event(lines: AsyncIterator[str]) -> tuple[str, str, str]:
    """(event type, id, data) of the next event; comments (keep-alives) are skipped."""
    kind = sse_id = data = ""
    async for line in lines:
        if line.startswith("id: "):
            sse_id = line[4:]
        elif line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and kind:
            return kind, sse_id, data
    raise AssertionError("the stream ended")


def _events(body: str) -> list[tuple[str, str, str]]:
    """(event type, id, data) of every event of a finished stream's body."""
    found = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], fields.get("id", ""), fields.get("data", "")))
    return found


def _rewound() -> float:
    return REGISTRY.get_sample_value("cofounder_gateway_sse_rewound_total") or 0.0


async def _first_event_id(gw: Running, build_id: str, auth: dict[str, str]) -> str:
    """The id of the build's first feed entry (its ``queued`` status), as a client saw it."""
    url = f"/v1/builds/{build_id}/events"
    async with gw.client.stream("GET", url, headers=auth) as response:
        assert response.status_code == 200
        kind, sse_id, _ = await asyncio.wait_for(_next_event(response.aiter_lines()), PROMPT_S)
    assert kind == "build.status_changed"
    return sse_id


def _rebuilt_entries(envelope: dict[str, str]) -> list[dict[bytes, bytes]]:
    """Two feed entries as the projection writes them (type, event id, data)."""
    return [
        encode_fields(BuildStatusChanged(**envelope, status=BuildStatus.RUNNING)),
        encode_fields(AgentIterationCompleted(**envelope, iteration=1, tool_calls=0)),
    ]


async def test_a_client_ahead_of_a_rebuilt_feed_gets_its_entries(gateway: Running) -> None:
    build_id, auth, envelope = await _build(gateway)
    seen = await _first_event_id(gateway, build_id, auth)
    redis, key = gateway.gw.redis, build_feed_key(build_id)
    # Redis lost the feed; the server that took over made it again with a clock behind the old
    # one: every id of the new feed is before the one the client saw last.
    assert await redis.delete(key) == 1
    for n, fields in enumerate(_rebuilt_entries(envelope), 1):
        await redis.xadd(key, fields, id=f"1-{n}")
    before = _rewound()
    url = f"/v1/builds/{build_id}/events"
    async with gateway.client.stream("GET", url, headers={**auth, "Last-Event-ID": seen}) as got:
        assert got.status_code == 200
        lines = got.aiter_lines()
        received = [await asyncio.wait_for(_next_event(lines), PROMPT_S) for _ in range(2)]
    assert [(kind, sse_id) for kind, sse_id, _ in received] == [
        ("build.status_changed", "1-1"),
        ("agent.iteration_completed", "1-2"),
    ]
    assert _rewound() == before + 1


async def test_a_client_of_a_running_build_whose_feed_is_gone_gets_the_new_entries(
    gateway: Running,
) -> None:
    build_id, auth, envelope = await _build(gateway)
    seen = await _first_event_id(gateway, build_id, auth)
    redis, key = gateway.gw.redis, build_feed_key(build_id)
    assert await redis.delete(key) == 1
    before = _rewound()
    url = f"/v1/builds/{build_id}/events"
    async with gateway.client.stream("GET", url, headers={**auth, "Last-Event-ID": seen}) as got:
        assert got.status_code == 200
        lines = got.aiter_lines()

        async def decided() -> bool:  # the stream found no feed and reads from its start
            return _rewound() == before + 1

        await eventually(decided, what="the stream to start from the feed's start")
        # The feed is made again while the client waits, with an id before the client's.
        await redis.xadd(key, _rebuilt_entries(envelope)[0], id="1-1")
        kind, sse_id, _ = await asyncio.wait_for(_next_event(lines), PROMPT_S)
    assert (kind, sse_id) == ("build.status_changed", "1-1")


async def test_a_finished_build_whose_feed_is_gone_is_summed_up_from_its_row(
    gateway: Running,
) -> None:
    build_id, auth, _ = await _build(gateway)
    cancelled = await gateway.client.post(f"/v1/builds/{build_id}/cancel", headers=auth)
    assert cancelled.status_code == 202, cancelled.text
    redis, key = gateway.gw.redis, build_feed_key(build_id)

    async def ended_in_feed() -> bool:  # no later entry makes the feed again after the delete
        entries: Any = await redis.xrange(key)
        return any(b'"status":"cancelled"' in fields[b"data"] for _, fields in entries)

    await eventually(ended_in_feed, what="the cancel in the build's feed")
    assert await redis.delete(key) == 1
    view = (await gateway.client.get(f"/v1/builds/{build_id}", headers=auth)).json()
    url = f"/v1/builds/{build_id}/events"
    for headers in (auth, {**auth, "Last-Event-ID": "1700000000000-0"}):
        # The whole body: the stream ends after the summary.
        response = await asyncio.wait_for(gateway.client.get(url, headers=headers), PROMPT_S)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        [(kind, sse_id, data)] = _events(response.text)
        assert (kind, sse_id) == ("build.summary", "0-1")
        assert json.loads(data) == view
        assert view["status"] == "cancelled"


async def test_an_ordinary_resume_starts_exactly_after_the_id(gateway: Running) -> None:
    build_id, auth, envelope = await _build(gateway)
    publisher = Publisher(gateway.gw.redis)
    url = f"/v1/builds/{build_id}/events"
    before = _rewound()
    async with gateway.client.stream("GET", url, headers=auth) as response:
        lines = response.aiter_lines()
        first = await asyncio.wait_for(_next_event(lines), PROMPT_S)
        await publisher.emit(BuildStatusChanged(**envelope, status=BuildStatus.RUNNING))
        await publisher.emit(AgentIterationCompleted(**envelope, iteration=1, tool_calls=0))
        second, third = [await asyncio.wait_for(_next_event(lines), PROMPT_S) for _ in range(2)]
    assert [e[0] for e in (first, second, third)] == [
        "build.status_changed",
        "build.status_changed",
        "agent.iteration_completed",
    ]
    headers = {**auth, "Last-Event-ID": second[1]}
    async with gateway.client.stream("GET", url, headers=headers) as response:
        resumed = await asyncio.wait_for(_next_event(response.aiter_lines()), PROMPT_S)
    assert resumed == third
    # At the feed's last entry: the next entry, nothing before it.
    headers = {**auth, "Last-Event-ID": third[1]}
    async with gateway.client.stream("GET", url, headers=headers) as response:
        lines = response.aiter_lines()
        await publisher.emit(AgentIterationCompleted(**envelope, iteration=2, tool_calls=1))
        kind, sse_id, data = await asyncio.wait_for(_next_event(lines), PROMPT_S)
    assert (kind, json.loads(data)["iteration"]) == ("agent.iteration_completed", 2)
    assert sse_id not in {first[1], second[1], third[1]}
    assert _rewound() == before
