"""The PostgreSQL fast path of :func:`builds.create_build`, on the asyncpg driver directly.

Measured (``benchmarks/gateway.py``): through SQLAlchemy's async execution layer a trivial
transaction costs about 0.6 ms of this process's time against 0.25 ms on the driver, and
``POST /builds`` ran at a tenth of a raw-asyncpg reference. Creating a build is the one write on
the request path that must be fast, so it takes the connection from the same SQLAlchemy pool and
runs three prepared statements on it: one read (ownership, plan, active count, the user's row
locked), the build row, its outbox rows. SQLite (the embedded default) keeps the portable path
in ``builds.py``; the tests run both.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Final

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_contracts import Event, encode
from cofounder_contracts.streams import stream_for
from cofounder_db.models import Build

__all__ = ["Conflict", "create_build_pg"]

# The per-user lock comes first, in a statement of its own: under READ COMMITTED each statement
# reads a snapshot taken when it starts, so a count in the same statement as the lock could miss
# a build committed by the request it waited for. It is a transaction-scoped advisory lock rather
# than ``FOR UPDATE`` on the user's row: it serialises one user's count-then-insert the same way
# without writing a row lock into ``users`` on every request.
_LOCK: Final = "select pg_advisory_xact_lock(hashtextextended($1, 42))"
_CHECK: Final = """
select u.tier,
       (select count(*) from builds b where b.user_id = u.id and b.status = any($3::text[]))
         as active
from users u join projects p on p.owner_id = u.id
where u.id = $1 and p.id = $2
"""
_BY_KEY: Final = "select * from builds where user_id = $1 and idempotency_key = $2"
# One round trip for the writes: the build row and its outbox rows.
_INSERT: Final = """
with build as (
  insert into builds (id, project_id, user_id, status, goal, tier, idempotency_key,
                      status_changed_at, created_at, updated_at, iterations, tool_calls,
                      input_tokens, output_tokens)
  values ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8, 0, 0, 0, 0)
  returning id
)
insert into outbox (stream, event_type, event_id, payload, created_at)
select o.* from build,
       unnest($9::text[], $10::text[], $11::text[], $12::bytea[], $13::timestamptz[]) as o
"""


class Conflict(Exception):
    """The idempotency key was taken by a concurrent request (unique violation)."""


async def create_build_pg(
    engine: AsyncEngine,
    *,
    pool: asyncpg.Pool | None = None,
    build: Build,
    active_statuses: Sequence[str],
    events: Sequence[Event],
    on_checked: Any,
) -> Build | None:
    """Insert ``build`` and ``events`` in one transaction if ``on_checked`` allows it.

    ``on_checked(tier, active, existing)`` sees the user's plan, active builds and any build
    under the same idempotency key; it raises to refuse, returns a build to answer with instead,
    or ``None`` to go ahead. Returns what it returned, or None when ``build`` was inserted.
    Raises :class:`Conflict` when a concurrent request inserted the same key first.
    """
    async with _connection(engine, pool) as conn:
        try:
            async with conn.transaction():
                await conn.execute(_LOCK, build.user_id)
                row = await conn.fetchrow(
                    _CHECK, build.user_id, build.project_id, list(active_statuses)
                )
                existing = None
                if row is not None and build.idempotency_key is not None:
                    found = await conn.fetchrow(_BY_KEY, build.user_id, build.idempotency_key)
                    existing = None if found is None else Build(**dict(found))
                answer = on_checked(
                    None if row is None else row["tier"],
                    0 if row is None else row["active"],
                    existing,
                )
                if answer is not None:
                    return answer  # type: ignore[no-any-return]
                build.tier = row["tier"] if row is not None else build.tier
                await conn.execute(
                    _INSERT,
                    build.id,
                    build.project_id,
                    build.user_id,
                    build.status,
                    build.goal,
                    build.tier,
                    build.idempotency_key,
                    build.created_at,
                    *_columns(events, build.created_at),
                )
        except asyncpg.UniqueViolationError:
            raise Conflict from None
    return None


@contextlib.asynccontextmanager
async def _connection(engine: AsyncEngine, pool: asyncpg.Pool | None) -> AsyncIterator[Any]:
    """A driver connection: from the gateway's asyncpg pool when it has one (measured: the
    SQLAlchemy checkout with its pre-ping cost about a tenth of the throughput), else from the
    engine's pool."""
    if pool is not None:
        async with pool.acquire() as pooled:
            yield pooled
        return
    async with engine.connect() as sa_conn:
        driver = (await sa_conn.get_raw_connection()).driver_connection
        assert isinstance(driver, asyncpg.Connection), "the PostgreSQL driver must be asyncpg"
        yield driver


def _columns(events: Sequence[Event], now: datetime) -> list[list[Any]]:
    return [
        [stream_for(type(e)).name for e in events],
        [e.type for e in events],
        [e.event_id for e in events],
        [encode(e) for e in events],
        [now] * len(events),
    ]
