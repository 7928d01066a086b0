"""The composition root: settings in, running consumers out. Nothing connects at import."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import sys

import anthropic
import structlog
from redis.asyncio import Redis

from cofounder_agent_runner.checkpoints import CheckpointStore
from cofounder_agent_runner.handlers import on_cancel_requested, on_context_ready, on_wake
from cofounder_agent_runner.loop import RunnerDeps, give_up
from cofounder_agent_runner.model import ModelClient
from cofounder_agent_runner.settings import RunnerSettings
from cofounder_contracts import BudgetWake, BuildCancelRequested, ContextReady, Event
from cofounder_contracts.streams import (
    AGENT_RUNNER,
    AGENT_WORK,
    BUDGET_SIGNALS,
    BUILD_CONTROL,
    Stream,
)
from cofounder_runtime.consumer import Consumer, Handler
from cofounder_runtime.options import ConsumerOptions
from cofounder_runtime.publisher import Publisher
from cofounder_runtime.service import run_service, service_process
from cofounder_sandbox.base import Sandboxes
from cofounder_sandbox.jail import Limits
from cofounder_sandbox.local import LocalSandboxes
from cofounder_snapshots.screenshots import ScreenshotStore
from cofounder_snapshots.store import SnapshotStore

__all__ = ["build_consumers", "build_deps", "main", "make_sandboxes", "model_client"]

_log = structlog.get_logger("cofounder.runner")

#: Anthropic's API, given to the SDK by name when the settings choose it: left ``None``, the SDK
#: would read ``ANTHROPIC_BASE_URL`` itself, and compose sets that empty when it is unset (an
#: empty base URL fails every call). Where calls go is the settings' decision alone.
ANTHROPIC_API_URL = "https://api.anthropic.com"


def model_client(settings: RunnerSettings) -> ModelClient:
    """The SDK client (its own retries off: ours meter every attempt) and our retry policy."""
    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
    client = anthropic.AsyncAnthropic(
        api_key=key or "scripted-model-needs-no-key",
        base_url=settings.model_base_url or ANTHROPIC_API_URL,
        max_retries=0,
        timeout=settings.model_timeout_s,
    )
    return ModelClient(
        client,
        fallback_model=settings.fallback_model,
        overloaded_before_fallback=settings.overloaded_before_fallback,
        attempts=settings.model_attempts,
        backoff_s=settings.model_backoff_s,
        backoff_max_s=settings.model_backoff_max_s,
    )


def make_sandboxes(settings: RunnerSettings) -> Sandboxes:
    if settings.sandbox_kind == "e2b":
        from cofounder_sandbox.e2b import E2BSandboxes

        assert settings.e2b_api_key is not None
        return E2BSandboxes(
            api_key=settings.e2b_api_key.get_secret_value(),
            template=settings.e2b_template,
            timeout_s=settings.e2b_timeout_s,
        )
    sandboxes = LocalSandboxes(
        settings.sandbox_root,
        isolation=settings.sandbox_isolation,
        egress=settings.sandbox_egress,
        limits={tier: Limits(**values) for tier, values in settings.sandbox_limits.items()},
    )
    sandboxes.check()  # no isolation tools: refuse to start, saying what to install
    return sandboxes


def build_deps(
    settings: RunnerSettings,
    redis: Redis,
    snapshots: SnapshotStore | None = None,
    screenshots: ScreenshotStore | None = None,
) -> RunnerDeps:
    engine = settings.create_engine(pre_ping=False)
    return RunnerDeps(
        settings=settings,
        redis=redis,
        engine=engine,
        publisher=Publisher(redis),
        checkpoints=CheckpointStore(engine),
        sandboxes=make_sandboxes(settings),
        model=model_client(settings),
        runner_name=settings.consumer_name,
        snapshots=snapshots,
        screenshots=screenshots,
    )


def build_consumers(settings: RunnerSettings, deps: RunnerDeps) -> list[Consumer]:
    """Builds to start, builds to wake (both long-running, pending while driven), cancels."""
    # Builds run for minutes: a dead runner's builds are shared out among the live runners'
    # janitors a few per pass, not all taken by the first one to look.
    work_options = dataclasses.replace(
        settings.consumer_options(),
        max_deliveries=settings.work_max_deliveries,
        claim_per_pass=settings.work_claim_per_pass,
    )
    wiring: list[tuple[Stream, type[Event], Handler, ConsumerOptions]] = [
        (AGENT_WORK, ContextReady, functools.partial(on_context_ready, deps=deps), work_options),
        (BUDGET_SIGNALS, BudgetWake, functools.partial(on_wake, deps=deps), work_options),
        (
            BUILD_CONTROL,
            BuildCancelRequested,
            functools.partial(on_cancel_requested, deps=deps),
            settings.consumer_options(),
        ),
    ]
    return [
        Consumer.for_stream(
            deps.redis,
            stream,
            group=AGENT_RUNNER,
            consumer=settings.consumer_name,
            handlers={event_type: handler},
            options=options,
            # A work entry given up on fails its build (never left running); a cancel request
            # given up on is only a record: the build goes on.
            on_give_up=functools.partial(give_up, deps) if stream is not BUILD_CONTROL else None,
        )
        for stream, event_type, handler, options in wiring
    ]


async def main() -> None:
    """Run the agent runner until SIGTERM."""
    async with service_process(RunnerSettings, service="agent-runner") as process:
        settings, redis = process.settings, process.redis
        snapshots = settings.snapshot_store()
        if snapshots is not None:
            await process.enter(snapshots)
        screenshots = settings.screenshot_store()
        if screenshots is not None:
            await process.enter(screenshots)
        deps = build_deps(settings, redis, snapshots, screenshots)
        # Closed after the consumers stopped, in this order reversed: the sandboxes first.
        process.closing(deps.engine, deps.engine.dispose)
        process.closing(deps.checkpoints, deps.checkpoints.close)
        process.closing(deps.model, deps.model.client.close)
        process.closing(deps.sandboxes, deps.sandboxes.close)
        consumers = build_consumers(settings, deps)

        async def hand_back_on_stop(stop: asyncio.Event) -> None:
            """Running drives hand their builds back once the consumers start to stop."""
            stopped = asyncio.ensure_future(consumers[0].stopped_event.wait())
            ended = asyncio.ensure_future(stop.wait())
            await asyncio.wait({stopped, ended}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            ended.cancel()
            deps.stopping.set()

        _log.info(
            "agent runner starting",
            sandbox=settings.sandbox_kind,
            model_base_url=settings.model_base_url or ANTHROPIC_API_URL,
            python=sys.version.split()[0],
        )
        await run_service(process, consumers, background=[("hand-back-on-stop", hand_back_on_stop)])
