"""The SQL the gateway runs carries out the domain's rules, not rules of its own: the counters'
``grow`` and the plan's limit of active builds, each run on PostgreSQL against the domain's
function over a grid; and the projection handles exactly the events the contracts put on the
streams it reads."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import Integer, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_contracts.streams import BUDGET_SIGNALS, BUDGET_USAGE, BUILD_EVENTS, GATEWAY
from cofounder_db.engine import create_engine, driver_dsn
from cofounder_db.models import Project, User
from cofounder_domain.lifecycle import grow
from cofounder_domain.plans import DEFAULT_PLANS, max_active_builds, may_start_build, plans_from
from cofounder_gateway.builds_pg import create_build_pg, create_write_pool
from cofounder_gateway.projection import (
    BUILD_EVENT_HANDLERS,
    SIGNAL_HANDLERS,
    USAGE_HANDLERS,
    grown,
)
from cofounder_gateway.schemas import NewBuild


def test_the_projection_handles_every_event_of_the_streams_it_reads() -> None:
    for stream, handlers in (
        (BUILD_EVENTS, BUILD_EVENT_HANDLERS),
        (BUDGET_USAGE, USAGE_HANDLERS),
        (BUDGET_SIGNALS, SIGNAL_HANDLERS),
    ):
        assert GATEWAY in stream.groups
        assert tuple(handlers) == stream.events


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.mark.integration
async def test_the_counter_update_grows_as_the_domain_says(engine: AsyncEngine) -> None:
    values = (0, 1, 2, 7, 2**31 - 1)
    grid = [(stored, incoming) for stored in values for incoming in values]
    query = select(*(grown(literal(stored, Integer), incoming) for stored, incoming in grid))
    async with engine.connect() as conn:
        row = (await conn.execute(query)).one()
    assert list(row) == [grow(stored, incoming) for stored, incoming in grid]


async def _user_with_project(engine: AsyncEngine, tier: str) -> tuple[str, str]:
    user, project = str(uuid.uuid4()), str(uuid.uuid4())
    async with engine.begin() as conn:
        await conn.execute(insert(User).values(id=user, email=f"{user}@example.com", tier=tier))
        await conn.execute(insert(Project).values(id=project, owner_id=user, name="P"))
    return user, project


async def _fill(
    pool: asyncpg.Pool, user: str, project: str, limits: Mapping[str, int], attempts: int
) -> list[tuple[bool, int]]:
    """Try ``attempts`` builds one after the other: (inserted, the limit the statement used)."""
    seen = []
    for _ in range(attempts):
        build = NewBuild(
            id=str(uuid.uuid4()),
            project_id=project,
            user_id=user,
            goal="g",
            idempotency_key=None,
            created_at=datetime.now(UTC),
        )
        checked = await create_build_pg(pool, build=build, limits=limits, events=[])
        seen.append((checked.inserted, checked.max_active))
    return seen


@pytest.mark.integration
@pytest.mark.parametrize(
    "limits",
    [
        {t: p.max_active_builds for t, p in DEFAULT_PLANS.items()},
        {"bootstrapper": 3, "founder": 1, "pro": 0},
        {},
    ],
    ids=["default-plans", "custom", "none-configured"],
)
async def test_the_slot_statement_applies_the_plan_s_limit(
    engine: AsyncEngine, limits: dict[str, int]
) -> None:
    plans = plans_from(
        allowances={"bootstrapper": 1}, active_builds=limits, tool_calls={}, models={}
    )
    pool = await create_write_pool(driver_dsn(engine), size=2)
    try:
        for tier in (*limits, "unheard-of"):
            limit = max_active_builds(plans, tier)
            user, project = await _user_with_project(engine, tier)
            seen = await _fill(pool, user, project, limits, attempts=limit + 2)
            assert seen == [(may_start_build(active, limit), limit) for active in range(limit + 2)]
    finally:
        await pool.close()
