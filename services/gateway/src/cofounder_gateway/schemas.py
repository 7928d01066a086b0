"""Request and response bodies of the REST API (pydantic, for validation and OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cofounder_contracts import BuildStatus
from cofounder_db.models import Build

__all__ = ["BuildList", "BuildOut", "StartBuild", "build_out"]


class StartBuild(BaseModel):
    """Start a build. Unknown fields are refused (422 naming them)."""

    model_config = ConfigDict(extra="forbid")

    goal: str = Field(
        default="Build the MVP described in the idea brief",
        min_length=1,
        max_length=2_000,
        description="What the agent should build.",
    )


class Links(BaseModel):
    """Where to go next."""

    self: str
    events: str
    cancel: str


class BuildOut(BaseModel):
    """A build as its owner sees it."""

    id: str
    project_id: str
    status: BuildStatus
    goal: str
    tier: str
    build_version: int | None
    preview_url: str | None
    error: str | None
    iterations: int
    tool_calls: int
    input_tokens: int
    output_tokens: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    links: Links


class BuildList(BaseModel):
    """One page of builds; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[BuildOut]
    next_cursor: str | None


def build_out(build: Build) -> BuildOut:
    """The API view of a build row."""
    base = f"/v1/builds/{build.id}"
    fields: dict[str, Any] = {
        c: getattr(build, c)
        for c in (
            "id",
            "project_id",
            "status",
            "goal",
            "tier",
            "build_version",
            "preview_url",
            "error",
            "iterations",
            "tool_calls",
            "input_tokens",
            "output_tokens",
            "created_at",
            "updated_at",
            "finished_at",
        )
    }
    return BuildOut(
        **fields, links=Links(self=base, events=f"{base}/events", cancel=f"{base}/cancel")
    )
