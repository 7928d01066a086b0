"""Liveness and readiness, open to anyone."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from sqlalchemy import text

from cofounder_gateway.deps import EngineDep, RedisDep
from cofounder_gateway.problems import ApiError, problem_responses

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    name="get_health",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    name="get_readiness",
    responses={
        200: {"content": {"application/json": {"example": {"status": "ready"}}}},
        **problem_responses(503, s503="A dependency is unreachable (type: not_ready)"),
    },
)
async def ready(redis: RedisDep, engine: EngineDep) -> dict[str, str]:
    """Redis and the database answer."""
    try:
        async with asyncio.timeout(2):
            await redis.ping()
            async with engine.connect() as conn:
                await conn.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        raise ApiError(
            503, "not_ready", f"a dependency is unreachable: {type(exc).__name__}"
        ) from None
    return {"status": "ready"}
