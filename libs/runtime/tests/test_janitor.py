"""The janitor: departed consumers, the age trim that spares pending entries, group gauges."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from redis.asyncio import Redis

from cofounder_runtime.consumer import Consumer, Handler
from cofounder_runtime.janitor import Janitor, trim_by_age
from cofounder_runtime.metrics import GROUP_LAG, GROUP_PENDING
from cofounder_runtime.publisher import Publisher
from cofounder_testing.fixtures import Names
from cofounder_testing.inprocess import FAST
from cofounder_testing.probe import Probe, ProbeHandler, probe

pytestmark = pytest.mark.integration


def _consumer(redis: Redis, names: Names, name: str, **changes: int) -> Consumer:
    return Consumer(
        redis,
        stream=names.stream,
        group=names.group,
        consumer=name,
        handlers={Probe: ProbeHandler(redis, names.prefix)},
        options=replace(FAST, **changes),
    )


async def _consumer_names(redis: Redis, names: Names) -> set[str]:
    return {c["name"].decode() for c in await redis.xinfo_consumers(names.stream, names.group)}


async def test_departed_consumers_with_nothing_pending_are_removed(
    redis: Redis, names: Names
) -> None:
    me = _consumer(redis, names, "me", departed_after_ms=100)
    await me.ensure_group()
    await Publisher(redis).publish(names.stream, probe(1))
    # "busy" holds an entry; "gone" read and acked everything long ago.
    await redis.xreadgroup(names.group, "busy", {names.stream: ">"}, count=1)
    await redis.xreadgroup(names.group, "gone", {names.stream: ">"}, count=1)
    await _sleep_ms(150)
    await Janitor(me).refresh_group()
    assert await _consumer_names(redis, names) == {"busy"}


async def _sleep_ms(ms: int) -> None:
    await asyncio.sleep(ms / 1000)


async def test_age_trim_never_removes_pending_or_unread_entries(redis: Redis, names: Names) -> None:
    await redis.xgroup_create(names.stream, "a", id="0", mkstream=True)
    await redis.xgroup_create(names.stream, "b", id="0")
    old_ms = int(time.time() * 1000) - 60_000
    for i in range(1, 6):  # entries a minute old
        await redis.xadd(names.stream, {"n": i}, id=f"{old_ms + i}-0")
    await redis.xadd(names.stream, {"n": 99})  # a fresh one
    # Group a read and acked everything; group b read two and acked only the second.
    a = await redis.xreadgroup("a", "x", {names.stream: ">"})
    await redis.xack(names.stream, "a", *[i for i, _ in a[0][1]])
    b = await redis.xreadgroup("b", "y", {names.stream: ">"}, count=2)
    await redis.xack(names.stream, "b", b[0][1][1][0])
    minid = await trim_by_age(redis, names.stream, max_age_ms=1_000)
    assert minid == f"{old_ms + 1}-0"  # b's oldest pending entry bounds the trim
    assert await redis.xlen(names.stream) == 6
    # Once b acks it and reads the rest, the old entries can go (approximately: ~ trims whole
    # nodes, so compare with an exact trim to the same floor).
    await redis.xack(names.stream, "b", b[0][1][0][0])
    rest = await redis.xreadgroup("b", "y", {names.stream: ">"})
    await redis.xack(names.stream, "b", *[i for i, _ in rest[0][1]])
    minid = await trim_by_age(redis, names.stream, max_age_ms=1_000)
    assert int(minid.split("-")[0]) > old_ms + 5
    await redis.xtrim(names.stream, minid=minid, approximate=False)
    assert await redis.xlen(names.stream) == 1


async def test_age_trim_keeps_entries_a_group_has_not_read(redis: Redis, names: Names) -> None:
    await redis.xgroup_create(names.stream, "slow", id="0", mkstream=True)
    old_ms = int(time.time() * 1000) - 60_000
    for i in range(1, 4):
        await redis.xadd(names.stream, {"n": i}, id=f"{old_ms + i}-0")
    minid = await trim_by_age(redis, names.stream, max_age_ms=1_000)
    assert minid == "0-1"
    assert await redis.xlen(names.stream) == 3


async def test_group_gauges_follow_xinfo_groups(redis: Redis, names: Names) -> None:
    me = _consumer(redis, names, "me")
    await me.ensure_group()
    await Publisher(redis).publish_many((names.stream, probe(i)) for i in range(5))
    await redis.xreadgroup(names.group, "other", {names.stream: ">"}, count=2)
    await Janitor(me).refresh_group()
    labels = {"stream": names.stream, "group": names.group}
    assert GROUP_PENDING.labels(**labels)._value.get() == 2
    assert GROUP_LAG.labels(**labels)._value.get() == 3


async def test_over_delivered_entries_are_dead_lettered_without_running(
    redis: Redis, names: Names
) -> None:
    """An entry that keeps killing its consumers (delivered max_deliveries times, never acked)
    is not run again when claimed: it goes to the DLQ."""
    me = _consumer(
        redis, names, "me", min_idle_ms=100, heartbeat_ms=30, max_deliveries=2, retry_max_ms=50
    )
    await me.ensure_group()
    event = probe(1)
    await Publisher(redis).publish(names.stream, event)
    for crashed in ("c1", "c2"):
        await redis.xreadgroup(
            names.group, crashed, {names.stream: ">" if crashed == "c1" else "0"}, count=1
        )
        if crashed == "c1":
            await _sleep_ms(150)
            await redis.xautoclaim(names.stream, names.group, "c2", 100, "0-0")
    await _sleep_ms(150)
    claimed = await Janitor(me).claim_orphans()
    assert claimed == 1
    await _sleep_ms(100)
    dead = await redis.xrange(names.stream + ".dlq")
    assert len(dead) == 1
    assert b"without an ack" in dead[0][1][b"dlq.error"]
    assert not await redis.hexists(names.key("starts"), event.event_id)


async def test_a_dead_consumer_s_long_running_entries_are_shared_out(
    redis: Redis, names: Names
) -> None:
    # 20 entries taken by a consumer that then died (pending, never acked).
    await Publisher(redis).publish_many((names.stream, probe(i)) for i in range(20))
    await redis.xgroup_create(names.stream, names.group, id="0", mkstream=True)
    await redis.xreadgroup(names.group, "dead", {names.stream: ">"}, count=20)
    await asyncio.sleep(FAST.min_idle_ms / 1000)
    release = asyncio.Event()
    held: dict[str, set[str]] = {"a": set(), "b": set()}

    def holder(name: str) -> Handler:
        async def handle(event: Probe) -> None:  # a build: runs until the test lets it end
            held[name].add(event.event_id)
            await release.wait()

        return handle

    # Free slots for all 20 in each: without a share, the first pass would take them all.
    options = replace(FAST, claim_per_pass=4, concurrency=100)
    pair = [
        Consumer(
            redis,
            stream=names.stream,
            group=names.group,
            consumer=name,
            handlers={Probe: holder(name)},
            options=options,
        )
        for name in ("a", "b")
    ]
    tasks = [asyncio.create_task(c.run()) for c in pair]
    try:
        deadline = time.monotonic() + 20
        while len(held["a"] | held["b"]) < 20:
            assert time.monotonic() < deadline, held
            await asyncio.sleep(0.05)
    finally:
        release.set()
        for c in pair:
            c.stop()
        await asyncio.gather(*tasks)
    assert not held["a"] & held["b"]  # each build taken once
    assert len(held["a"]) >= 4
    assert len(held["b"]) >= 4  # the second consumer got a share, not nothing
