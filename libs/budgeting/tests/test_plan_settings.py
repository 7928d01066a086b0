"""The plan settings: the variables every plan-reading service shares, made the domain's plans."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cofounder_budgeting import PlanSettings
from cofounder_domain.plans import DEFAULT_PLANS, Plan, max_active_builds


def test_the_defaults_are_the_domain_s_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "PLANS_MONTHLY_ALLOWANCE_MICROS",
        "DEFAULT_TIER",
        "TIER_MAX_CONCURRENT_BUILDS",
        "MAX_TOOL_CALLS",
        "MODEL_MAP",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = PlanSettings()
    assert settings.plans() == dict(DEFAULT_PLANS)
    assert settings.default_tier == "bootstrapper"


def test_one_plan_per_tier_from_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANS_MONTHLY_ALLOWANCE_MICROS", '{"bootstrapper": 7, "pro": 70}')
    monkeypatch.setenv("TIER_MAX_CONCURRENT_BUILDS", '{"pro": 4, "bench": 1000}')
    monkeypatch.setenv("MAX_TOOL_CALLS", '{"pro": 9}')
    monkeypatch.setenv("MODEL_MAP", '{"pro": {"coder": "m"}}')
    settings = PlanSettings()
    assert settings.plans() == {
        "bootstrapper": Plan(7, 4, 150, {}),
        "pro": Plan(70, 4, 9, {"coder": "m"}, log_archive_days=365),
        "bench": Plan(7, 1000, 150, {}),
    }
    assert settings.max_tool_calls_for("pro") == 9
    assert settings.max_tool_calls_for("unheard-of") == 150
    assert max_active_builds(settings.plans(), "unheard-of") == 4


def test_the_default_tier_needs_an_allowance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANS_MONTHLY_ALLOWANCE_MICROS", '{"pro": 70}')
    with pytest.raises(ValidationError, match="DEFAULT_TIER: 'bootstrapper' has no allowance"):
        PlanSettings()
