"""The loop's guards on real Redis, PostgreSQL and the scripted model: stuck detection, context
compaction, the lease's fencing of checkpoints, and cancelling a sleeping build."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from cofounder_agent_runner.checkpoints import RunState
from cofounder_agent_runner.handlers import on_cancel_requested
from cofounder_agent_runner.lease import Lease, LeaseBusy, LeaseLost
from cofounder_agent_runner.loop import Outcome, drive
from cofounder_agent_runner.testing import Harness, context_ready, fast_settings
from cofounder_contracts import (
    AgentSleeping,
    BuildCancelRequested,
    BuildFailed,
    BuildStatus,
    BuildStatusChanged,
)
from cofounder_contracts.keys import budget_gate_key
from cofounder_runtime.connections import connect_redis
from cofounder_scripted_model.process import ScriptedModel, start

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
