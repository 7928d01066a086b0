"""Idempotent side effects keyed by ``event_id``, so a redelivered event changes nothing.

Two forms, one per kind of effect:

- :class:`RedisOnce`: the effect is Redis commands. The marker check and the effect run in one Lua
  script, so they happen together or not at all. The marker expires after ``ttl`` (longer than
  any redelivery window: ``max_deliveries`` x backoff, plus DLQ replays an operator might make).
- :func:`record_once` (``idempotency_sql``): the effect is database writes. The event id is inserted
  in the same transaction as the handler's writes; a duplicate finds the row and does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from cofounder_runtime.conflict import PayloadConflict
from cofounder_runtime.keys import once_key

__all__ = ["Applied", "RedisOnce"]

# The marker is set after the effect: a script that raises midway is not rolled back by Redis,
# and a marker set first would make the retry skip an effect that never completed. Scripts run
# without interleaving, so check-then-set is still atomic against other clients.
# The marker holds the payload's digest ('1' when the caller gave none): a second payload under
# the same id is answered {2, digest seen} and nothing is applied.
_PREAMBLE = """
local marker = KEYS[#KEYS]
local ttl_ms = ARGV[#ARGV]
local digest = ARGV[#ARGV - 1]
local seen = redis.call('GET', marker)
if seen then
  if digest ~= '' and seen ~= '1' and seen ~= digest then
    return {2, seen}
  end
  return {0, false}
end
local function apply()
"""
_POSTAMBLE = """
end
local result = apply()
redis.call('SET', marker, digest ~= '' and digest or '1', 'PX', ttl_ms)
return {1, result}
"""


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of :meth:`RedisOnce.apply`: whether the effect ran, and what it returned."""

    applied: bool
    result: Any


class RedisOnce:
    """An effect, written in Lua, applied at most once per ``event_id`` within ``scope``.

    ``body`` is the body of a Lua function. It sees ``KEYS``/``ARGV`` as passed to :meth:`apply`
    (the marker key and the TTL are appended after them, so ``KEYS[1]`` is still the caller's
    first key) and may ``return`` a value. Redis does not roll back a script that fails midway,
    so a body validates before it writes; the marker is only set once the body has returned.

    Example, a budget counter that counts each usage once::

        add = RedisOnce(redis, scope="budget",
                        body="return redis.call('INCRBY', KEYS[1], ARGV[1])")
        await add.apply(event.event_id, keys=["spend:u1"], args=[cost])

    On Redis Cluster every key must hash to one slot: put ``{scope}`` in your keys' hash tag.
    """

    __slots__ = ("_scope", "_script", "_ttl_ms")

    def __init__(
        self, redis: Redis, *, scope: str, body: str, ttl: timedelta = timedelta(days=7)
    ) -> None:
        self._script: AsyncScript = redis.register_script(_PREAMBLE + body + _POSTAMBLE)
        self._scope = scope
        self._ttl_ms = int(ttl.total_seconds() * 1000)

    def marker(self, event_id: str) -> str:
        """The marker key of ``event_id``."""
        return once_key(self._scope, event_id)

    async def apply(
        self,
        event_id: str,
        *,
        keys: Sequence[str] = (),
        args: Sequence[str | bytes | int | float] = (),
        digest: str | None = None,
    ) -> Applied:
        """Run the effect unless ``event_id`` was applied before. With the payload's
        ``digest`` (:func:`~cofounder_contracts.codec.payload_digest`), an id applied before
        with another payload raises :class:`~cofounder_runtime.conflict.PayloadConflict`."""
        applied, result = await self._script(
            keys=[*keys, self.marker(event_id)], args=[*args, digest or "", self._ttl_ms]
        )
        if applied == 2:
            seen = result.decode() if isinstance(result, bytes) else str(result)
            raise PayloadConflict(event_id, seen=seen, now=digest or "")
        return Applied(applied=bool(applied), result=result)
