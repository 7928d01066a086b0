"""The delivery contract with consumers as real processes that get killed and stopped."""

from __future__ import annotations

import asyncio
import random
import signal

import pytest
from redis.asyncio import Redis

from cofounder_runtime.publisher import Publisher
from cofounder_testing.fixtures import Names, Workers
from cofounder_testing.inprocess import hash_ints, pending
from cofounder_testing.probe import probe
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.e2e


async def _started(redis: Redis, names: Names, event_id: str) -> bool:
    return bool(await redis.hexists(names.key("starts"), event_id))


async def _applied(redis: Redis, names: Names, n: int) -> bool:
    return int(await redis.hlen(names.key("effects"))) >= n


async def test_consumer_killed_mid_handler_loses_nothing(
    redis: Redis, names: Names, workers: Workers
) -> None:
    workers.start("doomed", min_idle_ms=1_000)
    await workers.started(redis, "doomed")
    event = probe(1, sleep_s=30)
    await Publisher(redis).publish(names.stream, event)
    await eventually(lambda: _started(redis, names, event.event_id), what="handler started")
    workers.signal("doomed", signal.SIGKILL)
    workers.procs["doomed"].wait(timeout=10)
    # The entry is still pending on the dead consumer...
    rows = await redis.xpending_range(names.stream, names.group, min="-", max="+", count=5)
    assert [r["consumer"] for r in rows] == [b"doomed"]
    # ...and another consumer claims it after min_idle and handles it. Its sleep is long, so
    # let the rescuer's copy be quick: the effect is what counts, and it must appear once.
    await redis.hset(names.key("fast"), "x", "1")
    workers.start("rescuer", min_idle_ms=1_000)
    await workers.started(redis, "rescuer")
    await eventually(lambda: _applied(redis, names, 1), what="the event applied", timeout=20)
    await eventually(lambda: _none_pending(redis, names), what="the entry acked")
    assert await hash_ints(redis, names.key("starts")) == {event.event_id: 2}
    assert await hash_ints(redis, names.key("effects")) == {event.event_id: 1}


async def _started_twice(redis: Redis, names: Names, event_id: str) -> bool:
    raw = await redis.hget(names.key("starts"), event_id)
    return raw is not None and int(raw) >= 2


async def _none_pending(redis: Redis, names: Names) -> bool:
    return await pending(redis, names) == 0


async def test_sigterm_mid_work_acks_the_in_flight_entry_and_exits_zero(
    redis: Redis, names: Names, workers: Workers
) -> None:
    proc = workers.start("graceful", min_idle_ms=10_000)
    await workers.started(redis, "graceful")
    event = probe(1, sleep_s=1.5)
    await Publisher(redis).publish(names.stream, event)
    await eventually(lambda: _started(redis, names, event.event_id), what="handler started")
    workers.signal("graceful", signal.SIGTERM)
    code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0
    assert await hash_ints(redis, names.key("effects")) == {event.event_id: 1}
    assert await pending(redis, names) == 0
    # Nothing was read after the signal: an event published now stays undelivered.
    await Publisher(redis).publish(names.stream, probe(2))
    info = await redis.xinfo_groups(names.stream)
    assert int(info[0]["lag"]) == 1


async def test_restarted_process_handles_its_own_pending_entries_first(
    redis: Redis, names: Names, workers: Workers
) -> None:
    workers.start("stable-name", min_idle_ms=60_000, concurrency=1)
    await workers.started(redis, "stable-name")
    first = probe(1, sleep_s=30)
    await Publisher(redis).publish(names.stream, first)
    await eventually(lambda: _started(redis, names, first.event_id), what="handler started")
    workers.signal("stable-name", signal.SIGKILL)
    workers.procs["stable-name"].wait(timeout=10)
    later = [probe(i) for i in range(2, 6)]
    await Publisher(redis).publish_many((names.stream, e) for e in later)
    await redis.hset(names.key("fast"), "x", "1")
    # Restart under the same name: min_idle is a minute, so only its own drain can pick it up.
    await redis.delete(names.key("log"))
    workers.start("stable-name", min_idle_ms=60_000, concurrency=1)
    await workers.started(redis, "stable-name")
    await eventually(
        lambda: _started_twice(redis, names, first.event_id),
        what="the pending entry re-read",
        timeout=20,
    )
    log = [int(x) for x in await redis.lrange(names.key("log"), 0, -1)]
    assert log[0] == 1


async def test_three_processes_ten_thousand_events_random_kills(
    redis: Redis, names: Names, workers: Workers
) -> None:
    total = 10_000
    rng = random.Random(7)
    events = [probe(i, sleep_s=rng.choice([0, 0, 0.001, 0.005, 0.02])) for i in range(total)]
    options = {"min_idle_ms": 1_000, "janitor_ms": 200, "concurrency": 32}
    for name in ("w0", "w1", "w2"):
        workers.start(name, **options)
    await workers.started(redis, "w0", "w1", "w2")
    publisher = Publisher(redis)
    for start in range(0, total, 500):
        await publisher.publish_many((names.stream, e) for e in events[start : start + 500])
    kills = 0
    # At least three kills whatever the pace; up to eight while work remains.
    while kills < 3 or (int(await redis.hlen(names.key("effects"))) < total and kills < 8):
        await asyncio.sleep(rng.uniform(0.2, 0.6))
        victim = rng.choice(["w0", "w1", "w2"])
        workers.signal(victim, signal.SIGKILL)
        await asyncio.to_thread(workers.procs[victim].wait, 10)
        kills += 1
        # Half the time it comes back under its own name, half the time as a newcomer.
        workers.start(victim if rng.random() < 0.5 else f"{victim}-{kills}", **options)
    await eventually(lambda: _applied(redis, names, total), what="every event applied", timeout=120)
    await eventually(lambda: _none_pending(redis, names), what="every entry acked", timeout=60)
    effects = await hash_ints(redis, names.key("effects"))
    assert effects == {e.event_id: 1 for e in events}
    starts = await hash_ints(redis, names.key("starts"))
    assert set(starts) == set(effects)
    assert await redis.xlen(names.stream + ".dlq") == 0


@pytest.mark.parametrize("loss", ["stream", "group"])
async def test_a_consumer_goes_on_when_its_stream_or_group_vanished(
    redis: Redis, names: Names, workers: Workers, loss: str
) -> None:
    """Redis forgot the stream (a flush) or the group: the running consumer recreates the group
    and handles what is published next, without a restart."""
    workers.start("survivor", janitor_ms=100)
    await workers.started(redis, "survivor")
    publisher = Publisher(redis)
    await publisher.publish(names.stream, probe(1))
    await eventually(lambda: _applied(redis, names, 1), what="the first event applied")
    if loss == "stream":
        await redis.delete(names.stream)
    else:
        await redis.xgroup_destroy(names.stream, names.group)
    after = [probe(n) for n in (2, 3)]
    await publisher.publish_many([(names.stream, e) for e in after])
    await eventually(lambda: _applied(redis, names, 3), what="the events after the loss applied")
    await eventually(lambda: _none_pending(redis, names), what="the entries acked")
    effects = await hash_ints(redis, names.key("effects"))
    assert all(effects[e.event_id] == 1 for e in after)
    assert workers.procs["survivor"].poll() is None
    assert "recreating it" in workers.logs("survivor")
