"""Building Redis clients from settings (never at import time)."""

from __future__ import annotations

from typing import Final

from redis.asyncio import BlockingConnectionPool, Redis

__all__ = ["connect_redis"]


#: How much longer than its longest ``BLOCK`` a reply may take before the socket gives up.
_REPLY_MARGIN_S: Final = 10.0


def connect_redis(url: str, *, max_connections: int = 128, longest_block_ms: int = 0) -> Redis:
    """A pooled client speaking RESP2 with bytes replies (what the runtime's parsers expect).

    ``longest_block_ms``: the longest ``BLOCK`` this client's commands use. redis-py 8 gives
    every socket a 5 s read timeout by default, which cuts any blocking read longer than that
    (a quiet build's live feed was cut after 5 s); the timeout here is that block plus a margin,
    so a dead server is still noticed.

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
        socket_timeout=longest_block_ms / 1000 + _REPLY_MARGIN_S,
        socket_connect_timeout=5,
    )
    return Redis.from_pool(pool)
