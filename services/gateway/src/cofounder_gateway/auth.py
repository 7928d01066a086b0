"""Bearer tokens: HS256 JWTs whose ``sub`` is the user id; an admin token for the admin API;
stream tokens, the browser's credential for one build's event stream.

A token whose ``sub`` is not a user id the gateway could have minted (a UUID) is refused like a
forged one (401 ``invalid_token``): every route then knows its user id is a UUID, and a subject
such as ``fuzz-user`` or one holding a NUL never reaches a query.

A **stream token** (``POST /v1/stream-tokens``) lets a browser's ``EventSource``, which cannot send
an ``Authorization`` header, read one build's events with ``?token=`` in the URL: it names its
build (``bld``) and an audience of its own, lives minutes, and is signed with a key derived from
``JWT_SECRET`` for that purpose alone (:func:`purpose_key`), so a bearer token is never a stream
token and a stream token is never a bearer token (each fails the other's signature check).
Why: ``docs/adr/0008-build-page.md``."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import time
from collections import OrderedDict

import jwt

from cofounder_gateway.inputs import is_uuid
from cofounder_gateway.problems import ApiError

__all__ = [
    "STREAM_AUDIENCE",
    "TokenVerifier",
    "mint_stream_token",
    "mint_token",
    "purpose_key",
    "require_admin",
    "user_from_header",
    "user_from_stream_token",
]

#: The ``aud`` claim of a stream token: read one build's events, nothing else.
STREAM_AUDIENCE = "cofounder:build-events"

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


class TokenVerifier:
    """Verifies HS256 tokens with a key prepared once, and remembers the tokens it verified.

    Clients send the same token on every request until it expires; checking its signature and
    parsing its JSON each time was a tenth of the gateway's CPU per request (measured with
    py-spy under ``benchmarks/gateway.py``). A verified token's claims are kept (bounded, oldest
    dropped first) and its expiry is checked on every use, so a remembered token stops working
    the second it expires, as an unremembered one would. Only tokens that verified are kept.
    """

    def __init__(self, secret: str, *, remember: int = 10_000) -> None:
        encoded = base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode()
        self._key = jwt.PyJWK({"kty": "oct", "k": encoded, "alg": "HS256"})
        self._verified: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._remember = remember

    def user(self, token: str, *, now: float | None = None) -> str:
        """The user id of a valid token; :class:`ApiError` 401 with the reason otherwise."""
        now = time.time() if now is None else now
        known = self._verified.get(token)
        if known is not None:
            user_id, expires = known
            if now < expires:
                return user_id
            del self._verified[token]
            raise ApiError(
                401, "token_expired", "the token has expired; get a new one", headers=_CHALLENGE
            )
        try:
            claims = jwt.decode(
                token, self._key, algorithms=["HS256"], options={"require": ["exp", "sub"]}
            )
        except jwt.ExpiredSignatureError:
            raise ApiError(
                401, "token_expired", "the token has expired; get a new one", headers=_CHALLENGE
            ) from None
        except jwt.InvalidTokenError:
            raise ApiError(
                401, "invalid_token", "the token is not valid", headers=_CHALLENGE
            ) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not is_uuid(subject):
            raise ApiError(
                401, "invalid_token", "the token's subject is not a user id", headers=_CHALLENGE
            )
        user_id = subject.lower()
        self._verified[token] = (user_id, float(claims["exp"]))
        if len(self._verified) > self._remember:
            self._verified.popitem(last=False)
        return user_id


@functools.cache
def _verifier(secret: str) -> TokenVerifier:
    return TokenVerifier(secret)


def user_from_header(header: str | None, secret: str) -> str:
    """The user id of a valid token; 401 with the reason otherwise."""
    return _verifier(secret).user(_bearer(header))


def require_admin(header: str | None, admin_token: str) -> None:
    """401 unless the header carries the admin token (compared in constant time)."""
    token = _bearer(header)
    if not hmac.compare_digest(token.encode(), admin_token.encode()):
        raise ApiError(401, "invalid_token", "not the admin token", headers=_CHALLENGE)


def purpose_key(secret: str, purpose: str) -> str:
    """A signing key for one ``purpose``, derived from ``secret`` (HMAC-SHA256, hex): tokens of
    different purposes never verify with each other's key, and knowing one derived key tells
    nothing of ``secret``."""
    label = f"cofounder-gateway/{purpose}/v1".encode()
    return hmac.new(secret.encode(), label, hashlib.sha256).hexdigest()


def mint_stream_token(
    secret: str, *, user_id: str, build_id: str, ttl_s: int, now: float | None = None
) -> str:
    """A token that reads build ``build_id``'s events for ``user_id`` for ``ttl_s`` seconds.
    ``secret`` is ``JWT_SECRET``; the token is signed with its stream-token key."""
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": user_id,
        "bld": build_id,
        "aud": STREAM_AUDIENCE,
        "iat": issued,
        "exp": issued + ttl_s,
    }
    return jwt.encode(claims, purpose_key(secret, "stream-token"), algorithm="HS256")


def user_from_stream_token(
    token: str, secret: str, *, build_id: str, now: float | None = None
) -> str:
    """The user id of a valid stream token for ``build_id``: 401 ``token_expired`` or
    ``invalid_token`` (a bearer token, a forged or altered one), 403 ``token_not_for_build``
    for another build's token. The caller still checks the build is the user's."""
    now = time.time() if now is None else now
    try:
        claims = jwt.decode(
            token,
            purpose_key(secret, "stream-token"),
            algorithms=["HS256"],
            audience=STREAM_AUDIENCE,
            # Expiry is checked below against ``now`` (a test's clock, or the real one).
            options={"require": ["exp", "sub", "aud", "bld"], "verify_exp": False},
        )
    except jwt.InvalidTokenError:
        raise ApiError(
            401,
            "invalid_token",
            "not a stream token: get one with POST /v1/stream-tokens (a bearer token is never "
            "accepted in a URL)",
            headers=_CHALLENGE,
        ) from None
    if not isinstance(claims["exp"], int | float) or now >= claims["exp"]:
        raise ApiError(
            401, "token_expired", "the stream token has expired; get a new one", headers=_CHALLENGE
        )
    subject = claims["sub"]
    if not isinstance(subject, str) or not is_uuid(subject):
        raise ApiError(
            401, "invalid_token", "the token's subject is not a user id", headers=_CHALLENGE
        )
    if claims["bld"] != build_id:
        raise ApiError(403, "token_not_for_build", "this stream token reads another build's events")
    return subject.lower()
