"""What counts as a server's outage (waited out by the consumer) and what does not: real errors
of the real drivers, against a port nothing listens on."""

from __future__ import annotations

from collections.abc import Awaitable

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from cofounder_runtime.outages import is_outage
from cofounder_testing.servers import free_port


async def _raised(awaitable: Awaitable[object]) -> BaseException:
    try:
        await awaitable
    except BaseException as exc:
        return exc
    raise AssertionError("no error")


async def test_a_refused_connection_is_an_outage_whichever_driver_and_wrapper() -> None:
    port = free_port()
    direct = await _raised(asyncpg.connect(f"postgresql://x@127.0.0.1:{port}/x", timeout=5))
    assert is_outage(direct), repr(direct)
    engine = create_async_engine(f"postgresql+asyncpg://x@127.0.0.1:{port}/x")

    async def query() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("select 1"))

    wrapped = await _raised(query())
    await engine.dispose()
    assert is_outage(wrapped), repr(wrapped)
    client = Redis(port=port, socket_connect_timeout=2)
    refused = await _raised(client.ping())
    await client.aclose()
    assert is_outage(refused), repr(refused)


def test_a_bad_event_or_a_bug_is_no_outage() -> None:
    assert not is_outage(ValueError("no such tier"))
    assert not is_outage(KeyError("build_id"))
    integrity = IntegrityError("insert", {}, asyncpg.UniqueViolationError("duplicate key"))
    assert isinstance(integrity, DBAPIError)
    assert not is_outage(integrity)
    # A connection error by its class, the client's fault by its meaning: a statement sent wrong.
    assert not is_outage(asyncpg.ProtocolViolationError("bind message supplies 1 parameters"))
    # Raised while handling an outage, for another reason: the handler's choice, not an outage.
    chose = ValueError("the reply was not what we asked")
    chose.__context__ = ConnectionResetError("reset")
    assert not is_outage(chose)
    # Raised *from* one (``raise ... from``): caused by it.
    caused = RuntimeError("could not store the build")
    caused.__cause__ = ConnectionResetError("reset")
    assert is_outage(caused)


@pytest.mark.parametrize(
    "error",
    [asyncpg.CannotConnectNowError("starting up"), asyncpg.AdminShutdownError("shutting down")],
)
def test_a_server_starting_or_stopping_is_an_outage(error: BaseException) -> None:
    assert is_outage(error)
