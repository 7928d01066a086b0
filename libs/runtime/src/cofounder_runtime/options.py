"""Consumer options: the knobs of the delivery contract, validated once at construction.

Defaults follow the delivery contract (docs/architecture.md#delivery-contract). Durations are
milliseconds because that is what the Redis commands take (``BLOCK``, ``XAUTOCLAIM
min-idle-time``), so nothing converts on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConsumerOptions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerOptions:
    """How one consumer reads, retries, claims and dead-letters.

    - ``concurrency``: handlers running at once in this process; reads ask for no more entries
      than there are free slots, so nothing waits in memory unacknowledged and unowned.
    - ``batch_size``: ``COUNT`` of each ``XREADGROUP``.
    - ``block_ms``: ``BLOCK`` of each read; also bounds how long a stop request waits for the read.
    - ``min_idle_ms``: an entry pending this long in another consumer is presumed orphaned and
      claimed (``XAUTOCLAIM``). Heartbeats renew live entries well before that.
    - ``max_deliveries``: deliveries (Redis's own delivery counter) after which a failing entry is
      moved to ``<stream>.dlq`` and acknowledged.
    - ``retry_base_ms`` / ``retry_max_ms``: exponential backoff with full jitter between attempts;
      capped below ``min_idle_ms`` so a retry is never mistaken for an orphan.
    - ``outage_patience_ms``: how long a handler failing for a server's outage (PostgreSQL or
      Redis restarting, a connection refused: :mod:`cofounder_runtime.outages`) is retried
      without its failures counting as deliveries; after it, they count as any failure.
    - ``heartbeat_ms``: how often running handlers' entries are re-claimed to this consumer
      (``XCLAIM ... JUSTID``), resetting their idle time. Defaults to a third of ``min_idle_ms``.
    - ``janitor_interval_ms``: how often orphans are claimed, group gauges refreshed and departed
      consumers removed. Defaults to half of ``min_idle_ms``.
    - ``departed_after_ms``: a consumer idle this long with nothing pending is removed from the
      group (it has left; its name would otherwise linger in ``XINFO CONSUMERS`` forever).
    - ``max_age_ms``: when set, the janitor trims the stream by age (``XTRIM MINID ~``), never past
      an entry that a group still has pending or has not yet read.
    - ``shutdown_grace_s``: on stop, how long in-flight handlers may take to finish and be acked.
    - ``claim_per_pass``: at most this many orphans claimed per janitor pass (default: as many
      as there are free slots). Set it where handlers run long (a build runs for minutes): the
      janitors of several consumers then share a dead one's entries instead of the first one
      taking them all.
    """

    concurrency: int = 256
    batch_size: int = 256
    block_ms: int = 1_000
    min_idle_ms: int = 30_000
    max_deliveries: int = 5
    retry_base_ms: int = 100
    retry_max_ms: int = 5_000
    outage_patience_ms: int = 300_000
    heartbeat_ms: int | None = None
    janitor_interval_ms: int | None = None
    departed_after_ms: int = 3_600_000
    max_age_ms: int | None = None
    shutdown_grace_s: float = 30.0
    claim_per_pass: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.claim_per_pass is not None and self.claim_per_pass < 1:
            problems.append("claim_per_pass must be at least 1")
        if self.concurrency < 1:
            problems.append("concurrency must be at least 1")
        if self.batch_size < 1:
            problems.append("batch_size must be at least 1")
        if self.block_ms < 1:
            problems.append("block_ms must be at least 1 (0 would block forever)")
        if self.max_deliveries < 1:
            problems.append("max_deliveries must be at least 1")
        if self.min_idle_ms < 100:
            problems.append("min_idle_ms must be at least 100")
        if not 0 < self.retry_base_ms <= self.retry_max_ms:
            problems.append("need 0 < retry_base_ms <= retry_max_ms")
        if self.outage_patience_ms < 0:
            problems.append("outage_patience_ms must not be negative")
        if self.retry_max_ms >= self.min_idle_ms:
            problems.append("retry_max_ms must be below min_idle_ms, or retries look orphaned")
        if self.heartbeat_ms is not None and not 0 < self.heartbeat_ms < self.min_idle_ms:
            problems.append("heartbeat_ms must be between 0 and min_idle_ms")
        if problems:
            raise ValueError("invalid consumer options: " + "; ".join(problems))

    @property
    def heartbeat_every_ms(self) -> int:
        """The heartbeat period actually used."""
        return self.heartbeat_ms if self.heartbeat_ms is not None else self.min_idle_ms // 3

    @property
    def janitor_every_ms(self) -> int:
        """The janitor period actually used."""
        if self.janitor_interval_ms is not None:
            return self.janitor_interval_ms
        return self.min_idle_ms // 2

    def backoff_ms(self, deliveries: int) -> int:
        """The longest delay before delivery ``deliveries + 1`` (jitter picks below it)."""
        return min(self.retry_max_ms, self.retry_base_ms << max(0, deliveries - 1))
