"""Checkpoints: an append-only log of each build's run in the ``agent_checkpoints`` table.

Each part holds only what is new (see :class:`cofounder_db.models.AgentCheckpoint`), so a write
costs the same at iteration 150 as at iteration 1; the conversation is rebuilt on resume by
replaying the parts. An append is fenced by the lease generation and by the primary key (a
second writer of the same ``seq`` fails). The fence: a drive *claims* its generation
(``checkpoint_fences``) before it reads the checkpoints, and an append is one statement that
inserts unless a newer generation has claimed or written. The append reads the claim ``for
share`` and the claim updates it, so the two are ordered: an append that began first is seen by
the successor's read, and one that comes after the claim is refused. A drive that lost its lease
therefore writes nothing more from the moment its successor claims, without asking Redis first.
The highest generation claimed or written is the floor of the next lease (see ``lease.py``):
PostgreSQL remembers it when Redis forgets its counter.

A part that ends a drive holds the events it published, so that they can be published again
from PostgreSQL alone (a resume, a reconciler after Redis lost them): a ``turn`` its ``events``,
a ``sleep`` its ``agent.sleeping`` (``event``), an ``end`` its end event (``event``) and, for a
completed build, the final ``snapshot.requested`` (``snapshot``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, cast

import asyncpg
import msgspec
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_agent_runner.lease import LeaseLost
from cofounder_contracts import ContextReady
from cofounder_db.engine import DRIVER_TIMEOUTS, driver_dsn
from cofounder_db.models import AgentCheckpoint
from cofounder_domain.run import Stuck

__all__ = ["CheckpointStore", "RunState"]

_T = cast(Table, AgentCheckpoint.__table__)
_CONTEXT = msgspec.json.Decoder(ContextReady)
_JSON = msgspec.json.Encoder().encode
# Insert unless a newer lease generation has claimed the build or written a part (the fence).
# The claim is read ``for share``: a claim in progress waits for this insert, and this insert
# waits for a claim in progress, then sees it. Both lookups are by index, so the check costs
# the same at iteration 150 as at 1. (The written-part check also fences runners of a release
# that did not claim, during a rolling update.)
_APPEND: Final = """
with claim as (
  select generation from checkpoint_fences where build_id = $1::varchar for share
)
insert into agent_checkpoints (build_id, seq, generation, kind, parts, iteration, tool_calls,
                               input_tokens, output_tokens, sandbox_kind, sandbox_id, created_at,
                               snapshot_request_id)
select $1::varchar, $2::int, $3::bigint, $4::varchar, $5::json, $6::int, $7::int, $8::bigint,
       $9::bigint, $10::varchar, $11::varchar, $12::timestamptz, $13::varchar
where not exists (select 1 from claim where generation > $3::bigint)
  and not exists (
    select 1 from agent_checkpoints where build_id = $1::varchar and generation > $3::bigint
  )
"""
# Raise the build's claimed generation to ours; no row back when it is already at or above it.
_CLAIM: Final = """
insert into checkpoint_fences as f (build_id, generation, claimed_at)
values ($1::varchar, $2::bigint, now())
on conflict (build_id) do update set generation = excluded.generation,
                                     claimed_at = excluded.claimed_at
  where f.generation < excluded.generation
returning generation
"""
# The floor of the next lease: the highest generation claimed or written.
_LATEST: Final = """
select greatest(
  (select generation from checkpoint_fences where build_id = $1::varchar),
  (select max(generation) from agent_checkpoints where build_id = $1::varchar),
  0
)
"""


def _snapshot_request_id(parts: dict[str, Any]) -> str | None:
    """The ``snapshot.requested`` a part carries (a turn's periodic one among its events, the
    end's final one), written beside it so the reconciler finds a build's latest request
    without reading ``parts``."""
    for event in [parts.get("snapshot"), *parts.get("events", [])]:
        if isinstance(event, dict) and event.get("type") == "snapshot.requested":
            return str(event["event_id"])
    return None


@dataclass(slots=True)
class RunState:
    """Everything a run needs to continue, rebuilt from its checkpoints."""

    context: ContextReady
    model: str
    messages: list[dict[str, Any]]
    seq: int = 0
    iteration: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    prompt_tokens: int = 0
    sandbox_kind: str | None = None
    sandbox_id: str | None = None
    preview_url: str | None = None
    #: The same failing tool call in a row (``parts["stuck"]`` of a turn, see :class:`Stuck`).
    stuck: Stuck = field(default_factory=Stuck)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended: dict[str, Any] | None = None  # the ``end`` part, once the build has ended
    #: The kind of the last part, and the events of the last part when it is a turn: written in
    #: the same row as the turn, published after it; a resume publishes them again (their ids
    #: are deterministic, so downstream absorbs a repeat), since a crash in between lost them.
    last_kind: str = ""
    outbox: list[dict[str, Any]] = field(default_factory=list)
    #: The last part when it is a ``sleep`` (its ``agent.sleeping`` is in ``event``), else None.
    asleep: dict[str, Any] | None = None

    def counters(self) -> dict[str, int]:
        return {
            "iteration": self.iteration,
            "tool_calls": self.tool_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


class CheckpointStore:
    """Appends and replays checkpoints."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _driver_pool(self) -> asyncpg.Pool:
        """A small asyncpg pool of its own for appends, made on first use."""
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    driver_dsn(self.engine),
                    min_size=1,
                    max_size=self.engine.pool.size(),  # type: ignore[attr-defined]
                    **DRIVER_TIMEOUTS,
                )
            return self._pool

    async def _insert(self, values: dict[str, Any], generation: int) -> None:
        """One prepared statement on the store's asyncpg pool. Measured
        (``benchmarks/runner.py``): the append took ~1.3 ms through SQLAlchemy's async layer
        (engine checkout and the driver connection behind it) against ~0.15 ms for the same
        statement on asyncpg, and it runs once per iteration."""
        pool = self._pool or await self._driver_pool()
        async with pool.acquire() as conn:
            try:
                status = await conn.execute(
                    _APPEND,
                    values["build_id"],
                    values["seq"],
                    generation,
                    values["kind"],
                    _JSON(values["parts"]).decode(),
                    values["iteration"],
                    values["tool_calls"],
                    values["input_tokens"],
                    values["output_tokens"],
                    values["sandbox_kind"],
                    values["sandbox_id"],
                    values["created_at"],
                    values["snapshot_request_id"],
                )
            except asyncpg.UniqueViolationError as exc:
                seq, build = values["seq"], values["build_id"]
                raise LeaseLost(
                    f"checkpoint {seq} of {build} was written by another runner"
                ) from exc
        if status != "INSERT 0 1":
            raise LeaseLost(f"a newer runner has taken over {values['build_id']}")

    async def append(
        self, state: RunState, *, generation: int, kind: str, parts: dict[str, Any]
    ) -> int:
        """Append one part as ``state.seq + 1``; return the new seq. :class:`LeaseLost` when a
        newer generation has written or the seq is taken."""
        seq = state.seq + 1
        values: dict[str, Any] = {
            "build_id": state.context.build_id,
            "seq": seq,
            "generation": generation,
            "kind": kind,
            "parts": parts,
            **state.counters(),
            "sandbox_kind": state.sandbox_kind,
            "sandbox_id": state.sandbox_id,
            "created_at": datetime.now(UTC),
            "snapshot_request_id": _snapshot_request_id(parts),
        }
        await self._insert(values, generation)
        state.seq = seq
        return seq

    async def load(self, build_id: str) -> RunState | None:
        """The run rebuilt from its parts, or None when it has none."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(_T).where(_T.c.build_id == build_id).order_by(_T.c.seq))
            ).all()
        if not rows:
            return None
        first = rows[0]
        if first.kind != "start":
            raise ValueError(f"the checkpoints of {build_id} do not begin with a start part")
        start = first.parts
        state = RunState(
            context=_CONTEXT.decode(msgspec.json.encode(start["context"])),
            model=start["model"],
            messages=list(start["messages"]),
            started_at=first.created_at,
        )
        for row in rows:
            parts = row.parts
            match row.kind:
                case "turn":
                    state.messages.extend(parts["messages"])
                    state.preview_url = parts.get("preview_url") or state.preview_url
                    state.stuck = Stuck.from_parts(parts.get("stuck"))
                    state.prompt_tokens = parts.get("prompt_tokens", state.prompt_tokens)
                case "compaction":
                    state.messages = list(parts["messages"])
                    state.prompt_tokens = 0
                case "sleep":  # a replaced sandbox's note, when it came before any turn
                    state.messages.extend(parts.get("messages", ()))
                case "end":
                    state.ended = parts
            state.last_kind = row.kind
            state.outbox = list(parts.get("events", [])) if row.kind == "turn" else []
            state.asleep = parts if row.kind == "sleep" else None
            state.seq = row.seq
            state.iteration = row.iteration
            state.tool_calls = row.tool_calls
            state.input_tokens = row.input_tokens
            state.output_tokens = row.output_tokens
            state.sandbox_kind = row.sandbox_kind
            state.sandbox_id = row.sandbox_id
        return state

    async def latest_generation(self, build_id: str) -> int:
        """The highest lease generation that has claimed the build or written a part of it, 0
        for a build never driven: the floor of its next lease (two index lookups)."""
        pool = self._pool or await self._driver_pool()
        async with pool.acquire() as conn:
            return int(await conn.fetchval(_LATEST, build_id))

    async def claim(self, build_id: str, generation: int) -> None:
        """Claim the build's checkpoints for ``generation``, a lease just taken: from now on an
        append of an older generation is refused. :class:`LeaseLost` when the build has been
        claimed by this generation or a newer one already (a Redis that handed the generation
        out twice, or a successor faster than the floor this lease was taken above)."""
        pool = self._pool or await self._driver_pool()
        async with pool.acquire() as conn:
            claimed = await conn.fetchval(_CLAIM, build_id, generation)
        if claimed is None:
            raise LeaseLost(
                f"generation {generation} of {build_id} is not the newest claim of its checkpoints"
            )

    async def count(self, build_id: str) -> int:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(_T.c.seq).where(_T.c.build_id == build_id))).all()
        return len(rows)
