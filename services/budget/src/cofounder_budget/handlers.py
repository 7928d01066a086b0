"""``budget.usage`` → the ledger, the day's counters, and the 80% / 100% signals; a top-up or a
plan change → the day's budget recomputed, the gate reopened, the user's sleeping builds woken.

One usage event, one step, in this order:

1. insert the ledger row in an open transaction (a conflict means it was counted before: done);
2. the Redis script counts the cost once (keyed by ``event_id``) against the day's budget and
   closes the gate at 100%; when the day's counter is missing (Redis lost it) it is rebuilt from
   the ledger first;
3. commit; then ``budget.warning`` / ``budget.exhausted`` when this event crossed the 80% or
   the 100% threshold (the script keeps which event crossed each, with what it saw).

A crash after 2 and before 3 leaves no ledger row; the redelivery inserts it and the script
skips the count it already made. A redelivery after the commit (the signals not sent: a crash,
Redis refusing them) finds the ledger row, and sends the signals this event's crossings call
for again, under their derived ids and with the same numbers: absorbed where they arrived.
Numbers no model call can report never get here: the contract
bounds them (``TokenCount``), so the consumer dead-letters such an event at decode, with the
reason, as every other consumer of ``budget.usage`` does.

A top-up is recorded (``budget_topups``, once per event), then the day's budget is recomputed
from the tables and set with the gate in one script (:meth:`Meter.rebudget`); when the gate is
open the user's sleeping builds are woken. Every step after the insert is idempotent, so a
redelivery after a crash finishes the job.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final, cast

import structlog
from redis.asyncio import Redis
from sqlalchemy import Table, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cofounder_budget.meter import DAY_TTL_S, Crossing, Meter, day_keys
from cofounder_budget.metrics import EXHAUSTED, SPEND, TOPUPS
from cofounder_budget.pricing import Pricing
from cofounder_budget.wake import SLEEPING_KEY, Waker
from cofounder_budgeting import day_account
from cofounder_contracts import (
    BudgetExhausted,
    BudgetToppedUp,
    BudgetUsage,
    BudgetWarning,
    TierChanged,
    WakeReason,
    follow_up,
)
from cofounder_db.models import BudgetLedgerRow, BudgetTopUpRow
from cofounder_domain.budget import next_reset
from cofounder_domain.plans import DEFAULT_PLANS, DEFAULT_TIER, Plan
from cofounder_runtime import tracing
from cofounder_runtime.conflict import PayloadConflict
from cofounder_runtime.publisher import Publisher

__all__ = ["BudgetDeps", "on_tier_changed", "on_top_up", "on_usage"]

PRODUCER: Final = "budget"
_log = structlog.get_logger("cofounder.budgets")
_LEDGER = cast(Table, BudgetLedgerRow.__table__)
_TOPUPS = cast(Table, BudgetTopUpRow.__table__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class BudgetDeps:
    engine: AsyncEngine
    redis: Redis
    events: Publisher
    pricing: Pricing = field(default_factory=Pricing)
    plans: dict[str, Plan] = field(default_factory=lambda: dict(DEFAULT_PLANS))
    default_tier: str = DEFAULT_TIER
    sleeping_key: str = SLEEPING_KEY
    clock: Callable[[], datetime] = _utcnow
    meter: Meter = field(init=False)
    waker: Waker = field(init=False)

    def __post_init__(self) -> None:
        self.meter = Meter(self.redis)
        self.waker = Waker(self.redis, key=self.sleeping_key)


#: The ledger's columns that are the usage event's fields of the same names.
_USAGE_FIELDS = (
    "user_id",
    "build_id",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


async def _insert_once(conn: AsyncConnection, event: BudgetUsage, day: str, cost: int) -> bool:
    statement = (
        postgresql.insert(_LEDGER)
        .values(
            event_id=event.event_id,
            day=day,
            cost_micros=cost,
            created_at=datetime.now(UTC),
            **{name: getattr(event, name) for name in _USAGE_FIELDS},
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
    )
    return bool((await conn.execute(statement)).rowcount)


def _usage_digest(values: Sequence[object]) -> str:
    return hashlib.sha256(repr(tuple(values)).encode()).hexdigest()[:32]


async def _same_as_counted(conn: AsyncConnection, event: BudgetUsage) -> None:
    """A usage event id counted before must carry the same usage, or neither is trusted: the
    ledger keeps the first, and the second goes to the dead letters with both digests."""
    row = (
        await conn.execute(
            select(*(_LEDGER.c[name] for name in _USAGE_FIELDS)).where(
                _LEDGER.c.event_id == event.event_id
            )
        )
    ).first()
    if row is None:
        return
    seen = _usage_digest(tuple(row))
    now = _usage_digest(tuple(getattr(event, name) for name in _USAGE_FIELDS))
    if seen != now:
        raise PayloadConflict(event.event_id, seen=seen, now=now)


async def _budget(
    conn: AsyncConnection, deps: BudgetDeps, user_id: str, day: date
) -> tuple[int, str]:
    """The user's budget for ``day`` and their tier, cached in Redis for the day."""
    key = day_keys(user_id, day.isoformat())["daily"]
    cached = await deps.redis.get(key)
    if cached is None:
        account = await day_account(
            conn, user_id, day, plans=deps.plans, default_tier=deps.default_tier
        )
        value = f"{account.budget_micros} {account.tier}"
        # Only if still unset: a top-up or plan change committed since the read has set the
        # budget it made (Meter.rebudget), which this older read must not overwrite.
        if await deps.redis.set(key, value, ex=DAY_TTL_S, nx=True):
            return account.budget_micros, account.tier
        cached = await deps.redis.get(key) or value.encode()
    text = cached.decode() if isinstance(cached, bytes) else str(cached)
    amount, _, cached_tier = text.partition(" ")
    return int(amount), cached_tier or deps.default_tier


async def on_usage(event: BudgetUsage, deps: BudgetDeps) -> None:
    """Meter one model call; with tracing on, in a ``budget.meter`` span (the model, the token
    counts, the cost, whether it was counted now and which signals it raised)."""
    with tracing.span(
        "budget.meter",
        attributes={
            "cofounder.build_id": event.build_id,
            "cofounder.user_id": event.user_id,
            "gen_ai.request.model": event.model,
            "gen_ai.usage.input_tokens": event.input_tokens,
            "gen_ai.usage.output_tokens": event.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": event.cache_read_input_tokens,
            "gen_ai.usage.cache_creation.input_tokens": event.cache_creation_input_tokens,
            "cofounder.usage.outcome": str(event.outcome),
        },
    ) as span:
        await _meter(event, deps, span)


async def _meter(event: BudgetUsage, deps: BudgetDeps, span: tracing.Span) -> None:
    when = event.occurred_at.astimezone(UTC)
    day = when.date()
    cost = deps.pricing.cost_micros(event)
    resets_at = next_reset(when)
    span.set_attribute("cofounder.metering.cost_micros", cost)
    async with deps.engine.begin() as conn:
        if not await _insert_once(conn, event, day.isoformat(), cost):
            await _same_as_counted(conn, event)
            span.set_attribute("cofounder.metering.counted", False)
            # Counted before (its ledger row is committed); its signals may not have gone out.
            warned, exhausted = await deps.meter.crossings(
                user_id=event.user_id, day=day.isoformat()
            )
            await _signal(event, deps, warned, exhausted, span)
            return
        budget, tier = await _budget(conn, deps, event.user_id, day)
        add = functools.partial(
            deps.meter.add,
            user_id=event.user_id,
            build_id=event.build_id,
            day=day.isoformat(),
            event_id=event.event_id,
            cost=cost,
            budget=budget,
            resets_at=resets_at,
        )
        metered = await add()
        if metered is None:
            # Redis lost the day's counter: rebuild it from the ledger (without this event).
            total = (
                await conn.execute(
                    select(func.coalesce(func.sum(_LEDGER.c.cost_micros), 0)).where(
                        _LEDGER.c.user_id == event.user_id, _LEDGER.c.day == day.isoformat()
                    )
                )
            ).scalar()
            await deps.meter.restore_day(
                user_id=event.user_id, day=day.isoformat(), spent=int(total or 0) - cost
            )
            if int(total or 0) - cost:  # usage before this event that Redis no longer had
                _log.warning(
                    "day counter rebuilt from the ledger", user_id=event.user_id, day=str(day)
                )
            metered = await add()
            if metered is None:
                raise RuntimeError("the day counter vanished again while being rebuilt")
    if span.is_recording():
        span.set_attributes(
            {
                "cofounder.metering.counted": metered.counted,
                "cofounder.metering.tier": tier,
                "cofounder.metering.spent_micros": metered.spent,
                "cofounder.metering.budget_micros": metered.budget,
            }
        )
    if metered.counted:
        SPEND.labels(tier).inc(cost)
        if metered.exhausted is not None and metered.exhausted.event_id == event.event_id:
            EXHAUSTED.inc()
    await _signal(event, deps, metered.warned, metered.exhausted, span)


async def _signal(
    event: BudgetUsage,
    deps: BudgetDeps,
    warned: Crossing | None,
    exhausted: Crossing | None,
    span: tracing.Span,
) -> None:
    """Send the signals of the thresholds ``event`` crossed (a crossing by another event of the
    day is that event's): the same each time, so a retry's are absorbed as repeats."""
    warned = warned if warned is not None and warned.event_id == event.event_id else None
    exhausted = (
        exhausted if exhausted is not None and exhausted.event_id == event.event_id else None
    )
    if span.is_recording():
        span.set_attributes(
            {
                "cofounder.metering.warning": warned is not None,
                "cofounder.metering.exhausted": exhausted is not None,
            }
        )
    when = event.occurred_at.astimezone(UTC)

    def standing(kind: str, crossing: Crossing) -> dict[str, Any]:
        """What a warning and an exhaustion both say: the day's spend against its budget."""
        follows = follow_up(event, producer=PRODUCER, kind=kind)
        return {
            **follows,
            "day": when.date(),
            "spent_micros": crossing.spent,
            "budget_micros": crossing.budget,
        }

    if warned is not None:
        await deps.events.emit(BudgetWarning(**standing("budget.warning", warned)))
    if exhausted is not None:
        signal = BudgetExhausted(
            **standing("budget.exhausted", exhausted), resets_at=next_reset(when)
        )
        await deps.events.emit(signal)


async def _rebudget_and_wake(deps: BudgetDeps, user_id: str, reason: WakeReason) -> None:
    now = deps.clock()
    day = now.date()
    async with deps.engine.connect() as conn:
        account = await day_account(
            conn, user_id, day, plans=deps.plans, default_tier=deps.default_tier
        )
    state = await deps.meter.rebudget(
        user_id=user_id,
        day=day.isoformat(),
        budget=account.budget_micros,
        tier=account.tier,
        resets_at=next_reset(now),
    )
    woken = 0
    if state is not False:  # open (or counters lost: open until the next usage says otherwise)
        woken = await deps.waker.wake_user(user_id, reason)
    _log.info(
        "budget recomputed",
        user_id=user_id,
        reason=reason.value,
        budget_micros=account.budget_micros,
        gate="closed" if state is False else "open",
        woken=woken,
    )


async def on_top_up(event: BudgetToppedUp, deps: BudgetDeps) -> None:
    async with deps.engine.begin() as conn:
        inserted = (
            await conn.execute(
                postgresql.insert(_TOPUPS)
                .values(
                    event_id=event.event_id,
                    user_id=event.user_id,
                    day=event.occurred_at.astimezone(UTC).date().isoformat(),
                    amount_micros=event.amount_micros,
                    note=event.note,
                    created_at=event.occurred_at,
                )
                .on_conflict_do_nothing(index_elements=["event_id"])
            )
        ).rowcount
    if inserted:
        TOPUPS.inc(event.amount_micros)
    await _rebudget_and_wake(deps, event.user_id, WakeReason.TOP_UP)


async def on_tier_changed(event: TierChanged, deps: BudgetDeps) -> None:
    """The ``users`` row holds the new tier (committed with the event), so it is read there:
    of two quick changes the later one wins even when their events arrive out of order."""
    await _rebudget_and_wake(deps, event.user_id, WakeReason.TIER_CHANGE)
