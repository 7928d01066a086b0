"""Engines from URLs: PostgreSQL on asyncpg, the only database.

Every connection the services open (the engines here, and the driver's own pools and
connections beside them: :data:`DRIVER_TIMEOUTS`) gives up on a statement after
:data:`STATEMENT_TIMEOUT_S` and on a connect after :data:`CONNECT_TIMEOUT_S`. A primary that
vanishes in a failover sends no reset: without a timeout a query in flight waited for the
kernel to give the connection up (about 15 minutes), holding a relay, a checkpoint and the
build's lease with it. Migrations alone run without (an index built concurrently takes long).
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cofounder_runtime.settings import postgresql_url

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DRIVER_TIMEOUTS",
    "STATEMENT_TIMEOUT_S",
    "async_url",
    "create_engine",
    "driver_dsn",
]

#: The longest any statement of the services may wait for its answer (the longest measured is a
#: reconciler pass's read of 500 builds: well under a second).
STATEMENT_TIMEOUT_S: Final = 60.0
#: The longest a new connection may take (asyncpg's default is 60 s).
CONNECT_TIMEOUT_S: Final = 10.0
#: The same two for ``asyncpg.connect`` and ``asyncpg.create_pool``.
DRIVER_TIMEOUTS: Final[dict[str, Any]] = {
    "command_timeout": STATEMENT_TIMEOUT_S,
    "timeout": CONNECT_TIMEOUT_S,
}


def async_url(url: str) -> str:
    """``postgresql://`` (or ``postgres://``) → ``postgresql+asyncpg://``; a URL that already
    names asyncpg is kept. Anything else is refused with a :class:`ValueError`."""
    url = postgresql_url(url)
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+asyncpg://" + url[len(plain) :]
    return url


def driver_dsn(engine: AsyncEngine) -> str:
    """The engine's PostgreSQL URL as asyncpg takes it (for the few paths that use the driver's
    own pool or connection, measured to cost a fraction of SQLAlchemy's execution layer)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(
    url: str,
    *,
    pool_size: int = 20,
    pre_ping: bool = True,
    statement_timeout_s: float | None = STATEMENT_TIMEOUT_S,
) -> AsyncEngine:
    """An engine for the PostgreSQL database at ``url``, with a pool that checks connections
    before use (a database restart costs one retry, not an error). A :class:`ValueError` for any
    other URL.

    No overflow: under a burst, requests queue for one of ``pool_size`` connections rather than
    open short-lived extra ones. Measured on the gateway, overflow connections were opened and
    closed continuously under load, and each costs a TLS attempt, authentication and type
    introspection: far more than the wait.

    ``pre_ping=False`` saves a round trip per checkout, for callers that retry a failed
    statement anyway (the agent runner: a stale connection fails one checkpoint, the build is
    retried from the last one, and the pool discards the connection).

    ``statement_timeout_s``: see the module docstring (None: no limit, for migrations).
    """
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=30,
        pool_pre_ping=pre_ping,
        connect_args={"command_timeout": statement_timeout_s, "timeout": CONNECT_TIMEOUT_S},
    )
