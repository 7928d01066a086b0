"""Fixtures: a gateway on real PostgreSQL and Redis (see ``cofounder_gateway.testing``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from cofounder_gateway.app import Gateway, create_app
from cofounder_gateway.settings import GatewaySettings
from cofounder_gateway.testing import Running, start_gateway
from cofounder_testing.servers import free_port
from cofounder_testing.services import start_service
from cofounder_testing.waiting import http_ok, wait_started


@pytest.fixture
async def gateway(own_redis_url: str, migrated_database_url: str) -> AsyncIterator[Running]:
    async for running in start_gateway(own_redis_url, migrated_database_url):
        yield running


#: The gateway process's own Redis logical database.
PROCESS_REDIS_DB = 12


@pytest.fixture(scope="module")
def gateway_process(
    redis_url: str, migrated_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url.rsplit("/", 1)[0] + f"/{PROCESS_REDIS_DB}",
        "DATABASE_URL": migrated_database_url,
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    log = tmp_path_factory.mktemp("gateway-process") / "gateway.log"
    gateway = start_service("gateway", env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_started(lambda: http_ok(f"{base}/v1/healthz"), what="the gateway", watch=[gateway])
        yield base
    finally:
        gateway.stop(grace_s=30)


@pytest.fixture
async def app_client() -> AsyncIterator[httpx.AsyncClient]:
    """The app in process with no database, Redis or feed behind it: for routes that reach none
    of them (the OpenAPI document, the build page's files)."""
    gw = Gateway(
        settings=GatewaySettings(environment="development"),
        engine=cast(Any, None),
        redis=cast(Any, None),
        feed=cast(Any, None),
        relay=cast(Any, SimpleNamespace(poke=lambda: None)),
        pg_pool=cast(Any, None),
    )
    transport = httpx.ASGITransport(app=create_app(gw))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http
