"""The reconciler on real PostgreSQL and Redis: builds recorded at every stage, a Redis that
holds nothing of them (a flush), and what two passes re-publish; then the same with their work
in flight, which must be left alone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_contracts import (
    AgentSleeping,
    BudgetUsage,
    BuildCompleted,
    BuildStatus,
    ContextReady,
    SandboxKind,
    SnapshotReason,
    SnapshotRequested,
    UsageOutcome,
    derived_event_id,
    encode_fields,
)
from cofounder_contracts.codec import DATA, TYPE
from cofounder_contracts.keys import lease_key
from cofounder_contracts.streams import AGENT_RUNNER, AGENT_WORK, ALL_STREAMS
from cofounder_db.engine import create_engine
from cofounder_db.models import (
    AgentCheckpoint,
    BudgetLedgerRow,
    Build,
    OutboxRow,
    Project,
    User,
)
from cofounder_gateway.reconcile.facts import RepairKind
from cofounder_gateway.reconcile.reconciler import REPAIRS, Reconciler, ReconcilerConfig
from cofounder_gateway.requests import requested_event_id
from cofounder_runtime.connections import connect_redis

pytestmark = pytest.mark.integration

LONG_AGO = datetime.now(UTC) - timedelta(minutes=10)
CONFIG = ReconcilerConfig(grace=timedelta(seconds=30), interval_s=1)


@pytest.fixture
async def engine(own_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(own_database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def own_redis(own_redis_url: str) -> AsyncIterator[Redis]:
    client = connect_redis(own_redis_url)
    yield client
    await client.aclose()


class World:
    """One founder and project, and builds written at the stage a test asks for."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.user = str(uuid.uuid4())
        self.project = str(uuid.uuid4())

    async def founder(self) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(User).values(id=self.user, email=f"{self.user}@x.test"))
            await conn.execute(
                insert(Project).values(id=self.project, owner_id=self.user, name="p")
            )

    def context(self, build_id: str) -> ContextReady:
        return ContextReady(
            build_id=build_id,
            project_id=self.project,
            user_id=self.user,
            producer="context-assembler",
            event_id=derived_event_id(requested_event_id(build_id), "context.ready"),
            goal="an app",
            idea_brief={},
            qna=[],
            tier="bootstrapper",
        )

    async def build(
        self,
        status: BuildStatus,
        *parts: tuple[str, dict[str, Any], str | None],
        build_id: str | None = None,
    ) -> str:
        """A build row at ``status`` (changed long ago) with checkpoints ``(kind, parts,
        snapshot_request_id)`` after a start part."""
        build_id = build_id or str(uuid.uuid4())
        ended = status in (BuildStatus.READY, BuildStatus.FAILED, BuildStatus.CANCELLED)
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(Build).values(
                    id=build_id,
                    project_id=self.project,
                    user_id=self.user,
                    status=status.value,
                    goal="an app",
                    tier="bootstrapper",
                    created_at=LONG_AGO,
                    status_changed_at=LONG_AGO,
                    finished_at=datetime.now(UTC) - timedelta(minutes=5) if ended else None,
                )
            )
            if parts:
                start = (
                    "start",
                    {
                        "context": msgspec.to_builtins(self.context(build_id)),
                        "model": "m",
                        "messages": [],
                    },
                    None,
                )
                for seq, (kind, body, snap) in enumerate([start, *parts], start=1):
                    await conn.execute(
                        insert(AgentCheckpoint).values(
                            build_id=build_id,
                            seq=seq,
                            generation=1,
                            kind=kind,
                            parts=body,
                            snapshot_request_id=snap,
                            iteration=seq - 1,  # a turn after the start part: 1, 2, ...
                            created_at=LONG_AGO,
                        )
                    )
        return build_id

    def usage(self, build_id: str, iteration: int) -> BudgetUsage:
        """The usage of the model call that made turn ``iteration``, as the runner writes it."""
        return BudgetUsage(
            **self.envelope(build_id, f"usage:{iteration}"),
            model="claude-test",
            input_tokens=100,
            output_tokens=10,
            cache_creation_input_tokens=0,
            cache_read_input_tokens=0,
            request_id=None,
            outcome=UsageOutcome.OK,
        )

    def envelope(self, build_id: str, kind: str) -> dict[str, Any]:
        context = self.context(build_id)
        return {
            "build_id": build_id,
            "project_id": self.project,
            "user_id": self.user,
            "producer": "agent-runner",
            "causation_id": context.event_id,
            "event_id": derived_event_id(context.event_id, kind),
        }


def turn(
    snapshot: SnapshotRequested | None = None, usage: BudgetUsage | None = None
) -> tuple[str, dict[str, Any], str | None]:
    events = [msgspec.to_builtins(e) for e in (usage, snapshot) if e is not None]
    return ("turn", {"messages": [], "events": events}, snapshot.event_id if snapshot else None)


async def published(redis: Redis) -> dict[str, list[tuple[str, str]]]:
    """(type, event id) of every entry on the contract streams, by build id."""
    out: dict[str, list[tuple[str, str]]] = {}
    for stream in ALL_STREAMS:
        for _, fields in await redis.xrange(stream.name):
            data = msgspec.json.decode(fields[DATA])
            out.setdefault(data["build_id"], []).append((fields[TYPE].decode(), data["event_id"]))
    return out


async def test_two_passes_republish_what_each_stage_lost_and_nothing_else(
    engine: AsyncEngine, own_redis: Redis
) -> None:
    world = World(engine)
    await world.founder()
    queued = await world.build(BuildStatus.QUEUED)
    assembling = await world.build(BuildStatus.ASSEMBLING)
    in_outbox = await world.build(BuildStatus.QUEUED)
    async with engine.begin() as conn:
        await conn.execute(
            insert(OutboxRow).values(
                stream="cofounder.builds.requested",
                event_type="build.requested",
                event_id=requested_event_id(in_outbox),
                payload=b"{}",
            )
        )
    running = await world.build(BuildStatus.RUNNING, turn())
    leased = await world.build(BuildStatus.RUNNING, turn())
    await own_redis.set(lease_key(leased), "runner-1|1", px=60_000)
    sleeping = await world.build(BuildStatus.SLEEPING, turn())
    sleeping_event = AgentSleeping(
        **world.envelope(sleeping, "sleeping:3"),
        resets_at=datetime.now(UTC) + timedelta(hours=3),
        checkpoint_seq=3,
    )
    async with engine.begin() as conn:
        await conn.execute(
            insert(AgentCheckpoint).values(
                build_id=sleeping,
                seq=3,
                generation=1,
                kind="sleep",
                parts={
                    "resets_at": sleeping_event.resets_at.isoformat(),
                    "event": msgspec.to_builtins(sleeping_event),
                },
                created_at=LONG_AGO,
            )
        )
    ending = await world.build(BuildStatus.RUNNING)
    done_id = ending
    completed = BuildCompleted(
        **world.envelope(done_id, "completed"),
        build_version=1,
        preview_url=None,
        summary="done",
        iterations=1,
        tool_calls=1,
    )
    final = SnapshotRequested(
        **world.envelope(done_id, "snapshot:final"),
        sandbox_kind=SandboxKind.LOCAL,
        sandbox_id="sb-1",
        reason=SnapshotReason.FINAL,
        tool_calls=1,
    )
    async with engine.begin() as conn:
        for seq, (kind, body, snap) in enumerate(
            [
                (
                    "start",
                    {
                        "context": msgspec.to_builtins(world.context(done_id)),
                        "model": "m",
                        "messages": [],
                    },
                    None,
                ),
                (
                    "end",
                    {
                        "outcome": "completed",
                        "event": msgspec.to_builtins(completed),
                        "snapshot": msgspec.to_builtins(final),
                    },
                    final.event_id,
                ),
            ],
            start=1,
        ):
            await conn.execute(
                insert(AgentCheckpoint).values(
                    build_id=done_id,
                    seq=seq,
                    generation=1,
                    kind=kind,
                    parts=body,
                    snapshot_request_id=snap,
                    created_at=LONG_AGO,
                )
            )
    cancelled = await world.build(BuildStatus.CANCELLED, turn())
    # A finished build whose two turns' usage never reached the ledger (one did).
    unbilled = str(uuid.uuid4())
    usages = [world.usage(unbilled, i) for i in (1, 2, 3)]
    await world.build(BuildStatus.READY, *[turn(usage=u) for u in usages], build_id=unbilled)
    async with engine.begin() as conn:
        await conn.execute(
            insert(BudgetLedgerRow).values(
                event_id=usages[1].event_id,
                user_id=world.user,
                build_id=unbilled,
                day="2026-11-29",
                model="claude-test",
                input_tokens=100,
                output_tokens=10,
                cache_creation_input_tokens=0,
                cache_read_input_tokens=0,
                cost_micros=1,
            )
        )

    reconciler = Reconciler(engine, own_redis, config=CONFIG)
    before = {k: REPAIRS.labels(k.value)._value.get() for k in RepairKind}
    assert await reconciler.reconcile_once() == []  # suspected only: nothing sent yet
    assert await published(own_redis) == {}
    made = await reconciler.reconcile_once()
    assert {(r.kind, r.build_id) for r in made} == {
        (RepairKind.REQUEST, queued),
        (RepairKind.REQUEST, assembling),
        (RepairKind.WORK, running),
        (RepairKind.SLEEP, sleeping),
        (RepairKind.END, ending),
        (RepairKind.SNAPSHOT, ending),
        (RepairKind.CANCEL, cancelled),
        (RepairKind.USAGE, unbilled),
    }
    sent = await published(own_redis)
    assert sent[queued] == [("build.requested", requested_event_id(queued))]
    assert sent[assembling] == [("build.requested", requested_event_id(assembling))]
    assert sent[running] == [("context.ready", world.context(running).event_id)]
    assert sent[sleeping] == [("agent.sleeping", sleeping_event.event_id)]
    assert sorted(sent[ending]) == sorted(
        [("build.completed", completed.event_id), ("snapshot.requested", final.event_id)]
    )
    assert sent[cancelled] == [
        ("build.cancel_requested", derived_event_id(cancelled, "build.cancel_requested"))
    ]
    assert sent[unbilled] == [
        ("budget.usage", usages[0].event_id),
        ("budget.usage", usages[2].event_id),
    ]
    assert in_outbox not in sent
    assert leased not in sent
    after = {k: REPAIRS.labels(k.value)._value.get() for k in RepairKind}
    assert after[RepairKind.REQUEST] - before[RepairKind.REQUEST] == 2
    assert all(after[k] - before[k] == 1 for k in RepairKind if k is not RepairKind.REQUEST)
    # The running build's turn had no usage, and the others have no turns: nothing else.

    # What was re-published is now in flight (no group has read it): nothing is sent twice.
    await reconciler.reconcile_once()
    assert await reconciler.reconcile_once() == []
    assert await published(own_redis) == sent


async def test_work_a_runner_holds_pending_is_left_alone_until_redis_forgets_it(
    engine: AsyncEngine, own_redis: Redis
) -> None:
    world = World(engine)
    await world.founder()
    running = await world.build(BuildStatus.RUNNING, turn())
    # The runner's group read the build's context.ready and holds it pending (a crashed runner
    # whose entry waits to be claimed, say): that is work in flight.
    await own_redis.xgroup_create(AGENT_WORK.name, AGENT_RUNNER, id="0", mkstream=True)
    await own_redis.xadd(AGENT_WORK.name, encode_fields(world.context(running)))
    await own_redis.xreadgroup(AGENT_RUNNER, "runner-1", {AGENT_WORK.name: ">"})
    reconciler = Reconciler(engine, own_redis, config=CONFIG)
    for _ in range(3):
        assert await reconciler.reconcile_once() == []
    await own_redis.flushall()  # the test's own server
    await reconciler.reconcile_once()
    made = await reconciler.reconcile_once()
    assert [(r.kind, r.build_id) for r in made] == [(RepairKind.WORK, running)]
    entries = await own_redis.xrange(AGENT_WORK.name)
    assert [msgspec.json.decode(f[DATA])["event_id"] for _, f in entries] == [
        world.context(running).event_id
    ]


async def test_a_second_replica_stands_by_until_the_active_one_is_gone(
    engine: AsyncEngine, own_redis: Redis
) -> None:
    """Every gateway replica runs the reconciler; one is active at a time. The standby takes
    over when the active one stops (its lease released) or when Redis forgot the lease."""
    config = ReconcilerConfig(grace=timedelta(seconds=30), interval_s=0.05)
    first = Reconciler(engine, own_redis, config=config, owner="replica-1")
    second = Reconciler(engine, own_redis, config=config, owner="replica-2")
    assert await first.hold_lease()
    assert not await second.hold_lease()
    assert await first.hold_lease()  # renewed, still the active one
    stop = asyncio.Event()
    stop.set()
    await first.run(stop)  # a stopping replica gives the lease back
    assert await second.hold_lease()
    assert not await first.hold_lease()
    await own_redis.flushall()  # the test's own server: the lease is forgotten
    assert await first.hold_lease()
    assert not await second.hold_lease()


async def test_builds_beyond_one_pass_are_repaired_too(
    engine: AsyncEngine, own_redis: Redis
) -> None:
    # More unfinished builds than one pass reads (a burst when Redis was flushed): each pass
    # reads the next page, so a build is seen again only a cycle later. Its suspicion must
    # last until then, or no repair is ever confirmed.
    world = World(engine)
    await world.founder()
    stuck = {await world.build(BuildStatus.QUEUED) for _ in range(5)}
    reconciler = Reconciler(
        engine,
        own_redis,
        ReconcilerConfig(grace=timedelta(seconds=30), interval_s=1, batch=2),
    )
    repaired: set[str] = set()
    for _ in range(60):  # a cycle of pages (this database holds other tests' builds too), twice
        repaired |= {r.build_id for r in await reconciler.reconcile_once()}
        if stuck <= repaired:
            break
    assert stuck <= repaired
