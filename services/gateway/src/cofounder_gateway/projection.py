"""The gateway's consumers: build events → the builds table (status projection) and the feed.

The gateway is the only writer of ``builds``. Each event is applied once (``record_once`` in the
same transaction as the update) through the state machine; every build-visible event, usage
included, is appended once to the build's feed for live streaming.

The feed first, as before the row: an entry goes to the build's existing feed in one round trip,
which keeps the feed in delivery order. A build's feed is made only once its row was read (one
more read, on the build's first event or after its feed expired: see ``feed.py``), so a build the
gateway has no row for never gets a feed key. Appends are idempotent (``RedisOnce``): a
redelivery after a failed transaction appends nothing twice.

An event for a build with no row is settled as handled (acked), with a log line and
``cofounder_gateway_events_for_unknown_builds_total``, not dead-lettered: it cannot be early (the
gateway commits a build's row with its first events in one outbox transaction, and every other
event of a build follows from those), so it is another deployment's build on a shared Redis, a
build deleted with its project, or a forged event, and no replay would make it land.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy import ColumnElement, case, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cofounder_contracts import BudgetUsage, BuildStatus, Event
from cofounder_contracts.codec import payload_digest
from cofounder_contracts.streams import BUDGET_SIGNALS, BUDGET_USAGE, BUILD_EVENTS
from cofounder_db.models import Build
from cofounder_domain.lifecycle import COUNTERS, changes_of, is_terminal, next_status, status_of
from cofounder_gateway import slots
from cofounder_gateway.feed import Feed
from cofounder_runtime.idempotency_sql import record_once

__all__ = [
    "BUILD_EVENT_HANDLERS",
    "SIGNAL_HANDLERS",
    "USAGE_HANDLERS",
    "ProjectionDeps",
    "StatusRace",
    "on_budget_signal",
    "on_build_event",
    "on_usage",
]

SCOPE = "gateway.projection"
_log = structlog.get_logger("cofounder.gateway.projection")

UNKNOWN_BUILDS = Counter(
    "cofounder_gateway_events_for_unknown_builds_total",
    "Build events settled without effect: the gateway has no row for their build (another "
    "deployment's, a deleted project's, or a forged id). No feed key is made for them.",
    ("type",),
)


class StatusRace(Exception):
    """Two events of one build were applied at once; the loser is retried (nothing written)."""


#: A projection handler: ``handler(event, deps=deps)``.
ProjectionHandler = Callable[..., Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ProjectionDeps:
    """The database and the feed."""

    engine: AsyncEngine
    feed: Feed


def grown(stored: ColumnElement[int], incoming: int) -> ColumnElement[int]:
    """:func:`cofounder_domain.lifecycle.grow` in SQL: the value a counter takes, computed in
    the update itself (events of one build are applied concurrently, and the row is not locked
    for counters, so the decision cannot be made from a value read before). Tested against the
    domain's on PostgreSQL (``tests/test_domain_rules.py``)."""
    return case((stored < incoming, incoming), else_=stored)


def _grow_only(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for name in COUNTERS:
        if name in out:
            out[name] = grown(getattr(Build, name), out[name])
    return out


def _unknown_build(event: Event) -> None:
    UNKNOWN_BUILDS.labels(event.type).inc()
    _log.warning(
        "event for a build with no row: settled without effect",
        build_id=event.build_id,
        event_id=event.event_id,
        event_type=event.type,
    )


async def _build_ended(engine: AsyncEngine, build_id: str) -> bool | None:
    """Whether the build has ended, from its row; None when there is no such build."""
    async with engine.connect() as conn:
        status = (
            await conn.execute(select(Build.status).where(Build.id == build_id))
        ).scalar_one_or_none()
    return None if status is None else is_terminal(BuildStatus(status))


async def _to_feed(event: Event, deps: ProjectionDeps, *, digest: str | None = None) -> bool:
    """Append ``event`` to its build's feed; False (settled, counted) when there is no build."""
    ended = functools.partial(_build_ended, deps.engine, event.build_id)
    if await deps.feed.append(event, ended=ended, digest=digest):
        return True
    _unknown_build(event)
    return False


async def _project(
    event: Event, deps: ProjectionDeps, apply: Callable[[AsyncConnection, Any], Awaitable[None]]
) -> None:
    """Feed first (idempotent), then the row: ``apply`` runs once per event id, in the
    transaction that records the id (a redelivery finds it recorded and changes nothing)."""
    digest = payload_digest(event)  # once, for the feed's marker and the projection's row
    if not await _to_feed(event, deps, digest=digest):
        return
    async with deps.engine.begin() as conn:
        if await record_once(conn, scope=SCOPE, event_id=event.event_id, digest=digest):
            await apply(conn, event)


async def on_build_event(event: Event, deps: ProjectionDeps) -> None:
    """A build event on the feed, and its changes to the build's row (status, counters)."""
    await _project(event, deps, _apply_build_event)


async def on_usage(event: BudgetUsage, deps: ProjectionDeps) -> None:
    """Usage is visible on the feed, and added to the build's token counters once."""
    await _project(event, deps, _add_usage)


async def _apply_build_event(conn: AsyncConnection, event: Event) -> None:
    build = (
        await conn.execute(
            select(Build.status, Build.status_changed_at, Build.user_id).where(
                Build.id == event.build_id
            )
        )
    ).first()
    if build is None:
        _unknown_build(event)  # deleted since its feed was made
        return
    values = changes_of(event)
    incoming = status_of(event)
    occurred = event.occurred_at
    ends = False
    if incoming is not None:
        new = next_status(
            BuildStatus(build.status),
            incoming,
            occurred_at=occurred,
            last_applied_at=build.status_changed_at,
        )
        if new is not None:
            values |= {"status": new.value, "status_changed_at": occurred}
            ends = is_terminal(new)
            if ends:
                values["finished_at"] = occurred
        elif "error" in values or "preview_url" in values:
            values = {}  # a stale or duplicate end: keep what the first end recorded
    if not values:
        return
    values = _grow_only(values)
    values["updated_at"] = datetime.now(UTC)
    query = update(Build).where(Build.id == event.build_id)
    if "status" in values:  # compare-and-set: the status this decision was made from
        query = query.where(Build.status == build.status)
    changed = (await conn.execute(query.values(**values))).rowcount
    if "status" in values and changed != 1:
        # Another event of this build moved it meanwhile (handlers run concurrently): retry
        # from the new status (the redelivery decides again; nothing was written).
        raise StatusRace(f"build {event.build_id} left {build.status} meanwhile")
    if ends:
        await slots.give_back(conn, build.user_id)  # once: the status moved only here


async def _add_usage(conn: AsyncConnection, event: BudgetUsage) -> None:
    await conn.execute(
        update(Build)
        .where(Build.id == event.build_id)
        .values(
            input_tokens=Build.input_tokens + event.input_tokens,
            output_tokens=Build.output_tokens + event.output_tokens,
        )
    )


async def on_budget_signal(event: Event, deps: ProjectionDeps) -> None:
    """Budget warnings and exhaustion (on the build whose call crossed the line) and wakes are
    visible on the build's feed; they change no row."""
    await _to_feed(event, deps)


#: The handlers of each stream the gateway reads: every event the contracts put on the stream.
BUILD_EVENT_HANDLERS: dict[type[Event], ProjectionHandler] = dict.fromkeys(
    BUILD_EVENTS.events, on_build_event
)
USAGE_HANDLERS: dict[type[Event], ProjectionHandler] = dict.fromkeys(BUDGET_USAGE.events, on_usage)
SIGNAL_HANDLERS: dict[type[Event], ProjectionHandler] = dict.fromkeys(
    BUDGET_SIGNALS.events, on_budget_signal
)
