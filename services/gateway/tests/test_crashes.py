"""An unhandled exception is answered with the 500 problem, logged once, and leaves the client's
kept-alive connection open (Starlette alone re-raises it: uvicorn then logs it again and closes
the connection, and a client's next request on it is reset)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest
import uvicorn
from fastapi import FastAPI

from cofounder_gateway.problems import CatchCrashes, install
from cofounder_testing.servers import free_port
from cofounder_testing.waiting import until_started


def _app() -> FastAPI:
    app = FastAPI()
    install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("the database went away")

    @app.get("/fine")
    async def fine() -> dict[str, bool]:
        return {"ok": True}

    app.add_middleware(CatchCrashes)
    return app


@contextlib.asynccontextmanager
async def _served(app: FastAPI) -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        await until_started(lambda: server.started, what="uvicorn")
        yield port
    finally:
        server.should_exit = True
        await task


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> str:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    length = next(
        int(line.split(":", 1)[1])
        for line in head.split("\r\n")
        if line.lower().startswith("content-length")
    )
    body = await reader.readexactly(length)
    return head + body.decode()


async def test_a_crash_is_a_problem_on_a_connection_that_stays_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    async with _served(_app()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            crashed = await _exchange(reader, writer, "/boom")
            assert crashed.startswith("HTTP/1.1 500")
            assert "application/problem+json" in crashed
            assert '"internal_error"' in crashed
            assert "the database went away" not in crashed  # logged, never sent
            # The same connection answers the next request.
            fine = await _exchange(reader, writer, "/fine")
            assert fine.startswith("HTTP/1.1 200"), fine
        finally:
            writer.close()
    assert not [r for r in caplog.records if r.name == "uvicorn.error"], caplog.text
