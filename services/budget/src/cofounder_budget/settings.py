"""The budget service's settings (environment variables, read when constructed)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from cofounder_budgeting import PlanSettings
from cofounder_runtime.settings import DEFAULT_DATABASE_URL, DatabaseUrl, RuntimeSettings

__all__ = ["BudgetSettings"]


class BudgetSettings(RuntimeSettings, PlanSettings):
    database_url: DatabaseUrl = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        description="PostgreSQL URL, postgresql://… (the ledger; users' tiers); no other "
        "database is supported.",
    )
    database_pool_size: int = Field(
        default=20,
        description="PostgreSQL connections this process keeps at most (per pool): with every "
        "replica of every service, within the server's max_connections.",
    )
    wake_interval_s: float = Field(default=1.0, description="How often the wake daemon looks.")
    counters_check_interval_s: float = Field(
        default=5.0,
        description="How often the service checks that Redis still holds its counters "
        "(rebuilt from the ledger when not).",
    )
