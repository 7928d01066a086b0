"""The budget service's settings (environment variables, read when constructed)."""

from __future__ import annotations

from pydantic import Field

from cofounder_budgeting import PlanSettings
from cofounder_db.settings import DatabaseSettings
from cofounder_runtime.settings import RuntimeSettings

__all__ = ["BudgetSettings"]


class BudgetSettings(RuntimeSettings, DatabaseSettings, PlanSettings):
    wake_interval_s: float = Field(default=1.0, description="How often the wake daemon looks.")
    counters_check_interval_s: float = Field(
        default=5.0,
        description="How often the service checks that Redis still holds its counters "
        "(rebuilt from the ledger when not).",
    )
