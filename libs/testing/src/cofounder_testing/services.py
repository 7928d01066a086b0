"""Running the pipeline's services as real processes (``cofounder serve <service>``) for
end-to-end tests: each with its environment and a log file, stopped with SIGTERM (killed after
30 s) when the block ends (``cofounder_runtime.processes``, the supervisor ``cofounder dev``
uses)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

from cofounder_runtime import processes
from cofounder_testing.waiting import Watched

__all__ = [
    "USER_CONFIGURATION",
    "kill_sandboxes",
    "offline_env",
    "serve_argv",
    "service_processes",
    "start_service",
]

#: What a developer's shell may set that would point a command a test runs (``cofounder dev``,
#: the README's walkthrough) at servers, accounts or sandboxes other than the test's own.
USER_CONFIGURATION: Final = (
    "REDIS_URL",
    "DATABASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "E2B_API_KEY",
    "E2B_API_URL",
    "E2B_SANDBOX_URL",
    "E2B_DOMAIN",
    "SANDBOX",
)

#: Variables that would send a test to real accounts and buckets.
_REAL_ACCOUNTS = ("ANTHROPIC_API_KEY", "E2B_API_KEY", "PROJECT_SNAPSHOT_BUCKET")


#: PostgreSQL connections each test process keeps at most: one server's max_connections (100 on
#: a default install) is shared by every process of a test, by two test runs at once, and by
#: whoever else uses that server. A test that needs more says so.
_SMALL_POOLS = {"DATABASE_POOL_SIZE": "5", "WRITE_POOL_SIZE": "3"}


def offline_env(**settings: str) -> dict[str, str]:
    """This process's environment with ``settings`` on top, small database pools unless
    ``settings`` say otherwise, and no real-account variables."""
    env = {**_SMALL_POOLS, **os.environ, **settings}
    for key in _REAL_ACCOUNTS:
        env.pop(key, None)
    return env


def serve_argv(service: str) -> list[str]:
    """The command that runs ``service``: ``cofounder serve <service>`` in this interpreter."""
    return [sys.executable, "-m", "cofounder_cli", "serve", service]


def start_service(
    service: str, env: Mapping[str, str], log: Path, *, name: str | None = None
) -> Watched:
    """Start ``cofounder serve <service>`` with exactly ``env``; its stdout and stderr are
    appended to ``log``. The caller stops it (``.stop()``: SIGTERM, then SIGKILL after a grace),
    and waits for it with ``until_started`` or ``wait_started``
    (:mod:`cofounder_testing.waiting`)."""
    return processes.start(name or service, serve_argv(service), log=log, env=env)


@contextlib.contextmanager
def service_processes(
    services: Sequence[tuple[str, Mapping[str, str]]], logs: Path
) -> Iterator[list[Watched]]:
    """Start each ``(service, env)``; output goes to ``logs/<service>.log`` (a second process of
    the same service: ``<service>-2.log``). Yields them for start-up waits
    (:func:`~cofounder_testing.waiting.until_started`); at the end they get SIGTERM, and
    SIGKILL after 30 s."""
    children = processes.Children(logs)
    seen: dict[str, int] = {}
    try:
        for service, env in services:
            seen[service] = seen.get(service, 0) + 1
            name = service if seen[service] == 1 else f"{service}-{seen[service]}"
            children.start(name, serve_argv(service), env)
        yield list(children)
    finally:
        children.stop_all(grace_s=30)
        # Local sandboxes outlive their runners (as E2B's do): end the ones these runners made,
        # now that no runner is left to make another.
        kill_sandboxes(env["SANDBOX_ROOT"] for _, env in services if "SANDBOX_ROOT" in env)


def kill_sandboxes(roots: Iterable[str | Path]) -> None:
    """End the local sandboxes (and what runs in them) under each of ``roots``. In a process
    of its own, so this works from inside a running event loop too."""
    for root in sorted({str(r) for r in roots}):
        subprocess.run([sys.executable, "-c", _KILL_SANDBOXES, root], check=False)


_KILL_SANDBOXES = """
import asyncio, pathlib, sys
from cofounder_sandbox.local import LocalSandboxes
if pathlib.Path(sys.argv[1]).is_dir():
    asyncio.run(LocalSandboxes(sys.argv[1]).kill_all())
"""
