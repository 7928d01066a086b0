"""The loop in-process on real Redis and PostgreSQL, the scripted model server (over HTTP, through
the real SDK) and local sandboxes: model faults, blocked users, limits, sleep and wake, cancel."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from cofounder_agent_runner.bootstrap import build_consumers
from cofounder_agent_runner.loop import Outcome, drive
from cofounder_agent_runner.testing import Harness, OnSandbox, context_ready, fast_settings
from cofounder_contracts import (
    AgentIterationCompleted,
    AgentResumed,
    AgentSleeping,
    ArtifactGenerated,
    BudgetUsage,
    BudgetWake,
    BuildCancelRequested,
    BuildCompleted,
    BuildFailed,
    BuildStatus,
    BuildStatusChanged,
    SnapshotReason,
    SnapshotRequested,
    ToolCalled,
    ToolCompleted,
    WakeReason,
)
from cofounder_contracts.keys import budget_gate_key, lease_key
from cofounder_contracts.streams import AGENT_RUNNER, AGENT_WORK
from cofounder_db.models import AgentCheckpoint, Project
from cofounder_runtime.connections import connect_redis
from cofounder_runtime.keys import dlq_key
from cofounder_runtime.publisher import Publisher
from cofounder_sandbox.base import PROJECT_DIR
from cofounder_scripted_model.process import ScriptedModel
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration


def _fetch(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


def _turns(log: list[dict[str, Any]], build_id: str) -> list[tuple[int, int, str]]:
    return [
        (int(e.get("turn", -1)), int(e["status"]), str(e["model"]))
        for e in log
        if e.get("build") == build_id
    ]


async def test_the_demo_build_runs_to_completion(harness: Harness, scripted: ScriptedModel) -> None:
    # Its preview is fetched below: the sandbox stays up after the build (not the default).
    harness.deps.settings = harness.settings.model_copy(update={"sandbox_after_build": "keep"})
    context = context_ready()
    await harness.seed_project(context)
    outcome = await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
    assert outcome is Outcome.COMPLETED

    events = await harness.events(context.build_id)
    kinds = [type(e) for e in events]
    assert kinds[0] is BuildStatusChanged
    completed = next(e for e in events if isinstance(e, BuildCompleted))
    assert completed.build_version == 1
    assert completed.preview_url is not None
    status, page = await asyncio.to_thread(_fetch, completed.preview_url)
    assert status == 200
    assert b"Welcome to the MVP" in page
    iterations = [e.iteration for e in events if isinstance(e, AgentIterationCompleted)]
    assert iterations == list(range(1, len(iterations) + 1))
    assert len(iterations) >= 8
    calls = [e.tool_use_id for e in events if isinstance(e, ToolCalled)]
    done = [e.tool_use_id for e in events if isinstance(e, ToolCompleted)]
    assert calls == done
    assert len(calls) == completed.tool_calls
    usage = [e for e in events if isinstance(e, BudgetUsage)]
    assert len(usage) == len(iterations)
    assert sum(u.cache_read_input_tokens for u in usage) > 0  # prompt caching is in effect
    snapshots = [e for e in events if isinstance(e, SnapshotRequested)]
    assert snapshots[-1].reason is SnapshotReason.FINAL
    assert any(isinstance(e, ArtifactGenerated) for e in events)
    # Every id is a UUIDv7 carrying a real time: no earlier than the context that started the
    # build (derived ids take that event's time, never a build id's, which may be a v4).
    started_ms = uuid.UUID(context.event_id).int >> 80
    for event in events:
        parsed = uuid.UUID(event.event_id)
        assert parsed.version == 7, event
        assert parsed.int >> 80 >= started_ms, event

    sandbox = await harness.sandboxes.connect(snapshots[-1].sandbox_id or "")
    assert (sandbox.workspace / "app.py").exists()
    assert (sandbox.workspace / "public" / "index.html").exists()
    async with harness.deps.engine.connect() as conn:
        kinds_saved = (
            (
                await conn.execute(
                    select(AgentCheckpoint.kind)
                    .where(AgentCheckpoint.build_id == context.build_id)
                    .order_by(AgentCheckpoint.seq)
                )
            )
            .scalars()
            .all()
        )
        stage = (
            await conn.execute(select(Project.stage).where(Project.id == context.project_id))
        ).scalar()
    assert kinds_saved == ["start", *["turn"] * len(iterations), "end"]
    assert stage == "mvp_built"
    # Every turn was asked for once.
    turns = [t for t, _, _ in _turns(scripted.log(), context.build_id)]
    assert turns == sorted(set(turns))

    # Delivered again after it ended: the end is re-emitted with the same id, nothing re-runs.
    again = await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
    assert again is Outcome.DUPLICATE
    ends = [e for e in await harness.events(context.build_id) if isinstance(e, BuildCompleted)]
    assert len({e.event_id for e in ends}) == 1


async def test_a_rate_limit_is_waited_out(harness: Harness, scripted: ScriptedModel) -> None:
    scripted.faults({"status": 429, "retry_after": 0.2})
    context = context_ready()
    assert (
        await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
        is Outcome.COMPLETED
    )
    turns = _turns(scripted.log(), context.build_id)
    assert turns[:2] == [(0, 429, "claude-sonnet-5-5"), (0, 200, "claude-sonnet-5-5")]


async def test_repeated_overload_switches_to_the_fallback_model(
    harness: Harness, scripted: ScriptedModel
) -> None:
    scripted.faults({"status": 529, "times": 3, "model": "claude-sonnet-5-5"})
    context = context_ready()
    assert (
        await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
        is Outcome.COMPLETED
    )
    turns = _turns(scripted.log(), context.build_id)
    assert turns[:4] == [
        (0, 529, "claude-sonnet-5-5"),
        (0, 529, "claude-sonnet-5-5"),
        (0, 529, "claude-sonnet-5-5"),
        (0, 200, "claude-haiku-5-5"),
    ]
    usage = [e for e in await harness.events(context.build_id) if isinstance(e, BudgetUsage)]
    assert usage[0].model == "claude-haiku-5-5"


async def test_a_cut_stream_is_metered_and_retried(
    harness: Harness, scripted: ScriptedModel
) -> None:
    scripted.faults({"cut_after_blocks": 1})
    context = context_ready()
    assert (
        await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
        is Outcome.COMPLETED
    )
    usage = [e for e in await harness.events(context.build_id) if isinstance(e, BudgetUsage)]
    assert usage[0].outcome == "cut_short"
    assert usage[0].input_tokens > 0
    assert usage[1].outcome == "ok"


async def test_an_invalid_request_fails_the_build_with_the_api_reason(
    harness: Harness, scripted: ScriptedModel
) -> None:
    scripted.faults({"status": 400, "message": "messages.1: this request is broken"})
    context = context_ready()
    assert (
        await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
        is Outcome.FAILED
    )
    failed = [e for e in await harness.events(context.build_id) if isinstance(e, BuildFailed)]
    assert len(failed) == 1
    assert "this request is broken" in failed[0].reason
    assert "400" in failed[0].reason
    state = await harness.deps.checkpoints.load(context.build_id)
    assert state is not None
    assert state.ended is not None
    assert state.ended["outcome"] == "failed"
    sandbox_state = json.loads(
        (harness.sandboxes.root / (state.sandbox_id or "") / "sandbox.json").read_text()
    )
    assert sandbox_state["status"] == "killed"


async def test_a_suspended_user_is_blocked_before_any_model_call(
    harness: Harness, scripted: ScriptedModel
) -> None:
    context = context_ready(suspended=True, suspension_reason="payment overdue")
    assert (
        await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
        is Outcome.FAILED
    )
    failed = [e for e in await harness.events(context.build_id) if isinstance(e, BuildFailed)]
    assert [e.reason for e in failed] == ["Build blocked: payment overdue"]
    assert _turns(scripted.log(), context.build_id) == []
    assert await harness.deps.checkpoints.load(context.build_id) is None


async def test_the_tool_call_limit_stops_the_build(
    harness: Harness, scripted: ScriptedModel
) -> None:
    harness.deps.settings = harness.settings.model_copy(
        update={"max_tool_calls": {"bootstrapper": 3}}
    )
    context = context_ready()
    assert (
        await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
        is Outcome.FAILED
    )
    failed = next(e for e in await harness.events(context.build_id) if isinstance(e, BuildFailed))
    assert failed.reason == "stopped: the build reached its limit of 3 tool calls"


async def _consume(harness: Harness) -> tuple[list[asyncio.Task[None]], list[object]]:
    consumers = build_consumers(harness.settings, harness.deps)
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    return tasks, list(consumers)


async def _stop(tasks: list[asyncio.Task[None]], consumers: list[object]) -> None:
    for consumer in consumers:
        consumer.stop()  # type: ignore[attr-defined]
    await asyncio.gather(*tasks)


async def test_a_spent_budget_puts_the_build_to_sleep_and_a_wake_resumes_it(
    on_sandbox: OnSandbox, scripted: ScriptedModel
) -> None:
    """On the local sandbox and on E2B (the stand-in): the sleeping build's sandbox is paused,
    and the wake resumes that same sandbox, its files kept."""
    harness = on_sandbox.harness
    scripted.latency(150)
    context = context_ready()
    redis = harness.redis
    tasks, consumers = await _consume(harness)
    try:
        await Publisher(redis).emit(context)

        async def iterations_done(n: int) -> bool:
            events = await harness.events(context.build_id)
            return any(isinstance(e, AgentIterationCompleted) and e.iteration >= n for e in events)

        await eventually(lambda: iterations_done(2), what="two iterations", timeout=30)
        before = await harness.deps.checkpoints.load(context.build_id)
        assert before is not None
        assert before.sandbox_id
        # Something of the sandbox's own, written before the sleep: still there after the wake.
        box = await harness.deps.sandboxes.connect(before.sandbox_id)
        await box.write_file(f"{PROJECT_DIR}/.before-sleep", b"kept")
        resets_at = datetime.now(UTC) + timedelta(hours=3)
        await redis.set(
            budget_gate_key(context.user_id), json.dumps({"resets_at": resets_at.isoformat()})
        )

        async def asleep() -> bool:
            return any(isinstance(e, AgentSleeping) for e in await harness.events(context.build_id))

        await eventually(asleep, what="the build to sleep", timeout=30)
        sleeping = next(
            e for e in await harness.events(context.build_id) if isinstance(e, AgentSleeping)
        )
        assert abs((sleeping.resets_at - resets_at).total_seconds()) < 1
        state = await harness.deps.checkpoints.load(context.build_id)
        assert state is not None
        assert state.seq == sleeping.checkpoint_seq
        assert state.sandbox_id == before.sandbox_id
        assert on_sandbox.status(before.sandbox_id) == "paused"
        if on_sandbox.standin is not None:  # paused through the SDK, as E2B's own sandboxes
            assert ("POST", f"/sandboxes/{before.sandbox_id}/pause") in on_sandbox.standin.calls

        async def acked() -> bool:
            pending = await redis.xpending(AGENT_WORK.name, AGENT_RUNNER)
            return int(pending["pending"]) == 0

        await eventually(acked, what="the work entry to be acked", timeout=10)
        assert await redis.get(lease_key(context.build_id)) is None
        slept_at = state.iteration

        # The budget refills: the wake daemon's signal resumes the build from its checkpoint.
        await redis.delete(budget_gate_key(context.user_id))
        await Publisher(redis).emit(
            BudgetWake(
                build_id=context.build_id,
                project_id=context.project_id,
                user_id=context.user_id,
                producer="test",
                reason=WakeReason.ROLLOVER,
            )
        )

        async def completed() -> bool:
            return any(
                isinstance(e, BuildCompleted) for e in await harness.events(context.build_id)
            )

        await eventually(completed, what="the build to complete", timeout=60)
    finally:
        await _stop(tasks, consumers)
    events = await harness.events(context.build_id)
    # The same sandbox, resumed, not a new one from a snapshot.
    after = await harness.deps.checkpoints.load(context.build_id)
    assert after is not None
    assert after.sandbox_id == before.sandbox_id
    assert (on_sandbox.project(before.sandbox_id) / ".before-sleep").read_bytes() == b"kept"
    assert (on_sandbox.project(before.sandbox_id) / "app.py").is_file()
    if on_sandbox.standin is not None:  # the SDK's connect resumed it; the build ended it
        connects = ("POST", f"/v2/sandboxes/{before.sandbox_id}/connect")
        assert connects in on_sandbox.standin.calls
        assert len(on_sandbox.standin.records) == 1
    resumed = [e for e in events if isinstance(e, AgentResumed)]
    assert [r.reason for r in resumed] == ["wake:rollover"]
    assert resumed[0].checkpoint_seq == sleeping.checkpoint_seq
    iterations = [e.iteration for e in events if isinstance(e, AgentIterationCompleted)]
    assert iterations == list(range(1, len(iterations) + 1))
    assert iterations[slept_at] == slept_at + 1
    turns = [t for t, status, _ in _turns(scripted.log(), context.build_id) if status == 200]
    assert turns == sorted(set(turns)), "a turn completed before the sleep was asked for again"


async def test_a_cancel_request_stops_the_build_between_iterations(
    harness: Harness, scripted: ScriptedModel
) -> None:
    scripted.latency(200)
    context = context_ready()
    tasks, consumers = await _consume(harness)
    try:
        await Publisher(harness.redis).emit(context)

        async def started() -> bool:
            return any(
                isinstance(e, AgentIterationCompleted)
                for e in await harness.events(context.build_id)
            )

        await eventually(started, what="the first iteration", timeout=30)
        await Publisher(harness.redis).emit(
            BuildCancelRequested(
                build_id=context.build_id,
                project_id=context.project_id,
                user_id=context.user_id,
                producer="test",
                requested_by=context.user_id,
            )
        )

        async def cancelled() -> bool:
            return any(
                isinstance(e, BuildStatusChanged) and e.status is BuildStatus.CANCELLED
                for e in await harness.events(context.build_id)
            )

        await eventually(cancelled, what="the build to be cancelled", timeout=30)
    finally:
        await _stop(tasks, consumers)
    events = await harness.events(context.build_id)
    assert not any(isinstance(e, BuildCompleted) for e in events)
    state = await harness.deps.checkpoints.load(context.build_id)
    assert state is not None
    assert state.ended is not None
    assert state.ended["outcome"] == "cancelled"


async def test_an_error_event_mid_stream_is_metered_and_retried(
    harness: Harness, scripted: ScriptedModel
) -> None:
    scripted.faults({"cut_after_blocks": 1, "stream_error": "overloaded_error"})
    context = context_ready()
    outcome = await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
    assert outcome is Outcome.COMPLETED
    usage = [e for e in await harness.events(context.build_id) if isinstance(e, BudgetUsage)]
    assert usage[0].outcome == "error"
    assert usage[0].input_tokens > 0
    assert usage[1].outcome == "ok"
    assert [t for t, _, _ in _turns(scripted.log(), context.build_id)][:2] == [0, 0]


async def test_a_build_is_counted_in_the_runner_metrics(
    harness: Harness, scripted: ScriptedModel
) -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {
        "completed": value("cofounder_runner_drives_total", outcome="completed"),
        "iterations": value("cofounder_runner_iterations_total"),
        "bash_ok": value("cofounder_runner_tool_calls_total", tool="bash", outcome="ok"),
        "shots": value("cofounder_runner_tool_calls_total", tool="screenshot", outcome="error")
        + value("cofounder_runner_tool_calls_total", tool="screenshot", outcome="ok"),
        "read": value(
            "cofounder_runner_model_tokens_total", model="claude-sonnet-5-5", kind="cache_read"
        ),
        "calls": value("cofounder_runner_model_call_seconds_count", model="claude-sonnet-5-5"),
        "limited": value("cofounder_runner_model_retries_total", reason="rate_limited"),
    }
    scripted.faults({"status": 429, "retry_after": 0.05})
    context = context_ready()
    assert (
        await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
        is Outcome.COMPLETED
    )
    assert value("cofounder_runner_drives_total", outcome="completed") == before["completed"] + 1
    assert value("cofounder_runner_iterations_total") == before["iterations"] + 8
    assert (
        value("cofounder_runner_tool_calls_total", tool="bash", outcome="ok")
        == before["bash_ok"] + 2
    )
    # One screenshot: ok where the host has Chromium (the jail shows it), an error elsewhere.
    assert (
        value("cofounder_runner_tool_calls_total", tool="screenshot", outcome="error")
        + value("cofounder_runner_tool_calls_total", tool="screenshot", outcome="ok")
        == before["shots"] + 1
    )
    assert (
        value("cofounder_runner_model_tokens_total", model="claude-sonnet-5-5", kind="cache_read")
        > before["read"]
    )
    assert (
        value("cofounder_runner_model_call_seconds_count", model="claude-sonnet-5-5")
        == before["calls"] + 8
    )
    assert (
        value("cofounder_runner_model_retries_total", reason="rate_limited")
        == before["limited"] + 1
    )
    assert value("cofounder_runner_builds_active") == 0


async def test_a_build_given_up_on_fails_with_its_reason_instead_of_staying_running(
    runner_redis_url: str, migrated_database_url: str, scripted: ScriptedModel, tmp_path: Path
) -> None:
    # The model keeps failing: each delivery of the work entry makes one attempt and raises;
    # after the last delivery the entry is dead-lettered, and the build must end with it.
    scripted.faults(*[{"status": 500}] * 10)
    redis = connect_redis(runner_redis_url)
    harness = Harness(
        settings=fast_settings(
            redis_url=runner_redis_url,
            database_url=migrated_database_url,
            model_url=scripted.url,
            sandbox_root=tmp_path / "sandboxes",
            work_max_deliveries=2,
            model_attempts=1,
            consumer_retry_max_ms=50,
        ),
        redis=redis,
    )
    context = context_ready()
    tasks, consumers = await _consume(harness)
    try:
        await Publisher(redis).emit(context)

        async def failed() -> list[BuildFailed]:
            events = await harness.events(context.build_id)
            return [e for e in events if isinstance(e, BuildFailed)]

        async def ended() -> bool:
            return bool(await failed())

        await eventually(ended, what="build.failed", timeout=30)
        [end] = await failed()
        assert "given up after 2 attempts" in end.reason

        async def dead_lettered() -> bool:
            # The give-up hook (the build's end) runs before the entry is dead-lettered.
            dead: Any = await redis.xrange(dlq_key(AGENT_WORK.name))
            return any(f.get(b"event_id") == context.event_id.encode() for _, f in dead)

        await eventually(dead_lettered, what="the work entry's dead letter", timeout=30)
        state = await harness.deps.checkpoints.load(context.build_id)
        assert state is not None
        assert state.ended is not None
        assert state.ended["outcome"] == "failed"
        sandbox = json.loads(
            (harness.sandboxes.root / (state.sandbox_id or "") / "sandbox.json").read_text()
        )
        assert sandbox["status"] == "killed"
    finally:
        await _stop(tasks, consumers)
        await harness.close()
        await redis.aclose()


async def test_a_completed_build_s_sandbox_and_preview_are_ended_by_default(
    harness: Harness, scripted: ScriptedModel
) -> None:
    context = context_ready()
    await harness.seed_project(context)
    outcome = await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
    assert outcome is Outcome.COMPLETED
    events = await harness.events(context.build_id)
    completed = next(e for e in events if isinstance(e, BuildCompleted))
    assert completed.preview_url is not None
    with pytest.raises(urllib.error.URLError, match="refused"):  # nothing serves any more
        await asyncio.to_thread(_fetch, completed.preview_url)
    sandbox_id = next(e for e in events if isinstance(e, SnapshotRequested)).sandbox_id
    state = json.loads((harness.sandboxes.root / (sandbox_id or "") / "sandbox.json").read_text())
    assert state["status"] == "killed"
    # Its files are still there for the final snapshot.
    assert (harness.sandboxes.root / (sandbox_id or "") / "project" / "app.py").exists()


async def test_a_turn_s_events_survive_a_crash_between_its_checkpoint_and_its_publish(
    harness: Harness, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cofounder_agent_runner import loop

    crashed: list[int] = []
    publish = loop._Run.publish_outbox

    def dying_publish(self: Any, events: list[Any]) -> None:
        done = [e for e in events if isinstance(e, AgentIterationCompleted)]
        if done and done[0].iteration == 2 and not crashed:
            crashed.append(2)  # the process dies right after the turn's checkpoint committed
            raise RuntimeError("killed between the checkpoint and the publish")
        publish(self, events)

    monkeypatch.setattr(loop._Run, "publish_outbox", dying_publish)
    harness.deps.settings = harness.settings.model_copy(update={"sandbox_after_build": "keep"})
    context = context_ready()
    await harness.seed_project(context)
    repeated = REGISTRY.get_sample_value("cofounder_runner_model_calls_repeated_total") or 0
    with pytest.raises(RuntimeError, match="killed between"):
        await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
    assert crashed == [2]
    # Nothing of turn 2 went out; its checkpoint holds it.
    assert 2 not in [
        e.iteration
        for e in await harness.events(context.build_id)
        if isinstance(e, AgentIterationCompleted)
    ]
    outcome = await drive(harness.deps, build_id=context.build_id, context=context, reason="start")
    assert outcome is Outcome.COMPLETED

    events = await harness.events(context.build_id)
    iterations = [e.iteration for e in events if isinstance(e, AgentIterationCompleted)]
    assert iterations == list(range(1, len(iterations) + 1))  # no gap, none twice
    usage = [e for e in events if isinstance(e, BudgetUsage)]
    assert len(usage) == len(iterations) == len({u.event_id for u in usage})
    async with harness.deps.engine.connect() as conn:
        turns = (
            await conn.execute(
                select(func.count())
                .select_from(AgentCheckpoint)
                .where(AgentCheckpoint.build_id == context.build_id, AgentCheckpoint.kind == "turn")
            )
        ).scalar_one()
    assert turns == len(iterations)  # one usage event per checkpointed model call
    # A resume mid-run is counted: a call in flight when a runner dies is made again.
    now = REGISTRY.get_sample_value("cofounder_runner_model_calls_repeated_total") or 0
    assert now == repeated + 1
