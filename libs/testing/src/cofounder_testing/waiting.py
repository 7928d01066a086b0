"""Polling with a deadline: tests wait for a condition, never sleep and hope.

Two kinds of wait:

- :func:`eventually`: a condition of a system that is already running (an event handled, a key
  written), with the test's own ``timeout``.
- :func:`until_started` (async) and :func:`wait_started`: a server or service *process* the test
  started becomes ready. A cold Python process on a loaded two-core machine (two test runs at
  once) can take far longer to import and connect than on an idle one, so these share one
  generous overall deadline, ``TEST_STARTUP_DEADLINE_S`` (default 120 s), instead of short fixed
  timeouts. They stop as soon as a watched process has exited, and their failure gives its
  exit code and the tail of its log file (``cofounder_runtime.processes``, the supervisor
  ``cofounder dev`` uses too).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Final

from cofounder_runtime.processes import (
    Child,
    ProcessFailed,
    http_ok,
    log_says,
    until_ready,
    wait_ready,
)

__all__ = [
    "STARTUP_DEADLINE_VARIABLE",
    "NotStarted",
    "Watched",
    "eventually",
    "http_ok",
    "log_says",
    "startup_deadline_s",
    "until_started",
    "wait_started",
]

STARTUP_DEADLINE_VARIABLE: Final = "TEST_STARTUP_DEADLINE_S"
DEFAULT_STARTUP_DEADLINE_S: Final = 120.0


def startup_deadline_s() -> float:
    """How long a started process may take to become ready: ``TEST_STARTUP_DEADLINE_S`` seconds
    (default 120)."""
    raw = os.environ.get(STARTUP_DEADLINE_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_STARTUP_DEADLINE_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"{STARTUP_DEADLINE_VARIABLE}={raw!r} is not a positive number of seconds "
            f"(unset it for the default, {DEFAULT_STARTUP_DEADLINE_S:g})"
        )
    return value


class NotStarted(AssertionError):
    """A process the test started did not become ready: it exited, or the deadline passed."""


#: A process a wait depends on: its exit ends the wait, and its log explains the failure
#: (``cofounder_runtime.processes.Child``: name, process, log file).
Watched = Child


def _deadline() -> dict[str, Any]:
    """The supervisor's timeout and hint for a start-up wait."""
    return {
        "timeout_s": startup_deadline_s(),
        "hint": f" ({STARTUP_DEADLINE_VARIABLE}; raise it on a slow machine)",
    }


@contextlib.contextmanager
def _not_started() -> Iterator[None]:
    """The supervisor's :class:`ProcessFailed` as a test failure (:class:`NotStarted`)."""
    try:
        yield
    except ProcessFailed as exc:
        raise NotStarted(str(exc)) from None


def wait_started(
    ready: Callable[[], bool],
    *,
    what: str,
    watch: Sequence[Watched] = (),
    interval: float = 0.1,
) -> None:
    """Return once ``ready()`` is true; raise :class:`NotStarted` when a watched process exits
    first or the start-up deadline passes. ``ready`` returns False while the process is not up
    yet (catching its own "connection refused")."""
    with _not_started():
        wait_ready(ready, what=what, watch=watch, interval_s=interval, **_deadline())


async def until_started(
    ready: Callable[[], Awaitable[bool] | bool],
    *,
    what: str,
    watch: Sequence[Watched] = (),
    interval: float = 0.1,
) -> None:
    """:func:`wait_started` inside an event loop (``ready`` may be async)."""
    with _not_started():
        await until_ready(ready, what=what, watch=watch, interval_s=interval, **_deadline())


async def eventually(
    check: Callable[[], Awaitable[bool]],
    *,
    what: str,
    timeout: float = 10.0,
    interval: float = 0.05,
) -> None:
    """Return once ``check()`` is true; fail with ``what`` when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
