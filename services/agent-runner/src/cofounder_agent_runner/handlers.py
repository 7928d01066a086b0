"""The runner's event handlers: start a build, wake one, cancel one.

Each drives the build, then settles its entry with the consumer (``cofounder_runtime.consumer``),
whose contract has two answers: a handler that returns has its entry acked; one that raises has
it tried again (a delivery counted, a backoff, the handler run again), left pending when the
consumer is stopping (another runner, or this one restarted, takes it up), and dead-lettered
after ``WORK_MAX_DELIVERIES`` (``give_up`` first ends the build as failed). This module is the
one place where how a drive ended becomes one of those answers (:func:`_settle`):

- an :class:`Outcome` (completed, failed, cancelled, sleeping, duplicate): the build is settled
  for this entry; return, and the entry is acked. A sleeping build is resumed by a later
  ``budget.wake``, not by this entry.
- a :class:`HandedBack`: the build is neither ended nor asleep, and acking would lose it (it
  would stay ``running``, holding its plan slot, with nothing left to drive it). Raise
  :class:`HandBack` so that the entry stays pending, whatever the reason:

  - ``shutdown``: the consumer is stopping too, so it does not retry here; the entry waits
    for a runner's janitor (after ``CONSUMER_MIN_IDLE_MS``) or this runner's successor under
    the same name, and that drive resumes the build. On the entry's last delivery ``give_up``
    refuses to fail the build while the runner is shutting down.
  - ``model_unavailable``: retried after the consumer's backoff, resuming from the last
    checkpoint; if the API stays down for every delivery, ``give_up`` fails the build with the
    model's error in its reason.
  - ``lease_lost``: another drive may hold the build. The retry waits for the lease (ADR 0005)
    and finds the build as that drive left it: ended (its end said again, then acked),
    asleep, or to be resumed when nobody held it (Redis forgot the lease). If another consumer
    claimed the entry meanwhile, the consumer finds it is no longer ours and drops it.
  - ``sandbox_gone``: the build's sandbox vanished under a tool (killed, expired, its host
    lost). The retry starts a new sandbox holding the latest snapshot and resumes from the
    last checkpoint; the interrupted turn's model call is made again.

Any other exception out of a drive is an error, tried again the same way.
"""

from __future__ import annotations

import structlog

from cofounder_agent_runner.control import request_cancel
from cofounder_agent_runner.loop import DriveResult, HandBack, HandedBack, RunnerDeps, drive
from cofounder_contracts import BudgetWake, BuildCancelRequested, ContextReady

__all__ = ["on_cancel_requested", "on_context_ready", "on_wake"]

_log = structlog.get_logger("cofounder.runner.handlers")


def _settle(build_id: str, result: DriveResult, what: str) -> None:
    """Return (the entry is acked) for a settled build; raise :class:`HandBack` (the entry
    stays pending) for a handed-back one. See the module docstring."""
    if isinstance(result, HandedBack):
        _log.info(what, build_id=build_id, outcome="handed_back", reason=str(result.reason))
        raise HandBack(result)  # the entry stays pending
    _log.info(what, build_id=build_id, outcome=str(result))


async def on_context_ready(event: ContextReady, deps: RunnerDeps) -> None:
    """Drive the build; the entry stays pending (heart-beaten) until the drive returns."""
    result = await drive(deps, build_id=event.build_id, context=event, reason="start")
    _settle(event.build_id, result, "drive ended")


async def on_wake(event: BudgetWake, deps: RunnerDeps) -> None:
    """A sleeping build may continue: resume it from its checkpoints."""
    result = await drive(deps, build_id=event.build_id, context=None, reason=f"wake:{event.reason}")
    _settle(event.build_id, result, "drive ended")


async def on_cancel_requested(event: BuildCancelRequested, deps: RunnerDeps) -> None:
    """Flag the build: a running loop stops before its next model call. A build that nobody
    drives (asleep, or handed back) is taken up here and ended at once, its sandbox killed; one
    that has not started yet stops at its first check. A drive of the cancel handed back leaves
    its entry pending like any other (the flag is set: the next attempt ends the build)."""
    await request_cancel(deps.redis, event.build_id)
    result = await drive(deps, build_id=event.build_id, context=None, reason="cancel")
    _settle(event.build_id, result, "cancel handled")
