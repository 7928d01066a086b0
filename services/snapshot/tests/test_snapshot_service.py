"""The snapshot service's handler on real Redis, moto's S3 server and local sandboxes: every
request is answered (stored, skipped when off, failed with the reason), and a redelivery does
not store a second version."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aioboto3
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
)
from cofounder_contracts.streams import BUILD_EVENTS
from cofounder_runtime.publisher import Publisher
from cofounder_runtime.streamreply import read_entries
from cofounder_sandbox.local import LocalSandbox, LocalSandboxes
from cofounder_snapshot.handlers import SnapshotDeps, on_snapshot_requested
from cofounder_snapshots.store import S3Store

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

        gone = _request(box)
        await box.kill()
        await on_snapshot_requested(gone, deps)
        failed = await _answers(redis, gone)
        assert isinstance(failed[0], SnapshotFailed)
        assert "was killed" in failed[0].reason

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
