"""A tool still running when its drive loses the build's lease is stopped, and what it started
in the sandbox is killed: two runners must never drive one sandbox, and a 10-minute command of
the runner that lost the build must not go on writing beside its successor."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2b.sandbox_async.commands.command import Commands

from cofounder_agent_runner.loop import HandBackReason, HandedBack, drive
from cofounder_agent_runner.testing import context_ready
from cofounder_contracts import ToolCalled, ToolCompleted
from cofounder_contracts.keys import lease_key
from cofounder_sandbox.e2b import E2BSandbox
from cofounder_scripted_model.process import ScriptedModel, start
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration

#: A length of this run's own, so the test finds (and cleans up) its own commands only, never
#: those of another test run on the same machine.
_SLEEP = f"607.{secrets.randbelow(10**6):06d}"


@pytest.fixture(scope="module")
def slow_tool_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedModel]:
    turns = [
        {"tools": [{"name": "bash", "input": {"command": f"sleep {_SLEEP}; touch late"}}]},
        {"tools": [{"name": "finish", "input": {"summary": "done"}}]},
    ]
    path = tmp_path_factory.mktemp("slow") / "slow.yaml"
    path.write_text(yaml.safe_dump({"name": "slow", "turns": turns}))
    with start(str(path)) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_command_left_behind() -> Iterator[None]:
    """A failed run must not leave its 10-minute command on the machine."""
    yield
    for pid in _sleepers():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def _none_sleeping() -> bool:
    return not _sleepers()


def _sleepers() -> list[int]:
    """The pids of the test's ``sleep``, wherever it runs (the sandboxes' processes are the
    host's too, seen from outside their pid namespace)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "cmdline").read_bytes() == f"sleep\0{_SLEEP}\0".encode():
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("kind", ["local", "e2b-standin"])
async def test_a_tool_running_when_the_lease_is_lost_is_stopped_and_what_it_started_killed(
    kind: str, runner_on: Callable[..., Any], slow_tool_model: ScriptedModel
) -> None:
    context = context_ready()
    build = context.build_id
    async with runner_on(kind, slow_tool_model.url, bash_timeout_s=900.0) as on:
        harness = on.harness
        await harness.seed_project(context)
        driving = asyncio.create_task(
            drive(harness.deps, build_id=build, context=context, reason="start")
        )

        async def sleeping() -> bool:
            return bool(_sleepers())

        await eventually(sleeping, what="the 10-minute command to start", timeout=60)
        # Another runner takes the build over (its keep-alive finds the lease not ours).
        await harness.redis.set(lease_key(build), "successor|99", px=60_000)

        result = await asyncio.wait_for(driving, timeout=30)
        assert isinstance(result, HandedBack)
        assert result.reason is HandBackReason.LEASE_LOST

        await eventually(_none_sleeping, what="the lost drive's command to be killed", timeout=10)
        events = await harness.events(build)
        assert [e.name for e in events if isinstance(e, ToolCalled)] == ["bash"]
        assert not [e for e in events if isinstance(e, ToolCompleted)]
        # Its shell was not left to write anything more.
        assert not any(on.root.glob("*/project/late"))


@pytest.mark.parametrize("kind", ["local", "e2b-standin"])
async def test_a_command_given_up_is_killed_with_every_process_it_started(
    kind: str,
    runner_on: Callable[..., Any],
    slow_tool_model: ScriptedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # envd's own kill signals a command's first process only, where the stand-in's signals its
    # group. With the SDK's kill doing nothing, only the adapter's own kill of the command's
    # group can stop the job it left in the background and the one it waits for.
    async def first_process_only(*args: Any, **kwargs: Any) -> bool:
        return True

    monkeypatch.setattr(Commands, "kill", first_process_only)
    async with runner_on(kind, slow_tool_model.url) as on:
        sandbox = await on.harness.deps.sandboxes.create(build_id="given-up", metadata={})
        command = f"sleep {_SLEEP} & sleep {_SLEEP}; touch late"
        running = asyncio.create_task(sandbox.run(command, timeout=900))

        async def both_sleeping() -> bool:
            return len(_sleepers()) == 2

        await eventually(both_sleeping, what="the command and its job to start", timeout=60)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running

        await eventually(_none_sleeping, what="the command and its job to be killed", timeout=10)
        assert not any(on.root.glob("*/project/late"))
        await sandbox.kill()


async def test_an_e2b_command_whose_runner_is_gone_is_killed_by_its_own_limit(
    runner_on: Callable[..., Any], slow_tool_model: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The runner died during the command (nobody kills its group at the deadline), and envd's
    # deadline reaches the wrapper it started only: the command's own limit, a little past
    # the deadline, kills it with all it started.
    async def runner_gone(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(E2BSandbox, "_kill_group", runner_gone)
    async with runner_on("e2b-standin", slow_tool_model.url) as on:
        sandbox = await on.harness.deps.sandboxes.create(build_id="orphan", metadata={})
        command = f"sleep {_SLEEP} & sleep {_SLEEP}; touch late"
        result = await sandbox.run(command, timeout=1)
        assert result.timed_out

        await eventually(_none_sleeping, what="the command's own limit to kill it", timeout=30)
        assert not any(on.root.glob("*/project/late"))
        await sandbox.kill()


async def test_an_e2b_command_of_100_kb_runs(
    runner_on: Callable[..., Any], slow_tool_model: ScriptedModel
) -> None:
    # A file written by a heredoc, as agents do: the command goes to envd as one argument,
    # which the kernel caps at 128 KiB, so the wrapper must not hold it twice.
    body = "x" * 100_000
    async with runner_on("e2b-standin", slow_tool_model.url) as on:
        sandbox = await on.harness.deps.sandboxes.create(build_id="big", metadata={})
        result = await sandbox.run(
            f"cat > big.txt <<'EOF'\n{body}\nEOF\nwc -c < big.txt", timeout=30
        )
        assert (result.exit_code, result.output.strip()) == (0, str(len(body) + 1))
        await sandbox.kill()


async def test_an_e2b_command_cancelled_while_it_starts_does_not_run_on(
    runner_on: Callable[..., Any],
    slow_tool_model: ScriptedModel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Cancelled before the SDK handed the command over (at once, or a moment in): it is killed
    # once started, or kept from starting, and the SDK is not left with a failure nobody reads.
    async with runner_on("e2b-standin", slow_tool_model.url) as on:
        sandbox = await on.harness.deps.sandboxes.create(build_id="starting", metadata={})
        for delay in (0.0, 0.01, 0.05, 0.2):
            running = asyncio.create_task(sandbox.run(f"sleep 1; touch late-{delay}", timeout=900))
            await asyncio.sleep(delay)
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        # Longer than the commands would have taken: none of them ran to its end.
        await asyncio.sleep(2.5)
        assert not any(on.root.glob("*/project/late-*"))
        await sandbox.kill()
    gc.collect()
    assert "never retrieved" not in caplog.text
