"""Events of project-file snapshots."""

from __future__ import annotations

import enum
from typing import ClassVar

from cofounder_contracts.envelope import Event
from cofounder_contracts.ids import SandboxId
from cofounder_contracts.units import Count, DurationMs, NonEmpty, StepCount

__all__ = [
    "SandboxKind",
    "SnapshotCompleted",
    "SnapshotFailed",
    "SnapshotReason",
    "SnapshotRequested",
]


class SandboxKind(enum.StrEnum):
    """Where the project's files live."""

    E2B = "e2b"
    LOCAL = "local"


class SnapshotReason(enum.StrEnum):
    """Why a snapshot was asked for."""

    PERIODIC = "periodic"
    FINAL = "final"


class SnapshotRequested(Event, frozen=True, kw_only=True, tag="snapshot.requested"):
    """The runner asks for the project's files to be stored (every N tool calls and at the end)."""

    sandbox_kind: SandboxKind
    sandbox_id: SandboxId | None
    reason: SnapshotReason = SnapshotReason.PERIODIC
    tool_calls: StepCount = 0


class SnapshotCompleted(Event, frozen=True, kw_only=True, tag="snapshot.completed"):
    """A snapshot version is stored (its manifest written last), or was skipped (snapshots off)."""

    #: A redelivered request is answered with the version it stored, uploading nothing again.
    MEASURED: ClassVar[frozenset[str]] = frozenset(
        {"bytes_uploaded", "blobs_uploaded", "duration_ms"}
    )

    version: StepCount
    files: Count
    bytes_uploaded: Count
    blobs_uploaded: Count
    duration_ms: DurationMs
    skipped: bool = False
    skipped_reason: str | None = None


class SnapshotFailed(Event, frozen=True, kw_only=True, tag="snapshot.failed"):
    """A snapshot could not be stored; no partial version is visible. The build goes on."""

    reason: NonEmpty
