"""Request and response bodies of the REST API (pydantic, for validation and OpenAPI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from cofounder_contracts import BuildStatus
from cofounder_db.models import Build
from cofounder_gateway.docs import examples
from cofounder_gateway.inputs import Text

__all__ = [
    "EXAMPLE_BUILD",
    "EXAMPLE_BUILD_ID",
    "BuildList",
    "BuildOut",
    "BuildView",
    "NewBuild",
    "StartBuild",
    "build_json",
    "build_out",
]


#: The OpenAPI examples' build (and its ids).
EXAMPLE_BUILD_ID = "0195a0e2-7c1d-7d4e-9a2b-3c4d5e6f7a8b"
_EXAMPLE_BASE = f"/v1/builds/{EXAMPLE_BUILD_ID}"
EXAMPLE_BUILD: dict[str, Any] = {
    "id": EXAMPLE_BUILD_ID,
    "project_id": "0195a0e1-1b2c-7d3e-8f4a-5b6c7d8e9f0a",
    "status": "running",
    "goal": "Build the MVP described in the idea brief",
    "tier": "bootstrapper",
    "build_version": None,
    "preview_url": None,
    "error": None,
    "iterations": 4,
    "tool_calls": 11,
    "input_tokens": 48_210,
    "output_tokens": 3_977,
    "created_at": "2026-03-02T09:15:04.112000Z",
    "updated_at": "2026-03-02T09:16:40.530000Z",
    "finished_at": None,
    "links": {
        "self": _EXAMPLE_BASE,
        "events": f"{_EXAMPLE_BASE}/events",
        "cancel": f"{_EXAMPLE_BASE}/cancel",
    },
}


class StartBuild(BaseModel):
    """Start a build. Unknown fields are refused (422 naming them)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{}, {"goal": "A landing page with a waitlist sign-up form"}]
        },
    )

    goal: Text = Field(
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

    # Only BuildOut's own schema: a model extending it has other fields.
    model_config = ConfigDict(json_schema_extra=examples("BuildOut", EXAMPLE_BUILD))

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

    model_config = ConfigDict(
        json_schema_extra=examples(
            "BuildList",
            {
                "items": [EXAMPLE_BUILD],
                "next_cursor": "MjAyNi0wMy0wMlQwOToxNTowNC4xMTIwMDArMDA6MDB8MDE5NWEwZTI",
            },
        )
    )

    items: list[BuildOut]
    next_cursor: str | None


@dataclass(slots=True)
class NewBuild:
    """A build about to be inserted, as a plain value: the ORM's instrumented constructor cost
    about 5% of ``POST /builds``'s CPU, and the build is written with the driver anyway."""

    id: str
    project_id: str
    user_id: str
    goal: str
    idempotency_key: str | None
    created_at: datetime
    status: str = "queued"
    tier: str = ""
    build_version: int | None = None
    preview_url: str | None = None
    sandbox_id: str | None = None
    error: str | None = None
    iterations: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    finished_at: datetime | None = None
    updated_at: datetime = field(init=False)
    status_changed_at: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.updated_at = self.status_changed_at = self.created_at


#: What the API shows of a build: a ``builds`` row, or a :class:`NewBuild` just inserted.
BuildView = Build | NewBuild
#: The fields of :class:`BuildOut` read off a :data:`BuildView` (``links`` is made here).
_VIEW_FIELDS = tuple(f for f in BuildOut.model_fields if f != "links")
_JSON = msgspec.json.Encoder()


def build_json(build: BuildView) -> bytes:
    """:func:`build_out` as JSON bytes, without building and re-validating pydantic models (the
    body of ``POST /builds``, the hot path; a test keeps it equal to ``BuildOut``'s JSON)."""
    body: dict[str, Any] = {f: getattr(build, f) for f in _VIEW_FIELDS}
    base = f"/v1/builds/{build.id}"
    body["links"] = {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"}
    return _JSON.encode(body)


def build_out(build: BuildView) -> BuildOut:
    """The API view of a build row."""
    base = f"/v1/builds/{build.id}"
    fields: dict[str, Any] = {f: getattr(build, f) for f in _VIEW_FIELDS}
    return BuildOut(
        **fields, links=Links(self=base, events=f"{base}/events", cancel=f"{base}/cancel")
    )
