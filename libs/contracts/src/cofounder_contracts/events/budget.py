"""Events of token metering and the daily budget."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Annotated

import msgspec

from cofounder_contracts.envelope import Event
from cofounder_contracts.ids import ProviderId, UuidOrEmpty
from cofounder_contracts.units import (
    MAX_SAFE_INT,
    Micros,
    ModelName,
    NonEmpty,
    StoredText,
    TokenCount,
)

__all__ = [
    "BudgetExhausted",
    "BudgetToppedUp",
    "BudgetUsage",
    "BudgetWake",
    "BudgetWarning",
    "TierChanged",
    "UsageOutcome",
    "WakeReason",
]


class UsageOutcome(enum.StrEnum):
    """How the metered model call ended (a failed or cut-short call still costs tokens)."""

    OK = "ok"
    ERROR = "error"
    CUT_SHORT = "cut_short"


class WakeReason(enum.StrEnum):
    """Why a sleeping build may run again."""

    ROLLOVER = "rollover"
    TOP_UP = "top_up"
    TIER_CHANGE = "tier_change"


class BudgetUsage(Event, frozen=True, kw_only=True, tag="budget.usage"):
    """The usage of one model response, as the API reported it. Emitted by the runner for every
    call (including failed and cut-short ones); consumed by the budget service, which prices it.
    """

    model: ModelName
    role: str = "coder"
    input_tokens: TokenCount
    output_tokens: TokenCount
    cache_creation_input_tokens: TokenCount = 0
    cache_read_input_tokens: TokenCount = 0
    request_id: ProviderId | None = None
    outcome: UsageOutcome = UsageOutcome.OK


class _DaySpend(Event, frozen=True, kw_only=True):
    """A budget threshold crossed: the user's spend for ``day`` and that day's budget (the first
    fields of each such event). Money is in micro-units of the plan's currency (integers: no
    float drift in ledgers)."""

    day: date
    spent_micros: Micros
    budget_micros: Micros


class BudgetWarning(_DaySpend, frozen=True, kw_only=True, tag="budget.warning"):
    """The user's spend for ``day`` passed 80% of the daily budget (once a day).

    Money is in micro-units of the plan's currency (integers: no float drift in ledgers).
    """


class BudgetExhausted(_DaySpend, frozen=True, kw_only=True, tag="budget.exhausted"):
    """The user's daily budget is spent; model calls are refused until ``resets_at``."""

    resets_at: datetime


class BudgetWake(Event, frozen=True, kw_only=True, tag="budget.wake"):
    """A sleeping build may resume. Emitted by the budget service's wake daemon."""

    reason: WakeReason


class BudgetToppedUp(Event, frozen=True, kw_only=True, tag="budget.topped_up"):
    """An admin granted the user extra budget, usable at once (see the budget service's formula).

    Emitted by the gateway (through its outbox); consumed by the budget service, which records
    it, reopens a closed gate when the new budget allows and wakes the user's sleeping builds.
    A user-level event: ``build_id`` and ``project_id`` are empty.
    """

    build_id: UuidOrEmpty
    project_id: UuidOrEmpty
    amount_micros: Annotated[int, msgspec.Meta(gt=0, le=MAX_SAFE_INT)]
    note: StoredText = ""


class TierChanged(Event, frozen=True, kw_only=True, tag="user.tier_changed"):
    """The user's plan changed. Emitted by the gateway with the ``users`` row update (outbox);
    the budget service recomputes today's budget and, when it now allows, wakes the user's
    sleeping builds. A user-level event: ``build_id`` and ``project_id`` are empty.
    """

    build_id: UuidOrEmpty
    project_id: UuidOrEmpty
    tier: NonEmpty
    previous_tier: str
