"""Retention of ``processed_events``: rows past the redelivery window deleted in short batches.

``record_once`` adds a row per handled event and nothing else removes one, so without this the
table grows with every event a service ever handled. A row matters only while its event can still
be delivered again: a stream keeps an entry for its ``max_age`` (seven days; longer only while a
group still has it pending or unread, which is a redelivery that comes late, not a second one).
The retention must exceed that window, so the settings refuse anything shorter; a dead letter
replayed after the retention is applied again, hence the default's margin of a second week.

Deletes go in batches of ``batch`` rows, oldest first, one short transaction each (an index range
scan on ``processed_at``, then primary-key deletes), so a pass holds no lock for long and a
backlog of millions of rows drains without stalling the handlers that insert. Replicas may prune
at the same time: ``SKIP LOCKED`` hands each row to one of them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import structlog
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings
from sqlalchemy import Delete, delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_contracts.streams import ALL_STREAMS
from cofounder_runtime.idempotency_sql import processed_events
from cofounder_runtime.metrics import PROCESSED_EVENTS_PRUNED
from cofounder_runtime.periodic import every

__all__ = [
    "REDELIVERY_WINDOW",
    "ProcessedEventsPruner",
    "ProcessedEventsRetentionSettings",
    "Pruned",
    "prune_batch",
    "prune_processed_events",
]

_log = structlog.get_logger("cofounder.retention")

#: The longest any stream keeps an entry by age: how late an event can normally come again.
REDELIVERY_WINDOW: Final = max(s.max_age for s in ALL_STREAMS)


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one pruning pass deleted, and in how many transactions."""

    rows: int
    batches: int


def prune_batch(cutoff: datetime, batch: int) -> Delete:
    """One batch's delete: the ``batch`` oldest rows recorded before ``cutoff`` that no other
    pruner holds. They are found in ``processed_at`` order on its index
    (``ix_processed_events_processed_at``, migration 0007), so a batch costs the rows it takes,
    not a scan of the table."""
    oldest = (
        select(processed_events.c.scope, processed_events.c.event_id)
        .where(processed_events.c.processed_at < cutoff)
        .order_by(processed_events.c.processed_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    return delete(processed_events).where(
        tuple_(processed_events.c.scope, processed_events.c.event_id).in_(oldest)
    )


async def prune_processed_events(
    engine: AsyncEngine,
    *,
    older_than: timedelta,
    batch: int = 1_000,
    stop: asyncio.Event | None = None,
) -> Pruned:
    """Delete every row recorded more than ``older_than`` ago, ``batch`` rows per transaction.

    Ends at the first batch that is not full (nothing older is left, or another replica holds
    the rest), or between batches once ``stop`` is set."""
    statement = prune_batch(datetime.now(UTC) - older_than, batch)
    rows = batches = 0
    while True:
        async with engine.begin() as conn:
            deleted = (await conn.execute(statement)).rowcount
        PROCESSED_EVENTS_PRUNED.inc(deleted)
        rows += deleted
        batches += 1
        if deleted < batch or (stop is not None and stop.is_set()):
            return Pruned(rows=rows, batches=batches)


class ProcessedEventsPruner:
    """Prunes ``processed_events`` by age every ``every_s`` (see the module docstring)."""

    def __init__(
        self, engine: AsyncEngine, *, older_than: timedelta, every_s: float, batch: int
    ) -> None:
        self._engine = engine
        self._older_than = older_than
        self._every_s = every_s
        self._batch = batch

    async def prune_once(self, stop: asyncio.Event | None = None) -> Pruned:
        """One pass: everything past the retention, in batches."""
        pruned = await prune_processed_events(
            self._engine, older_than=self._older_than, batch=self._batch, stop=stop
        )
        if pruned.rows:
            _log.info("pruned processed events", rows=pruned.rows, batches=pruned.batches)
        return pruned

    async def run(self, stop: asyncio.Event) -> None:
        """Prune every period (±20%, spreading the passes of many replicas as the janitor's)
        until ``stop`` is set; a failed pass is logged and the next one tries again (the rows
        wait, nothing depends on them going sooner)."""
        await every(
            self._every_s,
            lambda: self.prune_once(stop),
            stop,
            name="processed-events-retention",
            log=_log,
            failed="pruning processed events failed; retrying",
            jitter=0.2,
            immediately=False,
        )


class ProcessedEventsRetentionSettings(BaseSettings):
    """The retention of ``processed_events``, for the services that write it (``record_once``)."""

    processed_events_retention_days: float = Field(
        default=14.0,
        description="Age after which a processed_events row (an applied event id) is deleted. "
        "Must exceed the streams' 7-day age retention, the window in which an event can be "
        "delivered again; a dead letter replayed after it is applied a second time.",
    )
    processed_events_prune_every_s: float = Field(
        default=600.0,
        gt=0,
        description="Period of the processed_events pruning pass (each process, ±20%).",
    )
    processed_events_prune_batch: int = Field(
        default=1_000,
        gt=0,
        description="Rows deleted per processed_events pruning transaction: small enough that "
        "no batch holds its locks for long.",
    )

    @field_validator("processed_events_retention_days")
    @classmethod
    def _longer_than_redelivery(cls, value: float) -> float:
        if timedelta(days=value) <= REDELIVERY_WINDOW:
            raise ValueError(
                f"must be more than {REDELIVERY_WINDOW.days} days, the streams' age retention: "
                "an event delivered again after its row was pruned would be applied twice"
            )
        return value

    def processed_events_pruner(self, engine: AsyncEngine) -> ProcessedEventsPruner:
        """The pruner these settings describe, on ``engine``."""
        return ProcessedEventsPruner(
            engine,
            older_than=timedelta(days=self.processed_events_retention_days),
            every_s=self.processed_events_prune_every_s,
            batch=self.processed_events_prune_batch,
        )
