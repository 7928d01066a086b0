"""The per-build feed: a capped Redis stream of everything the build's owner may see.

The projection appends each build-visible event once (a redelivery is absorbed by ``RedisOnce``);
its entry ids are the SSE event ids, so a client that reconnects with ``Last-Event-ID`` resumes
exactly after the last event it saw.

Only builds the gateway has a row for get a feed. An entry goes to its build's existing feed at
once, the one round trip it always cost, so the feed keeps the order entries were delivered in
(the projection handles a build's events concurrently). A feed is made only after the build's row
was read, one event of a build at a time in this process and in the order they came (the first
entries of a build are often delivered milliseconds apart). An event of a build with no row
writes nothing.

Every feed expires. The entry that ends the build (:func:`ends_build`), and a feed made for a build
whose row says it is over, set the key's TTL to the after-end TTL (a day) in the same script as
the entry; every other entry renews the idle TTL (a week), so a build whose end never reaches the
gateway leaves no key behind either.

A TTL at or below the after-end TTL is never raised, so an end's deadline holds against late
entries. The price: a live build silent for longer than the idle TTL minus the after-end TTL (six
days by default; a sleeping build wakes daily) keeps its feed a day at most; its next entry after
that makes a new stream, whose ids are later than any before, so a client resuming with
``Last-Event-ID`` misses nothing new.

Redis may lose a feed (a flush, a restart without persistence, a failover to a replica that
missed writes); PostgreSQL keeps the build. The SSE endpoint reads the feed's last id
(:meth:`Feed.last_id`) before it resumes: a feed whose last entry is before the client's
``Last-Event-ID`` (:func:`id_order`) was rebuilt, and is served from its start; a finished
build whose feed is gone is summed up from its row (see ``routes/events.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from cofounder_contracts import (
    BuildCompleted,
    BuildFailed,
    BuildStatus,
    BuildStatusChanged,
    Event,
    build_feed_key,
    encode,
)
from cofounder_contracts import ends_build as contracts_ends_build
from cofounder_contracts.codec import DATA, TYPE, payload_digest
from cofounder_runtime.idempotency import RedisOnce

__all__ = [
    "ENDING_TYPES",
    "SSE_BLOCK_MS",
    "BuildEnded",
    "Feed",
    "TooManyStreams",
    "ends_build",
    "id_order",
]

#: How long one SSE read waits for an entry before a keep-alive comment goes out.
SSE_BLOCK_MS: Final = 15_000

#: Event types after which a build's feed gets nothing more (with a status change to an end).
ENDING_TYPES: Final = frozenset(
    {BuildCompleted.event_type().encode(), BuildFailed.event_type().encode()}
)
_STATUS_CHANGED: Final = BuildStatusChanged.event_type().encode()


class _Status(msgspec.Struct):
    """The one field of a ``build.status_changed`` entry that says whether it ends the build."""

    status: BuildStatus


_STATUS: Final = msgspec.json.Decoder(_Status)


def ends_build(fields: dict[bytes, bytes]) -> bool:
    """Whether this feed entry is the build's last (:func:`cofounder_contracts.ends_build`, read
    from the entry's fields: its type, and the status of a status change, decoded alone)."""
    type_ = fields.get(TYPE, b"")
    if type_ in ENDING_TYPES:
        return True
    if type_ != _STATUS_CHANGED:
        return False
    try:
        return _STATUS.decode(fields.get(DATA, b"{}")).status.ended
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False


def id_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``<ms>-<seq>``, or ``0``) as the pair Redis orders ids by: the
    strings do not sort (``"9-0" > "10-0"``)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


#: The append (the body of a ``RedisOnce`` script). ARGV: type, event id, data, max length, the
#: TTL after the build's end (ms), whether the feed may be made ('1') or only appended to, whether
#: the build has ended ('1'), the idle TTL (ms). A missing feed that may not be made fails the
#: script before it writes, so the once-marker is not set. A new stream has no TTL (PTTL -1) and
#: gets one; a TTL at or below the end's is never raised.
_APPEND: Final = """
if ARGV[6] ~= '1' and redis.call('EXISTS', KEYS[1]) == 0 then
  error({err = 'NOFEED the build has no feed yet'})
end
local entry = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*',
                         'type', ARGV[1], 'event_id', ARGV[2], 'data', ARGV[3])
local after_end = tonumber(ARGV[5])
local left = redis.call('PTTL', KEYS[1])
if left < 0 or left > after_end then
  redis.call('PEXPIRE', KEYS[1], ARGV[7] == '1' and after_end or ARGV[8])
end
return entry
"""

#: Reads the build's row: whether the build has ended, or None when there is no such build.
BuildEnded = Callable[[], Awaitable[bool | None]]


@dataclass(frozen=True, slots=True)
class _Entry:
    """An event as the append script takes it (encoded once, whatever the path)."""

    event: Event
    digest: str
    type: bytes
    data: bytes
    ends_build: bool

    @classmethod
    def of(cls, event: Event, digest: str) -> _Entry:
        return cls(event, digest, event.type.encode(), encode(event), contracts_ends_build(event))


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
        ttl_after_end_s: int = 86_400,
        idle_ttl_s: int = 7 * 86_400,
    ) -> None:
        """``reader`` serves the blocking reads of SSE clients. Give it a pool of its own: each
        open stream holds a connection while it waits, and must not starve the writes; size it
        ``max_streams`` (the streams this process serves at once), so a stream always has a
        connection. ``max_streams_per_user`` keeps one founder's streams from taking them all.
        ``ttl_after_end_s`` and ``idle_ttl_s``: how long a feed lives after its build ended,
        and after its last entry (see the module's docstring)."""
        self._redis = reader or redis
        self._owns_reader = reader is not None
        self._max_streams = max_streams
        self._max_per_user = max_streams_per_user
        self._open: dict[str, int] = {}
        self._total = 0
        self._append = RedisOnce(redis, scope="gateway.feed", body=_APPEND)
        self._max_len = max_len
        if idle_ttl_s <= ttl_after_end_s:
            raise ValueError(
                f"FEED_IDLE_TTL_S ({idle_ttl_s}) must be above FEED_TTL_AFTER_END_S "
                f"({ttl_after_end_s}): a feed's TTL at or below the end's is never renewed"
            )
        self._ttl_after_end_ms = ttl_after_end_s * 1000
        self._idle_ttl_ms = idle_ttl_s * 1000
        #: Per build: the lock its feed is made under, and how many hold or wait for it.
        self._making: dict[str, tuple[asyncio.Lock, int]] = {}

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

    async def append(self, event: Event, *, ended: BuildEnded, digest: str | None = None) -> bool:
        """Add ``event`` to its build's feed unless it is there already; False when the build
        has no row (nothing is written).

        An existing feed takes the entry at once. Otherwise ``ended`` reads the build's row and
        the feed is made (see the module docstring). ``digest``: the event's
        ``payload_digest``, when the caller has it."""
        entry = _Entry.of(event, digest or payload_digest(event))
        if await self._apply(entry, make=False, ended=False):
            return True
        async with self._making_feed(event.build_id):
            if await self._apply(entry, make=False, ended=False):
                return True  # an earlier event of the build made it meanwhile
            over = await ended()
            if over is None:
                return False
            await self._apply(entry, make=True, ended=over)
            return True

    async def _apply(self, entry: _Entry, *, make: bool, ended: bool) -> bool:
        """Run the append script; False when the feed is missing and may not be made."""
        try:
            await self._append.apply(
                entry.event.event_id,
                keys=[build_feed_key(entry.event.build_id)],
                args=[
                    entry.type,
                    entry.event.event_id,
                    entry.data,
                    self._max_len,
                    self._ttl_after_end_ms,
                    "1" if make else "0",
                    "1" if ended or entry.ends_build else "0",
                    self._idle_ttl_ms,
                ],
                digest=entry.digest,
            )
        except ResponseError as exc:
            if str(exc).startswith("NOFEED"):
                return False
            raise
        return True

    @contextlib.asynccontextmanager
    async def _making_feed(self, build_id: str) -> AsyncIterator[None]:
        """One maker of ``build_id``'s feed at a time, in the order they asked (a FIFO lock)."""
        lock, users = self._making.get(build_id, (asyncio.Lock(), 0))
        self._making[build_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._making[build_id]
            if users == 1:
                del self._making[build_id]  # nobody else waits on it
            else:
                self._making[build_id] = (lock, users - 1)

    async def last_id(self, build_id: str) -> str | None:
        """The id of the last entry of ``build_id``'s feed, None when it has no feed (one
        round trip, on the readers' pool)."""
        reply: Any = await self._redis.xrevrange(build_feed_key(build_id), count=1)
        return reply[0][0].decode() if reply else None

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
