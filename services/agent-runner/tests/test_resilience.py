"""The loop's guards on real Redis, PostgreSQL and the scripted model: stuck detection, context
compaction, the lease's fencing of checkpoints and its floor after Redis forgot its counter, the
events the sleep and end checkpoints hold, a sleeping build: cancelled, or delivered its
``context.ready`` again, and a sandbox killed mid-build (on the local sandbox and on E2B through
the stand-in)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import yaml
from prometheus_client import REGISTRY
from sqlalchemy import select

from cofounder_agent_runner.bootstrap import build_consumers
from cofounder_agent_runner.checkpoints import RunState
from cofounder_agent_runner.handlers import on_cancel_requested
from cofounder_agent_runner.lease import Lease, LeaseBusy, LeaseLost
from cofounder_agent_runner.loop import Outcome, drive
from cofounder_agent_runner.testing import Harness, OnSandbox, context_ready, fast_settings
from cofounder_contracts import (
    AgentIterationCompleted,
    AgentResumed,
    AgentSleeping,
    BuildCancelRequested,
    BuildCompleted,
    BuildFailed,
    BuildStatus,
    BuildStatusChanged,
    ContextReady,
    SnapshotReason,
    SnapshotRequested,
    ToolCalled,
    derived_event_id,
)
from cofounder_contracts.keys import budget_gate_key, lease_generation_key, lease_key
from cofounder_db.engine import driver_dsn
from cofounder_db.models import AgentCheckpoint
from cofounder_runtime.connections import connect_redis
from cofounder_runtime.publisher import Publisher
from cofounder_scripted_model.process import ScriptedModel, start
from cofounder_snapshots.collect import collect_sandbox
from cofounder_snapshots.sync import take_snapshot
from cofounder_testing.servers import own_redis_server
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration


def _bash(command: str) -> dict[str, Any]:
    return {"tools": [{"name": "bash", "input": {"command": command}}]}


@pytest.fixture
def stuck_model(tmp_path: Path) -> Iterator[ScriptedModel]:
    turns = [_bash("ls missing-dir") for _ in range(10)]
    path = tmp_path / "stuck.yaml"
    path.write_text(yaml.safe_dump({"name": "stuck", "turns": turns}))
    with start(str(path)) as server:
        yield server


@pytest.fixture
def long_model(tmp_path: Path) -> Iterator[ScriptedModel]:
    turns: list[dict[str, Any]] = [
        {"text": f"Step {n}: " + "thinking out loud " * 40, **_bash(f"echo step {n}")}
        for n in range(14)
    ]
    turns.append({"tools": [{"name": "finish", "input": {"summary": "done"}}]})
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump({"name": "long", "turns": turns}))
    with start(str(path)) as server:
        yield server


async def _harness(
    runner_redis_url: str, database_url: str, model: ScriptedModel, root: Path, **overrides: Any
) -> Harness:
    settings = fast_settings(
        redis_url=runner_redis_url,
        database_url=database_url,
        model_url=model.url,
        sandbox_root=root,
        **overrides,
    )
    return Harness(settings=settings, redis=connect_redis(runner_redis_url))


async def test_the_same_failing_call_gets_a_nudge_then_stops_the_build(
    runner_redis_url: str, migrated_database_url: str, stuck_model: ScriptedModel, tmp_path: Path
) -> None:
    harness = await _harness(runner_redis_url, migrated_database_url, stuck_model, tmp_path / "s")
    try:
        context = context_ready()
        outcome = await drive(
            harness.deps, build_id=context.build_id, context=context, reason="start"
        )
        assert outcome is Outcome.FAILED
        failed = [e for e in await harness.events(context.build_id) if isinstance(e, BuildFailed)]
        assert failed[0].reason == "stopped: stuck, the same failing bash call was repeated 6 times"
        state = await harness.deps.checkpoints.load(context.build_id)
        assert state is not None
        nudges = [
            (i, b["text"])
            for i, m in enumerate(state.messages)
            if m["role"] == "user"
            for b in m["content"]
            if b.get("type") == "text" and "same failing bash call" in b.get("text", "")
        ]
        assert len(nudges) == 1  # after the third failure, once
        assert state.iteration == 6
    finally:
        await harness.close()
        await harness.redis.aclose()


async def test_a_long_conversation_is_compacted_and_still_completes(
    runner_redis_url: str, migrated_database_url: str, long_model: ScriptedModel, tmp_path: Path
) -> None:
    harness = await _harness(
        runner_redis_url,
        migrated_database_url,
        long_model,
        tmp_path / "c",
        context_window=6_000,
        compact_at=0.5,
    )
    try:
        context = context_ready()
        outcome = await drive(
            harness.deps, build_id=context.build_id, context=context, reason="start"
        )
        assert outcome is Outcome.COMPLETED
        state = await harness.deps.checkpoints.load(context.build_id)
        assert state is not None
        summary = state.messages[0]["content"][-1]["text"]
        assert summary.startswith("Earlier work in this build, summarised")
        assert "echo step 0" in summary
        assert len(state.messages) < 2 * state.iteration  # the middle is gone
        log = [e for e in long_model.log() if e.get("build") == context.build_id]
        assert [e["status"] for e in log] == [200] * len(log)  # every compacted request was valid
        assert [e["turn"] for e in log] == list(range(15))  # and the script went on where it was
    finally:
        await harness.close()
        await harness.redis.aclose()


async def test_the_lease_fences_a_runner_that_lost_its_build(harness: Harness) -> None:
    context = context_ready()
    build = context.build_id
    first = Lease(harness.redis, build_id=build, owner="runner-a", ttl_ms=300)
    assert await first.acquire() == 1
    second = Lease(harness.redis, build_id=build, owner="runner-b", ttl_ms=300)
    with pytest.raises(LeaseBusy, match="runner-a"):
        await second.acquire()

    store = harness.deps.checkpoints
    old = RunState(context=context, model="m", messages=[])
    await store.append(
        old,
        generation=first.generation,
        kind="start",
        parts={"context": {}, "model": "m", "messages": []},
    )
    await asyncio.sleep(0.4)  # runner-a stalls past its TTL
    assert not await first.renew()
    assert await second.acquire() == 2
    new = RunState(context=context, model="m", messages=[], seq=old.seq)
    await store.append(new, generation=second.generation, kind="turn", parts={"messages": []})
    # runner-a wakes up and tries to write its next part: refused, whatever seq it uses.
    with pytest.raises(LeaseLost, match="newer runner"):
        await store.append(old, generation=first.generation, kind="turn", parts={"messages": []})
    stale = RunState(context=context, model="m", messages=[], seq=new.seq)
    with pytest.raises(LeaseLost):
        await store.append(stale, generation=first.generation, kind="turn", parts={"messages": []})
    with pytest.raises(LeaseLost, match="written by another runner"):
        await store.append(old, generation=second.generation, kind="turn", parts={"messages": []})
    assert await store.count(build) == 2


async def test_a_lease_not_renewed_for_its_ttl_counts_as_lost() -> None:
    """A runner cut off from Redis cannot tell whether its lease expired and another runner
    took the build: once no renewal has succeeded for a TTL, :meth:`Lease.check` says lost,
    so the drive runs no tool more (the keep-alive's errors alone never set ``lost``)."""
    with own_redis_server() as url:
        redis = connect_redis(url)
        lease = Lease(redis, build_id=context_ready().build_id, owner="cut-off", ttl_ms=1_500)
        await lease.acquire()
        async with lease.kept_alive():
            await asyncio.sleep(1.6)  # renewed meanwhile: still ours
            lease.check()
            # Writes, scripts among them, wait: the renewal hangs as it would in a partition.
            await redis.client_pause(10_000, all=False)
            # A tool running meanwhile (a 10-minute command) is stopped once the TTL is out.
            started = time.monotonic()
            with pytest.raises(LeaseLost, match="not renewed for 1500 ms"):
                await asyncio.wait_for(lease.guard(asyncio.sleep(600)), timeout=10)
            assert time.monotonic() - started < 5

            with pytest.raises(LeaseLost, match="not renewed for 1500 ms"):
                lease.check()
            assert not lease.lost  # nothing said the lease was gone: it may not be
            await redis.client_unpause()

        async def swallows_its_cancel() -> str:
            try:
                await asyncio.sleep(600)
            except asyncio.CancelledError:
                return "went on"
            return "finished"

        # Whatever a tool makes of being stopped, the drive stops there; a cancel of the drive
        # itself stays a cancel.
        other = Lease(redis, build_id=context_ready().build_id, owner="other", ttl_ms=1_500)
        await other.acquire()
        guarded = asyncio.create_task(other.guard(swallows_its_cancel()))
        await asyncio.sleep(0.05)
        await redis.delete(lease_key(other.build_id))
        assert not await other.renew()  # the keep-alive finds it gone: the tool is stopped
        with pytest.raises(LeaseLost, match="lost"):
            await guarded
        mine = Lease(redis, build_id=context_ready().build_id, owner="mine", ttl_ms=1_500)
        await mine.acquire()
        outside = asyncio.create_task(mine.guard(asyncio.sleep(600)))
        await asyncio.sleep(0.05)
        outside.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outside
        await redis.aclose()


async def test_an_append_waits_for_a_claim_in_progress_then_is_refused(harness: Harness) -> None:
    # The successor's claim is not committed yet when the old drive appends: the append must
    # wait for it (the claim row is read ``for share``), then see it and write nothing. Read
    # without the lock, the append would see the old claim and slip a part in behind the
    # successor's back.
    context = context_ready()
    build = context.build_id
    store = harness.deps.checkpoints
    await store.claim(build, 1)
    old = RunState(context=context, model="m", messages=[])
    await store.append(old, generation=1, kind="start", parts={"context": {}, "messages": []})
    with pytest.raises(LeaseLost, match="not the newest claim"):
        await store.claim(build, 1)  # a generation handed out twice claims once

    dsn = driver_dsn(harness.deps.engine)
    conn, watcher = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        claiming = conn.transaction()
        await claiming.start()
        await conn.execute("update checkpoint_fences set generation = 2 where build_id = $1", build)
        append = asyncio.create_task(
            store.append(old, generation=1, kind="turn", parts={"messages": []})
        )

        async def waiting_for_the_claim() -> bool:
            if append.done():
                return True
            # Asked on a connection of its own: in the claim's transaction, pg_stat_activity
            # would answer from a snapshot taken at its first read.
            waiting = await watcher.fetchval(
                "select count(*) from pg_stat_activity "
                "where wait_event_type = 'Lock' and query like '%checkpoint_fences%'"
            )
            return bool(waiting)

        await eventually(waiting_for_the_claim, what="the append waiting for the claim")
        assert not append.done(), "the append did not wait for the claim in progress"
        await claiming.commit()
    finally:
        await conn.close()
        await watcher.close()
    with pytest.raises(LeaseLost, match="newer runner"):
        await append
    assert await store.count(build) == 1
    assert await store.latest_generation(build) == 2


async def test_a_drive_that_loses_the_claim_race_takes_a_newer_generation(
    harness: Harness, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A successor claimed generation 5 between this drive's floor read and its claim (the
    # floor read here is made stale): the claim is refused, the lease let go and taken again
    # above the newer floor, and the build completes under that generation.
    context = context_ready()
    await harness.seed_project(context)
    build = context.build_id
    store = harness.deps.checkpoints
    await store.claim(build, 5)
    latest = store.latest_generation
    stale = [0]

    async def once_stale(build_id: str) -> int:
        return stale.pop() if stale else await latest(build_id)

    monkeypatch.setattr(store, "latest_generation", once_stale)
    outcome = await drive(harness.deps, build_id=build, context=context, reason="start")
    assert outcome is Outcome.COMPLETED
    assert not stale
    async with harness.deps.engine.connect() as conn:
        generations = set(
            (
                await conn.execute(
                    select(AgentCheckpoint.generation).where(AgentCheckpoint.build_id == build)
                )
            ).scalars()
        )
    assert generations == {6}


async def test_a_claim_that_fails_lets_the_lease_go(
    harness: Harness, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL fails the claim: the drive fails (the consumer retries it), and the lease it
    # took is not left to expire, so the retry takes the build at once.
    context = context_ready()
    await harness.seed_project(context)
    build = context.build_id
    store = harness.deps.checkpoints
    claim = store.claim
    failures = [ConnectionError("PostgreSQL went away")]

    async def failing_once(build_id: str, generation: int) -> None:
        if failures:
            raise failures.pop()
        await claim(build_id, generation)

    monkeypatch.setattr(store, "claim", failing_once)
    with pytest.raises(ConnectionError):
        await drive(harness.deps, build_id=build, context=context, reason="start")
    assert await harness.redis.get(lease_key(build)) is None
    outcome = await drive(harness.deps, build_id=build, context=context, reason="start")
    assert outcome is Outcome.COMPLETED


async def test_cancelling_a_sleeping_build_ends_it_and_kills_its_sandbox(
    harness: Harness, scripted: ScriptedModel
) -> None:
    context = context_ready()
    resets_at = datetime.now(UTC) + timedelta(hours=1)
    await harness.redis.set(
        budget_gate_key(context.user_id), json.dumps({"resets_at": resets_at.isoformat()})
    )
    try:
        assert (
            await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
            is Outcome.SLEEPING
        )
    finally:
        await harness.redis.delete(budget_gate_key(context.user_id))
    assert any(isinstance(e, AgentSleeping) for e in await harness.events(context.build_id))
    await on_cancel_requested(
        BuildCancelRequested(
            build_id=context.build_id,
            project_id=context.project_id,
            user_id=context.user_id,
            producer="test",
            requested_by=context.user_id,
        ),
        harness.deps,
    )
    events = await harness.events(context.build_id)
    assert any(
        isinstance(e, BuildStatusChanged) and e.status is BuildStatus.CANCELLED for e in events
    )
    state = await harness.deps.checkpoints.load(context.build_id)
    assert state is not None
    assert state.ended is not None
    assert state.ended["outcome"] == "cancelled"
    sandbox = json.loads(
        (harness.sandboxes.root / (state.sandbox_id or "") / "sandbox.json").read_text()
    )
    assert sandbox["status"] == "killed"
    assert [e for e in scripted.log() if e.get("build") == context.build_id] == []  # no model call


async def _put_to_sleep(harness: Harness, context: ContextReady) -> None:
    """Drive a new build with its founder's budget spent: it sleeps before any model call. The
    gate is open again afterwards (only a wake resumes the build)."""
    resets_at = datetime.now(UTC) + timedelta(hours=1)
    gate = budget_gate_key(context.user_id)
    await harness.redis.set(gate, json.dumps({"resets_at": resets_at.isoformat()}))
    try:
        outcome = await drive(
            harness.deps, build_id=context.build_id, context=context, reason="start"
        )
    finally:
        await harness.redis.delete(gate)
    assert outcome is Outcome.SLEEPING


async def _parts(harness: Harness, build_id: str) -> list[tuple[str, int, dict[str, Any]]]:
    """The build's checkpoint rows, in order: (kind, generation, parts)."""
    async with harness.deps.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(AgentCheckpoint.kind, AgentCheckpoint.generation, AgentCheckpoint.parts)
                .where(AgentCheckpoint.build_id == build_id)
                .order_by(AgentCheckpoint.seq)
            )
        ).all()
    return [(kind, generation, parts) for kind, generation, parts in rows]


async def test_the_lease_generation_is_above_its_floor(harness: Harness) -> None:
    build = context_ready().build_id
    first = Lease(harness.redis, build_id=build, owner="runner-a", ttl_ms=2_000)
    assert await first.acquire(floor=5) == 6  # the counter was gone: set above the floor
    await first.release()
    second = Lease(harness.redis, build_id=build, owner="runner-b", ttl_ms=2_000)
    assert await second.acquire(floor=2) == 7  # a counter above the floor goes on from itself
    assert int(await harness.redis.get(lease_generation_key(build)) or 0) == 7


async def test_a_build_resumes_after_redis_forgot_its_lease_generation(
    harness: Harness, scripted: ScriptedModel
) -> None:
    context = context_ready()
    await harness.seed_project(context)
    build = context.build_id
    store = harness.deps.checkpoints
    assert await store.latest_generation(build) == 0
    # Earlier drives took the counter to 7: this one writes its parts under generation 8.
    await harness.redis.set(lease_generation_key(build), 7)
    await _put_to_sleep(harness, context)
    assert await store.latest_generation(build) == 8
    # Redis forgets the build's keys (a flush, a restart with no data, a failover).
    await harness.redis.delete(lease_generation_key(build), lease_key(build))

    outcome = await drive(harness.deps, build_id=build, context=None, reason="wake:rollover")
    assert outcome is Outcome.COMPLETED
    parts = await _parts(harness, build)
    assert [(kind, generation) for kind, generation, _ in parts[:2]] == [("start", 8), ("sleep", 8)]
    assert {generation for _, generation, _ in parts[2:]} == {9}
    assert parts[-1][0] == "end"
    assert await store.latest_generation(build) == 9
    assert int(await harness.redis.get(lease_generation_key(build)) or 0) == 9
    events = await harness.events(build)
    resumed = [e for e in events if isinstance(e, AgentResumed)]
    assert [e.event_id for e in resumed] == [derived_event_id(context.event_id, "resumed:9")]
    called = [e for e in events if isinstance(e, ToolCalled)]
    assert called
    assert all(
        e.event_id == derived_event_id(context.event_id, f"tool:{e.tool_use_id}:called:9")
        for e in called
    )


async def test_the_sleep_and_end_checkpoints_hold_the_events_they_published(
    harness: Harness, scripted: ScriptedModel
) -> None:
    context = context_ready()
    await harness.seed_project(context)
    build = context.build_id
    await _put_to_sleep(harness, context)
    kind, _, sleep = (await _parts(harness, build))[-1]
    assert kind == "sleep"
    published = [e for e in await harness.events(build) if isinstance(e, AgentSleeping)]
    assert len(published) == 1
    slept = msgspec.convert(sleep["event"], type=AgentSleeping)
    assert slept == published[0]
    assert slept.event_id == derived_event_id(context.event_id, f"sleeping:{slept.checkpoint_seq}")
    assert slept.checkpoint_seq == len(await _parts(harness, build))  # its own row
    assert sleep["resets_at"] == slept.resets_at.isoformat()

    outcome = await drive(harness.deps, build_id=build, context=None, reason="wake:rollover")
    assert outcome is Outcome.COMPLETED
    kind, _, end = (await _parts(harness, build))[-1]
    assert kind == "end"
    events = await harness.events(build)
    final = [
        e for e in events if isinstance(e, SnapshotRequested) and e.reason is SnapshotReason.FINAL
    ]
    assert len(final) == 1
    requested = msgspec.convert(end["snapshot"], type=SnapshotRequested)
    assert requested == final[0]
    assert requested.event_id == derived_event_id(context.event_id, "snapshot:final")
    completed = [e for e in events if isinstance(e, BuildCompleted)]
    assert msgspec.convert(end["event"], type=BuildCompleted) == completed[0]
    # Every request is named beside its part, the reconciler's way to the latest one.
    async with harness.deps.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(AgentCheckpoint.seq, AgentCheckpoint.snapshot_request_id).where(
                    AgentCheckpoint.build_id == build,
                    AgentCheckpoint.snapshot_request_id.is_not(None),
                )
            )
        ).all()
    named = {seq: str(request) for seq, request in rows}
    requests = [e.event_id for e in events if isinstance(e, SnapshotRequested)]
    assert sorted(named.values()) == sorted(requests)
    assert named[max(named)] == requested.event_id


async def test_a_context_ready_for_an_asleep_build_leaves_it_asleep(
    harness: Harness, scripted: ScriptedModel
) -> None:
    context = context_ready()
    await harness.seed_project(context)
    build = context.build_id
    store = harness.deps.checkpoints
    await _put_to_sleep(harness, context)
    rows = await store.count(build)
    state = await store.load(build)
    assert state is not None
    sandbox = harness.sandboxes.root / (state.sandbox_id or "") / "sandbox.json"
    assert json.loads(sandbox.read_text())["status"] == "paused"

    # Its context.ready again (a stale duplicate, or a reconciler's after Redis lost data), with
    # the budget open: the build stays asleep all the same.
    again = await drive(harness.deps, build_id=build, context=context, reason="start")
    assert again is Outcome.DUPLICATE
    assert await store.count(build) == rows
    events = await harness.events(build)
    assert not any(isinstance(e, AgentResumed) for e in events)
    # The sleep is said again under its id (a crash after its checkpoint may have lost it).
    assert len({e.event_id for e in events if isinstance(e, AgentSleeping)}) == 1
    assert json.loads(sandbox.read_text())["status"] == "paused"
    assert [e for e in scripted.log() if e.get("build") == build] == []  # no model call

    # A wake still resumes it.
    outcome = await drive(harness.deps, build_id=build, context=None, reason="wake:rollover")
    assert outcome is Outcome.COMPLETED
    resumed = [e for e in await harness.events(build) if isinstance(e, AgentResumed)]
    assert [e.reason for e in resumed] == ["wake:rollover"]


async def test_a_sandbox_killed_mid_build_is_replaced_from_the_latest_snapshot(
    on_sandbox: OnSandbox, scripted: ScriptedModel
) -> None:
    """The build's sandbox is killed between two turns (for E2B, through the SDK: the stand-in
    ends it as E2B does); the next tool call finds it gone, and the build is driven again in a
    new sandbox holding the latest snapshot, from its last checkpoint, to its end."""
    harness = on_sandbox.harness
    store = harness.deps.snapshots
    assert store is not None
    scripted.latency(1500)  # time to snapshot and kill the sandbox before the next turn
    context = context_ready()
    gone_before = drives("sandbox_gone")
    consumers = build_consumers(harness.settings, harness.deps)
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:
        await Publisher(harness.redis).emit(context)

        async def three_files_written() -> bool:
            return any(
                isinstance(e, AgentIterationCompleted) and e.iteration >= 3
                for e in await harness.events(context.build_id)
            )

        await eventually(three_files_written, what="the first three turns", timeout=60)
        state = await harness.deps.checkpoints.load(context.build_id)
        assert state is not None
        assert state.sandbox_id
        first = state.sandbox_id
        box = await harness.deps.sandboxes.connect(first)
        # The latest snapshot, as the snapshot service takes it (E2B: the tar read over envd).
        taken = await take_snapshot(
            store,
            await collect_sandbox(box),
            project_id=context.project_id,
            build_id=context.build_id,
        )
        await box.kill()
        scripted.latency(0)
        assert on_sandbox.status(first) == "killed"

        async def completed() -> bool:
            return any(
                isinstance(e, BuildCompleted) for e in await harness.events(context.build_id)
            )

        await eventually(completed, what="the build to complete", timeout=90)
    finally:
        for consumer in consumers:
            consumer.stop()
        await asyncio.gather(*tasks)
    events = await harness.events(context.build_id)
    done = next(e for e in events if isinstance(e, BuildCompleted))
    assert done.preview_url
    # Resumed from its checkpoint after the hand-back (and once more should a loaded machine
    # also let the test's 2 s lease lapse: another hand-back, another recovery).
    resumed = [e.reason for e in events if isinstance(e, AgentResumed)]
    assert set(resumed) == {"recovered"}, resumed
    # Named for what it was: a hand-back for a vanished sandbox, not an unexplained error.
    assert drives("sandbox_gone") == gone_before + 1
    final = await harness.deps.checkpoints.load(context.build_id)
    assert final is not None
    assert final.sandbox_id
    assert final.sandbox_id != first
    # Written before the kill and not again after it: back only through the snapshot.
    for name in ("app.py", "public/index.html", "test_app.py"):
        assert (on_sandbox.project(final.sandbox_id) / name).is_file(), name
    # The model was told, once, that it goes on in a new sandbox holding that snapshot, and the
    # note is in the checkpoints: a replay rebuilds the conversation the model saw.
    notes = [m for m in final.messages if _said(m, "Your sandbox was lost")]
    assert len(notes) == 1, notes
    assert _said(notes[0], f"version {taken.version}, ")
    assert final.messages.index(notes[0]) < len(final.messages) - 1  # a turn came after it
    if on_sandbox.standin is not None:  # the SDK asked for the lost one, then made a new one
        calls = on_sandbox.standin.calls
        assert ("POST", f"/v2/sandboxes/{first}/connect") in calls
        assert sum(1 for c in calls if c == ("POST", "/v2/sandboxes")) == 2


def _said(message: dict[str, Any], text: str) -> bool:
    """Whether a user message has a text block that contains ``text``."""
    content = message["content"]
    return message["role"] == "user" and any(
        b.get("type") == "text" and text in b.get("text", "") for b in content
    )


def drives(outcome: str) -> float:
    """Drives of this process that ended with ``outcome`` so far."""
    return REGISTRY.get_sample_value("cofounder_runner_drives_total", {"outcome": outcome}) or 0.0
