"""A user's budget account for one day, computed from the durable tables (``users``,
``budget_ledger``, ``budget_topups``): what the budget service caches in Redis each day and what
the gateway reports. Two queries, each one pass over the user's rows of the cycle."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from sqlalchemy import ColumnElement, case, func, select
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


def _split(
    column: ColumnElement[int], day_column: ColumnElement[str], day: date
) -> tuple[ColumnElement[int], ColumnElement[int]]:
    """Sums of ``column`` over the rows before ``day`` and on it."""
    today = day.isoformat()
    before = func.coalesce(func.sum(case((day_column < today, column), else_=0)), 0)
    on_day = func.coalesce(func.sum(case((day_column == today, column), else_=0)), 0)
    return before, on_day


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
    window = (cycle_start(day).isoformat(), day.isoformat())
    spent_before, spent_today = _split(_LEDGER.c.cost_micros, _LEDGER.c.day, day)
    spent = (
        await conn.execute(
            select(spent_before, spent_today).where(
                _LEDGER.c.user_id == user_id, _LEDGER.c.day.between(*window)
            )
        )
    ).one()
    topped_before, topped_today = _split(_TOPUPS.c.amount_micros, _TOPUPS.c.day, day)
    topped = (
        await conn.execute(
            select(topped_before, topped_today).where(
                _TOPUPS.c.user_id == user_id, _TOPUPS.c.day.between(*window)
            )
        )
    ).one()
    before, today = int(spent[0]), int(spent[1])
    top_before, top_today = int(topped[0]), int(topped[1])
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
