"""The client against the gateway (in this process, on real PostgreSQL and Redis): every
founder route, the admin routes the CLI uses, and the errors as the gateway words them. The
client is synchronous: each scenario runs in a thread while the gateway serves in the loop."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

from cofounder_client import AdminClient, ApiError, CofounderClient
from cofounder_client import models as client_models
from cofounder_gateway import schemas, usage
from cofounder_gateway.testing import Running, start_gateway

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "test-admin"  # start_gateway's


@pytest.fixture
async def gateway(own_redis_url: str, migrated_database_url: str) -> AsyncIterator[Running]:
    async for running in start_gateway(own_redis_url, migrated_database_url):
        yield running


def _founder_routes(base_url: str) -> None:
    with AdminClient(base_url, ADMIN_TOKEN) as admin:
        seeded = admin.seed_demo()
    with CofounderClient(base_url, seeded.token) as client:
        build = client.start_build(seeded.project_id, goal="A client build", idempotency_key="k")
        assert (build.status, build.goal, build.project_id) == (
            "queued",
            "A client build",
            seeded.project_id,
        )
        again = client.start_build(seeded.project_id, goal="A client build", idempotency_key="k")
        assert again.id == build.id
        assert client.get_build(build.id) == build
        page = client.list_builds(status="queued")
        assert [b.id for b in page.items] == [build.id]
        assert page.next_cursor is None
        cancelled = client.cancel_build(build.id)
        assert cancelled.status == "cancelled"
        assert cancelled.ended
        events = list(client.events(build.id))  # a cancelled build's stream ends
        assert events[-1].ends_build
        assert all(e.id for e in events)
        after = list(client.events(build.id, last_event_id=events[-1].id))
        assert after == []
        usage = client.usage(days=3)
        assert usage.user_id == seeded.user_id
        assert usage.today.gate in {"open", "closed"}
        assert client.build_usage(build.id).build_id == build.id

        with pytest.raises(ApiError) as raised:
            client.cancel_build(build.id)
        assert (raised.value.status, raised.value.type) == (409, "build_finished")
        assert raised.value.extra["build_status"] == "cancelled"
        with pytest.raises(ApiError) as raised:
            client.start_build(seeded.project_id, goal="x" * 2_001)
        assert raised.value.status == 422
        assert [e["field"] for e in raised.value.errors] == ["goal"]
        with pytest.raises(ApiError) as raised:
            client.get_build("0195a0e2-aaaa-7000-8000-000000000000")
        assert raised.value.type == "build_not_found"
        with pytest.raises(ApiError) as raised:
            list(client.events("0195a0e2-aaaa-7000-8000-000000000000"))
        assert raised.value.type == "build_not_found"
    with CofounderClient(base_url, "not-a-token") as stranger, pytest.raises(ApiError) as raised:
        stranger.list_builds()
    assert (raised.value.status, raised.value.type) == (401, "invalid_token")


async def test_a_founder_s_builds_through_the_client(gateway: Running) -> None:
    await asyncio.to_thread(_founder_routes, str(gateway.client.base_url))


def _admin_routes(base_url: str) -> None:
    with AdminClient(base_url, ADMIN_TOKEN) as admin:
        user = admin.create_user("client-test@example.com", tier="founder")
        project = admin.create_project(user, "Client test")
        admin.put_idea_brief(project, {"name": "Client test"})
        admin.create_interview(project, [{"id": "q", "text": "Why?"}], {"q": "Because."})
        assert admin.user_usage(user, days=1).today.tier == "founder"
        assert admin.top_up(user, 2_000_000, note="test").amount_micros == 2_000_000
        changed = admin.set_tier(user, "pro")
        assert (changed.previous_tier, changed.tier) == ("founder", "pro")
        with pytest.raises(ApiError) as raised:
            admin.create_user("client-test@example.com")
        assert raised.value.type == "email_taken"
        with pytest.raises(ApiError) as raised:
            admin.set_tier(user, "platinum")
        assert raised.value.type == "unknown_tier"
        assert raised.value.extra["tiers"] == ["bootstrapper", "founder", "pro"]
    with AdminClient(base_url, "wrong") as stranger, pytest.raises(ApiError) as raised:
        stranger.seed_demo()
    assert raised.value.status == 401


async def test_the_admin_routes_through_the_client(gateway: Running) -> None:
    await asyncio.to_thread(_admin_routes, str(gateway.client.base_url))


# The client's values are plain dataclasses (the CLI must start fast: no pydantic), so they are
# a second statement of the response shapes; this pins them to the gateway's models.
_SAME_SHAPE = [
    (client_models.Build, schemas.BuildOut),
    (client_models.BuildLinks, schemas.Links),
    (client_models.BuildPage, schemas.BuildList),
    (client_models.Usage, usage.UserUsage),
    (client_models.Today, usage.Today),
    (client_models.DayUsage, usage.DayUsage),
    (client_models.ModelUsage, usage.ModelUsage),
    (client_models.BuildUsage, usage.BuildUsage),
]


@pytest.mark.parametrize(("value", "model"), _SAME_SHAPE, ids=[v.__name__ for v, _ in _SAME_SHAPE])
def test_the_client_reads_exactly_the_fields_the_gateway_answers(
    value: type, model: type[BaseModel]
) -> None:
    fields = {f.name for f in dataclasses.fields(value)} - {"raw"}
    assert fields == set(model.model_fields), (
        f"cofounder_client.{value.__name__} and the gateway's {model.__name__} differ: "
        f"only in the client {sorted(fields - set(model.model_fields))}, "
        f"only in the gateway {sorted(set(model.model_fields) - fields)}"
    )
