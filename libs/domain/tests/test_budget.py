"""The daily-budget formula and the 80 %/100 % thresholds (no I/O)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from fractions import Fraction

import pytest

from cofounder_domain.budget import (
    EXHAUSTED_AT,
    WARN_AT,
    Crossed,
    crossed,
    cycle_start,
    daily_budget,
    days_left,
    next_reset,
    reached,
)
from cofounder_domain.plans import DEFAULT_PLANS, Plan

PLAN = Plan(monthly_allowance_micros=30_000_000, max_active_builds=1, max_tool_calls=1, models={})


def test_the_cycle_is_the_calendar_month() -> None:
    assert cycle_start(date(2026, 11, 17)) == date(2026, 11, 1)
    assert days_left(date(2026, 11, 1)) == 30
    assert days_left(date(2026, 11, 30)) == 1
    assert days_left(date(2028, 2, 1)) == 29  # a leap year


def test_the_daily_budget() -> None:
    assert daily_budget(PLAN, day=date(2026, 11, 1), spent_before_today=0) == 1_000_000
    assert daily_budget(PLAN, day=date(2026, 11, 30), spent_before_today=29_000_000) == 1_000_000
    assert daily_budget(PLAN, day=date(2026, 11, 16), spent_before_today=45_000_000) == 0
    # Top-ups: usable in full the day they are granted; what is left joins the cycle's pool.
    day = date(2026, 11, 21)  # 10 days left
    assert daily_budget(PLAN, day=day, spent_before_today=20_000_000, topups_today=5_000_000) == (
        1_000_000 + 5_000_000
    )
    assert (
        daily_budget(PLAN, day=day, spent_before_today=20_000_000, topups_before_today=10_000_000)
        == (30_000_000 + 10_000_000 - 20_000_000) // 10
    )
    # Overspent beyond the pool: nothing today but the day's top-ups.
    assert daily_budget(PLAN, day=day, spent_before_today=99_000_000, topups_today=7) == 7
    assert daily_budget(DEFAULT_PLANS["pro"], day=date(2026, 11, 1), spent_before_today=0) == (
        20_000_000
    )


def test_the_reset_is_the_next_midnight_utc() -> None:
    assert next_reset(datetime(2026, 11, 25, 23, 59, tzinfo=UTC)) == datetime(
        2026, 11, 26, tzinfo=UTC
    )
    assert next_reset(datetime(2026, 11, 25, tzinfo=UTC)) == datetime(2026, 11, 26, tzinfo=UTC)
    east = timezone(timedelta(hours=9))  # 01:00 on the 26th there is 16:00 on the 25th in UTC
    assert next_reset(datetime(2026, 11, 26, 1, tzinfo=east)) == datetime(2026, 11, 26, tzinfo=UTC)


def test_the_thresholds_are_80_and_100_percent() -> None:
    assert (WARN_AT, EXHAUSTED_AT) == ((8, 10), (1, 1))
    assert crossed(0, 1_000) == Crossed(warn=False, exhausted=False)
    assert crossed(799, 1_000) == (False, False)
    assert crossed(800, 1_000) == (True, False)
    assert crossed(999, 1_000) == (True, False)
    assert crossed(1_000, 1_000) == (True, True)
    assert crossed(5_000, 1_000) == (True, True)
    assert crossed(0, 0) == (True, True)  # no budget today: exhausted at once
    assert crossed(7, 10) == (False, False)
    assert crossed(8, 10) == (True, False)


@pytest.mark.parametrize("budget", [1, 3, 7, 10, 11, 999, 1_000_003])
def test_reached_is_exact(budget: int) -> None:
    for spent in range(0, 2 * budget + 2, max(1, budget // 50)):
        assert reached(spent, budget, WARN_AT) == (Fraction(spent, budget) >= Fraction(4, 5))
        assert reached(spent, budget, EXHAUSTED_AT) == (spent >= budget)
