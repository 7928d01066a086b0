"""Engines: PostgreSQL on asyncpg, and nothing else (a SQLite URL is refused, saying so), with
timeouts on every statement and connect."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from cofounder_db.engine import async_url, create_engine

NOT_POSTGRESQL = "DATABASE_URL must be a PostgreSQL URL (postgresql://...)"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@db:5432/x", "postgresql+asyncpg://u:p@db:5432/x"),
        ("postgres://u@db/x", "postgresql+asyncpg://u@db/x"),
        ("postgresql+asyncpg://u@db/x", "postgresql+asyncpg://u@db/x"),
    ],
)
def test_postgresql_urls_get_the_asyncpg_driver(url: str, expected: str) -> None:
    assert async_url(url) == expected


@pytest.mark.parametrize(
    "url", ["sqlite:///.cofounder/cofounder.db", "sqlite+aiosqlite:///x.db", "sqlite://"]
)
def test_a_sqlite_url_is_refused_with_the_reason(url: str) -> None:
    with pytest.raises(ValueError, match="SQLite is no longer supported") as refused:
        create_engine(url)
    assert str(refused.value) == f"{NOT_POSTGRESQL}; SQLite is no longer supported"


@pytest.mark.parametrize(
    "url", ["mysql://u:secret@db/x", "postgresql+psycopg://u:secret@db/x", "u:secret@db/x", ""]
)
def test_other_urls_are_refused_without_showing_them(url: str) -> None:
    with pytest.raises(ValueError, match="must be a PostgreSQL URL") as refused:
        create_engine(url)
    assert str(refused.value) == NOT_POSTGRESQL
    assert "secret" not in str(refused.value)


@pytest.mark.integration
async def test_a_server_that_stops_answering_fails_the_statement_instead_of_hanging(
    database_url: str,
) -> None:
    """A primary lost in a failover sends no reset: the connection stays open and nothing comes
    back. Played here by stopping (SIGSTOP) the server process that serves this connection
    alone: the statement fails at its timeout instead of waiting for the kernel (~15 min)."""
    engine = create_engine(database_url, pool_size=1, statement_timeout_s=1.0)
    try:
        async with engine.connect() as conn:
            pid = (await conn.execute(text("select pg_backend_pid()"))).scalar_one()
            try:
                os.kill(pid, signal.SIGSTOP)
            except (ProcessLookupError, PermissionError):
                pytest.skip("the PostgreSQL server's processes are not this machine's to stop")
            try:
                started = time.monotonic()
                with pytest.raises((TimeoutError, DBAPIError)):
                    await asyncio.wait_for(conn.execute(text("select 1")), timeout=30)
                assert time.monotonic() - started < 10
            finally:
                os.kill(pid, signal.SIGCONT)
            await conn.invalidate()  # its protocol state is unknown now: not back to the pool
    finally:
        await engine.dispose()
