"""Plans and limits (no I/O)."""

from __future__ import annotations

import pytest

from cofounder_domain.plans import (
    DEFAULT_PLANS,
    DEFAULT_TIER,
    UNKNOWN_TIER_MAX_TOOL_CALLS,
    BuildBlocked,
    Plan,
    UnknownTier,
    log_archive_days,
    max_active_builds,
    max_tool_calls,
    may_start_build,
    plan_for,
    plans_from,
    resolve_model,
    unknown_tier_max_active_builds,
)

MODELS = {
    "bootstrapper": {"coder": "m-small"},
    "pro": {"coder": "m-large", "reviewer": "m-mid"},
}


def test_the_default_plans() -> None:
    assert dict(DEFAULT_PLANS) == {
        "bootstrapper": Plan(30_000_000, 2, 150, {"coder": "claude-sonnet-5-5"}, 30),
        "founder": Plan(150_000_000, 5, 150, {"coder": "claude-sonnet-5-5"}, 90),
        "pro": Plan(600_000_000, 10, 300, {"coder": "claude-opus-5-5"}, 365),
    }
    assert DEFAULT_TIER in DEFAULT_PLANS


def test_the_budget_gives_an_unknown_tier_the_default_plan() -> None:
    assert plan_for(DEFAULT_PLANS, "pro", default_tier="founder") == ("pro", DEFAULT_PLANS["pro"])
    for tier in ("enterprise", None):
        assert plan_for(DEFAULT_PLANS, tier, default_tier="founder") == (
            "founder",
            DEFAULT_PLANS["founder"],
        )


def test_active_builds_of_an_unknown_tier_are_the_smallest_limit() -> None:
    assert max_active_builds(DEFAULT_PLANS, "founder") == 5
    assert max_active_builds(DEFAULT_PLANS, "enterprise") == 2
    assert unknown_tier_max_active_builds([7, 3, 9]) == 3
    assert unknown_tier_max_active_builds([]) == 1
    assert max_active_builds({}, "anyone") == 1


def test_a_slot_is_free_below_the_limit() -> None:
    assert may_start_build(0, 1)
    assert may_start_build(1, 2)
    assert not may_start_build(2, 2)
    assert not may_start_build(3, 2)
    assert not may_start_build(0, 0)


def test_tool_calls_of_an_unknown_tier() -> None:
    assert max_tool_calls(DEFAULT_PLANS, "pro") == 300
    assert max_tool_calls(DEFAULT_PLANS, "enterprise") == UNKNOWN_TIER_MAX_TOOL_CALLS == 150


def test_plans_from_tables_answer_like_the_tables() -> None:
    plans = plans_from(
        allowances={"bootstrapper": 10, "pro": 100},
        active_builds={"pro": 4, "bench": 1_000},
        tool_calls={"bootstrapper": 3},
        models=MODELS,
        default_tier="bootstrapper",
    )
    assert list(plans) == ["bootstrapper", "pro", "bench"]
    assert plans["bench"] == Plan(10, 1_000, UNKNOWN_TIER_MAX_TOOL_CALLS, {})
    assert plans["bootstrapper"] == Plan(10, 4, 3, {"coder": "m-small"})
    assert plans["pro"] == Plan(100, 4, UNKNOWN_TIER_MAX_TOOL_CALLS, MODELS["pro"])
    # The same answer for a tier named by no table as for one missing from a table.
    assert max_active_builds(plans, "nobody") == 4
    assert max_tool_calls(plans, "nobody") == UNKNOWN_TIER_MAX_TOOL_CALLS
    with pytest.raises(UnknownTier):
        resolve_model({t: p.models for t, p in plans.items()}, tier="bench")


def test_plans_need_the_default_tier_s_allowance() -> None:
    with pytest.raises(ValueError, match="'founder' has no monthly allowance"):
        plans_from(
            allowances={"pro": 1},
            active_builds={},
            tool_calls={},
            models={},
            default_tier="founder",
        )


def test_models_by_tier_and_role_and_suspended_users() -> None:
    assert resolve_model(MODELS, tier="bootstrapper") == "m-small"
    assert resolve_model(MODELS, tier="pro") == "m-large"
    assert resolve_model(MODELS, tier="pro", role="reviewer") == "m-mid"
    with pytest.raises(UnknownTier, match="tier 'enterprise'"):
        resolve_model(MODELS, tier="enterprise")
    with pytest.raises(UnknownTier, match="'reviewer'"):
        resolve_model(MODELS, tier="bootstrapper", role="reviewer")
    with pytest.raises(BuildBlocked, match=r"^Build blocked: chargeback$"):
        resolve_model(MODELS, tier="pro", suspended=True, suspension_reason="chargeback")
    with pytest.raises(BuildBlocked, match="Build blocked: the account is suspended"):
        resolve_model(MODELS, tier="pro", suspended=True)


def test_log_archives_are_kept_per_tier_and_an_unknown_tier_keeps_the_default_tier_s() -> None:
    assert log_archive_days(DEFAULT_PLANS, "pro", default_tier="bootstrapper") == 365
    for tier in ("enterprise", None):
        assert log_archive_days(DEFAULT_PLANS, tier, default_tier="founder") == 90
    plans = plans_from(
        allowances={"bootstrapper": 1, "pro": 2},
        active_builds={},
        tool_calls={},
        models={},
        archive_days={"bootstrapper": 7, "enterprise": 3650},
    )
    # A tier the table does not name keeps the default tier's; the table names no plan.
    assert {t: p.log_archive_days for t, p in plans.items()} == {"bootstrapper": 7, "pro": 7}
