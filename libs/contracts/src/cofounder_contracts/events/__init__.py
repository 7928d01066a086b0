"""Every event, by area. ``ALL_EVENTS`` is the catalog in a stable order."""

from __future__ import annotations

from typing import Final

from cofounder_contracts.envelope import Event
from cofounder_contracts.events.agent import (
    AgentIterationCompleted,
    AgentResumed,
    AgentSleeping,
    ScreenshotTaken,
    ToolCalled,
    ToolCompleted,
)
from cofounder_contracts.events.archives import BuildLogArchived
from cofounder_contracts.events.budget import (
    BudgetExhausted,
    BudgetToppedUp,
    BudgetUsage,
    BudgetWake,
    BudgetWarning,
    TierChanged,
    UsageOutcome,
    WakeReason,
)
from cofounder_contracts.events.builds import (
    BuildCancelRequested,
    BuildCompleted,
    BuildFailed,
    BuildRequested,
    BuildStatus,
    BuildStatusChanged,
    ContextReady,
    QnA,
)
from cofounder_contracts.events.business import ArtifactGenerated
from cofounder_contracts.events.snapshots import (
    SandboxKind,
    SnapshotCompleted,
    SnapshotFailed,
    SnapshotReason,
    SnapshotRequested,
)

__all__ = [
    "ALL_EVENTS",
    "AgentIterationCompleted",
    "AgentResumed",
    "AgentSleeping",
    "ArtifactGenerated",
    "BudgetExhausted",
    "BudgetToppedUp",
    "BudgetUsage",
    "BudgetWake",
    "BudgetWarning",
    "BuildCancelRequested",
    "BuildCompleted",
    "BuildFailed",
    "BuildLogArchived",
    "BuildRequested",
    "BuildStatus",
    "BuildStatusChanged",
    "ContextReady",
    "QnA",
    "SandboxKind",
    "ScreenshotTaken",
    "SnapshotCompleted",
    "SnapshotFailed",
    "SnapshotReason",
    "SnapshotRequested",
    "TierChanged",
    "ToolCalled",
    "ToolCompleted",
    "UsageOutcome",
    "WakeReason",
]

ALL_EVENTS: Final[tuple[type[Event], ...]] = (
    BuildRequested,
    ContextReady,
    BuildStatusChanged,
    AgentIterationCompleted,
    ToolCalled,
    ToolCompleted,
    BudgetUsage,
    BudgetWarning,
    BudgetExhausted,
    BudgetWake,
    AgentSleeping,
    AgentResumed,
    SnapshotRequested,
    SnapshotCompleted,
    SnapshotFailed,
    BuildCompleted,
    BuildFailed,
    BuildCancelRequested,
    ArtifactGenerated,
    BudgetToppedUp,
    TierChanged,
    BuildLogArchived,
    ScreenshotTaken,
)
