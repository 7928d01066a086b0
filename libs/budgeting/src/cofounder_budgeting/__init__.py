"""A user's budget account, computed from the durable tables, and the plan settings: what the
budget service enforces and the gateway reports. The rules themselves (plans, the daily-budget
formula, the thresholds) are the domain's (``cofounder_domain.plans``, ``cofounder_domain.budget``),
re-exported here for the callers that read them with the account."""

from cofounder_budgeting.account import DayAccount, day_account
from cofounder_budgeting.settings import PlanSettings
from cofounder_domain.budget import cycle_start, daily_budget, days_left, next_reset
from cofounder_domain.plans import DEFAULT_PLANS, Plan

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
