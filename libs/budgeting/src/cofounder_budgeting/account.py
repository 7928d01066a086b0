"""A user's budget account for one day, computed from the durable tables (``users``,
``budget_ledger``, ``budget_topups``): what the budget service caches in Redis each day and what
the gateway reports. Two queries, each one pass over the user's rows of the cycle."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from sqlalchemy import FromClause, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cofounder_db.models import BudgetLedgerRow, BudgetTopUpRow, User
from cofounder_domain.budget import cycle_start, daily_budget
from cofounder_domain.plans import Plan, plan_for

__all__ = ["DayAccount", "day_account"]

_LEDGER = BudgetLedgerRow.__table__
_TOPUPS = BudgetTopUpRow.__table__


@dataclass(frozen=True, slots=True)
class DayAccount:
    tier: str
    budget_micros: int
    spent_micros: int  # today, from the ledger
    spent_before_today_micros: int  # in the cycle
    topups_today_micros: int
    topups_before_today_micros: int  # in the cycle


async def _split(
    conn: AsyncConnection, table: FromClause, amount: str, user_id: str, day: date
) -> tuple[int, int]:
    """Sums of ``table``'s ``amount`` over the user's rows of the cycle: before ``day``, on it."""
    today = day.isoformat()
    column, day_column = table.c[amount], table.c.day
    before = func.coalesce(func.sum(case((day_column < today, column), else_=0)), 0)
    on_day = func.coalesce(func.sum(case((day_column == today, column), else_=0)), 0)
    window = (cycle_start(day).isoformat(), today)
    query = select(before, on_day).where(table.c.user_id == user_id, day_column.between(*window))
    row = (await conn.execute(query)).one()
    return int(row[0]), int(row[1])


async def day_account(
    conn: AsyncConnection,
    user_id: str,
    day: date,
    *,
    plans: Mapping[str, Plan],
    default_tier: str,
) -> DayAccount:
    """The account of ``user_id`` on ``day`` (an unknown user or tier: the default plan)."""
    found = (await conn.execute(select(User.tier).where(User.id == user_id))).scalar()
    tier, plan = plan_for(plans, found, default_tier=default_tier)
    before, today = await _split(conn, _LEDGER, "cost_micros", user_id, day)
    top_before, top_today = await _split(conn, _TOPUPS, "amount_micros", user_id, day)
    return DayAccount(
        tier=tier,
        budget_micros=daily_budget(
            plan,
            day=day,
            spent_before_today=before,
            topups_before_today=top_before,
            topups_today=top_today,
        ),
        spent_micros=today,
        spent_before_today_micros=before,
        topups_today_micros=top_today,
        topups_before_today_micros=top_before,
    )
