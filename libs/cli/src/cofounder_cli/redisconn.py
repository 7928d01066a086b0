"""A Redis client for operator commands, from the same settings the services use."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from cofounder_runtime.connections import connect_redis
from cofounder_runtime.settings import RuntimeSettings


@contextlib.asynccontextmanager
async def redis_client(url: str | None) -> AsyncIterator[Redis]:
    """``url`` when given, else ``REDIS_URL`` (or its default)."""
    client = connect_redis(url or RuntimeSettings().redis_url, max_connections=4)
    try:
        yield client
    finally:
        await client.aclose()
