"""Periodic background loops: a step every interval until a stop event, written once.

Every service has a few (the consumer's heartbeat and janitor, a lease's keep-alive, the
budget's wake daemon, the gateway's reconciler, the processed-events retention); they share the
same rules, kept here:

- a failing step is logged with the loop's name and tried again next period: it never ends the
  loop (a cancellation does, as it should);
- a stop ends the wait between steps at once, never after the rest of the interval, and never
  interrupts a step (a step cancelled inside a client call may leave it in a bad state);
- the interval is measured from the end of one step to the start of the next (a slow step
  delays the next one rather than piling them up), optionally with jitter so the replicas of a
  service do not run in lockstep.

A step that finds the loop should end (a lease found lost) sets ``stop`` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

__all__ = ["every", "expire_at", "stopped_within"]

_log = structlog.get_logger("cofounder.periodic")


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds``, or less when ``stop`` is set meanwhile; whether it is set."""
    if not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(seconds, 0))
    return stop.is_set()


async def every(
    interval_s: float,
    step: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    name: str,
    log: Any = None,
    failed: str | None = None,
    jitter: float = 0.0,
    immediately: bool = True,
) -> None:
    """Run ``step()`` every ``interval_s`` seconds until ``stop`` is set, then return.

    ``immediately``: the first step runs now (else after the first interval). ``jitter``: each
    wait is ``interval_s`` times a random factor within ``1 ± jitter``. A step that raises is
    logged as a warning on ``log`` (a structlog logger; default ``cofounder.periodic``) with the
    message ``failed`` (default "<name> failed; retrying"), the loop's name and the error, and
    the loop goes on.
    """
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be within [0, 1), not {jitter}")
    logger = _log if log is None else log
    message = failed or f"{name} failed; retrying"

    def pause() -> float:
        return interval_s * random.uniform(1 - jitter, 1 + jitter) if jitter else interval_s

    if not immediately and await stopped_within(stop, pause()):
        return
    while not stop.is_set():
        try:
            await step()
        except Exception as exc:  # noqa: BLE001 - logged; the next period tries again
            logger.warning(message, loop=name, error=repr(exc))
        if await stopped_within(stop, pause()):
            return


async def expire_at(
    deadline: Callable[[], float], stop: asyncio.Event, expired: Callable[[], None]
) -> None:
    """Call ``expired`` once ``deadline()`` (``time.monotonic``; renewals move it later) has
    passed, unless ``stop`` is set first: the watch on a lease or mutex whose renewals may hang
    (a Redis cut off), which cannot tell whether it is still held once its TTL has run out."""
    while not stop.is_set():
        left = deadline() - time.monotonic()
        if left <= 0:
            expired()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), left)
