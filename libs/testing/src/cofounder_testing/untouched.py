"""Proof that a test run leaves the developer's Redis alone (a pytest plugin, loaded by the root
``conftest.py``).

The tests flush whole logical databases, always on a Redis of their own (``servers``). To show
that nothing reaches the default Redis (``127.0.0.1:6379``) instead, the run writes a sentinel
key, unique to it, into every database of that server when it starts, and at the end checks that
each is still there and deletes it. A database that lost its key fails the run, naming it. When
no server answers there, or it wants a password, or refuses the write, there is nothing to
check and the run says so in its header. ``TEST_SENTINEL_REDIS_URL`` points the check at
another server.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import pytest
import redis as redis_sync
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.retry import Retry

__all__ = ["NotPlanted", "Planted", "check", "plant", "remove"]

DEFAULT_REDIS: Final = "redis://127.0.0.1:6379"
#: Long enough for any run; short enough that a run killed before its end leaves nothing for long.
SENTINEL_TTL_S: Final = 86_400
_KEY_PREFIX: Final = "cofounder:test-sentinel"


@dataclass(frozen=True)
class Planted:
    """A sentinel key written into each of ``databases`` of the server at ``url``."""

    url: str
    key: str
    value: str
    databases: tuple[int, ...]


@dataclass(frozen=True)
class NotPlanted:
    """Why there is nothing to check."""

    url: str
    reason: str


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def _client(url: str, db: int) -> redis_sync.Redis:
    parts = urlsplit(url)
    host, port = _address(url)
    return redis_sync.Redis(
        host=host,
        port=port,
        db=db,
        username=parts.username,
        password=parts.password,
        socket_connect_timeout=2,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 0),  # a refusal is an answer, not a blip to retry
    )


def _database_count(client: redis_sync.Redis) -> int:
    """``CONFIG GET databases``; 16 (Redis's default) where CONFIG is refused."""
    try:
        reply = client.config_get("databases")
    except RedisError:
        return 16
    value = reply.get("databases") if isinstance(reply, dict) else None
    return int(value) if value else 16


def plant(url: str = DEFAULT_REDIS, *, ttl_s: int = SENTINEL_TTL_S) -> Planted | NotPlanted:
    """Write a sentinel key unique to this run (with a TTL) into every database of ``url``."""
    host, port = _address(url)
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return NotPlanted(url, "nothing answers there")
    key = f"{_KEY_PREFIX}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    value = uuid.uuid4().hex
    written: list[int] = []
    first = _client(url, 0)
    try:
        count = _database_count(first)
    finally:
        first.close()
    try:
        for db in range(count):
            client = _client(url, db)
            try:
                client.set(key, value, ex=ttl_s)
            finally:
                client.close()
            written.append(db)
    except RedisError as exc:  # a password, ACLs, a read-only replica: nothing to check
        remove(Planted(url, key, value, tuple(written)))
        if isinstance(exc, AuthenticationError):
            return NotPlanted(url, "it wants a password")
        return NotPlanted(url, f"it refuses the sentinel ({exc})")
    return Planted(url, key, value, tuple(written))


def check(planted: Planted) -> list[int]:
    """The databases whose sentinel is gone (or changed) since :func:`plant`."""
    lost = []
    for db in planted.databases:
        client = _client(planted.url, db)
        try:
            if client.get(planted.key) != planted.value.encode():
                lost.append(db)
        finally:
            client.close()
    return lost


def remove(planted: Planted) -> None:
    """Delete the sentinel from every database it was written to."""
    for db in planted.databases:
        client = _client(planted.url, db)
        try:
            client.delete(planted.key)
        finally:
            client.close()


def _declared_to_be_flushed(url: str) -> bool:
    """Whether ``TEST_REDIS_URL`` names this very server: the tests may flush it, so a vanished
    sentinel there proves nothing."""
    declared = os.environ.get("TEST_REDIS_URL")
    if not declared:
        return False
    local = {"127.0.0.1", "localhost", "::1"}
    (host, port), (d_host, d_port) = _address(url), _address(declared)
    same_host = host == d_host or (host in local and d_host in local)
    return same_host and port == d_port


_PLANTED = pytest.StashKey[Planted | NotPlanted]()


def pytest_sessionstart(session: pytest.Session) -> None:
    url = os.environ.get("TEST_SENTINEL_REDIS_URL", DEFAULT_REDIS)
    if _declared_to_be_flushed(url):
        session.config.stash[_PLANTED] = NotPlanted(url, "TEST_REDIS_URL lets the tests flush it")
        return
    session.config.stash[_PLANTED] = plant(url)


def pytest_report_header(config: pytest.Config) -> str | None:
    planted = config.stash.get(_PLANTED, None)
    if isinstance(planted, Planted):
        return (
            f"untouched: a sentinel key in each of the {len(planted.databases)} databases of "
            f"{planted.url}, checked at the end ({planted.key})"
        )
    if isinstance(planted, NotPlanted):
        return f"untouched: {planted.url} not checked: {planted.reason}"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    planted = session.config.stash.get(_PLANTED, None)
    if not isinstance(planted, Planted):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str, **markup: bool) -> None:
        if reporter is not None:
            reporter.write_line(line, **markup)

    try:
        lost = check(planted)
        remove(planted)
    except RedisError as exc:
        say(f"untouched: could not check {planted.url} at the end ({exc})", yellow=True)
        return
    if lost:
        say(
            f"untouched: FAILED: the test run removed or changed its sentinel key {planted.key} "
            f"in database(s) {', '.join(map(str, lost))} of {planted.url}: a test flushed or "
            "wrote to a Redis that is not its own",
            red=True,
            bold=True,
        )
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
