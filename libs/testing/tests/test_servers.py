"""The harness starts throwaway servers when none is configured or running."""

from __future__ import annotations

import asyncio
import shutil

import asyncpg
import pytest
import redis as redis_sync

from cofounder_testing import servers


@pytest.fixture
def nothing_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """No variables set, and the local defaults pointed at a port where nothing listens."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(servers, "DEFAULT_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(servers, "DEFAULT_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/test")


@pytest.mark.usefixtures("nothing_running")
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_a_throwaway_redis_is_started_and_stopped() -> None:
    with servers.redis_server() as url:
        assert not url.startswith("redis://127.0.0.1:1/")
        client = redis_sync.Redis.from_url(url)
        assert client.ping()
        client.close()
    with pytest.raises(redis_sync.ConnectionError):
        redis_sync.Redis.from_url(url, socket_connect_timeout=1).ping()


@pytest.mark.usefixtures("nothing_running")
@pytest.mark.skipif(servers._pg_bin() is None, reason="PostgreSQL binaries not installed")
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


def test_a_configured_server_that_does_not_answer_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(servers.ServerUnavailable, match="does not answer"), servers.redis_server():
        pass
