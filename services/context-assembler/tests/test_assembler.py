"""build.requested → context.ready on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_context_assembler.handlers import Deps, on_build_requested
from cofounder_contracts import (
    ALL_EVENTS,
    BuildFailed,
    BuildRequested,
    BuildStatusChanged,
    Codec,
    ContextReady,
    Event,
    QnA,
)
from cofounder_db.engine import create_engine
from cofounder_db.models import Artifact, Project, UnderstandingSession, User
from cofounder_runtime.consumer import Consumer
from cofounder_runtime.options import ConsumerOptions
from cofounder_runtime.publisher import Publisher
from cofounder_testing.fixtures import Names
from cofounder_testing.inprocess import entries
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration
CODEC = Codec(ALL_EVENTS)


@dataclass
class PrefixedSink:
    """The real publisher, writing to per-test copies of the contract streams."""

    publisher: Publisher
    prefix: str

    async def publish_many(self, items: list[tuple[str, Event]]) -> object:
        return await self.publisher.publish_many((f"{self.prefix}:{s}", e) for s, e in items)


async def emitted(redis: Redis, names: Names, stream: str) -> list[Event]:
    return [CODEC.decode(fields) for _, fields in await entries(redis, f"{names.prefix}:{stream}")]


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(migrated_database_url)
    yield eng
    await eng.dispose()


def _id() -> str:
    return str(uuid.uuid4())


async def seed(
    engine: AsyncEngine,
    *,
    tier: str = "bootstrapper",
    suspended: str | None = None,
    brief: dict[str, Any] | None = None,
    sessions: Sequence[tuple[list[dict[str, str]], dict[str, str]]] = (),
) -> tuple[str, str]:
    """A user and project with an optional brief and interviews (oldest first)."""
    user_id, project_id = _id(), _id()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    async with engine.begin() as conn:
        await conn.execute(
            insert(User).values(
                id=user_id,
                email=f"{user_id}@example.com",
                tier=tier,
                suspended=suspended is not None,
                suspension_reason=suspended,
                created_at=start,
            )
        )
        await conn.execute(
            insert(Project).values(
                id=project_id,
                owner_id=user_id,
                name="PlantPal",
                stage="understanding",
                created_at=start,
                updated_at=start,
            )
        )
        if brief is not None:
            await conn.execute(
                insert(Artifact).values(
                    id=_id(),
                    project_id=project_id,
                    artifact_type="idea_brief",
                    current_content=brief,
                    version=3,
                    updated_at=start,
                )
            )
        for n, (questions, answers) in enumerate(sessions):
            await conn.execute(
                insert(UnderstandingSession).values(
                    id=_id(),
                    project_id=project_id,
                    questions=questions,
                    answers=answers,
                    created_at=start + timedelta(hours=n),
                )
            )
    return user_id, project_id


def request(user_id: str, project_id: str) -> BuildRequested:
    return BuildRequested(
        build_id=_id(),
        project_id=project_id,
        user_id=user_id,
        producer="gateway",
        goal="Build the MVP described in the brief",
    )


BRIEF = {"name": "PlantPal", "problem": "Houseplants die", "features": ["reminders"]}
OLD = ([{"id": "a", "text": "Old question?"}], {"a": "old answer"})
LATEST = (
    [
        {"id": "q1", "text": "Who is it for?"},
        {"id": "q2", "text": "Budget?"},
        {"id": "q3", "text": "What must v1 do?"},
    ],
    {"q3": "Remind me to water", "q1": "Busy renters", "zz": "stray"},
)


async def test_context_ready_carries_the_brief_and_the_latest_normalised_interview(
    engine: AsyncEngine, redis: Redis, names: Names
) -> None:
    user_id, project_id = await seed(engine, tier="founder", brief=BRIEF, sessions=[OLD, LATEST])
    event = request(user_id, project_id)
    sink = PrefixedSink(Publisher(redis), names.prefix)
    handler = functools.partial(on_build_requested, deps=Deps(engine=engine, events=sink))
    await Publisher(redis).publish(names.stream, event)
    consumer = Consumer(
        redis,
        stream=names.stream,
        group=names.group,
        consumer="c",
        handlers={BuildRequested: handler},
        options=ConsumerOptions(block_ms=100, min_idle_ms=1_000, retry_max_ms=200),
    )
    task = asyncio.create_task(consumer.run())

    async def done() -> bool:
        return len(await emitted(redis, names, "cofounder.agent.work")) == 1

    await eventually(done, what="context.ready")
    consumer.stop()
    await task

    [ready] = await emitted(redis, names, "cofounder.agent.work")
    assert isinstance(ready, ContextReady)
    assert ready.qna == [
        QnA(question="Who is it for?", answer="Busy renters"),
        QnA(question="What must v1 do?", answer="Remind me to water"),
    ]
    assert ready.idea_brief == BRIEF
    assert (ready.tier, ready.suspended, ready.goal) == ("founder", False, event.goal)
    assert (ready.build_id, ready.causation_id) == (event.build_id, event.event_id)
    assert ready.producer == "context-assembler"
    [status] = await emitted(redis, names, "cofounder.builds.events")
    assert isinstance(status, BuildStatusChanged)
    assert status.status == "assembling"


async def test_a_redelivered_request_emits_the_same_event_ids(
    engine: AsyncEngine, redis: Redis, names: Names
) -> None:
    user_id, project_id = await seed(engine, brief=BRIEF, sessions=[LATEST])
    event = request(user_id, project_id)
    deps = Deps(engine=engine, events=PrefixedSink(Publisher(redis), names.prefix))
    await on_build_requested(event, deps)
    await on_build_requested(event, deps)
    first, second = await emitted(redis, names, "cofounder.agent.work")
    # The same event_id, so downstream idempotency absorbs the duplicate; only the time differs.
    assert first.event_id == second.event_id
    assert msgspec.structs.replace(second, occurred_at=first.occurred_at) == first


async def test_no_brief_and_no_interview_give_empty_context(
    engine: AsyncEngine, redis: Redis, names: Names
) -> None:
    user_id, project_id = await seed(engine, suspended="payment overdue")
    await on_build_requested(
        request(user_id, project_id),
        Deps(engine=engine, events=PrefixedSink(Publisher(redis), names.prefix)),
    )
    [ready] = await emitted(redis, names, "cofounder.agent.work")
    assert isinstance(ready, ContextReady)
    assert (ready.idea_brief, ready.qna) == ({}, [])
    assert (ready.suspended, ready.suspension_reason) == (True, "payment overdue")


async def test_a_missing_project_fails_the_build_with_a_clear_reason(
    engine: AsyncEngine, redis: Redis, names: Names
) -> None:
    event = request(_id(), _id())
    await on_build_requested(
        event, Deps(engine=engine, events=PrefixedSink(Publisher(redis), names.prefix))
    )
    [failed] = await emitted(redis, names, "cofounder.builds.events")
    assert isinstance(failed, BuildFailed)
    assert failed.reason == f"Project {event.project_id} was not found; it may have been deleted."
    assert await emitted(redis, names, "cofounder.agent.work") == []


@contextlib.asynccontextmanager
async def switchable_proxy(target_port: int) -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A TCP proxy to PostgreSQL that refuses connections until the yielded event is set."""
    up = asyncio.Event()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not up.is_set():
            writer.close()  # the database is "down": the connection drops at once
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port, up


async def test_a_database_outage_is_retried_not_lost(
    migrated_database_url: str, engine: AsyncEngine, redis: Redis, names: Names
) -> None:
    user_id, project_id = await seed(engine, brief=BRIEF, sessions=[LATEST])
    event = request(user_id, project_id)
    real_port = int(migrated_database_url.split("@127.0.0.1:")[1].split("/", maxsplit=1)[0])
    async with switchable_proxy(real_port) as (port, up):
        flaky = create_engine(migrated_database_url.replace(f":{real_port}/", f":{port}/"))
        attempts = 0

        async def counted(e: BuildRequested) -> None:
            nonlocal attempts
            attempts += 1
            await on_build_requested(
                e, Deps(engine=flaky, events=PrefixedSink(Publisher(redis), names.prefix))
            )

        await Publisher(redis).publish(names.stream, event)
        consumer = Consumer(
            redis,
            stream=names.stream,
            group=names.group,
            consumer="c",
            handlers={BuildRequested: counted},
            options=ConsumerOptions(
                block_ms=100,
                min_idle_ms=2_000,
                retry_base_ms=50,
                retry_max_ms=200,
                max_deliveries=50,
            ),
        )
        task = asyncio.create_task(consumer.run())
        await eventually(lambda: _true(attempts >= 2), what="failed attempts while down")
        up.set()  # the database is back

        async def ready() -> bool:
            return len(await emitted(redis, names, "cofounder.agent.work")) == 1

        # A deadline, not a wait: the retry comes within the backoff, later on a loaded machine.
        await eventually(ready, what="context.ready after the outage", timeout=60)
        consumer.stop()
        await task
        await flaky.dispose()
    assert await redis.xlen(names.stream + ".dlq") == 0
    summary = await redis.xpending(names.stream, names.group)
    assert summary["pending"] == 0


async def _true(value: bool) -> bool:
    return value
