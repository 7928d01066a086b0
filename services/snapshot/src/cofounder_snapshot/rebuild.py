"""A finished build's history rebuilt from PostgreSQL, for when its Redis feed is gone.

What the system of record keeps of a build is less than its feed, and this says exactly what it
gives back (docs/adr/0009-log-archive.md):

- ``build.status_changed`` queued (the build's row) and assembling and running (its ``start``
  checkpoint: the context and when the run began);
- ``agent.iteration_completed`` per ``turn`` checkpoint, with the turn's tokens from its metered
  call;
- ``budget.usage`` per metered call (``budget_ledger``);
- ``agent.sleeping`` per ``sleep`` checkpoint (the event itself is in the checkpoint);
- the build's end: the event that ended it.

Not rebuilt: tool calls and their results as events (the checkpoints hold the conversation,
not the events), snapshot answers, budget warnings, resumptions.

Every rebuilt event gets the id its producer gave it (they are derived from the build, its
request and its context: ``cofounder_contracts.ids.derived_event_id``), so an entry that also
survives in a partial feed is recognised and kept once. The entry ids are ``<ms>-<n>``: the
event's time in milliseconds and its rank among the rebuilt events of that millisecond, so the
same rows always give the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import msgspec
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_contracts import (
    AgentIterationCompleted,
    AgentSleeping,
    BudgetUsage,
    BuildStatus,
    BuildStatusChanged,
    ContextReady,
    Event,
    derived_event_id,
    encode,
    envelope,
    follow_up,
)
from cofounder_db.models import AgentCheckpoint, BudgetLedgerRow, Build
from cofounder_snapshots.logarchive import ArchiveEntry

__all__ = ["first_event_id", "merge", "rebuilt_history"]

#: The kinds the gateway and the context assembler derive their first events' ids from (see
#: ``cofounder_gateway.requests`` and the assembler's handler): a feed that starts with the
#: queued status holds the build from its start.
_REQUESTED: Final = "build.requested"
_QUEUED: Final = "status:queued"
_ASSEMBLING: Final = "build.status_changed"
_MAX_TOKENS: Final = 5_000_000


def first_event_id(build_id: str) -> str:
    """The event id of every build's first feed entry: its queued status."""
    return derived_event_id(build_id, _QUEUED)


def _entry(event: Event, entry_id: str) -> ArchiveEntry:
    return ArchiveEntry(
        id=entry_id,
        type=event.type,
        event_id=event.event_id,
        data=msgspec.Raw(encode(event)),
        source="postgres",
    )


def _decode(value: Any, kind: type[Event]) -> Event:
    return msgspec.json.decode(msgspec.json.encode(value), type=kind)


async def rebuilt_history(engine: AsyncEngine, build_id: str, *, end: Event) -> list[ArchiveEntry]:
    """The build's history from its rows, ending with ``end`` (the event that ended it)."""
    async with engine.connect() as conn:
        build = (await conn.execute(select(Build.__table__).where(Build.id == build_id))).one()
        checkpoints = (
            await conn.execute(
                select(AgentCheckpoint.__table__)
                .where(AgentCheckpoint.build_id == build_id)
                .order_by(AgentCheckpoint.seq)
            )
        ).all()
        usage = (
            await conn.execute(
                select(BudgetLedgerRow.__table__)
                .where(BudgetLedgerRow.build_id == build_id)
                .order_by(BudgetLedgerRow.created_at, BudgetLedgerRow.event_id)
            )
        ).all()
    return _ranked(_events(build, checkpoints, usage, end))


def _events(
    build: Row[Any], checkpoints: Sequence[Row[Any]], usage: Sequence[Row[Any]], end: Event
) -> list[Event]:
    """The rows' events (the rows of ``builds``, ``agent_checkpoints``, ``budget_ledger``)."""
    events: list[Event] = [
        _requested_status(
            build,
            BuildStatus.QUEUED,
            producer="gateway",
            kind=_QUEUED,
            occurred_at=build.created_at,
            derive_from=build.id,
        )
    ]
    context: ContextReady | None = None
    tokens = {row.event_id: row for row in usage}
    for row in checkpoints:
        if row.kind == "start":
            found = _decode(row.parts["context"], ContextReady)
            assert isinstance(found, ContextReady)
            context = found
            events += [
                _requested_status(
                    build,
                    BuildStatus.ASSEMBLING,
                    producer="context-assembler",
                    kind=_ASSEMBLING,
                    occurred_at=context.occurred_at,
                ),
                BuildStatusChanged(
                    **follow_up(context, producer="agent-runner", kind="status:running"),
                    status=BuildStatus.RUNNING,
                    occurred_at=row.created_at,
                ),
            ]
        elif row.kind == "turn" and context is not None:
            call = tokens.get(derived_event_id(context.event_id, f"usage:{row.iteration}"))
            events.append(
                AgentIterationCompleted(
                    **follow_up(
                        context, producer="agent-runner", kind=f"iteration:{row.iteration}"
                    ),
                    iteration=row.iteration,
                    tool_calls=row.tool_calls,
                    input_tokens=min(call.input_tokens, _MAX_TOKENS) if call else 0,
                    output_tokens=min(call.output_tokens, _MAX_TOKENS) if call else 0,
                    checkpoint_seq=row.seq,
                    occurred_at=row.created_at,
                )
            )
        elif row.kind == "sleep" and "event" in row.parts:
            events.append(_decode(row.parts["event"], AgentSleeping))
    for call in usage:
        events.append(
            BudgetUsage(
                build_id=build.id,
                project_id=build.project_id,
                user_id=build.user_id,
                producer="agent-runner",
                event_id=call.event_id,
                causation_id=context.event_id if context else None,
                model=call.model,
                input_tokens=min(call.input_tokens, _MAX_TOKENS),
                output_tokens=min(call.output_tokens, _MAX_TOKENS),
                cache_creation_input_tokens=min(call.cache_creation_input_tokens, _MAX_TOKENS),
                cache_read_input_tokens=min(call.cache_read_input_tokens, _MAX_TOKENS),
                occurred_at=call.created_at,
            )
        )
    # Stable sort: events of one instant keep the order above (status before work).
    events.sort(key=lambda e: _ms(e.occurred_at))
    ended = [e for e in events if e.event_id != end.event_id]
    return [*ended, end]


def _requested_status(
    build: Row[Any],
    status: BuildStatus,
    *,
    producer: str,
    kind: str,
    occurred_at: datetime,
    derive_from: str | None = None,
) -> BuildStatusChanged:
    """A status change the build's request caused, with the id its ``producer`` derived."""
    return BuildStatusChanged(
        **envelope(
            build_id=build.id,
            project_id=build.project_id,
            user_id=build.user_id,
            producer=producer,
            causation_id=derived_event_id(build.id, _REQUESTED),
            kind=kind,
            derive_from=derive_from,
        ),
        status=status,
        occurred_at=occurred_at,
    )


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _ranked(events: Sequence[Event]) -> list[ArchiveEntry]:
    """Entry ids ``<ms>-<n>``; an event earlier than the one before it (a clock between
    services) takes that one's millisecond, so ids grow with the order."""
    out: list[ArchiveEntry] = []
    last_ms, n = -1, 0
    for event in events:
        ms = max(_ms(event.occurred_at), last_ms)
        n = n + 1 if ms == last_ms else 0
        last_ms = ms
        out.append(_entry(event, f"{ms}-{n}"))
    return out


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def merge(feed: Sequence[ArchiveEntry], rebuilt: Sequence[ArchiveEntry]) -> list[ArchiveEntry]:
    """A partial feed (made again after Redis lost the first, or trimmed) completed with the
    rebuilt entries it lacks (by event id). The feed's entries keep their ids (clients saw
    them); a rebuilt entry whose id a feed entry has takes the next free one of its
    millisecond. Ordered by id, as a stream is."""
    have = {e.event_id for e in feed}
    taken = {_order(e.id) for e in feed}
    out = list(feed)
    for entry in rebuilt:
        if entry.event_id in have:
            continue
        ms, n = _order(entry.id)
        while (ms, n) in taken:
            n += 1
        taken.add((ms, n))
        out.append(msgspec.structs.replace(entry, id=f"{ms}-{n}"))
    out.sort(key=lambda e: _order(e.id))
    return out
