"""Credentials that fit a browser: a stream token reads one build's events and nothing else
(another build, another founder's build, any other route: refused; it expires; a bearer token
is refused in its place in a URL); a login code signs a page in once; neither appears in the
gateway's log."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from cofounder_gateway.auth import (
    mint_stream_token,
    mint_token,
    purpose_key,
    user_from_header,
    user_from_stream_token,
)
from cofounder_gateway.problems import ApiError
from cofounder_gateway.testing import ADMIN, Running

SECRET = "a-test-secret-of-enough-length-0123456789"
USER = str(uuid.uuid4())
BUILD = str(uuid.uuid4())


# ---- the token itself, without I/O ----


def test_a_stream_token_reads_its_build_until_it_expires() -> None:
    now = time.time()
    token = mint_stream_token(SECRET, user_id=USER, build_id=BUILD, ttl_s=300, now=now)
    assert user_from_stream_token(token, SECRET, build_id=BUILD, now=now + 299) == USER
    with pytest.raises(ApiError) as expired:
        user_from_stream_token(token, SECRET, build_id=BUILD, now=now + 300)
    assert (expired.value.status, expired.value.code) == (401, "token_expired")
    with pytest.raises(ApiError) as expired_now:  # the real clock
        user_from_stream_token(
            mint_stream_token(SECRET, user_id=USER, build_id=BUILD, ttl_s=5, now=now - 10),
            SECRET,
            build_id=BUILD,
        )
    assert expired_now.value.code == "token_expired"


def test_a_stream_token_is_refused_for_another_build() -> None:
    token = mint_stream_token(SECRET, user_id=USER, build_id=BUILD, ttl_s=300)
    with pytest.raises(ApiError) as refused:
        user_from_stream_token(token, SECRET, build_id=str(uuid.uuid4()))
    assert (refused.value.status, refused.value.code) == (403, "token_not_for_build")


def test_bearer_and_stream_tokens_never_stand_for_each_other() -> None:
    bearer = mint_token(SECRET, USER, ttl_s=300)
    stream = mint_stream_token(SECRET, user_id=USER, build_id=BUILD, ttl_s=300)
    with pytest.raises(ApiError) as bearer_in_url:
        user_from_stream_token(bearer, SECRET, build_id=BUILD)
    assert (bearer_in_url.value.status, bearer_in_url.value.code) == (401, "invalid_token")
    with pytest.raises(ApiError) as stream_as_bearer:
        user_from_header(f"Bearer {stream}", SECRET)
    assert stream_as_bearer.value.code == "invalid_token"
    # Another secret's stream token, and one signed with JWT_SECRET itself, are forgeries.
    for forged in (
        mint_stream_token("another-secret-of-enough-length-0123", user_id=USER, build_id=BUILD,
                          ttl_s=300),
        _signed_with(SECRET),
    ):  # fmt: skip
        with pytest.raises(ApiError) as refused:
            user_from_stream_token(forged, SECRET, build_id=BUILD)
        assert refused.value.code == "invalid_token"


def _signed_with(key: str) -> str:
    import jwt

    from cofounder_gateway.auth import STREAM_AUDIENCE

    claims = {"sub": USER, "bld": BUILD, "aud": STREAM_AUDIENCE, "exp": int(time.time()) + 60}
    return jwt.encode(claims, key, algorithm="HS256")


def test_the_stream_key_is_derived_per_purpose() -> None:
    assert purpose_key(SECRET, "stream-token") != purpose_key(SECRET, "other")
    assert purpose_key(SECRET, "stream-token") != purpose_key(SECRET + "x", "stream-token")
    assert SECRET not in purpose_key(SECRET, "stream-token")


# ---- through the gateway ----


async def _build(gw: Running) -> tuple[str, dict[str, str], str]:
    user, project = await gw.seed_user()
    auth = gw.auth(user)
    started = await gw.client.post(f"/v1/projects/{project}/builds", json={}, headers=auth)
    assert started.status_code == 202, started.text
    return started.json()["id"], auth, user


async def _first_event(client: httpx.AsyncClient, url: str) -> str:
    async with client.stream("GET", url) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                return line[7:]
    raise AssertionError("no event")


@pytest.mark.integration
async def test_a_stream_token_reads_its_build_events_and_nothing_else(gateway: Running) -> None:
    build_id, auth, user = await _build(gateway)
    other_build, other_auth, _ = await _build(gateway)  # another founder's
    client = gateway.client
    issued = await client.post("/v1/stream-tokens", json={"build_id": build_id}, headers=auth)
    assert issued.status_code == 201, issued.text
    body = issued.json()
    token = body["token"]
    assert body["expires_in"] == gateway.gw.settings.stream_token_ttl_s
    assert body["events_url"] == f"/v1/builds/{build_id}/events"

    # Its build's events, without an Authorization header.
    assert await _first_event(client, f"/v1/builds/{build_id}/events?token={token}") == (
        "build.status_changed"
    )
    # Another founder's build: refused (the token names its build).
    other = await client.get(f"/v1/builds/{other_build}/events", params={"token": token})
    assert (other.status_code, other.json()["type"]) == (403, "token_not_for_build")
    # A token for another founder's build cannot be had.
    theirs = await client.post("/v1/stream-tokens", json={"build_id": other_build}, headers=auth)
    assert (theirs.status_code, theirs.json()["type"]) == (404, "build_not_found")
    # Every other route refuses it as a bearer token.
    as_bearer = {"Authorization": f"Bearer {token}"}
    for method, path in (
        ("GET", f"/v1/builds/{build_id}"),
        ("GET", "/v1/builds"),
        ("POST", f"/v1/builds/{build_id}/cancel"),
        ("GET", "/v1/usage"),
        ("GET", f"/v1/builds/{build_id}/events"),
        ("POST", "/v1/stream-tokens"),
    ):
        refused = await client.request(method, path, headers=as_bearer, json={"build_id": build_id})
        assert (refused.status_code, refused.json()["type"]) == (401, "invalid_token"), path
    # A bearer token is never accepted in the URL.
    bearer = auth["Authorization"].removeprefix("Bearer ")
    in_url = await client.get(f"/v1/builds/{build_id}/events", params={"token": bearer})
    assert (in_url.status_code, in_url.json()["type"]) == (401, "invalid_token")
    # Expired: refused.
    expired = mint_stream_token(
        gateway.gw.settings.jwt_secret.get_secret_value(),
        user_id=user,
        build_id=build_id,
        ttl_s=60,
        now=time.time() - 61,
    )
    late = await client.get(f"/v1/builds/{build_id}/events", params={"token": expired})
    assert (late.status_code, late.json()["type"]) == (401, "token_expired")
    # Without a token: 401 as before; another founder's bearer: their build is not found.
    assert (await client.get(f"/v1/builds/{build_id}/events")).status_code == 401
    hidden = await client.get(f"/v1/builds/{build_id}/events", headers=other_auth)
    assert hidden.status_code == 404


@pytest.mark.integration
async def test_a_new_connection_resumes_after_the_id_in_the_query(gateway: Running) -> None:
    build_id, auth, _ = await _build(gateway)
    token = (
        await gateway.client.post("/v1/stream-tokens", json={"build_id": build_id}, headers=auth)
    ).json()["token"]
    url = f"/v1/builds/{build_id}/events"
    async with gateway.client.stream("GET", url, params={"token": token}) as response:
        first_id = ""
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                first_id = line[4:]
                break
    assert first_id
    # After the only event so far: nothing more is sent (a keep-alive at most), so read the
    # header-less stream with a short timeout and see no event.
    got: list[str] = []

    async def read_after() -> None:
        async with gateway.client.stream(
            "GET", url, params={"token": token, "after": first_id}, timeout=1.5
        ) as again:
            assert again.status_code == 200
            async for line in again.aiter_lines():
                if line.startswith("id: "):
                    got.append(line[4:])

    with pytest.raises(httpx.ReadTimeout):
        await read_after()
    assert got == []
    bad = await gateway.client.get(url, params={"token": token, "after": "nonsense"})
    assert (bad.status_code, bad.json()["type"]) == (400, "invalid_last_event_id")


@pytest.mark.integration
async def test_a_login_code_signs_a_page_in_once(gateway: Running) -> None:
    build_id, auth, user = await _build(gateway)
    client = gateway.client
    made = await client.post("/v1/login-codes", json={"build_id": build_id}, headers=auth)
    assert made.status_code == 201, made.text
    code = made.json()["code"]
    assert made.json()["page_url"] == f"/app/builds/{build_id}#code={code}"
    plain = await client.post("/v1/login-codes", headers=auth)  # no body: the builds page
    assert plain.status_code == 201, plain.text
    assert plain.json()["page_url"].startswith("/app/#code=")

    session = await client.post("/v1/login-codes/redeem", json={"code": code})
    assert session.status_code == 200, session.text
    assert session.json()["user_id"] == user
    token = session.json()["token"]
    mine = await client.get(f"/v1/builds/{build_id}", headers={"Authorization": f"Bearer {token}"})
    assert mine.status_code == 200
    again = await client.post("/v1/login-codes/redeem", json={"code": code})
    assert (again.status_code, again.json()["type"]) == (401, "invalid_login_code")
    unknown = await client.post("/v1/login-codes/redeem", json={"code": "x" * 43})
    assert unknown.status_code == 401
    # Only for one's own builds, and only with a founder's token.
    other_build, _, _ = await _build(gateway)
    theirs = await client.post("/v1/login-codes", json={"build_id": other_build}, headers=auth)
    assert theirs.status_code == 404
    assert (await client.post("/v1/login-codes", headers=ADMIN)).status_code == 401
    # The code itself is not what Redis keeps.
    keys = [k async for k in gateway.gw.redis.scan_iter(match="cofounder.gateway.login-code:*")]
    assert keys
    assert all(plain.json()["code"].encode() not in key for key in keys)
