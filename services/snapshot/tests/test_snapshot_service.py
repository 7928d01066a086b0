"""The snapshot service's handler on real Redis, moto's S3 server and local sandboxes: every
request is answered (stored, skipped when off, failed with the reason), and a redelivery does
not store a second version."""

from __future__ import annotations

import asyncio
import functools
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aioboto3
import msgspec
import pytest
from redis.asyncio import Redis

from cofounder_contracts import (
    ALL_EVENTS,
    Codec,
    Event,
    SandboxKind,
    SnapshotCompleted,
    SnapshotFailed,
    SnapshotRequested,
    encode_fields,
)
from cofounder_contracts.streams import BUILD_EVENTS
from cofounder_runtime.consumer import Consumer
from cofounder_runtime.publisher import Publisher
from cofounder_runtime.streamreply import read_entries
from cofounder_sandbox.local import LocalSandbox, LocalSandboxes
from cofounder_snapshot.handlers import SnapshotDeps, on_snapshot_requested
from cofounder_snapshots.store import LocalStore, S3Store
from cofounder_testing.fixtures import Names
from cofounder_testing.inprocess import FAST
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration

CODEC = Codec(ALL_EVENTS)


@pytest.fixture
async def bucket(s3_endpoint_url: str) -> str:
    name = f"svc-{uuid.uuid4().hex[:12]}"
    async with aioboto3.Session().client("s3", endpoint_url=s3_endpoint_url) as client:
        await client.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[tuple[LocalSandboxes, LocalSandbox]]:
    sandboxes = LocalSandboxes(tmp_path / "sandboxes", isolation="unsafe-none")
    box = await sandboxes.create(build_id=str(uuid.uuid4()), metadata={})
    (box.workspace / "app.py").write_text("print('hi')\n")
    (box.workspace / ".env").write_text("SECRET=1\n")
    yield sandboxes, box
    await box.kill()


def _request(box: LocalSandbox) -> SnapshotRequested:
    return SnapshotRequested(
        build_id=str(uuid.uuid4()),
        project_id=str(uuid.uuid4()),
        user_id=str(uuid.uuid4()),
        producer="agent-runner",
        sandbox_kind=SandboxKind.LOCAL,
        sandbox_id=box.id,
    )


async def _answers(redis: Redis, request: SnapshotRequested) -> list[Event]:
    entries = read_entries([[BUILD_EVENTS.name.encode(), await redis.xrange(BUILD_EVENTS.name)]])
    events = [CODEC.decode(f) for _, f in entries if f]
    return [e for e in events if e.causation_id == request.event_id]


async def test_requests_are_stored_once_skipped_when_off_and_failed_with_a_reason(
    redis: Redis, s3_endpoint_url: str, bucket: str, sandbox: tuple[LocalSandboxes, LocalSandbox]
) -> None:
    sandboxes, box = sandbox
    events = Publisher(redis)
    async with S3Store(bucket, endpoint_url=s3_endpoint_url) as store:
        deps = SnapshotDeps(store=store, sandboxes={"local": sandboxes}, events=events)
        request = _request(box)
        await on_snapshot_requested(request, deps)
        await on_snapshot_requested(request, deps)  # redelivered
        answers = await _answers(redis, request)
        assert [type(a) for a in answers] == [SnapshotCompleted, SnapshotCompleted]
        assert answers[0].event_id == answers[1].event_id  # the same answer, not a new version
        done = answers[0]
        assert isinstance(done, SnapshotCompleted)
        assert (done.version, done.files, done.blobs_uploaded, done.skipped) == (1, 1, 1, False)
        assert await store.versions(request.project_id, request.build_id) == [1]
        manifest = await store.get_manifest(request.project_id, request.build_id, 1)
        assert list(manifest.files) == ["app.py"]  # the .env never leaves the sandbox

        # A killed local sandbox's files are still read (a build's end may kill it before its
        # final snapshot); one whose folder is gone is answered as failed.
        after_kill = _request(box)
        await box.kill()
        await on_snapshot_requested(after_kill, deps)
        assert isinstance((await _answers(redis, after_kill))[0], SnapshotCompleted)
        gone = _request(box)
        shutil.rmtree(box.home)
        await on_snapshot_requested(gone, deps)
        failed = await _answers(redis, gone)
        assert isinstance(failed[0], SnapshotFailed)
        assert "does not exist" in failed[0].reason

    off = _request(box)
    await on_snapshot_requested(
        off, SnapshotDeps(store=None, sandboxes={"local": sandboxes}, events=events)
    )
    skipped = await _answers(redis, off)
    assert isinstance(skipped[0], SnapshotCompleted)
    assert skipped[0].skipped
    assert skipped[0].skipped_reason is not None
    assert "PROJECT_SNAPSHOT_BUCKET" in skipped[0].skipped_reason


async def test_an_unreachable_s3_is_answered_as_failed_and_lists_no_version(
    redis: Redis, sandbox: tuple[LocalSandboxes, LocalSandbox]
) -> None:
    sandboxes, box = sandbox
    async with S3Store(
        "nowhere", endpoint_url="http://127.0.0.1:1", attempts=2, connect_timeout_s=0.2
    ) as dead:
        deps = SnapshotDeps(store=dead, sandboxes={"local": sandboxes}, events=Publisher(redis))
        request = _request(box)
        await on_snapshot_requested(request, deps)
    answers = await _answers(redis, request)
    assert len(answers) == 1
    assert isinstance(answers[0], SnapshotFailed)
    assert "nowhere" in answers[0].reason


class _PausingStore(LocalStore):
    """A folder store that holds one snapshot still right after it read the project's index
    (the moment a prune of a sibling build could take a blob that snapshot counts on)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.paused = asyncio.Event()
        self.go_on = asyncio.Event()
        self.pause_next = False

    async def read_index(self, project_id: str) -> set[str]:
        known = await super().read_index(project_id)
        if self.pause_next:
            self.pause_next = False
            self.paused.set()
            await self.go_on.wait()
        return known


async def test_a_prune_never_deletes_a_blob_a_sibling_build_s_new_manifest_uses(
    redis: Redis, tmp_path: Path
) -> None:
    sandboxes = LocalSandboxes(tmp_path / "sandboxes", isolation="unsafe-none")
    project, user = str(uuid.uuid4()), str(uuid.uuid4())
    older = await sandboxes.create(build_id=str(uuid.uuid4()), metadata={})
    newer = await sandboxes.create(build_id=str(uuid.uuid4()), metadata={})
    (older.workspace / "shared.py").write_text("shared = 1\n")
    (newer.workspace / "shared.py").write_text("shared = 1\n")  # the same blob
    store = _PausingStore(tmp_path / "store")
    deps = SnapshotDeps(
        store=store,
        sandboxes={"local": sandboxes},
        events=Publisher(redis),
        keep_versions=1,
        redis=redis,
    )

    def request(box: LocalSandbox, build: str) -> SnapshotRequested:
        return SnapshotRequested(
            build_id=build, project_id=project, user_id=user, producer="agent-runner",
            sandbox_kind=SandboxKind.LOCAL, sandbox_id=box.id,
        )  # fmt: skip

    build_a, build_b = str(uuid.uuid4()), str(uuid.uuid4())
    await on_snapshot_requested(request(older, build_a), deps)  # a v1 uses the shared blob
    (older.workspace / "shared.py").unlink()
    (older.workspace / "other.py").write_text("other = 2\n")
    # b's snapshot reads the index (the shared blob is known: it will not upload it) and stops;
    # a's next snapshot, with keep=1, prunes a's v1, the shared blob's only user so far.
    store.pause_next = True
    b_task = asyncio.create_task(on_snapshot_requested(request(newer, build_b), deps))
    await asyncio.wait_for(store.paused.wait(), 10)
    a_task = asyncio.create_task(on_snapshot_requested(request(older, build_a), deps))
    await asyncio.sleep(0.5)  # a's prune has had every chance to run
    store.go_on.set()
    await asyncio.wait_for(asyncio.gather(a_task, b_task), 30)

    blobs = await store.list_blobs(project)
    for build in (build_a, build_b):
        for version in await store.versions(project, build):
            manifest = await store.get_manifest(project, build, version)
            missing = {m.sha256 for m in manifest.files.values()} - blobs
            assert not missing, f"{build} v{version} references deleted blobs {missing}"
    assert await store.versions(project, build_a) == [2]
    assert await store.versions(project, build_b) == [1]


async def test_a_request_whose_project_id_is_a_path_is_dead_lettered_and_writes_nothing(
    redis: Redis, names: Names, tmp_path: Path, sandbox: tuple[LocalSandboxes, LocalSandbox]
) -> None:
    """``project_id`` becomes a path of the store: one that is not an id never reaches the
    handler (it would write outside the store's folder); the consumer dead-letters it with the
    reason and goes on."""
    sandboxes, box = sandbox
    root = tmp_path / "snapshots"
    deps = SnapshotDeps(
        store=LocalStore(root / "store"), sandboxes={"local": sandboxes}, events=Publisher(redis)
    )
    consumer = Consumer(
        redis,
        stream=names.stream,
        group=names.group,
        consumer="snapshot-1",
        handlers={SnapshotRequested: functools.partial(on_snapshot_requested, deps=deps)},
        options=FAST,
    )
    await consumer.ensure_group()
    task = asyncio.create_task(consumer.run())
    escape = msgspec.structs.replace(_request(box), project_id="../../escape")
    good = _request(box)
    try:
        await redis.xadd(names.stream, encode_fields(escape))
        await redis.xadd(names.stream, encode_fields(good))

        async def settled() -> bool:
            return await redis.xlen(names.stream + ".dlq") == 1 and bool(
                await _answers(redis, good)
            )

        await eventually(settled, what="the escape dead-lettered and the good request stored")
    finally:
        consumer.stop()
        await task
    dead = read_entries([[b"dlq", await redis.xrange(names.stream + ".dlq")]])
    [(_, fields)] = dead
    assert fields is not None
    assert fields[b"event_id"] == escape.event_id.encode()
    assert b"$.project_id" in fields[b"dlq.error"], fields[b"dlq.error"]
    assert sorted(p.name for p in root.iterdir()) == ["store"]  # nothing beside the store
    assert await _answers(redis, escape) == []
    assert isinstance((await _answers(redis, good))[0], SnapshotCompleted)
