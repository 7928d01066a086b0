"""Engines from URLs: PostgreSQL on asyncpg, the only database."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cofounder_runtime.settings import postgresql_url

__all__ = ["async_url", "create_engine", "driver_dsn"]


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


def create_engine(url: str, *, pool_size: int = 20, pre_ping: bool = True) -> AsyncEngine:
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
    """
    return create_async_engine(
        async_url(url), pool_size=pool_size, max_overflow=0, pool_timeout=30, pool_pre_ping=pre_ping
    )
