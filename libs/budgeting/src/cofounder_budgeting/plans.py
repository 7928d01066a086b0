"""Plans and the daily budget.

A plan gives a monthly allowance (micros). The billing cycle is the calendar month in UTC, and a
user's day rolls over at 00:00 UTC (one rule for everyone: the reset time is the same wherever
the founder is, and every replica computes it alike).

    daily budget = (allowance + top-ups before today - spent before today) / days left
                   + top-ups granted today                     (all within the cycle; never < 0)

where "days left" counts today. So an unused day's budget carries forward to the rest of the
month; overspending one day (by at most the calls in flight) is paid back by the following days;
a top-up is usable in full the day it is granted (it wakes sleeping builds at once), and what of
it is left at the end of that day joins the pool spread over the rest of the cycle. Top-ups end
with their cycle.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final

__all__ = ["DEFAULT_PLANS", "Plan", "cycle_start", "daily_budget", "days_left", "next_reset"]


@dataclass(frozen=True, slots=True)
class Plan:
    monthly_allowance_micros: int


DEFAULT_PLANS: Final[Mapping[str, Plan]] = {
    "bootstrapper": Plan(monthly_allowance_micros=30_000_000),  # $30
    "founder": Plan(monthly_allowance_micros=150_000_000),
    "pro": Plan(monthly_allowance_micros=600_000_000),
}


def cycle_start(day: date) -> date:
    return day.replace(day=1)


def days_left(day: date) -> int:
    """Days left in the cycle, ``day`` included."""
    return calendar.monthrange(day.year, day.month)[1] - day.day + 1


def daily_budget(
    plan: Plan,
    *,
    day: date,
    spent_before_today: int,
    topups_before_today: int = 0,
    topups_today: int = 0,
) -> int:
    pool = max(0, plan.monthly_allowance_micros + topups_before_today - spent_before_today)
    return pool // days_left(day) + topups_today


def next_reset(now: datetime) -> datetime:
    """The next 00:00 UTC after ``now``."""
    today = now.astimezone(UTC).date()
    return datetime.combine(today + timedelta(days=1), time(0), tzinfo=UTC)
