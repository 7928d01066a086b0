"""The reconciler's loop: one active replica, a bounded pass every interval, repairs confirmed
twice, each one logged and counted.

A pass reads a page of builds from PostgreSQL, then what Redis holds of them, asks
:func:`~cofounder_gateway.reconcile.decide.decide` what each is missing, and re-publishes what
the previous pass found missing too (from the same state: see :class:`Repair.marker`). A repair
that does not take (its consumer keeps failing it, say) is tried again after a doubling delay,
not every pass. The lease is a key with a TTL of three intervals, renewed each pass: a standby
replica takes over within that when the active one dies, and a Redis that forgot the key lets
both run a pass or two, which costs duplicates the consumers absorb.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
import structlog
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_contracts import (
    AgentSleeping,
    ContextReady,
    Event,
    SnapshotRequested,
    follow_up,
)
from cofounder_contracts.stored import from_stored
from cofounder_contracts.streams import stream_for
from cofounder_gateway.reconcile.decide import decide
from cofounder_gateway.reconcile.facts import BuildFacts, Repair, RepairKind
from cofounder_gateway.reconcile.observe import Page, read_builds, read_parts, read_redis
from cofounder_gateway.requests import build_requested, cancel_requested
from cofounder_runtime.mutex import RELEASE_IF_MINE, RENEW_IF_MINE
from cofounder_runtime.periodic import every
from cofounder_runtime.publisher import Publisher

__all__ = ["LEASE_KEY", "Reconciler", "ReconcilerConfig"]

LEASE_KEY: Final = "cofounder.reconciler.lease"
_log = structlog.get_logger("cofounder.reconciler")

REPAIRS = Counter(
    "cofounder_reconciler_repairs_total",
    "Events the reconciler re-published because Redis had lost them, by kind (the event).",
    ("kind",),
)
PASSES = Counter(
    "cofounder_reconciler_passes_total",
    "Reconciler passes, by outcome: done, failed, or standby (another replica holds the lease).",
    ("outcome",),
)
PASS_SECONDS = Histogram(
    "cofounder_reconciler_pass_seconds",
    "How long one reconciler pass took (both reads, the decisions and the repairs).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SUSPECTED = Gauge(
    "cofounder_reconciler_suspected",
    "Repairs the last pass decided, waiting for the next pass to confirm them.",
)
INCOMPLETE = Counter(
    "cofounder_reconciler_incomplete_views_total",
    "Passes whose Redis view of a stream was cut at RECONCILE_SCAN_LIMIT: builds needing that "
    "stream were left for a later pass.",
)
LOOKED_AT = Counter(
    "cofounder_reconciler_builds_checked_total", "Builds the reconciler compared, summed."
)

_MAX_BACKOFF: Final = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class ReconcilerConfig:
    """How often, how far and how much (the gateway's ``RECONCILE_*`` settings)."""

    interval_s: float = 15.0
    grace: timedelta = timedelta(seconds=30)
    batch: int = 500
    max_repairs: int = 100
    lookback: timedelta = timedelta(days=1)
    scan_limit: int = 10_000


@dataclass(slots=True)
class _Retry:
    """A repair already made: when it may be made again (twice the last wait)."""

    count: int
    after: float


@dataclass(slots=True)
class Reconciler:
    """Compares PostgreSQL with Redis and re-publishes what Redis lost (see the module)."""

    engine: AsyncEngine
    redis: Redis
    config: ReconcilerConfig = field(default_factory=ReconcilerConfig)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    owner: str = field(default_factory=lambda: secrets.token_hex(8))
    page: Page = field(default_factory=Page)
    #: The repairs decided (by key) when their build was last looked at, waiting for the next
    #: look to confirm them, with when (``time.monotonic``). A pass reads one page of builds,
    #: so a build is looked at again only a cycle of pages later.
    suspected: dict[tuple[str, str, str], float] = field(default_factory=dict)
    retries: dict[tuple[str, str, str], _Retry] = field(default_factory=dict)
    _publisher: Publisher | None = None

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = Publisher(self.redis)
        return self._publisher

    async def run(self, stop: asyncio.Event) -> None:
        """A pass every interval while this replica holds the lease, until ``stop``; a failed
        pass is counted, logged and tried again at the next. The lease is given back at the
        end."""
        await every(
            self.config.interval_s,
            self.pass_once,
            stop,
            name="reconciler",
            log=_log,
            failed="reconciler pass failed; trying again",
        )
        with contextlib.suppress(RedisError):
            await self.redis.eval(RELEASE_IF_MINE, 1, LEASE_KEY, self.owner)

    async def pass_once(self) -> None:
        """A pass if this replica holds (or takes) the lease, else nothing; counted by outcome."""
        started = time.perf_counter()
        try:
            if await self.hold_lease():
                await self.reconcile_once()
                PASSES.labels("done").inc()
                PASS_SECONDS.observe(time.perf_counter() - started)
            else:
                PASSES.labels("standby").inc()
        except Exception:
            PASSES.labels("failed").inc()
            raise

    async def hold_lease(self) -> bool:
        """Take or renew the reconciler's lease; whether this replica is the active one."""
        ttl_ms = int(self.config.interval_s * 3000)
        if await self.redis.eval(RENEW_IF_MINE, 1, LEASE_KEY, self.owner, ttl_ms):
            return True
        taken = bool(await self.redis.set(LEASE_KEY, self.owner, nx=True, px=ttl_ms))
        if taken:
            _log.info("reconciler active in this process", owner=self.owner)
            self.suspected.clear()  # another replica's suspicions were not ours
        return taken

    async def reconcile_once(self) -> list[Repair]:
        """One pass: read, decide, confirm, repair. Returns the repairs made."""
        now = self.clock()
        config = self.config
        builds = await read_builds(
            self.engine, self.page, limit=config.batch, lookback=config.lookback, now=now
        )
        LOOKED_AT.inc(len(builds))
        view = await read_redis(self.redis, builds, limit=config.scan_limit)
        if not all(
            f.complete
            for f in (view.requests, view.work, view.signals, view.control, view.snapshots)
        ):
            INCOMPLETE.inc()
        by_id = {b.build_id: b for b in builds}
        decided = [r for b in builds for r in decide(b, view, now=now, grace=config.grace)]
        clock = time.monotonic()
        confirmed = [r for r in decided if r.key in self.suspected]
        self.suspected = self._suspicions(decided, looked_at=by_id.keys(), now=clock)
        SUSPECTED.set(len(self.suspected))
        made: list[Repair] = []
        for repair in confirmed:
            if len(made) >= config.max_repairs:
                break
            retry = self.retries.get(repair.key)
            if retry is not None and clock < retry.after:
                continue
            events = await self.events_for(repair, by_id[repair.build_id])
            if not events:
                continue
            await self.publisher.publish_many((stream_for(type(e)).name, e) for e in events)
            REPAIRS.labels(repair.kind.value).inc()
            count = retry.count + 1 if retry else 1
            wait = min(config.grace * 2**count, _MAX_BACKOFF).total_seconds()
            self.retries[repair.key] = _Retry(count, clock + wait)
            made.append(repair)
            _log.warning(
                "reconciler re-published a lost event",
                kind=repair.kind.value,
                build_id=repair.build_id,
                event_ids=[e.event_id for e in events],
                why=repair.why,
                attempt=count,
            )
        # Forget a repair once its doubled wait has long passed (a key that comes back then
        # starts again at the grace): the map stays as small as the recent repairs.
        forget = clock - 2 * _MAX_BACKOFF.total_seconds()
        self.retries = {k: v for k, v in self.retries.items() if v.after > forget}
        return made

    def _suspicions(
        self, decided: list[Repair], *, looked_at: Iterable[str], now: float
    ) -> dict[tuple[str, str, str], float]:
        """The suspicions to keep: this pass's, and those of builds it did not look at (other
        pages), unless older than the lookback (their build has left the window)."""
        seen = set(looked_at)
        horizon = now - self.config.lookback.total_seconds()
        kept = {
            key: since
            for key, since in self.suspected.items()
            if key[1] not in seen and since > horizon
        }
        for repair in decided:
            kept[repair.key] = self.suspected.get(repair.key, now)
        return kept

    async def events_for(self, repair: Repair, build: BuildFacts) -> list[Event]:
        """The events ``repair`` re-publishes, from PostgreSQL (none when they cannot be
        rebuilt: logged, left for an operator)."""
        try:
            if repair.kind is RepairKind.USAGE:
                return await self._usage(build)
            return [await self._event_for(repair, build)]
        except (KeyError, TypeError, ValueError, msgspec.ValidationError) as exc:
            _log.error(
                "reconciler cannot rebuild the event to re-publish",
                kind=repair.kind.value,
                build_id=repair.build_id,
                error=repr(exc),
            )
            return []

    async def _event_for(self, repair: Repair, build: BuildFacts) -> Event:
        builders = {
            RepairKind.REQUEST: self._request,
            RepairKind.CANCEL: self._cancel,
            RepairKind.WORK: self._work,
            RepairKind.END: self._end,
            RepairKind.SLEEP: self._sleep,
            RepairKind.SNAPSHOT: self._snapshot,
        }
        return await builders[repair.kind](build)

    async def _request(self, build: BuildFacts) -> Event:
        return build_requested(**build.ids, goal=build.goal, occurred_at=build.created_at)

    async def _cancel(self, build: BuildFacts) -> Event:
        return cancel_requested(**build.ids, occurred_at=build.finished_at or build.changed_at)

    async def _work(self, build: BuildFacts) -> Event:
        return await self._context(build.build_id)

    async def _end(self, build: BuildFacts) -> Event:
        if build.run is None or build.run.ended is None:
            raise ValueError("the run has no end part")
        return from_stored(build.run.ended)

    async def _sleep(self, build: BuildFacts) -> Event:
        run = build.run
        if run is None:
            raise ValueError("the build has no run")
        if run.sleeping is not None:
            return from_stored(run.sleeping)
        return await self._sleeping(build, run.last_seq, run.resets_at)

    async def _snapshot(self, build: BuildFacts) -> Event:
        if build.snapshot is None:
            raise ValueError("the build has no snapshot request")
        return await self._snapshot_request(build.build_id, build.snapshot.seq)

    async def _usage(self, build: BuildFacts) -> list[Event]:
        """The usage events of the build's unmetered turns, as their checkpoints hold them."""
        wanted = {t.usage_event_id for t in build.unmetered}
        found: list[Event] = []
        for turn in build.unmetered:
            parts: Any = await read_parts(self.engine, build.build_id, turn.seq)
            found.extend(
                from_stored(e)
                for e in (parts or {}).get("events", [])
                if e.get("type") == "budget.usage" and e.get("event_id") in wanted
            )
        return found

    async def _context(self, build_id: str) -> ContextReady:
        parts = await read_parts(self.engine, build_id, 1)
        return msgspec.convert(parts["context"], type=ContextReady)

    async def _sleeping(self, build: BuildFacts, seq: int, resets_at: str | None) -> AgentSleeping:
        """A sleep part written before its event was recorded: the event the runner sent."""
        context = await self._context(build.build_id)
        if resets_at is None:
            raise ValueError("the sleep part has no reset time")
        return AgentSleeping(
            # As the runner made it: caused by the build's context.ready, its id derived.
            **follow_up(context, producer="agent-runner", kind=f"sleeping:{seq}"),
            resets_at=datetime.fromisoformat(resets_at),
            checkpoint_seq=seq,
        )

    async def _snapshot_request(self, build_id: str, seq: int) -> SnapshotRequested:
        parts: Any = await read_parts(self.engine, build_id, seq)
        candidates = [parts.get("snapshot"), *parts.get("events", [])]
        for data in candidates:
            if isinstance(data, dict) and data.get("type") == "snapshot.requested":
                return msgspec.convert(data, type=SnapshotRequested)
        raise ValueError(f"checkpoint {seq} of {build_id} holds no snapshot request")
