"""Child processes, supervised: started with their output in a log file, waited on until they
answer, stopped with SIGTERM (SIGKILL after a grace), and explained when they die.

The one supervisor of ``cofounder dev`` and of the test harness (``cofounder_testing``):

- :func:`start` runs a named child whose stdout *and* stderr go to a log file (appended: a
  restart under the same name adds to it), so whatever it said before dying can be shown;
- :func:`wait_ready` / :func:`until_ready` poll a readiness check (a callable: an HTTP 200, a
  port that answers, a line in the log; never a fixed sleep) and fail at once when a watched
  child exits, or when the timeout passes, with each child's exit code and the end of its log;
- :class:`Children` keeps a run's children by name: :meth:`Children.check` fails with the
  report of one that exited, :meth:`Children.stop_all` stops them all in reverse order.

Failures raise :class:`ProcessFailed` (a ``RuntimeError``) whose message is the report a
developer needs: who exited, with which code, and what it wrote last.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Required, TypedDict, Unpack

__all__ = [
    "TAIL_CHARS",
    "Child",
    "Children",
    "ProcessFailed",
    "Wait",
    "http_ok",
    "log_says",
    "start",
    "until_ready",
    "wait_ready",
]

#: How much of the end of a log a report shows.
TAIL_CHARS: Final = 3000
#: Seconds a child has between SIGTERM and SIGKILL unless the caller says otherwise.
DEFAULT_GRACE_S: Final = 30.0
#: Straight to the child's own server, whatever proxy the environment names.
_DIRECT: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ProcessFailed(RuntimeError):
    """A child process exited while it should have been running, or did not become ready in
    time; the message names it, its exit code and the end of its log."""


@dataclass(frozen=True)
class Child:
    """A child process: its name, the process, and the file its stdout and stderr go to
    (``None``: a process started elsewhere whose output was not kept)."""

    name: str
    process: subprocess.Popen[Any]
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """Its exit code (negative: the signal that ended it), or None while it runs."""
        return self.process.poll()

    def exited(self) -> bool:
        """Whether the process has ended."""
        return self.process.poll() is not None

    def tail(self, chars: int = TAIL_CHARS) -> str:
        """The last ``chars`` characters of its log ("" when there is none, or nothing in it)."""
        if self.log is None:
            return ""
        with self.log.open("rb") as out:
            size = out.seek(0, os.SEEK_END)
            out.seek(max(0, size - chars * 4))  # UTF-8: at most 4 bytes a character
            return out.read().decode(errors="replace")[-chars:]

    def report(self) -> str:
        """Its state (exit code, or still running) and the end of its log."""
        code = self.process.poll()
        state = (
            f"exited with code {code}"
            if code is not None
            else f"still running (pid {self.process.pid})"
        )
        if self.log is None:
            return f"{self.name} {state} (its output was not kept)"
        try:
            text = self.tail()
        except OSError as exc:
            return f"{self.name} {state}; its log {self.log} cannot be read: {exc}"
        return f"{self.name} {state}; the end of {self.log}:\n{text if text.strip() else '(empty)'}"

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` (nothing when it has exited)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> int:
        """SIGKILL it and reap it; its exit code."""
        self.signal(signal.SIGKILL)
        return self.process.wait()

    def stop(self, grace_s: float = DEFAULT_GRACE_S) -> int:
        """SIGTERM, then SIGKILL if it has not exited after ``grace_s``; its exit code."""
        self.signal(signal.SIGTERM)
        return self._reap(grace_s)

    def _reap(self, grace_s: float) -> int:
        try:
            return self.process.wait(timeout=max(grace_s, 0))
        except subprocess.TimeoutExpired:
            return self.kill()


def start(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Child:
    """Start ``argv`` as the child ``name``, with exactly ``env`` (None: this process's), stdin
    closed, stdout and stderr appended to ``log`` (its folder made when missing)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(argv),
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Child(name, process, log)


# -- readiness -------------------------------------------------------------------------------


def http_ok(url: str) -> bool:
    """Whether ``url`` answers HTTP 200 now (False while nothing listens there yet)."""
    try:
        with _DIRECT.open(url, timeout=2) as response:
            return int(response.status) == 200
    except (OSError, http.client.HTTPException):
        return False


def log_says(log: Path, text: str) -> Callable[[], bool]:
    """A readiness check: ``log`` (a child's output file) contains ``text``."""

    def ready() -> bool:
        try:
            return text in log.read_text(errors="replace")
        except FileNotFoundError:
            return False

    return ready


def _reports(children: Iterable[Child]) -> str:
    return "".join(f"\n--- {c.report()}" for c in children)


class Wait(TypedDict, total=False):
    """What a wait for readiness (:func:`wait_ready`, :func:`until_ready`) is told: ``what`` it
    waits for (named in its failure), ``timeout_s``, the ``watch`` children whose exit fails it
    at once, how often it asks (``interval_s``, default 0.1 s), a ``hint`` that follows the
    timeout in the message (e.g. the setting that raises it), and the children whose reports a
    timeout shows (``show``, default ``watch``)."""

    what: Required[str]
    timeout_s: Required[float]
    watch: Sequence[Child]
    interval_s: float
    hint: str
    show: Sequence[Child] | None


@dataclass(frozen=True, kw_only=True)
class _Deadline:
    """A :class:`Wait` under way."""

    what: str
    timeout_s: float
    watch: Sequence[Child] = ()
    interval_s: float = 0.1
    hint: str = ""
    show: Sequence[Child] | None = None
    ends: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ends", time.monotonic() + self.timeout_s)

    def failure(self) -> ProcessFailed | None:
        """Why the wait is over without the child being ready, if it is."""
        gone = [c for c in self.watch if c.exited()]
        if gone:
            return ProcessFailed(
                f"{', '.join(c.name for c in gone)} exited while waiting for {self.what}"
                f"{_reports(gone)}"
            )
        if time.monotonic() > self.ends:
            shown = self.watch if self.show is None else self.show
            return ProcessFailed(
                f"{self.what} not ready after {self.timeout_s:g} s{self.hint}{_reports(shown)}"
            )
        return None


def wait_ready(ready: Callable[[], bool], **wait: Unpack[Wait]) -> None:
    """Return once ``ready()`` is true (it returns False while the child is not up yet, catching
    its own "connection refused"). :class:`ProcessFailed` at once when a ``watch`` child exits
    (its report), or after ``timeout_s`` (the reports of ``show``; see :class:`Wait`)."""
    deadline = _Deadline(**wait)
    while True:
        if ready():
            return
        if failed := deadline.failure():
            raise failed
        time.sleep(deadline.interval_s)


async def until_ready(ready: Callable[[], Awaitable[bool] | bool], **wait: Unpack[Wait]) -> None:
    """:func:`wait_ready` inside an event loop (``ready`` may be async)."""
    deadline = _Deadline(**wait)
    while True:
        answer = ready()
        if answer if isinstance(answer, bool) else await answer:
            return
        if failed := deadline.failure():
            raise failed
        await asyncio.sleep(deadline.interval_s)


# -- a run's children ------------------------------------------------------------------------


@dataclass
class Children:
    """The children of one run, by name, each logging to ``<logs>/<name>.log``.

    A name may be started again once its child has exited (a restart: the log goes on);
    :meth:`stop_all` ends every life started, the last started first."""

    logs: Path
    current: dict[str, Child] = field(default_factory=dict)
    lives: list[Child] = field(default_factory=list)

    def log_of(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        cwd: Path | None = None,
    ) -> Child:
        """Start ``name`` (:func:`start`); RuntimeError while one of that name still runs."""
        previous = self.current.get(name)
        if previous is not None and not previous.exited():
            raise RuntimeError(f"{name!r} is still running (pid {previous.pid})")
        child = start(name, argv, log=self.log_of(name), env=env, cwd=cwd)
        self.current[name] = child
        self.lives.append(child)
        return child

    def __getitem__(self, name: str) -> Child:
        return self.current[name]

    def __contains__(self, name: object) -> bool:
        return name in self.current

    def __iter__(self) -> Iterator[Child]:
        return iter(self.current.values())

    @property
    def procs(self) -> dict[str, subprocess.Popen[Any]]:
        """The latest life of each name, as its ``Popen``."""
        return {name: child.process for name, child in self.current.items()}

    def check(self) -> None:
        """:class:`ProcessFailed` with the report of a child that has exited."""
        for child in self.current.values():
            if child.exited():
                raise ProcessFailed(child.report())

    def wait_ready(
        self,
        ready: Callable[[], bool],
        *,
        what: str,
        timeout_s: float,
        show: Sequence[str] | None = None,
        hint: str = "",
    ) -> None:
        """:func:`wait_ready` watching every child; a timeout shows the logs of ``show``
        (names; default all)."""
        wait_ready(
            ready,
            what=what,
            timeout_s=timeout_s,
            watch=list(self.current.values()),
            hint=hint,
            show=None if show is None else [self.current[n] for n in show],
        )

    def stop_all(
        self, grace_s: float = DEFAULT_GRACE_S, *, names: Iterable[str] | None = None
    ) -> dict[str, int]:
        """SIGTERM every running life (of ``names``, default all; the last started first), then
        wait up to ``grace_s`` for them all and SIGKILL what is left. Their exit codes by name
        (the latest life's)."""
        wanted = None if names is None else set(names)
        chosen = [c for c in reversed(self.lives) if wanted is None or c.name in wanted]
        for child in chosen:
            child.signal(signal.SIGTERM)
        ends = time.monotonic() + grace_s
        codes: dict[str, int] = {}
        for child in chosen:
            code = child._reap(ends - time.monotonic())
            codes.setdefault(child.name, code)
        return codes

    def kill_all(self) -> None:
        """SIGKILL every life still running and reap them all (a test's end: no grace)."""
        for child in reversed(self.lives):
            child.kill()
