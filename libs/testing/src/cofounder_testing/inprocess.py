"""Consumers running inside the test process, and small Redis readers for assertions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from cofounder_runtime.consumer import Consumer, GiveUp, Handler
from cofounder_runtime.options import ConsumerOptions
from cofounder_testing.fixtures import Names
from cofounder_testing.probe import Probe, ProbeHandler

FAST = ConsumerOptions(
    min_idle_ms=1_000,
    heartbeat_ms=200,
    janitor_interval_ms=200,
    retry_base_ms=10,
    retry_max_ms=50,
    block_ms=100,
    max_deliveries=3,
    shutdown_grace_s=10,
)


@contextlib.asynccontextmanager
async def running(
    redis: Redis,
    names: Names,
    *,
    name: str = "c1",
    options: ConsumerOptions = FAST,
    handler: Handler | None = None,
    on_give_up: GiveUp | None = None,
) -> AsyncIterator[Consumer]:
    """A consumer running as a task for the duration of the block; stopped gracefully after."""
    consumer = Consumer(
        redis,
        stream=names.stream,
        group=names.group,
        consumer=name,
        handlers={Probe: handler or ProbeHandler(redis, names.prefix)},
        options=options,
        on_give_up=on_give_up,
    )
    await consumer.ensure_group()
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        consumer.stop()
        done, _ = await asyncio.wait({task}, timeout=30)
        if not done:
            for t in asyncio.all_tasks():
                t.print_stack(limit=3)
            raise AssertionError("consumer did not stop within 30 s")
        task.result()


async def hash_ints(redis: Redis, key: str) -> dict[str, int]:
    """A Redis hash of integers, with str keys."""
    raw: dict[Any, Any] = await redis.hgetall(key)
    return {k.decode(): int(v) for k, v in raw.items()}


async def pending(redis: Redis, names: Names) -> int:
    """How many entries the test's group has pending."""
    summary = await redis.xpending(names.stream, names.group)
    return int(summary["pending"])


async def entries(redis: Redis, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of a stream, typed for assertions."""
    raw: Any = await redis.xrange(key)
    return [(bytes(i), dict(f)) for i, f in raw]
