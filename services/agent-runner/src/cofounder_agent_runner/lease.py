"""The build lease: one runner drives a build at a time, and a fencing token says which.

Acquiring increments the build's generation counter and stores ``<owner>|<generation>`` with a
TTL; a keep-alive renews it while the runner works. A drive claims the build's checkpoints for
its generation in PostgreSQL as soon as it holds the lease, checkpoints carry the generation,
and an append is refused once a newer generation has claimed (see ``checkpoints.py``): a runner
that stalled past its TTL and lost the build cannot write behind its successor, and the hot path
needs no round trip to Redis to know it.

The counter lives in Redis, which may forget it (a flush, a restart with no data, a failover);
PostgreSQL is the truth. The caller passes the highest generation claimed or written as a
floor, and the generation handed out is above it: a Redis that forgot the counter cannot hand
out a generation PostgreSQL already holds (whose fence would refuse every append of the new
runner, and whose derived event ids, ``resumed:{generation}``, are already taken).

The TTL is shorter than the consumer's ``min_idle`` (checked in the settings): when a runner
dies, its lease is gone before another runner claims the build's pending entry.

A drive checks its lease (:meth:`Lease.check`, no round trip) before each iteration and before
each tool, and runs each tool under :meth:`Lease.guard`, which cancels it the moment the lease is
lost (the sandbox then kills what the command started): a sandbox must never be driven by two
runners at once, and a 10-minute command must not go on beside the successor's. The lease counts
as lost when the keep-alive found it gone, and also when no renewal has succeeded for a TTL,
counted from when the last successful one was sent: a runner cut off from Redis cannot tell
whether its lease expired, so it assumes it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Final, TypeVar

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cofounder_contracts.keys import lease_generation_key, lease_key
from cofounder_runtime.mutex import RELEASE_IF_MINE, RENEW_IF_MINE
from cofounder_runtime.periodic import every, expire_at

__all__ = ["Lease", "LeaseBusy", "LeaseLost"]

_log = structlog.get_logger("cofounder.runner.lease")

_T = TypeVar("_T")

_ACQUIRE: Final = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then
  return {0, current}
end
local generation = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if generation <= floor then
  generation = floor + 1
  redis.call('SET', KEYS[2], generation)
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. generation, 'PX', ARGV[2])
return {generation, ''}
"""


class LeaseBusy(Exception):
    """Another live runner holds the build."""


class LeaseLost(Exception):
    """This runner's lease expired or was taken over; it must stop driving the build."""


class Lease:
    """The lease of one build for one owner (a runner process and drive)."""

    def __init__(self, redis: Redis, *, build_id: str, owner: str, ttl_ms: int) -> None:
        self._redis = redis
        self.build_id = build_id
        self._keys = [lease_key(build_id), lease_generation_key(build_id)]
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.generation = 0
        self.lost = False
        #: Until when (``time.monotonic``) the lease is surely ours: the TTL from the moment
        #: the last successful acquire or renewal was sent.
        self.valid_until = 0.0
        #: Set by the keep-alive once the lease is lost or has gone a TTL without a renewal.
        self._gone = False
        self._guarded: asyncio.Task[Any] | None = None  # the task running a guarded tool
        self._stopped = False  # it was cancelled for the lease

    @property
    def _value(self) -> str:
        return f"{self.owner}|{self.generation}"

    async def acquire(self, *, floor: int = 0) -> int:
        """Take the lease; the generation is the fencing token, above ``floor`` (the highest
        generation of the build's checkpoints). :class:`LeaseBusy` if held."""
        sent = time.monotonic()
        generation, holder = await self._redis.eval(
            _ACQUIRE, 2, *self._keys, self.owner, self.ttl_ms, floor
        )
        if not generation:
            raise LeaseBusy(
                f"the build is driven by {holder.decode() if isinstance(holder, bytes) else holder}"
            )
        self.generation = int(generation)
        self.valid_until = sent + self.ttl_ms / 1000
        return self.generation

    async def renew(self) -> bool:
        sent = time.monotonic()
        renewed = await self._redis.eval(RENEW_IF_MINE, 1, self._keys[0], self._value, self.ttl_ms)
        if not renewed:
            self.lost = True
            self._stop_guarded()
        else:
            self.valid_until = sent + self.ttl_ms / 1000
        return bool(renewed)

    async def release(self) -> None:
        with contextlib.suppress(RedisError):
            await self._redis.eval(RELEASE_IF_MINE, 1, self._keys[0], self._value)

    def check(self) -> None:
        """:class:`LeaseLost` if the keep-alive has found the lease gone, or has not renewed it
        for a TTL (no round trip)."""
        if self.lost or time.monotonic() >= self.valid_until:
            raise self._lost_error()

    async def guard(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Await ``work`` (a tool), cancelled as soon as the keep-alive finds the lease lost or
        not renewed for a TTL: then :class:`LeaseLost`, once ``work`` has finished cancelling
        (the sandbox has killed what the command started), whatever it made of the cancel.
        Outside :meth:`kept_alive`, only a lease already lost stops it."""
        if self._gone:
            work.close()
            raise self._lost_error()
        # No task of its own per tool (a task made and cancelled per tool cost the runner 12 %
        # of its CPU at 100 builds): the keep-alive cancels the task that awaits the work.
        current = asyncio.current_task()
        assert current is not None
        self._guarded, self._stopped = current, False
        try:
            result = await work
        except asyncio.CancelledError:
            if not self._stopped or current.uncancel() > 0:
                raise  # the drive itself is cancelled
            raise self._lost_error() from None
        except BaseException as exc:
            if self._stopped:  # the work made an error of its cancel: the lease's loss still
                current.uncancel()
                raise self._lost_error() from exc
            raise
        finally:
            self._guarded = None
        if self._stopped:
            # The work swallowed its cancel and returned: the drive must stop here anyway.
            current.uncancel()
            raise self._lost_error()
        return result

    def _lost_error(self) -> LeaseLost:
        if self.lost:
            return LeaseLost("the build lease was lost (expired or taken over)")
        return LeaseLost(
            f"the build lease was not renewed for {self.ttl_ms} ms (Redis unreachable?): "
            "it may have expired"
        )

    def _stop_guarded(self) -> None:
        """The lease is lost, or went a TTL without a renewal: stop the guarded work."""
        self._gone = True
        if self._guarded is not None and not self._stopped:
            self._stopped = True
            self._guarded.cancel()

    @contextlib.asynccontextmanager
    async def kept_alive(self) -> AsyncIterator[Lease]:
        """Renew every third of the TTL while the block runs, and watch the time left: once
        :attr:`valid_until` passes with no renewal, :meth:`guard` stops its work. Release at
        the end."""
        stop = asyncio.Event()  # the block has ended, or the lease was found lost

        async def keep() -> None:
            if not await self.renew():
                _log.warning("build lease lost", owner=self.owner, generation=self.generation)
                stop.set()

        task = asyncio.create_task(
            every(
                self.ttl_ms / 3000,
                keep,
                stop,
                name="build lease keep-alive",
                log=_log,
                failed="could not renew the build lease",
                immediately=False,
            )
        )

        expiry = asyncio.create_task(
            expire_at(lambda: self.valid_until, stop, self._stop_guarded),
            name="build lease expiry",
        )
        try:
            yield self
        finally:
            stop.set()
            await asyncio.gather(task, expiry)
            if not self.lost:
                await self.release()
