"""Renewing entries this consumer still owns: heartbeats and retries.

A plain ``XCLAIM`` with ``min-idle-time 0`` would also steal an entry that a janitor elsewhere has
just claimed from us (because we stalled past ``min_idle``); then two consumers run it. This script
checks the owner first and renews only what is still ours, atomically, for many entries at once.
It returns the ids it renewed, so the caller learns which entries it has lost.

``XCLAIM ... JUSTID`` resets the idle time without counting a delivery; with ``RETRYCOUNT n`` it
also sets the delivery counter, which is how a local retry is counted as a delivery in Redis (the
counter that decides dead-lettering survives a crash).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["Ownership"]

_RENEW_OWNED: Final = """
local stream, group, me, retrycount = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local renewed = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  if p[1] and p[1][2] == me then
    if retrycount > 0 then
      redis.call('XCLAIM', stream, group, me, 0, id, 'RETRYCOUNT', retrycount, 'JUSTID')
    else
      redis.call('XCLAIM', stream, group, me, 0, id, 'JUSTID')
    end
    renewed[#renewed + 1] = id
  end
end
return renewed
"""


class Ownership:
    """Heartbeat and retry claims for one (stream, group, consumer)."""

    __slots__ = ("_args", "_keys", "_script")

    def __init__(self, redis: Redis, *, stream: str, group: str, consumer: str) -> None:
        self._script: AsyncScript = redis.register_script(_RENEW_OWNED)
        self._keys = [stream]
        self._args: list[str | bytes | int] = [group, consumer]

    async def renew(self, ids: Sequence[bytes]) -> set[bytes]:
        """Reset the idle time of ``ids`` still owned by this consumer; return those."""
        if not ids:
            return set()
        renewed = await self._script(keys=self._keys, args=[*self._args, 0, *ids])
        return set(renewed)

    async def redeliver(self, entry_id: bytes, *, deliveries: int) -> bool:
        """Count another delivery of ``entry_id`` to this consumer; False when it is not ours."""
        renewed = await self._script(keys=self._keys, args=[*self._args, deliveries, entry_id])
        return bool(renewed)
