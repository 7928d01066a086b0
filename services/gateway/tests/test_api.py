"""The REST API on real PostgreSQL and Redis: auth, builds, idempotency, limits, errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import jwt
import pytest
from sqlalchemy import func, select

from cofounder_contracts import ALL_EVENTS, Codec
from cofounder_contracts.streams import BUILD_REQUESTS
from cofounder_db.models import Build, OutboxRow
from cofounder_gateway.testing import ADMIN, Running, start_gateway
from cofounder_testing.inprocess import entries
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration
CODEC = Codec(ALL_EVENTS)


async def test_no_token_bad_token_expired_token_are_401(gateway: Running) -> None:
    user, _ = await gateway.seed_user()
    assert (await gateway.client.get("/v1/builds")).status_code == 401
    expired = gateway.auth(user, ttl_s=-10)
    response = await gateway.client.get("/v1/builds", headers=expired)
    assert response.status_code == 401
    assert response.json()["type"] == "token_expired"
    assert response.headers["content-type"] == "application/problem+json"
    token = gateway.auth(user)["Authorization"]
    tampered = token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")
    response = await gateway.client.get("/v1/builds", headers={"Authorization": tampered})
    assert (response.status_code, response.json()["type"]) == (401, "invalid_token")
    forged = jwt.encode(
        {"sub": user, "exp": int(time.time()) + 60}, "another-secret-" * 3, algorithm="HS256"
    )
    response = await gateway.client.get("/v1/builds", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert (
        await gateway.client.post("/v1/admin/users", json={"email": "a@b.c"})
    ).status_code == 401


async def test_another_users_project_and_build_are_404(gateway: Running) -> None:
    alice, alice_project = await gateway.seed_user()
    bob, _ = await gateway.seed_user()
    started = await gateway.client.post(
        f"/v1/projects/{alice_project}/builds", json={}, headers=gateway.auth(alice)
    )
    assert started.status_code == 202, started.text
    build_id = started.json()["id"]
    as_bob = gateway.auth(bob)
    response = await gateway.client.post(
        f"/v1/projects/{alice_project}/builds", json={}, headers=as_bob
    )
    assert (response.status_code, response.json()["type"]) == (404, "project_not_found")
    assert (await gateway.client.get(f"/v1/builds/{build_id}", headers=as_bob)).status_code == 404
    assert (
        await gateway.client.post(f"/v1/builds/{build_id}/cancel", headers=as_bob)
    ).status_code == 404
    assert (
        await gateway.client.get(f"/v1/builds/{build_id}/events", headers=as_bob)
    ).status_code == 404
    listed = await gateway.client.get("/v1/builds", headers=as_bob)
    assert listed.json()["items"] == []


async def test_start_build_is_202_with_links_and_one_build_requested(gateway: Running) -> None:
    user, project = await gateway.seed_user()
    response = await gateway.client.post(
        f"/v1/projects/{project}/builds", json={"goal": "A plant app"}, headers=gateway.auth(user)
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["links"]["events"] == f"/v1/builds/{body['id']}/events"
    assert response.headers["location"] == f"/v1/builds/{body['id']}"

    async def relayed() -> bool:
        found = [CODEC.decode(f) for _, f in await entries(gateway.gw.redis, BUILD_REQUESTS.name)]
        return [e.build_id for e in found] == [body["id"]]

    await eventually(relayed, what="build.requested relayed once")


async def test_idempotency_key_returns_the_same_build(gateway: Running) -> None:
    user, project = await gateway.seed_user()
    headers = {**gateway.auth(user), "Idempotency-Key": "k-1"}
    first = await gateway.client.post(f"/v1/projects/{project}/builds", json={}, headers=headers)
    again = await gateway.client.post(f"/v1/projects/{project}/builds", json={}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = await gateway.client.post(
        f"/v1/projects/{project}/builds", json={"goal": "something else"}, headers=headers
    )
    assert (other.status_code, other.json()["type"]) == (409, "idempotency_key_reused")
    # An empty key is no key to repeat a request by: refused, saying which input.
    empty = await gateway.client.post(
        f"/v1/projects/{project}/builds",
        json={},
        headers={**gateway.auth(user), "Idempotency-Key": ""},
    )
    assert empty.status_code == 422, empty.text
    assert [(e["in"], e["field"]) for e in empty.json()["errors"]] == [
        ("header", "idempotency-key")
    ]
    async with gateway.gw.engine.connect() as conn:
        count = (
            await conn.execute(select(func.count()).select_from(Build).where(Build.user_id == user))
        ).scalar_one()
    assert count == 1


async def test_the_tier_limit_of_active_builds_answers_429(gateway: Running) -> None:
    user, project = await gateway.seed_user(tier="bootstrapper")  # 2 active builds
    auth = gateway.auth(user)
    for _ in range(2):
        ok = await gateway.client.post(f"/v1/projects/{project}/builds", json={}, headers=auth)
        assert ok.status_code == 202
    over = await gateway.client.post(f"/v1/projects/{project}/builds", json={}, headers=auth)
    assert over.status_code == 429
    problem = over.json()
    assert (problem["type"], problem["limit"], problem["active"]) == (
        "too_many_active_builds",
        2,
        2,
    )
    assert "bootstrapper plan allows 2" in problem["detail"]
    assert over.headers["retry-after"] == "30"
    # Cancelling one frees a slot.
    first = (await gateway.client.get("/v1/builds", headers=auth)).json()["items"][0]
    cancelled = await gateway.client.post(f"/v1/builds/{first['id']}/cancel", headers=auth)
    assert (cancelled.status_code, cancelled.json()["status"]) == (202, "cancelled")
    again = await gateway.client.post(f"/v1/builds/{first['id']}/cancel", headers=auth)
    assert (again.status_code, again.json()["type"]) == (409, "build_finished")
    assert (
        await gateway.client.post(f"/v1/projects/{project}/builds", json={}, headers=auth)
    ).status_code == 202


async def test_list_builds_pages_and_filters(gateway: Running) -> None:
    user, project = await gateway.seed_user(tier="pro")
    auth = gateway.auth(user)
    ids = [
        (await gateway.client.post(f"/v1/projects/{project}/builds", json={}, headers=auth)).json()[
            "id"
        ]
        for _ in range(5)
    ]
    await gateway.client.post(f"/v1/builds/{ids[0]}/cancel", headers=auth)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await gateway.client.get("/v1/builds", params=params, headers=auth)).json()
        seen += [b["id"] for b in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    cancelled = (
        await gateway.client.get("/v1/builds", params={"status": "cancelled"}, headers=auth)
    ).json()["items"]
    assert [b["id"] for b in cancelled] == [ids[0]]
    bad = await gateway.client.get("/v1/builds", params={"status": "nope"}, headers=auth)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "status"


async def test_bad_input_gets_clear_4xx(gateway: Running) -> None:
    user, project = await gateway.seed_user()
    auth = gateway.auth(user)
    url = f"/v1/projects/{project}/builds"
    unknown = await gateway.client.post(url, json={"goal": "x", "colour": "red"}, headers=auth)
    assert unknown.status_code == 422
    assert [e["field"] for e in unknown.json()["errors"]] == ["colour"]
    wrong = await gateway.client.post(url, json={"goal": 42}, headers=auth)
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["field"] == "goal"
    huge = await gateway.client.post(
        url,
        content=b'{"goal": "' + b"x" * 70_000 + b'"}',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert (huge.status_code, huge.json()["type"]) == (413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"goal": "'
        for _ in range(10):
            yield b"x" * 8_000
        yield b'"}'

    streamed = await gateway.client.post(
        url, content=chunks(), headers={**auth, "Content-Type": "application/json"}
    )
    assert (streamed.status_code, streamed.json()["type"]) == (413, "payload_too_large")
    assert "65536 bytes" in streamed.json()["detail"]
    nested = await gateway.client.post(  # within the size limit, deeper than the parser goes
        url,
        content=b"[" * 30_000 + b"]" * 30_000,
        headers={**auth, "Content-Type": "application/json"},
    )
    assert (nested.status_code, nested.json()["type"]) == (400, "invalid_json")
    not_json = await gateway.client.post(
        url, content=b"{", headers={**auth, "Content-Type": "application/json"}
    )
    assert (not_json.status_code, not_json.json()["type"]) == (400, "invalid_json")
    assert not_json.headers["content-type"] == "application/problem+json"


@pytest.fixture
async def flag_off(own_redis_url: str, migrated_database_url: str) -> AsyncIterator[Running]:
    async for running in start_gateway(
        own_redis_url, migrated_database_url, autonomous_agent=False
    ):
        yield running


async def test_with_autonomous_agent_off_the_build_route_is_503_and_writes_nothing(
    flag_off: Running,
) -> None:
    user, project = await flag_off.seed_user()
    async with flag_off.gw.engine.connect() as conn:
        outbox_before = (
            await conn.execute(select(func.count()).select_from(OutboxRow))
        ).scalar_one()
    response = await flag_off.client.post(
        f"/v1/projects/{project}/builds", json={}, headers=flag_off.auth(user)
    )
    assert response.status_code == 503
    assert response.json()["type"] == "autonomous_agent_off"
    async with flag_off.gw.engine.connect() as conn:
        builds = (
            await conn.execute(select(func.count()).select_from(Build).where(Build.user_id == user))
        ).scalar_one()
        outbox_after = (
            await conn.execute(select(func.count()).select_from(OutboxRow))
        ).scalar_one()
    assert (builds, outbox_after) == (0, outbox_before)
    assert await flag_off.gw.redis.xlen(BUILD_REQUESTS.name) == 0


async def test_health_readiness_metrics_openapi(gateway: Running) -> None:
    assert (await gateway.client.get("/v1/healthz")).json() == {"status": "ok"}
    assert (await gateway.client.get("/v1/readyz")).json() == {"status": "ready"}
    metrics = await gateway.client.get("/metrics")
    assert "cofounder_events_handled_total" in metrics.text or metrics.status_code == 200
    spec = (await gateway.client.get("/openapi.json")).json()
    assert "/v1/projects/{project_id}/builds" in spec["paths"]


async def test_admin_demo_seed(gateway: Running) -> None:
    seeded = await gateway.client.post("/v1/admin/demo", headers=ADMIN)
    assert seeded.status_code == 201
    demo = seeded.json()
    started = await gateway.client.post(
        f"/v1/projects/{demo['project_id']}/builds",
        json={},
        headers={"Authorization": f"Bearer {demo['token']}"},
    )
    assert started.status_code == 202


async def test_concurrent_requests_of_one_user_respect_the_limit_exactly(
    gateway: Running,
) -> None:
    user, project = await gateway.seed_user(tier="bootstrapper")  # 2 active builds
    auth = gateway.auth(user)
    answers = await asyncio.gather(
        *[
            gateway.client.post(f"/v1/projects/{project}/builds", json={}, headers=auth)
            for _ in range(12)
        ]
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [202, 202] + [429] * 10


async def test_a_build_that_ends_gives_its_slot_back_once(gateway: Running) -> None:
    """The projection returns a build's slot when the build ends, once, however many end events
    arrive (a completion, its status change, a redelivery)."""
    from cofounder_contracts import BuildCompleted, BuildStatus, BuildStatusChanged
    from cofounder_runtime.publisher import Publisher

    user, project = await gateway.seed_user(tier="bootstrapper")  # 2 active builds
    auth = gateway.auth(user)
    url = f"/v1/projects/{project}/builds"
    ids = [(await gateway.client.post(url, json={}, headers=auth)).json()["id"] for _ in range(2)]
    assert (await gateway.client.post(url, json={}, headers=auth)).status_code == 429
    envelope = {"build_id": ids[0], "project_id": project, "user_id": user, "producer": "test"}
    completed = BuildCompleted(
        **envelope, build_version=1, preview_url="http://x", summary="done", iterations=1,
        tool_calls=1,
    )  # fmt: skip
    publisher = Publisher(gateway.gw.redis)
    for event in (
        completed,
        completed,  # redelivered
        BuildStatusChanged(**envelope, status=BuildStatus.READY),
    ):
        await publisher.emit(event)

    async def ready() -> bool:
        got = await gateway.client.get(f"/v1/builds/{ids[0]}", headers=auth)
        return bool(got.json()["status"] == "ready")

    await eventually(ready, what="the build projected ready")
    # Another end after the end (published only now: handlers of one stream run concurrently,
    # so published together it could be applied first and be the end itself): ignored.
    await publisher.emit(BuildStatusChanged(**envelope, status=BuildStatus.FAILED))
    await asyncio.sleep(0.3)  # the later end events handled too
    assert await ready()
    assert (await gateway.client.post(url, json={}, headers=auth)).status_code == 202
    assert (await gateway.client.post(url, json={}, headers=auth)).status_code == 429
