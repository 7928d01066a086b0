"""A build's feed that lacks its end because the gateway's projection is behind (a burst, a
restart, a dead replica's entries waiting to be claimed) is late, not lost: the archiver waits
for it instead of writing, once and for good, a history rebuilt without the feed's tool events.
Past the lag limit, or once the projection has applied everything, a feed still without its
end is taken as lost and rebuilt."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_contracts import BuildCompleted, envelope
from cofounder_contracts.streams import BUILD_EVENTS, BUSINESS_EVENTS, GATEWAY
from cofounder_db.engine import create_engine
from cofounder_db.models import Build, Project, User
from cofounder_runtime.connections import connect_redis
from cofounder_runtime.outages import is_outage
from cofounder_runtime.publisher import Publisher
from cofounder_snapshot import archiving
from cofounder_snapshot.archiving import (
    ArchiveDeps,
    ArchiveInProgress,
    FeedBehind,
    on_build_event,
)
from cofounder_snapshot.bootstrap import archive_consumer
from cofounder_snapshot.settings import SnapshotSettings
from cofounder_snapshots.logarchive import (
    FolderArchive,
    archive_key,
    decode_archive,
    encode_archive,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def redis(own_redis_url: str) -> AsyncIterator[Redis]:
    client = connect_redis(own_redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def deps(engine: AsyncEngine, redis: Redis, tmp_path: Path) -> ArchiveDeps:
    """The archiver's, on a folder store, with short waits."""
    return ArchiveDeps(
        archive=FolderArchive(tmp_path / "archives"),
        redis=redis,
        engine=engine,
        events=Publisher(redis),
        settle_s=0.1,
        wait_s=0.3,
    )


async def _ended_build(engine: AsyncEngine) -> BuildCompleted:
    user, project, build = (str(uuid.uuid4()) for _ in range(3))
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(insert(User).values(id=user, email=f"{user}@x.test"))
        await conn.execute(insert(Project).values(id=project, owner_id=user, name="p"))
        await conn.execute(
            insert(Build).values(
                id=build, project_id=project, user_id=user, status="ready", goal="an app",
                tier="bootstrapper", created_at=now, status_changed_at=now, finished_at=now,
            )
        )  # fmt: skip
    return BuildCompleted(
        **envelope(
            build_id=build, project_id=project, user_id=user, producer="agent-runner",
            kind="completed",
        ),
        build_version=1, preview_url=None, summary="done", iterations=1, tool_calls=1,
    )  # fmt: skip


async def test_a_feed_behind_its_projection_is_waited_for_not_rebuilt(
    deps: ArchiveDeps, engine: AsyncEngine, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    end = await _ended_build(engine)
    key = archive_key("bootstrapper", end.build_id)
    # The end is in the stream; the projection's group has not applied it (nor its feed).
    await redis.xgroup_create(BUILD_EVENTS.name, GATEWAY, id="0", mkstream=True)
    await deps.events.emit(end)

    with pytest.raises(FeedBehind) as behind:
        await on_build_event(end, deps)
    assert is_outage(behind.value)  # waited out by the consumer, not counted as a failure
    assert await deps.archive.get(key) is None  # nothing written for good

    # Read and not acknowledged (a replica died holding it): still behind.
    [[_, [_read]]] = await redis.xreadgroup(GATEWAY, "dead", {BUILD_EVENTS.name: ">"})
    with pytest.raises(FeedBehind):
        await on_build_event(end, deps)

    # Past the lag limit, a late feed is taken as lost.
    monkeypatch.setattr(archiving, "FEED_LAG_LIMIT_S", 0.0)
    await on_build_event(end, deps)
    data = await deps.archive.get(key)
    assert data is not None
    assert {e.source for e in decode_archive(data)} == {"postgres"}


async def test_a_feed_without_its_end_once_the_projection_caught_up_is_rebuilt(
    deps: ArchiveDeps, engine: AsyncEngine, redis: Redis
) -> None:
    end = await _ended_build(engine)
    await deps.events.emit(end)
    # The projection applied everything, and the feed still lacks the end: Redis lost it.
    await redis.xgroup_create(BUILD_EVENTS.name, GATEWAY, id="$", mkstream=True)
    await on_build_event(end, deps)
    data = await deps.archive.get(archive_key("bootstrapper", end.build_id))
    assert data is not None
    assert decode_archive(data)[-1].event_id == end.event_id


async def test_an_archive_another_replica_is_still_writing_is_announced_once_it_is_there(
    deps: ArchiveDeps, engine: AsyncEngine, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3 answers a conditional write racing another with 409, and the other's object is not
    # readable yet: announcing this replica's own bytes would give the event id other contents.
    end = await _ended_build(engine)
    key = archive_key("bootstrapper", end.build_id)

    async def lost_the_race(_key: str, _data: bytes) -> bool:
        return False

    monkeypatch.setattr(deps.archive, "put_once", lost_the_race)
    with pytest.raises(ArchiveInProgress) as in_progress:
        await on_build_event(end, deps)
    assert is_outage(in_progress.value)
    assert not await redis.exists(BUSINESS_EVENTS.name)  # nothing announced

    monkeypatch.undo()
    assert await deps.archive.put_once(key, encode_archive([]))  # theirs lands
    await on_build_event(end, deps)
    [(_, fields)] = await redis.xrange(BUSINESS_EVENTS.name)
    announced = msgspec.json.decode(fields[b"data"])
    assert announced["entries"] == 0  # theirs (empty), not this replica's rebuilt history


async def _archived_by_the_consumer(
    deps: ArchiveDeps,
    own_redis_url: str,
    migrated_database_url: str,
    build_id: str,
    *,
    within: float,
) -> bytes | None:
    """Run the archiver's own consumer (it knows the end's entry id) until the archive of
    ``build_id`` is there, or ``within`` seconds have passed."""
    settings = SnapshotSettings(
        environment="development",
        redis_url=SecretStr(own_redis_url),
        database_url=SecretStr(migrated_database_url),
        consumer_block_ms=100,
        consumer_name="archiver",
    )
    consumer = archive_consumer(settings, deps.redis, deps)
    task = asyncio.create_task(consumer.run())
    key = archive_key("bootstrapper", build_id)
    try:
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            if (data := await deps.archive.get(key)) is not None:
                return data
            await asyncio.sleep(0.1)
        return None
    finally:
        consumer.stop()
        await task


async def test_only_the_ends_own_entry_counts_not_the_projections_other_work(
    deps: ArchiveDeps,
    engine: AsyncEngine,
    redis: Redis,
    own_redis_url: str,
    migrated_database_url: str,
) -> None:
    # Under load the projection always has entries in hand; what matters is whether it has
    # applied this end. Applied (and the feed still without it: Redis lost it), the history is
    # rebuilt at once, not after the lag limit; not applied yet, it is waited for.
    await redis.xgroup_create(BUILD_EVENTS.name, GATEWAY, id="0", mkstream=True)
    other = await _ended_build(engine)
    end = await _ended_build(engine)
    await deps.events.emit(other)  # an entry the projection holds and has not acked
    await deps.events.emit(end)
    [[_, read]] = await redis.xreadgroup(GATEWAY, "p", {BUILD_EVENTS.name: ">"}, count=1)
    assert [fields[b"event_id"].decode() for _, fields in read] == [other.event_id]
    # The end not delivered to the projection yet: waited for.
    assert (
        await _archived_by_the_consumer(
            deps, own_redis_url, migrated_database_url, end.build_id, within=2.0
        )
        is None
    )
    # Delivered and acked (the other entry still pending): rebuilt now.
    [[_, [(end_entry, _)]]] = await redis.xreadgroup(GATEWAY, "p", {BUILD_EVENTS.name: ">"})
    await redis.xack(BUILD_EVENTS.name, GATEWAY, end_entry)
    data = await _archived_by_the_consumer(
        deps, own_redis_url, migrated_database_url, end.build_id, within=15.0
    )
    assert data is not None
    assert {e.source for e in decode_archive(data)} == {"postgres"}
