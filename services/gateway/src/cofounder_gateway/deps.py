"""What the routes depend on: the :class:`Gateway` the composition root builds (kept on
``app.state.gw`` by ``create_app``), its parts, the authenticated user and the admin check, each
reached with ``Depends`` through the ``Annotated`` aliases below.

A route declares what it uses as parameters (``engine: EngineDep``, ``user: CurrentUser``);
nothing else reads ``app.state``. Every dependency here is ``async``: FastAPI runs a plain
``def`` dependency in a thread pool, a cost on every request for an attribute read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Header, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_gateway.auth import require_admin, user_from_header
from cofounder_gateway.feed import Feed
from cofounder_gateway.outbox import Relay
from cofounder_gateway.settings import GatewaySettings

__all__ = [
    "CurrentUser",
    "EngineDep",
    "FeedDep",
    "Gateway",
    "GatewayDep",
    "PgPoolDep",
    "RedisDep",
    "RelayDep",
    "SettingsDep",
    "admin_only",
    "current_user",
    "get_gateway",
]


@dataclass(frozen=True, slots=True)
class Gateway:
    """Everything the routes use, built once by the composition root."""

    settings: GatewaySettings
    engine: AsyncEngine
    redis: Redis
    feed: Feed
    relay: Relay
    #: The driver pool of the build-creating write (see ``builds_pg.py``).
    pg_pool: asyncpg.Pool


def _gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gw
    return gw


# Each part is read from the request, not through GatewayDep: FastAPI solves a sub-dependency
# (its parameters, its cache lookup) for every use of every dependency, a few microseconds each
# on every request.
async def get_gateway(request: Request) -> Gateway:
    """The app's :class:`Gateway` (``create_app`` stores it on ``app.state``)."""
    return _gateway(request)


async def get_settings(request: Request) -> GatewaySettings:
    return _gateway(request).settings


async def get_engine(request: Request) -> AsyncEngine:
    return _gateway(request).engine


async def get_redis(request: Request) -> Redis:
    return _gateway(request).redis


async def get_feed(request: Request) -> Feed:
    return _gateway(request).feed


async def get_relay(request: Request) -> Relay:
    return _gateway(request).relay


async def get_pg_pool(request: Request) -> asyncpg.Pool:
    return _gateway(request).pg_pool


#: The whole :class:`Gateway` (the aliases below are its parts).
GatewayDep = Annotated[Gateway, Depends(get_gateway)]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
RedisDep = Annotated[Redis, Depends(get_redis)]
FeedDep = Annotated[Feed, Depends(get_feed)]
#: The outbox relay: ``relay.poke()`` after writing outbox rows publishes them at once.
RelayDep = Annotated[Relay, Depends(get_relay)]
#: The driver pool of the build-creating write (see ``builds_pg.py``).
PgPoolDep = Annotated[asyncpg.Pool, Depends(get_pg_pool)]


async def current_user(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> str:
    """The authenticated user's id (401 otherwise)."""
    secret = _gateway(request).settings.jwt_secret.get_secret_value()
    return user_from_header(authorization, secret)


#: A route parameter holding the authenticated user's id.
CurrentUser = Annotated[str, Depends(current_user)]


async def admin_only(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    """401 unless the request carries the admin token: the dependency of every admin route
    (declared once, on the admin routers: ``dependencies=[Depends(admin_only)]``)."""
    require_admin(authorization, _gateway(request).settings.admin_token.get_secret_value())
