"""The edge on the real stack: what PostgreSQL cannot store is a 422 that writes nothing, and the
Last-Event-ID check is exactly the range Redis reads from."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import func, select

from cofounder_db.models import Build
from cofounder_gateway.inputs import is_stream_id
from cofounder_gateway.testing import ADMIN, Running
from cofounder_testing.fixtures import Names

pytestmark = pytest.mark.integration
TOP = 2**64 - 1


async def test_redis_reads_after_every_id_the_check_lets_through(
    redis: Redis, names: Names
) -> None:
    await redis.xadd(names.stream, {"k": "v"}, id="5-5")
    for good in ("0-0", "5-4", f"{TOP}-0", f"{TOP}-{TOP}", f"0-{TOP}", "0005-04"):
        assert is_stream_id(good)
        await redis.xread({names.stream: good}, count=1)  # accepted
    for bad in (f"{TOP + 1}-0", f"0-{TOP + 1}", "1" * 38 + "-0"):
        assert not is_stream_id(bad)
        with pytest.raises(ResponseError, match="Invalid stream ID"):
            await redis.xread({names.stream: bad}, count=1)


async def test_a_last_event_id_redis_refuses_is_400_and_the_largest_it_accepts_streams(
    gateway: Running,
) -> None:
    user, project = await gateway.seed_user()
    auth = gateway.auth(user)
    build = (
        await gateway.client.post(f"/v1/projects/{project}/builds", json={}, headers=auth)
    ).json()["id"]
    cancelled = await gateway.client.post(f"/v1/builds/{build}/cancel", headers=auth)
    assert cancelled.status_code == 202
    url = f"/v1/builds/{build}/events"
    refused = await gateway.client.get(url, headers={**auth, "Last-Event-ID": "1" * 38 + "-0"})
    assert (refused.status_code, refused.json()["type"]) == (400, "invalid_last_event_id")
    # The largest id: nothing comes after it, and the ended build's stream closes cleanly.
    largest = await gateway.client.get(url, headers={**auth, "Last-Event-ID": f"{TOP}-{TOP}"})
    assert largest.status_code == 200
    assert largest.headers["content-type"].startswith("text/event-stream")
    assert "retry:" not in largest.text  # no read failed inside the stream


async def test_text_postgresql_cannot_store_is_422_and_writes_nothing(gateway: Running) -> None:
    user, project = await gateway.seed_user()
    auth = gateway.auth(user)
    nul_goal = await gateway.client.post(
        f"/v1/projects/{project}/builds", json={"goal": "ship\x00it"}, headers=auth
    )
    assert nul_goal.status_code == 422, nul_goal.text
    assert nul_goal.headers["content-type"] == "application/problem+json"
    assert nul_goal.json()["errors"][0]["field"] == "goal"
    nul_email = await gateway.client.post(
        "/v1/admin/users", json={"email": "nul\x00@example.com"}, headers=ADMIN
    )
    assert nul_email.status_code == 422, nul_email.text
    not_an_id = await gateway.client.get("/v1/builds/not-an-id", headers=auth)
    assert not_an_id.status_code == 422
    async with gateway.gw.engine.connect() as conn:
        count = select(func.count()).select_from(Build).where(Build.user_id == user)
        assert (await conn.execute(count)).scalar_one() == 0
