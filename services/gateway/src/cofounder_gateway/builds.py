"""Build rows: creation with its outbox events, reads scoped to the owner, cancellation."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Collection, Mapping
from datetime import UTC, datetime

import asyncpg
from sqlalchemy import Select, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cofounder_contracts import BuildStatus
from cofounder_contracts.ids import new_event_id
from cofounder_db.models import Build
from cofounder_domain.lifecycle import can_move
from cofounder_gateway import requests, slots
from cofounder_gateway.builds_pg import Conflict, create_build_pg
from cofounder_gateway.inputs import is_uuid
from cofounder_gateway.outbox import enqueue
from cofounder_gateway.problems import ApiError
from cofounder_gateway.rows import not_found, one_or_404
from cofounder_gateway.schemas import BuildView, NewBuild

__all__ = ["cancel_build", "create_build", "get_build", "list_all_builds", "list_builds"]

PRODUCER = requests.PRODUCER


@contextlib.asynccontextmanager
async def _transaction(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """An ORM session in one transaction; rows stay readable after commit."""
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        yield session


def _now() -> datetime:
    return datetime.now(UTC)


async def _owned_build(
    conn: AsyncSession, user_id: str, build_id: str, *, for_update: bool = False
) -> Build:
    query = select(Build).where(Build.id == build_id, Build.user_id == user_id)
    if for_update:
        query = query.with_for_update()
    return await one_or_404(conn, query, "build", build_id)


async def create_build(
    engine: AsyncEngine,
    *,
    user_id: str,
    project_id: str,
    goal: str,
    idempotency_key: str | None,
    limits: Mapping[str, int],
    pg_pool: asyncpg.Pool,
) -> tuple[BuildView, bool]:
    """Create a queued build and its ``build.requested`` in one statement (the outbox), on the
    gateway's write pool (``builds_pg``).

    Returns the build and whether it is new: a repeated ``Idempotency-Key`` returns the build it
    created before (409 if it was for another request). 404 for a project that is not the
    user's; 429 over the tier's limit of active builds (``limits``: tier -> the plans'
    ``max_active_builds``; the user's row is locked, so concurrent requests of one user count one
    after the other).
    """
    now = _now()
    build = NewBuild(
        id=new_event_id(),  # a UUIDv7: its requests' derived ids sort by creation
        project_id=project_id,
        user_id=user_id,
        goal=goal,
        idempotency_key=idempotency_key,
        created_at=now,
    )
    requested = requests.build_requested(
        build_id=build.id, project_id=project_id, user_id=user_id, goal=goal, occurred_at=now
    )
    queued = requests.queued(requested)
    try:
        checked = await create_build_pg(
            pg_pool,
            build=build,
            limits=limits,
            events=[queued, requested],
        )
    except Conflict:
        if idempotency_key is None:
            raise
        # A concurrent request with the same key won the insert: answer with its build.
        async with _transaction(engine) as conn:
            existing = await _by_key(conn, user_id, idempotency_key)
        if existing is None:
            raise
        return _same_request(existing, project_id, goal), False
    if checked.inserted:
        return build, True
    answer = _decide(
        checked.tier, checked.max_active, checked.existing, project_id=project_id, goal=goal
    )
    return answer, False


def _decide(
    tier: str | None,
    limit: int,
    existing: Build | None,
    *,
    project_id: str,
    goal: str,
) -> Build:
    """Why the statement inserted nothing: a build to answer with (a replay of the same
    request), or an error. ``limit``: the plan's limit of active builds, as the statement
    applied it (``builds_pg``); refused for no other reason, the user had no slot below it."""
    if tier is None:
        raise not_found("project", project_id)
    if existing is not None:
        return _same_request(existing, project_id, goal)
    raise ApiError(
        429,
        "too_many_active_builds",
        f"your {tier} plan allows {limit} active build(s) at once and you have "
        f"{limit}; wait for one to finish or cancel one",
        headers={"Retry-After": "30"},
        limit=limit,
        active=limit,
    )


async def _by_key(conn: AsyncSession, user_id: str, key: str) -> Build | None:
    query = select(Build).where(Build.user_id == user_id, Build.idempotency_key == key)
    build: Build | None = (await conn.execute(query)).scalars().first()
    return build


def _same_request(existing: Build, project_id: str, goal: str) -> Build:
    if existing.project_id != project_id or existing.goal != goal:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
            build_id=existing.id,
        )
    return existing


async def get_build(engine: AsyncEngine, *, user_id: str, build_id: str) -> Build:
    """The user's build, or 404 (also for another user's build: its existence is not shown)."""
    async with _transaction(engine) as conn:
        return await _owned_build(conn, user_id, build_id)


def _cursor(build: Build) -> str:
    raw = f"{build.created_at.isoformat()}|{build.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    """The position :func:`_cursor` wrote; 400 for anything else, before it reaches a query (a
    build id that is no UUID, a time that leaves the datetime range in UTC). A time without a
    zone (not one this API writes) is taken as UTC."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, build_id = raw.partition("|")
        at = datetime.fromisoformat(created)
        if not is_uuid(build_id):
            raise ValueError(cursor)
        return (at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)), build_id
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise ApiError(400, "invalid_cursor", "the cursor is not one this API returned") from None


async def _page(
    engine: AsyncEngine, query: Select[Build], *, limit: int, cursor: str | None
) -> tuple[list[Build], str | None]:
    """The builds ``query`` selects, newest first, ``limit`` of them after ``cursor``; returns
    them and the next page's cursor (None on the last page)."""
    if cursor:
        created, build_id = _parse_cursor(cursor)
        query = query.where(tuple_(Build.created_at, Build.id) < tuple_(created, build_id))
    query = query.order_by(Build.created_at.desc(), Build.id.desc()).limit(limit + 1)
    async with _transaction(engine) as conn:
        found = list((await conn.execute(query)).scalars().all())
    more = len(found) > limit
    found = found[:limit]
    return found, (_cursor(found[-1]) if more and found else None)


async def list_builds(
    engine: AsyncEngine, *, user_id: str, status: BuildStatus | None, limit: int, cursor: str | None
) -> tuple[list[Build], str | None]:
    """The user's builds, newest first, ``limit`` at a time; returns the next page's cursor."""
    query = select(Build).where(Build.user_id == user_id)
    if status is not None:
        query = query.where(Build.status == status.value)
    return await _page(engine, query, limit=limit, cursor=cursor)


async def list_all_builds(
    engine: AsyncEngine, *, statuses: Collection[BuildStatus], limit: int, cursor: str | None
) -> tuple[list[Build], str | None]:
    """Every founder's builds (the operator's view), newest first, in ``statuses`` (all when
    empty), ``limit`` at a time; returns the next page's cursor."""
    query = select(Build)
    if statuses:
        query = query.where(Build.status.in_([s.value for s in statuses]))
    return await _page(engine, query, limit=limit, cursor=cursor)


async def cancel_build(engine: AsyncEngine, *, user_id: str, build_id: str) -> Build:
    """Mark the build cancelled and tell the runner, in one transaction; 409 once it ended.

    The row is locked while the move is decided: the projection ending the build at the same
    time waits, then finds it cancelled (its compare-and-set fails), so the slot is given back
    once."""
    async with _transaction(engine) as conn:
        build = await _owned_build(conn, user_id, build_id, for_update=True)
        if not can_move(BuildStatus(build.status), BuildStatus.CANCELLED):
            raise ApiError(
                409,
                "build_finished",
                f"the build is already {build.status}",
                build_status=build.status,
            )
        now = _now()
        await slots.give_back(conn, user_id)
        await conn.execute(
            update(Build)
            .where(Build.id == build_id)
            .values(
                status=BuildStatus.CANCELLED.value,
                status_changed_at=now,
                finished_at=now,
                updated_at=now,
                error="cancelled by the user",
            )
        )
        request = requests.cancel_requested(
            build_id=build_id, project_id=build.project_id, user_id=user_id, occurred_at=now
        )
        await enqueue(
            conn,
            [
                request,
                requests.cancelled(request),
            ],
        )
        return await _owned_build(conn, user_id, build_id)
