"""The cross-process mutex stops its holder once it is lost: work that must not interleave
(a snapshot and a prune of one project) must not go on beside the next holder's."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from cofounder_runtime.connections import connect_redis
from cofounder_runtime.mutex import MutexLost, held

pytestmark = pytest.mark.integration


async def test_a_mutex_redis_forgot_stops_its_holder_and_the_next_one_gets_it(
    own_redis_url: str,
) -> None:
    redis = connect_redis(own_redis_url)
    try:
        started = asyncio.Event()

        async def long_work() -> None:
            async with held(redis, "m:forgot", ttl_ms=600):
                started.set()
                await asyncio.sleep(60)

        holder = asyncio.create_task(long_work())
        await started.wait()
        await redis.delete("m:forgot")  # a flush, or a failover to an empty replica
        begun = time.monotonic()
        with pytest.raises(MutexLost, match="expired or was taken"):
            await asyncio.wait_for(holder, timeout=10)
        assert time.monotonic() - begun < 5
        async with held(redis, "m:forgot", ttl_ms=600, wait_s=1):
            pass  # the next holder, and nobody released it under it
    finally:
        await redis.aclose()


async def test_a_mutex_not_renewed_for_its_ttl_stops_its_holder(own_redis_url: str) -> None:
    redis = connect_redis(own_redis_url)
    try:
        started = asyncio.Event()

        async def long_work() -> None:
            async with held(redis, "m:paused", ttl_ms=900):
                started.set()
                await asyncio.sleep(60)

        holder = asyncio.create_task(long_work())
        await started.wait()
        # Writes (renewals) wait, as in a partition: the mutex may have expired meanwhile.
        await redis.client_pause(5_000, all=False)
        try:
            with pytest.raises(MutexLost, match="not renewed for 900 ms"):
                await asyncio.wait_for(holder, timeout=10)
        finally:
            await redis.client_unpause()
    finally:
        await redis.aclose()


async def test_a_block_that_ends_keeps_its_result_and_a_cancel_from_outside_stays_one(
    own_redis_url: str,
) -> None:
    redis = connect_redis(own_redis_url)
    try:
        async with held(redis, "m:ok", ttl_ms=600):
            await asyncio.sleep(0.5)  # renewed meanwhile
        assert await redis.get("m:ok") is None  # released

        async def cancelled_from_outside() -> None:
            async with held(redis, "m:outside", ttl_ms=600):
                await asyncio.sleep(60)

        task = asyncio.create_task(cancelled_from_outside())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await redis.get("m:outside") is None
    finally:
        await redis.aclose()


async def test_a_block_that_swallows_the_cancel_still_ends_with_mutex_lost(
    own_redis_url: str,
) -> None:
    redis = connect_redis(own_redis_url)
    try:
        started = asyncio.Event()

        async def swallowing() -> str:
            async with held(redis, "m:swallow", ttl_ms=600):
                started.set()
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    return "went on"
            return "unreachable"

        holder = asyncio.create_task(swallowing())
        await started.wait()
        await redis.delete("m:swallow")
        with pytest.raises(MutexLost):
            await asyncio.wait_for(holder, timeout=10)

        async def twice() -> None:
            # The same task holds again afterwards: nothing of the first loss is left on it.
            with contextlib.suppress(MutexLost):
                async with held(redis, "m:again", ttl_ms=600):
                    await redis.delete("m:again")
                    await asyncio.sleep(60)
            task = asyncio.current_task()
            assert task is not None
            assert task.cancelling() == 0
            async with held(redis, "m:again", ttl_ms=600):
                await asyncio.sleep(0.3)

        await asyncio.wait_for(twice(), timeout=10)
    finally:
        await redis.aclose()
