"""A consumer-group reader that loses nothing: the delivery contract of
docs/architecture.md#delivery-contract.

One :class:`Consumer` reads one stream as one member of one group. Its life:

1. ``XGROUP CREATE ... MKSTREAM`` (idempotent; a new group starts at ``0`` so events published
   before the group existed are not skipped);
2. drain its own pending entries (``XREADGROUP`` id ``0``), which a previous process under the same
   name received and never acked;
3. read new entries (``>``), never more than free handler slots, and run one handler task per
   entry, dispatched by the entry's ``type`` field (no decode needed to route); with tracing on,
   each handler call runs in a CONSUMER span, a child of the span that made the event
   (:mod:`cofounder_runtime.tracing`);
4. ack after the handler returns (acks from many handlers coalesce into one ``XACK``); on failure,
   back off and try again, each attempt counted as a delivery in Redis; after ``max_deliveries``
   move the entry to ``<stream>.dlq`` and ack it; undecodable entries go there at once. A
   failure that is a server's outage (:func:`~cofounder_runtime.outages.is_outage`: PostgreSQL
   or Redis restarting, a connection refused) is retried without being counted, for up to
   ``outage_patience_ms`` from the first: a failover does not dead-letter what it interrupted;
5. in the background: heartbeats renew running entries (``XCLAIM JUSTID``, owner-checked) so no
   one claims them while alive; a janitor claims orphans idle past ``min_idle`` (``XAUTOCLAIM``),
   refreshes the group gauges, removes departed consumers and trims the stream by age;
6. on :meth:`stop`: read nothing more, let running handlers finish (up to the grace period), ack,
   and return. Entries waiting for a retry stay pending and are redelivered later.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import copy_context
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from cofounder_contracts.codec import EVENT_ID, TYPE
from cofounder_contracts.envelope import Event
from cofounder_contracts.streams import Stream
from cofounder_runtime import tracing
from cofounder_runtime.deadletter import dead_letter
from cofounder_runtime.eager import start_eagerly
from cofounder_runtime.janitor import Janitor
from cofounder_runtime.logs import HANDLING
from cofounder_runtime.metrics import StreamMetrics, TypeMetrics
from cofounder_runtime.options import ConsumerOptions
from cofounder_runtime.outages import is_outage
from cofounder_runtime.ownership import Ownership
from cofounder_runtime.periodic import every, stopped_within
from cofounder_runtime.streamreply import read_entries

__all__ = ["Consumer", "GiveUp", "Handler", "Poison", "handling_entry"]

#: A handler gets the decoded event; dependencies are bound beforehand (``functools.partial``).
Handler = Callable[[Any], Awaitable[None]]
#: Called with (event, error, deliveries) when an entry is about to be dead-lettered; see
#: :class:`Consumer`.
GiveUp = Callable[[Any, str, int], Awaitable[None]]

_log = structlog.get_logger("cofounder.consumer")

#: The stream entry id of the event being handled (in the handler's own context).
_ENTRY: contextvars.ContextVar[bytes | None] = contextvars.ContextVar(
    "cofounder_consumer_entry", default=None
)


def handling_entry() -> bytes | None:
    """The stream entry id of the event the calling handler was given (None outside one): for a
    handler that must ask how far another group has read (the log archive's projection)."""
    return _ENTRY.get()


class Poison(Exception):
    """Raised by a handler for an event that can never succeed (valid JSON, invalid meaning):
    the entry goes to the dead-letter stream at once, with this message as its error, rather
    than being retried ``max_deliveries`` times."""


_UNKNOWN: Final = b"unknown"
_REDIS_RETRY_S: Final = 1.0
_SHUTDOWN_ACK_ATTEMPTS: Final = 5


@dataclass(frozen=True, slots=True)
class _Route:
    decoder: msgspec.json.Decoder[Any]
    handler: Handler
    metrics: TypeMetrics


@dataclass(slots=True)
class _InFlight:
    """An entry whose handler is running in this process."""

    deliveries: int
    renewed_at: float
    lost: bool = False
    #: When the handler first failed for an outage in a row (``time.monotonic``), and how many
    #: such failures: waited out, not counted as deliveries (see :meth:`Consumer._wait_out`).
    outage_since: float | None = None
    outages: int = 0


@dataclass(slots=True)
class _State:
    inflight: dict[bytes, _InFlight] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    backing_off: set[asyncio.Task[None]] = field(default_factory=set)
    acks: list[bytes] = field(default_factory=list)


class Consumer:
    """One member of one consumer group on one stream. See the module docstring."""

    def __init__(
        self,
        redis: Redis,
        *,
        stream: str,
        group: str,
        consumer: str,
        handlers: Mapping[type[Event], Handler],
        options: ConsumerOptions | None = None,
        on_give_up: GiveUp | None = None,
    ) -> None:
        """``on_give_up`` runs before a decoded entry is dead-lettered (its handler raised
        ``Poison`` or ran out of deliveries): the place to settle what the event was about, such
        as failing the build a work entry drives. The entry goes to the dead letters only once
        it returns; when it raises, the entry stays pending and the decision is made again at
        its next delivery."""
        self.redis = redis
        self._on_give_up = on_give_up
        self.stream = stream
        self.group = group
        self.name = consumer
        self.options = options or ConsumerOptions()
        self.metrics = StreamMetrics(stream=stream, group=group)
        self._routes: dict[bytes, _Route] = {
            t.event_type().encode(): _Route(
                decoder=msgspec.json.Decoder(t),
                handler=h,
                metrics=self.metrics.for_type(t.event_type().encode()),
            )
            for t, h in handlers.items()
        }
        self._ownership = Ownership(redis, stream=stream, group=group, consumer=consumer)
        self._janitor = Janitor(self)
        self._state = _State()
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._acks_due = asyncio.Event()
        self._closed = asyncio.Event()
        self._log = _log.bind(stream=stream, group=group, consumer=consumer)

    @classmethod
    def for_stream(
        cls,
        redis: Redis,
        stream: Stream,
        *,
        group: str,
        consumer: str,
        handlers: Mapping[type[Event], Handler],
        options: ConsumerOptions | None = None,
        on_give_up: GiveUp | None = None,
    ) -> Consumer:
        """A consumer of a contract stream: checks the wiring and takes the stream's retention.

        Raises ``ValueError`` when ``group`` does not read ``stream`` or a handler is for an event
        the stream does not carry (it would never be called: a wiring mistake, found at start).
        """
        if group not in stream.groups:
            raise ValueError(f"group {group!r} does not read {stream.name} ({stream.groups})")
        strays = [t.__name__ for t in handlers if t not in stream.events]
        if strays:
            raise ValueError(f"{stream.name} does not carry {', '.join(strays)}")
        options = options or ConsumerOptions()
        if options.max_age_ms is None:
            options = dataclasses.replace(options, max_age_ms=stream.max_age_ms)
        return cls(
            redis,
            stream=stream.name,
            group=group,
            consumer=consumer,
            handlers=handlers,
            options=options,
            on_give_up=on_give_up,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the consumer to stop; :meth:`run` returns once in-flight work is acked."""
        self._stopping.set()
        self._slot_freed.set()

    @property
    def stopped_event(self) -> asyncio.Event:
        """Set once :meth:`stop` is called (for loops that wait on it)."""
        return self._stopping

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping.is_set()

    @property
    def inflight(self) -> Mapping[bytes, object]:
        """Entries whose handlers are running now (read-only view, for the janitor and tests)."""
        return self._state.inflight

    async def ensure_group(self) -> None:
        """Create the group (and the stream) unless it exists."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Consume until :meth:`stop`; then drain in-flight work and return.

        A Redis that is down or restarting when the consumer starts is waited for, as it is
        later on: the group is created once Redis answers (a process started in the middle of
        a Redis restart must not exit for it)."""
        if not await self._group_ready():
            return
        self._log.info("consumer started", options=str(self.options))
        background = [
            asyncio.create_task(self._ack_loop(), name=f"acks:{self.stream}"),
            asyncio.create_task(self._heartbeat_loop(), name=f"heartbeat:{self.stream}"),
            asyncio.create_task(self._janitor.run(), name=f"janitor:{self.stream}"),
        ]
        try:
            await self._drain_own_pending()
            await self._read_new()
        finally:
            await self._shutdown(background)

    async def _shutdown(self, background: list[asyncio.Task[None]]) -> None:
        """Finish in-flight handlers, then let the background loops end on their own.

        The loops are not cancelled mid-command: a cancellation that lands inside a Redis client
        call may be absorbed by it, leaving the loop waiting forever. They watch ``_closed``.
        """
        state = self._state
        for task in list(state.backing_off):
            task.cancel()
        running = set(state.tasks)
        if running:
            self._log.info("finishing in-flight handlers", count=len(running))
            _, unfinished = await asyncio.wait(running, timeout=self.options.shutdown_grace_s)
            for task in unfinished:
                task.cancel()
            if unfinished:
                self._log.warning(
                    "handlers outlived the grace period; their entries stay pending",
                    count=len(unfinished),
                )
                await asyncio.wait(unfinished, timeout=5)
        self._closed.set()
        self._acks_due.set()
        _, stuck = await asyncio.wait(
            background, timeout=_REDIS_RETRY_S * _SHUTDOWN_ACK_ATTEMPTS + 5
        )
        for task in stuck:
            task.cancel()
        self._log.info("consumer stopped")

    # -- reading ---------------------------------------------------------------------------

    async def _free_slots(self) -> int:
        """Wait until at least one handler slot is free (or stop); return the free count."""
        while not self.stopping:
            free = self.options.concurrency - len(self._state.inflight)
            if free > 0:
                return free
            self._slot_freed.clear()
            await self._slot_freed.wait()
        return 0

    async def _drain_own_pending(self) -> None:
        """Re-read entries delivered to this consumer name before and never acked."""
        after = b"0"
        while not self.stopping:
            free = await self._free_slots()
            if not free:
                return
            count = min(free, self.options.batch_size)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    start = "-" if after == b"0" else b"(" + after
                    pipe.xpending_range(
                        self.stream,
                        self.group,
                        min=start,
                        max="+",
                        count=count,
                        consumername=self.name,
                    )
                    pipe.xreadgroup(self.group, self.name, {self.stream: after}, count=count)
                    pending, reply = await pipe.execute()
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # Redis forgot the stream (a flush, a failover to an empty replica), and
                    # our pending entries with it: nothing is left to re-read. Retrying here
                    # would never end, and only ``_read_new`` makes the group again.
                    self._log.warning("group or stream vanished while re-reading; recreating it")
                    await self._recreate_group()
                    return
                await self._redis_trouble("draining own pending entries", exc)
                continue
            except RedisError as exc:
                await self._redis_trouble("draining own pending entries", exc)
                continue
            entries = read_entries(reply)
            if not entries:
                return
            # XPENDING ran before the read; the read itself counts one more delivery.
            counts = {p["message_id"]: int(p["times_delivered"]) + 1 for p in pending}
            self._log.info("re-reading own pending entries", count=len(entries))
            for entry_id, fields in entries:
                self._dispatch(entry_id, fields, counts.get(entry_id, 1))
            after = entries[-1][0]

    async def _read_new(self) -> None:
        options = self.options
        while not self.stopping:
            free = await self._free_slots()
            if not free:
                return
            try:
                reply = await self.redis.xreadgroup(
                    self.group,
                    self.name,
                    {self.stream: ">"},
                    count=min(free, options.batch_size),
                    block=options.block_ms,
                )
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    self._log.warning("group or stream vanished; recreating it")
                    await self._recreate_group()
                    continue
                await self._redis_trouble("reading", exc)
                continue
            except RedisError as exc:
                await self._redis_trouble("reading", exc)
                continue
            for entry_id, fields in read_entries(reply):
                self._dispatch(entry_id, fields, 1)

    async def _group_ready(self) -> bool:
        """Create the group, retrying through Redis errors; False when stopped first."""
        while not self.stopping:
            try:
                await self.ensure_group()
            except RedisError as exc:
                await self._redis_trouble("creating the group", exc)
            else:
                return True
        return False

    async def _recreate_group(self) -> None:
        try:
            await self.ensure_group()
        except RedisError as exc:
            await self._redis_trouble("recreating the group", exc)

    async def _redis_trouble(self, doing: str, exc: BaseException) -> None:
        self._log.warning("redis error; retrying", doing=doing, error=repr(exc))
        await stopped_within(self._stopping, _REDIS_RETRY_S)

    # -- dispatching -----------------------------------------------------------------------

    def _dispatch(
        self, entry_id: bytes, fields: dict[bytes, bytes] | None, deliveries: int
    ) -> None:
        """Route one delivered entry: run its handler, ignore it, or dead-letter it."""
        if not fields:
            # Trimmed or deleted while pending: nothing left to handle, only the PEL slot.
            self._ack(entry_id)
            return
        type_ = fields.get(TYPE, b"")
        route = self._routes.get(type_)
        if route is None:
            if EVENT_ID in fields and type_:
                self.metrics.for_type(_UNKNOWN).ignored += 1
                self._ack(entry_id)
            else:
                self._spawn_dead_letter(
                    entry_id,
                    fields,
                    deliveries,
                    "malformed entry: needs 'type', 'event_id' and 'data' fields",
                )
            return
        try:
            event = route.decoder.decode(fields.get(b"data", b""))
        except msgspec.DecodeError as exc:
            self._spawn_dead_letter(
                entry_id, fields, deliveries, f"undecodable: {exc}", route.metrics
            )
            return
        if deliveries > self.options.max_deliveries:
            self._spawn_dead_letter(
                entry_id,
                fields,
                deliveries,
                f"delivered {deliveries} times without an ack "
                "(its consumers crashed or were killed while handling it)",
                route.metrics,
                event=event,
            )
            return
        state = self._state
        state.inflight[entry_id] = _InFlight(deliveries, time.monotonic())
        # The hot path: most handlers finish here, without a Task (see eager.py).
        task = start_eagerly(self._handle(entry_id, fields, event, route), context=copy_context())
        if task is not None:
            state.tasks.add(task)
            task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._state.tasks.discard(task)

    async def _handle(
        self, entry_id: bytes, fields: dict[bytes, bytes], event: Event, route: _Route
    ) -> None:
        HANDLING.set(event)  # logs from here on carry its event_id, build_id and type
        _ENTRY.set(entry_id)
        state = self._state
        metrics = route.metrics
        try:
            while True:
                flight = state.inflight[entry_id]
                started = time.perf_counter()
                try:
                    if tracing.ENABLED:
                        with tracing.consuming(
                            event,
                            stream=self.stream,
                            group=self.group,
                            entry_id=entry_id,
                            deliveries=flight.deliveries,
                        ):
                            await route.handler(event)
                    else:
                        await route.handler(event)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any handler failure is retried
                    metrics.failed += 1
                    error = f"{type(exc).__name__}: {exc}"
                    if self._wait_out(flight, exc):
                        self._log.warning(
                            "a server the handler needs is unavailable; waiting for it "
                            "(not counted as a delivery)",
                            error=error,
                            outages=flight.outages,
                        )
                        metrics.retried += 1
                        if not await self._back_off(entry_id, flight, counted=False):
                            return
                        continue
                    if isinstance(exc, Poison) or flight.deliveries >= self.options.max_deliveries:
                        self._log.error(
                            "handler failed; dead-lettering",
                            error=error,
                            deliveries=flight.deliveries,
                            exc_info=exc,
                        )
                        await self._dead_letter(
                            entry_id, fields, flight.deliveries, error, metrics, event=event
                        )
                        return
                    self._log.warning(
                        "handler failed; will retry",
                        error=error,
                        deliveries=flight.deliveries,
                        exc_info=exc,
                    )
                    metrics.retried += 1
                    if not await self._back_off(entry_id, flight):
                        return
                    continue
                metrics.observe_success(time.perf_counter() - started)
                state.acks.append(entry_id)  # self._ack, inlined on the hot path
                self._acks_due.set()
                return
        finally:
            state.inflight.pop(entry_id, None)
            self._slot_freed.set()

    async def _give_up(self, event: Event, error: str, deliveries: int) -> bool:
        """Run ``on_give_up``; whether the entry may go to the dead letters now."""
        if self._on_give_up is None:
            return True
        try:
            await self._on_give_up(event, error, deliveries)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - kept pending, tried again
            self._log.error("giving up on the entry failed; it stays pending", error=repr(exc))
            return False
        return True

    def _wait_out(self, flight: _InFlight, exc: Exception) -> bool:
        """Whether to retry ``exc`` without counting it: an outage, within the patience since
        the first of a row of them. Any other failure ends the row."""
        if isinstance(exc, Poison) or not is_outage(exc):
            flight.outage_since, flight.outages = None, 0
            return False
        now = time.monotonic()
        if flight.outage_since is None:
            flight.outage_since = now
        if (now - flight.outage_since) * 1000 >= self.options.outage_patience_ms:
            return False  # counted from now on, as any failure
        flight.outages += 1
        return True

    async def _back_off(self, entry_id: bytes, flight: _InFlight, *, counted: bool = True) -> bool:
        """Sleep the backoff, then count a redelivery (unless not ``counted``: an outage waited
        out, which only renews the entry's ownership). False when the entry is no longer ours."""
        state = self._state
        ceiling_ms = self.options.backoff_ms(flight.deliveries + flight.outages)
        task = asyncio.current_task()
        assert task is not None
        state.backing_off.add(task)
        # Not running: no heartbeat and no slot while waiting (the backoff is below min_idle).
        state.inflight.pop(entry_id, None)
        self._slot_freed.set()
        try:
            await asyncio.sleep(random.uniform(ceiling_ms / 2, ceiling_ms) / 1000)
        finally:
            state.backing_off.discard(task)
        if self.stopping:
            return False
        deliveries = flight.deliveries + 1 if counted else flight.deliveries
        while True:
            try:
                ours = await self._ownership.redeliver(entry_id, deliveries=deliveries)
                break
            except RedisError as exc:
                await self._redis_trouble("counting a retry", exc)
                if self._stopping.is_set():
                    return False
        if not ours:
            self._log.warning("entry was claimed by another consumer during backoff")
            return False
        flight.deliveries = deliveries
        flight.renewed_at = time.monotonic()
        state.inflight[entry_id] = flight
        return True

    def _spawn_dead_letter(
        self,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        deliveries: int,
        error: str,
        metrics: TypeMetrics | None = None,
        *,
        event: Event | None = None,
    ) -> None:
        self._log.error(
            "dead-lettering entry",
            entry_id=entry_id.decode(),
            error=error,
            event_id=fields.get(EVENT_ID, b"").decode(errors="replace"),
        )
        task = asyncio.create_task(
            self._dead_letter(
                entry_id,
                fields,
                deliveries,
                error,
                metrics or self.metrics.for_type(_UNKNOWN),
                event=event,
            )
        )
        self._state.tasks.add(task)
        task.add_done_callback(self._handler_done)

    async def _dead_letter(
        self,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        deliveries: int,
        error: str,
        metrics: TypeMetrics,
        *,
        event: Event | None = None,
    ) -> None:
        """Move the entry to the dead letters; a decoded ``event`` is settled first
        (``on_give_up``), and the entry left pending (decided again at its next delivery) when
        that fails."""
        if event is not None and not await self._give_up(event, error, deliveries):
            return
        while True:
            try:
                await dead_letter(
                    self.redis,
                    stream=self.stream,
                    group=self.group,
                    consumer=self.name,
                    entry_id=entry_id,
                    fields=fields,
                    deliveries=deliveries,
                    error=error,
                )
            except RedisError as exc:
                # Left pending on give-up: redelivered later and dead-lettered then.
                if self.stopping:
                    return
                await self._redis_trouble("dead-lettering", exc)
                continue
            metrics.dead_lettered += 1
            return

    # -- acks and heartbeats ---------------------------------------------------------------

    def _ack(self, entry_id: bytes) -> None:
        self._state.acks.append(entry_id)
        self._acks_due.set()

    async def _flush_acks(self, *, attempts: int | None = None) -> None:
        """XACK everything due in one command; retry on Redis errors (``attempts`` caps it)."""
        state = self._state
        while state.acks:
            ids, state.acks = state.acks, []
            try:
                await self.redis.xack(self.stream, self.group, *ids)
            except RedisError as exc:
                state.acks[:0] = ids
                if attempts is not None:
                    attempts -= 1
                    if attempts <= 0:
                        self._log.error(
                            "could not ack; the entries stay pending and will be redelivered",
                            count=len(ids),
                            error=repr(exc),
                        )
                        return
                await asyncio.sleep(_REDIS_RETRY_S)
                self._log.warning("redis error; retrying", doing="acking", error=repr(exc))

    async def _ack_loop(self) -> None:
        """Flush acks as they come; after close, one last flush with bounded retries."""
        while not self._closed.is_set():
            await self._acks_due.wait()
            self._acks_due.clear()
            if not self._closed.is_set():
                await self._flush_acks()
        await self._flush_acks(attempts=_SHUTDOWN_ACK_ATTEMPTS)

    async def _heartbeat_loop(self) -> None:
        """Renew running entries every heartbeat period; keeps going during shutdown until
        handlers are done (``_closed``). A failed beat is logged; the next one tries again."""
        await every(
            self.options.heartbeat_every_ms / 1000,
            self._heartbeat,
            self._closed,
            name="heartbeat",
            log=self._log,
            failed="heartbeat failed",
            immediately=False,
        )

    async def _heartbeat(self) -> None:
        """One beat: renew the running entries not renewed for half a period."""
        period = self.options.heartbeat_every_ms / 1000
        state = self._state
        now = time.monotonic()
        due = [i for i, f in state.inflight.items() if now - f.renewed_at >= period / 2]
        if not due:
            return
        renewed = await self._ownership.renew(due)
        for entry_id in due:
            flight = state.inflight.get(entry_id)
            if flight is None:
                continue
            if entry_id in renewed:
                flight.renewed_at = now
            elif not flight.lost:
                flight.lost = True
                self.metrics.lost.inc()
                self._log.warning(
                    "in-flight entry was claimed by another consumer",
                    entry_id=entry_id.decode(),
                )

    # -- for the janitor -------------------------------------------------------------------

    def free_slots(self) -> int:
        """Handler slots free right now."""
        return max(0, self.options.concurrency - len(self._state.inflight))

    def accept_claimed(
        self, entry_id: bytes, fields: dict[bytes, bytes] | None, deliveries: int
    ) -> None:
        """Take an entry the janitor claimed from another consumer."""
        if entry_id in self._state.inflight:
            return
        self._dispatch(entry_id, fields, deliveries)
