"""The composition root: settings in, a running consumer out. Nothing connects at import."""

from __future__ import annotations

import functools

import structlog
from redis.asyncio import Redis

from cofounder_contracts.streams import SNAPSHOT, SNAPSHOT_REQUESTS
from cofounder_runtime.consumer import Consumer
from cofounder_runtime.publisher import Publisher
from cofounder_runtime.service import run_service, service_process
from cofounder_sandbox.base import Sandboxes
from cofounder_sandbox.local import LocalSandboxes
from cofounder_snapshot.handlers import SnapshotDeps, on_snapshot_requested
from cofounder_snapshot.settings import SnapshotSettings
from cofounder_snapshots.config import OFF_REASON, store_from
from cofounder_snapshots.store import SnapshotStore

__all__ = ["build_consumer", "main", "sandboxes_from"]

_log = structlog.get_logger("cofounder.snapshot")


def sandboxes_from(settings: SnapshotSettings) -> dict[str, Sandboxes]:
    found: dict[str, Sandboxes] = {"local": LocalSandboxes(settings.sandbox_root)}
    if settings.e2b_api_key is not None:
        from cofounder_sandbox.e2b import E2BSandboxes

        found["e2b"] = E2BSandboxes(
            api_key=settings.e2b_api_key.get_secret_value(), template="base"
        )
    return found


def build_consumer(settings: SnapshotSettings, redis: Redis, deps: SnapshotDeps) -> Consumer:
    return Consumer.for_stream(
        redis,
        SNAPSHOT_REQUESTS,
        group=SNAPSHOT,
        consumer=settings.consumer_name,
        handlers={SNAPSHOT_REQUESTS.events[0]: functools.partial(on_snapshot_requested, deps=deps)},
        options=settings.consumer_options(),
    )


def deps_from(
    settings: SnapshotSettings, redis: Redis, store: SnapshotStore | None
) -> SnapshotDeps:
    return SnapshotDeps(
        store=store,
        sandboxes=sandboxes_from(settings),
        events=Publisher(redis),
        keep_versions=settings.snapshot_keep_versions,
        max_file_bytes=settings.snapshot_max_file_bytes,
        concurrency=settings.snapshot_concurrency,
        redis=redis,
    )


async def main() -> None:
    """Run the snapshot service until SIGTERM."""
    async with service_process(SnapshotSettings, service="snapshot") as process:
        settings, redis = process.settings, process.redis
        store = store_from(
            bucket=settings.project_snapshot_bucket,
            prefix=settings.snapshot_prefix,
            endpoint_url=settings.s3_endpoint_url,
            local_dir=settings.snapshot_local_dir,
            attempts=settings.snapshot_attempts,
        )
        if store is None:
            _log.warning(OFF_REASON + "; requests are answered as skipped")
        else:
            _log.info("snapshots stored", store=store.description)
            await process.enter(store)
        await run_service(
            process, [build_consumer(settings, redis, deps_from(settings, redis, store))]
        )
