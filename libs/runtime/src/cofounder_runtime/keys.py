"""Every Redis key and stream-field name the runtime itself writes, in one place.

Stream names and groups belong to ``cofounder_contracts.streams``; these are the runtime's own.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DLQ_SUFFIX",
    "ONCE_PREFIX",
    "DeadLetterField",
    "dlq_key",
    "once_key",
]

#: Dead letters of stream ``s`` live in ``s + DLQ_SUFFIX`` so ``SCAN MATCH *.dlq`` finds them all.
DLQ_SUFFIX: Final = ".dlq"

#: Prefix of the idempotency markers set by ``RedisOnce``; one key per (scope, event id), with TTL.
ONCE_PREFIX: Final = "cofounder.once:"


def dlq_key(stream: str) -> str:
    """The dead-letter stream of ``stream``."""
    return stream + DLQ_SUFFIX


def once_key(scope: str, event_id: str) -> str:
    """The idempotency marker of ``event_id`` within ``scope`` (usually the consumer group).

    ``scope`` goes inside a hash tag so that, on Redis Cluster, a caller who puts the same tag on
    its own keys gets marker and effect in one slot (one atomic script).
    """
    return f"{ONCE_PREFIX}{{{scope}}}:{event_id}"


class DeadLetterField:
    """Fields a dead-letter entry adds to the original entry's ``type``/``event_id``/``data``."""

    STREAM: Final = b"dlq.stream"
    ID: Final = b"dlq.id"
    GROUP: Final = b"dlq.group"
    CONSUMER: Final = b"dlq.consumer"
    DELIVERIES: Final = b"dlq.deliveries"
    ERROR: Final = b"dlq.error"
    FAILED_AT_MS: Final = b"dlq.failed_at_ms"
