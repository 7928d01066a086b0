"""Every stream, the events it carries and the consumer groups that read it: defined here only.

One stream per flow between services, so each consumer group reads only what it handles and an
SRE scales a group on its own stream's lag. Every event type is carried by exactly one stream
(:func:`stream_for`), so a producer never has to choose.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from cofounder_contracts.envelope import Event
from cofounder_contracts.events import (
    AgentIterationCompleted,
    AgentResumed,
    AgentSleeping,
    ArtifactGenerated,
    BudgetExhausted,
    BudgetToppedUp,
    BudgetUsage,
    BudgetWake,
    BudgetWarning,
    BuildCancelRequested,
    BuildCompleted,
    BuildFailed,
    BuildLogArchived,
    BuildRequested,
    BuildStatusChanged,
    ContextReady,
    ScreenshotTaken,
    SnapshotCompleted,
    SnapshotFailed,
    SnapshotRequested,
    TierChanged,
    ToolCalled,
    ToolCompleted,
)

__all__ = [
    "AGENT_RUNNER",
    "AGENT_WORK",
    "ALL_STREAMS",
    "BUDGET",
    "BUDGET_CHANGES",
    "BUDGET_SIGNALS",
    "BUDGET_USAGE",
    "BUILD_CONTROL",
    "BUILD_EVENTS",
    "BUILD_REQUESTS",
    "BUSINESS_EVENTS",
    "CONTEXT_ASSEMBLER",
    "GATEWAY",
    "SNAPSHOT",
    "SNAPSHOT_REQUESTS",
    "Stream",
    "build_feed_key",
    "stream_for",
]

# Consumer groups: one per service that reads a stream.
GATEWAY: Final = "gateway"
CONTEXT_ASSEMBLER: Final = "context-assembler"
AGENT_RUNNER: Final = "agent-runner"
BUDGET: Final = "budget"
SNAPSHOT: Final = "snapshot"

_WEEK: Final = timedelta(days=7)
_CAP: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Stream:
    """A Redis stream: its key, its events, the groups reading it, and its retention."""

    name: str
    events: tuple[type[Event], ...]
    groups: tuple[str, ...]
    description: str
    max_len: int = _CAP
    max_age: timedelta = _WEEK

    @property
    def dlq(self) -> str:
        """The dead-letter stream of this stream."""
        return f"{self.name}.dlq"

    @property
    def max_age_ms(self) -> int:
        """``max_age`` in milliseconds (what the runtime's trim takes)."""
        return int(self.max_age.total_seconds() * 1000)


BUILD_REQUESTS: Final = Stream(
    name="cofounder.builds.requested",
    events=(BuildRequested,),
    groups=(CONTEXT_ASSEMBLER,),
    description="Accepted build requests, relayed from the gateway's outbox.",
)
AGENT_WORK: Final = Stream(
    name="cofounder.agent.work",
    events=(ContextReady,),
    groups=(AGENT_RUNNER,),
    description="Builds ready for the agent; an entry stays pending while its loop runs.",
)
BUILD_EVENTS: Final = Stream(
    name="cofounder.builds.events",
    events=(
        BuildStatusChanged,
        AgentIterationCompleted,
        ToolCalled,
        ToolCompleted,
        ScreenshotTaken,
        AgentSleeping,
        AgentResumed,
        SnapshotCompleted,
        SnapshotFailed,
        BuildCompleted,
        BuildFailed,
    ),
    groups=(GATEWAY, BUDGET, SNAPSHOT),
    description="Everything a build does that its owner may see; the gateway projects status, "
    "the budget service keeps the sleeping builds, the snapshot service archives a finished "
    "build's feed.",
)
BUILD_CONTROL: Final = Stream(
    name="cofounder.builds.control",
    events=(BuildCancelRequested,),
    groups=(AGENT_RUNNER,),
    description="Requests that change a running build (cancel).",
)
BUDGET_USAGE: Final = Stream(
    name="cofounder.budget.usage",
    events=(BudgetUsage,),
    groups=(BUDGET, GATEWAY),
    description="The token usage of every model call, metered by the budget service.",
)
BUDGET_SIGNALS: Final = Stream(
    name="cofounder.budget.signals",
    events=(BudgetWarning, BudgetExhausted, BudgetWake),
    groups=(AGENT_RUNNER, GATEWAY),
    description="Budget thresholds crossed, and wake-ups for sleeping builds.",
)
BUDGET_CHANGES: Final = Stream(
    name="cofounder.budget.changes",
    events=(BudgetToppedUp, TierChanged),
    groups=(BUDGET,),
    description="Changes to what a user may spend (top-ups, plan changes), relayed from the "
    "gateway's outbox; the budget service reopens gates and wakes sleeping builds.",
)
SNAPSHOT_REQUESTS: Final = Stream(
    name="cofounder.snapshots.requested",
    events=(SnapshotRequested,),
    groups=(SNAPSHOT,),
    description="Requests to store the project's files of a build.",
)

BUSINESS_EVENTS: Final = Stream(
    name="cofounder.business.events",
    events=(ArtifactGenerated, BuildLogArchived),
    groups=(),
    description="Business events for analytics and the founder-facing product (no group here "
    "reads them; subscribers create their own).",
)

ALL_STREAMS: Final[tuple[Stream, ...]] = (
    BUILD_REQUESTS,
    AGENT_WORK,
    BUILD_EVENTS,
    BUILD_CONTROL,
    BUDGET_USAGE,
    BUDGET_SIGNALS,
    BUDGET_CHANGES,
    SNAPSHOT_REQUESTS,
    BUSINESS_EVENTS,
)

_BY_EVENT: Final[dict[type[Event], Stream]] = {e: s for s in ALL_STREAMS for e in s.events}


def stream_for(event_type: type[Event]) -> Stream:
    """The one stream that carries ``event_type``."""
    try:
        return _BY_EVENT[event_type]
    except KeyError:
        raise KeyError(f"no stream carries {event_type.__name__}") from None


def build_feed_key(build_id: str) -> str:
    """The capped per-build stream that feeds live events (SSE) to the build's owner.

    The build id sits in a hash tag (``{…}``) so that, on Redis Cluster, a build's feed and any
    other per-build keys that carry the same tag live in one slot (one script can touch them all).
    """
    return f"cofounder.build-feed:{{{build_id}}}"
