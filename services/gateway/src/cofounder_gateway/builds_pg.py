"""How :func:`builds.create_build` writes, on the asyncpg driver directly.

Measured (``benchmarks/gateway.py``): through SQLAlchemy's async execution layer a trivial
transaction costs about 0.6 ms of this process's time against 0.25 ms on the driver, and
``POST /builds`` ran at a tenth of a raw-asyncpg reference. Creating a build is the one write on
the request path that must be fast, so it runs on the gateway's own asyncpg pool in one round
trip: a single statement that checks (ownership, plan, a slot under the plan's limit of active
builds, idempotency key) and inserts the build and its outbox rows when allowed. Each round trip
costs this process's CPU in the driver (the largest item in a py-spy profile under load), and
counting a user's builds under an advisory lock cost PostgreSQL more with every build.

The statement carries out the plan's limit; it does not define it. The limits per tier and the
limit of a tier not configured come from ``cofounder_domain.plans`` as parameters, the statement
looks the user's tier up in them (the tier is read in the same statement) and takes a slot while
``active < max_active`` (``may_start_build``); ``tests/test_domain_rules.py`` checks the statement
against the domain over tiers and limits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from cofounder_contracts import Event, encode
from cofounder_contracts.streams import stream_for
from cofounder_db.engine import DRIVER_TIMEOUTS
from cofounder_db.models import Build
from cofounder_domain.plans import unknown_tier_max_active_builds
from cofounder_gateway.schemas import NewBuild

__all__ = ["Checked", "Conflict", "create_build_pg", "create_write_pool"]

# One statement, one round trip, atomic on its own: the user's plan and a build already created
# under the same idempotency key; then a slot in ``user_active_builds`` taken only below the
# plan's limit (``ON CONFLICT DO UPDATE ... WHERE`` works on the row's latest version under its
# row lock, so concurrent requests of one user are counted one after the other, exactly); and
# with the slot, the build row and its outbox rows. It returns what it saw, so the caller can tell
# "inserted" from 404 (no such project of the user), 429 (no slot left) and a replay. Any failure
# (a concurrent request that took the same idempotency key first) undoes the slot with the rest.
_CHECK_AND_INSERT: Final = """
with seen as (
  select u.tier,
         (select b.id from builds b
           where b.user_id = u.id and b.idempotency_key = $6) as existing
  from users u join projects p on p.owner_id = u.id
  where u.id = $3 and p.id = $2
), plan as (
  select seen.*, coalesce(
           (select l.n from unnest($8::text[], $9::int[]) as l(tier, n) where l.tier = seen.tier),
           $10) as max_active
  from seen
), slot as (
  insert into user_active_builds as a (user_id, active)
  select $3, 1 from plan where plan.existing is null and 0 < plan.max_active
  on conflict (user_id) do update set active = a.active + 1
    where a.active < (select max_active from plan)
  returning a.active
), build as (
  insert into builds (id, project_id, user_id, status, goal, tier, idempotency_key,
                      status_changed_at, created_at, updated_at, iterations, tool_calls,
                      input_tokens, output_tokens)
  select $1, $2, $3, $4, $5, plan.tier, $6, $7, $7, $7, 0, 0, 0, 0
  from plan, slot
  returning id
), outbox_rows as (
  insert into outbox (stream, event_type, event_id, payload, created_at)
  select o.* from build,
         unnest($11::text[], $12::text[], $13::text[], $14::bytea[], $15::timestamptz[]) as o
)
select plan.tier, plan.max_active, plan.existing, exists (select 1 from build) as inserted
from plan
"""
_BY_ID: Final = "select * from builds where id = $1"


@dataclass(frozen=True, slots=True)
class Checked:
    """What the check saw (``tier`` None: the project is not the user's; ``max_active``: the
    limit of active builds of the user's plan)."""

    tier: str | None
    max_active: int
    existing: Build | None
    inserted: bool


async def _reset(conn: asyncpg.Connection) -> None:
    """What a released connection needs before its next use: nothing, unless a transaction was
    left open (a cancelled request). asyncpg's default reset runs ``RESET ALL``, ``UNLISTEN``,
    ``CLOSE ALL`` and ``pg_advisory_unlock_all()`` on every release: one more round trip per
    request for state these connections never create."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_write_pool(dsn: str, *, size: int) -> asyncpg.Pool:
    """The gateway's pool for creating builds (see :func:`_reset`)."""
    pool = await asyncpg.create_pool(
        dsn, min_size=min(2, size), max_size=size, reset=_reset, **DRIVER_TIMEOUTS
    )
    assert pool is not None
    return pool


class Conflict(Exception):
    """The idempotency key was taken by a concurrent request (unique violation)."""


async def create_build_pg(
    pool: asyncpg.Pool,
    *,
    build: NewBuild,
    limits: Mapping[str, int],
    events: Sequence[Event],
) -> Checked:
    """Insert ``build`` and ``events`` if the user's plan has a slot left, in one statement on
    the gateway's write pool (measured: a SQLAlchemy checkout with its pre-ping cost about a
    tenth of the throughput). ``limits``: tier -> active builds at most (the plans'
    ``max_active_builds``); another tier gets the domain's limit of an unknown tier.

    Returns what the check saw; ``inserted`` tells whether ``build`` went in (its ``tier`` is
    then set from the user's plan). Raises :class:`Conflict` when a concurrent request inserted
    the same idempotency key first.
    """
    async with pool.acquire() as conn:
        try:
            row = await conn.fetchrow(
                _CHECK_AND_INSERT,
                build.id,
                build.project_id,
                build.user_id,
                build.status,
                build.goal,
                build.idempotency_key,
                build.created_at,
                list(limits),
                list(limits.values()),
                unknown_tier_max_active_builds(limits.values()),
                *_columns(events, build.created_at),
            )
            existing = None
            if row is not None and row["existing"] is not None:
                found = await conn.fetchrow(_BY_ID, row["existing"])
                existing = None if found is None else Build(**dict(found))
        except asyncpg.UniqueViolationError:
            raise Conflict from None
    if row is None:
        return Checked(tier=None, max_active=0, existing=None, inserted=False)
    if row["inserted"]:
        build.tier = row["tier"]
    return Checked(
        tier=row["tier"],
        max_active=int(row["max_active"]),
        existing=existing,
        inserted=bool(row["inserted"]),
    )


def _columns(events: Sequence[Event], now: datetime) -> list[list[Any]]:
    return [
        [stream_for(type(e)).name for e in events],
        [e.type for e in events],
        [e.event_id for e in events],
        [encode(e) for e in events],
        [now] * len(events),
    ]
