"""A mutex across processes: one holder at a time for a key, renewed while held.

``SET key token NX PX ttl`` takes it, a keep-alive renews it every third of the TTL while the
block runs, and a compare-and-delete gives it back (never someone else's). A holder that dies
stops renewing; its mutex expires within the TTL and the next waiter takes it.

For work that must not interleave across replicas, such as a snapshot of a project and a prune
of the same project's blobs (a prune could delete a blob that a manifest being written is about
to reference).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Final

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cofounder_runtime.periodic import every

__all__ = ["RELEASE_IF_MINE", "RENEW_IF_MINE", "MutexTimeout", "held"]

_log = structlog.get_logger("cofounder.mutex")

#: ``KEYS[1]`` renewed for ``ARGV[2]`` ms if it still holds ``ARGV[1]`` (1), else 0.
RENEW_IF_MINE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
#: ``KEYS[1]`` deleted if it still holds ``ARGV[1]`` (1), else 0: never someone else's.
RELEASE_IF_MINE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class MutexTimeout(TimeoutError):
    """The mutex stayed held by another for longer than the caller would wait."""


@contextlib.asynccontextmanager
async def held(
    redis: Redis,
    key: str,
    *,
    ttl_ms: int = 30_000,
    wait_s: float = 300.0,
    poll_s: float = 0.05,
) -> AsyncIterator[None]:
    """Hold ``key`` for the block (waiting up to ``wait_s`` for it; :class:`MutexTimeout`)."""
    token = secrets.token_hex(16)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while not await redis.set(key, token, nx=True, px=ttl_ms):
        if loop.time() > deadline:
            raise MutexTimeout(f"{key} stayed held for more than {wait_s:g} s")
        await asyncio.sleep(poll_s)
    stop = asyncio.Event()  # the block has ended, or the mutex was found lost

    async def renew() -> None:
        if not await redis.eval(RENEW_IF_MINE, 1, key, token, ttl_ms):
            _log.warning("mutex lost (expired while held)", key=key)
            stop.set()

    keep = every(
        ttl_ms / 3000,
        renew,
        stop,
        name="mutex keep-alive",
        log=_log.bind(key=key),
        failed="could not renew a mutex",
        immediately=False,
    )
    task = asyncio.create_task(keep)
    try:
        yield
    finally:
        stop.set()
        await task
        with contextlib.suppress(RedisError):
            await redis.eval(RELEASE_IF_MINE, 1, key, token)
