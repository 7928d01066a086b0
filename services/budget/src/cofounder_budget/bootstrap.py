"""The composition root: the metering consumer, the sleeping-builds consumer, the top-ups and
plan changes consumer, the wake daemon and the counters watch. Nothing connects at import."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from cofounder_budget.handlers import BudgetDeps, on_tier_changed, on_top_up, on_usage
from cofounder_budget.recovery import watch_counters
from cofounder_budget.settings import BudgetSettings
from cofounder_budget.wake import WakeDaemon, remember_sleeping
from cofounder_contracts import AgentSleeping, BudgetToppedUp, BudgetUsage, Event, TierChanged
from cofounder_contracts.streams import (
    BUDGET,
    BUDGET_CHANGES,
    BUDGET_USAGE,
    BUILD_EVENTS,
    Stream,
)
from cofounder_runtime.consumer import Consumer
from cofounder_runtime.publisher import Publisher
from cofounder_runtime.service import run_service, service_process

__all__ = ["build_consumers", "main"]


async def _on_sleeping(event: AgentSleeping, deps: BudgetDeps) -> None:
    await remember_sleeping(deps.redis, event, key=deps.sleeping_key)


def build_consumers(settings: BudgetSettings, deps: BudgetDeps) -> list[Consumer]:
    """One consumer per stream the budget group reads, each with its events' handlers."""
    routes: list[tuple[Stream, dict[type[Event], Callable[..., Awaitable[None]]]]] = [
        (BUDGET_USAGE, {BudgetUsage: on_usage}),
        (BUILD_EVENTS, {AgentSleeping: _on_sleeping}),
        (BUDGET_CHANGES, {BudgetToppedUp: on_top_up, TierChanged: on_tier_changed}),
    ]
    return [
        Consumer.for_stream(
            deps.redis,
            stream,
            group=BUDGET,
            consumer=settings.consumer_name,
            handlers={t: functools.partial(h, deps=deps) for t, h in handlers.items()},
            options=settings.consumer_options(),
        )
        for stream, handlers in routes
    ]


async def main() -> None:
    """Run the budget service until SIGTERM."""
    async with service_process(BudgetSettings, service="budget") as process:
        settings, redis = process.settings, process.redis
        engine = settings.create_engine()
        process.closing(engine, engine.dispose)
        deps = BudgetDeps(
            engine=engine,
            redis=redis,
            events=Publisher(redis),
            plans=settings.plans(),
            default_tier=settings.default_tier,
        )
        wakes = WakeDaemon(redis, interval_s=settings.wake_interval_s)
        await run_service(
            process,
            build_consumers(settings, deps),
            background=[
                ("wake-daemon", wakes.run),
                (
                    "counters-watch",
                    functools.partial(
                        watch_counters, deps, interval_s=settings.counters_check_interval_s
                    ),
                ),
            ],
        )
