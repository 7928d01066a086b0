"""``build.requested`` → ``context.ready`` (or ``build.failed`` when the project is gone).

Idempotent without a table: the events it emits take ids derived from the request's
``event_id``, so a redelivered request re-emits the very same events, and their consumers
absorb them as duplicates. A database error raises, so the runtime retries the entry (and
dead-letters it, replayable, if the outage outlasts ``max_deliveries``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_context_assembler.normalise import answered_questions
from cofounder_context_assembler.queries import load_context
from cofounder_contracts import (
    BuildFailed,
    BuildRequested,
    BuildStatus,
    BuildStatusChanged,
    ContextReady,
    Event,
    follow_up,
)
from cofounder_contracts.streams import stream_for

__all__ = ["HANDLERS", "Deps", "EventSink", "on_build_requested"]

PRODUCER = "context-assembler"


class EventSink(Protocol):
    """Where emitted events go (the runtime's ``Publisher``)."""

    async def publish_many(self, items: list[tuple[str, Event]]) -> object: ...


@dataclass(frozen=True, slots=True)
class Deps:
    """What the handler needs, built once by the composition root."""

    engine: AsyncEngine
    events: EventSink


async def on_build_requested(event: BuildRequested, deps: Deps) -> None:
    """Gather the founder's context for the build and hand it to the agent runner."""
    async with deps.engine.connect() as conn:
        context = await load_context(conn, event.project_id)
    emitted: list[Event]
    if context is None:
        emitted = [
            BuildFailed(
                **follow_up(event, producer=PRODUCER, kind="build.failed"),
                reason=f"Project {event.project_id} was not found; it may have been deleted.",
            )
        ]
    else:
        emitted = [
            BuildStatusChanged(
                **follow_up(event, producer=PRODUCER, kind="build.status_changed"),
                status=BuildStatus.ASSEMBLING,
            ),
            ContextReady(
                **follow_up(event, producer=PRODUCER, kind="context.ready"),
                goal=event.goal,
                build_version=event.build_version,
                idea_brief=context.idea_brief,
                qna=answered_questions(context.questions, context.answers),
                tier=context.tier,
                suspended=context.suspended,
                suspension_reason=context.suspension_reason,
            ),
        ]
    await deps.events.publish_many([(stream_for(type(e)).name, e) for e in emitted])


HANDLERS = {BuildRequested: on_build_requested}
