"""The per-build feed: a capped Redis stream of everything the build's owner may see.

The projection appends each build-visible event once (a redelivery is absorbed by ``RedisOnce``);
its entry ids are the SSE event ids, so a client that reconnects with ``Last-Event-ID`` resumes
exactly after the last event it saw.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from redis.asyncio import Redis

from cofounder_contracts import Event, build_feed_key, encode
from cofounder_contracts.codec import DATA, TYPE, payload_digest
from cofounder_runtime.idempotency import RedisOnce

__all__ = ["ENDING_TYPES", "SSE_BLOCK_MS", "Feed", "TooManyStreams"]

#: How long one SSE read waits for an entry before a keep-alive comment goes out.
SSE_BLOCK_MS: Final = 15_000

#: Event types after which a build's feed gets nothing more.
ENDING_TYPES: Final = frozenset({b"build.completed", b"build.failed"})
_ENDING_STATUSES: Final = (b'"status":"cancelled"', b'"status":"failed"', b'"status":"ready"')


def ends_build(fields: dict[bytes, bytes]) -> bool:
    """Whether this feed entry is the build's last."""
    type_ = fields.get(TYPE, b"")
    if type_ in ENDING_TYPES:
        return True
    return type_ == b"build.status_changed" and any(
        s in fields.get(DATA, b"") for s in _ENDING_STATUSES
    )


class TooManyStreams(Exception):
    """No room for another live stream: the founder's own cap, or this process's."""


class Feed:
    """Append to and read from build feeds."""

    def __init__(
        self,
        redis: Redis,
        *,
        max_len: int,
        reader: Redis | None = None,
        max_streams: int = 1_000,
        max_streams_per_user: int = 10,
    ) -> None:
        """``reader`` serves the blocking reads of SSE clients. Give it a pool of its own: each
        open stream holds a connection while it waits, and must not starve the writes; size it
        ``max_streams`` (the streams this process serves at once), so a stream always has a
        connection. ``max_streams_per_user`` keeps one founder's streams from taking them all."""
        self._redis = reader or redis
        self._owns_reader = reader is not None
        self._max_streams = max_streams
        self._max_per_user = max_streams_per_user
        self._open: dict[str, int] = {}
        self._total = 0
        self._append = RedisOnce(
            redis,
            scope="gateway.feed",
            body="return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', "
            "'type', ARGV[1], 'event_id', ARGV[2], 'data', ARGV[3])",
        )
        self._max_len = max_len

    def claim_stream(self, user_id: str) -> Callable[[], None]:
        """Room for one live stream of ``user_id``, or :class:`TooManyStreams`; the returned
        function gives it back (once, however often it is called)."""
        if self._open.get(user_id, 0) >= self._max_per_user:
            raise TooManyStreams(
                f"you have {self._max_per_user} live event streams open; close one first"
            )
        if self._total >= self._max_streams:
            raise TooManyStreams("this server has no room for another live event stream")
        self._open[user_id] = self._open.get(user_id, 0) + 1
        self._total += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._total -= 1
            left = self._open[user_id] - 1
            if left:
                self._open[user_id] = left
            else:
                del self._open[user_id]

        return release

    async def close(self) -> None:
        """Close the reader's pool, if it has one of its own."""
        if self._owns_reader:
            await self._redis.aclose()

    async def append(self, event: Event, *, digest: str | None = None) -> None:
        """Add ``event`` to its build's feed unless it is there already (``digest``: its
        ``payload_digest``, when the caller has it)."""
        await self._append.apply(
            event.event_id,
            keys=[build_feed_key(event.build_id)],
            args=[event.type, event.event_id, encode(event), self._max_len],
            digest=digest or payload_digest(event),
        )

    async def read(
        self,
        build_id: str,
        *,
        after: str,
        block_ms: int | None,
    ) -> AsyncIterator[tuple[str, dict[bytes, bytes]]]:
        """Entries after ``after`` (an entry id, or ``0``), waiting up to ``block_ms`` for one."""
        reply: Any = await self._redis.xread(
            {build_feed_key(build_id): after}, count=100, block=block_ms
        )
        for _, entries in reply or []:
            for entry_id, fields in entries:
                yield entry_id.decode(), fields
