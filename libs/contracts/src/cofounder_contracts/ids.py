"""Ids: time-ordered event ids (UUIDv7, RFC 9562), and the id field types events declare.

Python 3.11's ``uuid`` module has no ``uuid7``; this is the whole algorithm: a 48-bit Unix
millisecond timestamp, the version and variant bits, and 74 random bits. Ids sort by creation time,
which keeps idempotency indexes and ledgers append-friendly.

Ids end up in Redis keys, object-store keys and file paths (``projects/<project_id>/...``), so
every id field of an event is typed: decoding refuses an entry whose id is not of its form (a
``project_id`` of ``../../escape``), and the consumer dead-letters it with the reason. The types
stay ``str`` at runtime, so producers and handlers are unchanged; like every constraint, they are
checked when an event is decoded, not when a producer constructs one.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from typing import Annotated, Final

import msgspec

__all__ = [
    "UUID_PATTERN",
    "ProviderId",
    "SandboxId",
    "Uuid",
    "UuidOrEmpty",
    "derived_event_id",
    "new_event_id",
]

#: A UUID in its canonical form: lower-case hex, 8-4-4-4-12 (what ``str(uuid.UUID(...))``, the
#: gateway's ``uuid4`` rows and :func:`new_event_id` write). Any version: rows are UUIDv4, events
#: UUIDv7.
_UUID: Final = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
UUID_PATTERN: Final = f"^{_UUID}$"

#: The id of a user, project, build or event.
Uuid = Annotated[str, msgspec.Meta(pattern=UUID_PATTERN, description="A canonical UUID.")]
#: A :data:`Uuid`, or empty where an event is not about one: ``build_id`` and ``project_id`` of
#: the user-level events (a top-up, a plan change).
UuidOrEmpty = Annotated[
    str,
    msgspec.Meta(
        pattern=f"^(?:{_UUID})?$",
        description="A canonical UUID, or empty when the event is not about one.",
    ),
]
#: A sandbox's id as its provider gave it (E2B's, or ``local-<build>-<hex>``): not a UUID, but
#: it names a folder of the local provider and a column of 100 characters, so it is held to the
#: local provider's own rule (``LocalSandboxes`` refuses any other id too).
SandboxId = Annotated[
    str,
    msgspec.Meta(
        pattern="^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$",
        description="A sandbox provider's id: letters, digits, '_' and '-', 100 at most.",
    ),
]
#: An id another system made (a model API's ``toolu_...`` or ``req_...``): shown and logged,
#: never a key or a path here, so only its size and a printable-ASCII alphabet are held.
ProviderId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        pattern="^[!-~]+$",
        description="An id of another system: printable ASCII without spaces, 200 at most.",
    ),
]


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
