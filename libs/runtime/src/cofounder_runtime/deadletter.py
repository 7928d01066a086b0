"""Dead letters: moving a poison entry out of the way, and the operator's view of them.

A dead-letter entry in ``<stream>.dlq`` holds the original ``type``/``event_id``/``data`` fields
unchanged plus ``dlq.*`` fields saying where it came from and why it failed. The move is one
``MULTI``: the ``XADD`` to the DLQ and the ``XACK`` of the original commit together, so an entry is
never both lost and acked, nor dead-lettered twice by one consumer.

Replaying re-adds the original fields to the source stream (a new entry id, the same ``event_id``)
and deletes the dead letter, again in one ``MULTI``. Every group on the stream sees the replayed
entry; groups that had already handled it absorb the duplicate through their idempotency keys.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

import msgspec
from redis.asyncio import Redis

from cofounder_contracts.codec import DATA, EVENT_ID, TYPE
from cofounder_runtime.keys import DLQ_SUFFIX, DeadLetterField, dlq_key

__all__ = [
    "DLQ_MAX_LEN",
    "DeadLetter",
    "dead_letter",
    "dead_letter_streams",
    "list_dead",
    "purge",
    "replay",
    "show_dead",
]

#: Dead letters are kept much longer than events: they are the evidence of a bug.
DLQ_MAX_LEN: Final = 100_000
_ERROR_LIMIT: Final = 4_000
_ORIGINAL_FIELDS: Final = (TYPE, EVENT_ID, DATA)

_Entries = list[tuple[bytes, dict[bytes, bytes]]]


async def _xrange(
    redis: Redis, key: str, *, lo: str | bytes, hi: str | bytes, count: int | None = None
) -> _Entries:
    return cast(_Entries, await redis.xrange(key, min=lo, max=hi, count=count))


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One dead-letter entry as an operator sees it."""

    dlq_id: str
    stream: str
    original_id: str
    group: str
    consumer: str
    deliveries: int
    error: str
    failed_at_ms: int
    type: str | None
    event_id: str | None
    data: str | None


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode(errors="replace")


def _from_entry(entry_id: bytes, fields: Mapping[bytes, bytes]) -> DeadLetter:
    f = DeadLetterField
    return DeadLetter(
        dlq_id=entry_id.decode(),
        stream=_text(fields.get(f.STREAM)) or "",
        original_id=_text(fields.get(f.ID)) or "",
        group=_text(fields.get(f.GROUP)) or "",
        consumer=_text(fields.get(f.CONSUMER)) or "",
        deliveries=int(fields.get(f.DELIVERIES, b"0")),
        error=_text(fields.get(f.ERROR)) or "",
        failed_at_ms=int(fields.get(f.FAILED_AT_MS, b"0")),
        type=_text(fields.get(TYPE)),
        event_id=_text(fields.get(EVENT_ID)),
        data=_text(fields.get(DATA)),
    )


async def dead_letter(
    redis: Redis,
    *,
    stream: str,
    group: str,
    consumer: str,
    entry_id: bytes,
    fields: Mapping[bytes, bytes],
    deliveries: int,
    error: str,
) -> bytes:
    """Move one entry to ``<stream>.dlq`` and ack it, atomically. Returns the dead letter's id."""
    record: dict[Any, Any] = dict(fields)
    record[DeadLetterField.STREAM] = stream
    record[DeadLetterField.ID] = entry_id
    record[DeadLetterField.GROUP] = group
    record[DeadLetterField.CONSUMER] = consumer
    record[DeadLetterField.DELIVERIES] = deliveries
    record[DeadLetterField.ERROR] = error[:_ERROR_LIMIT]
    record[DeadLetterField.FAILED_AT_MS] = int(time.time() * 1000)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(dlq_key(stream), record, maxlen=DLQ_MAX_LEN, approximate=True)
        pipe.xack(stream, group, entry_id)
        dlq_id, _ = await pipe.execute()
    return bytes(dlq_id)


async def dead_letter_streams(redis: Redis) -> dict[str, int]:
    """Every dead-letter stream and its length, by source stream name."""
    found: dict[str, int] = {}
    async for key in redis.scan_iter(match=f"*{DLQ_SUFFIX}", _type="STREAM", count=500):
        name = key.decode() if isinstance(key, bytes) else str(key)
        found[name.removesuffix(DLQ_SUFFIX)] = int(await redis.xlen(name))
    return dict(sorted(found.items()))


async def list_dead(
    redis: Redis, stream: str, *, count: int = 50, after: str = "-"
) -> list[DeadLetter]:
    """Dead letters of ``stream``, oldest first, starting after ``after`` (exclusive)."""
    start = after if after == "-" else f"({after}"
    entries = await _xrange(redis, dlq_key(stream), lo=start, hi="+", count=count)
    return [_from_entry(entry_id, fields) for entry_id, fields in entries]


async def show_dead(redis: Redis, stream: str, dlq_id: str) -> DeadLetter | None:
    """One dead letter by its id in the DLQ, or None."""
    entries = await _xrange(redis, dlq_key(stream), lo=dlq_id, hi=dlq_id, count=1)
    return _from_entry(*entries[0]) if entries else None


async def _ids(redis: Redis, stream: str, ids: Sequence[str] | None) -> list[bytes]:
    if ids is not None:
        return [i.encode() for i in ids]
    return [entry_id for entry_id, _ in await _xrange(redis, dlq_key(stream), lo="-", hi="+")]


async def replay(redis: Redis, stream: str, ids: Sequence[str] | None = None) -> list[bytes]:
    """Re-add dead letters (all when ``ids`` is None) to ``stream``; return the new entry ids.

    Ids not found in the DLQ are skipped. Each replay is its own ``MULTI`` (add, then delete the
    dead letter), so an interrupted replay neither loses nor doubles an entry.
    """
    dlq = dlq_key(stream)
    new_ids: list[bytes] = []
    for dlq_id in await _ids(redis, stream, ids):
        entries = await _xrange(redis, dlq, lo=dlq_id, hi=dlq_id, count=1)
        if not entries:
            continue
        fields = entries[0][1]
        original: dict[Any, Any] = {k: fields[k] for k in _ORIGINAL_FIELDS if k in fields}
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xadd(stream, original)
            pipe.xdel(dlq, dlq_id)
            new_id, _ = await pipe.execute()
        new_ids.append(bytes(new_id))
    return new_ids


async def purge(redis: Redis, stream: str, ids: Sequence[str] | None = None) -> int:
    """Delete dead letters (all when ``ids`` is None); return how many were deleted."""
    if ids is None:
        removed = int(await redis.xlen(dlq_key(stream)))
        await redis.delete(dlq_key(stream))
        return removed
    if not ids:
        return 0
    return int(await redis.xdel(dlq_key(stream), *ids))
