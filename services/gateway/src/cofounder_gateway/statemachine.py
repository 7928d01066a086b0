"""The build status state machine, as pure functions (the projection applies them).

    queued → assembling → running ⇄ sleeping → finishing → ready | failed | cancelled

A status is applied when it moves forward, when it flips between ``running`` and ``sleeping``, or
when it ends the build (``failed``/``cancelled`` may come at any point). Terminal statuses never
change. A duplicate (the same status) or a stale event (older than the last applied) is ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from cofounder_contracts import TERMINAL_STATUSES, BuildStatus

__all__ = ["TERMINAL", "next_status"]

TERMINAL: Final = TERMINAL_STATUSES
_RANK: Final = {
    BuildStatus.QUEUED: 0,
    BuildStatus.ASSEMBLING: 1,
    BuildStatus.RUNNING: 2,
    BuildStatus.SLEEPING: 2,
    BuildStatus.FINISHING: 3,
}


def next_status(
    current: BuildStatus,
    incoming: BuildStatus,
    *,
    occurred_at: datetime,
    last_applied_at: datetime | None,
) -> BuildStatus | None:
    """The status to store, or None when ``incoming`` must be ignored."""
    if current in TERMINAL or incoming == current:
        return None
    if incoming in TERMINAL:
        return incoming
    if _RANK[incoming] > _RANK[current]:
        return incoming
    same_rank = _RANK[incoming] == _RANK[current]  # running ⇄ sleeping: the newer event wins
    if same_rank and (last_applied_at is None or occurred_at > last_applied_at):
        return incoming
    return None
