"""The consumer's janitor: orphan claims, group gauges, departed consumers, age trimming.

Every consumer of a group runs one; they are safe to run side by side because each step is either
atomic in Redis (``XAUTOCLAIM`` hands an entry to exactly one claimant) or idempotent (deleting an
empty departed consumer, trimming to a floor, setting a gauge).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from cofounder_runtime.periodic import every
from cofounder_runtime.streamreply import as_bytes, id_tuple

if TYPE_CHECKING:
    from cofounder_runtime.consumer import Consumer

__all__ = ["Janitor", "trim_by_age"]

_log = structlog.get_logger("cofounder.janitor")

# XGROUP DELCONSUMER drops the consumer's pending entries with it, so "nothing pending" must be
# checked in the same atomic step, or an entry delivered in between would be lost.
_DELETE_IF_EMPTY = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""


def _field(info: dict[Any, Any], name: str) -> Any:
    """A field of an ``XINFO`` reply, whichever of str or bytes keys the client returns."""
    if name in info:
        return info[name]
    return info.get(name.encode())


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def trim_by_age(redis: Redis, stream: str, *, max_age_ms: int) -> str:
    """Trim entries older than ``max_age_ms``, but none a group has pending or not yet read.

    Returns the ``MINID`` used. Approximate (``~``): Redis trims whole macro nodes, so a few
    older entries may stay until the next pass; it never trims above the floor.
    """
    floor = (int(time.time() * 1000) - max_age_ms, 0)
    groups = await redis.xinfo_groups(stream)
    if groups:
        async with redis.pipeline(transaction=False) as pipe:
            for group in groups:
                pipe.xpending(stream, _field(group, "name"))
            summaries = await pipe.execute()
        for group, summary in zip(groups, summaries, strict=True):
            last = id_tuple(_text(_field(group, "last-delivered-id")))
            floor = min(floor, (last[0], last[1] + 1))
            if summary["pending"]:
                floor = min(floor, id_tuple(summary["min"]))
    minid = f"{floor[0]}-{floor[1]}"
    await redis.xtrim(stream, minid=minid, approximate=True)
    return minid


class Janitor:
    """Periodic housekeeping for one consumer (see the module docstring)."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self._delete_if_empty = consumer.redis.register_script(_DELETE_IF_EMPTY)
        self._log = _log.bind(stream=consumer.stream, group=consumer.group, consumer=consumer.name)

    async def run(self) -> None:
        """Run a pass every period (±20%: jitter spreads the passes of many consumers so they
        do not claim in lockstep) until the consumer stops; a failed pass is logged and the
        next one tries again."""
        await every(
            self._consumer.options.janitor_every_ms / 1000,
            self.run_once,
            self._consumer.stopped_event,
            name="janitor",
            log=self._log,
            failed="janitor pass failed",
            jitter=0.2,
            immediately=False,
        )

    async def run_once(self) -> None:
        """One pass: orphans claimed, the group's gauges and departed consumers, age trimming."""
        await self.claim_orphans()
        await self.refresh_group()
        max_age = self._consumer.options.max_age_ms
        if max_age is not None:
            await trim_by_age(self._consumer.redis, self._consumer.stream, max_age_ms=max_age)

    async def claim_orphans(self) -> int:
        """Claim entries idle past ``min_idle`` from any consumer, up to the free slots and
        ``claim_per_pass``; return how many."""
        c = self._consumer
        claimed_total = 0
        cursor: bytes | str = "0-0"
        share = c.options.claim_per_pass
        while not c.stopping:
            free = c.free_slots()
            if share is not None:
                free = min(free, share - claimed_total)
            if free <= 0:
                break
            reply = await c.redis.xautoclaim(
                c.stream,
                c.group,
                c.name,
                min_idle_time=c.options.min_idle_ms,
                start_id=cursor,
                count=min(free, c.options.batch_size),
            )
            cursor, entries = reply[0], reply[1]
            if len(reply) > 2 and reply[2]:
                self._log.warning(
                    "pending entries were trimmed before anyone acked them",
                    ids=[_text(i) for i in reply[2]],
                )
            if entries:
                counts = await self._delivery_counts([e[0] for e in entries])
                self._log.info("claimed orphaned entries", count=len(entries))
                for entry_id, fields in entries:
                    c.accept_claimed(entry_id, fields, counts.get(entry_id, 1))
                claimed_total += len(entries)
            if _text(cursor) == "0-0":
                break
        return claimed_total

    async def _delivery_counts(self, ids: list[bytes]) -> dict[bytes, int]:
        """Delivery counts of entries just claimed (``XAUTOCLAIM`` does not return them)."""
        c = self._consumer
        ordered = sorted(ids, key=id_tuple)
        rows = await c.redis.xpending_range(
            c.stream,
            c.group,
            min=ordered[0],
            max=ordered[-1],
            count=len(ids) + len(c.inflight) + 1,
            consumername=c.name,
        )
        return {as_bytes(row["message_id"]): int(row["times_delivered"]) for row in rows}

    async def refresh_group(self) -> None:
        """Update the pending/lag gauges and remove departed consumers with nothing pending."""
        c = self._consumer
        try:
            groups = await c.redis.xinfo_groups(c.stream)
        except ResponseError:
            return  # the stream is gone; the reader recreates it
        for group in groups:
            if _text(_field(group, "name")) == c.group:
                lag = _field(group, "lag")
                c.metrics.set_group_state(
                    pending=int(_field(group, "pending")),
                    lag=None if lag is None else int(lag),
                )
        consumers = await c.redis.xinfo_consumers(c.stream, c.group)
        for info in consumers:
            name = _text(_field(info, "name"))
            inactive = _field(info, "inactive")  # Redis 7.2+; "idle" before
            idle = int(
                inactive if inactive is not None and int(inactive) >= 0 else _field(info, "idle")
            )
            if (
                name != c.name
                and int(_field(info, "pending")) == 0
                and idle > c.options.departed_after_ms
            ):
                removed = await self._delete_if_empty(keys=[c.stream], args=[c.group, name])
                if removed != -1:
                    self._log.info("removed departed consumer", departed=name, idle_ms=idle)
