"""A drive that stops without settling its build, one test per way (``loop.HandBackReason``), on
real Redis, PostgreSQL, the scripted model server and local sandboxes: the runner shutting
down, the model API unavailable through every retry, the build lease lost. Each is handed back
(``drive`` returns a ``HandedBack``, the handler raises ``HandBack``): no end, the checkpoints
as they were, the work entry pending; and a later drive resumes the build and completes it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from cofounder_agent_runner.bootstrap import build_consumers
from cofounder_agent_runner.handlers import on_context_ready
from cofounder_agent_runner.lease import Lease
from cofounder_agent_runner.loop import (
    HandBack,
    HandBackReason,
    HandedBack,
    Outcome,
    drive,
    give_up,
)
from cofounder_agent_runner.model import ModelReply
from cofounder_agent_runner.testing import Harness, OnSandbox, context_ready
from cofounder_contracts import (
    AgentIterationCompleted,
    AgentResumed,
    BuildCompleted,
    BuildFailed,
    BuildStatus,
    BuildStatusChanged,
    Event,
    ToolCalled,
)
from cofounder_contracts.keys import lease_generation_key, lease_key
from cofounder_contracts.streams import AGENT_RUNNER, AGENT_WORK
from cofounder_db.models import AgentCheckpoint
from cofounder_runtime.consumer import Consumer
from cofounder_runtime.keys import dlq_key
from cofounder_runtime.publisher import Publisher
from cofounder_scripted_model.process import ScriptedModel
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration

#: The model call during which each test makes its trouble: the third (turn 2 of the
#: transcript), two turns into the build.
TROUBLE_AT = 3


def _before_model_call(
    monkeypatch: pytest.MonkeyPatch, harness: Harness, action: Callable[[], Awaitable[None]]
) -> None:
    """Run ``action`` once, as the build's model call number ``TROUBLE_AT`` begins."""
    model = harness.deps.model
    real = model.complete
    calls = 0

    async def complete(**kwargs: Any) -> ModelReply:
        nonlocal calls
        calls += 1
        if calls == TROUBLE_AT:
            await action()
        return await real(**kwargs)

    monkeypatch.setattr(model, "complete", complete)


def _drives(outcome: str) -> float:
    return REGISTRY.get_sample_value("cofounder_runner_drives_total", {"outcome": outcome}) or 0.0


async def _parts(harness: Harness, build_id: str) -> list[tuple[str, int]]:
    """The build's checkpoint rows, in order: (kind, generation)."""
    async with harness.deps.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(AgentCheckpoint.kind, AgentCheckpoint.generation)
                .where(AgentCheckpoint.build_id == build_id)
                .order_by(AgentCheckpoint.seq)
            )
        ).all()
    return [(kind, generation) for kind, generation in rows]


def _ends(events: list[Event]) -> list[Event]:
    """The build's end events: completed, failed, or a terminal status."""
    return [
        e
        for e in events
        if isinstance(e, BuildCompleted | BuildFailed)
        or (isinstance(e, BuildStatusChanged) and e.status is not BuildStatus.RUNNING)
    ]


async def _pending(harness: Harness, entry: bytes) -> list[dict[str, Any]]:
    """The work entry's row in the runner group's pending list (empty once acked)."""
    rows: list[dict[str, Any]] = await harness.redis.xpending_range(
        AGENT_WORK.name, AGENT_RUNNER, min=entry, max=entry, count=1
    )
    return rows


async def _dead_lettered(harness: Harness, event_id: str) -> bool:
    dead: Any = await harness.redis.xrange(dlq_key(AGENT_WORK.name))
    return any(f.get(b"event_id") == event_id.encode() for _, f in dead)


async def _resumed_to_completion(harness: Harness, build_id: str, handed_back_at: int) -> None:
    """The build completed once, resumed once from the checkpoint it was handed back at, with
    every iteration counted once, and one ``end`` part."""
    events = await harness.events(build_id)
    assert [type(e) for e in _ends(events)] == [BuildCompleted]
    resumed = [e for e in events if isinstance(e, AgentResumed)]
    assert [(e.reason, e.checkpoint_seq) for e in resumed] == [("recovered", handed_back_at)]
    # Counted as downstream counts them, once per id: the resume says the events of the last
    # turn again (they may not have gone out), under their ids.
    counted = {e.event_id: e.iteration for e in events if isinstance(e, AgentIterationCompleted)}
    iterations = list(counted.values())
    assert iterations == list(range(1, len(iterations) + 1))
    kinds = [kind for kind, _ in await _parts(harness, build_id)]
    assert kinds.count("end") == 1
    assert kinds[-1] == "end"


def _start(consumers: list[Consumer]) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(c.run()) for c in consumers]


async def _stop(consumers: list[Consumer], tasks: list[asyncio.Task[None]]) -> None:
    for consumer in consumers:
        consumer.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)


async def test_a_shutdown_mid_build_leaves_its_entry_pending_and_the_next_runner_resumes_it(
    harness: Harness, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = context_ready()
    await harness.seed_project(context)
    build = context.build_id
    consumers = build_consumers(harness.settings, harness.deps)

    async def sigterm() -> None:
        # What the runner does on SIGTERM (bootstrap._run): its consumers stop reading, and its
        # drives see ``stopping``. The model call under way finishes and its turn is saved.
        for consumer in consumers:
            consumer.stop()
        harness.deps.stopping.set()

    _before_model_call(monkeypatch, harness, sigterm)
    shutdowns = _drives("shutdown")
    tasks = _start(consumers)
    entry = await Publisher(harness.redis).emit(context)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)  # the consumers have stopped

    assert _drives("shutdown") == shutdowns + 1  # the drive returned a shutdown hand-back
    # Not acked, not dead-lettered: pending for the runner that had it.
    [row] = await _pending(harness, entry)
    assert row["consumer"].decode() == harness.settings.consumer_name
    assert not await _dead_lettered(harness, context.event_id)
    # Not ended; every finished turn saved, nothing after; the lease given back.
    assert _ends(await harness.events(build)) == []
    parts = await _parts(harness, build)
    assert [kind for kind, _ in parts] == ["start", "turn", "turn", "turn"]
    assert await harness.redis.get(lease_key(build)) is None

    # The runner comes back under its name: it re-reads its pending entry and resumes the build.
    harness.deps.stopping = asyncio.Event()
    consumers = build_consumers(harness.settings, harness.deps)
    tasks = _start(consumers)
    try:

        async def settled() -> bool:
            done = any(isinstance(e, BuildCompleted) for e in await harness.events(build))
            return done and not await _pending(harness, entry)

        await eventually(settled, what="the build completed and its entry acked", timeout=60)
    finally:
        await _stop(consumers, tasks)
    await _resumed_to_completion(harness, build, handed_back_at=len(parts))
    # The hand-back happened between iterations: no model call was lost or made twice.
    served = [e["turn"] for e in scripted.log() if e.get("build") == build]
    assert served == sorted(set(served))


async def test_an_unavailable_model_hands_the_build_back_and_a_later_attempt_completes_it(
    harness: Harness, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = context_ready()
    await harness.seed_project(context)
    build = context.build_id
    attempts = harness.deps.model.attempts

    async def outage() -> None:  # 529 to every attempt of this call, the fallback's included
        await asyncio.to_thread(scripted.faults, {"status": 529, "times": attempts})

    _before_model_call(monkeypatch, harness, outage)
    with pytest.raises(HandBack) as raised:
        await on_context_ready(context, harness.deps)
    handed_back = raised.value.handed_back
    assert handed_back.reason is HandBackReason.MODEL_UNAVAILABLE
    assert f"kept failing ({attempts} attempts): 529" in handed_back.detail
    assert str(raised.value).startswith("model_unavailable: ")  # what give_up would quote

    assert _ends(await harness.events(build)) == []
    parts = await _parts(harness, build)
    assert [kind for kind, _ in parts] == ["start", "turn", "turn"]
    assert await harness.redis.get(lease_key(build)) is None
    log = [e for e in scripted.log() if e.get("build") == build]
    assert [(e["turn"], e["status"]) for e in log] == [(0, 200), (1, 200)] + [(2, 529)] * attempts

    # The model is back: the next attempt resumes from the last turn and completes the build;
    # its handler returns, so the consumer would ack the entry.
    await on_context_ready(context, harness.deps)
    await _resumed_to_completion(harness, build, handed_back_at=len(parts))
    served = [e["turn"] for e in scripted.log() if e.get("build") == build and e["status"] == 200]
    assert served == sorted(set(served))


async def test_the_consumer_retries_a_build_handed_back_for_an_unavailable_model(
    harness: Harness, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = context_ready()
    await harness.seed_project(context)
    build = context.build_id
    attempts = harness.deps.model.attempts

    async def outage() -> None:
        await asyncio.to_thread(scripted.faults, {"status": 500, "times": attempts})

    _before_model_call(monkeypatch, harness, outage)
    unavailable = _drives("model_unavailable")
    consumers = build_consumers(harness.settings, harness.deps)
    tasks = _start(consumers)
    try:
        entry = await Publisher(harness.redis).emit(context)

        async def settled() -> bool:
            done = any(isinstance(e, BuildCompleted) for e in await harness.events(build))
            return done and not await _pending(harness, entry)

        await eventually(settled, what="the build completed and its entry acked", timeout=60)
    finally:
        await _stop(consumers, tasks)
    assert _drives("model_unavailable") == unavailable + 1
    assert not await _dead_lettered(harness, context.event_id)
    await _resumed_to_completion(harness, build, handed_back_at=3)  # start and two turns


@pytest.mark.parametrize("how", ["taken over", "forgotten by Redis, then taken"])
async def test_a_drive_whose_build_a_successor_claimed_writes_nothing_more(
    harness: Harness, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # The successor takes the lease and claims the build, and writes nothing itself: the fence
    # must stop the old drive on the claim alone, with no round trip to Redis on its path.
    context = context_ready()
    await harness.seed_project(context)
    build = context.build_id
    store = harness.deps.checkpoints
    at_loss: list[tuple[str, int]] = []
    successor = Lease(harness.redis, build_id=build, owner="successor", ttl_ms=60_000)

    async def lose() -> None:
        # Mid-drive, well within the keep-alive's period, so the old drive's own lease checks
        # have not seen it: only the fence can stop its next checkpoint.
        at_loss.extend(await _parts(harness, build))
        if how == "taken over":
            await harness.redis.delete(lease_key(build))  # expired
        else:  # a flush, a restart with no data, a failover: the counter goes too
            await harness.redis.delete(lease_key(build), lease_generation_key(build))
        generation = await successor.acquire(floor=await store.latest_generation(build))
        await store.claim(build, generation)

    _before_model_call(monkeypatch, harness, lose)
    with pytest.raises(HandBack) as raised:
        await on_context_ready(context, harness.deps)
    assert raised.value.handed_back.reason is HandBackReason.LEASE_LOST

    # The turn in flight was not saved: not one part written after the claim.
    assert [kind for kind, _ in at_loss] == ["start", "turn", "turn"]
    assert await _parts(harness, build) == at_loss
    assert _ends(await harness.events(build)) == []
    old = at_loss[-1][1]
    assert successor.generation > old
    # The successor's lease is untouched (the stopped drive released nothing of it).
    holder = await harness.redis.get(lease_key(build))
    assert holder == f"successor|{successor.generation}".encode()
    await successor.release()  # the successor hands the build back in turn

    outcome = await drive(harness.deps, build_id=build, context=context, reason="start")
    assert outcome is Outcome.COMPLETED
    await _resumed_to_completion(harness, build, handed_back_at=len(at_loss))
    parts = await _parts(harness, build)
    assert parts[: len(at_loss)] == at_loss
    assert all(generation > successor.generation for _, generation in parts[len(at_loss) :])


async def test_a_drive_whose_lease_redis_forgot_stops_at_its_keep_alive_and_loses_nothing(
    harness: Harness, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No successor yet, but one may come at any moment: once its keep-alive has found the
    # lease gone, the drive runs no tool more (two runners must never drive one sandbox) and
    # hands the build back; the next drive resumes from every part it wrote.
    context = context_ready()
    await harness.seed_project(context)
    build = context.build_id
    noticed = asyncio.Event()
    renew = Lease.renew

    async def renew_and_tell(lease: Lease) -> bool:
        renewed = await renew(lease)
        if not renewed:
            noticed.set()
        return renewed

    monkeypatch.setattr(Lease, "renew", renew_and_tell)

    async def forget() -> None:
        await harness.redis.delete(lease_key(build))
        # The model call in flight ends once the keep-alive has found the lease gone.
        await asyncio.wait_for(noticed.wait(), timeout=30)

    _before_model_call(monkeypatch, harness, forget)
    result = await drive(harness.deps, build_id=build, context=context, reason="start")
    assert isinstance(result, HandedBack)
    assert result.reason is HandBackReason.LEASE_LOST
    written = await _parts(harness, build)
    # The third call's turn: its tools did not run, and it was not written.
    assert [kind for kind, _ in written] == ["start", "turn", "turn"]
    events = await harness.events(build)
    assert {e.iteration for e in events if isinstance(e, ToolCalled)} == {1, 2}
    assert _ends(events) == []

    outcome = await drive(harness.deps, build_id=build, context=context, reason="start")
    assert outcome is Outcome.COMPLETED
    parts = await _parts(harness, build)
    assert parts[: len(written)] == written
    assert parts[-1][0] == "end"


async def test_a_runner_shutting_down_does_not_give_a_build_up(
    harness: Harness, scripted: ScriptedModel
) -> None:
    # The entry's last delivery was handed back by a shutdown: the build is not failed for it;
    # the entry stays pending (give_up raises) for the next runner to decide.
    context = context_ready()
    await harness.seed_project(context)
    harness.deps.stopping.set()
    result = await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
    assert isinstance(result, HandedBack)
    assert result.reason is HandBackReason.SHUTDOWN
    assert [kind for kind, _ in await _parts(harness, context.build_id)] == ["start"]
    with pytest.raises(HandBack) as raised:
        await give_up(harness.deps, context, "HandBack: shutdown: ...", 20)
    assert raised.value.handed_back.reason is HandBackReason.SHUTDOWN
    assert _ends(await harness.events(context.build_id)) == []
    assert "end" not in [kind for kind, _ in await _parts(harness, context.build_id)]


async def test_a_replacement_sandbox_no_part_names_is_killed_when_its_drive_hands_back(
    on_sandbox: OnSandbox, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The build's sandbox is lost while the model is down. The drive that makes a replacement
    # hands the build back before any part names it: the next drive will not know it, and
    # would make another (one per delivery, each left to its hour-long E2B timeout). It is
    # killed as the drive ends.
    harness = on_sandbox.harness
    context = context_ready()
    await harness.seed_project(context)
    build = context.build_id
    attempts = harness.deps.model.attempts

    async def outage() -> None:  # 529 to every attempt of this call, the fallback's included
        await asyncio.to_thread(scripted.faults, {"status": 529, "times": attempts})

    _before_model_call(monkeypatch, harness, outage)
    first = await drive(harness.deps, build_id=build, context=context, reason="start")
    assert isinstance(first, HandedBack)
    state = await harness.deps.checkpoints.load(build)
    assert state is not None
    assert state.sandbox_id
    lost = state.sandbox_id
    await (await harness.deps.sandboxes.connect(lost)).kill()

    await asyncio.to_thread(scripted.faults, {"status": 529, "times": attempts})
    second = await drive(harness.deps, build_id=build, context=None, reason="start")
    assert isinstance(second, HandedBack)
    assert second.reason is HandBackReason.MODEL_UNAVAILABLE
    made = set(_sandbox_ids(on_sandbox)) - {lost}
    assert len(made) == 1
    [replacement] = made
    assert on_sandbox.status(replacement) == "killed"
    again = await harness.deps.checkpoints.load(build)
    assert again is not None
    assert again.sandbox_id == lost  # no part was written by that drive

    # The next drive makes its own, which its parts name, and completes the build in it.
    third = await drive(harness.deps, build_id=build, context=None, reason="start")
    assert third is Outcome.COMPLETED
    final = await harness.deps.checkpoints.load(build)
    assert final is not None
    assert final.sandbox_id not in (lost, replacement)


def _sandbox_ids(on_sandbox: OnSandbox) -> list[str]:
    if on_sandbox.standin is not None:
        return list(on_sandbox.standin.records)
    return [p.name for p in on_sandbox.root.iterdir() if (p / "sandbox.json").exists()]


async def test_a_first_sandbox_whose_start_part_fails_is_killed(
    on_sandbox: OnSandbox, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL refuses the build's first part: the drive fails, and the entry is retried by
    # a drive that knows nothing of the sandbox this one made (one per delivery, otherwise).
    harness = on_sandbox.harness
    context = context_ready()
    await harness.seed_project(context)
    store = harness.deps.checkpoints
    append = store.append

    async def refused(state: Any, *, kind: str, **kwargs: Any) -> int:
        if kind == "start":
            raise ConnectionResetError("the primary went away")
        return await append(state, kind=kind, **kwargs)

    monkeypatch.setattr(store, "append", refused)
    with pytest.raises(ConnectionResetError):
        await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
    [made] = _sandbox_ids(on_sandbox)
    assert on_sandbox.status(made) == "killed"
