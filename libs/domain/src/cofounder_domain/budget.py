"""The daily budget and its thresholds.

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

Two thresholds of the day's spend against its budget: at :data:`WARN_AT` the founder is warned,
at :data:`EXHAUSTED_AT` the gate closes until the reset (builds sleep). Each is a ratio
``(numerator, denominator)`` of integers, so the comparison is exact in every language that
carries it out (the budget service's Lua script is generated from these two constants and tested
against :func:`crossed`).
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, NamedTuple

from cofounder_domain.plans import Plan

__all__ = [
    "EXHAUSTED_AT",
    "WARN_AT",
    "Crossed",
    "crossed",
    "cycle_start",
    "daily_budget",
    "days_left",
    "next_reset",
    "reached",
]

#: The spend, as a share of the day's budget, that warns the founder: 80 %.
WARN_AT: Final[tuple[int, int]] = (8, 10)
#: The spend, as a share of the day's budget, that exhausts it: 100 %.
EXHAUSTED_AT: Final[tuple[int, int]] = (1, 1)


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


def reached(spent: int, budget: int, at: tuple[int, int]) -> bool:
    """Whether ``spent`` is at least the share ``at`` of ``budget`` (exact: integers only)."""
    numerator, denominator = at
    return spent * denominator >= budget * numerator


class Crossed(NamedTuple):
    """The thresholds a day's spend has reached."""

    warn: bool
    exhausted: bool


def crossed(spent: int, budget: int) -> Crossed:
    """Which thresholds ``spent`` has reached of the day's ``budget`` (a budget of 0 is
    exhausted at once)."""
    return Crossed(
        warn=reached(spent, budget, WARN_AT), exhausted=reached(spent, budget, EXHAUSTED_AT)
    )
