"""The delivery contract on a real Redis, with consumers running in this process."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cofounder_contracts import BuildRequested, ContextReady, new_event_id
from cofounder_contracts.codec import encode_fields
from cofounder_contracts.streams import BUILD_REQUESTS
from cofounder_runtime import deadletter, processes
from cofounder_runtime.connections import connect_redis
from cofounder_runtime.consumer import Consumer
from cofounder_runtime.keys import DeadLetterField, dlq_key
from cofounder_runtime.localredis import redis_server_binary
from cofounder_runtime.publisher import Publisher
from cofounder_testing.fixtures import Names
from cofounder_testing.inprocess import FAST, entries, hash_ints, pending, running
from cofounder_testing.probe import Probe, ProbeHandler, probe
from cofounder_testing.servers import free_port
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration


async def test_every_event_is_handled_once_and_acked(redis: Redis, names: Names) -> None:
    events = [probe(i) for i in range(300)]
    await Publisher(redis).publish_many((names.stream, e) for e in events)
    async with running(redis, names):

        async def all_done() -> bool:
            return (
                await redis.hlen(names.key("effects")) == 300 and await pending(redis, names) == 0
            )

        await eventually(all_done, what="300 events handled and acked")
    effects = await hash_ints(redis, names.key("effects"))
    assert effects == {e.event_id: 1 for e in events}


async def test_group_created_on_a_missing_stream_sees_events_published_before_it_reads(
    redis: Redis, names: Names
) -> None:
    consumer = Consumer(
        redis, stream=names.stream, group=names.group, consumer="c", handlers={}, options=FAST
    )
    await consumer.ensure_group()
    await consumer.ensure_group()  # idempotent
    await Publisher(redis).publish(names.stream, probe(1))
    async with running(redis, names):
        await eventually(lambda: _effects(redis, names, 1), what="the early event handled")


async def _effects(redis: Redis, names: Names, n: int) -> bool:
    return int(await redis.hlen(names.key("effects"))) == n


async def test_always_failing_entry_is_dead_lettered_and_later_entries_keep_flowing(
    redis: Redis, names: Names
) -> None:
    bad = probe(0, fail_until=-1)
    good = [probe(i) for i in range(1, 21)]
    await Publisher(redis).publish_many([(names.stream, bad)] + [(names.stream, e) for e in good])
    async with running(redis, names):
        await eventually(lambda: _effects(redis, names, 20), what="good events handled")
        await eventually(lambda: _dlq_len(redis, names, 1), what="bad event dead-lettered")
        await eventually(lambda: _no_pending(redis, names), what="the bad entry acked")
    [dead] = await deadletter.list_dead(redis, names.stream)
    assert dead.event_id == bad.event_id
    assert dead.type == "test.probe"
    assert dead.group == names.group
    assert dead.consumer == "c1"
    assert dead.deliveries == FAST.max_deliveries
    assert "RuntimeError: probe 0 fails on attempt 3" in dead.error
    starts = await hash_ints(redis, names.key("starts"))
    assert starts[bad.event_id] == FAST.max_deliveries
    # Redis's delivery counter agreed with the local attempts (each retry was counted there).
    raw = await entries(redis, dlq_key(names.stream))
    assert raw[0][1][DeadLetterField.DELIVERIES] == str(FAST.max_deliveries).encode()


async def test_give_up_runs_before_the_dead_letter_and_keeps_the_entry_pending_when_it_fails(
    redis: Redis, names: Names
) -> None:
    bad = probe(0, fail_until=-1)
    await Publisher(redis).publish(names.stream, bad)
    calls: list[tuple[str, int]] = []

    async def give_up(event: Probe, error: str, deliveries: int) -> None:
        calls.append((event.event_id, deliveries))
        if len(calls) == 1:  # the first time, settling fails: nothing may be lost
            raise RuntimeError("the build could not be failed yet")
        assert await redis.xlen(dlq_key(names.stream)) == 0  # before, not after

    async with running(redis, names, on_give_up=give_up):
        await eventually(lambda: _dlq_len(redis, names, 1), what="dead-lettered once settled")
        await eventually(lambda: _no_pending(redis, names), what="the entry acked")
    assert [c[0] for c in calls] == [bad.event_id, bad.event_id]
    assert calls[1][1] > calls[0][1]  # the second decision came with a later delivery


async def test_a_second_payload_under_a_handled_event_id_goes_to_the_dead_letters(
    redis: Redis, names: Names
) -> None:
    first = probe(1)
    forged = msgspec.structs.replace(first, n=2)  # the same id, another payload
    async with running(redis, names):
        await Publisher(redis).publish(names.stream, first)
        await eventually(lambda: _effects(redis, names, 1), what="the first applied")
        await Publisher(redis).publish(names.stream, forged)
        await eventually(lambda: _dlq_len(redis, names, 1), what="the second dead-lettered")
        await eventually(lambda: _no_pending(redis, names), what="both acked")
    [dead] = await deadletter.list_dead(redis, names.stream)
    assert dead.event_id == first.event_id
    assert "seen before with another payload" in dead.error
    assert dead.deliveries == 1  # at once, not after the retries
    assert await hash_ints(redis, names.key("effects")) == {first.event_id: 1}


async def _dlq_len(redis: Redis, names: Names, n: int) -> bool:
    return int(await redis.xlen(dlq_key(names.stream))) == n


async def _no_pending(redis: Redis, names: Names) -> bool:
    return await pending(redis, names) == 0


async def test_a_transient_failure_is_retried_and_applied_once(redis: Redis, names: Names) -> None:
    event = probe(1, fail_until=2)
    await Publisher(redis).publish(names.stream, event)
    async with running(redis, names):
        await eventually(lambda: _effects(redis, names, 1), what="the event handled")
    assert (await hash_ints(redis, names.key("starts")))[event.event_id] == 3
    assert await redis.xlen(dlq_key(names.stream)) == 0


async def test_a_handler_failing_for_a_server_s_outage_waits_it_out_uncounted(
    redis: Redis, names: Names
) -> None:
    """PostgreSQL restarting for a few seconds: the handler's connection is refused more times
    than ``max_deliveries`` allows. Those failures say nothing about the event: it is retried
    until the server is back, handled once, and never dead-lettered."""
    attempts = 0

    async def handler(event: Probe) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 8:  # FAST dead-letters at the third counted delivery
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
        await redis.hincrby(names.key("effects"), event.event_id, 1)

    await Publisher(redis).publish(names.stream, probe(1))
    async with running(redis, names, handler=handler):
        await eventually(lambda: _effects(redis, names, 1), what="handled once the server is back")
        await eventually(lambda: _no_pending(redis, names), what="acked")
    assert attempts == 9
    assert await redis.xlen(dlq_key(names.stream)) == 0


async def test_an_outage_past_the_patience_counts_as_any_failure(
    redis: Redis, names: Names
) -> None:
    async def handler(event: Probe) -> None:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    await Publisher(redis).publish(names.stream, probe(1))
    patient = replace(FAST, outage_patience_ms=300)

    async def dead_lettered() -> bool:
        return bool(await redis.xlen(dlq_key(names.stream)))

    async with running(redis, names, handler=handler, options=patient):
        await eventually(dead_lettered, what="dead-lettered once the patience is spent")
    [(_, fields)] = await redis.xrange(dlq_key(names.stream))
    assert b"ConnectionRefusedError" in fields[DeadLetterField.ERROR]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({b"type": b"test.probe", b"event_id": b"x", b"data": b"{not json"}, "undecodable"),
        (
            {b"type": b"test.probe", b"event_id": b"x", b"data": b'{"type":"test.probe"}'},
            "undecodable",
        ),
        ({b"garbage": b"1"}, "malformed entry"),
    ],
)
async def test_undecodable_entry_goes_straight_to_the_dlq(
    redis: Redis, names: Names, fields: dict[bytes, bytes], reason: str
) -> None:
    await redis.xadd(names.stream, fields)
    await Publisher(redis).publish(names.stream, probe(1))
    async with running(redis, names):
        await eventually(lambda: _dlq_len(redis, names, 1), what="dead letter")
        await eventually(lambda: _effects(redis, names, 1), what="the next event handled")
    [dead] = await deadletter.list_dead(redis, names.stream)
    assert reason in dead.error
    assert dead.deliveries == 1
    assert len(await hash_ints(redis, names.key("starts"))) == 1  # only the good one ran


async def test_unknown_event_types_are_acked_and_ignored(redis: Redis, names: Names) -> None:
    await redis.xadd(
        names.stream, {b"type": b"some.future_event", b"event_id": b"e", b"data": b"{}"}
    )
    await Publisher(redis).publish(names.stream, probe(1))
    async with running(redis, names):
        await eventually(lambda: _effects(redis, names, 1), what="probe handled")
        await eventually(lambda: _no_pending(redis, names), what="unknown type acked")
    assert await redis.xlen(dlq_key(names.stream)) == 0


async def test_restarted_consumer_first_handles_its_own_pending_entries(
    redis: Redis, names: Names
) -> None:
    consumer = Consumer(
        redis, stream=names.stream, group=names.group, consumer="same", handlers={}, options=FAST
    )
    await consumer.ensure_group()
    old = [probe(i) for i in range(5)]
    await Publisher(redis).publish_many((names.stream, e) for e in old)
    # A previous life of "same" received these and died before acking.
    await redis.xreadgroup(names.group, "same", {names.stream: ">"}, count=10)
    await Publisher(redis).publish_many((names.stream, probe(i)) for i in range(5, 10))
    slow_start = replace(FAST, concurrency=1)
    async with running(redis, names, name="same", options=slow_start):
        await eventually(lambda: _effects(redis, names, 10), what="all ten handled")
    order = [int(x) for x in await redis.lrange(names.key("order"), 0, -1)]
    assert order[:5] == [0, 1, 2, 3, 4]
    assert sorted(order) == list(range(10))
    # The redelivery was counted: the re-read made it the second delivery.
    assert await redis.xlen(dlq_key(names.stream)) == 0


async def test_a_group_lost_while_re_reading_own_pending_entries_is_made_again(
    redis: Redis, names: Names
) -> None:
    """Redis forgets the stream and its group (a flush, a failover to an empty replica) while a
    restarted consumer is still re-reading its own pending entries, its slots full: the re-read
    finds no group, makes it again and goes on to new entries, instead of retrying the re-read
    once a second for ever while nothing new is read."""
    gate = asyncio.Event()
    handled: list[int] = []

    async def handler(event: Probe) -> None:
        if event.n < 3:
            await gate.wait()
        handled.append(event.n)

    consumer = Consumer(
        redis, stream=names.stream, group=names.group, consumer="same", handlers={}, options=FAST
    )
    await consumer.ensure_group()
    await Publisher(redis).publish_many((names.stream, probe(i)) for i in range(3))
    # A previous life of "same" received these and died before acking.
    await redis.xreadgroup(names.group, "same", {names.stream: ">"}, count=10)
    one_slot = replace(FAST, concurrency=1)
    async with running(redis, names, name="same", options=one_slot, handler=handler) as consumer:
        await eventually(lambda: _true(len(consumer.inflight) == 1), what="re-reading entry 0")
        await redis.delete(names.stream)  # the stream and its group, as after a flush
        gate.set()
        await eventually(lambda: _true(handled == [0]), what="entry 0 handled")
        await Publisher(redis).publish(names.stream, probe(9))
        await eventually(lambda: _true(9 in handled), what="a new entry read", timeout=10)
    assert await redis.xinfo_groups(names.stream)  # the group is back
    assert handled == [0, 9]  # 1 and 2 went with the stream


async def test_long_handler_with_heartbeat_is_not_claimed_away(redis: Redis, names: Names) -> None:
    event = probe(1, sleep_s=3.0)  # three times min_idle
    await Publisher(redis).publish(names.stream, event)
    async with running(redis, names, name="holder"):
        await eventually(lambda: _started(redis, names, event), what="holder started")
        async with running(redis, names, name="claimer"):
            await eventually(
                lambda: _effects(redis, names, 1), what="the long handler done", timeout=15
            )
    assert (await hash_ints(redis, names.key("starts")))[event.event_id] == 1


async def _started(redis: Redis, names: Names, event: Probe) -> bool:
    return bool(await redis.hexists(names.key("starts"), event.event_id))


async def _starts(redis: Redis, names: Names, event: Probe, n: int) -> bool:
    raw = await redis.hget(names.key("starts"), event.event_id)
    return raw is not None and int(raw) >= n


async def test_stop_acks_in_flight_work_and_leaves_backoffs_pending(
    redis: Redis, names: Names
) -> None:
    slow = probe(1, sleep_s=1.0)
    retrying = probe(2, fail_until=1)
    await Publisher(redis).publish_many([(names.stream, slow), (names.stream, retrying)])
    backoff = replace(FAST, retry_base_ms=900, retry_max_ms=900)
    async with running(redis, names, options=backoff):
        await eventually(lambda: _started(redis, names, slow), what="slow handler started")
        await eventually(lambda: _started(redis, names, retrying), what="retry scheduled")
    # Stopped: the slow handler finished and was acked; the retrying one is still pending.
    effects = await hash_ints(redis, names.key("effects"))
    assert effects == {slow.event_id: 1}
    rows = await redis.xpending_range(names.stream, names.group, min="-", max="+", count=10)
    assert [r["message_id"] for r in rows] == [await _entry_id(redis, names, retrying)]


async def _entry_id(redis: Redis, names: Names, event: Probe) -> bytes:
    for entry_id, fields in await entries(redis, names.stream):
        if fields[b"event_id"] == event.event_id.encode():
            return entry_id
    raise AssertionError("entry not found")


async def test_concurrency_limit_bounds_reads(redis: Redis, names: Names) -> None:
    gate = asyncio.Event()
    running_now = 0
    peak = 0

    async def handler(event: Probe) -> None:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        await gate.wait()
        running_now -= 1

    await Publisher(redis).publish_many((names.stream, probe(i)) for i in range(20))
    limited = replace(FAST, concurrency=4)
    async with running(redis, names, options=limited, handler=handler) as consumer:
        await eventually(lambda: _true(running_now == 4), what="four handlers running")
        await asyncio.sleep(0.3)
        assert len(consumer.inflight) == 4
        # Entries not yet read stay undelivered (not buffered in this process).
        info = await redis.xinfo_groups(names.stream)
        assert int(info[0]["pending"]) == 4
        gate.set()
        await eventually(lambda: _no_pending(redis, names), what="all acked")
    assert peak == 4


async def _true(value: bool) -> bool:
    return value


def test_encode_fields_carries_routing_beside_the_payload() -> None:
    event = probe(7)
    fields = encode_fields(event)
    assert fields[b"type"] == b"test.probe"
    assert fields[b"event_id"] == event.event_id.encode()
    assert b'"n":7' in fields[b"data"]


async def test_publisher_caps_stream_length_approximately(redis: Redis, names: Names) -> None:
    publisher = Publisher(redis, max_len={names.stream: 100})
    for start in range(0, 3_000, 500):
        await publisher.publish_many((names.stream, probe(i)) for i in range(start, start + 500))
    length = int(await redis.xlen(names.stream))
    assert 100 <= length < 1_000  # MAXLEN ~ trims whole nodes: near the cap, never below it


async def test_emit_routes_each_event_to_its_contract_stream(redis: Redis) -> None:
    event = BuildRequested(
        build_id=new_event_id(),
        project_id=new_event_id(),
        user_id=new_event_id(),
        producer="test",
        goal="an app",
    )
    entry_id = await Publisher(redis).emit(event)
    try:
        [(_, fields)] = await redis.xrange(BUILD_REQUESTS.name, entry_id, entry_id)
        assert fields[b"event_id"] == event.event_id.encode()
    finally:
        await redis.xdel(BUILD_REQUESTS.name, entry_id)


def test_for_stream_refuses_wrong_wiring(redis: Redis) -> None:
    async def handler(event: object) -> None: ...

    with pytest.raises(ValueError, match="does not read"):
        Consumer.for_stream(
            redis, BUILD_REQUESTS, group="budget", consumer="c", handlers={BuildRequested: handler}
        )
    with pytest.raises(ValueError, match="does not carry ContextReady"):
        Consumer.for_stream(
            redis,
            BUILD_REQUESTS,
            group="context-assembler",
            consumer="c",
            handlers={ContextReady: handler},
        )
    consumer = Consumer.for_stream(
        redis,
        BUILD_REQUESTS,
        group="context-assembler",
        consumer="c",
        handlers={BuildRequested: handler},
    )
    assert consumer.options.max_age_ms == BUILD_REQUESTS.max_age_ms


async def test_a_consumer_started_while_redis_is_down_waits_for_it_and_then_consumes(
    tmp_path: Path, names: Names
) -> None:
    """A service restarted in the middle of a Redis restart (seen in the chaos test: the group
    creation met a closed connection and the process exited) waits for Redis instead."""
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server to start late")
    port = free_port()
    client = connect_redis(f"redis://127.0.0.1:{port}/0")
    consumer = Consumer(
        client,
        stream=names.stream,
        group=names.group,
        consumer="early",
        handlers={Probe: ProbeHandler(client, names.prefix)},
        options=FAST,
    )
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(consumer.run())

        async def met_no_redis() -> bool:
            return any(e.get("doing") == "creating the group" for e in logs)

        await eventually(met_no_redis, what="the consumer meeting no Redis")
        assert not task.done()
    server = processes.start(
        "redis-server",
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        log=tmp_path / "redis.log",
    )
    try:
        await eventually(lambda: _answers(client), what="the late redis-server answering")
        await Publisher(client).publish(names.stream, probe(1))
        await eventually(lambda: _effects(client, names, 1), what="the event handled")
        consumer.stop()
        await asyncio.wait_for(task, 30)
    finally:
        server.stop(grace_s=10)
        await client.aclose()


async def _answers(client: Redis) -> bool:
    try:
        return bool(await client.ping())
    except RedisError:
        return False
