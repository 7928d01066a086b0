"""Redis keys that more than one service reads or writes, defined once.

All per-build keys carry the build id in a hash tag and all per-user keys the user id, so on
Redis Cluster a script touching one build's (or one user's) keys stays in one slot.

- :func:`budget_gate_key`: written by the budget service when a user's daily budget is spent
  (value: :class:`BudgetGate` as JSON, expiring at the reset; :func:`encode_gate` /
  :func:`gate_resets_at`); read by the agent runner before every model call. Absent means open.
- :func:`cancel_key`: set by the agent runner when ``build.cancel_requested`` arrives; the loop
  reads it between iterations (with the gate, in one round trip).
- :func:`lease_key` / :func:`lease_generation_key`: the build lease and its fencing counter,
  the agent runner's own.
- :data:`SLEEPING_BUILDS_KEY`: the budget service's sorted set of sleeping builds (scored by when
  they may run again); the gateway's reconciler reads it to find sleeping builds Redis forgot.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

SLEEPING_BUILDS_KEY: Final = "cofounder.budget.sleeping:builds"

__all__ = [
    "SLEEPING_BUILDS_KEY",
    "BudgetGate",
    "budget_gate_key",
    "cancel_key",
    "encode_gate",
    "gate_resets_at",
    "lease_generation_key",
    "lease_key",
    "snapshot_project_lock_key",
]


def budget_gate_key(user_id: str) -> str:
    """Present while ``user_id``'s daily budget is spent."""
    return f"cofounder.budget.closed:{{{user_id}}}"


class BudgetGate(msgspec.Struct, frozen=True):
    """The value of a closed gate: when the user's budget resets (the key expires then too)."""

    resets_at: datetime


_GATE: Final = msgspec.json.Decoder(BudgetGate)


def encode_gate(resets_at: datetime) -> bytes:
    """The value the budget service writes when it closes a user's gate."""
    return msgspec.json.encode(BudgetGate(resets_at=resets_at))


def gate_resets_at(value: bytes, *, now: datetime | None = None) -> datetime:
    """When a closed gate opens, from its value; an unreadable value (another writer, a
    truncated write) counts as closed until the next UTC midnight, the daily reset."""
    try:
        return _GATE.decode(value).resets_at
    except (msgspec.DecodeError, msgspec.ValidationError):
        today = (now or datetime.now(UTC)).astimezone(UTC)
        return (today + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


def cancel_key(build_id: str) -> str:
    """Present once the build's owner asked to cancel it."""
    return f"cofounder.build.cancel:{{{build_id}}}"


def lease_key(build_id: str) -> str:
    """Who drives the build now: ``<runner>|<generation>``, with a TTL renewed while alive."""
    return f"cofounder.agent.lease:{{{build_id}}}"


def lease_generation_key(build_id: str) -> str:
    """The build lease's fencing counter (incremented on every acquisition)."""
    return f"cofounder.agent.lease-gen:{{{build_id}}}"


def snapshot_project_lock_key(project_id: str) -> str:
    """Held (by the snapshot service) while a snapshot or a prune of the project's blobs runs."""
    return f"cofounder.snapshots.lock:{project_id}"
