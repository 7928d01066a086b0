"""Reading the two views, bounded: a page of builds from PostgreSQL, then what Redis holds of them.

PostgreSQL is read first and Redis second, so anything that progressed in between shows up as
in flight (or done) in Redis rather than as missing; the reconciler also acts only on what two
passes in a row found missing, which covers the rest of the race.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import and_, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_contracts import BuildStatus, derived_event_id
from cofounder_contracts.codec import DATA, EVENT_ID, TYPE
from cofounder_contracts.keys import SLEEPING_BUILDS_KEY, cancel_key, lease_key
from cofounder_contracts.streams import (
    AGENT_RUNNER,
    AGENT_WORK,
    BUDGET,
    BUDGET_SIGNALS,
    BUDGET_USAGE,
    BUILD_CONTROL,
    BUILD_EVENTS,
    BUILD_REQUESTS,
    CONTEXT_ASSEMBLER,
    GATEWAY,
    SNAPSHOT,
    SNAPSHOT_REQUESTS,
)
from cofounder_db.models import AgentCheckpoint, BudgetLedgerRow, Build, OutboxRow
from cofounder_gateway.projection import SCOPE as PROJECTION_SCOPE
from cofounder_gateway.reconcile.decide import snapshot_answer_ids
from cofounder_gateway.reconcile.facts import (
    BuildFacts,
    InFlight,
    RedisView,
    RunFacts,
    SnapshotFacts,
    UnmeteredTurn,
)
from cofounder_gateway.requests import requested_event_id
from cofounder_runtime.idempotency_sql import processed_events

__all__ = ["Page", "in_flight", "read_builds", "read_parts", "read_redis"]

_CP: Final = AgentCheckpoint.__table__
_UNFINISHED: Final = ["queued", "assembling", "running", "sleeping", "finishing"]


@dataclass(slots=True)
class Page:
    """Where the next pass continues: the last build id seen of each kind of candidate."""

    unfinished_after: str = ""
    finished_after: str = ""


async def read_builds(
    engine: AsyncEngine, page: Page, *, limit: int, lookback: timedelta, now: datetime
) -> list[BuildFacts]:
    """Up to ``limit`` unfinished builds and ``limit`` builds that ended within ``lookback``,
    after the page's cursors (which move on, and wrap around at the end), with their runs'
    last parts, their latest snapshot requests, and whether their requests are in the outbox."""
    builds = Build.__table__
    columns = (
        builds.c.id,
        builds.c.project_id,
        builds.c.user_id,
        builds.c.status,
        builds.c.goal,
        builds.c.created_at,
        builds.c.status_changed_at,
        builds.c.finished_at,
    )
    async with engine.connect() as conn:
        unfinished = (
            await conn.execute(
                select(*columns)
                .where(builds.c.status.in_(_UNFINISHED), builds.c.id > page.unfinished_after)
                .order_by(builds.c.id)
                .limit(limit)
            )
        ).all()
        finished = (
            await conn.execute(
                select(*columns)
                .where(
                    builds.c.finished_at >= now - lookback,
                    builds.c.status.notin_(_UNFINISHED),
                    builds.c.id > page.finished_after,
                )
                .order_by(builds.c.id)
                .limit(limit)
            )
        ).all()
        page.unfinished_after = unfinished[-1].id if len(unfinished) == limit else ""
        page.finished_after = finished[-1].id if len(finished) == limit else ""
        rows = [*unfinished, *finished]
        ids = [r.id for r in rows]
        if not ids:
            return []
        runs = await _runs(conn, ids)
        snapshots = await _snapshots(conn, ids)
        unmetered = await _unmetered(conn, list(runs))
        requested = {requested_event_id(r.id): r.id for r in rows if r.id not in runs}
        in_outbox = (
            {
                requested[e]
                for (e,) in await conn.execute(
                    select(OutboxRow.event_id).where(OutboxRow.event_id.in_(list(requested)))
                )
            }
            if requested
            else set()
        )
    return [
        BuildFacts(
            build_id=r.id,
            project_id=r.project_id,
            user_id=r.user_id,
            status=BuildStatus(r.status),
            goal=r.goal,
            created_at=r.created_at,
            changed_at=r.status_changed_at or r.created_at,
            finished_at=r.finished_at,
            request_in_outbox=r.id in in_outbox,
            run=runs.get(r.id),
            snapshot=snapshots.get(r.id),
            unmetered=unmetered.get(r.id, ()),
        )
        for r in rows
    ]


def _latest(ids: Sequence[str], *where: Any) -> Any:
    """The (build_id, seq) of each build's latest checkpoint matching ``where``."""
    return (
        select(_CP.c.build_id, func.max(_CP.c.seq).label("seq"))
        .where(_CP.c.build_id.in_(ids), *where)
        .group_by(_CP.c.build_id)
        .subquery()
    )


async def _runs(conn: Any, ids: Sequence[str]) -> dict[str, RunFacts]:
    """Each build's last checkpoint; the parts only of a sleep or an end (a turn's are large)."""
    last = _latest(ids)
    rows = (
        await conn.execute(
            select(_CP.c.build_id, _CP.c.seq, _CP.c.kind, _CP.c.created_at).join(
                last, and_(_CP.c.build_id == last.c.build_id, _CP.c.seq == last.c.seq)
            )
        )
    ).all()
    wanted = [(r.build_id, r.seq) for r in rows if r.kind in ("sleep", "end")]
    parts = await _parts(conn, wanted)
    runs = {}
    for r in rows:
        part = parts.get((r.build_id, r.seq), {})
        runs[r.build_id] = RunFacts(
            last_kind=r.kind,
            last_seq=r.seq,
            last_at=r.created_at,
            ended=part.get("event") if r.kind == "end" else None,
            sleeping=part.get("event") if r.kind == "sleep" else None,
            resets_at=part.get("resets_at") if r.kind == "sleep" else None,
        )
    return runs


async def _parts(conn: Any, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Any]:
    """The parts of the checkpoints named by (build_id, seq)."""
    keys = list(keys)
    if not keys:
        return {}
    query = select(_CP.c.build_id, _CP.c.seq, _CP.c.parts).where(
        tuple_(_CP.c.build_id, _CP.c.seq).in_(keys)
    )
    return {(r.build_id, r.seq): r.parts for r in (await conn.execute(query)).all()}


async def _snapshots(conn: Any, ids: Sequence[str]) -> dict[str, SnapshotFacts]:
    """Each build's latest snapshot request (from the checkpoints' narrow column) and whether
    the gateway's projection applied an answer to it (its ``processed_events`` row)."""
    latest = _latest(ids, _CP.c.snapshot_request_id.is_not(None))
    rows = (
        await conn.execute(
            select(_CP.c.build_id, _CP.c.seq, _CP.c.snapshot_request_id, _CP.c.created_at).join(
                latest, and_(_CP.c.build_id == latest.c.build_id, _CP.c.seq == latest.c.seq)
            )
        )
    ).all()
    if not rows:
        return {}
    answers = {
        a: r.snapshot_request_id for r in rows for a in snapshot_answer_ids(r.snapshot_request_id)
    }
    answered = {
        answers[e]
        for (e,) in await conn.execute(
            select(processed_events.c.event_id).where(
                processed_events.c.scope == PROJECTION_SCOPE,
                processed_events.c.event_id.in_(list(answers)),
            )
        )
    }
    return {
        r.build_id: SnapshotFacts(
            request_id=r.snapshot_request_id,
            seq=r.seq,
            requested_at=r.created_at,
            answered=r.snapshot_request_id in answered,
        )
        for r in rows
    }


async def _unmetered(conn: Any, ids: Sequence[str]) -> dict[str, tuple[UnmeteredTurn, ...]]:
    """The turns whose usage has no ledger row, of the builds with fewer ledger rows than turns.

    Counting first keeps the common case to two grouped counts on narrow columns; only a build
    short of rows has its turns listed. (A build whose broken-off calls made up for a lost turn
    in the count is not looked at: those calls are rare, and each is metered when it breaks.)"""
    if not ids:
        return {}
    ledger = BudgetLedgerRow.__table__
    turns = dict(
        (
            await conn.execute(
                select(_CP.c.build_id, func.count())
                .where(_CP.c.build_id.in_(ids), _CP.c.kind == "turn")
                .group_by(_CP.c.build_id)
            )
        ).all()
    )
    metered = (
        dict(
            (
                await conn.execute(
                    select(ledger.c.build_id, func.count())
                    .where(ledger.c.build_id.in_(list(turns)))
                    .group_by(ledger.c.build_id)
                )
            ).all()
        )
        if turns
        else {}
    )
    short = [b for b, n in turns.items() if metered.get(b, 0) < n]
    if not short:
        return {}
    contexts = await _parts(conn, [(b, 1) for b in short])
    rows = (
        await conn.execute(
            select(_CP.c.build_id, _CP.c.seq, _CP.c.iteration, _CP.c.created_at).where(
                _CP.c.build_id.in_(short), _CP.c.kind == "turn"
            )
        )
    ).all()
    known = {
        e
        for (e,) in await conn.execute(
            select(ledger.c.event_id).where(ledger.c.build_id.in_(short))
        )
    }
    out: dict[str, list[UnmeteredTurn]] = {}
    for r in rows:
        context_id = contexts[(r.build_id, 1)]["context"]["event_id"]
        usage_id = derived_event_id(context_id, f"usage:{r.iteration}")
        if usage_id not in known:
            out.setdefault(r.build_id, []).append(UnmeteredTurn(r.seq, usage_id, r.created_at))
    return {b: tuple(sorted(t, key=lambda u: u.seq)) for b, t in out.items()}


async def read_parts(engine: AsyncEngine, build_id: str, seq: int) -> Any:
    """One checkpoint's parts (what a repair re-publishes from), or None."""
    async with engine.connect() as conn:
        return (
            await conn.execute(
                select(_CP.c.parts).where(_CP.c.build_id == build_id, _CP.c.seq == seq)
            )
        ).scalar_one_or_none()


# -- Redis ---------------------------------------------------------------------------------


class _Envelope(msgspec.Struct):
    build_id: str


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
_SLEEPER: Final = msgspec.json.Decoder(tuple[str, ...])


def _entry(fields: dict[bytes, bytes]) -> tuple[str, str, str] | None:
    """(type, event id, build id) of a stream entry; None for one that is not an event."""
    try:
        build_id = _ENVELOPE.decode(fields[DATA]).build_id
        return fields[TYPE].decode(), fields[EVENT_ID].decode(), build_id
    except (KeyError, UnicodeDecodeError, msgspec.DecodeError):
        return None  # a poison entry: the consumer dead-letters it


async def in_flight(redis: Redis, stream: str, group: str, *, limit: int) -> InFlight:
    """The entries of ``stream`` that ``group`` has not acked: its pending entries and those
    after its last delivered id (all of them when the group is gone: a consumer recreates it at
    the start of the stream). Incomplete past ``limit`` of either."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return InFlight()  # no stream: nothing in flight
        raise
    info = next((g for g in groups if _text(g["name"]) == group), None)
    entries: list[dict[bytes, bytes]] = []
    complete = True
    if info is not None and int(info["pending"]):
        pending = await redis.xpending_range(stream, group, min="-", max="+", count=limit + 1)
        complete = len(pending) <= limit
        async with redis.pipeline(transaction=False) as pipe:
            for p in pending[:limit]:
                pipe.xrange(stream, p["message_id"], p["message_id"])
            for reply in await pipe.execute():
                entries.extend(fields for _, fields in reply)
    start = "-" if info is None else "(" + _text(info["last-delivered-id"])
    after: Any = await redis.xrange(stream, min=start, max="+", count=limit + 1)
    complete = complete and len(after) <= limit
    entries.extend(fields for _, fields in after[:limit])
    parsed = [e for e in map(_entry, entries) if e is not None]
    return InFlight(
        complete=complete,
        builds=frozenset((t, b) for t, _, b in parsed),
        event_ids=frozenset(e for _, e, _ in parsed),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read_redis(redis: Redis, builds: Sequence[BuildFacts], *, limit: int) -> RedisView:
    """What Redis holds of ``builds``: the work in flight on every stream a build's progress
    goes through, their leases and cancel flags, and the budget's wake set."""

    async def flight(stream: str, group: str) -> InFlight:
        return await in_flight(redis, stream, group, limit=limit)

    ids = [b.build_id for b in builds]
    async with redis.pipeline(transaction=False) as pipe:
        for build_id in ids:
            pipe.exists(lease_key(build_id))
            pipe.exists(cancel_key(build_id))
        pipe.zcard(SLEEPING_BUILDS_KEY)
        replies = await pipe.execute()
    leased = frozenset(b for b, n in zip(ids, replies[0:-1:2], strict=True) if n)
    flags = frozenset(b for b, n in zip(ids, replies[1:-1:2], strict=True) if n)
    sleeping: frozenset[str] | None = None
    if int(replies[-1]) <= limit:
        members: Any = await redis.zrange(SLEEPING_BUILDS_KEY, 0, -1)
        sleeping = frozenset(_SLEEPER.decode(m)[0] for m in members)
    # The streams' views are independent reads: one round trip's time for all of them.
    (
        requests,
        work,
        signals,
        control,
        snapshots,
        usage,
        to_gateway,
        to_budget,
    ) = await asyncio.gather(
        flight(BUILD_REQUESTS.name, CONTEXT_ASSEMBLER),
        flight(AGENT_WORK.name, AGENT_RUNNER),
        flight(BUDGET_SIGNALS.name, AGENT_RUNNER),
        flight(BUILD_CONTROL.name, AGENT_RUNNER),
        flight(SNAPSHOT_REQUESTS.name, SNAPSHOT),
        flight(BUDGET_USAGE.name, BUDGET),
        flight(BUILD_EVENTS.name, GATEWAY),
        flight(BUILD_EVENTS.name, BUDGET),
    )
    return RedisView(
        requests=requests,
        work=work,
        signals=signals,
        control=control,
        snapshots=snapshots,
        usage=usage,
        events_to_gateway=to_gateway,
        events_to_budget=to_budget,
        leased=leased,
        cancel_flags=flags,
        sleeping=sleeping,
    )
