"""Business events: what product analytics and the founder-facing product subscribe to."""

from __future__ import annotations

from cofounder_contracts.envelope import Event
from cofounder_contracts.units import ArtifactType, StepCount

__all__ = ["ArtifactGenerated"]


class ArtifactGenerated(Event, frozen=True, kw_only=True, tag="artifact_generated"):
    """A build produced a working app (the monolith's ``artifact_generated`` business event).
    Emitted by the agent runner after ``build.completed``; best effort (a failure is logged)."""

    artifact_type: ArtifactType = "mvp"
    build_version: StepCount
    preview_url: str | None = None
