"""A Redis client for operator commands, from the same settings the services use."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from cofounder_runtime.connections import connect_redis
from cofounder_runtime.settings import DEFAULT_REDIS_URL


@contextlib.asynccontextmanager
async def redis_client(url: str | None) -> AsyncIterator[Redis]:
    """``url`` when given, else ``REDIS_URL`` (or its default)."""
    client = connect_redis(
        url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL, max_connections=4
    )
    try:
        yield client
    finally:
        await client.aclose()
