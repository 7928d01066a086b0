"""A gateway running in the caller's event loop, for tests: real uvicorn on a free port, real
Redis (a logical database of its own, flushed when it stops) and a real database."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from pydantic import SecretStr

from cofounder_db.engine import driver_dsn
from cofounder_gateway.app import Gateway, create_app
from cofounder_gateway.auth import mint_token
from cofounder_gateway.bootstrap import assemble, consumers
from cofounder_gateway.builds_pg import create_write_pool
from cofounder_gateway.settings import GatewaySettings
from cofounder_runtime.connections import connect_redis
from cofounder_runtime.processes import until_ready

ADMIN = {"Authorization": "Bearer test-admin"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    """A started gateway and a client for it."""

    gw: Gateway
    client: httpx.AsyncClient
    relay_stop: asyncio.Event

    def auth(self, user_id: str, *, ttl_s: int = 600) -> dict[str, str]:
        token = mint_token(self.gw.settings.jwt_secret.get_secret_value(), user_id, ttl_s=ttl_s)
        return {"Authorization": f"Bearer {token}"}

    async def seed_user(self, tier: str = "bootstrapper") -> tuple[str, str]:
        """A user with one project; returns (user id, project id)."""
        email = f"u-{id(self)}-{asyncio.get_running_loop().time()}@example.com"
        user = await self.client.post(
            "/v1/admin/users", json={"email": email, "tier": tier}, headers=ADMIN
        )
        assert user.status_code == 201, user.text
        project = await self.client.post(
            "/v1/admin/projects", headers=ADMIN, json={"owner_id": user.json()["id"], "name": "P"}
        )
        assert project.status_code == 201, project.text
        return user.json()["id"], project.json()["id"]


async def start_gateway(
    redis_url: str, database_url: str, *, relay: bool = True, **overrides: Any
) -> AsyncIterator[Running]:
    """A gateway in this process on ``redis_url``, a Redis of the caller's own (the gateway
    reads and writes the contract streams there; nothing is flushed: the server is thrown away
    with its data), until the caller's block ends."""
    port = _free_port()
    url = redis_url
    settings = GatewaySettings(
        environment="development",
        redis_url=SecretStr(url),
        database_url=SecretStr(database_url),
        port=port,
        admin_token=SecretStr("test-admin"),
        consumer_block_ms=100,
        consumer_name="gw-test",
        # Small pools: one PostgreSQL server's connections are shared by the whole test run
        # (and by a second run at once).
        **{"database_pool_size": 5, "write_pool_size": 3, **overrides},
    )
    redis = connect_redis(url)
    engine = settings.create_engine()
    pg_pool = await create_write_pool(driver_dsn(engine), size=settings.write_pool_size)
    gw = assemble(settings, engine, redis, pg_pool, relay_idle_s=0.05)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(gw),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    stop = asyncio.Event()
    workers = consumers(settings, gw)
    tasks = [asyncio.create_task(server.serve()), *(asyncio.create_task(c.run()) for c in workers)]
    if relay:
        tasks.append(asyncio.create_task(gw.relay.run(stop)))
    serving = tasks[0]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        try:
            # uvicorn exposes a flag, not an event; a server that failed to start ends its task.
            await until_ready(
                lambda: server.started or serving.done(),
                what="the in-process gateway",
                timeout_s=120,
                interval_s=0.01,
            )
            if not server.started:
                serving.result()  # its exception, when it had one
                raise RuntimeError("the in-process gateway stopped before it started serving")
            yield Running(gw=gw, client=client, relay_stop=stop)
        finally:
            stop.set()
            server.should_exit = True
            for c in workers:
                c.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            await gw.feed.close()
            await gw.relay.close()
            await pg_pool.close()
            await redis.aclose()
            await engine.dispose()
