"""The outbox survives a relay crash in either window."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import select

from cofounder_contracts import (
    ALL_EVENTS,
    Codec,
)
from cofounder_contracts.streams import BUILD_REQUESTS
from cofounder_db.models import OutboxRow
from cofounder_gateway.testing import Running, start_gateway
from cofounder_runtime.connections import connect_redis
from cofounder_testing.inprocess import entries
from cofounder_testing.servers import free_port
from cofounder_testing.services import start_service
from cofounder_testing.waiting import eventually, until_started

pytestmark = pytest.mark.integration
CODEC = Codec(ALL_EVENTS)


@pytest.fixture
async def no_relay(own_redis_url: str, migrated_database_url: str) -> AsyncIterator[Running]:
    async for running in start_gateway(own_redis_url, migrated_database_url, relay=False):
        yield running


async def requests_for(gw: Running, build_id: str) -> list[bytes]:
    """Event ids of the build.requested entries of one build."""
    found = []
    for _, fields in await entries(gw.gw.redis, BUILD_REQUESTS.name):
        if CODEC.decode(fields).build_id == build_id:
            found.append(fields[b"event_id"])
    return found


async def test_outbox_rows_committed_before_a_relay_crash_are_published_once_on_restart(
    no_relay: Running,
) -> None:
    gw = no_relay
    user, project = await gw.seed_user()
    started = await gw.client.post(f"/v1/projects/{project}/builds", json={}, headers=gw.auth(user))
    assert started.status_code == 202
    build_id = started.json()["id"]
    # The build row is committed, and no relay ran: nothing reached Redis.
    assert await requests_for(gw, build_id) == []
    # The relay (re)starts: it publishes what was pending, once.
    stop = asyncio.Event()
    relay = asyncio.create_task(gw.gw.relay.run(stop))

    async def published() -> bool:
        return len(await requests_for(gw, build_id)) == 1

    await eventually(published, what="build.requested after the restart")
    stop.set()
    await relay
    assert await gw.gw.relay.publish_pending() == 0  # nothing left for a second relay
    assert len(await requests_for(gw, build_id)) == 1


async def test_a_crash_between_publish_and_delete_republishes_the_same_event_id(
    no_relay: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other crash window: published, but the delete of the sent rows never committed. The
    rows go out again with the same event ids, which consumers absorb as duplicates."""
    from cofounder_gateway import outbox

    gw = no_relay
    user, project = await gw.seed_user()
    started = await gw.client.post(f"/v1/projects/{project}/builds", json={}, headers=gw.auth(user))
    build_id = started.json()["id"]
    monkeypatch.setattr(outbox, "_DELETE", "select 1 / 0 where $1::bigint[] is not null")
    with pytest.raises(asyncpg.PostgresError):
        await gw.gw.relay.publish_pending()  # published, then the "crash"
    assert len(await requests_for(gw, build_id)) == 1
    monkeypatch.undo()
    while await gw.gw.relay.publish_pending():
        pass
    first, second = await requests_for(gw, build_id)
    assert first == second
    async with gw.gw.engine.connect() as conn:  # sent, and gone from the outbox
        left = await conn.execute(select(OutboxRow.id).where(OutboxRow.event_id == first.decode()))
        assert left.all() == []


async def test_the_relay_outlives_a_broken_driver_connection(
    no_relay: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg's InterfaceError (a connection closed under the relay) is no PostgresError: it
    is retried like one, not the end of the relay task."""
    gw = no_relay
    user, project = await gw.seed_user()
    started = await gw.client.post(f"/v1/projects/{project}/builds", json={}, headers=gw.auth(user))
    build_id = started.json()["id"]
    relay = gw.gw.relay
    publish = relay.publish_pending
    broken = [asyncpg.InterfaceError("connection is closed")]

    async def flaky() -> int:
        if broken:
            raise broken.pop()
        return await publish()

    monkeypatch.setattr(relay, "publish_pending", flaky)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))

    async def published() -> bool:
        return len(await requests_for(gw, build_id)) == 1

    await eventually(published, what="build.requested after the broken connection")
    assert not task.done()
    stop.set()
    await task


async def test_the_gateway_process_killed_after_commit_publishes_once_after_restart(
    own_redis_url: str, migrated_database_url: str, tmp_path: Path
) -> None:
    """Literally: a gateway process whose relay never ran (it is SIGKILLed right after the
    commit), then a fresh gateway process: exactly one build.requested."""
    url = own_redis_url  # the processes use the real stream names
    redis = connect_redis(url)
    env = {
        **os.environ,
        "REDIS_URL": url,
        "DATABASE_URL": migrated_database_url,
        "LOG_LEVEL": "WARNING",
        "ADMIN_TOKEN": "kill-admin",
        "RUN_PROJECTION": "false",
    }

    async def start(name: str, **extra: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        env_ = {**env, "PORT": str(port), **extra}
        gateway = start_service("gateway", env_, tmp_path / f"{name}.log", name=name)
        base = f"http://127.0.0.1:{port}"

        async def up() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"{base}/v1/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        try:
            await until_started(up, what=f"the {name} gateway", watch=[gateway])
        except AssertionError:
            gateway.process.kill()
            raise
        return gateway.process, base

    first, base = await start("first", RUN_RELAY="false")
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            demo = (
                await client.post("/v1/admin/demo", headers={"Authorization": "Bearer kill-admin"})
            ).json()
            started = await client.post(
                f"/v1/projects/{demo['project_id']}/builds",
                json={},
                headers={"Authorization": f"Bearer {demo['token']}"},
            )
            assert started.status_code == 202
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)
        assert await redis.xlen(BUILD_REQUESTS.name) == 0
        second, _ = await start("second")
        try:

            async def published() -> bool:
                return int(await redis.xlen(BUILD_REQUESTS.name)) >= 1

            await eventually(published, what="build.requested from the restarted gateway")
            await asyncio.sleep(0.5)  # a duplicate would show up by now
            found = [CODEC.decode(f) for _, f in await entries(redis, BUILD_REQUESTS.name)]
            mine = [e for e in found if e.build_id == started.json()["id"]]
            assert len(mine) == 1
        finally:
            second.terminate()
            assert await asyncio.to_thread(second.wait, 30) == 0
    finally:
        if first.poll() is None:
            first.kill()
        await redis.aclose()


async def test_the_write_pool_rolls_back_what_a_cancelled_request_left_open(
    migrated_database_url: str,
) -> None:
    """The write pool skips asyncpg's per-release reset; a transaction left open is still ended
    before the connection serves another request."""
    from cofounder_gateway.builds_pg import create_write_pool

    pool = await create_write_pool(migrated_database_url, size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("begin; select pg_advisory_xact_lock(42)")
            assert conn.is_in_transaction()
        async with pool.acquire() as again:  # the same (only) connection
            assert not again.is_in_transaction()
            # The transaction-scoped lock went with the rollback: another session can take it.
            other = await asyncpg.connect(migrated_database_url)
            try:
                assert await other.fetchval("select pg_try_advisory_lock(42)")
            finally:
                await other.close()
    finally:
        await pool.close()
