"""The metering script's 80 %/100 % thresholds are the domain's (``cofounder_domain.budget``):
the script, run on a real Redis over a grid of spends and budgets (edges included), signals
exactly what :func:`~cofounder_domain.budget.crossed` computes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from cofounder_budget.meter import Meter, reached_lua
from cofounder_domain.budget import EXHAUSTED_AT, WARN_AT, Crossed, crossed, next_reset
from cofounder_runtime.connections import connect_redis

BUDGETS = (0, 1, 2, 3, 7, 10, 11, 999, 1_000, 1_000_003, 30_000_000 // 31, 600_000_000)


def _spends(budget: int) -> set[int]:
    """Spends around both thresholds of ``budget`` (and none, and far beyond)."""
    warn = -(-budget * WARN_AT[0] // WARN_AT[1])  # the smallest spend that warns
    around = {0, 1, warn - 1, warn, warn + 1, budget - 1, budget, budget + 1, 2 * budget + 5}
    return {s for s in around if s >= 0}


@pytest.fixture
async def own_redis(own_redis_url: str) -> AsyncIterator[Redis]:
    client = connect_redis(own_redis_url)
    yield client
    await client.aclose()


def test_the_script_is_written_from_the_domain_s_thresholds() -> None:
    assert reached_lua("spent", "budget", WARN_AT) == (
        f"spent * {WARN_AT[1]} >= budget * {WARN_AT[0]}"
    )
    assert reached_lua("s", "b", EXHAUSTED_AT) == f"s * {EXHAUSTED_AT[1]} >= b * {EXHAUSTED_AT[0]}"


async def test_the_script_signals_what_the_domain_computes(own_redis: Redis) -> None:
    meter = Meter(own_redis)
    now = datetime.now(UTC)
    day = now.date().isoformat()
    seen: dict[tuple[int, int], Crossed] = {}
    expected: dict[tuple[int, int], Crossed] = {}
    for budget in BUDGETS:
        for spent in sorted(_spends(budget)):
            user = f"t-{uuid.uuid4()}"  # keys of this point alone: a fresh day for a new user
            cost = min(spent, 1)  # the usage that brings the day's spend to ``spent``
            await meter.restore_day(user_id=user, day=day, spent=spent - cost)
            metered = await meter.add(
                user_id=user,
                build_id=str(uuid.uuid4()),
                day=day,
                event_id=str(uuid.uuid4()),
                cost=cost,
                budget=budget,
                resets_at=next_reset(now),
            )
            assert metered is not None
            assert (metered.counted, metered.spent, metered.budget) == (True, spent, budget)
            seen[spent, budget] = Crossed(metered.warned is not None, metered.exhausted is not None)
            expected[spent, budget] = crossed(spent, budget)
    assert seen == expected
    # The grid reaches every outcome, so the comparison above decides something.
    assert set(expected.values()) == {(False, False), (True, False), (True, True)}
