"""The end of a build → its feed archived once (``build.log_archived``); old archives pruned.

The handler reads ``cofounder.builds.events`` (group ``snapshot``) and acts on the events that end
a build (:func:`cofounder_contracts.ends_build`). The gateway's projection writes the feed from
the same stream, so the end may reach this handler before it is in the feed: the handler waits
until the feed holds the end, then until the feed has been quiet ``settle_s`` (late entries of
the build, the final snapshot's answer among them, land in the archive), then reads it whole.

A feed without the build's queued status (its first event) lost its beginning (Redis lost it and
the projection made it again, or ``BUILD_FEED_MAX_LEN`` trimmed it); one that never shows the end
within ``wait_s`` is taken as gone, unless the projection still has entries to apply (the feed
is late: :class:`FeedBehind`, waited for up to :data:`FEED_LAG_LIMIT_S` after the end). Either
way the history is rebuilt from PostgreSQL (:mod:`cofounder_snapshot.rebuild`) and merged with
what the feed still has.

Once: the store refuses a second write of a build's key, and the event's id is derived from the
build, so a redelivery, a second ending event or another replica announces the same archive
with the same id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_contracts import (
    BuildCompleted,
    BuildLogArchived,
    Event,
    build_feed_key,
    derived_event_id,
    ends_build,
    follow_up,
)
from cofounder_contracts.streams import BUILD_EVENTS, GATEWAY
from cofounder_db.models import Build
from cofounder_domain.plans import Plan, log_archive_days
from cofounder_runtime.consumer import handling_entry
from cofounder_runtime.publisher import Publisher
from cofounder_snapshot.rebuild import first_event_id, merge, rebuilt_history
from cofounder_snapshots.logarchive import (
    ArchiveEntry,
    LogArchive,
    archive_key,
    decode_archive,
    encode_archive,
)

__all__ = ["ArchiveDeps", "on_build_event", "prune_archives", "read_feed"]

PRODUCER = "snapshot"
_log = structlog.get_logger("cofounder.snapshot.archive")
_PAGE: Final = 1_000


@dataclass(frozen=True, slots=True)
class ArchiveDeps:
    """Where archives go, and what they are read from."""

    archive: LogArchive
    redis: Redis
    engine: AsyncEngine
    events: Publisher
    #: How long the feed must have had no new entry, after the end, before it is archived.
    settle_s: float = 2.0
    #: How long to wait for the end to reach the feed before taking the feed as gone.
    wait_s: float = 60.0


async def read_feed(redis: Redis, build_id: str) -> list[ArchiveEntry]:
    """Every entry of the build's feed, in order (empty when there is no feed)."""
    key, out, start = build_feed_key(build_id), [], "-"
    while True:
        page: Any = await redis.xrange(key, min=start, count=_PAGE)
        for raw_id, fields in page:
            out.append(
                ArchiveEntry(
                    id=raw_id.decode(),
                    type=fields.get(b"type", b"").decode(),
                    event_id=fields.get(b"event_id", b"").decode(),
                    data=msgspec.Raw(fields.get(b"data", b"{}")),
                )
            )
        if len(page) < _PAGE:
            return out
        start = "(" + page[-1][0].decode()


async def _now_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _final_snapshot_answers(end: Event) -> frozenset[str]:
    """The ids the answer to a completed build's final snapshot may have (completed, failed or
    skipped): the runner asks for it, under an id derived from its context, just before the
    end. Other ends ask for none."""
    if not isinstance(end, BuildCompleted) or end.causation_id is None:
        return frozenset()
    request = derived_event_id(end.causation_id, "snapshot:final")
    return frozenset(
        derived_event_id(request, kind)
        for kind in ("snapshot.completed", "snapshot.failed", "snapshot.skipped")
    )


async def _settled_feed(end: Event, deps: ArchiveDeps) -> tuple[list[ArchiveEntry], bool]:
    """The feed once it holds ``end`` and has been quiet ``settle_s`` (and holds the answer to
    the build's final snapshot, waited for up to ``wait_s`` more: S3 slow, or a backlog of
    snapshots, delays it past any quiet spell); (what there is, False) when the end does not
    reach it within ``wait_s``."""
    deadline = time.monotonic() + deps.wait_s
    answers = _final_snapshot_answers(end)
    answer_due: float | None = None  # until when the final snapshot's answer is waited for
    pause = 0.05
    while True:
        entries = await read_feed(deps.redis, end.build_id)
        ids = {e.event_id for e in entries}
        if end.event_id in ids:
            last_ms = int(entries[-1].id.split("-", 1)[0])
            quiet_for = (await _now_ms(deps.redis) - last_ms) / 1000
            if quiet_for < deps.settle_s:
                await asyncio.sleep(deps.settle_s - quiet_for)
                continue
            if not answers or answers & ids:
                return entries, True
            now = time.monotonic()
            answer_due = answer_due if answer_due is not None else now + deps.wait_s
            if now >= answer_due:
                _log.warning("archived without the final snapshot's answer", build_id=end.build_id)
                return entries, True
            await asyncio.sleep(min(deps.settle_s, answer_due - now))
            continue
        if time.monotonic() >= deadline:
            return entries, False
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)


class ArchiveInProgress(TimeoutError):
    """Another archiver's write of the same archive has not landed yet: retried (as an outage,
    uncounted) until it has, then announced as it is."""


class FeedBehind(TimeoutError):
    """The build's feed lacks its end while the gateway's projection still has entries of the
    builds' stream to apply (a burst, a restart, a dead replica's entries waiting to be
    claimed): the feed is late, not lost. A ``TimeoutError``, so the consumer waits it out
    without counting deliveries (:mod:`cofounder_runtime.outages`), until
    :data:`FEED_LAG_LIMIT_S` after the end; past that the history is rebuilt."""


#: How long after a build's end a late feed is waited for. Below the consumers' outage
#: patience (5 min), so the waits are never counted as failed deliveries.
FEED_LAG_LIMIT_S: Final = 240.0


async def _projection_behind(redis: Redis, entry: bytes | None) -> bool:
    """Whether the gateway's projection has yet to apply the entry of the end (``entry``, this
    handler's own: the same stream, read by another group): not delivered to its group yet, or
    delivered and not acknowledged. Without the entry id (a call from outside a consumer), any
    entry of the stream still to apply counts. Two reads, on the rare path where an end did
    not reach its feed in time."""
    try:
        groups: Any = await redis.xinfo_groups(BUILD_EVENTS.name)
    except ResponseError:  # no such stream
        return False
    found = next((g for g in groups if _text(g["name"]) == GATEWAY), None)
    if found is None:
        return False  # no projection reads the stream: nothing will fill the feed
    delivered = _entry_key(found["last-delivered-id"])
    if entry is None:
        stream: Any = await redis.xinfo_stream(BUILD_EVENTS.name)
        return bool(found["pending"]) or delivered < _entry_key(stream["last-generated-id"])
    if delivered < _entry_key(entry):
        return True
    pending: Any = await redis.xpending_range(
        BUILD_EVENTS.name, GATEWAY, min=entry, max=entry, count=1
    )
    return bool(pending)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry_key(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


async def _build(engine: AsyncEngine, build_id: str) -> str | None:
    """The build's tier, None when the gateway has no row for it."""
    async with engine.connect() as conn:
        tier: str | None = (
            await conn.execute(select(Build.tier).where(Build.id == build_id))
        ).scalar_one_or_none()
    return tier


async def on_build_event(event: Event, deps: ArchiveDeps) -> None:
    """Archive the build's history when ``event`` ends it (other events: nothing)."""
    if not ends_build(event):
        return
    tier = await _build(deps.engine, event.build_id)
    if tier is None:
        _log.warning("no such build: nothing archived", build_id=event.build_id)
        return
    key = archive_key(tier, event.build_id)
    existing = await deps.archive.get(key)
    rebuilt = False
    if existing is None:
        feed, ended = await _settled_feed(event, deps)
        entries = feed
        if not ended and await _projection_behind(deps.redis, handling_entry()):
            age_s = (datetime.now(UTC) - event.occurred_at).total_seconds()
            if age_s < FEED_LAG_LIMIT_S:
                raise FeedBehind(
                    f"the feed of {event.build_id} lacks its end {age_s:.0f} s after it, and "
                    "the projection has entries still to apply: waiting for it"
                )
        if not ended or first_event_id(event.build_id) not in {e.event_id for e in feed}:
            rebuilt = True
            entries = merge(feed, await rebuilt_history(deps.engine, event.build_id, end=event))
            _log.warning(
                "feed incomplete: history rebuilt from PostgreSQL",
                build_id=event.build_id,
                feed_entries=len(feed),
                entries=len(entries),
            )
        data = encode_archive(entries)
        if not await deps.archive.put_once(key, data):
            existing = await deps.archive.get(key)  # another replica was first
            if existing is None:
                # Its write is still in progress (S3's 409 ConditionalRequestConflict): announce
                # that archive once it is there, never this one's (one id, one content).
                raise ArchiveInProgress(f"the archive of {event.build_id} is being written")
    if existing is not None:
        data = existing
        entries = decode_archive(existing)
        rebuilt = any(e.source == "postgres" for e in entries)
    await deps.events.emit(
        BuildLogArchived(
            **follow_up(event, producer=PRODUCER, kind="log_archived", derive_from=event.build_id),
            bucket=deps.archive.bucket,
            key=deps.archive.full_key(key),
            location=deps.archive.location(key),
            entries=len(entries),
            bytes=len(data),
            rebuilt=rebuilt,
        )
    )
    _log.info(
        "build log archived",
        build_id=event.build_id,
        location=deps.archive.location(key),
        entries=len(entries),
    )


async def prune_archives(
    archive: LogArchive,
    plans: Mapping[str, Plan],
    *,
    default_tier: str,
    now: datetime | None = None,
) -> int:
    """Delete the archives older than their tier's retention; how many were deleted. A tier
    the plans no longer name keeps the default tier's retention."""
    now = now or datetime.now(UTC)
    deleted = 0
    keep: dict[str, timedelta] = {}
    try:
        # A page at a time: memory stays one page, and a listing that fails halfway keeps the
        # deletions of the pages before it.
        async for page in archive.pages("logs/"):
            old = []
            for key, written in page:
                parts = key.split("/")
                if len(parts) != 3:
                    continue
                tier = parts[1]
                if tier not in keep:
                    days = log_archive_days(plans, tier, default_tier=default_tier)
                    keep[tier] = timedelta(days=days)
                if now - written > keep[tier]:
                    old.append(key)
            if old:
                await archive.delete(old)
                deleted += len(old)
    finally:
        if deleted:
            _log.info("old build log archives deleted", count=deleted)
    return deleted
