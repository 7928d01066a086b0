"""A mutex across processes: one holder at a time for a key, renewed while held.

``SET key token NX PX ttl`` takes it, a keep-alive renews it every third of the TTL while the
block runs, and a compare-and-delete gives it back (never someone else's). A holder that dies
stops renewing; its mutex expires within the TTL and the next waiter takes it. A holder whose
mutex is lost (Redis forgot it, or renewals failed for a TTL) is cancelled: :class:`MutexLost`.

For work that must not interleave across replicas, such as a snapshot of a project and a prune
of the same project's blobs (a prune could delete a blob that a manifest being written is about
to reference).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Final

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cofounder_runtime.periodic import every, expire_at

__all__ = ["RELEASE_IF_MINE", "RENEW_IF_MINE", "MutexLost", "MutexTimeout", "held"]

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


class MutexLost(TimeoutError):
    """The mutex was lost while held (Redis forgot it, or no renewal succeeded for a TTL): the
    block was stopped, since another holder may be inside it now. A ``TimeoutError``: Redis's
    trouble, which a consumer retries as an outage (the work is done again under the mutex)."""


class _Holding:
    """One holding of a mutex: its keep-alive, the watch on its time left, and the task (the
    holder) they cancel when it is lost."""

    def __init__(
        self,
        redis: Redis,
        key: str,
        token: str,
        ttl_ms: int,
        holder: asyncio.Task[object],
        *,
        valid_until: float,
    ) -> None:
        self._redis, self._key, self._token, self._ttl_ms = redis, key, token, ttl_ms
        self._holder = holder
        #: Until when (``time.monotonic``) the mutex is surely held: a TTL from the last
        #: successful renewal's sending.
        self.valid_until = valid_until
        self.stop = asyncio.Event()  # the block has ended, or the mutex was found lost
        self.lost = ""  # why, once lost

    def start(self) -> list[asyncio.Task[None]]:
        keep = every(
            self._ttl_ms / 3000,
            self._renew,
            self.stop,
            name="mutex keep-alive",
            log=_log.bind(key=self._key),
            failed="could not renew a mutex",
            immediately=False,
        )
        expiry = expire_at(
            lambda: self.valid_until,
            self.stop,
            lambda: self._lose(f"not renewed for {self._ttl_ms} ms"),
        )
        return [asyncio.create_task(keep), asyncio.create_task(expiry)]

    def _lose(self, why: str) -> None:
        if not self.lost and not self.stop.is_set():
            self.lost = why
            _log.warning("mutex lost; stopping its holder", key=self._key, why=why)
            self.stop.set()
            self._holder.cancel()

    async def _renew(self) -> None:
        attempt = time.monotonic()
        if await self._redis.eval(RENEW_IF_MINE, 1, self._key, self._token, self._ttl_ms):
            self.valid_until = attempt + self._ttl_ms / 1000
        else:
            self._lose("it expired or was taken while held")


@contextlib.asynccontextmanager
async def held(
    redis: Redis,
    key: str,
    *,
    ttl_ms: int = 30_000,
    wait_s: float = 300.0,
    poll_s: float = 0.05,
) -> AsyncIterator[None]:
    """Hold ``key`` for the block (waiting up to ``wait_s`` for it; :class:`MutexTimeout`).

    The block is cancelled, and :class:`MutexLost` raised, as soon as the keep-alive finds the
    mutex gone (a flush, a failover to an empty replica) or has not renewed it for a TTL: its
    work must not go on beside the next holder's. It stops at its next await, so a write in
    flight at that moment still lands."""
    token = secrets.token_hex(16)
    deadline = time.monotonic() + wait_s
    sent = time.monotonic()
    while not await redis.set(key, token, nx=True, px=ttl_ms):
        if sent > deadline:
            raise MutexTimeout(f"{key} stayed held for more than {wait_s:g} s")
        await asyncio.sleep(poll_s)
        sent = time.monotonic()
    holder = asyncio.current_task()
    assert holder is not None
    holding = _Holding(redis, key, token, ttl_ms, holder, valid_until=sent + ttl_ms / 1000)
    tasks = holding.start()
    try:
        yield
    except asyncio.CancelledError:
        if holding.lost and holder.uncancel() == 0:  # ours, and nobody else's
            raise MutexLost(f"{key}: {holding.lost}") from None
        raise
    except BaseException as exc:
        if holding.lost:  # the block made something else of our cancel
            holder.uncancel()
            raise MutexLost(f"{key}: {holding.lost}") from exc
        raise
    else:
        if holding.lost:  # the block swallowed our cancel, or ended before it came
            holder.uncancel()
            raise MutexLost(f"{key}: {holding.lost}")
    finally:
        holding.stop.set()
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            # With every request taken back, it can only be ours, delivered late (the block
            # ended before it came); anyone else's stands.
            if not holding.lost or holder.cancelling() > 0:
                raise
        if not holding.lost:
            with contextlib.suppress(RedisError):
                await redis.eval(RELEASE_IF_MINE, 1, key, token)
