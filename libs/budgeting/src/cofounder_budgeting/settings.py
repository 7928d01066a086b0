"""The plan settings every service that applies a plan reads alike (same variables, same
defaults): the budget service enforces the allowance the gateway reports, the gateway limits the
active builds, the agent runner the tool calls and the models. One table per limit, as the
deployment writes them; :meth:`PlanSettings.plans` makes them the domain's one
:class:`~cofounder_domain.plans.Plan` per tier."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from cofounder_domain.plans import (
    DEFAULT_PLANS,
    DEFAULT_TIER,
    UNKNOWN_TIER_MAX_TOOL_CALLS,
    Plan,
    plans_from,
)
from cofounder_domain.plans import max_tool_calls as tool_calls_limit

__all__ = ["PlanSettings"]


class PlanSettings(BaseSettings):
    plans_monthly_allowance_micros: dict[str, int] = Field(
        default={t: p.monthly_allowance_micros for t, p in DEFAULT_PLANS.items()},
        description="Tier -> monthly allowance in micros of the currency (JSON). The billing "
        "cycle is the calendar month in UTC; days roll over at 00:00 UTC.",
    )
    default_tier: str = Field(
        default=DEFAULT_TIER,
        description="Plan of users without a tier, or of a tier with no allowance; must have "
        "an allowance.",
    )
    tier_max_concurrent_builds: dict[str, int] = Field(
        default={t: p.max_active_builds for t, p in DEFAULT_PLANS.items()},
        description="Builds a user of each tier may have queued or running at once (JSON); "
        "the smallest of them for other tiers.",
    )
    max_tool_calls: dict[str, int] = Field(
        default={t: p.max_tool_calls for t, p in DEFAULT_PLANS.items()},
        description="Tool calls a build of each tier may make (JSON); "
        f"{UNKNOWN_TIER_MAX_TOOL_CALLS} for other tiers.",
    )
    model_map: dict[str, dict[str, str]] = Field(
        default={t: dict(p.models) for t, p in DEFAULT_PLANS.items()},
        description="Tier -> role -> model (JSON); a build of a tier with no model fails.",
    )
    log_archive_days: dict[str, int] = Field(
        default={t: p.log_archive_days for t, p in DEFAULT_PLANS.items()},
        description="Tier -> days a finished build's log archive is kept (JSON); the default "
        "tier's for other tiers (and for a tier no other plan table names). The snapshot "
        "service deletes older archives (LOG_ARCHIVE_PRUNE_INTERVAL_S).",
    )

    def plans(self) -> dict[str, Plan]:
        """One plan per tier any of the tables names (see ``cofounder_domain.plans``)."""
        return plans_from(
            allowances=self.plans_monthly_allowance_micros,
            active_builds=self.tier_max_concurrent_builds,
            tool_calls=self.max_tool_calls,
            models=self.model_map,
            default_tier=self.default_tier,
            archive_days=self.log_archive_days,
        )

    def max_tool_calls_for(self, tier: str) -> int:
        """Tool calls one build of ``tier`` may make."""
        return tool_calls_limit(self.plans(), tier)

    @model_validator(mode="after")
    def _default_tier_has_a_plan(self) -> Self:
        if self.default_tier not in self.plans_monthly_allowance_micros:
            raise ValueError(
                f"DEFAULT_TIER: {self.default_tier!r} has no allowance in "
                "PLANS_MONTHLY_ALLOWANCE_MICROS"
            )
        return self
