"""Test and benchmark helpers: an in-process runner on real Redis, PostgreSQL, the scripted model
server and local sandboxes, and readers of what a build emitted."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from sqlalchemy import insert

from cofounder_agent_runner.bootstrap import build_deps
from cofounder_agent_runner.loop import RunnerDeps
from cofounder_agent_runner.settings import RunnerSettings
from cofounder_contracts import ALL_EVENTS, Codec, ContextReady, Event, QnA
from cofounder_contracts.streams import (
    BUDGET_USAGE,
    BUILD_EVENTS,
    BUSINESS_EVENTS,
    SNAPSHOT_REQUESTS,
)
from cofounder_db.models import Project, User
from cofounder_runtime.streamreply import read_entries
from cofounder_sandbox.local import LocalSandboxes

if TYPE_CHECKING:  # the tests' stand-in; the runner itself never imports it
    from cofounder_e2b_standin import Standin

__all__ = ["Harness", "OnSandbox", "context_ready", "fast_settings", "read_build_events"]

_CODEC = Codec(ALL_EVENTS)
_WATCHED = (BUILD_EVENTS.name, BUDGET_USAGE.name, SNAPSHOT_REQUESTS.name, BUSINESS_EVENTS.name)


def fast_settings(
    *, redis_url: str, database_url: str, model_url: str, sandbox_root: Path, **overrides: Any
) -> RunnerSettings:
    """Settings with short timeouts and backoffs, for tests."""
    values: dict[str, Any] = {
        "environment": "development",  # outside pytest too (the runner benchmark)
        "redis_url": redis_url,
        "database_url": database_url,
        "anthropic_base_url": model_url,
        "sandbox": "local",
        "sandbox_root": str(sandbox_root),
        "model_backoff_s": 0.05,
        "model_backoff_max_s": 0.2,
        "consumer_min_idle_ms": 3_000,
        "consumer_block_ms": 100,
        "consumer_retry_base_ms": 50,
        "consumer_retry_max_ms": 500,
        "lease_ttl_ms": 2_000,
        "bash_timeout_s": 30.0,
        "log_json": False,
    }
    values.update(overrides)
    return RunnerSettings(**values)


def context_ready(
    *,
    tier: str = "bootstrapper",
    suspended: bool = False,
    suspension_reason: str | None = None,
    project_id: str | None = None,
    user_id: str | None = None,
) -> ContextReady:
    """A ``context.ready`` for a new build."""
    return ContextReady(
        build_id=str(uuid.uuid4()),
        project_id=project_id or str(uuid.uuid4()),
        user_id=user_id or str(uuid.uuid4()),
        producer="test",
        goal="Build the plant watering reminder MVP",
        idea_brief={"name": "Plantr", "problem": "Plants die when owners forget to water them."},
        qna=[QnA(question="Who is it for?", answer="Busy plant owners")],
        tier=tier,
        suspended=suspended,
        suspension_reason=suspension_reason,
    )


async def read_build_events(
    redis: Redis, build_id: str, streams: Sequence[str] = _WATCHED
) -> list[Event]:
    """Every event of ``build_id`` (``*``: of every build) on the watched streams, each stream in
    order, streams in turn."""
    out: list[Event] = []
    for stream in streams:
        for _, fields in read_entries([[stream.encode(), await redis.xrange(stream)]]):
            if fields is None:
                continue
            event = _CODEC.decode(fields)
            if build_id in ("*", event.build_id):
                out.append(event)
    return out


@dataclass
class Harness:
    """An in-process runner: its settings and dependencies; close it when done."""

    settings: RunnerSettings
    redis: Redis
    deps: RunnerDeps = field(init=False)

    def __post_init__(self) -> None:
        self.deps = build_deps(self.settings, self.redis)

    @property
    def sandboxes(self) -> LocalSandboxes:
        assert isinstance(self.deps.sandboxes, LocalSandboxes)
        return self.deps.sandboxes

    async def seed_project(self, context: ContextReady) -> None:
        """The user and project rows a build's post-build steps touch."""
        async with self.deps.engine.begin() as conn:
            await conn.execute(
                insert(User).values(
                    id=context.user_id, email=f"{context.user_id}@example.com", tier=context.tier
                )
            )
            await conn.execute(
                insert(Project).values(
                    id=context.project_id, owner_id=context.user_id, name="Plantr"
                )
            )

    async def events(self, build_id: str) -> list[Event]:
        return await read_build_events(self.redis, build_id)

    async def close(self) -> None:
        if isinstance(self.deps.sandboxes, LocalSandboxes):
            await self.deps.sandboxes.kill_all()  # E2B's: their service ends them
        await self.deps.model.client.close()
        await self.deps.checkpoints.close()
        await self.deps.engine.dispose()


@dataclass
class OnSandbox:
    """An in-process runner on one kind of sandbox (``local``, or ``e2b-standin``: E2B through
    the unmodified SDK against the stand-in), with a folder snapshot store (a replacement sandbox
    gets the latest)."""

    kind: str
    harness: Harness
    #: The folder of the sandboxes (the stand-in's are local sandboxes there too).
    root: Path
    standin: Standin | None = None

    def project(self, sandbox_id: str) -> Path:
        """The project folder of a sandbox, seen from the host."""
        return self.root / sandbox_id / "project"

    def status(self, sandbox_id: str) -> str:
        """``running``, ``paused`` or ``killed``, as the sandbox's own state says (for E2B, as
        the stand-in's control plane has it)."""
        if self.standin is not None:
            return self.standin.records[sandbox_id].state
        state = json.loads((self.root / sandbox_id / "sandbox.json").read_text())
        return str(state["status"])
