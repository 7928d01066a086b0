"""The runner's event handlers: start a build, wake one, cancel one."""

from __future__ import annotations

import structlog

from cofounder_agent_runner.control import request_cancel
from cofounder_agent_runner.loop import RunnerDeps, drive
from cofounder_contracts import BudgetWake, BuildCancelRequested, ContextReady

__all__ = ["on_cancel_requested", "on_context_ready", "on_wake"]

_log = structlog.get_logger("cofounder.runner.handlers")


async def on_context_ready(event: ContextReady, deps: RunnerDeps) -> None:
    """Drive the build; the entry stays pending (heart-beaten) until the drive returns."""
    outcome = await drive(deps, build_id=event.build_id, context=event, reason="start")
    _log.info("drive ended", build_id=event.build_id, outcome=str(outcome))


async def on_wake(event: BudgetWake, deps: RunnerDeps) -> None:
    """A sleeping build may continue: resume it from its checkpoints."""
    outcome = await drive(
        deps, build_id=event.build_id, context=None, reason=f"wake:{event.reason}"
    )
    _log.info("drive ended", build_id=event.build_id, outcome=str(outcome))


async def on_cancel_requested(event: BuildCancelRequested, deps: RunnerDeps) -> None:
    """Flag the build: a running loop stops before its next model call. A build that nobody
    drives (asleep, or handed back) is taken up here and ended at once, its sandbox killed; one
    that has not started yet stops at its first check."""
    await request_cancel(deps.redis, event.build_id)
    outcome = await drive(deps, build_id=event.build_id, context=None, reason="cancel")
    _log.info("cancel handled", build_id=event.build_id, outcome=str(outcome))
