"""Metering on real Redis and PostgreSQL: once per event, ledger = counter, the gate and the
signals at 80% and 100%, counters rebuilt after Redis loses them, bad input dead-lettered."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import func, insert, select, update

from cofounder_budget import handlers
from cofounder_budget.handlers import BudgetDeps, on_tier_changed, on_top_up, on_usage
from cofounder_budget.meter import Metered, day_keys
from cofounder_budget.pricing import Price, Pricing
from cofounder_budget.wake import WakeDaemon, Waker, remember_sleeping
from cofounder_budgeting import day_account
from cofounder_contracts import (
    ALL_EVENTS,
    AgentSleeping,
    BudgetExhausted,
    BudgetToppedUp,
    BudgetUsage,
    BudgetWake,
    BudgetWarning,
    Codec,
    Event,
    TierChanged,
    WakeReason,
    encode_fields,
)
from cofounder_contracts.keys import budget_gate_key, encode_gate
from cofounder_contracts.streams import BUDGET_SIGNALS
from cofounder_db.engine import create_engine
from cofounder_db.models import BudgetLedgerRow, BudgetTopUpRow, Build, Project, User
from cofounder_domain.budget import daily_budget, next_reset
from cofounder_domain.plans import DEFAULT_PLANS, Plan
from cofounder_runtime.conflict import PayloadConflict
from cofounder_runtime.consumer import Consumer
from cofounder_runtime.publisher import Publisher
from cofounder_runtime.streamreply import read_entries
from cofounder_testing.fixtures import Names
from cofounder_testing.inprocess import FAST
from cofounder_testing.waiting import eventually

CODEC = Codec(ALL_EVENTS)
MODEL = "claude-sonnet-5-5"
#: $1 per million input tokens: 1,000 input tokens cost 1,000 micros.
PRICING = Pricing({MODEL: Price(input=1000, output=1000, cache_write=1250, cache_read=100)})
#: Ids of events whose build, project or user does not matter to the test (ids are UUIDs).
BUILD, PROJECT, USER = (str(uuid.uuid4()) for _ in range(3))


def test_prices() -> None:
    """(The daily budget and the thresholds are the domain's: ``libs/domain/tests``.)"""
    usage = BudgetUsage(
        build_id=BUILD, project_id=PROJECT, user_id=USER, producer="t", model=MODEL,
        input_tokens=1000,
        output_tokens=10, cache_creation_input_tokens=100, cache_read_input_tokens=1000,
    )  # fmt: skip
    assert PRICING.cost_micros(usage) == 1000 + 10 + 125 + 100
    assert Pricing().cost_micros(usage) > 0
    dearest = Pricing({"a": Price(1, 1, 1, 1), "b": Price(9, 9, 9, 9)})
    assert dearest.price("unknown-model") == Price(9, 9, 9, 9)  # never undercount


def _plan(monthly_allowance_micros: int) -> Plan:
    return dataclasses.replace(
        DEFAULT_PLANS["bootstrapper"], monthly_allowance_micros=monthly_allowance_micros
    )


@pytest.fixture
async def deps(redis: Redis, migrated_database_url: str) -> AsyncIterator[BudgetDeps]:
    engine = create_engine(migrated_database_url)
    plan = _plan(10_000_000 * 31)  # 10,000,000 micros a day at most
    yield BudgetDeps(
        engine=engine,
        redis=redis,
        events=Publisher(redis),
        pricing=PRICING,
        plans={"bootstrapper": plan, "pro": _plan(10 * 31 * 10_000_000)},
        sleeping_key=f"test.sleeping:{uuid.uuid4()}",
    )
    await engine.dispose()


def _usage(user: str, build: str, tokens: int) -> BudgetUsage:
    return BudgetUsage(
        build_id=build, project_id=PROJECT, user_id=user, producer="agent-runner", model=MODEL,
        input_tokens=tokens, output_tokens=0,
    )  # fmt: skip


async def _ledger(deps: BudgetDeps, user: str) -> int:
    async with deps.engine.connect() as conn:
        total = await conn.execute(
            select(func.coalesce(func.sum(BudgetLedgerRow.cost_micros), 0)).where(
                BudgetLedgerRow.user_id == user
            )
        )
        return int(total.scalar() or 0)


async def _signals(redis: Redis, user: str) -> list[Event]:
    entries = read_entries(
        [[BUDGET_SIGNALS.name.encode(), await redis.xrange(BUDGET_SIGNALS.name)]]
    )
    return [e for e in (CODEC.decode(f) for _, f in entries if f) if e.user_id == user]


@pytest.mark.integration
async def test_concurrent_usage_is_counted_once_and_closes_the_gate(
    deps: BudgetDeps, redis: Redis
) -> None:
    user = str(uuid.uuid4())
    today = datetime.now(UTC).date()
    budget = daily_budget(deps.plans["bootstrapper"], day=today, spent_before_today=0)
    per_call = budget // 50 + 1
    builds = [str(uuid.uuid4()) for _ in range(20)]
    events = [_usage(user, builds[i % 20], per_call) for i in range(60)]  # 60 calls: over budget
    await asyncio.gather(*(on_usage(e, deps) for e in events))
    await asyncio.gather(*(on_usage(e, deps) for e in events[:20]))  # redelivered: counted once
    spent = int(await redis.get(day_keys(user, today.isoformat())["spent"]) or 0)
    assert spent == 60 * per_call
    assert await _ledger(deps, user) == spent  # ledger sum = counter
    gate = await redis.get(budget_gate_key(user))
    assert gate is not None
    assert next_reset(datetime.now(UTC)).isoformat()[:19] in gate.decode()
    assert (
        REGISTRY.get_sample_value("cofounder_budget_spend_micros_total", {"tier": "bootstrapper"})
        >= spent
    )
    assert (REGISTRY.get_sample_value("cofounder_budget_exhausted_total") or 0) >= 1
    signals = await _signals(redis, user)
    assert sorted(type(s).__name__ for s in signals) == [
        "BudgetExhausted",
        "BudgetWarning",
    ]  # once a day
    exhausted = next(s for s in signals if isinstance(s, BudgetExhausted))
    assert isinstance(exhausted, BudgetExhausted)
    assert exhausted.budget_micros == budget
    assert exhausted.spent_micros >= budget


class _RefusingSignals(Publisher):
    """Redis refusing the first ``budget.*`` signal sent, after the ledger row is committed."""

    refused = 0

    async def emit(self, event: Event) -> bytes:
        if isinstance(event, BudgetWarning | BudgetExhausted) and not self.refused:
            self.refused += 1
            raise RedisConnectionError("Connection reset by peer")
        return await super().emit(event)


@pytest.mark.integration
@pytest.mark.parametrize("failure", ["signal refused after the commit", "crash before the commit"])
async def test_a_retried_usage_event_sends_the_signals_of_the_thresholds_it_crossed(
    deps: BudgetDeps, redis: Redis, failure: str
) -> None:
    """One call spends the whole day: it crosses 80% and 100%. Its first handling fails after
    the count: Redis refuses the signal once the ledger row is committed, or the process dies
    between the Redis count and the commit. The redelivery must send both signals, once each,
    with the numbers the crossing saw (the founder was told nothing, the day's flags were set)."""
    user = str(uuid.uuid4())
    today = datetime.now(UTC).date()
    budget = daily_budget(deps.plans["bootstrapper"], day=today, spent_before_today=0)
    event = _usage(user, BUILD, budget + 5)
    if failure == "crash before the commit":
        first = dataclasses.replace(deps)  # a meter of its own
        real_add = first.meter.add

        async def add_then_die(**kwargs: Any) -> Metered | None:
            await real_add(**kwargs)
            raise RuntimeError("SIGKILL")  # the transaction never commits

        first.meter.add = add_then_die  # type: ignore[method-assign]
    else:
        first = dataclasses.replace(deps, events=_RefusingSignals(redis))
    with pytest.raises((RedisConnectionError, RuntimeError)):
        await on_usage(event, first)
    assert await _signals(redis, user) == []
    await on_usage(event, deps)  # the redelivery
    await on_usage(event, deps)  # and one more: the same signals, absorbed downstream by id
    signals = await _signals(redis, user)
    kinds = sorted(type(s).__name__ for s in signals)
    assert kinds == ["BudgetExhausted", "BudgetExhausted", "BudgetWarning", "BudgetWarning"]
    assert len({s.event_id for s in signals}) == 2  # each repeat under its first id
    for signal in signals:
        assert isinstance(signal, BudgetWarning | BudgetExhausted)
        assert (signal.spent_micros, signal.budget_micros) == (budget + 5, budget)
    assert await _ledger(deps, user) == budget + 5  # counted once


@pytest.mark.integration
async def test_counters_lost_by_redis_are_rebuilt_from_the_ledger(
    deps: BudgetDeps, redis: Redis
) -> None:
    user = str(uuid.uuid4())
    today = datetime.now(UTC).date().isoformat()
    first = [_usage(user, BUILD, 1000) for _ in range(5)]
    for event in first:
        await on_usage(event, deps)
    # Redis loses the user's keys (a flush, a failover without persistence).
    keys = [k async for k in redis.scan_iter(match=f"cofounder.budget.*{{{user}}}*")]
    assert keys
    await redis.delete(*keys)
    await on_usage(_usage(user, BUILD, 1000), deps)
    await on_usage(first[0], deps)  # an old event redelivered after the loss: still counted once
    assert (
        int(await redis.get(day_keys(user, today)["spent"]) or 0)
        == 6 * 1000
        == await _ledger(deps, user)
    )


@pytest.mark.integration
async def test_a_usage_event_id_reused_with_other_tokens_is_refused_not_raced(
    deps: BudgetDeps,
) -> None:
    user = str(uuid.uuid4())
    first = _usage(user, BUILD, 1000)
    await on_usage(first, deps)
    spent = await _ledger(deps, user)
    await on_usage(msgspec.structs.replace(first, occurred_at=first.occurred_at), deps)  # again
    forged = msgspec.structs.replace(first, input_tokens=900_000)
    with pytest.raises(PayloadConflict, match="seen before with another payload"):
        await on_usage(forged, deps)
    assert await _ledger(deps, user) == spent  # counted once, the first usage


async def test_absurd_usage_is_dead_lettered_at_once_and_the_service_goes_on(
    deps: BudgetDeps, redis: Redis, names: Names
) -> None:
    """Tokens beyond any model call (10^12) or below zero: the contract refuses them at decode
    (the gateway's projection refuses the same entry), so they are dead-lettered at once, with
    the reason, and never counted."""
    user = str(uuid.uuid4())
    consumer = Consumer(
        redis,
        stream=names.stream,
        group=names.group,
        consumer="budget-1",
        handlers={BudgetUsage: functools.partial(on_usage, deps=deps)},
        options=FAST,
    )
    await consumer.ensure_group()
    task = asyncio.create_task(consumer.run())
    absurd_usage = _usage(user, BUILD, 10**12)
    try:
        await redis.xadd(names.stream, encode_fields(absurd_usage))
        negative = encode_fields(_usage(user, BUILD, 1))
        negative[b"data"] = negative[b"data"].replace(b'"input_tokens":1', b'"input_tokens":-5')
        await redis.xadd(names.stream, negative)
        await redis.xadd(names.stream, encode_fields(_usage(user, BUILD, 1000)))

        async def handled() -> bool:
            return (
                await _ledger(deps, user) == 1000 and await redis.xlen(names.stream + ".dlq") == 2
            )

        await eventually(
            handled, what="the good event metered and the bad ones dead-lettered", timeout=20
        )
    finally:
        consumer.stop()
        await task
    dead = read_entries([[b"dlq", await redis.xrange(names.stream + ".dlq")]])
    by_id = {f[b"event_id"]: f for _, f in dead if f}
    absurd = by_id[absurd_usage.event_id.encode()]
    assert b"<= 5000000 - at `$.input_tokens`" in absurd[b"dlq.error"], absurd[b"dlq.error"]
    assert absurd[b"dlq.deliveries"] == b"1"  # at once, not after retries
    assert all(f[b"dlq.error"].startswith(b"undecodable") for f in by_id.values())
    async with deps.engine.connect() as conn:
        rows = await conn.execute(
            select(BudgetLedgerRow.input_tokens).where(BudgetLedgerRow.user_id == user)
        )
        assert rows.scalars().all() == [1000]


@pytest.mark.integration
async def test_two_wake_daemons_wake_each_sleeping_build_exactly_once(
    redis: Redis, names: Names
) -> None:
    from cofounder_budget.wake import WakeDaemon, remember_sleeping

    key = names.key("sleeping")
    from cofounder_contracts import AgentSleeping, BudgetWake

    now = [1_000.0]
    sleeping = [
        AgentSleeping(
            build_id=str(uuid.uuid4()),
            project_id=PROJECT,
            user_id=str(uuid.uuid4()),
            producer="agent-runner",
            resets_at=datetime.fromtimestamp(1_500, UTC),
            checkpoint_seq=3,
        )
        for _ in range(30)
    ]
    for event in sleeping:
        await remember_sleeping(redis, event, key=key)
        await remember_sleeping(redis, event, key=key)  # redelivered: still one sleeper
    assert await redis.zcard(key) == 30
    first, second = (WakeDaemon(redis, clock=lambda: now[0], batch=7, key=key) for _ in range(2))
    assert await first.wake_due() == 0  # before the reset: nobody wakes
    now[0] = 2_000.0  # the injected clock passes the rollover
    await asyncio.gather(*(d.wake_due() for d in (first, second, first, second, first, second)))
    while await first.wake_due() or await second.wake_due():
        pass
    assert first.woken + second.woken == 30
    assert (
        REGISTRY.get_sample_value("cofounder_budget_wakes_total", {"reason": "rollover"}) or 0
    ) >= 30
    # Both daemons raced over the same due builds; the claims decided who woke which, once.
    assert await redis.zcard(key) == 0
    builds = {e.build_id for e in sleeping}
    entries = read_entries(
        [[BUDGET_SIGNALS.name.encode(), await redis.xrange(BUDGET_SIGNALS.name)]]
    )
    wakes = [
        e
        for e in (CODEC.decode(f) for _, f in entries if f)
        if isinstance(e, BudgetWake) and e.build_id in builds
    ]
    assert sorted(w.build_id for w in wakes) == sorted(builds)  # each exactly once


async def _user(deps: BudgetDeps, tier: str = "bootstrapper") -> str:
    user = str(uuid.uuid4())
    async with deps.engine.begin() as conn:
        await conn.execute(insert(User).values(id=user, email=f"{user}@x.io", tier=tier))
    return user


async def _exhaust(deps: BudgetDeps, redis: Redis, user: str) -> int:
    """Spend the user's day and return the day's budget."""
    today = datetime.now(UTC).date()
    async with deps.engine.connect() as conn:
        account = await day_account(
            conn, user, today, plans=deps.plans, default_tier=deps.default_tier
        )
    await _spend(deps, user, account.budget_micros + 1)
    assert await redis.exists(budget_gate_key(user))
    return account.budget_micros


async def _spend(deps: BudgetDeps, user: str, micros: int) -> None:
    """Usage costing ``micros`` (1 micro per input token), in calls no bigger than a real one."""
    while micros > 0:
        call = min(micros, 4_000_000)
        await on_usage(_usage(user, BUILD, call), deps)
        micros -= call


def _asleep(user: str, resets_at: datetime) -> AgentSleeping:
    return AgentSleeping(
        build_id=str(uuid.uuid4()),
        project_id=PROJECT,
        user_id=user,
        producer="agent-runner",
        resets_at=resets_at,
        checkpoint_seq=1,
    )


async def _wakes(redis: Redis, builds: set[str]) -> list[BudgetWake]:
    entries = read_entries(
        [[BUDGET_SIGNALS.name.encode(), await redis.xrange(BUDGET_SIGNALS.name)]]
    )
    return [
        e
        for e in (CODEC.decode(f) for _, f in entries if f)
        if isinstance(e, BudgetWake) and e.build_id in builds
    ]


@pytest.mark.integration
async def test_a_top_up_reopens_the_gate_and_wakes_the_users_sleeping_builds_at_once(
    deps: BudgetDeps, redis: Redis
) -> None:
    user, other = await _user(deps), await _user(deps)
    budget = await _exhaust(deps, redis, user)
    await _exhaust(deps, redis, other)
    resets_at = next_reset(datetime.now(UTC))
    mine = [_asleep(user, resets_at) for _ in range(3)]
    theirs = _asleep(other, resets_at)
    for event in [*mine, theirs]:
        await remember_sleeping(redis, event, key=deps.sleeping_key)
    top_up = BudgetToppedUp(
        build_id="", project_id="", user_id=user, producer="gateway", amount_micros=5_000_000
    )
    await on_top_up(top_up, deps)
    await on_top_up(top_up, deps)  # redelivered: recorded once, nobody woken twice
    async with deps.engine.connect() as conn:
        rows = (
            await conn.execute(select(BudgetTopUpRow).where(BudgetTopUpRow.user_id == user))
        ).all()
    assert [r.amount_micros for r in rows] == [5_000_000]
    assert not await redis.exists(budget_gate_key(user))  # open again
    assert await redis.exists(budget_gate_key(other))  # not theirs
    wakes = await _wakes(redis, {e.build_id for e in [*mine, theirs]})
    assert sorted(w.build_id for w in wakes) == sorted(e.build_id for e in mine)
    assert {w.reason for w in wakes} == {WakeReason.TOP_UP}
    assert await redis.zcard(deps.sleeping_key) == 1  # only theirs still sleeps
    # The new budget is the old one plus the top-up; spending it closes the gate again.
    today = datetime.now(UTC).date().isoformat()
    spent = int(await redis.get(day_keys(user, today)["spent"]) or 0)
    await _spend(deps, user, budget + 5_000_000 - spent + 1)
    assert await redis.exists(budget_gate_key(user))
    # A build that goes to sleep while its gate is open (a top-up raced it) is due at once.
    await on_top_up(
        BudgetToppedUp(
            build_id="", project_id="", user_id=user, producer="gateway", amount_micros=9_000_000
        ),
        deps,
    )
    late = _asleep(user, resets_at)
    await remember_sleeping(redis, late, key=deps.sleeping_key)
    [(member, score)] = await redis.zrange(deps.sleeping_key, 0, 0, withscores=True)
    assert b'"' + late.build_id.encode() + b'"' in member
    assert score <= datetime.now(UTC).timestamp() + 1


@pytest.mark.integration
async def test_a_plan_upgrade_wakes_sleeping_builds_and_a_downgrade_closes_the_gate(
    deps: BudgetDeps, redis: Redis
) -> None:
    user = await _user(deps)
    await _exhaust(deps, redis, user)
    asleep = _asleep(user, next_reset(datetime.now(UTC)))
    await remember_sleeping(redis, asleep, key=deps.sleeping_key)
    change = TierChanged(
        build_id="", project_id="", user_id=user, producer="gateway", tier="pro",
        previous_tier="bootstrapper",
    )  # fmt: skip
    await on_tier_changed(change, deps)  # the row still says bootstrapper: nothing changes
    assert await redis.exists(budget_gate_key(user))
    async with deps.engine.begin() as conn:
        await conn.execute(update(User).where(User.id == user).values(tier="pro"))
    await on_tier_changed(change, deps)
    assert not await redis.exists(budget_gate_key(user))
    [wake] = await _wakes(redis, {asleep.build_id})
    assert wake.reason == WakeReason.TIER_CHANGE
    async with deps.engine.begin() as conn:
        await conn.execute(update(User).where(User.id == user).values(tier="bootstrapper"))
    await on_tier_changed(change, deps)  # back down: the day's spend is over the budget again
    assert await redis.exists(budget_gate_key(user))


@pytest.mark.integration
async def test_after_a_flush_the_counters_gates_and_sleeping_builds_come_back_from_postgres(
    own_redis_url: str, migrated_database_url: str
) -> None:
    from cofounder_budget.recovery import ensure_counters
    from cofounder_runtime.connections import connect_redis

    flushed = connect_redis(own_redis_url)  # a server of its own: this test flushes it
    engine = create_engine(migrated_database_url)
    deps = BudgetDeps(
        engine=engine,
        redis=flushed,
        events=Publisher(flushed),
        pricing=PRICING,
        plans={"bootstrapper": _plan(10_000_000 * 31)},
        sleeping_key=f"test.sleeping:{uuid.uuid4()}",
    )
    try:
        assert await ensure_counters(deps)  # an empty Redis: nothing to rebuild but the sentinel
        assert not await ensure_counters(deps)
        spender, saver = await _user(deps), await _user(deps)
        await _exhaust(deps, flushed, spender)
        await _spend(deps, saver, 1_000)
        async with engine.begin() as conn:
            project = str(uuid.uuid4())
            await conn.execute(insert(Project).values(id=project, owner_id=spender, name="p"))
            asleep = str(uuid.uuid4())
            await conn.execute(
                insert(Build).values(
                    id=asleep, project_id=project, user_id=spender, status="sleeping", goal="g",
                    tier="bootstrapper",
                )
            )  # fmt: skip
        today = datetime.now(UTC).date().isoformat()
        before = {u: await flushed.get(day_keys(u, today)["spent"]) for u in (spender, saver)}

        await flushed.flushdb()  # Redis loses everything mid-day
        assert not await flushed.exists(budget_gate_key(spender))
        assert await ensure_counters(deps)
        after = {u: await flushed.get(day_keys(u, today)["spent"]) for u in (spender, saver)}
        assert after == before
        assert await flushed.exists(budget_gate_key(spender))  # still spent: still closed
        assert not await flushed.exists(budget_gate_key(saver))
        members = await flushed.zrange(deps.sleeping_key, 0, -1)
        recovered = [m for m in members if asleep.encode() in m]
        assert recovered
        # Its wake is a valid event (its cause, the recovered sleep, has an id of an event).
        assert await deps.waker.wake(recovered, WakeReason.ROLLOVER) == 1
        signals = read_entries(
            [[BUDGET_SIGNALS.name.encode(), await flushed.xrange(BUDGET_SIGNALS.name)]]
        )
        [wake] = [e for e in (CODEC.decode(f) for _, f in signals if f) if e.build_id == asleep]
        assert isinstance(wake, BudgetWake)
        # The rebuilt state meters on as before: one more call, counted once.
        await _spend(deps, saver, 500)
        spent = int(await flushed.get(day_keys(saver, today)["spent"]) or 0)
        assert spent == int(before[saver] or 0) + 500 == await _ledger(deps, saver)
    finally:
        await flushed.aclose()
        await engine.dispose()


@pytest.mark.integration
async def test_a_top_up_racing_the_first_usage_of_the_day_is_not_overwritten(
    deps: BudgetDeps, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The day's first usage reads the account (the budget before the top-up); the top-up
    # commits and sets the new budget meanwhile; the usage then caches what it read. Written
    # over the top-up's, it would close the gate against a budget the founder paid past.
    user = await _user(deps)
    today = datetime.now(UTC).date().isoformat()
    read = day_account  # what the handler calls, under its name there (patched below)

    before: list[int] = []

    async def read_then_top_up(*args: Any, **kwargs: Any) -> Any:
        account = await read(*args, **kwargs)
        if not before:
            before.append(account.budget_micros)
            top_up = BudgetToppedUp(
                build_id="", project_id="", user_id=user, producer="gateway",
                amount_micros=5_000_000,
            )  # fmt: skip
            await on_top_up(top_up, deps)
        return account

    monkeypatch.setattr(handlers, "day_account", read_then_top_up)
    await _spend(deps, user, 1)
    budget = int((await redis.get(day_keys(user, today)["daily"]) or b"0").split()[0])
    assert budget == before[0] + 5_000_000


@pytest.mark.integration
async def test_a_sleeping_member_that_does_not_decode_stops_no_other_wake(
    deps: BudgetDeps, redis: Redis
) -> None:
    # A member of another release's shape: dropped (its build comes back through the
    # reconciler), not raised at every round while every build behind it sleeps on.
    user = await _user(deps)
    resets_at = next_reset(datetime.now(UTC))
    asleep = _asleep(user, resets_at)
    await remember_sleeping(redis, asleep, key=deps.sleeping_key)
    await redis.zadd(deps.sleeping_key, {b'{"shape": "of another release"}': 0})
    waker = Waker(redis, key=deps.sleeping_key)
    members = await redis.zrange(deps.sleeping_key, 0, -1)
    assert await waker.wake(members, WakeReason.TOP_UP) == 1
    assert [w.build_id for w in await _wakes(redis, {asleep.build_id})] == [asleep.build_id]
    assert await redis.zcard(deps.sleeping_key) == 0


@pytest.mark.integration
async def test_the_wake_daemon_goes_by_redis_clock_not_its_own(
    deps: BudgetDeps, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gate expires by Redis's clock. A replica whose own clock is off would wake builds
    # before their gate opens (to sleep again, due at once, every round), or after it: the
    # daemon goes by Redis's clock. Here Redis's says the reset came; this process's does not.
    user = await _user(deps)
    resets_at = datetime.fromtimestamp(time.time() + 1800, UTC)
    gate_ms = int(resets_at.timestamp() * 1000)
    await redis.set(budget_gate_key(user), encode_gate(resets_at), pxat=gate_ms)  # spent
    await remember_sleeping(redis, _asleep(user, resets_at), key=deps.sleeping_key)
    real = redis.time

    async def an_hour_later() -> tuple[int, int]:
        seconds, micros = await real()
        return int(seconds) + 3600, int(micros)

    daemon = WakeDaemon(redis, key=deps.sleeping_key)
    assert await daemon.wake_due() == 0  # by Redis's clock too, not yet
    monkeypatch.setattr(redis, "time", an_hour_later)
    assert await daemon.wake_due() == 1
    assert await redis.zcard(deps.sleeping_key) == 0
