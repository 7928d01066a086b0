"""pytest fixtures shared by every package's tests (loaded by the root ``conftest.py``).

- ``redis_url`` / ``database_url`` (session): a real server, found or started (``servers``);
  a test run fails with the reason when none can be had, rather than skipping silently.
- ``own_redis_url`` / ``own_database_url``: a server (a database) of one test's own.
- ``redis``: an async client per test. ``names``: unique stream, group and key names per test,
  whose keys are deleted afterwards. ``workers``: consumer processes the test can kill.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
from redis.asyncio import Redis

from cofounder_runtime import processes
from cofounder_runtime.connections import connect_redis
from cofounder_testing.databases import migrated_database
from cofounder_testing.servers import (
    ServerUnavailable,
    own_redis_server,
    postgres_server,
    redis_server,
    s3_server,
)
from cofounder_testing.waiting import eventually, until_started

__all__ = ["Names", "Workers", "eventually"]


def _server(factory: Callable[[], contextlib.AbstractContextManager[str]]) -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(factory())
        except ServerUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server's URL."""
    yield from _server(redis_server)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A real PostgreSQL server's URL (``postgresql://``)."""
    yield from _server(postgres_server)


@pytest.fixture(scope="session")
def s3_endpoint_url() -> Iterator[str]:
    """An S3 server's URL (moto's, over HTTP), with test credentials in the environment."""
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(key, value)
    with s3_server() as url:
        yield url


@pytest.fixture(scope="session")
def migrated_database_url(database_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database, migrated to head once per session (tests use unique ids).

    Shared by the session's tests: a test whose services read *every* row of a kind (the budget
    service rebuilding its counters wakes every sleeping build it finds) takes
    :func:`own_database_url` instead, or it acts on other tests' builds."""
    with migrated_database(database_url) as url:
        yield url


@pytest.fixture
def own_database_url(database_url: str) -> Iterator[str]:
    """A migrated PostgreSQL database of this test's own, dropped after it."""
    with migrated_database(database_url) as url:
        yield url


@pytest.fixture
def own_redis_url() -> Iterator[str]:
    """A Redis server of this test's own, stopped after it: for a test whose code uses the
    contract streams and keys (not the per-test ``names``), or that flushes or restarts Redis."""
    yield from _server(own_redis_server)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """An async Redis client for one test."""
    client = connect_redis(redis_url)
    yield client
    await client.aclose()


@dataclass(frozen=True)
class Names:
    """Unique names for one test: everything starts with ``prefix``."""

    prefix: str

    @property
    def stream(self) -> str:
        """A stream name nobody else uses."""
        return f"{self.prefix}:stream"

    @property
    def group(self) -> str:
        """A consumer group name."""
        return f"{self.prefix}-group"

    def key(self, suffix: str) -> str:
        """Another key under the prefix."""
        return f"{self.prefix}:{suffix}"


@pytest.fixture
def names(redis_url: str) -> Iterator[Names]:
    """Unique names; the test's keys (streams, DLQs, markers under the prefix) go afterwards."""
    found = Names(prefix=f"t-{uuid.uuid4().hex[:12]}")
    yield found
    client = redis_sync.Redis.from_url(redis_url)
    try:
        keys = [
            *client.scan_iter(match=f"{found.prefix}*", count=1000),
            *client.scan_iter(match=f"cofounder.once:{{{found.prefix}}}*", count=1000),
        ]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@dataclass
class Workers:
    """Consumer processes (``cofounder_testing.worker``) started by one test, each logging to
    ``<logdir>/<name>.log`` (every life of a name to the same file)."""

    redis_url: str
    names: Names
    logdir: Path
    children: processes.Children = field(init=False)

    def __post_init__(self) -> None:
        self.children = processes.Children(self.logdir)

    @property
    def procs(self) -> dict[str, subprocess.Popen[Any]]:
        """The latest life of each worker, by name."""
        return self.children.procs

    def start(self, name: str, **options: object) -> subprocess.Popen[Any]:
        """Start a worker called ``name``; options map to its ``--flags``."""
        argv = [
            sys.executable,
            "-m",
            "cofounder_testing.worker",
            "--redis-url",
            self.redis_url,
            "--stream",
            self.names.stream,
            "--group",
            self.names.group,
            "--name",
            name,
            "--prefix",
            self.names.prefix,
        ]
        for key, value in options.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        if name in self.children and not self.children[name].exited():
            raise RuntimeError(f"worker {name!r} is still running")
        # A restart under the same name: :meth:`started` waits for this life to join.
        client = redis_sync.Redis.from_url(self.redis_url)
        try:
            client.srem(self.names.key("ready"), name)
        finally:
            client.close()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return self.children.start(name, argv, env).process

    def logs(self, name: str) -> str:
        """Everything the named worker (all its lives) wrote."""
        return self.children.log_of(name).read_text(errors="replace")

    async def started(self, redis: Redis, *names: str) -> None:
        """Wait until the named workers (their latest lives) have joined their group; fail at
        once, with their logs, when one exits first."""

        async def joined() -> bool:
            members = await redis.smembers(self.names.key("ready"))
            return {n.encode() for n in names} <= members

        watch = [self.children[n] for n in names]
        await until_started(joined, what=f"workers {', '.join(names)}", watch=watch)

    def signal(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` to the named worker."""
        self.children[name].signal(sig)

    def stop_all(self) -> None:
        """Kill whatever is still running (every life of every worker)."""
        self.children.kill_all()


@pytest.fixture
def workers(redis_url: str, names: Names, tmp_path: Path) -> Iterator[Workers]:
    """Start worker processes (logs in ``tmp_path``); all are killed when the test ends."""
    pool = Workers(redis_url=redis_url, names=names, logdir=tmp_path)
    yield pool
    pool.stop_all()
