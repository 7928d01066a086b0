"""Budgets end to end: the gateway, the context assembler, the agent runner and the budget service
as real processes on real Redis and PostgreSQL, the scripted model (through the real SDK) and
local sandboxes.

- A small daily budget puts a build to sleep (status ``sleeping``, sandbox paused); an admin
  top-up through the gateway wakes it at once; it resumes from its checkpoint and completes.
- Two budget replicas run throughout; the woken build is woken once.
- 20 builds of one user at once: the spend never passes the daily budget by more than one call
  in flight per build; every usage event counted once (redelivered duplicates too); the ledger
  sum equals the Redis counter.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import func, select

from cofounder_agent_runner.testing import read_build_events
from cofounder_budget.meter import day_keys
from cofounder_budgeting import days_left
from cofounder_contracts import (
    AgentResumed,
    AgentSleeping,
    BudgetUsage,
    BudgetWake,
    WakeReason,
    encode_fields,
)
from cofounder_contracts.streams import (
    AGENT_RUNNER,
    AGENT_WORK,
    BUDGET,
    BUDGET_SIGNALS,
    BUDGET_USAGE,
    BUILD_REQUESTS,
    CONTEXT_ASSEMBLER,
)
from cofounder_db.engine import create_engine
from cofounder_db.models import AgentCheckpoint, BudgetLedgerRow
from cofounder_runtime.connections import connect_redis
from cofounder_sandbox.local import LocalSandboxes
from cofounder_scripted_model.process import ScriptedModel, start
from cofounder_testing.databases import migrated_database
from cofounder_testing.servers import free_port, own_redis_server
from cofounder_testing.services import offline_env, service_processes
from cofounder_testing.waiting import Watched, eventually, until_started

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": "Bearer dev-admin-token"}
#: The bootstrapper plan gives 1 micro a day (the first call spends it); founders get this much.
FOUNDER_DAILY_MICROS = 150_000


@dataclass
class Pipeline:
    redis_url: str
    gateway: str
    database_url: str
    sandboxes: Path
    logs: Path
    services: list[Watched]


@pytest.fixture(scope="module")
def model() -> Iterator[ScriptedModel]:
    with start("demo-webapp", latency_ms=150) as server:
        yield server


@pytest.fixture(scope="module")
def pipeline(
    database_url: str,
    model: ScriptedModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    # A database of its own: the budget service wakes every sleeping build it finds there; and
    # a Redis of its own: the services read the real stream names.
    with migrated_database(database_url) as database, own_redis_server() as url:
        yield from _pipeline(url, database, model, tmp_path_factory)


def _pipeline(
    redis_url: str,
    database: str,
    model: ScriptedModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    root = tmp_path_factory.mktemp("budget-flow")
    url = redis_url
    port = free_port()
    left = days_left(datetime.now(UTC).date())
    env = offline_env(
        REDIS_URL=url,
        DATABASE_URL=database,
        PORT=str(port),
        ANTHROPIC_BASE_URL=model.url,
        SANDBOX="local",
        SANDBOX_ROOT=str(root / "sandboxes"),
        PLANS_MONTHLY_ALLOWANCE_MICROS=json.dumps(
            {"bootstrapper": left, "founder": FOUNDER_DAILY_MICROS * left, "pro": 10**9}
        ),
        TIER_MAX_CONCURRENT_BUILDS=json.dumps({"bootstrapper": 2, "founder": 20, "pro": 20}),
        CONSUMER_BLOCK_MS="100",
        CONSUMER_MIN_IDLE_MS="5000",
        CONSUMER_RETRY_MAX_MS="500",
        LEASE_TTL_MS="3000",
        WAKE_INTERVAL_S="0.2",
        LOG_JSON="false",
    )
    # Two budget replicas: metering, top-ups and wakes shared between them.
    names = ("gateway", "context-assembler", "agent-runner", "budget", "budget")
    with service_processes([(name, env) for name in names], root) as services:
        gateway = f"http://127.0.0.1:{port}"
        yield Pipeline(url, gateway, database, root / "sandboxes", root, services)


@pytest.fixture
async def running(pipeline: Pipeline) -> AsyncIterator[tuple[Pipeline, Redis, httpx.AsyncClient]]:
    redis = connect_redis(pipeline.redis_url)
    async with httpx.AsyncClient(base_url=pipeline.gateway, timeout=30) as http:

        async def ready() -> bool:
            try:
                if (await http.get("/v1/readyz")).status_code != 200:
                    return False
                for stream, group in (
                    (BUILD_REQUESTS.name, CONTEXT_ASSEMBLER),
                    (AGENT_WORK.name, AGENT_RUNNER),
                    (BUDGET_USAGE.name, BUDGET),
                ):
                    if not await redis.xinfo_consumers(stream, group):
                        return False
            except (httpx.TransportError, ResponseError):
                return False
            return True

        await until_started(
            ready, what="every service up and in its group", watch=pipeline.services
        )
        try:
            yield pipeline, redis, http
        finally:
            await LocalSandboxes(pipeline.sandboxes).kill_all()
            await redis.aclose()


async def _demo(http: httpx.AsyncClient) -> dict[str, Any]:
    seeded = await http.post("/v1/admin/demo", headers=ADMIN)
    assert seeded.status_code == 201, seeded.text
    return dict(seeded.json())


async def _status(http: httpx.AsyncClient, build: str, token: str) -> dict[str, Any]:
    got = await http.get(f"/v1/builds/{build}", headers={"Authorization": f"Bearer {token}"})
    assert got.status_code == 200, got.text
    return dict(got.json())


async def test_a_small_budget_sleeps_the_build_and_a_top_up_wakes_it_to_completion(
    running: tuple[Pipeline, Redis, httpx.AsyncClient],
) -> None:
    pipeline, redis, http = running
    demo = await _demo(http)
    user, token = demo["user_id"], demo["token"]
    auth = {"Authorization": f"Bearer {token}"}
    started = await http.post(f"/v1/projects/{demo['project_id']}/builds", json={}, headers=auth)
    assert started.status_code == 202, started.text
    build = started.json()["id"]

    async def sleeping() -> bool:
        return bool((await _status(http, build, token))["status"] == "sleeping")

    await eventually(sleeping, what="the build to sleep on its spent budget", timeout=60)
    events = await read_build_events(redis, build)
    slept = next(e for e in events if isinstance(e, AgentSleeping))
    engine = create_engine(pipeline.database_url)
    try:
        async with engine.connect() as conn:
            sandbox_id = (
                await conn.execute(
                    select(AgentCheckpoint.sandbox_id)
                    .where(AgentCheckpoint.build_id == build)
                    .order_by(AgentCheckpoint.seq.desc())
                    .limit(1)
                )
            ).scalar()
    finally:
        await engine.dispose()
    state = json.loads((pipeline.sandboxes / str(sandbox_id) / "sandbox.json").read_text())
    assert state["status"] == "paused"
    usage = (await http.get("/v1/usage", headers=auth)).json()
    assert usage["today"]["gate"] == "closed"
    assert usage["today"]["budget_micros"] == 1
    assert usage["today"]["spent_micros"] > 1

    topped = await http.post(
        f"/v1/admin/users/{user}/top-ups", headers=ADMIN, json={"amount_micros": 10_000_000}
    )
    assert topped.status_code == 202, topped.text

    async def ready() -> bool:
        return bool((await _status(http, build, token))["status"] == "ready")

    await eventually(ready, what="the woken build to complete", timeout=90)
    done = await _status(http, build, token)
    assert done["preview_url"]
    events = await read_build_events(redis, build)
    resumed = [e for e in events if isinstance(e, AgentResumed)]
    assert [(r.reason, r.checkpoint_seq) for r in resumed] == [
        ("wake:top_up", slept.checkpoint_seq)
    ]
    signals = await read_build_events(redis, build, streams=(BUDGET_SIGNALS.name,))
    assert [w.reason for w in signals if isinstance(w, BudgetWake)] == [WakeReason.TOP_UP]
    # The build's live feed (SSE) told its owner why it slept and why it woke.
    kinds = []
    async with http.stream("GET", f"/v1/builds/{build}/events", headers=auth) as sse:
        async for line in sse.aiter_lines():
            if line.startswith("event: "):
                kinds.append(line[7:])
    assert {"budget.exhausted", "budget.wake"} <= set(kinds)  # two streams: no order between
    assert kinds.index("agent.sleeping") < kinds.index("agent.resumed")
    after = (await http.get("/v1/usage", headers=auth)).json()["today"]
    assert after["gate"] == "open"
    assert after["top_ups_micros"] == 10_000_000


async def test_twenty_builds_of_one_user_stay_within_the_budget_and_count_each_call_once(
    running: tuple[Pipeline, Redis, httpx.AsyncClient],
) -> None:
    pipeline, redis, http = running
    demo = await _demo(http)
    user, token = demo["user_id"], demo["token"]
    upgraded = await http.put(
        f"/v1/admin/users/{user}/tier", headers=ADMIN, json={"tier": "founder"}
    )
    assert upgraded.status_code == 200, upgraded.text
    auth = {"Authorization": f"Bearer {token}"}
    builds = []
    for _ in range(20):
        started = await http.post(
            f"/v1/projects/{demo['project_id']}/builds", json={}, headers=auth
        )
        assert started.status_code == 202, started.text
        builds.append(started.json()["id"])

    async def settled() -> bool:
        listed = await http.get("/v1/builds", headers=auth, params={"limit": 100})
        statuses = [b["status"] for b in listed.json()["items"]]
        return len(statuses) == 20 and all(s in ("ready", "sleeping") for s in statuses)

    await eventually(settled, what="every build done or asleep", timeout=180)
    listed = (await http.get("/v1/builds", headers=auth, params={"limit": 100})).json()["items"]
    statuses = sorted(b["status"] for b in listed)
    assert "sleeping" in statuses, "the budget never ran out: the test proves nothing"

    day = datetime.now(UTC).date().isoformat()
    keys = day_keys(user, day)
    engine = create_engine(pipeline.database_url)
    try:

        async def ledger() -> tuple[int, int, int]:
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(
                            func.count(),
                            func.coalesce(func.sum(BudgetLedgerRow.cost_micros), 0),
                            func.coalesce(func.max(BudgetLedgerRow.cost_micros), 0),
                        ).where(BudgetLedgerRow.user_id == user)
                    )
                ).one()
            return int(row[0]), int(row[1]), int(row[2])

        async def metered() -> bool:  # every usage event of these builds is in the ledger
            usage = [
                e for e in await read_build_events(redis, "*", streams=(BUDGET_USAGE.name,))
                if isinstance(e, BudgetUsage) and e.user_id == user
            ]  # fmt: skip
            return (await ledger())[0] == len(usage) > 0

        await eventually(metered, what="every usage event metered", timeout=30)
        calls, total, dearest = await ledger()
        spent = int(await redis.get(keys["spent"]) or 0)
        assert spent == total  # ledger sum = counter
        budget = int((await redis.get(keys["daily"]) or b"0").split()[0])
        assert budget == FOUNDER_DAILY_MICROS
        assert total <= budget + 20 * dearest, (total, budget, dearest)
        assert total >= budget  # it ran out (some builds sleep)

        # Redelivered duplicates (a producer retry, a replayed DLQ): counted once.
        raw = await redis.xrange(BUDGET_USAGE.name)
        mine = [fields for _, fields in raw if user.encode() in fields[b"data"]]
        assert len(mine) == calls
        for fields in mine[:10]:
            await redis.xadd(BUDGET_USAGE.name, fields)
        marker = BudgetUsage(
            build_id=builds[0], project_id=demo["project_id"], user_id=user, producer="test",
            model="claude-sonnet-5-5", input_tokens=1000, output_tokens=0,
        )  # fmt: skip
        await redis.xadd(BUDGET_USAGE.name, encode_fields(marker))

        async def marker_counted() -> bool:
            return (await ledger())[0] == calls + 1

        await eventually(marker_counted, what="the duplicates and one new event consumed")
        _, total_after, _ = await ledger()
        assert int(await redis.get(keys["spent"]) or 0) == total_after
        async with engine.connect() as conn:
            marker_cost = (
                await conn.execute(
                    select(BudgetLedgerRow.cost_micros).where(
                        BudgetLedgerRow.event_id == marker.event_id
                    )
                )
            ).scalar()
        assert total_after == total + int(marker_cost or 0)
    finally:
        await engine.dispose()
