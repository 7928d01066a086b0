"""What the routes depend on: the :class:`Gateway` the composition root builds (kept on
``app.state.gw`` by ``create_app``), its parts, the authenticated user and the admin check, each
reached with ``Depends`` through the ``Annotated`` aliases below.

A route declares what it uses as parameters (``engine: EngineDep``, ``user: CurrentUser``);
nothing else reads ``app.state``. Every dependency here is ``async``: FastAPI runs a plain
``def`` dependency in a thread pool, a cost on every request for an attribute read.

The two credentials are security schemes (FastAPI's ``HTTPBearer``), so the OpenAPI document
declares them (``components.securitySchemes``: ``founderToken``, ``adminToken``), each operation
says which it needs, and ``/docs`` has an Authorize button: :data:`founder_token` (a founder's
JWT, resolved to the user id) and :data:`admin_token` (``ADMIN_TOKEN``). Each is one dependency,
as the ``Authorization`` header parameter was, and answers a missing or bad credential with its
own 401 problem (``auth.py``), not FastAPI's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from fastapi.security import APIKeyQuery, HTTPBearer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_gateway.access import remember_user
from cofounder_gateway.archive import Archives
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
    "admin_token",
    "bearer_header",
    "current_user",
    "founder_token",
    "get_gateway",
    "stream_token",
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
    #: Finished builds' log archives (None: none are read, as with no store configured).
    archives: Archives | None = None


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


class FounderToken(HTTPBearer):
    """The founder's bearer token, a JWT (``cofounder token mint``, ``cofounder seed demo``):
    resolves to the user id; 401 (``unauthenticated``, ``invalid_token``, ``token_expired``)
    otherwise."""

    async def __call__(self, request: Request) -> str:  # type: ignore[override]
        secret = _gateway(request).settings.jwt_secret.get_secret_value()
        # remember_user: the request's access-log line names its user (access.py).
        return remember_user(
            request, user_from_header(request.headers.get("authorization"), secret)
        )


class AdminToken(HTTPBearer):
    """The admin API's bearer token (``ADMIN_TOKEN``, compared in constant time); 401
    otherwise."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        require_admin(
            request.headers.get("authorization"),
            _gateway(request).settings.admin_token.get_secret_value(),
        )


class BearerHeader(HTTPBearer):
    """The ``Authorization`` header as sent (None without one), documented as the founder's
    token: for a route that also takes another credential, and checks whichever it got."""

    async def __call__(self, request: Request) -> str | None:  # type: ignore[override]
        return request.headers.get("authorization")


class StreamToken(APIKeyQuery):
    """``?token=``: a stream token, as sent (None without one); the route checks it."""

    async def __call__(self, request: Request) -> str | None:  # type: ignore[override]
        return request.query_params.get("token")


_FOUNDER_TOKEN = "founderToken"  # noqa: S105 - a scheme's name, not a secret
_FOUNDER_DESCRIPTION = (
    "A founder's token (HS256 JWT whose sub is the user id): `cofounder seed demo` or "
    "`cofounder token mint --user ID` prints one."
)
#: The founder routes' security scheme (``founderToken``): the authenticated user's id.
founder_token = FounderToken(
    scheme_name=_FOUNDER_TOKEN,
    bearerFormat="JWT",
    description=_FOUNDER_DESCRIPTION,
    auto_error=False,
)
#: The same scheme, unchecked: the header for a route that takes a stream token too.
bearer_header = BearerHeader(
    scheme_name=_FOUNDER_TOKEN,
    bearerFormat="JWT",
    description=_FOUNDER_DESCRIPTION,
    auto_error=False,
)
#: A build's event stream's other credential (``streamToken``), for a browser's EventSource.
stream_token = StreamToken(
    name="token",
    scheme_name="streamToken",
    description="A stream token (POST /v1/stream-tokens) in the query, ?token=: reads one "
    "build's events, for clients that cannot send headers (a browser's EventSource). A bearer "
    "token is refused there.",
    auto_error=False,
)
#: The admin routes' security scheme (``adminToken``).
admin_token = AdminToken(
    scheme_name="adminToken",
    description="The admin API token (the gateway's ADMIN_TOKEN; `dev-admin-token` with "
    "ENVIRONMENT=development).",
    auto_error=False,
)
#: The authenticated user's id (the dependency behind :data:`CurrentUser`).
current_user = founder_token
#: A route parameter holding the authenticated user's id.
CurrentUser = Annotated[str, Depends(founder_token)]
#: 401 unless the request carries the admin token: the dependency of every admin route
#: (declared once, on the admin routers: ``dependencies=[Depends(admin_only)]``).
admin_only = admin_token
