"""Fixtures: a gateway on real PostgreSQL and Redis (see ``cofounder_gateway.testing``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from cofounder_gateway.testing import Running, start_gateway
from cofounder_testing.servers import free_port


@pytest.fixture
async def gateway(redis_url: str, migrated_database_url: str) -> AsyncIterator[Running]:
    async for running in start_gateway(redis_url, migrated_database_url):
        yield running


#: The gateway process's own Redis logical database.
PROCESS_REDIS_DB = 12


@pytest.fixture(scope="module")
def gateway_process(redis_url: str, migrated_database_url: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url.rsplit("/", 1)[0] + f"/{PROCESS_REDIS_DB}",
        "DATABASE_URL": migrated_database_url,
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cofounder_cli", "serve", "gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/v1/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("the gateway process did not start")
        time.sleep(0.1)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
