"""The harness starts throwaway servers when none is configured or running."""

from __future__ import annotations

import asyncio
import os
import shutil

import asyncpg
import pytest
import redis as redis_sync

from cofounder_runtime.localpostgres import pg_bindir
from cofounder_testing import servers


@pytest.fixture
def nothing_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """No variables set, and the local defaults pointed at a port where nothing listens."""
    monkeypatch.delenv("TEST_REDIS_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(servers, "DEFAULT_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/test")


@pytest.mark.usefixtures("nothing_running")
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_a_throwaway_redis_is_started_and_stopped() -> None:
    with servers.redis_server() as url:
        client = redis_sync.Redis.from_url(url)
        assert client.ping()
        client.close()
    with pytest.raises(redis_sync.ConnectionError):
        redis_sync.Redis.from_url(url, socket_connect_timeout=1).ping()


@pytest.mark.usefixtures("nothing_running")
@pytest.mark.skipif(pg_bindir() is None, reason="PostgreSQL binaries not installed")
def test_a_throwaway_postgres_is_started_and_stopped() -> None:
    async def select_one(url: str) -> int:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return int(await conn.fetchval("select 1"))
        finally:
            await conn.close()

    with servers.postgres_server() as url:
        assert asyncio.run(select_one(url)) == 1
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(select_one(url))


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_the_tests_never_use_a_redis_they_did_not_start(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    # Not a running stack's REDIS_URL, not the developer's Redis on 6379: the tests flush whole
    # databases, so they only ever get a server started for them.
    monkeypatch.delenv("TEST_REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    with servers.redis_server() as url:
        assert ":6379/" not in url
    assert ":6379/" not in redis_url or os.environ.get("TEST_REDIS_URL")


def test_a_declared_server_that_does_not_answer_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(servers.ServerUnavailable, match="does not answer"), servers.redis_server():
        pass
