"""The budget rules, in one place: the budget service enforces them, the gateway reports them."""

from cofounder_budgeting.account import DayAccount, day_account
from cofounder_budgeting.plans import (
    DEFAULT_PLANS,
    Plan,
    cycle_start,
    daily_budget,
    days_left,
    next_reset,
)
from cofounder_budgeting.settings import PlanSettings

__all__ = [
    "DEFAULT_PLANS",
    "DayAccount",
    "Plan",
    "PlanSettings",
    "cycle_start",
    "daily_budget",
    "day_account",
    "days_left",
    "next_reset",
]
