"""Engines from URLs, for PostgreSQL (asyncpg) and the embedded SQLite default (aiosqlite)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["async_url", "create_engine", "driver_dsn"]


def async_url(url: str) -> str:
    """``postgresql://`` → ``postgresql+asyncpg://``, ``sqlite:///`` → ``sqlite+aiosqlite:///``;
    URLs that already name a driver are kept."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def driver_dsn(engine: AsyncEngine) -> str:
    """The engine's PostgreSQL URL as asyncpg takes it (for the few paths that use the driver's
    own pool or connection, measured to cost a fraction of SQLAlchemy's execution layer)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(url: str, *, pool_size: int = 20, pre_ping: bool = True) -> AsyncEngine:
    """An engine for ``url``. SQLite gets foreign keys on and a busy timeout; PostgreSQL a pool
    that checks connections before use (a database restart costs one retry, not an error).

    No overflow: under a burst, requests queue for one of ``pool_size`` connections rather than
    open short-lived extra ones. Measured on the gateway, overflow connections were opened and
    closed continuously under load, and each costs a TLS attempt, authentication and type
    introspection: far more than the wait.

    ``pre_ping=False`` saves a round trip per checkout, for callers that retry a failed
    statement anyway (the agent runner: a stale connection fails one checkpoint, the build is
    retried from the last one, and the pool discards the connection).
    """
    url = async_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=0, pool_timeout=30, pool_pre_ping=pre_ping
    )
