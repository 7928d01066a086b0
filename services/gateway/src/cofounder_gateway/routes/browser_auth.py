"""Credentials that fit a browser, for the build page (``/app``, ``routes/page.py``).

- ``POST /v1/stream-tokens``: a short-lived token that reads one build's events, passed as
  ``?token=`` by the page's ``EventSource`` (which cannot send an ``Authorization`` header). Its
  build, audience and signing key are its own (``auth.py``): taken by that build's events and
  screenshots only, refused on every other route and for every other build, and a bearer token
  is refused in its place.
- ``POST /v1/login-codes``: a one-time code for the page's URL fragment (``#code=``, never sent
  to a server), which ``cofounder dev`` prints; ``POST /v1/login-codes/redeem`` exchanges it,
  once, for a bearer token of ``PAGE_SESSION_TTL_S`` that the page keeps in the tab's
  ``sessionStorage``. The long-lived bearer itself is never put in a URL.

Why these and not a cookie: ``docs/adr/0008-build-page.md``.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cofounder_gateway import builds
from cofounder_gateway.auth import mint_stream_token, mint_token
from cofounder_gateway.deps import CurrentUser, EngineDep, RedisDep, SettingsDep
from cofounder_gateway.inputs import Uuid
from cofounder_gateway.problems import ApiError, problem_responses

__all__ = ["LOGIN_CODE_PREFIX", "router"]

#: Redis keys of pending login codes: the prefix, then the SHA-256 of the code (the code itself
#: is never stored).
LOGIN_CODE_PREFIX: Final = "cofounder.gateway.login-code:"

router = APIRouter(tags=["browser"])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamTokenRequest(_Strict):
    build_id: Uuid = Field(description="The build whose events the token reads.")


class StreamToken(BaseModel):
    """A token for ``GET /v1/builds/{build_id}/events?token=...`` alone."""

    token: str
    build_id: str
    expires_at: datetime
    expires_in: int = Field(description="Seconds the token is valid; get a new one before.")
    events_url: str = Field(description="The events route; add ?token=<token>.")


class LoginCodeRequest(_Strict):
    build_id: Uuid | None = Field(
        default=None, description="Open this build's page (one of yours); else your builds."
    )


class LoginCode(BaseModel):
    """A one-time code; open ``page_url`` (relative to the gateway) in a browser."""

    code: str
    expires_in: int
    page_url: str = Field(description="The page, the code in its fragment (#code=...).")


_Code = Annotated[str, StringConstraints(min_length=20, max_length=100, pattern=r"^[\w-]+$")]


class Redeem(_Strict):
    code: _Code


class PageSession(BaseModel):
    """A bearer token for the page (Authorization: Bearer <token>)."""

    token: str
    user_id: str
    expires_at: datetime
    expires_in: int


#: The problems of a request about one of the caller's builds.
_FOR_YOUR_BUILD = problem_responses(400, 401, 404, 413, 422, s404="No such build of yours")


def _login_key(code: str) -> str:
    return LOGIN_CODE_PREFIX + hashlib.sha256(code.encode()).hexdigest()


@router.post(
    "/stream-tokens",
    status_code=201,
    response_model=StreamToken,
    responses=_FOR_YOUR_BUILD,
)
async def create_stream_token(
    body: StreamTokenRequest, user: CurrentUser, engine: EngineDep, settings: SettingsDep
) -> StreamToken:
    """A short-lived token that reads one of your builds' events (``?token=``), for a
    browser's EventSource; refused by every other route."""
    await builds.get_build(engine, user_id=user, build_id=body.build_id)  # 404 unless yours
    ttl = settings.stream_token_ttl_s
    now = datetime.now(UTC)
    token = mint_stream_token(
        settings.jwt_secret.get_secret_value(),
        user_id=user,
        build_id=body.build_id,
        ttl_s=ttl,
        now=now.timestamp(),
    )
    return StreamToken(
        token=token,
        build_id=body.build_id,
        expires_at=now.replace(microsecond=0) + timedelta(seconds=ttl),
        expires_in=ttl,
        events_url=f"/v1/builds/{body.build_id}/events",
    )


@router.post(
    "/login-codes",
    status_code=201,
    response_model=LoginCode,
    responses=_FOR_YOUR_BUILD,
)
async def create_login_code(
    user: CurrentUser,
    engine: EngineDep,
    redis: RedisDep,
    settings: SettingsDep,
    body: LoginCodeRequest | None = None,
) -> LoginCode:
    """A one-time code that signs a browser in to the build page as you, through the page
    URL's fragment (never sent to a server, unlike a query)."""
    build_id = body.build_id if body is not None else None
    if build_id is not None:
        await builds.get_build(engine, user_id=user, build_id=build_id)
    code = secrets.token_urlsafe(32)
    ttl = settings.login_code_ttl_s
    await redis.set(_login_key(code), user, px=ttl * 1000)
    page = f"/app/builds/{build_id}" if build_id is not None else "/app/"
    return LoginCode(code=code, expires_in=ttl, page_url=f"{page}#code={code}")


@router.post(
    "/login-codes/redeem",
    response_model=PageSession,
    responses=problem_responses(
        400, 401, 413, 422, s401="Not a login code, used already, or expired"
    ),
)
async def redeem_login_code(body: Redeem, redis: RedisDep, settings: SettingsDep) -> PageSession:
    """Exchange a login code, once, for a bearer token of ``PAGE_SESSION_TTL_S`` (no
    Authorization header: the code is the credential)."""
    found = await redis.getdel(_login_key(body.code))
    if found is None:
        raise ApiError(
            401,
            "invalid_login_code",
            "the login code is unknown, used or expired: ask for another one",
        )
    user = found.decode() if isinstance(found, bytes) else str(found)
    ttl = settings.page_session_ttl_s
    now = datetime.now(UTC)
    token = mint_token(settings.jwt_secret.get_secret_value(), user, ttl_s=ttl, now=now.timestamp())
    return PageSession(
        token=token,
        user_id=user,
        expires_at=now.replace(microsecond=0) + timedelta(seconds=ttl),
        expires_in=ttl,
    )
