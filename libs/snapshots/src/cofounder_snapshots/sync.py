"""Taking, restoring and pruning snapshots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

import structlog

from cofounder_sandbox.base import PROJECT_DIR, Sandbox
from cofounder_snapshots.collect import Collected, FileChanged, FileEntry
from cofounder_snapshots.manifest import FileMeta, Manifest
from cofounder_snapshots.store import SnapshotStore

__all__ = [
    "SnapshotResult",
    "latest_version",
    "prune",
    "restore",
    "take_snapshot",
]

_log = structlog.get_logger("cofounder.snapshots")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SnapshotResult:
    version: int
    files: int
    bytes_uploaded: int
    blobs_uploaded: int
    duration_ms: int
    too_large: dict[str, int]
    reused: bool = False  # the request had been answered before (a redelivery)
    #: Files that changed while the snapshot read them (a log a server writes): left out of
    #: this version rather than stored under a hash that is not theirs (FileChanged).
    changed: tuple[str, ...] = ()


async def _bounded(items: Iterable[T], work: Callable[[T], Awaitable[None]], limit: int) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> None:
        async with gate:
            await work(item)

    try:
        async with asyncio.TaskGroup() as group:
            for item in items:
                group.create_task(one(item))
    except ExceptionGroup as group_error:
        raise group_error.exceptions[0] from group_error  # callers handle the first failure


async def take_snapshot(
    store: SnapshotStore,
    collected: Collected,
    *,
    project_id: str,
    build_id: str,
    request_id: str | None = None,
    concurrency: int = 16,
) -> SnapshotResult:
    """Store ``collected`` as the build's next version: blobs the project's index lacks, then
    the index, then the manifest (last: a failure before it leaves no visible version)."""
    started = time.perf_counter()
    versions = await store.versions(project_id, build_id)
    latest = await store.get_manifest(project_id, build_id, versions[-1]) if versions else None
    if request_id is not None and latest is not None:
        repeat = await _answered(store, latest, request_id, versions)
        if repeat is not None:
            return repeat
    known = await store.read_index(project_id)
    missing: dict[str, list[FileEntry]] = {}
    for entry in collected.files:
        if entry.sha256 not in known:
            missing.setdefault(entry.sha256, []).append(entry)
    changed: list[str] = []
    uploaded: dict[str, int] = {}

    async def upload(sha256: str) -> None:
        # The first file of that content that still holds it: a file that changed since it
        # was hashed is left out (its bytes are not this content's), and the next one is read.
        for entry in missing[sha256]:
            try:
                data = await entry.read()
            except FileChanged:
                changed.append(entry.path)
                continue
            await store.put_blob(project_id, sha256, data)
            uploaded[sha256] = len(data)
            return
        # Every file of that content changed: none is in this version.

    await _bounded(list(missing), upload, concurrency)
    await store.write_index(project_id, known | uploaded.keys())
    version = (versions[-1] if versions else 0) + 1
    duration_ms = int((time.perf_counter() - started) * 1000)
    manifest = Manifest(
        project_id=project_id,
        build_id=build_id,
        version=version,
        created_at=datetime.now(UTC),
        request_id=request_id,
        files={
            f.path: FileMeta(f.sha256, f.size, f.mode)
            for f in collected.files
            if f.sha256 in known or f.sha256 in uploaded
        },
        too_large=dict(collected.too_large),
        bytes_uploaded=sum(uploaded.values()),
        blobs_uploaded=len(uploaded),
        duration_ms=duration_ms,
        answered=latest.answered_next(request_id, version) if latest else {},
    )
    await store.put_manifest(manifest)
    return SnapshotResult(
        version=version,
        files=len(manifest.files),
        bytes_uploaded=sum(uploaded.values()),
        blobs_uploaded=len(uploaded),
        duration_ms=duration_ms,
        too_large=dict(collected.too_large),
        # (one whose content another file also held is in, as it was when collected)
        changed=tuple(sorted(p for p in changed if p not in manifest.files)),
    )


async def _answered(
    store: SnapshotStore, latest: Manifest, request_id: str, versions: list[int]
) -> SnapshotResult | None:
    """The answer already given to ``request_id``, if one of the build's last versions gave it.

    A redelivered request (its runner died after the manifest), one the reconciler sent again,
    or a duplicate handled at the same time (waiting on the project's mutex) is answered by the
    version that answered it, with the same numbers, even when a newer version was taken since:
    the repeat is the same event, and no version is made for it."""
    version = latest.answered_by(request_id)
    if version is None or version not in versions:
        return None  # not answered, or its version pruned since: answered as a new request
    answered = (
        latest
        if version == latest.version
        else await store.get_manifest(latest.project_id, latest.build_id, version)
    )
    return SnapshotResult(
        answered.version,
        len(answered.files),
        answered.bytes_uploaded or 0,
        answered.blobs_uploaded or 0,
        answered.duration_ms or 0,
        dict(answered.too_large),
        reused=True,
    )


class _Files(Protocol):
    """Where :func:`restore` writes a version's files (paths relative to the project)."""

    async def write(self, path: str, data: bytes, mode: int) -> None: ...

    async def finish(self, manifest: Manifest) -> None: ...


@dataclass(frozen=True, slots=True)
class _SandboxFiles:
    """The sandbox's project folder; executables made so once every file is written."""

    sandbox: Sandbox

    async def write(self, path: str, data: bytes, mode: int) -> None:
        await self.sandbox.write_file(f"{PROJECT_DIR}/{path}", data)

    async def finish(self, manifest: Manifest) -> None:
        executable = [p for p, m in manifest.files.items() if m.mode & 0o111]
        if executable:
            quoted = " ".join("'" + p.replace("'", "'\\''") + "'" for p in executable)
            # The shell starts in the project.
            await self.sandbox.run(f"chmod +x {quoted}", timeout=60)
        _log.info(
            "snapshot restored",
            build_id=manifest.build_id,
            version=manifest.version,
            files=len(manifest.files),
        )


@dataclass(frozen=True, slots=True)
class _FolderFiles:
    """A local folder (resolved); each file gets its mode, and none is written outside."""

    root: Path

    async def write(self, path: str, data: bytes, mode: int) -> None:
        target = (self.root / path).resolve()
        if self.root not in target.parents:
            raise ValueError(f"{path} would be written outside {self.root}")

        def write() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(mode & 0o777 or 0o644)

        await asyncio.to_thread(write)

    async def finish(self, manifest: Manifest) -> None:
        pass


async def restore(
    store: SnapshotStore,
    into: Sandbox | Path,
    *,
    project_id: str,
    build_id: str,
    version: int | None = None,
    concurrency: int = 16,
) -> Manifest | None:
    """Write a version (default: the latest) of the build's files ``into`` a sandbox's project
    folder or a local folder, modes included; None when the build has no snapshot."""
    manifest = await _manifest(store, project_id, build_id, version)
    if manifest is None:
        return None
    files: _Files = (
        _FolderFiles(await asyncio.to_thread(into.resolve))
        if isinstance(into, Path)
        else _SandboxFiles(into)
    )

    async def put(item: tuple[str, FileMeta]) -> None:
        path, meta = item
        await files.write(path, await store.get_blob(project_id, meta.sha256), meta.mode)

    await _bounded(manifest.files.items(), put, concurrency)
    await files.finish(manifest)
    return manifest


async def latest_version(store: SnapshotStore, project_id: str, build_id: str) -> int | None:
    versions = await store.versions(project_id, build_id)
    return versions[-1] if versions else None


async def _manifest(
    store: SnapshotStore, project_id: str, build_id: str, version: int | None
) -> Manifest | None:
    """The manifest of ``version`` (default: the latest); None when the build has no snapshot."""
    version = version if version is not None else await latest_version(store, project_id, build_id)
    return None if version is None else await store.get_manifest(project_id, build_id, version)


async def prune(
    store: SnapshotStore, *, project_id: str, build_id: str, keep: int
) -> tuple[int, int]:
    """Keep the build's last ``keep`` versions; delete blobs no manifest of the project uses.
    Returns (manifests deleted, blobs deleted)."""
    versions = await store.versions(project_id, build_id)
    old = versions[:-keep] if keep > 0 else versions
    for version in old:
        await store.delete_manifest(project_id, build_id, version)
    referenced: set[str] = set()
    for build in await store.builds(project_id):
        for version in await store.versions(project_id, build):
            manifest = await store.get_manifest(project_id, build, version)
            referenced.update(m.sha256 for m in manifest.files.values())
    stored = await store.list_blobs(project_id)
    unused = stored - referenced
    if unused:
        # The index first: a snapshot running now must not count on a blob about to go.
        await store.write_index(project_id, referenced & stored)
        await store.delete_blobs(project_id, unused)
    return len(old), len(unused)
