"""When a turn's events go out: after its checkpoint, while the next model call is made, and
always before the next part is written (that part replaces the turn's row as the outbox a
resume publishes again). Real Redis and PostgreSQL; the client's pipeline is wrapped to hold or
refuse the round trip that carries the first turn's ``agent.iteration_completed``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import select

from cofounder_agent_runner.checkpoints import CheckpointStore
from cofounder_agent_runner.loop import HandBackReason, HandedBack, Outcome, drive
from cofounder_agent_runner.model import ModelClient
from cofounder_agent_runner.testing import Harness, context_ready
from cofounder_agent_runner.tools.dispatcher import ToolDispatcher
from cofounder_contracts import AgentIterationCompleted, ToolCalled
from cofounder_db.models import AgentCheckpoint
from cofounder_scripted_model.process import ScriptedModel
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration


def _carries(pipe: Pipeline, event_type: bytes, iteration: int) -> bool:
    """Whether ``pipe`` holds the ``XADD`` of an ``event_type`` event of ``iteration``."""
    marker = b'"iteration":%d,' % iteration
    return any(
        args[0] == "XADD"
        and event_type in args
        and any(isinstance(a, bytes) and marker in a for a in args)
        for args, _ in pipe.command_stack
    )


def _wrap_pipelines(
    monkeypatch: pytest.MonkeyPatch,
    before: Callable[[], Awaitable[None]],
    event_type: bytes = b"agent.iteration_completed",
    iteration: int = 1,
) -> None:
    """Run ``before`` ahead of every round trip that carries an ``event_type`` event of
    ``iteration`` (by default: the first turn's events)."""
    original = Pipeline.execute

    async def execute(self: Pipeline, raise_on_error: bool = True) -> list[Any]:
        if _carries(self, event_type, iteration):
            await before()
        return await original(self, raise_on_error)

    monkeypatch.setattr(Pipeline, "execute", execute)


async def _turn_parts(harness: Harness, build_id: str) -> int:
    async with harness.deps.engine.connect() as conn:
        kinds = (
            await conn.execute(
                select(AgentCheckpoint.kind).where(AgentCheckpoint.build_id == build_id)
            )
        ).scalars()
        return sum(1 for kind in kinds if kind == "turn")


async def test_the_next_model_call_does_not_wait_for_the_turn_s_events(
    harness: Harness, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first turn's events are held in Redis's round trip until a model call in flight
    # sees them held. A loop that waited for them before calling the model would call only
    # after the hold gave up (five seconds), and no call would ever see them held.
    scripted.latency(300)  # a model call outlasts the few steps the send takes to start
    holding = asyncio.Event()
    released = asyncio.Event()
    overlapped: list[bool] = []

    async def hold() -> None:
        if released.is_set():
            return
        holding.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await released.wait()
        holding.clear()

    complete = ModelClient.complete

    async def noting_complete(self: ModelClient, **kwargs: Any) -> Any:
        call = asyncio.ensure_future(complete(self, **kwargs))
        held = asyncio.ensure_future(holding.wait())
        await asyncio.wait({call, held}, return_when=asyncio.FIRST_COMPLETED)
        held.cancel()
        if holding.is_set() and not call.done():
            overlapped.append(True)
            released.set()
        return await call

    _wrap_pipelines(monkeypatch, hold)
    monkeypatch.setattr(ModelClient, "complete", noting_complete)
    context = context_ready()
    await harness.seed_project(context)

    outcome = await drive(harness.deps, build_id=context.build_id, context=context, reason="start")

    assert outcome is Outcome.COMPLETED
    assert overlapped == [True], "the second model call waited for the first turn's events"
    # Published late, they still come first: the second turn's tool progress follows them.
    events = await harness.events(context.build_id)
    first_done = next(i for i, e in enumerate(events) if isinstance(e, AgentIterationCompleted))
    second_tool = next(
        i for i, e in enumerate(events) if isinstance(e, ToolCalled) and e.iteration == 2
    )
    assert first_done < second_tool
    iterations = [e.iteration for e in events if isinstance(e, AgentIterationCompleted)]
    assert iterations == list(range(1, len(iterations) + 1))


async def test_a_redis_blip_under_the_model_call_is_sent_again_before_the_next_part(
    harness: Harness, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The background send of the first turn's events fails once: they are sent again, in the
    # foreground, before the second turn's checkpoint, and the build goes on.
    refused: list[int] = []

    async def refuse_once() -> None:
        if not refused:
            refused.append(1)
            raise RedisConnectionError("Redis went away for a moment")

    _wrap_pipelines(monkeypatch, refuse_once)
    context = context_ready()
    out_before_next_part: list[bool] = []
    append = CheckpointStore.append

    async def noting_append(self: CheckpointStore, state: Any, **kwargs: Any) -> int:
        if refused and not out_before_next_part:  # the first part after the refusal
            events = await harness.events(context.build_id)
            out_before_next_part.append(
                any(isinstance(e, AgentIterationCompleted) and e.iteration == 1 for e in events)
            )
        return await append(self, state, **kwargs)

    monkeypatch.setattr(CheckpointStore, "append", noting_append)
    await harness.seed_project(context)

    outcome = await drive(harness.deps, build_id=context.build_id, context=context, reason="start")

    assert outcome is Outcome.COMPLETED
    assert refused == [1]
    assert out_before_next_part == [True]
    events = await harness.events(context.build_id)
    iterations = [e.iteration for e in events if isinstance(e, AgentIterationCompleted)]
    assert iterations == list(range(1, len(iterations) + 1))  # once each, in order


async def test_no_part_is_written_while_the_last_turn_s_events_are_not_out(
    harness: Harness, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis refuses the first turn's events in the background and again in the foreground: the
    # drive stops before the second turn's checkpoint (which would replace the outbox holding
    # them), and the next drive publishes them from the first turn's row. A loop that wrote
    # the second part anyway would leave iteration 1 out of the build's events for good.
    refusals: list[int] = []
    down = [True]

    async def refuse_while_down() -> None:
        if down[0]:
            refusals.append(1)
            raise RedisConnectionError("Redis is down")

    _wrap_pipelines(monkeypatch, refuse_while_down)
    context = context_ready()
    await harness.seed_project(context)

    with pytest.raises(RedisConnectionError, match="Redis is down"):
        await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
    down[0] = False

    assert len(refusals) >= 2  # in the background, then in the foreground
    assert await _turn_parts(harness, context.build_id) == 1
    assert not [
        e for e in await harness.events(context.build_id) if isinstance(e, AgentIterationCompleted)
    ]
    outcome = await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
    assert outcome is Outcome.COMPLETED
    events = await harness.events(context.build_id)
    iterations = [e.iteration for e in events if isinstance(e, AgentIterationCompleted)]
    assert iterations == list(range(1, len(iterations) + 1))
    assert iterations[0] == 1


async def test_a_long_tool_s_progress_is_published_while_it_runs(
    harness: Harness, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Progress is held back for a moment (so that a quick tool's two events ride in the turn's
    # round trip), never for the length of the tool: the build page shows a long tool running.
    context = context_ready()
    run = ToolDispatcher.run
    seen_while_running: list[bool] = []

    async def called() -> bool:
        return any(isinstance(e, ToolCalled) for e in await harness.events(context.build_id))

    async def long_run(self: ToolDispatcher, name: str, input_: Any) -> Any:
        if not seen_while_running:  # the first tool runs until its tool.called is out (<= 5 s)
            with contextlib.suppress(AssertionError):
                await eventually(called, what="tool.called", timeout=5, interval=0.02)
            seen_while_running.append(await called())
        return await run(self, name, input_)

    monkeypatch.setattr(ToolDispatcher, "run", long_run)
    await harness.seed_project(context)

    outcome = await drive(harness.deps, build_id=context.build_id, context=context, reason="start")

    assert outcome is Outcome.COMPLETED
    assert seen_while_running == [True]


async def test_a_lost_lease_while_progress_is_being_sent_hands_the_build_back(
    harness: Harness, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second turn's tool outlasts the progress wait, so its tool.called is being sent (held
    # in Redis's round trip) when the turn is written; a successor has claimed the build
    # meanwhile, so the checkpoint raises LeaseLost while the gate read waits behind that send.
    # The drive must hand the build back, not end cancelled (which skips the sandbox's close and
    # leaves the work entry to the janitor): the read is stopped, never the sender.
    scripted.latency(100)  # the first turn's events are out before the second turn's tool
    context = context_ready()
    tools: list[str] = []
    run = ToolDispatcher.run

    async def slow_second_tool(self: ToolDispatcher, name: str, input_: Any) -> Any:
        tools.append(name)
        if len(tools) == 2:
            await harness.deps.checkpoints.claim(context.build_id, 1_000_000)  # a successor
            await asyncio.sleep(0.3)  # past the progress wait: the sender starts
        return await run(self, name, input_)

    async def hold_second_progress() -> None:
        await asyncio.sleep(1.0)

    monkeypatch.setattr(ToolDispatcher, "run", slow_second_tool)
    _wrap_pipelines(monkeypatch, hold_second_progress, b"tool.called", iteration=2)
    await harness.seed_project(context)

    result = await drive(harness.deps, build_id=context.build_id, context=context, reason="start")

    assert isinstance(result, HandedBack), result
    assert result.reason is HandBackReason.LEASE_LOST
    assert await _turn_parts(harness, context.build_id) == 1  # the second turn is not written
    # The held progress still went out (best effort, in order).
    events = await harness.events(context.build_id)
    assert [e.iteration for e in events if isinstance(e, ToolCalled)][:2] == [1, 2]
