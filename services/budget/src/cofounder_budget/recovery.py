"""Rebuilding the budget's Redis state after Redis lost it (a flush, a failover without
persistence), without waiting for the next usage event.

A sentinel key says "the counters are here". When it is missing (at start, or seen missing on a
later look), the service rebuilds from PostgreSQL, then sets the sentinel:

- each user with usage today: the day's counter (from the ledger, ``SET NX`` so a concurrent
  usage rebuild agrees), the day's budget and the gate (closed again for the users whose day is
  spent, so the next model call is refused as before);
- the sleeping builds (``builds.status = sleeping``, the gateway's projection, read only): back
  into the wake set, due at the reset, or at once when their user's gate is open.

Per-user rebuilding also happens lazily in the usage handler (a missing counter is rebuilt from
the ledger before counting); this covers the users who make no further call and the gate.
"""

from __future__ import annotations

import asyncio
from typing import Final

import structlog
from sqlalchemy import func, select

from cofounder_budget.handlers import BudgetDeps
from cofounder_budget.wake import remember_sleeping
from cofounder_budgeting import day_account, next_reset
from cofounder_contracts import AgentSleeping, envelope
from cofounder_db.models import BudgetLedgerRow, Build
from cofounder_runtime.periodic import every

__all__ = ["SENTINEL_KEY", "ensure_counters", "watch_counters"]

#: Present while Redis holds the budget's counters (no expiry).
SENTINEL_KEY: Final = "cofounder.budget.sentinel:counters"
_log = structlog.get_logger("cofounder.budgets.recovery")


async def ensure_counters(deps: BudgetDeps, *, sentinel: str = SENTINEL_KEY) -> bool:
    """Rebuild today's counters, gates and sleeping builds when Redis lost them; True if so."""
    if await deps.redis.exists(sentinel):
        return False
    now = deps.clock()
    day = now.date()
    resets_at = next_reset(now)
    ledger = BudgetLedgerRow.__table__
    async with deps.engine.connect() as conn:
        spent = (
            await conn.execute(
                select(ledger.c.user_id, func.sum(ledger.c.cost_micros))
                .where(ledger.c.day == day.isoformat())
                .group_by(ledger.c.user_id)
            )
        ).all()
        accounts = {
            user: await day_account(
                conn, user, day, plans=deps.plans, default_tier=deps.default_tier
            )
            for user, _ in spent
        }
        sleeping = (
            await conn.execute(
                select(Build.id, Build.project_id, Build.user_id).where(Build.status == "sleeping")
            )
        ).all()
    for user, total in spent:
        account = accounts[user]
        await deps.meter.restore_day(user_id=user, day=day.isoformat(), spent=int(total))
        await deps.meter.rebudget(
            user_id=user,
            day=day.isoformat(),
            budget=account.budget_micros,
            tier=account.tier,
            resets_at=resets_at,
        )
    for build_id, project_id, user_id in sleeping:
        await remember_sleeping(
            deps.redis,
            AgentSleeping(
                # The original sleep's id is gone with Redis: one derived from the build and
                # the reset (an id, as the wake's causation_id must be; the same on a rerun).
                **envelope(
                    build_id=build_id,
                    project_id=project_id,
                    user_id=user_id,
                    producer="budget",
                    kind=f"budget.recovered_sleep:{resets_at}",
                ),
                resets_at=resets_at,
                checkpoint_seq=0,
            ),
            key=deps.sleeping_key,
        )
    await deps.redis.set(sentinel, now.isoformat())
    log = _log.warning if spent or sleeping else _log.info  # an empty Redis at first start
    log(
        "budget counters rebuilt from the database", users=len(spent), sleeping_builds=len(sleeping)
    )
    return True


async def watch_counters(deps: BudgetDeps, stop: asyncio.Event, *, interval_s: float = 5.0) -> None:
    """Look for the sentinel now and every ``interval_s``; rebuild when it is gone (a failed
    rebuild is logged and tried again at the next look)."""
    await every(
        interval_s,
        lambda: ensure_counters(deps),
        stop,
        name="counters-watch",
        log=_log,
        failed="counter rebuild failed",
    )
