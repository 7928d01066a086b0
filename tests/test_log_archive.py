"""A finished build's log archive (issue 19), on moto's S3 server and on the folder store, with
the gateway and the snapshot service's archiver in this process on real Redis and PostgreSQL:

- the archive of a finished build equals, entry for entry, the feed it had;
- once the feed is removed from Redis, the build's SSE replays the archive with the same ids
  (resuming after ``Last-Event-ID`` too) and ends;
- a build whose feed was flushed before it ended is archived whole, rebuilt from PostgreSQL;
- archiving twice writes once.

The build's events are published as its services would (the runner's ids derived from its
context), and the runner's rows (checkpoints, metered calls) written as the runner writes them.
Each test uses its own Redis server, bucket or folder."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioboto3
import msgspec
import pytest
from pydantic import SecretStr
from sqlalchemy import insert
from typer.testing import CliRunner

from cofounder_cli.main import app as cli
from cofounder_contracts import (
    AgentIterationCompleted,
    BudgetUsage,
    BuildCompleted,
    BuildLogArchived,
    BuildStatus,
    BuildStatusChanged,
    ContextReady,
    Event,
    SnapshotCompleted,
    build_feed_key,
    derived_event_id,
    envelope,
    follow_up,
)
from cofounder_contracts.streams import BUSINESS_EVENTS
from cofounder_db.models import AgentCheckpoint, BudgetLedgerRow
from cofounder_gateway.testing import ADMIN, Running, start_gateway
from cofounder_runtime.connections import connect_redis
from cofounder_runtime.publisher import Publisher
from cofounder_runtime.streamreply import read_entries
from cofounder_snapshot.archiving import ArchiveDeps, on_build_event, read_feed
from cofounder_snapshot.bootstrap import archive_consumer
from cofounder_snapshot.rebuild import first_event_id
from cofounder_snapshot.settings import SnapshotSettings
from cofounder_snapshots.logarchive import ArchiveEntry, archive_key, decode_archive
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration

PROMPT_S = 10


@pytest.fixture(params=["s3", "folder"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The archive settings of one store: a new bucket on moto's S3 server, or a new folder."""
    if request.param == "folder":
        return {"log_archive_dir": str(tmp_path / "archives")}
    endpoint: str = request.getfixturevalue("s3_endpoint_url")
    bucket = f"logs-{uuid.uuid4().hex[:12]}"
    async with aioboto3.Session().client("s3", endpoint_url=endpoint) as client:
        await client.create_bucket(Bucket=bucket)
    return {"log_archive_bucket": bucket, "s3_endpoint_url": endpoint, "log_archive_prefix": "t"}


class Stack:
    """The gateway and the archiver on one Redis and one database."""

    def __init__(self, gateway: Running, deps: ArchiveDeps) -> None:
        self.gateway = gateway
        self.deps = deps
        self.publisher = Publisher(gateway.gw.redis)

    async def stored(self, build_id: str, tier: str = "bootstrapper") -> bytes | None:
        return await self.deps.archive.get(archive_key(tier, build_id))


@pytest.fixture
async def stack(
    own_redis_url: str, migrated_database_url: str, store: dict[str, Any]
) -> AsyncIterator[Stack]:
    async for gateway in start_gateway(own_redis_url, migrated_database_url, **store):
        settings = SnapshotSettings(
            environment="development",
            redis_url=SecretStr(own_redis_url),
            database_url=SecretStr(migrated_database_url),
            consumer_block_ms=100,
            consumer_name="archiver-test",
            database_pool_size=3,
            log_archive_settle_s=0.3,
            log_archive_wait_s=5.0,
            **store,
        )
        archive = settings.log_archive()
        assert archive is not None
        redis = connect_redis(own_redis_url)
        engine = settings.create_engine()
        async with archive:
            deps = ArchiveDeps(
                archive=archive,
                redis=redis,
                engine=engine,
                events=Publisher(redis),
                settle_s=settings.log_archive_settle_s,
                wait_s=settings.log_archive_wait_s,
            )
            consumer = archive_consumer(settings, redis, deps)
            task = asyncio.create_task(consumer.run())
            try:
                yield Stack(gateway, deps)
            finally:
                consumer.stop()
                await task
                await redis.aclose()
                await engine.dispose()


async def _build(gw: Running) -> tuple[str, dict[str, str], ContextReady]:
    """A demo build, started through the API, and the context its assembler would send."""
    demo = (await gw.client.post("/v1/admin/demo", headers=ADMIN)).json()
    user, project = demo["user_id"], demo["project_id"]
    auth = gw.auth(user)
    started = await gw.client.post(f"/v1/projects/{project}/builds", json={}, headers=auth)
    assert started.status_code == 202, started.text
    build_id = started.json()["id"]

    async def queued() -> bool:  # its first event in its feed, as before a real build runs
        feed = await read_feed(gw.gw.redis, build_id)
        return first_event_id(build_id) in {e.event_id for e in feed}

    await eventually(queued, what="the queued status in the build's feed")
    request_id = derived_event_id(build_id, "build.requested")
    context = ContextReady(
        **envelope(
            build_id=build_id,
            project_id=project,
            user_id=user,
            producer="context-assembler",
            causation_id=request_id,
            kind="context.ready",
        ),
        goal="a landing page",
        idea_brief={},
        qna=[],
        tier="bootstrapper",
    )
    return build_id, auth, context


def _work(context: ContextReady) -> list[Event]:
    """The runner's events of a one-turn build, with the ids the runner derives."""
    return [
        BuildStatusChanged(
            **follow_up(context, producer="agent-runner", kind="status:running"),
            status=BuildStatus.RUNNING,
        ),
        BudgetUsage(
            **follow_up(context, producer="agent-runner", kind="usage:1"),
            model="claude-sonnet-5-5",
            input_tokens=1200,
            output_tokens=300,
        ),
        AgentIterationCompleted(
            **follow_up(context, producer="agent-runner", kind="iteration:1"),
            iteration=1,
            tool_calls=2,
            input_tokens=1200,
            output_tokens=300,
            checkpoint_seq=2,
        ),
    ]


def _end(context: ContextReady) -> BuildCompleted:
    return BuildCompleted(
        **follow_up(context, producer="agent-runner", kind="completed"),
        build_version=1,
        preview_url="http://127.0.0.1:5173",
        summary="done",
        iterations=1,
        tool_calls=2,
    )


async def _in_feed(stack: Stack, build_id: str, event_ids: set[str]) -> None:
    async def there() -> bool:
        return event_ids <= {e.event_id for e in await read_feed(stack.gateway.gw.redis, build_id)}

    await eventually(there, what="the events in the build's feed")


async def _wait_archived(stack: Stack, build_id: str) -> BuildLogArchived:
    async def announced() -> bool:
        return bool(await _announcements(stack, build_id))

    await eventually(announced, what="build.log_archived", timeout=30)
    [event] = await _announcements(stack, build_id)
    return event


def _sse(body: str) -> list[tuple[str, str, str]]:
    """(id, event type, data) of every event of a finished stream's body."""
    found = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields.get("id", ""), fields["event"], fields.get("data", "")))
    return found


def _as_sse(entries: list[ArchiveEntry]) -> list[tuple[str, str, str]]:
    return [(e.id, e.type, bytes(e.data).decode()) for e in entries]


async def test_a_finished_build_is_archived_as_its_feed_replayed_once_the_feed_is_gone_and_once(
    stack: Stack, tmp_path: Path
) -> None:
    gw = stack.gateway
    build_id, auth, context = await _build(gw)
    work, end = _work(context), _end(context)
    for event in work:
        await stack.publisher.emit(event)
    await _in_feed(stack, build_id, {e.event_id for e in work})
    await stack.publisher.emit(end)

    announced = await _wait_archived(stack, build_id)
    feed = await read_feed(gw.gw.redis, build_id)
    data = await stack.stored(build_id)
    assert data is not None
    archived = decode_archive(data)
    # Entry for entry: id, type, event id and the very bytes of the data.
    assert [(e.id, e.type, e.event_id, bytes(e.data)) for e in archived] == [
        (e.id, e.type, e.event_id, bytes(e.data)) for e in feed
    ]
    assert archived[0].event_id == first_event_id(build_id)
    assert archived[-1].event_id == end.event_id
    assert {e.source for e in archived} == {"feed"}
    assert (announced.entries, announced.bytes, announced.rebuilt) == (len(feed), len(data), False)
    assert announced.key.endswith(f"logs/bootstrapper/{build_id}.jsonl.gz")
    assert announced.bucket == stack.deps.archive.bucket

    # The feed is gone (expired): the stream replays the archive, same ids, and ends.
    url = f"/v1/builds/{build_id}/events"
    live = _sse((await asyncio.wait_for(gw.client.get(url, headers=auth), PROMPT_S)).text)
    assert await gw.gw.redis.delete(build_feed_key(build_id)) == 1
    replayed = await asyncio.wait_for(gw.client.get(url, headers=auth), PROMPT_S)
    assert replayed.status_code == 200
    assert _sse(replayed.text) == live == _as_sse(archived)
    resumed_after = archived[1].id
    for resume in ({"Last-Event-ID": resumed_after}, {}):
        query = {} if resume else {"after": resumed_after}
        got = await gw.client.get(url, headers={**auth, **resume}, params=query)
        assert _sse(got.text) == _as_sse(archived[2:])

    # The download is the archive; another founder gets 404.
    download = await gw.client.get(f"/v1/builds/{build_id}/log", headers=auth)
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "application/gzip"
    assert download.content == data
    other = await gw.client.post("/v1/admin/demo", headers=ADMIN)
    refused = await gw.client.get(
        f"/v1/builds/{build_id}/log", headers=gw.auth(other.json()["user_id"])
    )
    assert refused.status_code == 404

    # The command line downloads it (the CLI is synchronous: in a thread, beside the gateway).
    token = auth["Authorization"].removeprefix("Bearer ")
    target = tmp_path / "log.jsonl.gz"
    common = ["--token", token, "--gateway-url", str(gw.client.base_url)]
    for args in (["--out", str(target)], []):
        result = await asyncio.to_thread(
            CliRunner().invoke, cli, ["builds", "logs", build_id, *args, *common]
        )
        assert result.exit_code == 0, result.stderr
    assert target.read_bytes() == data
    # (The in-process gateway's log lines land in the captured stdout too: the JSON lines only.)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(x["id"], x["type"], x["event_id"]) for x in lines] == [
        (e.id, e.type, e.event_id) for e in archived
    ]

    # Archiving again (a redelivery, the end once more, with the feed gone now, so a second
    # write would be a rebuilt one) writes nothing and announces the same archive.
    await on_build_event(end, stack.deps)
    assert await stack.stored(build_id) == data
    announcements = await _announcements(stack, build_id)
    assert len({e.event_id for e in announcements}) == 1
    assert {(e.entries, e.bytes, e.rebuilt) for e in announcements} == {
        (len(feed), len(data), False)
    }


async def _announcements(stack: Stack, build_id: str) -> list[BuildLogArchived]:
    """Every ``build.log_archived`` of the build, duplicates included."""
    redis = stack.gateway.gw.redis
    got = read_entries([[BUSINESS_EVENTS.name.encode(), await redis.xrange(BUSINESS_EVENTS.name)]])
    decoded = [
        msgspec.json.decode(f[b"data"], type=BuildLogArchived)
        for _, f in got
        if f and f.get(b"type") == b"build.log_archived"
    ]
    return [e for e in decoded if e.build_id == build_id]


async def _runner_rows(stack: Stack, context: ContextReady) -> None:
    """What the runner writes for the one-turn build: its start and turn checkpoints, and the
    metered call (as the budget service records it)."""
    async with stack.deps.engine.begin() as conn:
        common = {"build_id": context.build_id, "generation": 1, "sandbox_kind": "local"}
        await conn.execute(
            insert(AgentCheckpoint),
            [
                {
                    **common,
                    "seq": 1,
                    "kind": "start",
                    "parts": {"context": msgspec.to_builtins(context), "model": "m"},
                    "iteration": 0,
                    "tool_calls": 0,
                },
                {**common, "seq": 2, "kind": "turn", "parts": {}, "iteration": 1, "tool_calls": 2},
            ],
        )
        await conn.execute(
            insert(BudgetLedgerRow).values(
                event_id=derived_event_id(context.event_id, "usage:1"),
                user_id=context.user_id,
                build_id=context.build_id,
                day="2026-11-30",
                model="claude-sonnet-5-5",
                input_tokens=1200,
                output_tokens=300,
                cache_creation_input_tokens=0,
                cache_read_input_tokens=0,
                cost_micros=100,
            )
        )


async def test_a_build_whose_feed_was_flushed_before_it_ended_is_archived_whole(
    stack: Stack,
) -> None:
    gw = stack.gateway
    build_id, auth, context = await _build(gw)
    work, end = _work(context), _end(context)
    for event in work:
        await stack.publisher.emit(event)
    await _in_feed(stack, build_id, {e.event_id for e in work})
    before_flush = await read_feed(gw.gw.redis, build_id)
    await _runner_rows(stack, context)
    # Redis loses the feed; the end makes a new one that holds the end alone.
    assert await gw.gw.redis.delete(build_feed_key(build_id)) == 1
    await stack.publisher.emit(end)

    announced = await _wait_archived(stack, build_id)
    assert announced.rebuilt
    data = await stack.stored(build_id)
    assert data is not None
    archived = decode_archive(data)
    ids = [e.event_id for e in archived]
    # Every event the lost feed had, and the end, once each, in order, the end last.
    assert {(e.type, e.event_id) for e in before_flush} <= {(e.type, e.event_id) for e in archived}
    assert len(ids) == len(set(ids))
    assert ids[0] == first_event_id(build_id)
    assert ids[-1] == end.event_id
    assert [e.type for e in archived] == [
        "build.status_changed",  # queued (the build's row)
        "build.status_changed",  # assembling (the context)
        "build.status_changed",  # running (the start checkpoint)
        "agent.iteration_completed",  # the turn checkpoint
        "budget.usage",  # the ledger
        "build.completed",  # the new feed's only entry, with its id
    ]
    [kept_end] = await read_feed(gw.gw.redis, build_id)
    assert archived[-1].id == kept_end.id
    assert archived[-1].source == "feed"
    assert [e.source for e in archived[:-1]] == ["postgres"] * (len(archived) - 1)
    assert [e.id for e in archived] == sorted(
        (e.id for e in archived), key=lambda i: tuple(map(int, i.split("-")))
    )

    # Served from the archive once the new feed is gone too, ending at the end.
    assert await gw.gw.redis.delete(build_feed_key(build_id)) == 1
    url = f"/v1/builds/{build_id}/events"
    replayed = await asyncio.wait_for(gw.client.get(url, headers=auth), PROMPT_S)
    assert _sse(replayed.text) == _as_sse(archived)

    # Archived once: the second handling reads it back.
    await on_build_event(end, stack.deps)
    assert await stack.stored(build_id) == data


async def test_archiving_twice_at_once_writes_once(stack: Stack) -> None:
    """Three archivers of one build at once (replicas, redeliveries): one write, one archive,
    one announcement id. The end is handed to them only (not published), so each waits for it
    in the feed in vain and rebuilds the history: the store alone keeps them to one write."""
    build_id, _, context = await _build(stack.gateway)
    end = _end(context)
    writes: list[bool] = []
    real = stack.deps.archive.put_once

    async def counted(key: str, body: bytes) -> bool:
        wrote = await real(key, body)
        writes.append(wrote)
        return wrote

    stack.deps.archive.put_once = counted  # type: ignore[method-assign, assignment]
    try:
        await asyncio.gather(*(on_build_event(end, stack.deps) for _ in range(3)))
    finally:
        stack.deps.archive.put_once = real  # type: ignore[method-assign]
    assert sorted(writes) == [False, False, True]
    data = await stack.stored(build_id)
    assert data is not None
    assert [e.event_id for e in decode_archive(data)] == [first_event_id(build_id), end.event_id]
    announcements = await _announcements(stack, build_id)
    assert len(announcements) == 3
    assert len({e.event_id for e in announcements}) == 1


async def test_the_final_snapshots_answer_is_in_the_archive_when_it_comes_late(
    stack: Stack,
) -> None:
    """S3 slow, or a backlog of snapshots: the answer to the completed build's final snapshot
    reaches the feed well after the feed went quiet. The archive waits for it (up to
    ``wait_s``): the founder's history says whether the last state was stored."""
    build_id, _, context = await _build(stack.gateway)
    end = _end(context)
    request_id = derived_event_id(context.event_id, "snapshot:final")
    answer = SnapshotCompleted(
        build_id=build_id,
        project_id=context.project_id,
        user_id=context.user_id,
        producer="snapshot",
        causation_id=request_id,
        event_id=derived_event_id(request_id, "snapshot.completed"),
        version=1,
        files=3,
        bytes_uploaded=10,
        blobs_uploaded=1,
        duration_ms=5,
    )
    for event in [*_work(context), end]:
        await stack.publisher.emit(event)
    await asyncio.sleep(4 * stack.deps.settle_s)  # the feed has been quiet for long enough
    await stack.publisher.emit(answer)

    await _wait_archived(stack, build_id)
    data = await stack.stored(build_id)
    assert data is not None
    assert decode_archive(data)[-1].event_id == answer.event_id
