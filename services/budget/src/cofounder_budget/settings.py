"""The budget service's settings (environment variables, read when constructed)."""

from __future__ import annotations

from pydantic import Field

from cofounder_budgeting import PlanSettings
from cofounder_runtime.settings import RuntimeSettings

__all__ = ["BudgetSettings"]


class BudgetSettings(RuntimeSettings, PlanSettings):
    database_url: str = Field(
        default="sqlite+aiosqlite:///.cofounder/cofounder.db",
        description="PostgreSQL or SQLite URL (the ledger; users' tiers).",
    )
    wake_interval_s: float = Field(default=1.0, description="How often the wake daemon looks.")
