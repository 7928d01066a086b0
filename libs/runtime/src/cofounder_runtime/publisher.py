"""Publishing events: ``XADD`` with retention, one round trip per batch.

Retention on publish is a length cap (``MAXLEN ~``): cheap, and a guard against a stream growing
without bound when its consumers are gone. The age-based, pending-aware trim runs in the consumer's
janitor (see ``janitor.trim_by_age``), because only it can see what groups still need.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from cofounder_contracts.codec import encode_fields
from cofounder_contracts.envelope import Event
from cofounder_contracts.streams import ALL_STREAMS, stream_for
from cofounder_runtime.streamreply import as_bytes

__all__ = ["DEFAULT_MAX_LEN", "Publisher"]

#: Length cap when the caller gives none: large enough that the age trim, not this, is what
#: normally bounds a stream.
DEFAULT_MAX_LEN: Final = 1_000_000


class Publisher:
    """Adds events to streams. One instance per process; it holds no state but the client.

    Length caps default to each contract stream's ``max_len``; ``max_len`` overrides them by
    stream name, and streams in neither get :data:`DEFAULT_MAX_LEN`.
    """

    __slots__ = ("_max_len", "_redis")

    def __init__(self, redis: Redis, *, max_len: Mapping[str, int] | None = None) -> None:
        self._redis = redis
        self._max_len = {s.name: s.max_len for s in ALL_STREAMS} | dict(max_len or {})

    def _cap(self, stream: str) -> int:
        return self._max_len.get(stream, DEFAULT_MAX_LEN)

    async def emit(self, event: Event) -> bytes:
        """Add ``event`` to the one contract stream that carries its type."""
        return await self.publish(stream_for(type(event)).name, event)

    async def publish(self, stream: str, event: Event) -> bytes:
        """Add one event; return its entry id."""
        fields: dict[Any, Any] = encode_fields(event)
        cap = self._cap(stream)
        return as_bytes(await self._redis.xadd(stream, fields, maxlen=cap, approximate=True))

    def add(self, pipe: Pipeline, stream: str, event: Event) -> None:
        """Queue one ``XADD`` on ``pipe`` (the caller's pipeline, which may carry other commands
        in the same round trip)."""
        self.add_fields(pipe, stream, encode_fields(event))

    def add_fields(self, pipe: Pipeline, stream: str, fields: dict[Any, Any]) -> None:
        """Queue one ``XADD`` of entry ``fields`` already encoded (``type``, ``event_id``,
        ``data``: the outbox relay's rows), capped like every other publish."""
        pipe.xadd(stream, fields, maxlen=self._cap(stream), approximate=True)

    async def publish_many(self, items: Iterable[tuple[str, Event]]) -> list[bytes]:
        """Add many events, to one or several streams, in one pipelined round trip.

        Not a transaction: each ``XADD`` stands alone, in order. Returns the entry ids in order.
        """
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, event in items:
                self.add(pipe, stream, event)
            ids = await pipe.execute()
        return [as_bytes(i) for i in ids]
