"""Bearer tokens: HS256 JWTs whose ``sub`` is the user id; an admin token for the admin API."""

from __future__ import annotations

import hmac
import time
from typing import Annotated

import jwt
from fastapi import Depends, Header, Request

from cofounder_gateway.problems import ApiError

__all__ = ["User", "current_user", "mint_token", "require_admin", "user_from_header"]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def mint_token(secret: str, user_id: str, *, ttl_s: int = 3600, now: float | None = None) -> str:
    """A token for ``user_id`` valid ``ttl_s`` seconds (``cofounder token mint`` uses this)."""
    issued = int(now if now is not None else time.time())
    return jwt.encode(
        {"sub": user_id, "iat": issued, "exp": issued + ttl_s}, secret, algorithm="HS256"
    )


def _bearer(header: str | None) -> str:
    if not header:
        raise ApiError(
            401, "unauthenticated", "send 'Authorization: Bearer <token>'", headers=_CHALLENGE
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "unauthenticated",
            "the Authorization header must be 'Bearer <token>'",
            headers=_CHALLENGE,
        )
    return token.strip()


def user_from_header(header: str | None, secret: str) -> str:
    """The user id of a valid token; 401 with the reason otherwise."""
    token = _bearer(header)
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise ApiError(
            401, "token_expired", "the token has expired; get a new one", headers=_CHALLENGE
        ) from None
    except jwt.InvalidTokenError:
        raise ApiError(401, "invalid_token", "the token is not valid", headers=_CHALLENGE) from None
    return str(claims["sub"])


def require_admin(header: str | None, admin_token: str) -> None:
    """401 unless the header carries the admin token (compared in constant time)."""
    token = _bearer(header)
    if not hmac.compare_digest(token.encode(), admin_token.encode()):
        raise ApiError(401, "invalid_token", "not the admin token", headers=_CHALLENGE)


async def current_user(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> str:
    """The authenticated user's id (401 otherwise), checked with the app's ``gw.settings``."""
    secret: str = request.app.state.gw.settings.jwt_secret
    return user_from_header(authorization, secret)


#: A route parameter holding the authenticated user's id.
User = Annotated[str, Depends(current_user)]
