"""The composition root: settings in, a running consumer out. Nothing connects at import."""

from __future__ import annotations

import functools

import structlog
from redis.asyncio import Redis

from cofounder_contracts import BuildCompleted, BuildFailed, BuildStatusChanged, Event
from cofounder_contracts.streams import BUILD_EVENTS, SNAPSHOT, SNAPSHOT_REQUESTS
from cofounder_runtime.consumer import Consumer, Handler
from cofounder_runtime.periodic import every
from cofounder_runtime.publisher import Publisher
from cofounder_runtime.service import run_service, service_process
from cofounder_sandbox.base import Sandboxes
from cofounder_sandbox.local import LocalSandboxes
from cofounder_snapshot.archiving import ArchiveDeps, on_build_event, prune_archives
from cofounder_snapshot.handlers import SnapshotDeps, on_snapshot_requested
from cofounder_snapshot.settings import SnapshotSettings
from cofounder_snapshots.config import OFF_REASON
from cofounder_snapshots.store import SnapshotStore

__all__ = ["archive_consumer", "build_consumer", "main", "sandboxes_from"]

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


#: The events that may end a build (a status change only when its status is an end).
ENDINGS: tuple[type[Event], ...] = (BuildCompleted, BuildFailed, BuildStatusChanged)


def archive_consumer(settings: SnapshotSettings, redis: Redis, deps: ArchiveDeps) -> Consumer:
    """The build events' reader that archives a finished build's feed."""
    handler: Handler = functools.partial(on_build_event, deps=deps)
    return Consumer.for_stream(
        redis,
        BUILD_EVENTS,
        group=SNAPSHOT,
        consumer=settings.consumer_name,
        handlers=dict.fromkeys(ENDINGS, handler),
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
        store = settings.snapshot_store()
        if store is None:
            _log.warning(OFF_REASON + "; requests are answered as skipped")
        else:
            _log.info("snapshots stored", store=store.description)
            await process.enter(store)
        consumers = [build_consumer(settings, redis, deps_from(settings, redis, store))]
        background = []
        archive = settings.log_archive()
        if archive is None:
            _log.warning("build logs are not archived: LOG_ARCHIVE_BUCKET (or LOG_ARCHIVE_DIR)")
        else:
            _log.info("build logs archived", store=archive.description)
            await process.enter(archive)
            engine = settings.create_engine()
            process.closing(engine, engine.dispose)
            deps = ArchiveDeps(
                archive=archive,
                redis=redis,
                engine=engine,
                events=Publisher(redis),
                settle_s=settings.log_archive_settle_s,
                wait_s=settings.log_archive_wait_s,
            )
            consumers.append(archive_consumer(settings, redis, deps))
            prune = functools.partial(
                prune_archives, archive, settings.plans(), default_tier=settings.default_tier
            )
            background.append(
                (
                    "log-archive-retention",
                    functools.partial(
                        every,
                        settings.log_archive_prune_interval_s,
                        prune,
                        name="log-archive-retention",
                        jitter=0.1,
                    ),
                )
            )
        await run_service(process, consumers, background=background)
