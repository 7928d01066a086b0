"""Events of a build's life as the gateway and clients see it."""

from __future__ import annotations

import enum
from typing import Any, Final

import msgspec

from cofounder_contracts.envelope import Event
from cofounder_contracts.units import NonEmpty, NonEmptyStoredText, StepCount, StoredText

__all__ = [
    "TERMINAL_STATUSES",
    "BuildCancelRequested",
    "BuildCompleted",
    "BuildFailed",
    "BuildRequested",
    "BuildStatus",
    "BuildStatusChanged",
    "ContextReady",
    "QnA",
    "ends_build",
]


class BuildStatus(enum.StrEnum):
    """The build state machine: queued → assembling → running ⇄ sleeping → finishing → an end."""

    QUEUED = "queued"
    ASSEMBLING = "assembling"
    RUNNING = "running"
    SLEEPING = "sleeping"
    FINISHING = "finishing"
    READY = "ready"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        """Whether the build is over (ready, failed or cancelled): nothing changes it after."""
        return self in TERMINAL_STATUSES


#: The statuses a build ends in. The one definition of "ended": the state machine, the feed, the
#: reconciler and the API read it (and :func:`ends_build` for events).
TERMINAL_STATUSES: Final = frozenset({BuildStatus.READY, BuildStatus.FAILED, BuildStatus.CANCELLED})


class QnA(msgspec.Struct, frozen=True, kw_only=True):
    """One answered interview question, normalised."""

    question: str
    answer: str


class BuildRequested(Event, frozen=True, kw_only=True, tag="build.requested"):
    """A founder asked for a build. Emitted by the gateway (through its outbox); consumed by the
    context assembler."""

    goal: NonEmpty
    build_version: StepCount = 1


class ContextReady(Event, frozen=True, kw_only=True, tag="context.ready"):
    """Everything the agent needs to start. Emitted by the context assembler; consumed by the
    agent runner.

    ``idea_brief`` is the brief artifact's ``current_content`` (``{}`` when there is none);
    ``qna`` holds the latest interview's answered questions, in question order.
    """

    goal: NonEmpty
    idea_brief: dict[str, Any]
    qna: list[QnA]
    tier: str
    suspended: bool = False
    suspension_reason: str | None = None
    build_version: StepCount = 1


class BuildStatusChanged(Event, frozen=True, kw_only=True, tag="build.status_changed"):
    """A service moved the build to ``status``. Consumed by the gateway, the only writer of the
    builds table, which applies it if the state machine allows (duplicates and stale events are
    ignored)."""

    status: BuildStatus
    reason: StoredText | None = None


class BuildCompleted(Event, frozen=True, kw_only=True, tag="build.completed"):
    """The agent finished the app. Emitted by the agent runner; consumed by the gateway."""

    build_version: StepCount
    preview_url: StoredText | None
    summary: NonEmpty
    iterations: StepCount
    tool_calls: StepCount


class BuildFailed(Event, frozen=True, kw_only=True, tag="build.failed"):
    """The build ended without an app; ``reason`` is shown to the founder. Emitted by the
    context assembler or the agent runner; consumed by the gateway."""

    reason: NonEmptyStoredText
    retryable: bool = False


def ends_build(event: Event) -> bool:
    """Whether ``event`` is one that ends its build: ``build.completed``, ``build.failed``, or a
    status change to an end (the runner's and the gateway's cancel)."""
    if isinstance(event, BuildCompleted | BuildFailed):
        return True
    return isinstance(event, BuildStatusChanged) and event.status.ended


class BuildCancelRequested(Event, frozen=True, kw_only=True, tag="build.cancel_requested"):
    """A user asked to cancel. Emitted by the gateway; the agent runner honours it between
    iterations."""

    requested_by: NonEmpty
