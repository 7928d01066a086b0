"""The two views the reconciler compares: a build as PostgreSQL records it, and Redis's work."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from cofounder_contracts import BuildStatus

__all__ = [
    "BuildFacts",
    "BuildIds",
    "InFlight",
    "RedisView",
    "Repair",
    "RepairKind",
    "RunFacts",
    "SnapshotFacts",
    "UnmeteredTurn",
]


@dataclass(frozen=True, slots=True)
class RunFacts:
    """The agent runner's checkpoints of a build: its last part, and what that part recorded."""

    last_kind: str  # start | turn | compaction | sleep | end
    last_seq: int
    last_at: datetime
    #: The end part's event (``build.completed``, ``build.failed`` or the cancelled status), as
    #: written in the checkpoint; None while the run has not ended.
    ended: dict[str, Any] | None = None
    #: The sleep part's ``agent.sleeping`` (None for parts written before it was recorded).
    sleeping: dict[str, Any] | None = None
    #: The sleep part's reset, for a sleep part that has no event recorded.
    resets_at: str | None = None


@dataclass(frozen=True, slots=True)
class SnapshotFacts:
    """A build's latest ``snapshot.requested`` (in a checkpoint) and whether it was answered."""

    request_id: str
    seq: int
    requested_at: datetime
    answered: bool


@dataclass(frozen=True, slots=True)
class UnmeteredTurn:
    """A turn checkpoint whose model call's ``budget.usage`` has no ledger row."""

    seq: int
    usage_event_id: str
    at: datetime


class BuildIds(TypedDict):
    """The ids every request about a build carries."""

    build_id: str
    project_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class BuildFacts:
    """A build as PostgreSQL records it."""

    build_id: str
    project_id: str
    user_id: str
    status: BuildStatus
    goal: str
    created_at: datetime
    #: When the row's status last changed (its creation when it never did).
    changed_at: datetime
    finished_at: datetime | None = None
    #: The build's ``build.requested`` is still in the outbox: the relay will publish it.
    request_in_outbox: bool = False
    run: RunFacts | None = None
    snapshot: SnapshotFacts | None = None
    #: Turns whose usage the budget's ledger does not hold.
    unmetered: tuple[UnmeteredTurn, ...] = ()

    @property
    def ids(self) -> BuildIds:
        """The build's ids, as the gateway's requests about it take them."""
        return BuildIds(build_id=self.build_id, project_id=self.project_id, user_id=self.user_id)


@dataclass(frozen=True, slots=True)
class InFlight:
    """Entries of one stream that one group has not acked (pending or not yet delivered).

    ``complete`` is False when the scan stopped at its bound: then anything may be in flight,
    and :meth:`has_build` / :meth:`has_event` answer True, so nothing is repaired from a view
    that could not be read whole (a backlog is the consumers' to drain, not a loss)."""

    complete: bool = True
    #: (event type, build id) of every entry.
    builds: frozenset[tuple[str, str]] = frozenset()
    event_ids: frozenset[str] = frozenset()

    def has_build(self, build_id: str, *types: str) -> bool:
        """Whether an entry of the build (of one of ``types``, or any) is in flight."""
        if not self.complete:
            return True
        if types:
            return any((t, build_id) in self.builds for t in types)
        return any(b == build_id for _, b in self.builds)

    def has_event(self, *event_ids: str) -> bool:
        """Whether one of these events is in flight."""
        return not self.complete or any(e in self.event_ids for e in event_ids)


@dataclass(frozen=True, slots=True)
class RedisView:
    """What Redis holds of the builds being looked at."""

    #: ``build.requested`` → context assembler.
    requests: InFlight = field(default_factory=InFlight)
    #: ``context.ready`` → agent runner (held pending while a build runs).
    work: InFlight = field(default_factory=InFlight)
    #: Budget signals → agent runner (``budget.wake`` resumes a sleeping build).
    signals: InFlight = field(default_factory=InFlight)
    #: Cancel requests → agent runner.
    control: InFlight = field(default_factory=InFlight)
    #: Snapshot requests → snapshot service.
    snapshots: InFlight = field(default_factory=InFlight)
    #: Usage → budget service (the ledger).
    usage: InFlight = field(default_factory=InFlight)
    #: Build events → gateway (the projection) and → budget (sleeping builds).
    events_to_gateway: InFlight = field(default_factory=InFlight)
    events_to_budget: InFlight = field(default_factory=InFlight)
    #: Builds with a runner's lease.
    leased: frozenset[str] = frozenset()
    #: Builds whose cancel flag is set.
    cancel_flags: frozenset[str] = frozenset()
    #: Builds in the budget's wake set; None when it could not be read whole.
    sleeping: frozenset[str] | None = frozenset()


class RepairKind(enum.StrEnum):
    """What the reconciler re-publishes, named by the event it sends."""

    #: Queued or assembling, never started: the request again (the assembler re-derives the
    #: same ``context.ready``).
    REQUEST = "build.requested"
    #: Started, not ended, not asleep, and nobody drives it: its ``context.ready`` again, from
    #: the start checkpoint (a runner resumes it from its checkpoints).
    WORK = "context.ready"
    #: Asleep in its checkpoints, and not in the wake set: its ``agent.sleeping`` again (the
    #: budget service puts it back; the projection absorbs the repeat).
    SLEEP = "agent.sleeping"
    #: Ended in its checkpoints, not in its row: the end event again.
    END = "build.ended"
    #: Cancelled in its row while its run goes on without the flag: the cancel again.
    CANCEL = "build.cancel_requested"
    #: Its latest snapshot request has no answer: the request again.
    SNAPSHOT = "snapshot.requested"
    #: Turns whose usage never reached the ledger: their ``budget.usage`` again, from the
    #: turns' checkpoints (every metered token is billed, once).
    USAGE = "budget.usage"


@dataclass(frozen=True, slots=True)
class Repair:
    """One event to re-publish. ``marker`` names the state it was decided from: a repair is
    carried out only when two passes in a row decide it from the same state."""

    kind: RepairKind
    build_id: str
    marker: str
    why: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind.value, self.build_id, self.marker)
