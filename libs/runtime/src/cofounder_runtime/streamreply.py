"""Normalising stream replies across RESP2 and RESP3 clients.

redis-py returns ``XREADGROUP`` as a list of ``[stream, entries]`` pairs under RESP2 and as a dict
under RESP3; a deleted-but-pending entry comes back with ``None`` (or empty) fields. The runtime
reads one stream per call, so it only needs the entries.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Entries", "as_bytes", "id_tuple", "read_entries"]

Entries = list[tuple[bytes, dict[bytes, bytes] | None]]


def read_entries(reply: Any) -> Entries:
    """The entries of a single-stream ``XREADGROUP``/``XREAD`` reply (empty on timeout)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        for value in reply.values():
            entries = value[0] if value and isinstance(value[0], list) else value
            return list(entries)
        return []
    return list(reply[0][1])


def id_tuple(entry_id: bytes | str) -> tuple[int, int]:
    """A stream id as ``(milliseconds, sequence)`` for comparisons."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def as_bytes(value: object) -> bytes:
    """A reply value as bytes (clients return ``str`` when ``decode_responses`` is on)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"expected bytes or str from Redis, got {type(value).__name__}")
