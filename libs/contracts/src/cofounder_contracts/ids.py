"""Time-ordered event ids (UUIDv7, RFC 9562).

Python 3.11's ``uuid`` module has no ``uuid7``; this is the whole algorithm: a 48-bit Unix
millisecond timestamp, the version and variant bits, and 74 random bits. Ids sort by creation time,
which keeps idempotency indexes and ledgers append-friendly.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid

__all__ = ["derived_event_id", "new_event_id"]


def new_event_id() -> str:
    """Return a new UUIDv7 as its canonical 36-character string."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a: 12 bits
    value |= 0b10 << 62  # RFC 9562 variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b: 62 bits
    return _canonical(value)


def _canonical(value: int) -> str:
    """The 8-4-4-4-12 form of a 128-bit value (what ``str(uuid.UUID(int=value))`` gives, at a
    third of its cost: ids are made several times per request)."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def derived_event_id(cause_id: str, kind: str) -> str:
    """A deterministic UUIDv7 for the ``kind`` event caused by event ``cause_id``.

    A handler that emits events must emit the *same* ids when its input is redelivered, or the
    duplicates it sends downstream would look new. The timestamp bits are the cause's (so ids
    still sort by time); the rest is a hash of the cause and the kind.
    """
    try:
        cause = uuid.UUID(cause_id)
        ms = cause.int >> 80 if cause.version == 7 else 0
    except ValueError:
        ms = 0
    digest = int.from_bytes(hashlib.sha256(f"{cause_id}/{kind}".encode()).digest()[:10], "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= ((digest >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= digest & 0x3FFF_FFFF_FFFF_FFFF
    return str(uuid.UUID(int=value))
