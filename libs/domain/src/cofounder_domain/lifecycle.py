"""A build's lifecycle: its statuses in order, the moves allowed between them, and its counters
that only grow. The gateway's projection applies these to the builds table.

    queued → assembling → running ⇄ sleeping → finishing → ready | failed | cancelled

A status is applied when it moves forward (a skipped step is fine: forward is forward), when it
flips between ``running`` and ``sleeping``, or when it ends the build (``failed``/``cancelled``
may come at any point). Terminal statuses never change. A duplicate (the same status) or a stale
event (older than the last applied) is ignored.

The statuses themselves (:class:`~cofounder_contracts.BuildStatus`) and which of them end a build
(:data:`~cofounder_contracts.TERMINAL_STATUSES`) are on the wire, so they are defined in the
contracts; :func:`is_terminal` reads that definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from cofounder_contracts import (
    AgentIterationCompleted,
    AgentResumed,
    AgentSleeping,
    BuildCompleted,
    BuildFailed,
    BuildStatus,
    BuildStatusChanged,
    Event,
)

__all__ = [
    "COUNTERS",
    "MOVES",
    "STAGE",
    "can_move",
    "changes_of",
    "grow",
    "is_terminal",
    "next_status",
    "status_of",
]


def is_terminal(status: BuildStatus) -> bool:
    """Whether a build in ``status`` is over (ready, failed or cancelled): nothing changes it
    after. The contracts' definition (``BuildStatus.ended``, ``TERMINAL_STATUSES``)."""
    return status.ended


#: How far along a build in each status not terminal is: a move goes to a later stage, or
#: between the two statuses of one stage (``running`` ⇄ ``sleeping``), or to an end.
STAGE: Final[Mapping[BuildStatus, int]] = {
    BuildStatus.QUEUED: 0,
    BuildStatus.ASSEMBLING: 1,
    BuildStatus.RUNNING: 2,
    BuildStatus.SLEEPING: 2,
    BuildStatus.FINISHING: 3,
}


def can_move(current: BuildStatus, incoming: BuildStatus) -> bool:
    """Whether a build in ``current`` may move to ``incoming`` at all (a move within one stage
    still needs the newer event: :func:`next_status`)."""
    if is_terminal(current) or incoming == current:
        return False
    return is_terminal(incoming) or STAGE[incoming] >= STAGE[current]


#: Every allowed move ``(from, to)``.
MOVES: Final[frozenset[tuple[BuildStatus, BuildStatus]]] = frozenset(
    (a, b) for a in BuildStatus for b in BuildStatus if can_move(a, b)
)


def next_status(
    current: BuildStatus,
    incoming: BuildStatus,
    *,
    occurred_at: datetime,
    last_applied_at: datetime | None,
) -> BuildStatus | None:
    """The status to store when an event reporting ``incoming`` (at ``occurred_at``) reaches a
    build in ``current`` (applied at ``last_applied_at``), or None when it must be ignored."""
    if not can_move(current, incoming):
        return None
    if is_terminal(incoming) or STAGE[incoming] > STAGE[current]:
        return incoming
    # running ⇄ sleeping: the newer event wins
    if last_applied_at is None or occurred_at > last_applied_at:
        return incoming
    return None


def status_of(event: Event) -> BuildStatus | None:
    """The status ``event`` reports its build in, if it reports one."""
    match event:
        case BuildStatusChanged(status=status):
            return status
        case BuildCompleted():
            return BuildStatus.READY
        case BuildFailed():
            return BuildStatus.FAILED
        case AgentSleeping():
            return BuildStatus.SLEEPING
        case AgentResumed():
            return BuildStatus.RUNNING
    return None


def changes_of(event: Event) -> dict[str, Any]:
    """What ``event`` records of its build besides its status, by the build's field names: a
    completed build's version, preview and counts, an end's reason (``error``), an iteration's
    counts. Counters among them only grow (:data:`COUNTERS`, :func:`grow`)."""
    match event:
        case BuildCompleted():
            return {
                "build_version": event.build_version,
                "preview_url": event.preview_url,
                "iterations": event.iterations,
                "tool_calls": event.tool_calls,
            }
        case BuildFailed():
            return {"error": event.reason}
        case BuildStatusChanged(reason=reason) if reason:
            return {"error": reason} if is_terminal(event.status) else {}
        case AgentIterationCompleted():
            return {"iterations": event.iteration, "tool_calls": event.tool_calls}
    return {}


#: A build's counters that only grow: events of one build are handled concurrently and may
#: arrive late (iteration 7's event after iteration 8's), so a later value never lowers them.
COUNTERS: Final = ("iterations", "tool_calls")


def grow(stored: int, incoming: int) -> int:
    """A counter's value after ``incoming`` reaches it at ``stored``: it never goes down."""
    return max(stored, incoming)
