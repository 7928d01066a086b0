"""Plans and limits: one :class:`Plan` per tier, and how a tier finds its plan.

A plan is what a tier of founders gets: a monthly allowance (micros of the currency), how many
builds may be queued or running at once, how many tool calls one build may make, and the model
the agent uses for each role. The services read their limits from here; the settings
(``cofounder_budgeting.settings.PlanSettings``) only say which numbers a deployment uses.

A tier the configuration does not name is not refused the same way by every rule; each rule
below says what it does, and these are the only copies of those rules:

- the budget: the default tier's plan (:func:`plan_for`);
- active builds: the smallest limit configured (:func:`max_active_builds`);
- tool calls per build: :data:`UNKNOWN_TIER_MAX_TOOL_CALLS` (:func:`max_tool_calls`);
- models: none, the build is refused (:func:`resolve_model` raises :class:`UnknownTier`);
- the log archive's retention: the default tier's (:func:`log_archive_days`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_LOG_ARCHIVE_DAYS",
    "DEFAULT_PLANS",
    "DEFAULT_TIER",
    "UNKNOWN_TIER_MAX_TOOL_CALLS",
    "BuildBlocked",
    "Plan",
    "UnknownTier",
    "log_archive_days",
    "max_active_builds",
    "max_tool_calls",
    "may_start_build",
    "plan_for",
    "plans_from",
    "resolve_model",
    "unknown_tier_max_active_builds",
]


#: Days a log archive is kept when neither the tier nor the default tier names a retention.
DEFAULT_LOG_ARCHIVE_DAYS: Final = 30


@dataclass(frozen=True, slots=True)
class Plan:
    """What one tier gets."""

    monthly_allowance_micros: int
    max_active_builds: int
    max_tool_calls: int
    models: Mapping[str, str]  # role -> model
    #: Days a finished build's log archive is kept (docs/adr/0009-log-archive.md).
    log_archive_days: int = DEFAULT_LOG_ARCHIVE_DAYS


#: The plan of a user whose tier is unknown, for the budget.
DEFAULT_TIER: Final = "bootstrapper"
#: Tool calls a build may make when its tier has no limit configured.
UNKNOWN_TIER_MAX_TOOL_CALLS: Final = 150

_SONNET: Final[Mapping[str, str]] = {"coder": "claude-sonnet-5-5"}
_OPUS: Final[Mapping[str, str]] = {"coder": "claude-opus-5-5"}

#: The plans of a deployment that configures none.
DEFAULT_PLANS: Final[Mapping[str, Plan]] = {
    # Plan(monthly allowance in micros, active builds, tool calls per build, models, log days)
    "bootstrapper": Plan(30_000_000, 2, 150, _SONNET, 30),  # $30
    "founder": Plan(150_000_000, 5, 150, _SONNET, 90),  # $150
    "pro": Plan(600_000_000, 10, 300, _OPUS, 365),  # $600
}


def unknown_tier_max_active_builds(limits: Iterable[int]) -> int:
    """The limit of active builds of a tier not configured: the smallest of ``limits`` (the
    configured tiers'), 1 when there is none."""
    return min(limits, default=1)


def plans_from(
    *,
    allowances: Mapping[str, int],
    active_builds: Mapping[str, int],
    tool_calls: Mapping[str, int],
    models: Mapping[str, Mapping[str, str]],
    default_tier: str = DEFAULT_TIER,
    archive_days: Mapping[str, int] | None = None,
) -> dict[str, Plan]:
    """One plan for every tier any of the tables names (the settings keep one table per limit).

    A tier missing from one table gets what an unknown tier gets by that table's rule, so a
    lookup answers the same whether it goes through the plans or the table: the default tier's
    allowance, the smallest limit of active builds, :data:`UNKNOWN_TIER_MAX_TOOL_CALLS`, no
    model, the default tier's log archive retention (or :class:`Plan`'s default when the table
    does not name it). Raises :class:`ValueError` when the default tier has no allowance.
    """
    if default_tier not in allowances:
        raise ValueError(f"the default tier {default_tier!r} has no monthly allowance")
    smallest = unknown_tier_max_active_builds(active_builds.values())
    days = archive_days or {}
    default_days = days.get(default_tier, DEFAULT_LOG_ARCHIVE_DAYS)
    # The retention table names no tier of its own: a tier only it names is not a plan.
    tiers = dict.fromkeys([*allowances, *active_builds, *tool_calls, *models])
    return {
        tier: Plan(
            monthly_allowance_micros=allowances.get(tier, allowances[default_tier]),
            max_active_builds=active_builds.get(tier, smallest),
            max_tool_calls=tool_calls.get(tier, UNKNOWN_TIER_MAX_TOOL_CALLS),
            models=dict(models.get(tier, {})),
            log_archive_days=days.get(tier, default_days),
        )
        for tier in tiers
    }


def plan_for(plans: Mapping[str, Plan], tier: str | None, *, default_tier: str) -> tuple[str, Plan]:
    """The tier the budget applies to a user of ``tier`` (None: no tier), and its plan: the
    default tier's for a tier the plans do not name."""
    found = tier if tier is not None and tier in plans else default_tier
    return found, plans[found]


def max_active_builds(plans: Mapping[str, Plan], tier: str) -> int:
    """Builds a user of ``tier`` may have queued or running at once."""
    plan = plans.get(tier)
    if plan is not None:
        return plan.max_active_builds
    return unknown_tier_max_active_builds(p.max_active_builds for p in plans.values())


def log_archive_days(plans: Mapping[str, Plan], tier: str | None, *, default_tier: str) -> int:
    """Days a finished build of ``tier`` keeps its log archive: the default tier's for a tier
    the plans do not name (as the budget)."""
    return plan_for(plans, tier, default_tier=default_tier)[1].log_archive_days


def may_start_build(active: int, limit: int) -> bool:
    """Whether a user with ``active`` builds not ended may start one more under ``limit``."""
    return active < limit


def max_tool_calls(plans: Mapping[str, Plan], tier: str) -> int:
    """Tool calls one build of ``tier`` may make."""
    plan = plans.get(tier)
    return UNKNOWN_TIER_MAX_TOOL_CALLS if plan is None else plan.max_tool_calls


class BuildBlocked(Exception):
    """The user may not build now (suspended); the message is the founder-facing reason."""


class UnknownTier(Exception):
    """The tier has no model for the role in the configured map."""


def resolve_model(
    models: Mapping[str, Mapping[str, str]],
    *,
    tier: str,
    role: str = "coder",
    suspended: bool = False,
    suspension_reason: str | None = None,
) -> str:
    """The model for ``role`` on ``tier`` (``models``: tier -> role -> model, as
    :attr:`Plan.models` per tier); :class:`BuildBlocked` for a suspended user,
    :class:`UnknownTier` when no model is configured."""
    if suspended:
        raise BuildBlocked(f"Build blocked: {suspension_reason or 'the account is suspended'}")
    try:
        return models[tier][role]
    except KeyError:
        raise UnknownTier(f"no {role!r} model is configured for tier {tier!r}") from None
