"""The Think-Act-Observe-Repeat loop of one build, from its first turn or from a checkpoint.

:func:`drive` runs while the build's work entry (``context.ready`` or a ``budget.wake``) stays
pending and heart-beaten by the consumer. Its life:

1. take the build lease (its generation fences every checkpoint; it is above every generation
   the checkpoints hold, which PostgreSQL remembers when Redis forgets its counter);
2. load the checkpoints; none: a new run (the model for the tier, a new sandbox, a ``start``
   part); some: reconnect the sandbox (or make a new one when it is gone) and continue. An
   ended build re-emits its end; an asleep one ignores a ``context.ready`` (only a wake, or a
   cancel, takes it up);
3. each iteration: limits, the cancel flag and the budget gate → compaction when the prompt
   nears the context window → the model call → the requested tools, in order, their results
   returned together → a ``turn`` checkpoint holding only the new messages, written while the
   gate and cancel flag for the next iteration are read (PostgreSQL and Redis, one wait) → the
   turn's events, published in the background while the next model call goes out (the part
   after waits for them: the checkpoint holds them until then, see :meth:`_Run.published`);
4. it ends in one of: completed, failed, cancelled, asleep (budget spent), duplicate (an
   :class:`Outcome`); or it stops without settling the build and returns a
   :class:`HandedBack`: the runner is shutting down, the model API stayed unavailable through
   the client's retries, or the lease was lost. Those are values :func:`drive` returns, not
   exceptions it lets out; ``handlers.py`` turns a hand-back into the raise that keeps the work
   entry pending, so that another attempt resumes the build from its checkpoints.

The decisions are not made here: :mod:`cofounder_domain.run` says, from plain values, whether an
iteration may run (:func:`~cofounder_domain.run.decide`: cancel, sleep, a limit, compaction) and
what a turn ended (:func:`~cofounder_domain.run.after_turn`: completed, stuck, the nudge, a
periodic snapshot due, the counters). :class:`_Run` carries them out: the model and tool calls,
the checkpoints, the events, the sandbox.

Event ids are derived from the build's ``context.ready`` and what happened (``iteration:3``;
see :func:`cofounder_contracts.follow_up`), so a part redone after a crash re-emits the same ids
and downstream consumers count it once; that event is a UUIDv7, so the ids carry its time and
sort by it (a build id may be a v4, which has no time to give).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_agent_runner.checkpoints import CheckpointStore, RunState
from cofounder_agent_runner.compaction import compact
from cofounder_agent_runner.control import Control, parse_control, queue_control, read_control
from cofounder_agent_runner.finish import assign_build_version, mark_mvp_built
from cofounder_agent_runner.lease import Lease, LeaseBusy, LeaseLost
from cofounder_agent_runner.metrics import (
    BUILDS_ACTIVE,
    BUILDS_ENDED,
    ITERATIONS,
    MODEL_CALLS_REPEATED,
    MODEL_TOKENS,
    TOOL_CALLS,
)
from cofounder_agent_runner.model import (
    ModelClient,
    ModelRejected,
    ModelReply,
    ModelUnavailable,
    TokenUsage,
)
from cofounder_agent_runner.plans import BuildBlocked, UnknownTier, resolve_model
from cofounder_agent_runner.prompt import (
    CACHED_TOOLS,
    first_message,
    request_messages,
    sandbox_replaced,
    system_blocks,
    system_prompt,
)
from cofounder_agent_runner.settings import RunnerSettings
from cofounder_agent_runner.tools.definitions import TOOL_DEFINITIONS
from cofounder_agent_runner.tools.dispatcher import ToolDispatcher, ToolOutcome
from cofounder_contracts import (
    AgentIterationCompleted,
    AgentResumed,
    AgentSleeping,
    ArtifactGenerated,
    BudgetUsage,
    BuildCompleted,
    BuildFailed,
    BuildStatus,
    BuildStatusChanged,
    ContextReady,
    Envelope,
    Event,
    SandboxKind,
    ScreenshotTaken,
    SnapshotReason,
    SnapshotRequested,
    ToolCalled,
    ToolCompleted,
    UsageOutcome,
    envelope,
    follow_up,
)
from cofounder_contracts.stored import from_stored
from cofounder_contracts.streams import stream_for
from cofounder_domain.run import (
    Cancel,
    Complete,
    Fail,
    RunLimits,
    Sleep,
    ToolCall,
    TurnOutcome,
    after_turn,
    decide,
)
from cofounder_runtime import tracing
from cofounder_runtime.publisher import Publisher
from cofounder_sandbox.base import Sandbox, Sandboxes, SandboxGone
from cofounder_snapshots.screenshots import ScreenshotStore, screenshot_name
from cofounder_snapshots.store import SnapshotStore, StoreError
from cofounder_snapshots.sync import restore

__all__ = [
    "DriveResult",
    "HandBack",
    "HandBackReason",
    "HandedBack",
    "Outcome",
    "RunnerDeps",
    "drive",
    "give_up",
    "tool_input_preview",
]

PRODUCER: Final = "agent-runner"
_log = structlog.get_logger("cofounder.runner.loop")
_PREVIEW: Final = 200
#: How long tool progress waits before it is sent on its own (see ``_Run.emit_soon``).
_PROGRESS_WAIT_S: Final = 0.1
_ENCODE: Final = msgspec.json.Encoder()


class Outcome(enum.StrEnum):
    """How a drive settled its build: the work entry that brought it is done (acked)."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SLEEPING = "sleeping"  # a budget.wake resumes it
    #: Nothing to drive: it had ended (its end is said again), it stays asleep (a
    #: ``context.ready`` again), or it never started (a wake).
    DUPLICATE = "duplicate"


class HandBackReason(enum.StrEnum):
    """Why a drive stopped without settling its build (the ``drives_total`` outcome label)."""

    #: The runner is stopping (SIGTERM), seen between iterations or while waiting for the lease.
    SHUTDOWN = "shutdown"
    #: The model API kept failing (429, 529, 5xx, broken streams) through the client's attempts
    #: (``MODEL_ATTEMPTS``, see ``model.py``): a later attempt may find it back.
    MODEL_UNAVAILABLE = "model_unavailable"
    #: The lease expired, was taken over or was forgotten by Redis: another drive may hold the
    #: build now, and this one must write nothing more.
    LEASE_LOST = "lease_lost"
    #: The build's sandbox vanished under a tool (killed, expired, its host lost): the next
    #: drive starts a new one holding the latest snapshot and resumes from the last checkpoint.
    SANDBOX_GONE = "sandbox_gone"


@dataclass(frozen=True, slots=True)
class HandedBack:
    """A drive that stopped without ending the build or putting it to sleep.

    Nothing was lost: every finished turn is in the checkpoints, no end was written or
    published, and the lease was given back (unless another holds it). The work entry must
    stay pending, so that another attempt, here after the consumer's backoff or on another
    runner, resumes the build from its checkpoints; see ``handlers.py`` for how that is done.
    """

    reason: HandBackReason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


#: What :func:`drive` returns: the build settled (an :class:`Outcome`), or handed back.
DriveResult = Outcome | HandedBack


class HandBack(Exception):
    """Raised to leave a work entry pending: the consumer's contract has no other way.

    The runtime's consumer acks an entry when its handler returns and treats any exception as
    "try again": it counts a delivery, backs off and runs the handler again (a new drive, which
    resumes the build), leaves the entry pending for the next process when it is stopping, and
    after ``WORK_MAX_DELIVERIES`` runs :func:`give_up` and dead-letters it. Raised by a handler
    whose drive was handed back (``handlers.py``), and by :func:`give_up` while the runner is
    shutting down; ``str()`` says why (the consumer logs it, and ``give_up`` quotes the last one
    in the build's ``build.failed``).
    """

    def __init__(self, handed_back: HandedBack) -> None:
        super().__init__(str(handed_back))
        self.handed_back = handed_back


@dataclass(slots=True)
class RunnerDeps:
    """What every drive needs; one per process."""

    settings: RunnerSettings
    redis: Redis
    engine: AsyncEngine
    publisher: Publisher
    checkpoints: CheckpointStore
    sandboxes: Sandboxes
    model: ModelClient
    runner_name: str
    #: Where snapshots are (entered by the caller); a replacement sandbox gets the latest.
    snapshots: SnapshotStore | None = None
    #: Where the screenshot tool's PNGs are kept (entered by the caller); None: not kept.
    screenshots: ScreenshotStore | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


def _limits(settings: RunnerSettings, tier: str) -> RunLimits:
    """The bounds of a build's run: the settings, with the tool-call limit of its tier."""
    return RunLimits(
        max_tool_calls=settings.max_tool_calls_for(tier),
        max_wall_s=settings.max_wall_s,
        stuck_repeats=settings.stuck_repeats,
        snapshot_every=settings.snapshot_every,
        compact_above_tokens=settings.compact_at * settings.context_window,
    )


def tool_input_preview(value: Any) -> str:
    """A tool call's input for ``agent.tool_called``: one line, at most ``_PREVIEW`` characters.
    An object's short values come first (``path`` before ``file_text``), so a long one cannot
    push them out of the preview; equal lengths go by key, so the preview is deterministic."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict):  # each value serialised once, then laid out as json.dumps does
        items = sorted(
            ((json.dumps(v, ensure_ascii=False), json.dumps(str(k))) for k, v in value.items()),
            key=lambda item: (len(item[0]), item[1]),
        )
        text = "{" + ", ".join(f"{k}: {v}" for v, k in items) + "}"
    else:
        text = json.dumps(value, ensure_ascii=False)
    flat = " ".join(text.split())
    return flat if len(flat) <= _PREVIEW else flat[: _PREVIEW - 1] + "…"


@dataclass(slots=True)
class _Run:
    """One drive of one build (not shared): it carries out the decisions of
    :mod:`cofounder_domain.run` (calls the model and the tools, writes the checkpoints, publishes
    the events), and makes none of its own."""

    deps: RunnerDeps
    state: RunState
    lease: Lease
    sandbox: Sandbox
    dispatcher: ToolDispatcher
    system: list[dict[str, Any]]
    log: Any
    limits: RunLimits
    pending_usage: BudgetUsage | None = None
    backlog: list[Event] = field(default_factory=list)
    #: Sends the backlog in the background, one batch after another, in order; never raises.
    sender: asyncio.Task[None] | None = None
    #: Starts the sender once tool progress has waited ``_PROGRESS_WAIT_S`` (see emit_soon).
    progress_due: asyncio.TimerHandle | None = None
    #: The last part's events were handed to the sender and may not be out yet: the next part
    #: waits for them (see :meth:`published`).
    outbox_unsent: bool = False
    #: Messages of the conversation that no part holds yet (the note of a replaced sandbox,
    #: :meth:`tell`): the next part that writes messages carries them, so that a replay
    #: rebuilds the conversation the model saw.
    unsaved: list[dict[str, Any]] = field(default_factory=list)

    @property
    def context(self) -> ContextReady:
        return self.state.context

    def tell(self, message: dict[str, Any]) -> None:
        """Add a user turn to the conversation, for the next model call, written with the next
        part that holds messages (a turn's, a compaction's or a sleep's)."""
        self.state.messages.append(message)
        self.unsaved.append(message)

    def emit_soon(self, event: Event) -> None:
        """Publish in the background, in order (tool progress: the loop does not wait for it),
        after at most ``_PROGRESS_WAIT_S``: a tool that ends sooner has its two events sent
        together, with the turn's gate and cancel read (:meth:`write_turn`), in one round trip
        instead of three (py-spy at 100 builds, issue #18). The wait is a timer, not a task:
        the round trip that takes the events over cancels it for nothing."""
        self.backlog.append(event)
        if (self.sender is None or self.sender.done()) and self.progress_due is None:
            loop = asyncio.get_running_loop()
            self.progress_due = loop.call_later(_PROGRESS_WAIT_S, self._send_backlog_now)

    def publish_outbox(self, events: list[Event]) -> None:
        """Publish the events of the part just written in the background, at once: the next
        model call does not wait for the round trip; the next part does (:meth:`published`),
        since its row replaces this one as the outbox a resume publishes again."""
        self.outbox_unsent = True
        self.backlog.extend(events)
        if self.sender is None or self.sender.done():
            self._send_backlog_now()  # else the sender's next batch takes them

    def _progress_not_due(self) -> None:
        """Cancel the progress timer: what it held back is being sent now."""
        if self.progress_due is not None:
            self.progress_due.cancel()
            self.progress_due = None

    def _send_backlog_now(self) -> None:
        self._progress_not_due()
        self.sender = asyncio.create_task(self._send_backlog())

    async def _send_backlog(self) -> None:
        while self.backlog:
            batch, self.backlog = self.backlog, []
            try:
                await self.deps.publisher.publish_many((stream_for(type(e)).name, e) for e in batch)
            except Exception as exc:  # noqa: BLE001 - kept, and sent by the next round trip
                self.backlog[:0] = batch
                self.log.warning("events not sent; the next round trip takes them", error=repr(exc))
                return
            except BaseException:
                self.backlog[:0] = batch  # cancelled: the process is going down
                raise
        self.outbox_unsent = False

    async def _sent(self) -> None:
        """Wait until the background sender is done. ``asyncio.wait``, not ``await``: a waiter
        that is cancelled (the turn's gate read, when its checkpoint fails) must not cancel the
        sender with it, and the sender's end is read from the backlog, not raised."""
        if self.sender is not None:
            if not self.sender.done():  # (a done one would still cost a turn of the loop)
                await asyncio.wait((self.sender,))
            self.sender = None

    async def settled(self) -> None:
        """The drive is ending: send the progress still held back and wait for the sender, best
        effort. What a failed or cut round trip kept is not tried again: it may have reached
        Redis (a cut one), and a turn's events among it are in its checkpoint, which the next
        drive publishes again."""
        if self.progress_due is not None:
            self._send_backlog_now()
        await self._sent()

    async def published(self) -> None:
        """Return once the last part's events are out: what the sender could not send is sent
        here, in the foreground (a Redis that refuses it raises; a resume publishes them from
        that part). Called before every part is written."""
        if self.outbox_unsent:
            await self.emit()

    async def emit(self, *events: Event, read_control: bool = False) -> Control | None:
        """Publish ``events`` after everything sent in the background, in one round trip; with
        ``read_control``, the gate and the cancel flag come back in the same round trip."""
        self._progress_not_due()  # held-back progress goes in this round trip
        await self._sent()  # what it could not send stays in the backlog, sent below
        publisher = self.deps.publisher
        async with self.deps.redis.pipeline(transaction=False) as pipe:
            for event in [*self.backlog, *events]:
                publisher.add(pipe, stream_for(type(event)).name, event)
            if read_control:
                queue_control(pipe, user_id=self.context.user_id, build_id=self.context.build_id)
            replies = await pipe.execute()
        self.backlog = []
        self.outbox_unsent = False
        return parse_control(replies[-2], replies[-1]) if read_control else None

    async def checkpoint(self, kind: str, parts: dict[str, Any]) -> int:
        """Append a part under the lease's generation: a drive whose build a newer generation
        has claimed raises :class:`LeaseLost` here and writes nothing (see :func:`drive`)."""
        await self.published()
        return await self.deps.checkpoints.append(
            self.state, generation=self.lease.generation, kind=kind, parts=parts
        )

    async def on_usage(
        self, model: str, usage: TokenUsage, request_id: str | None, outcome: UsageOutcome
    ) -> None:
        # The call that makes the next turn goes out through that turn's checkpoint, under an
        # id the turn determines (a resume that publishes it again is absorbed); a call that
        # broke off is metered at once, under an id of its own.
        ok = outcome is UsageOutcome.OK
        event = BudgetUsage(
            **follow_up(
                self.context,
                producer=PRODUCER,
                kind=f"usage:{self.state.iteration + 1}" if ok else None,
            ),
            model=model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_creation_input_tokens=usage.cache_creation_input_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
            request_id=request_id,
            outcome=outcome,
        )
        if not ok:
            await self.deps.publisher.emit(event)
            return
        self.state.input_tokens += usage.prompt_tokens
        self.state.output_tokens += usage.output_tokens
        for kind, count in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_write", usage.cache_creation_input_tokens),
            ("cache_read", usage.cache_read_input_tokens),
        ):
            MODEL_TOKENS.labels(model, kind).inc(count)
        # Written with the turn's checkpoint and sent with the iteration's events after it.
        self.pending_usage = event

    # -- the loop --------------------------------------------------------------------------

    async def loop(self) -> DriveResult:
        control = await read_control(
            self.deps.redis, user_id=self.context.user_id, build_id=self.context.build_id
        )
        while True:
            stop = await self.before_iteration(control)
            if stop is not None:
                return stop
            reply = await self.think()
            if not isinstance(reply, ModelReply):
                return reply
            ended = await self.turn(reply.message, reply.usage)
            if isinstance(ended, Outcome):
                return ended
            control = ended

    async def before_iteration(self, control: Control) -> DriveResult | None:
        """How the drive ends before the next model call, if it does: the runner shutting down
        (handed back), a lost lease (raised), else what :func:`decide` says (a cancel, a sleep,
        a limit). None: go on, after compacting the conversation when it says so."""
        state = self.state
        if self.deps.stopping.is_set():
            # Between iterations: every finished turn is checkpointed, nothing is lost.
            return HandedBack(HandBackReason.SHUTDOWN, "the runner is shutting down")
        self.lease.check()
        action = decide(
            control,
            tool_calls=state.tool_calls,
            started_at=state.started_at,
            prompt_tokens=state.prompt_tokens,
            now=self.deps.clock(),
            limits=self.limits,
        )
        if isinstance(action, Cancel):
            return await self.cancelled()
        if isinstance(action, Sleep):
            return await self.sleep(action.resets_at)
        if isinstance(action, Fail):
            return await self.fail(action.reason)
        if action.compact:
            await self.compact()
        return None

    async def think(self) -> ModelReply | DriveResult:
        """The iteration's model call; how the drive ends instead when the model refuses the
        request (the build fails) or stays unavailable (the build is handed back)."""
        settings = self.deps.settings
        cached = settings.prompt_caching
        try:
            return await self.deps.model.complete(
                model=self.state.model,
                system=self.system,
                tools=CACHED_TOOLS if cached else TOOL_DEFINITIONS,
                messages=request_messages(self.state.messages) if cached else self.state.messages,
                max_tokens=settings.max_tokens,
                build_id=self.context.build_id,
                on_usage=self.on_usage,
            )
        except ModelRejected as exc:
            return await self.fail(str(exc))  # a 4xx: asked again, it would refuse again
        except ModelUnavailable as exc:
            # Its retries are spent (model.py): not the build's fault, and maybe not for long.
            # A later attempt makes this call again, from the last checkpoint.
            return HandedBack(HandBackReason.MODEL_UNAVAILABLE, str(exc))

    async def turn(self, assistant: dict[str, Any], usage: TokenUsage) -> Outcome | Control:
        """One assistant turn: its tools run in order, what :func:`after_turn` decided recorded
        (a checkpoint, then the turn's events) and carried out. Returns how the build ended, or
        the gate and cancel flag for the next iteration."""
        iteration = self.state.iteration + 1
        content = assistant["content"]
        uses = [b for b in content if b.get("type") == "tool_use"]
        results: list[dict[str, Any]] = []
        calls: list[ToolCall] = []
        for use in uses:
            result, call = await self.run_tool(use, iteration)
            results.append(result)
            calls.append(call)
        outcome = after_turn(
            calls=calls,
            texts=[b.get("text", "") for b in content if b.get("type") == "text"],
            tool_calls_before=self.state.tool_calls,
            stuck=self.state.stuck,
            limits=self.limits,
        )
        events, parts = self.record(assistant, results, outcome, iteration, usage)
        self.pending_usage = None
        if outcome.end is None:
            control = await self.write_turn(parts)
            self.publish_outbox(events)
            return control
        await self.checkpoint("turn", parts)
        await self.emit(*events)
        if isinstance(outcome.end, Complete):
            return await self.complete(outcome.end.summary)
        return await self.fail(outcome.end.reason)

    async def write_turn(self, parts: dict[str, Any]) -> Control:
        """Write the turn's checkpoint while the tool progress still held back goes out and the
        gate and cancel flag are read for the next iteration: two servers, one wait. The turn's
        own events follow the commit (:meth:`publish_outbox`); a failure of either raises, the
        checkpoint's first (a lost lease)."""
        await self.published()  # before the read below: one emit at a time
        reading = asyncio.ensure_future(self.emit(read_control=True))
        try:
            await self.checkpoint("turn", parts)
        except BaseException:
            # The drive stops here; the read is of no use now. Cancelling it leaves the sender it
            # may wait for alone (``_sent``), so held-back progress still goes out (``settled``).
            reading.cancel()
            await asyncio.wait((reading,))
            if not reading.cancelled():
                reading.exception()  # retrieved: the checkpoint's error is the one raised
            raise
        control = await reading
        assert control is not None
        return control

    async def run_tool(
        self, use: dict[str, Any], iteration: int
    ) -> tuple[dict[str, Any], ToolCall]:
        """Run one requested tool, its progress published in the background: the
        ``tool_result`` block for the model, and the call as the domain sees it. With tracing
        on, in a span ``execute_tool <name>`` (the tool's name and call id, the outcome, the
        duration; never its input or output), which its two events are made under."""
        with tracing.span(
            f"execute_tool {use['name']}",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": use["name"],
                "gen_ai.tool.call.id": use["id"],
                "cofounder.build_id": self.context.build_id,
                "cofounder.iteration": iteration,
            },
        ) as span:
            return await self._run_tool(use, iteration, span)

    async def _run_tool(
        self, use: dict[str, Any], iteration: int, span: tracing.Span
    ) -> tuple[dict[str, Any], ToolCall]:
        # Never two runners in one sandbox: a lease lost during the model call (or a tool
        # before this one) stops the drive before the tool, not at the turn's checkpoint.
        self.lease.check()
        # The lease generation is in the tool events' ids: a turn run again after a crash runs
        # its tools again (another occurrence, maybe another output), under the same tool_use
        # ids when the model repeats itself.
        generation = self.lease.generation
        self.emit_soon(
            ToolCalled(
                **self._tool_envelope(use, "called", generation),
                iteration=iteration,
                tool_use_id=use["id"],
                name=use["name"],
                input_preview=tool_input_preview(use.get("input")),
            )
        )
        started = time.perf_counter()
        try:
            # Stopped the moment the lease is lost: what it started in the sandbox is killed.
            result: ToolOutcome = await self.lease.guard(
                self.dispatcher.run(use["name"], use.get("input"))
            )
        except SandboxGone as exc:
            # Not the model's doing, nor a tool's: the drive is handed back (``drive``), the
            # consumer drives the build again, and that drive starts a new sandbox holding the
            # latest snapshot (``_open_sandbox``), resuming from the last checkpoint.
            raise SandboxGone(f"during {use['name']}: {exc}") from exc
        duration_ms = int((time.perf_counter() - started) * 1000)
        TOOL_CALLS.labels(use["name"], "error" if result.is_error else "ok").inc()
        if span.is_recording():
            span.set_attributes(
                {
                    "cofounder.tool.is_error": result.is_error,
                    "cofounder.tool.duration_ms": duration_ms,
                }
            )
        self.emit_soon(
            ToolCompleted(
                **self._tool_envelope(use, "completed", generation),
                iteration=iteration,
                tool_use_id=use["id"],
                name=use["name"],
                is_error=result.is_error,
                duration_ms=duration_ms,
                output_preview=result.preview(_PREVIEW),
            )
        )
        if result.image is not None:
            await self._keep_screenshot(use, iteration, result, generation)
        call = ToolCall(use["name"], use.get("input"), result.is_error, result.finished)
        return result.result_block(use["id"]), call

    def _tool_envelope(self, use: dict[str, Any], step: str, generation: int) -> Envelope:
        """The envelope of a tool use's ``step`` event (``called``, ``completed``,
        ``screenshot``): its id derived from the use's id and the lease generation."""
        return follow_up(
            self.context, producer=PRODUCER, kind=f"tool:{use['id']}:{step}:{generation}"
        )

    async def _keep_screenshot(
        self, use: dict[str, Any], iteration: int, result: ToolOutcome, generation: int
    ) -> None:
        """Store the screenshot and say where (``agent.screenshot_taken``). A store that fails
        costs the founder the picture, not the build: the model has already seen it."""
        store, image = self.deps.screenshots, result.image
        if store is None or image is None:
            return
        name = screenshot_name(iteration, use["id"])
        try:
            ref = await store.put(self.context.build_id, name, image.data)
        except StoreError as exc:
            self.log.warning("screenshot not stored", store=store.description, error=str(exc))
            return
        self.emit_soon(
            ScreenshotTaken(
                **self._tool_envelope(use, "screenshot", generation),
                iteration=iteration,
                tool_use_id=use["id"],
                name=name,
                url=ref.url,
                expires_at=ref.expires_at,
                page_url=result.image_of or "",
                width=image.width,
                height=image.height,
                bytes=len(image.data),
            )
        )

    def record(
        self,
        assistant: dict[str, Any],
        results: list[dict[str, Any]],
        outcome: TurnOutcome,
        iteration: int,
        usage: TokenUsage,
    ) -> tuple[list[Event], dict[str, Any]]:
        """Apply the turn to the run's state; return its events and the parts of its checkpoint.

        The events are written in the checkpoint's row (one transaction: the outbox) and
        published after it; a runner that dies in between publishes them on resume."""
        state = self.state
        state.tool_calls = outcome.tool_calls
        state.stuck = outcome.stuck
        if self.dispatcher.preview_url:
            state.preview_url = self.dispatcher.preview_url
        new: list[dict[str, Any]] = [*self.unsaved, assistant]
        self.unsaved = []
        if results:
            nudge = [{"type": "text", "text": outcome.nudge}] if outcome.nudge else []
            new.append({"role": "user", "content": [*results, *nudge]})
        state.messages.extend(new)
        state.iteration = iteration
        ITERATIONS.inc()
        state.prompt_tokens = usage.prompt_tokens + usage.output_tokens
        events = self.turn_events(iteration, usage, snapshot_due=outcome.snapshot_due)
        parts = {
            "messages": new,
            "preview_url": state.preview_url,
            "stuck": state.stuck.to_parts(),
            "prompt_tokens": state.prompt_tokens,
            "events": [msgspec.to_builtins(e) for e in events],
        }
        return events, parts

    def turn_events(self, iteration: int, usage: TokenUsage, *, snapshot_due: bool) -> list[Event]:
        """The turn's usage (of the model call that made it), its ``agent.iteration_completed``
        and, when due, a periodic ``snapshot.requested``."""
        state = self.state
        events: list[Event] = [
            *([self.pending_usage] if self.pending_usage is not None else []),
            AgentIterationCompleted(
                **follow_up(self.context, producer=PRODUCER, kind=f"iteration:{iteration}"),
                iteration=iteration,
                tool_calls=state.tool_calls,
                input_tokens=usage.prompt_tokens,
                output_tokens=usage.output_tokens,
                checkpoint_seq=state.seq + 1,  # the row the turn's checkpoint writes
            ),
        ]
        if snapshot_due:
            events.append(
                self.snapshot_request(SnapshotReason.PERIODIC, f"snapshot:{state.tool_calls}")
            )
        return events

    async def compact(self) -> None:
        compacted = compact(self.state.messages)
        if compacted is None:
            return
        self.log.info(
            "compacting the conversation", before=len(self.state.messages), after=len(compacted)
        )
        self.state.messages = compacted
        self.state.prompt_tokens = 0
        await self.checkpoint("compaction", {"messages": compacted})
        self.unsaved = []  # in the kept tail, now written

    def snapshot_request(self, reason: SnapshotReason, kind: str) -> SnapshotRequested:
        return SnapshotRequested(
            **follow_up(self.context, producer=PRODUCER, kind=kind),
            sandbox_kind=SandboxKind(self.sandbox.kind),
            sandbox_id=self.sandbox.id,
            reason=reason,
            tool_calls=self.state.tool_calls,
        )

    # -- endings ---------------------------------------------------------------------------

    async def complete(self, summary: str) -> Outcome:
        context = self.context
        state = self.state
        request = self.snapshot_request(SnapshotReason.FINAL, "snapshot:final")
        await self.emit(request)
        version = await assign_build_version(
            self.deps.engine, project_id=context.project_id, build_id=context.build_id
        )
        done = BuildCompleted(
            **follow_up(context, producer=PRODUCER, kind="completed"),
            build_version=version,
            preview_url=state.preview_url,
            summary=summary[:2000],
            iterations=state.iteration,
            tool_calls=state.tool_calls,
        )
        await self.checkpoint(
            "end",
            {
                "outcome": "completed",
                "event": msgspec.to_builtins(done),
                "snapshot": msgspec.to_builtins(request),
            },
        )
        await self.emit(done)
        self.log.info("build completed", version=version, preview_url=state.preview_url)
        await post_build(self.deps, done)
        await self.after_build()
        return Outcome.COMPLETED

    async def after_build(self) -> None:
        """The completed build's sandbox, and the preview in it: kept, paused or killed
        (``SANDBOX_AFTER_BUILD``). The final snapshot was asked for before the end event; the
        snapshot service reads a local sandbox's folder, which a kill leaves in place."""
        policy = self.deps.settings.after_build
        await self.dispatcher.close()
        if policy == "kill":
            await _quietly(self.sandbox.kill(), "killing the sandbox", self.log)
        elif policy == "pause":
            await _quietly(self.sandbox.pause(), "pausing the sandbox", self.log)

    async def fail(self, reason: str) -> Outcome:
        failed = BuildFailed(
            **follow_up(self.context, producer=PRODUCER, kind="failed"), reason=reason[:2000]
        )
        await self.checkpoint("end", {"outcome": "failed", "event": msgspec.to_builtins(failed)})
        await self.emit(failed)
        self.log.warning("build failed", reason=reason)
        await _quietly(self.sandbox.kill(), "killing the sandbox", self.log)
        return Outcome.FAILED

    async def cancelled(self) -> Outcome:
        event = BuildStatusChanged(
            **follow_up(self.context, producer=PRODUCER, kind="cancelled"),
            status=BuildStatus.CANCELLED,
            reason="cancelled by the user",
        )
        await self.checkpoint("end", {"outcome": "cancelled", "event": msgspec.to_builtins(event)})
        await self.emit(event)
        await _quietly(self.sandbox.kill(), "killing the sandbox", self.log)
        self.log.info("build cancelled")
        return Outcome.CANCELLED

    async def sleep(self, resets_at: datetime) -> Outcome:
        seq = self.state.seq + 1  # the row written just below
        event = AgentSleeping(
            **follow_up(self.context, producer=PRODUCER, kind=f"sleeping:{seq}"),
            resets_at=resets_at,
            checkpoint_seq=seq,
        )
        parts: dict[str, Any] = {
            "resets_at": resets_at.isoformat(),
            "event": msgspec.to_builtins(event),
        }
        if self.unsaved:  # the wake reconnects the sandbox they speak of: keep them
            parts["messages"], self.unsaved = self.unsaved, []
        await self.checkpoint("sleep", parts)
        await self.dispatcher.close()
        await self.sandbox.pause()
        await self.emit(event)
        self.log.info("budget spent; build asleep", resets_at=resets_at.isoformat())
        return Outcome.SLEEPING


async def _quietly(awaitable: Any, doing: str, log: Any) -> None:
    try:
        await awaitable
    except Exception as exc:  # noqa: BLE001 - best effort, logged
        log.warning(f"failed {doing}", error=repr(exc))


async def post_build(deps: RunnerDeps, done: BuildCompleted) -> None:
    """The "MVP built" transition and the business event: logged when they fail, never fatal."""
    log = _log.bind(build_id=done.build_id)
    try:
        if not await mark_mvp_built(deps.engine, project_id=done.project_id):
            log.warning("MVP-built transition skipped: no such project", project_id=done.project_id)
    except Exception as exc:  # noqa: BLE001
        log.warning("MVP-built transition failed", error=repr(exc))
    try:
        await deps.publisher.emit(
            ArtifactGenerated(
                **follow_up(done, producer=PRODUCER, kind="artifact_generated"),
                build_version=done.build_version,
                preview_url=done.preview_url,
            )
        )
    except Exception as exc:  # noqa: BLE001
        log.warning("artifact_generated business event failed", error=repr(exc))


# -- the entry point -----------------------------------------------------------------------


async def _open_sandbox(
    deps: RunnerDeps, state: RunState, log: Any
) -> tuple[Sandbox, dict[str, Any] | None]:
    """The build's sandbox: reconnected, or a new one when it has none or it is gone. A new one
    that replaces a lost one gets the latest snapshot, and comes with a note for the model that
    says what it holds (:func:`~cofounder_agent_runner.prompt.sandbox_replaced`)."""
    if state.sandbox_id and state.sandbox_kind == deps.sandboxes.kind:
        try:
            return await deps.sandboxes.connect(state.sandbox_id), None
        except SandboxGone as exc:
            log.warning("the sandbox is gone; starting a new one", reason=str(exc))
    sandbox = await deps.sandboxes.create(
        build_id=state.context.build_id,
        metadata={
            "build_id": state.context.build_id,
            "project_id": state.context.project_id,
            "tier": state.context.tier,  # the local sandbox's limits are per tier
        },
    )
    if not state.sandbox_id:
        return sandbox, None  # the build's first
    manifest = None
    failed = False
    if deps.snapshots is not None:
        context = state.context
        try:
            manifest = await restore(
                deps.snapshots, sandbox, project_id=context.project_id, build_id=context.build_id
            )
        except (StoreError, OSError) as exc:
            failed = True
            log.warning("could not restore the latest snapshot", error=str(exc))
        except BaseException:
            await asyncio.shield(_drop_unnamed(sandbox, log))  # no part will name it
            raise
        else:
            if manifest is None:
                log.warning("no snapshot to restore into the new sandbox")
            else:
                log.info("restored the latest snapshot", version=manifest.version)
    return sandbox, sandbox_replaced(manifest, restore_failed=failed)


async def _drop_unnamed(sandbox: Sandbox, log: Any) -> None:
    """Kill a new sandbox that no part names: the drive that made it (a build's first, or a
    replacement) ended (handed back, failed, cancelled) before writing one, so the next drive
    will not know it and makes its own.
    Left alone, each such drive would leave one behind, until its own timeout (an hour on E2B).
    A runner killed at that moment still leaves it to that timeout."""
    log.info("killing the replacement sandbox no checkpoint names", sandbox_id=sandbox.id)
    try:
        await sandbox.kill()
    except Exception as exc:  # noqa: BLE001 - best effort: its timeout ends it otherwise
        log.warning("could not kill the unnamed sandbox", sandbox_id=sandbox.id, error=str(exc))


def _lease(deps: RunnerDeps, build_id: str) -> Lease:
    """A lease of the build for one drive of this runner (its owner names both)."""
    return Lease(
        deps.redis,
        build_id=build_id,
        owner=f"{deps.runner_name}:{time.monotonic_ns()}",
        ttl_ms=deps.settings.lease_ttl_ms,
    )


async def _wait_for_lease(deps: RunnerDeps, lease: Lease, log: Any) -> bool:
    """Take the build's lease, waiting while another holds it, and claim the build's
    checkpoints for its generation; never give the entry up. False, the lease not taken, when
    the runner starts shutting down meanwhile.

    Its generation is above the highest one claimed or written, read before each attempt:
    Redis may have forgotten the counter (see ``lease.py``), and a holder waited for may have
    claimed a newer generation meanwhile. The claim is what fences the previous holder out (see
    ``checkpoints.py``); a claim that finds a newer one lets the lease go and tries again.

    The entry that brought us here is only acked when this drive returns, so giving up on a
    busy lease would lose the work if the holder is dead: a runner restarted under its own
    consumer name re-reads its pending entries at once, while the lease of its previous
    incarnation still has up to ``LEASE_TTL_MS`` to live. A dead holder's lease expires within
    the TTL (nobody renews it); a live holder ends, sleeps or hands the build back, and this
    drive then finds the build in that state (ended: nothing to do). Meanwhile the consumer
    keeps the entry pending and heart-beaten, as for any running handler. See ADR 0005.
    """
    period = max(deps.settings.lease_ttl_ms / 4000, 0.05)
    waited = False
    while True:
        try:
            floor = await deps.checkpoints.latest_generation(lease.build_id)
            generation = await lease.acquire(floor=floor)
        except LeaseBusy as exc:
            if deps.stopping.is_set():
                return False
            if not waited:
                log.info("the build's lease is held; waiting for it", holder=str(exc))
                waited = True
            await asyncio.sleep(period)
            continue
        try:
            await deps.checkpoints.claim(lease.build_id, generation)
        except LeaseLost as exc:
            log.warning(
                "a newer drive claimed the build first; taking the lease again", error=str(exc)
            )
            await lease.release()
            continue
        except BaseException:
            # PostgreSQL unreachable, or cancelled: the next attempt must not wait out a lease
            # that this one holds and will never use.
            await lease.release()
            raise
        if waited:
            log.info("took the build's lease after waiting")
        return True


async def _drive(
    deps: RunnerDeps, *, build_id: str, context: ContextReady | None, reason: str, log: Any
) -> DriveResult:
    """The body of :func:`drive`."""
    lease = _lease(deps, build_id)
    if not await _wait_for_lease(deps, lease, log):
        return HandedBack(
            HandBackReason.SHUTDOWN, "the runner is shutting down (waiting for the build's lease)"
        )
    async with lease.kept_alive():
        state = await deps.checkpoints.load(build_id)
        fresh = state is None
        if state is None:
            started = await _new_state(deps, context, log)
            if isinstance(started, Outcome):
                return started
            state = started
        elif state.ended is not None:
            await _end_again(deps, state.ended, log)
            return Outcome.DUPLICATE
        elif reason == "start" and state.last_kind == "sleep":
            await _stay_asleep(deps, state, log)
            return Outcome.DUPLICATE
        run, replaced = await _open_run(deps, state, lease, fresh=fresh, log=log)
        named_at = state.seq  # a replacement sandbox is named by the next part written
        try:
            if fresh:
                await run.emit(
                    BuildStatusChanged(
                        **follow_up(state.context, producer=PRODUCER, kind="status:running"),
                        status=BuildStatus.RUNNING,
                    )
                )
            elif reason != "cancel":
                await _resume(run, reason)
                if replaced is not None:
                    log.warning("resuming in a new sandbox (from the latest snapshot, if any)")
                    run.tell(replaced)
            log.info("driving build", reason=reason, iteration=state.iteration, model=state.model)
            return await run.loop()
        finally:
            with contextlib.suppress(Exception):
                await run.settled()  # progress events of an unfinished turn: best effort
            await run.dispatcher.close()
            if replaced is not None and state.seq == named_at:
                await _drop_unnamed(run.sandbox, log)


async def _new_state(
    deps: RunnerDeps, context: ContextReady | None, log: Any
) -> RunState | Outcome:
    """The state of a build's first drive, or how it settles without one: a wake for a build
    that never started (nothing to do), a tier or suspension that refuses it (it fails)."""
    if context is None:
        log.warning("wake for a build that never started; nothing to resume")
        return Outcome.DUPLICATE
    try:
        model = resolve_model(
            deps.settings.model_map,
            tier=context.tier,
            suspended=context.suspended,
            suspension_reason=context.suspension_reason,
        )
    except (BuildBlocked, UnknownTier) as exc:
        failed = BuildFailed(
            **follow_up(context, producer=PRODUCER, kind="failed"), reason=str(exc)
        )
        await deps.publisher.emit(failed)
        log.warning("build refused", reason=str(exc))
        return Outcome.FAILED
    return RunState(
        context=context, model=model, messages=[first_message(context)], started_at=deps.clock()
    )


async def _open_run(
    deps: RunnerDeps, state: RunState, lease: Lease, *, fresh: bool, log: Any
) -> tuple[_Run, dict[str, Any] | None]:
    """The drive's run: its sandbox opened (with the note for the model when it replaces a
    lost one), and for a fresh run the ``start`` checkpoint written."""
    sandbox, replaced = await _open_sandbox(deps, state, log)
    state.sandbox_kind = str(sandbox.kind)
    state.sandbox_id = sandbox.id
    if fresh:
        try:
            await deps.checkpoints.append(
                state,
                generation=lease.generation,
                kind="start",
                parts={
                    "context": msgspec.to_builtins(state.context),
                    "model": state.model,
                    "messages": state.messages,
                },
            )
        except BaseException:
            # Not named: the next drive starts afresh, with a sandbox of its own.
            await asyncio.shield(_drop_unnamed(sandbox, log))
            raise
    run = _Run(
        deps=deps,
        state=state,
        lease=lease,
        sandbox=sandbox,
        dispatcher=ToolDispatcher(
            sandbox,
            bash_timeout_s=deps.settings.bash_timeout_s,
            screenshot_max_bytes=deps.settings.screenshot_max_bytes,
        ),
        system=system_blocks(system_prompt(state.context), cached=deps.settings.prompt_caching),
        log=log,
        limits=_limits(deps.settings, state.context.tier),
    )
    return run, replaced


async def _end_again(deps: RunnerDeps, ended: dict[str, Any], log: Any) -> None:
    """A build that ended before a crash let its end event out, or a late duplicate (a work
    entry waited for the lease of the drive that ended it): say its end again, under its id."""
    log.info("build already ended; re-emitting its end", outcome=ended.get("outcome"))
    event_type = {"completed": BuildCompleted, "failed": BuildFailed}.get(
        ended.get("outcome", ""), BuildStatusChanged
    )
    event = msgspec.convert(ended["event"], type=event_type)
    await deps.publisher.emit(event)
    if isinstance(event, BuildCompleted):
        await post_build(deps, event)


async def _stay_asleep(deps: RunnerDeps, state: RunState, log: Any) -> None:
    """A ``context.ready`` for an asleep build: a stale duplicate, or one a reconciler published
    again after Redis lost data. Only a ``budget.wake`` resumes a sleep, once the budget allows
    (a cancel ends it): this one leaves the build as it is (its sandbox paused, no new part) and
    says the sleep again, under its id, since a crash after its checkpoint may have lost it."""
    log.info("context.ready for an asleep build; it stays asleep", checkpoint_seq=state.seq)
    slept = (state.asleep or {}).get("event")
    if slept is not None:  # parts written before sleeps held their event have none
        await deps.publisher.emit(from_stored(slept))


async def _resume(run: _Run, reason: str) -> None:
    """Pick a run up where its checkpoints end: publish what its last turn wrote (its runner
    may have died before the events went out), count the model call made again, say so."""
    state = run.state
    if state.outbox:
        await run.emit(*(from_stored(e) for e in state.outbox))
    if state.last_kind in ("start", "turn", "compaction"):
        # It was mid-run: the model call in flight when its runner died is made again. That
        # call's usage was never published: the founder is charged for the repeat only.
        MODEL_CALLS_REPEATED.inc()
    await run.emit(
        AgentResumed(
            **follow_up(state.context, producer=PRODUCER, kind=f"resumed:{run.lease.generation}"),
            checkpoint_seq=state.seq,
            reason="recovered" if reason == "start" else reason,
        )
    )


async def give_up(deps: RunnerDeps, event: Event, error: str, deliveries: int) -> None:
    """The build's work entry is about to be dead-lettered (handed back or failing too often):
    end the build as failed, unless it has ended, so that it never stays ``running`` holding
    its plan slot. Its end is checkpointed (a late redelivery re-emits it), ``build.failed``
    says why, and its sandbox is killed.

    Raises to keep the entry pending, decided again at its next delivery (the consumer's
    ``on_give_up`` contract): :class:`HandBack` while the runner is shutting down, since a
    shutdown says nothing about the build (a drive handed back by it on the entry's last
    delivery would otherwise fail a healthy build), and :class:`LeaseLost` when another drive
    wrote meanwhile."""
    build_id = event.build_id
    log = _log.bind(build_id=build_id, runner=deps.runner_name)
    shutdown = HandedBack(
        HandBackReason.SHUTDOWN, "the runner is shutting down; the build is not given up"
    )
    if deps.stopping.is_set():
        raise HandBack(shutdown)
    lease = _lease(deps, build_id)
    if not await _wait_for_lease(deps, lease, log):
        raise HandBack(shutdown)
    async with lease.kept_alive():
        state = await deps.checkpoints.load(build_id)
        if state is not None and state.ended is not None:
            return  # it ended meanwhile: the dead letter is only a record
        reason = (
            f"the build was given up after {deliveries} attempts to drive it; last error: {error}"
        )[:2000]
        context = state.context if state is not None else event
        failed = BuildFailed(
            **envelope(
                build_id=build_id,
                project_id=context.project_id,
                user_id=context.user_id,
                producer=PRODUCER,
                causation_id=event.event_id,
                trace=context.trace,
                kind="failed",  # derived from the build's context.ready, else from the cause
                derive_from=context.event_id if isinstance(context, ContextReady) else None,
            ),
            reason=reason,
        )
        if state is not None:
            await deps.checkpoints.append(
                state,
                generation=lease.generation,
                kind="end",
                parts={"outcome": "failed", "event": msgspec.to_builtins(failed)},
            )
        await deps.publisher.emit(failed)
        log.error("build given up", reason=reason)
        BUILDS_ENDED.labels("given_up").inc()
        if state is not None and state.sandbox_id and state.sandbox_kind == deps.sandboxes.kind:
            try:
                sandbox = await deps.sandboxes.connect(state.sandbox_id)
            except SandboxGone:
                return
            await _quietly(sandbox.kill(), "killing the sandbox", log)


async def drive(
    deps: RunnerDeps, *, build_id: str, context: ContextReady | None, reason: str
) -> DriveResult:
    """Drive ``build_id`` until it ends, sleeps or is handed back (see the module docstring).

    ``context`` is the ``context.ready`` event for a start; None for a wake, which resumes from
    the checkpoints alone.

    Returns an :class:`Outcome` when the build is settled for this work entry, a
    :class:`HandedBack` when the drive stopped without settling it; the caller must then leave
    the entry pending (``handlers.py`` raises :class:`HandBack`). The four hand-backs are
    values here, each made in one place: a shutdown where the loop checks for it (and while
    waiting for the lease), an unavailable model beside the model call, and a lost lease and a
    vanished sandbox below. Anything else that escapes (PostgreSQL or Redis down, a bug) is an
    error, which the consumer retries likewise.
    """
    log = _log.bind(build_id=build_id, runner=deps.runner_name)
    BUILDS_ACTIVE.inc()
    try:
        result = await _drive(deps, build_id=build_id, context=context, reason=reason, log=log)
    except LeaseLost as exc:
        # Raised by any checkpoint (the generation fence: a successor has claimed the build), deep
        # in a turn, compaction or ending: unwinding at once is the point, since this drive
        # must write nothing more. Its lease is released only if still ours (``kept_alive``).
        result = HandedBack(HandBackReason.LEASE_LOST, str(exc))
    except SandboxGone as exc:
        # Under a tool (``run_tool``) or a pause: the build goes on in a new sandbox.
        result = HandedBack(HandBackReason.SANDBOX_GONE, str(exc))
    finally:
        BUILDS_ACTIVE.dec()
    if isinstance(result, HandedBack):
        log.warning("build handed back", reason=str(result.reason), detail=result.detail)
        BUILDS_ENDED.labels(str(result.reason)).inc()
    else:
        BUILDS_ENDED.labels(str(result)).inc()
    return result
