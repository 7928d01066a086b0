"""The plan settings the budget service and the gateway read alike (same variables, same
defaults), so the budget one enforces is the budget the other reports."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from cofounder_budgeting.plans import DEFAULT_PLANS, Plan

__all__ = ["PlanSettings"]


class PlanSettings(BaseSettings):
    plans_monthly_allowance_micros: dict[str, int] = Field(
        default={t: p.monthly_allowance_micros for t, p in DEFAULT_PLANS.items()},
        description="Tier -> monthly allowance in micros of the currency (JSON). The billing "
        "cycle is the calendar month in UTC; days roll over at 00:00 UTC.",
    )
    default_tier: str = Field(default="bootstrapper", description="Plan of users without a tier.")

    def plans(self) -> dict[str, Plan]:
        return {t: Plan(a) for t, a in self.plans_monthly_allowance_micros.items()}
