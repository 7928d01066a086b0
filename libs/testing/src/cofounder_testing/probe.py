"""A test event and handler whose effects can be counted from outside the process.

The handler records, in Redis under a per-test prefix:

- ``<prefix>:starts`` (hash event_id -> attempts started), proving redeliveries happened;
- ``<prefix>:effects`` (hash event_id -> times the effect applied), through :class:`RedisOnce`,
  so it must be exactly 1 per event however often the event was delivered;
- ``<prefix>:order`` (list of ``n`` in handling order, first attempt only);
- ``<prefix>:log`` (list of ``n`` for every attempt).

Setting ``<prefix>:fast`` makes later attempts skip ``sleep_s`` (a rescued event finishes quickly).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis

from cofounder_contracts.codec import payload_digest
from cofounder_contracts.envelope import Event
from cofounder_runtime.idempotency import RedisOnce

__all__ = ["PROBE_PROJECT_ID", "PROBE_USER_ID", "Probe", "ProbeHandler", "probe", "probe_build_id"]

#: The project and the user of every probe (the contracts take UUIDs only).
PROBE_PROJECT_ID: Final = "00000000-0000-0000-0000-0000000000a1"
PROBE_USER_ID: Final = "00000000-0000-0000-0000-0000000000b1"


class Probe(Event, frozen=True, kw_only=True, tag="test.probe"):
    """A test event. ``fail_until`` fails attempts until that many started; -1 fails always."""

    n: int
    sleep_s: float = 0.0
    fail_until: int = 0
    gate: str | None = None  # when set, fail while this Redis key is absent


def probe_build_id(n: int) -> str:
    """Probe ``n``'s build id: deterministic, and ``n`` reads at its end (``...-000000000009``)."""
    return str(uuid.UUID(int=n))


def probe(n: int, **fields: object) -> Probe:
    """A probe event with test envelope values."""
    return Probe(
        build_id=probe_build_id(n),
        project_id=PROBE_PROJECT_ID,
        user_id=PROBE_USER_ID,
        producer="test",
        n=n,
        **fields,  # type: ignore[arg-type]
    )


@dataclass
class ProbeHandler:
    """The probe's handler, bound to a Redis client and a key prefix."""

    redis: Redis
    prefix: str

    def __post_init__(self) -> None:
        self._effect = RedisOnce(
            self.redis, scope=self.prefix, body="return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)"
        )

    async def __call__(self, event: Probe) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(f"{self.prefix}:starts", event.event_id, 1)
            pipe.rpush(f"{self.prefix}:log", event.n)
            (attempt, _) = await pipe.execute()
        if attempt == 1:
            await self.redis.rpush(f"{self.prefix}:order", event.n)
        if event.sleep_s and not await self.redis.exists(f"{self.prefix}:fast"):
            await asyncio.sleep(event.sleep_s)
        if event.fail_until < 0 or attempt <= event.fail_until:
            raise RuntimeError(f"probe {event.n} fails on attempt {attempt}")
        if event.gate is not None and not await self.redis.exists(event.gate):
            raise RuntimeError(f"probe {event.n}: gate {event.gate} is closed")
        await self._effect.apply(
            event.event_id,
            keys=[f"{self.prefix}:effects"],
            args=[event.event_id],
            digest=payload_digest(event),
        )
