"""What the loop asks Redis before every model call, in one round trip: the budget gate and
the build's cancel flag, read into a :class:`~cofounder_domain.run.Control` (a value of the
domain, which decides what they mean: see :func:`cofounder_domain.run.decide`)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from cofounder_contracts.keys import budget_gate_key, cancel_key, gate_resets_at
from cofounder_domain.run import Control

__all__ = ["Control", "parse_control", "queue_control", "read_control", "request_cancel"]

_CANCEL_TTL_S = 7 * 24 * 3600


def queue_control(pipe: Pipeline, *, user_id: str, build_id: str) -> None:
    """Queue the two reads on ``pipe``; :func:`parse_control` reads its last two replies."""
    pipe.get(budget_gate_key(user_id))
    pipe.get(cancel_key(build_id))


async def read_control(redis: Redis, *, user_id: str, build_id: str) -> Control:
    """The gate and the cancel flag (two GETs, pipelined: keys in different slots)."""
    async with redis.pipeline(transaction=False) as pipe:
        queue_control(pipe, user_id=user_id, build_id=build_id)
        gate, cancelled = await pipe.execute()
    return parse_control(gate, cancelled)


def parse_control(gate: bytes | None, cancelled: bytes | None) -> Control:
    closed_until = gate_resets_at(gate) if gate else None
    return Control(cancelled=bool(cancelled), closed_until=closed_until)


async def request_cancel(redis: Redis, build_id: str) -> None:
    await redis.set(cancel_key(build_id), b"1", ex=_CANCEL_TTL_S)
