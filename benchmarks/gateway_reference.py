"""Reference apps for ``benchmarks/gateway.py``, served by uvicorn like the gateway:

- ``bare``: a FastAPI route that validates nothing and writes nothing;
- ``lean``: the same writes as ``POST /v1/projects/{id}/builds`` with raw asyncpg (the build row
  and its outbox row in one transaction) and one ``XADD``, no auth, no validation, no ORM.

Run: ``uvicorn benchmarks.gateway_reference:app`` with ``DATABASE_URL`` and ``REDIS_URL`` set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cofounder_contracts import BuildRequested, encode_fields
from cofounder_runtime.connections import connect_redis

STATE: dict[str, object] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    STATE["pool"] = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=10, max_size=20)
    STATE["redis"] = connect_redis(os.environ["REDIS_URL"])
    yield
    await STATE["pool"].close()  # type: ignore[attr-defined]


app = FastAPI(lifespan=lifespan)


@app.post("/bare/{project_id}")
async def bare(project_id: str) -> JSONResponse:
    return JSONResponse({"id": project_id}, status_code=202)


@app.post("/lean/{project_id}")
async def lean(project_id: str, request: Request) -> JSONResponse:
    user_id = request.headers["x-user"]
    build_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    event = BuildRequested(
        build_id=build_id, project_id=project_id, user_id=user_id, producer="lean", goal="g"
    )
    fields = encode_fields(event)
    pool: asyncpg.Pool = STATE["pool"]  # type: ignore[assignment]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "insert into builds (id, project_id, user_id, status, goal, tier, iterations,"
            " tool_calls, input_tokens, output_tokens, created_at, updated_at)"
            " values ($1, $2, $3, 'queued', 'g', 'bench', 0, 0, 0, 0, $4, $4)",
            build_id,
            project_id,
            user_id,
            now,
        )
        await conn.execute(
            "insert into outbox (stream, event_type, event_id, payload, created_at)"
            " values ('bench', 'build.requested', $1, $2, $3)",
            event.event_id,
            fields[b"data"],
            now,
        )
    await STATE["redis"].xadd("bench.lean", fields)  # type: ignore[attr-defined]
    return JSONResponse({"id": build_id}, status_code=202)
