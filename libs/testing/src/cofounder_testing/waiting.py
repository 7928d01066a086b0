"""Polling with a deadline: tests wait for a condition, never sleep and hope.

Two kinds of wait:

- :func:`eventually`: a condition of a system that is already running (an event handled, a key
  written), with the test's own ``timeout``.
- :func:`until_started` (async) and :func:`wait_started`: a server or service *process* the test
  started becomes ready. A cold Python process on a loaded two-core machine (two test runs at
  once) can take far longer to import and connect than on an idle one, so these share one
  generous overall deadline, ``TEST_STARTUP_DEADLINE_S`` (default 120 s), instead of short fixed
  timeouts. They stop as soon as a watched process has exited, and their failure gives each
  watched process's exit code and the tail of its log file.
"""

from __future__ import annotations

import asyncio
import http.client
import math
import os
import subprocess
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

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
_TAIL_CHARS: Final = 3000
#: Straight to the test's own server, whatever proxy the environment names.
_DIRECT: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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


@dataclass(frozen=True)
class Watched:
    """A process a wait depends on: its exit ends the wait, and its log explains the failure.

    ``log`` is the file its stdout and stderr go to (``None``: they go nowhere we can read).
    """

    name: str
    process: subprocess.Popen[Any]
    log: Path | None = None

    def exited(self) -> bool:
        """Whether the process has ended."""
        return self.process.poll() is not None

    def report(self) -> str:
        """Its state (exit code, or still running) and the tail of its log."""
        code = self.process.poll()
        state = (
            f"exited with code {code}"
            if code is not None
            else f"still running (pid {self.process.pid})"
        )
        if self.log is None:
            return f"{self.name} {state} (its output was not kept)"
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"{self.name} {state}; its log {self.log} cannot be read: {exc}"
        tail = text[-_TAIL_CHARS:] if text.strip() else "(empty)"
        return f"{self.name} {state}; the end of {self.log}:\n{tail}"


def _reports(watch: Sequence[Watched]) -> str:
    return "".join(f"\n--- {w.report()}" for w in watch)


def _exited(what: str, watch: Sequence[Watched]) -> NotStarted | None:
    gone = [w.name for w in watch if w.exited()]
    if not gone:
        return None
    return NotStarted(f"{', '.join(gone)} exited while waiting for {what}{_reports(watch)}")


def _too_late(what: str, limit: float, watch: Sequence[Watched]) -> NotStarted:
    return NotStarted(
        f"{what} not ready after {limit:g} s ({STARTUP_DEADLINE_VARIABLE}; raise it on a slow "
        f"machine){_reports(watch)}"
    )


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
    limit = startup_deadline_s()
    deadline = time.monotonic() + limit
    while True:
        if ready():
            return
        if failed := _exited(what, watch):
            raise failed
        if time.monotonic() > deadline:
            raise _too_late(what, limit, watch)
        time.sleep(interval)


async def until_started(
    ready: Callable[[], Awaitable[bool] | bool],
    *,
    what: str,
    watch: Sequence[Watched] = (),
    interval: float = 0.1,
) -> None:
    """:func:`wait_started` inside an event loop (``ready`` may be async)."""
    limit = startup_deadline_s()
    deadline = time.monotonic() + limit
    while True:
        answer = ready()
        if answer if isinstance(answer, bool) else await answer:
            return
        if failed := _exited(what, watch):
            raise failed
        if time.monotonic() > deadline:
            raise _too_late(what, limit, watch)
        await asyncio.sleep(interval)


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


def http_ok(url: str) -> bool:
    """Whether ``url`` answers HTTP 200 now (False while nothing listens there yet)."""
    try:
        with _DIRECT.open(url, timeout=2) as response:
            return int(response.status) == 200
    except (OSError, http.client.HTTPException):
        return False


def log_says(log: Path, text: str) -> Callable[[], bool]:
    """A readiness check: ``log`` (a process's output file) contains ``text``."""

    def ready() -> bool:
        try:
            return text in log.read_text(errors="replace")
        except FileNotFoundError:
            return False

    return ready
