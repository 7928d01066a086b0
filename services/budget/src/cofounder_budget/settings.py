"""The budget service's settings (environment variables, read when constructed)."""

from __future__ import annotations

from pydantic import Field

from cofounder_runtime.settings import RuntimeSettings

__all__ = ["BudgetSettings"]


class BudgetSettings(RuntimeSettings):
    database_url: str = Field(
        default="sqlite+aiosqlite:///.cofounder/cofounder.db",
        description="PostgreSQL or SQLite URL (the ledger; users' tiers).",
    )
    plans_monthly_allowance_micros: dict[str, int] = Field(
        default={"bootstrapper": 30_000_000, "founder": 150_000_000, "pro": 600_000_000},
        description="Tier -> monthly allowance in micros of the currency (JSON).",
    )
    default_tier: str = Field(default="bootstrapper", description="Plan of users without a tier.")
    wake_interval_s: float = Field(default=1.0, description="How often the wake daemon looks.")
