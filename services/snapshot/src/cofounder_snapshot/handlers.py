"""``snapshot.requested`` → a stored version (``snapshot.completed``) or ``snapshot.failed``.

Every request is answered: skipped when snapshots are off, failed (with the reason) when the
sandbox is gone or the store keeps failing. The build goes on either way. Event ids derive from
the request's, and the manifest records the request, so a redelivery re-answers the same version
instead of storing another.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import structlog
from redis.asyncio import Redis

from cofounder_contracts import (
    SnapshotCompleted,
    SnapshotFailed,
    SnapshotRequested,
    follow_up,
)
from cofounder_contracts.keys import snapshot_project_lock_key
from cofounder_runtime import tracing
from cofounder_runtime.mutex import MutexTimeout, held
from cofounder_runtime.publisher import Publisher
from cofounder_sandbox.base import Sandboxes, SandboxGone
from cofounder_sandbox.local import LocalSandboxes
from cofounder_snapshots.collect import collect_sandbox
from cofounder_snapshots.config import OFF_REASON
from cofounder_snapshots.store import SnapshotStore, StoreError
from cofounder_snapshots.sync import prune, take_snapshot

__all__ = ["PRODUCER", "SnapshotDeps", "on_snapshot_requested"]

PRODUCER = "snapshot"
_log = structlog.get_logger("cofounder.snapshot")


@dataclass(frozen=True, slots=True)
class SnapshotDeps:
    store: SnapshotStore | None
    sandboxes: dict[str, Sandboxes]  # by SandboxKind value
    events: Publisher
    keep_versions: int = 10
    max_file_bytes: int = 50 * 1024 * 1024
    concurrency: int = 16
    #: Per build: its lock and how many handlers hold or wait for it.
    locks: dict[str, tuple[asyncio.Lock, int]] = field(default_factory=dict)
    #: Holds the project's mutex across replicas while a snapshot and its prune run (None: this
    #: process's per-build lock only, for tests that run one handler at a time).
    redis: Redis | None = None


async def on_snapshot_requested(event: SnapshotRequested, deps: SnapshotDeps) -> None:
    """Snapshots of one build are taken one at a time in a process (their version numbers come
    from the versions stored so far). With tracing on, each in a ``snapshot.take`` span: the
    request (reason, sandbox kind), the answer (``cofounder.snapshot.outcome``: completed,
    reused, skipped or failed), the version and its counts; never a path or a file."""
    lock, users = deps.locks.get(event.build_id, (asyncio.Lock(), 0))
    deps.locks[event.build_id] = (lock, users + 1)
    try:
        async with lock:
            with tracing.span(
                "snapshot.take",
                attributes={
                    "cofounder.build_id": event.build_id,
                    "cofounder.snapshot.reason": str(event.reason),
                    "cofounder.snapshot.sandbox_kind": str(event.sandbox_kind),
                },
            ) as span:
                await _snapshot(event, deps, span)
    finally:
        lock, users = deps.locks[event.build_id]
        if users == 1:
            del deps.locks[event.build_id]  # nobody else waits on it
        else:
            deps.locks[event.build_id] = (lock, users - 1)


def _project_mutex(deps: SnapshotDeps, project_id: str) -> AbstractAsyncContextManager[None]:
    if deps.redis is None:
        return contextlib.nullcontext()
    return held(deps.redis, snapshot_project_lock_key(project_id), ttl_ms=30_000, wait_s=600)


async def _snapshot(event: SnapshotRequested, deps: SnapshotDeps, span: tracing.Span) -> None:
    if deps.store is None:
        span.set_attribute("cofounder.snapshot.outcome", "skipped")
        await deps.events.emit(
            SnapshotCompleted(
                **follow_up(event, producer=PRODUCER, kind="snapshot.skipped"),
                version=0,
                files=0,
                bytes_uploaded=0,
                blobs_uploaded=0,
                duration_ms=0,
                skipped=True,
                skipped_reason=OFF_REASON,
            )
        )
        return
    try:
        sandboxes = deps.sandboxes.get(str(event.sandbox_kind))
        if sandboxes is None or not event.sandbox_id:
            raise SandboxGone(f"no {event.sandbox_kind} sandbox to read")
        sandbox = (
            # A local sandbox's files outlive it: the end of a build may kill it (the runner's
            # SANDBOX_AFTER_BUILD) before its final snapshot is taken.
            await sandboxes.files_of(event.sandbox_id)
            if isinstance(sandboxes, LocalSandboxes)
            else await sandboxes.connect(event.sandbox_id)
        )
        collected = await collect_sandbox(sandbox, max_file_bytes=deps.max_file_bytes)
        # One snapshot or prune of a project at a time, across replicas: a prune decides which
        # blobs no manifest uses, and a snapshot of a sibling build may be about to write a
        # manifest that uses one it found in the index (it does not upload it again). Also
        # keeps two replicas from numbering one build's versions alike.
        async with _project_mutex(deps, event.project_id):
            result = await take_snapshot(
                deps.store,
                collected,
                project_id=event.project_id,
                build_id=event.build_id,
                request_id=event.event_id,
                concurrency=deps.concurrency,
            )
            if not result.reused:
                await prune(
                    deps.store,
                    project_id=event.project_id,
                    build_id=event.build_id,
                    keep=deps.keep_versions,
                )
    except (SandboxGone, StoreError, OSError, RuntimeError, ValueError, MutexTimeout) as exc:
        _log.warning("snapshot failed", error=str(exc), build_id=event.build_id)
        span.set_attributes(
            {"cofounder.snapshot.outcome": "failed", "error.type": type(exc).__qualname__}
        )
        await deps.events.emit(
            SnapshotFailed(
                **follow_up(event, producer=PRODUCER, kind="snapshot.failed"),
                reason=str(exc)[:1000] or type(exc).__name__,
            )
        )
        return
    if result.too_large:
        _log.warning("files left out of the snapshot: too large", files=result.too_large)
    if result.changed:
        _log.warning(
            "files left out of the snapshot: they changed while it read them",
            files=list(result.changed),
        )
    if span.is_recording():
        span.set_attributes(
            {
                "cofounder.snapshot.outcome": "reused" if result.reused else "completed",
                "cofounder.snapshot.version": result.version,
                "cofounder.snapshot.files": result.files,
                "cofounder.snapshot.bytes_uploaded": result.bytes_uploaded,
                "cofounder.snapshot.blobs_uploaded": result.blobs_uploaded,
            }
        )
    await deps.events.emit(
        SnapshotCompleted(
            **follow_up(event, producer=PRODUCER, kind="snapshot.completed"),
            version=result.version,
            files=result.files,
            bytes_uploaded=result.bytes_uploaded,
            blobs_uploaded=result.blobs_uploaded,
            duration_ms=result.duration_ms,
        )
    )
