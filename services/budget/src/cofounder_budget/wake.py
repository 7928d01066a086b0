"""The wake daemon: sleeping builds wait in a sorted set scored by when they may run again (the
budget's reset); a loop wakes those whose time has come, and a top-up or a plan change wakes the
user's builds at once (:meth:`Waker.wake_user`).

Claiming a wake and publishing it are one script (``ZREM`` then ``XADD``), so with several budget
replicas each sleeping build is woken exactly once, and a crash cannot separate the claim from
the signal. (On Redis Cluster the set and the signals stream must share a slot; give both keys
the same hash tag there.) The clock is injectable for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Final

import msgspec
import structlog
from redis.asyncio import Redis

from cofounder_budget.metrics import SLEEPING, WAKES
from cofounder_contracts import AgentSleeping, BudgetWake, WakeReason, envelope
from cofounder_contracts.codec import encode_fields
from cofounder_contracts.keys import SLEEPING_BUILDS_KEY, budget_gate_key
from cofounder_contracts.streams import BUDGET_SIGNALS
from cofounder_runtime.periodic import every

__all__ = ["SLEEPING_KEY", "WakeDaemon", "Waker", "remember_sleeping"]

SLEEPING_KEY: Final = SLEEPING_BUILDS_KEY
_log = structlog.get_logger("cofounder.budgets.wake")

_CLAIM_AND_WAKE: Final = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*',
             'type', ARGV[2], 'event_id', ARGV[3], 'data', ARGV[4])
  return 1
end
return 0
"""


class _Sleeper(msgspec.Struct, array_like=True):
    build_id: str
    project_id: str
    user_id: str
    sleeping_event: str
    resets_at: datetime


async def remember_sleeping(
    redis: Redis, event: AgentSleeping, *, key: str = SLEEPING_KEY, now: float | None = None
) -> None:
    """Keep a sleeping build until its reset (idempotent: the member is the same each time).

    When the user's gate is already open again (a top-up or a plan change landed while the
    build was going to sleep), the build is due at once instead of at the reset.
    """
    member = msgspec.json.encode(
        _Sleeper(event.build_id, event.project_id, event.user_id, event.event_id, event.resets_at)
    )
    score = event.resets_at.timestamp()
    if not await redis.exists(budget_gate_key(event.user_id)):
        score = min(score, time.time() if now is None else now)
    await redis.zadd(key, {member: score})


class Waker:
    """Claims sleeping builds and signals ``budget.wake`` for them, one script per build."""

    def __init__(self, redis: Redis, *, key: str = SLEEPING_KEY) -> None:
        self._redis = redis
        self.key = key
        self._script = redis.register_script(_CLAIM_AND_WAKE)

    async def wake(self, members: list[bytes], reason: WakeReason) -> int:
        """Wake the builds of ``members`` that no one woke before; return how many."""
        woken = 0
        for member in members:
            try:
                sleeper = msgspec.json.decode(member, type=_Sleeper)
            except msgspec.DecodeError as exc:
                # Not of this release's shape (or not JSON): left in place, it would stop every
                # wake behind it, round after round. Its build, still asleep in PostgreSQL,
                # comes back through the reconciler's sleep repair.
                _log.error("dropped a sleeping-set member that does not decode",
                           member=member[:200], error=str(exc))  # fmt: skip
                await self._redis.zrem(self.key, member)
                continue
            wake = BudgetWake(
                **envelope(
                    build_id=sleeper.build_id,
                    project_id=sleeper.project_id,
                    user_id=sleeper.user_id,
                    producer="budget",
                    causation_id=sleeper.sleeping_event,
                    kind="budget.wake",
                ),
                reason=reason,
            )
            fields = encode_fields(wake)
            claimed = await self._script(
                keys=[self.key, BUDGET_SIGNALS.name],
                args=[
                    member,
                    fields[b"type"],
                    fields[b"event_id"],
                    fields[b"data"],
                    BUDGET_SIGNALS.max_len,
                ],
            )
            if claimed:
                woken += 1
                _log.info("woke a sleeping build", build_id=sleeper.build_id, reason=reason.value)
        WAKES.labels(reason.value).inc(woken)
        return woken

    async def wake_user(self, user_id: str, reason: WakeReason) -> int:
        """Wake every sleeping build of ``user_id`` now (a top-up, a plan change)."""
        # Members are JSON arrays holding the user id as a quoted string (ids are UUIDs).
        pattern = f'*"{user_id}"*'
        members = [m async for m, _ in self._redis.zscan_iter(self.key, match=pattern)]
        return await self.wake(members, reason)


class WakeDaemon:
    """Wakes the builds whose reset has come, every ``interval_s``."""

    def __init__(
        self,
        redis: Redis,
        *,
        clock: Callable[[], float] | None = None,
        interval_s: float = 1.0,
        batch: int = 100,
        key: str = SLEEPING_KEY,
    ) -> None:
        self._redis = redis
        self._waker = Waker(redis, key=key)
        self._clock = clock
        self._interval_s = interval_s
        self._batch = batch
        self.woken = 0

    async def wake_due(self) -> int:
        """Wake every build whose time has come; return how many this daemon woke."""
        raw = await self._redis.zrangebyscore(
            self._waker.key, "-inf", await self._now(), start=0, num=self._batch
        )
        due = [m for m in raw if isinstance(m, bytes)]
        woken = await self._waker.wake(due, WakeReason.ROLLOVER)
        self.woken += woken
        SLEEPING.set(await self._redis.zcard(self._waker.key))
        return woken

    async def _now(self) -> float:
        """Redis's clock (unless a test gives one): the one the budget gate expires by, and the
        same for every replica. A replica whose own clock runs fast would wake builds before
        their gate opens, and they would go back to sleep, due again at once, every round."""
        if self._clock is not None:
            return self._clock()
        seconds, micros = await self._redis.time()
        return int(seconds) + int(micros) / 1_000_000

    async def wake_round(self) -> None:
        """Wake batches until one is not full (nothing more is due)."""
        while await self.wake_due() == self._batch:
            pass

    async def run(self, stop: asyncio.Event) -> None:
        """A round now, then every ``interval_s`` until ``stop``; a failed round is logged and
        the next one tries again."""
        await every(
            self._interval_s,
            self.wake_round,
            stop,
            name="wake-daemon",
            log=_log,
            failed="wake round failed",
        )
