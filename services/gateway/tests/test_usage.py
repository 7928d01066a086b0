"""Budgets through the gateway on real PostgreSQL and Redis: usage per user per day and per build
(from the ledger, with today's budget by the shared formula), admin top-ups and plan changes
(events through the outbox, bad input refused with the field named)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from cofounder_budgeting import day_account
from cofounder_contracts import ALL_EVENTS, BudgetToppedUp, Codec, TierChanged
from cofounder_contracts.keys import budget_gate_key
from cofounder_contracts.streams import BUDGET_CHANGES
from cofounder_db.models import BudgetLedgerRow, BudgetTopUpRow, Build, User
from cofounder_gateway.testing import ADMIN, Running
from cofounder_runtime.streamreply import read_entries
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration
CODEC = Codec(ALL_EVENTS)


async def _changes(gw: Running, user: str) -> list[object]:
    entries = read_entries(
        [[BUDGET_CHANGES.name.encode(), await gw.gw.redis.xrange(BUDGET_CHANGES.name)]]
    )
    return [e for e in (CODEC.decode(f) for _, f in entries if f) if e.user_id == user]


async def _ledger_row(
    gw: Running, user: str, build: str, day: str, model: str, cost: int, tokens: int
) -> None:
    async with gw.gw.engine.begin() as conn:
        await conn.execute(
            insert(BudgetLedgerRow).values(
                event_id=str(uuid.uuid4()), user_id=user, build_id=build, day=day, model=model,
                input_tokens=tokens, output_tokens=tokens // 10, cache_creation_input_tokens=0,
                cache_read_input_tokens=tokens // 2, cost_micros=cost,
            )
        )  # fmt: skip


async def _build(gw: Running, user: str, project: str) -> str:
    build_id = str(uuid.uuid4())
    async with gw.gw.engine.begin() as conn:
        await conn.execute(
            insert(Build).values(
                id=build_id, project_id=project, user_id=user, status="running", goal="g",
                tier="bootstrapper",
            )
        )  # fmt: skip
    return build_id


async def test_usage_per_day_and_per_build_with_todays_budget(gateway: Running) -> None:
    gw = gateway
    user, project = await gw.seed_user()
    other, other_project = await gw.seed_user()
    build = await _build(gw, user, project)
    theirs = await _build(gw, other, other_project)
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    await _ledger_row(gw, user, build, today.isoformat(), "claude-sonnet-5-5", 3_000, 1_000)
    await _ledger_row(gw, user, build, today.isoformat(), "claude-haiku-5-5", 500, 400)
    await _ledger_row(gw, user, build, yesterday.isoformat(), "claude-sonnet-5-5", 7_000, 2_000)
    await _ledger_row(gw, other, theirs, today.isoformat(), "claude-sonnet-5-5", 9_999, 9)

    got = await gw.client.get("/v1/usage", headers=gw.auth(user))
    assert got.status_code == 200, got.text
    body = got.json()
    days = {d["day"]: d for d in body["days"]}
    assert days[today.isoformat()]["cost_micros"] == 3_500
    assert days[today.isoformat()]["calls"] == 2
    assert days[today.isoformat()]["input_tokens"] == 1_400
    assert days[yesterday.isoformat()]["cost_micros"] == 7_000
    assert [d["day"] for d in body["days"]] == [today.isoformat(), yesterday.isoformat()]
    async with gw.gw.engine.connect() as conn:
        account = await day_account(
            conn, user, today, plans=gw.gw.settings.plans(), default_tier="bootstrapper"
        )
    assert body["today"]["budget_micros"] == account.budget_micros > 0
    assert body["today"]["spent_micros"] == 3_500
    assert body["today"]["remaining_micros"] == account.budget_micros - 3_500
    assert body["today"]["gate"] == "open"
    assert body["today"]["tier"] == "bootstrapper"
    await gw.gw.redis.set(budget_gate_key(user), b'{"resets_at":"x"}')
    closed = await gw.client.get("/v1/usage", headers=gw.auth(user), params={"days": 1})
    assert closed.json()["today"]["gate"] == "closed"
    assert [d["day"] for d in closed.json()["days"]] == [today.isoformat()]

    per_build = await gw.client.get(f"/v1/builds/{build}/usage", headers=gw.auth(user))
    assert per_build.status_code == 200, per_build.text
    assert per_build.json()["cost_micros"] == 10_500
    assert per_build.json()["calls"] == 3
    by_model = {m["model"]: m["cost_micros"] for m in per_build.json()["by_model"]}
    assert by_model == {"claude-sonnet-5-5": 10_000, "claude-haiku-5-5": 500}
    # Another user's build is not found; so is a build that does not exist.
    for missing in (theirs, str(uuid.uuid4())):
        nope = await gw.client.get(f"/v1/builds/{missing}/usage", headers=gw.auth(user))
        assert nope.status_code == 404
        assert nope.json()["type"].endswith("build_not_found")
    # Admins read anyone's.
    admin = await gw.client.get(f"/v1/admin/users/{other}/usage", headers=ADMIN)
    assert admin.json()["today"]["spent_micros"] == 9_999
    admin_build = await gw.client.get(
        f"/v1/admin/users/{other}/builds/{theirs}/usage", headers=ADMIN
    )
    assert admin_build.json()["cost_micros"] == 9_999
    assert (await gw.client.get("/v1/usage")).status_code == 401
    too_far = await gw.client.get("/v1/usage", headers=gw.auth(user), params={"days": 1000})
    assert too_far.status_code == 422


async def test_an_admin_top_up_is_an_event_through_the_outbox(gateway: Running) -> None:
    gw = gateway
    user, _ = await gw.seed_user()
    accepted = await gw.client.post(
        f"/v1/admin/users/{user}/top-ups",
        headers=ADMIN,
        json={"amount_micros": 5_000_000, "note": "launch week"},
    )
    assert accepted.status_code == 202, accepted.text

    async def relayed() -> bool:
        return bool(await _changes(gw, user))

    await eventually(relayed, what="the top-up relayed to the budget changes stream")
    [event] = await _changes(gw, user)
    assert isinstance(event, BudgetToppedUp)
    assert (event.amount_micros, event.note) == (5_000_000, "launch week")
    assert event.event_id == accepted.json()["id"]
    # The gateway writes only the event: the budget service records the top-up.
    async with gw.gw.engine.connect() as conn:
        rows = (
            await conn.execute(select(BudgetTopUpRow).where(BudgetTopUpRow.user_id == user))
        ).all()
    assert rows == []

    for body, field in (
        ({"amount_micros": 0}, "amount_micros"),
        ({"amount_micros": -5}, "amount_micros"),
        ({"amount_micros": "lots"}, "amount_micros"),
        ({"amount_micros": 10**15}, "amount_micros"),
        ({"amount_micros": 5, "currency": "EUR"}, "currency"),
    ):
        bad = await gw.client.post(f"/v1/admin/users/{user}/top-ups", headers=ADMIN, json=body)
        assert bad.status_code == 422, body
        assert field in bad.text
    unknown = await gw.client.post(
        f"/v1/admin/users/{uuid.uuid4()}/top-ups", headers=ADMIN, json={"amount_micros": 5}
    )
    assert unknown.status_code == 404
    assert unknown.json()["type"].endswith("user_not_found")
    as_user = await gw.client.post(
        f"/v1/admin/users/{user}/top-ups", headers=gw.auth(user), json={"amount_micros": 5}
    )
    assert as_user.status_code == 401
    assert len(await _changes(gw, user)) == 1  # refused requests wrote nothing


async def test_a_plan_change_updates_the_user_and_emits_one_event(gateway: Running) -> None:
    gw = gateway
    user, _ = await gw.seed_user()
    unknown = await gw.client.put(
        f"/v1/admin/users/{user}/tier", headers=ADMIN, json={"tier": "platinum"}
    )
    assert unknown.status_code == 422
    assert unknown.json()["type"].endswith("unknown_tier")
    assert "pro" in unknown.json()["tiers"]
    new_user = await gw.client.post(
        "/v1/admin/users", headers=ADMIN, json={"email": "x@y.io", "tier": "platinum"}
    )
    assert (new_user.status_code, new_user.json()["type"]) == (422, "unknown_tier")
    url = f"/v1/admin/users/{user}/tier"
    changed = await gw.client.put(url, headers=ADMIN, json={"tier": "pro"})
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"user_id": user, "tier": "pro", "previous_tier": "bootstrapper"}
    same = await gw.client.put(url, headers=ADMIN, json={"tier": "pro"})
    assert same.status_code == 200
    async with gw.gw.engine.connect() as conn:
        assert (await conn.execute(select(User.tier).where(User.id == user))).scalar() == "pro"

    async def relayed() -> bool:
        return bool(await _changes(gw, user))

    await eventually(relayed, what="the plan change relayed")
    [event] = await _changes(gw, user)  # the no-op change emitted nothing
    assert isinstance(event, TierChanged)
    assert (event.tier, event.previous_tier) == ("pro", "bootstrapper")
    usage = await gw.client.get("/v1/usage", headers=gw.auth(user))
    assert usage.json()["today"]["tier"] == "pro"
