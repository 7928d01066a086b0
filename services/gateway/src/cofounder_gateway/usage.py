"""Budgets through the gateway, the models and queries behind ``routes/usage.py``: a user's
usage and today's budget, a build's usage; admins top users up and change their plan.

Reads come from the budget service's durable tables (``budget_ledger``, ``budget_topups``, read
only here) and the gate key, with the same formula the budget service enforces
(``cofounder_budgeting``). Writes are events: a top-up is a ``budget.topped_up`` in the outbox; a
plan change updates ``users.tier`` and enqueues ``user.tier_changed`` in one transaction. The
budget service reacts to both (recomputes the day, reopens the gate, wakes sleeping builds), so
the response is 202 for a top-up: accepted, applied within moments.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cofounder_budgeting import day_account, next_reset
from cofounder_contracts import BudgetToppedUp, Envelope, TierChanged, envelope
from cofounder_contracts.keys import budget_gate_key
from cofounder_db.models import BudgetLedgerRow, Build
from cofounder_db.models import User as UserRow
from cofounder_gateway.inputs import Text
from cofounder_gateway.outbox import enqueue
from cofounder_gateway.requests import PRODUCER
from cofounder_gateway.rows import one_or_404
from cofounder_gateway.settings import GatewaySettings

__all__ = [
    "BuildUsage",
    "TierChange",
    "TierOut",
    "TopUp",
    "TopUpAccepted",
    "UserUsage",
    "build_usage",
    "grant_top_up",
    "set_tier",
    "user_usage",
]

#: The largest single top-up (1,000,000 units of the currency): beyond it, a typo.
MAX_TOP_UP_MICROS = 1_000_000 * 1_000_000
_LEDGER = BudgetLedgerRow.__table__


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tokens(BaseModel):
    calls: int
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cost_micros: int


class DayUsage(Tokens):
    day: date


class ModelUsage(Tokens):
    model: str


class Today(BaseModel):
    """Today's budget (UTC day) as the budget service computes it."""

    day: date
    tier: str
    budget_micros: int
    spent_micros: int = Field(description="Metered so far today (the ledger; a moment behind).")
    remaining_micros: int
    top_ups_micros: int = Field(description="Granted today (usable in full today).")
    gate: Literal["open", "closed"] = Field(description="closed: model calls wait for resets_at.")
    resets_at: datetime


_TOKENS_EXAMPLE = {
    "calls": 12,
    "input_tokens": 96_420,
    "output_tokens": 8_113,
    "cache_creation_input_tokens": 14_200,
    "cache_read_input_tokens": 71_000,
    "cost_micros": 452_310,
}


class UserUsage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "0195a0e0-4d5e-7f6a-8b7c-9d0e1f2a3b4c",
                    "today": {
                        "day": "2026-03-02",
                        "tier": "bootstrapper",
                        "budget_micros": 1_612_903,
                        "spent_micros": 452_310,
                        "remaining_micros": 1_160_593,
                        "top_ups_micros": 0,
                        "gate": "open",
                        "resets_at": "2026-03-03T00:00:00Z",
                    },
                    "days": [{"day": "2026-03-02", **_TOKENS_EXAMPLE}],
                }
            ]
        }
    )

    user_id: str
    today: Today
    days: list[DayUsage] = Field(description="Newest first; days without usage are left out.")


class BuildUsage(Tokens):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "build_id": "0195a0e2-7c1d-7d4e-9a2b-3c4d5e6f7a8b",
                    **_TOKENS_EXAMPLE,
                    "by_model": [{"model": "claude-sonnet-5-5", **_TOKENS_EXAMPLE}],
                }
            ]
        }
    )

    build_id: str
    by_model: list[ModelUsage]


class TopUp(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"amount_micros": 5_000_000, "note": "launch week"}]},
    )

    amount_micros: int = Field(gt=0, le=MAX_TOP_UP_MICROS, description="Micros of the currency.")
    note: Text = Field(default="", max_length=500, description="Why (kept with the top-up).")


class TopUpAccepted(BaseModel):
    id: str = Field(description="The top-up's event id.")
    user_id: str
    amount_micros: int


class TierChange(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"tier": "pro"}]})

    tier: Text = Field(min_length=1, max_length=40)


class TierOut(BaseModel):
    user_id: str
    tier: str
    previous_tier: str


def _sums() -> list[object]:
    return [
        func.count().label("calls"),
        func.coalesce(func.sum(_LEDGER.c.input_tokens), 0).label("input_tokens"),
        func.coalesce(func.sum(_LEDGER.c.output_tokens), 0).label("output_tokens"),
        func.coalesce(func.sum(_LEDGER.c.cache_creation_input_tokens), 0).label(
            "cache_creation_input_tokens"
        ),
        func.coalesce(func.sum(_LEDGER.c.cache_read_input_tokens), 0).label(
            "cache_read_input_tokens"
        ),
        func.coalesce(func.sum(_LEDGER.c.cost_micros), 0).label("cost_micros"),
    ]


def _tokens(row: object) -> dict[str, int]:
    return {name: int(getattr(row, name)) for name in Tokens.model_fields}


async def _user_tier(conn: AsyncConnection, user_id: str) -> str:
    return await one_or_404(
        conn, select(UserRow.tier).where(UserRow.id == user_id), "user", user_id
    )


async def user_usage(
    engine: AsyncEngine,
    redis: Redis,
    settings: GatewaySettings,
    user_id: str,
    *,
    days: int,
    now: datetime | None = None,
) -> UserUsage:
    now = now or datetime.now(UTC)
    today = now.date()
    async with engine.connect() as conn:
        await _user_tier(conn, user_id)
        account = await day_account(
            conn, user_id, today, plans=settings.plans(), default_tier=settings.default_tier
        )
        rows = (
            await conn.execute(
                select(_LEDGER.c.day, *_sums())
                .where(
                    _LEDGER.c.user_id == user_id,
                    _LEDGER.c.day > (today - timedelta(days=days)).isoformat(),
                )
                .group_by(_LEDGER.c.day)
                .order_by(_LEDGER.c.day.desc())
            )
        ).all()
    closed = await redis.get(budget_gate_key(user_id)) is not None
    return UserUsage(
        user_id=user_id,
        today=Today(
            day=today,
            tier=account.tier,
            budget_micros=account.budget_micros,
            spent_micros=account.spent_micros,
            remaining_micros=max(0, account.budget_micros - account.spent_micros),
            top_ups_micros=account.topups_today_micros,
            gate="closed" if closed else "open",
            resets_at=next_reset(now),
        ),
        days=[DayUsage(day=date.fromisoformat(r.day), **_tokens(r)) for r in rows],
    )


async def build_usage(engine: AsyncEngine, user_id: str, build_id: str) -> BuildUsage:
    async with engine.connect() as conn:
        owned = select(Build.id).where(Build.id == build_id, Build.user_id == user_id)
        await one_or_404(conn, owned, "build", build_id)
        rows = (
            await conn.execute(
                select(_LEDGER.c.model, *_sums())
                .where(_LEDGER.c.build_id == build_id)
                .group_by(_LEDGER.c.model)
                .order_by(_LEDGER.c.model)
            )
        ).all()
    by_model = [ModelUsage(model=r.model, **_tokens(r)) for r in rows]
    total = {name: sum(getattr(m, name) for m in by_model) for name in Tokens.model_fields}
    return BuildUsage(build_id=build_id, by_model=by_model, **total)


def _user_envelope(user_id: str) -> Envelope:
    """The envelope of the gateway's event about the user alone (no build, no project)."""
    return envelope(build_id="", project_id="", user_id=user_id, producer=PRODUCER)


async def grant_top_up(engine: AsyncEngine, user_id: str, *, amount_micros: int, note: str) -> str:
    """Enqueue a ``budget.topped_up`` for the user (404 ``user_not_found``); the event's id.
    Poke the relay afterwards to publish it at once."""
    event = BudgetToppedUp(
        **_user_envelope(user_id),
        amount_micros=amount_micros,
        note=note,
    )
    async with engine.begin() as conn:
        await _user_tier(conn, user_id)
        await enqueue(conn, [event])
    return event.event_id


async def set_tier(engine: AsyncEngine, user_id: str, tier: str) -> str:
    """Move the user to ``tier`` (404 ``user_not_found``) and enqueue ``user.tier_changed``, in
    one transaction, unless the user is on it already; the tier the user was on. Poke the relay
    afterwards when it differs from ``tier``."""
    async with engine.begin() as conn:
        previous = await _user_tier(conn, user_id)
        if previous != tier:
            await conn.execute(update(UserRow).where(UserRow.id == user_id).values(tier=tier))
            event = TierChanged(
                **_user_envelope(user_id),
                tier=tier,
                previous_tier=previous,
            )
            await enqueue(conn, [event])
    return previous
