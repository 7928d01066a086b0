"""What the gateway answers, as typed values (plain dataclasses: nothing to import but the
standard library). Each keeps the JSON it was read from as ``raw``, exactly as sent."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any, Literal, Self

__all__ = [
    "TERMINAL_STATUSES",
    "Build",
    "BuildLinks",
    "BuildPage",
    "BuildStatus",
    "BuildUsage",
    "DayUsage",
    "DemoFounder",
    "Event",
    "ModelUsage",
    "TierChanged",
    "Today",
    "TokenUsage",
    "TopUpAccepted",
    "Usage",
]

#: A build's status (the state machine: queued, assembling, running and sleeping, finishing,
#: then one of the ends).
BuildStatus = Literal[
    "queued", "assembling", "running", "sleeping", "finishing", "ready", "failed", "cancelled"
]
#: The statuses a build ends in.
TERMINAL_STATUSES: frozenset[str] = frozenset({"ready", "failed", "cancelled"})


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class _ByName:
    """An answer whose fields are the JSON's keys of the same names, plus ``raw``."""

    raw: dict[str, Any] = field(repr=False, compare=False, kw_only=True)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        values: dict[str, Any] = {f.name: data[f.name] for f in fields(cls) if f.name != "raw"}
        values["raw"] = data
        return cls(**values)


@dataclass(frozen=True, slots=True)
class BuildLinks:
    """Where to go next, relative to the gateway."""

    self: str
    events: str
    cancel: str


@dataclass(frozen=True, slots=True)
class Build:
    """A build as its owner sees it (``GET /v1/builds/{id}``)."""

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
    links: BuildLinks
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def ended(self) -> bool:
        """Whether the build is over (ready, failed or cancelled)."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Build:
        created = _time(data["created_at"])
        updated = _time(data["updated_at"])
        assert created is not None
        assert updated is not None
        return cls(
            id=data["id"],
            project_id=data["project_id"],
            status=data["status"],
            goal=data["goal"],
            tier=data["tier"],
            build_version=data.get("build_version"),
            preview_url=data.get("preview_url"),
            error=data.get("error"),
            iterations=data["iterations"],
            tool_calls=data["tool_calls"],
            input_tokens=data["input_tokens"],
            output_tokens=data["output_tokens"],
            created_at=created,
            updated_at=updated,
            finished_at=_time(data.get("finished_at")),
            links=BuildLinks(**data["links"]),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class BuildPage:
    """One page of builds, newest first; ``next_cursor`` asks for the next (None: the last)."""

    items: list[Build]
    next_cursor: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildPage:
        return cls(
            items=[Build.from_json(b) for b in data["items"]],
            next_cursor=data.get("next_cursor"),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a build's stream: its SSE ``id`` (resume after it with
    ``last_event_id``), its ``type`` (``build.status_changed``, ``tool.called``, ...; the
    catalog: ``docs/events/``) and its data."""

    id: str
    type: str
    data: dict[str, Any]

    @property
    def ends_build(self) -> bool:
        """Whether the build's stream ends with this event: the build completed or failed,
        was cancelled, or it had ended and this is its summary."""
        if self.type in {"build.completed", "build.failed", "build.summary"}:
            return True
        return self.type == "build.status_changed" and self.data.get("status") == "cancelled"


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Model calls, tokens and their cost (micros of the plan's currency)."""

    calls: int
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cost_micros: int

    @staticmethod
    def _fields(data: dict[str, Any]) -> dict[str, int]:
        names = (
            "calls",
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "cost_micros",
        )
        return {name: int(data[name]) for name in names}


@dataclass(frozen=True, slots=True)
class DayUsage(TokenUsage):
    """One UTC day's usage."""

    day: date


@dataclass(frozen=True, slots=True)
class ModelUsage(TokenUsage):
    """One model's part of a build's usage."""

    model: str


@dataclass(frozen=True, slots=True)
class Today:
    """Today's budget (UTC day) and the gate model calls pass."""

    day: date
    tier: str
    budget_micros: int
    spent_micros: int
    remaining_micros: int
    top_ups_micros: int
    gate: Literal["open", "closed"]
    resets_at: datetime


@dataclass(frozen=True, slots=True)
class Usage:
    """A user's spend per day (newest first) and today's budget (``GET /v1/usage``)."""

    user_id: str
    today: Today
    days: list[DayUsage]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Usage:
        today = data["today"]
        resets_at = _time(today["resets_at"])
        assert resets_at is not None
        return cls(
            user_id=data["user_id"],
            today=Today(
                day=date.fromisoformat(today["day"]),
                tier=today["tier"],
                budget_micros=today["budget_micros"],
                spent_micros=today["spent_micros"],
                remaining_micros=today["remaining_micros"],
                top_ups_micros=today["top_ups_micros"],
                gate=today["gate"],
                resets_at=resets_at,
            ),
            days=[
                DayUsage(day=date.fromisoformat(d["day"]), **TokenUsage._fields(d))
                for d in data["days"]
            ],
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class BuildUsage(TokenUsage):
    """What a build spent, in all and by model (``GET /v1/builds/{id}/usage``)."""

    build_id: str
    by_model: list[ModelUsage]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildUsage:
        return cls(
            build_id=data["build_id"],
            by_model=[
                ModelUsage(model=m["model"], **TokenUsage._fields(m)) for m in data["by_model"]
            ],
            raw=data,
            **TokenUsage._fields(data),
        )


@dataclass(frozen=True, slots=True)
class DemoFounder(_ByName):
    """A seeded demo founder (``POST /v1/admin/demo``): a user, their project, their token."""

    user_id: str
    project_id: str
    token: str


@dataclass(frozen=True, slots=True)
class TopUpAccepted(_ByName):
    """A granted top-up (its event id)."""

    id: str
    user_id: str
    amount_micros: int


@dataclass(frozen=True, slots=True)
class TierChanged(_ByName):
    """A user's plan change."""

    user_id: str
    tier: str
    previous_tier: str
