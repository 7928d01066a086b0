"""Building Redis clients from settings (never at import time)."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

__all__ = ["connect_redis"]


def connect_redis(url: str, *, max_connections: int = 128) -> Redis:
    """A pooled client speaking RESP2 with bytes replies (what the runtime's parsers expect).

    The pool blocks (up to 20 s) when all connections are busy instead of failing the command:
    many handlers share a process, and a burst should queue for a connection, not error.
    ``health_check_interval`` makes a connection idle behind a load balancer reconnect instead of
    failing the next command.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        protocol=2,
        decode_responses=False,
        max_connections=max_connections,
        timeout=20,
        health_check_interval=30,
        socket_keepalive=True,
    )
    return Redis.from_pool(pool)
