"""``cofounder serve agent-runner`` as real processes on real PostgreSQL and Redis, the scripted
model server and local sandboxes: a whole build, and a runner killed in the middle of one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cofounder_agent_runner.testing import context_ready, read_build_events
from cofounder_contracts import (
    AgentIterationCompleted,
    AgentResumed,
    BudgetWake,
    BuildCompleted,
    BuildStatusChanged,
    ToolCalled,
    ToolCompleted,
    WakeReason,
)
from cofounder_contracts.streams import AGENT_RUNNER, AGENT_WORK, BUDGET_SIGNALS
from cofounder_db.engine import create_engine
from cofounder_db.models import AgentCheckpoint
from cofounder_runtime.connections import connect_redis
from cofounder_runtime.publisher import Publisher
from cofounder_scripted_model.process import ScriptedModel
from cofounder_testing.services import start_service
from cofounder_testing.waiting import Watched, eventually, log_says, until_started

pytestmark = pytest.mark.e2e


@pytest.fixture
def e2e_redis_url(own_redis_url: str) -> str:
    """The test's own Redis: the runner processes read the real stream names."""
    return own_redis_url


class Runners:
    """Runner processes started by one test; all killed at the end."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env = env
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.watched: dict[int, Watched] = {}  # by pid

    def start(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        """Start a runner called ``name``; each life logs to a file of its own."""
        life = len(self.procs) + 1
        log = self.logdir / f"{name}-{life}.log"
        runner = start_service(
            "agent-runner", {**self.env, **env, "CONSUMER_NAME": name}, log, name=name
        )
        self.procs.append(runner.process)
        self.watched[runner.process.pid] = runner
        return runner.process

    async def started(self, *procs: subprocess.Popen[bytes]) -> None:
        """Wait until the runners' consumers have started (each life's own log says so)."""
        watch = [self.watched[p.pid] for p in procs]
        checks = [log_says(w.log, "consumer started") for w in watch if w.log is not None]
        await until_started(
            lambda: all(check() for check in checks),
            what=" and ".join(f"runner {w.name}" for w in watch),
            watch=watch,
        )

    def assert_alive(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            raise AssertionError(f"a runner exited ({proc.returncode}):\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob("*.log")))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def runners(
    e2e_redis_url: str, migrated_database_url: str, scripted: ScriptedModel, tmp_path: Path
) -> Iterator[Runners]:
    env = {
        **os.environ,
        "REDIS_URL": e2e_redis_url,
        "DATABASE_URL": migrated_database_url,
        "ANTHROPIC_BASE_URL": scripted.url,
        "SANDBOX": "local",
        "SANDBOX_ROOT": str(tmp_path / "sandboxes"),
        "CONSUMER_MIN_IDLE_MS": "3000",
        "CONSUMER_BLOCK_MS": "200",
        "CONSUMER_RETRY_MAX_MS": "500",
        "LEASE_TTL_MS": "2000",
        "MODEL_BACKOFF_S": "0.05",
        "LOG_JSON": "false",
        "SANDBOX_AFTER_BUILD": "keep",  # the tests fetch the previews of completed builds
    }
    env.pop("ANTHROPIC_API_KEY", None)
    pool = Runners(env, tmp_path)
    yield pool
    pool.stop()
    # Sandboxes (and the dev servers in them) outlive the runners, as E2B's do: end them.
    subprocess.run([sys.executable, "-c", _KILL, str(tmp_path / "sandboxes")], check=False)


_KILL = """
import asyncio, sys
from cofounder_sandbox.local import LocalSandboxes
asyncio.run(LocalSandboxes(sys.argv[1]).kill_all())
"""


async def _checkpoints(database_url: str, build_id: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            count = await conn.execute(
                select(func.count())
                .select_from(AgentCheckpoint)
                .where(AgentCheckpoint.build_id == build_id)
            )
            return int(count.scalar() or 0)
    finally:
        await engine.dispose()


async def test_a_runner_process_builds_the_demo_app(
    runners: Runners, e2e_redis_url: str, migrated_database_url: str, tmp_path: Path
) -> None:
    redis = connect_redis(e2e_redis_url)
    try:
        runner = runners.start(f"runner-{uuid.uuid4().hex[:6]}")
        await runners.started(runner)
        context = context_ready()
        await Publisher(redis).emit(context)

        async def completed() -> bool:
            runners.assert_alive(runner)
            return any(
                isinstance(e, BuildCompleted)
                for e in await read_build_events(redis, context.build_id)
            )

        await eventually(completed, what="build.completed", timeout=90)
        events = await read_build_events(redis, context.build_id)
    finally:
        await redis.aclose()
    build_events = [
        e
        for e in events
        if isinstance(
            e,
            BuildStatusChanged
            | AgentIterationCompleted
            | ToolCalled
            | ToolCompleted
            | BuildCompleted,
        )
    ]
    assert isinstance(build_events[0], BuildStatusChanged)
    assert isinstance(build_events[-1], BuildCompleted)
    # In order: each tool call completes before the next starts; iterations count up.
    names = [type(e).__name__ for e in build_events[1:-1]]
    for i, name in enumerate(names):
        if name == "ToolCalled":
            assert names[i + 1] == "ToolCompleted"
    iterations = [e.iteration for e in events if isinstance(e, AgentIterationCompleted)]
    assert iterations == list(range(1, len(iterations) + 1))
    done = build_events[-1]
    assert isinstance(done, BuildCompleted)
    with urllib.request.urlopen(done.preview_url or "", timeout=5) as page:  # noqa: ASYNC210 - local
        assert page.status == 200
    workspaces = list((tmp_path / "sandboxes").glob("*/project"))
    assert len(workspaces) == 1
    assert {p.name for p in workspaces[0].iterdir()} >= {"app.py", "test_app.py", "public"}
    assert await _checkpoints(migrated_database_url, context.build_id) == len(iterations) + 2


@pytest.mark.parametrize(
    "successor",
    [
        pytest.param("runner-b", id="a-new-name"),
        # What Kubernetes does when a container restarts in its pod (CONSUMER_NAME is the pod's
        # name): the successor re-reads its own pending entry at once, while the dead one's
        # lease still lives. It must wait the lease out, not ack the entry as a duplicate.
        pytest.param("runner-a", id="the-same-name"),
    ],
)
async def test_a_killed_runner_s_build_is_finished_by_its_successor(
    runners: Runners,
    scripted: ScriptedModel,
    e2e_redis_url: str,
    migrated_database_url: str,
    successor: str,
) -> None:
    scripted.latency(400)
    # A lease that outlives the restart (as the default 20 s does): the successor finds it held.
    env = (
        {"LEASE_TTL_MS": "8000", "CONSUMER_MIN_IDLE_MS": "9000"} if successor == "runner-a" else {}
    )
    redis = connect_redis(e2e_redis_url)
    try:
        first = runners.start("runner-a", **env)
        await runners.started(first)
        context = context_ready()
        await Publisher(redis).emit(context)

        async def iterations(n: int) -> bool:
            runners.assert_alive(first)
            events = await read_build_events(redis, context.build_id)
            return any(isinstance(e, AgentIterationCompleted) and e.iteration >= n for e in events)

        await eventually(lambda: iterations(3), what="three iterations", timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = max(
            e.iteration
            for e in await read_build_events(redis, context.build_id)
            if isinstance(e, AgentIterationCompleted)
        )
        second = runners.start(successor, **env)
        await runners.started(second)

        async def completed() -> bool:
            runners.assert_alive(second)
            return any(
                isinstance(e, BuildCompleted)
                for e in await read_build_events(redis, context.build_id)
            )

        await eventually(completed, what="the other runner to finish the build", timeout=120)
        events = await read_build_events(redis, context.build_id)
    finally:
        await redis.aclose()
    resumed = [e for e in events if isinstance(e, AgentResumed)]
    assert len(resumed) == 1
    assert resumed[0].reason == "recovered"
    # The scripted server's log: no completed iteration was asked for again. Only the turn in
    # flight when the runner died may appear twice.
    served = [
        e["turn"]
        for e in scripted.log()
        if e.get("build") == context.build_id and e.get("status") == 200
    ]
    repeated = {t for t in served if served.count(t) > 1}
    assert repeated <= {killed_at}, (served, killed_at)
    assert all(t not in repeated for t in range(killed_at))
    completed_events = [e for e in events if isinstance(e, BuildCompleted)]
    assert len(completed_events) == 1
    with urllib.request.urlopen(completed_events[0].preview_url or "", timeout=5) as page:  # noqa: ASYNC210
        assert page.status == 200


async def test_a_second_live_runner_waits_for_the_build_instead_of_dropping_or_stealing_it(
    runners: Runners, scripted: ScriptedModel, e2e_redis_url: str
) -> None:
    scripted.latency(300)
    redis = connect_redis(e2e_redis_url)
    try:
        pair = [runners.start("runner-a"), runners.start("runner-b")]
        await runners.started(*pair)
        context = context_ready()
        publisher = Publisher(redis)
        await publisher.emit(context)

        async def iterations(n: int) -> bool:
            for proc in pair:
                runners.assert_alive(proc)
            events = await read_build_events(redis, context.build_id)
            return any(isinstance(e, AgentIterationCompleted) and e.iteration >= n for e in events)

        await eventually(lambda: iterations(2), what="two iterations", timeout=60)
        # A second entry for the running build (a late wake): whichever runner gets it waits
        # for the lease while the build runs, then finds it ended.
        await publisher.emit(
            BudgetWake(
                build_id=context.build_id,
                project_id=context.project_id,
                user_id=context.user_id,
                producer="budget",
                reason=WakeReason.TOP_UP,
            )
        )

        async def settled() -> bool:
            done = any(
                isinstance(e, BuildCompleted)
                for e in await read_build_events(redis, context.build_id)
            )
            # The wake travels on the budget signals, the start on the work stream: both acked.
            work = await redis.xpending(AGENT_WORK.name, AGENT_RUNNER)
            wakes = await redis.xpending(BUDGET_SIGNALS.name, AGENT_RUNNER)
            return done and work["pending"] == 0 and wakes["pending"] == 0

        await eventually(settled, what="the build done and both entries acked", timeout=120)
        events = await read_build_events(redis, context.build_id)
    finally:
        await redis.aclose()
    # One end: the wake's drive found the build ended and said its end again, under its id
    # (consumers absorb the repeat), or arrived after it and did the same.
    assert len({e.event_id for e in events if isinstance(e, BuildCompleted)}) == 1
    assert not [e for e in events if isinstance(e, AgentResumed)]  # never driven twice
    counted = [e.iteration for e in events if isinstance(e, AgentIterationCompleted)]
    assert counted == list(range(1, len(counted) + 1))
