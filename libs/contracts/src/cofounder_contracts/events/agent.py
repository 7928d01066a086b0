"""Events of the agent loop: iterations, tools, screenshots, sleep and resume."""

from __future__ import annotations

from datetime import datetime

from cofounder_contracts.envelope import Event
from cofounder_contracts.ids import ProviderId
from cofounder_contracts.units import Count, DurationMs, NonEmpty, StepCount, TokenCount

__all__ = [
    "AgentIterationCompleted",
    "AgentResumed",
    "AgentSleeping",
    "ScreenshotTaken",
    "ToolCalled",
    "ToolCompleted",
]


class AgentIterationCompleted(Event, frozen=True, kw_only=True, tag="agent.iteration_completed"):
    """One Think-Act-Observe turn ended and its checkpoint is written. Emitted by the runner."""

    iteration: StepCount
    tool_calls: StepCount  # total so far in the build
    input_tokens: TokenCount = 0
    output_tokens: TokenCount = 0
    checkpoint_seq: StepCount = 0


class _ToolEvent(Event, frozen=True, kw_only=True):
    """An event of one tool call: the iteration that made it, its id and the tool's name (the
    first fields of each such event)."""

    iteration: StepCount
    tool_use_id: ProviderId
    name: NonEmpty


class ToolCalled(_ToolEvent, frozen=True, kw_only=True, tag="tool.called"):
    """The model asked for a tool. ``input_preview`` is truncated and never holds secrets."""

    input_preview: str


class ToolCompleted(_ToolEvent, frozen=True, kw_only=True, tag="tool.completed"):
    """A tool returned (``is_error`` when it failed; the loop goes on either way)."""

    is_error: bool
    duration_ms: DurationMs
    output_preview: str


class ScreenshotTaken(_ToolEvent, frozen=True, kw_only=True, tag="agent.screenshot_taken"):
    """The screenshot tool's PNG is stored; emitted by the runner after that call's
    ``tool.completed``. ``url`` is how a founder sees it: a presigned S3 URL valid until
    ``expires_at``, or (the folder store; ``expires_at`` None) the gateway's path
    ``/v1/builds/{build_id}/screenshots/{name}``, authorised like the build. ``page_url`` is
    the page shot, as the sandbox reached it."""

    url: NonEmpty
    expires_at: datetime | None = None
    page_url: str = ""
    width: Count = 0
    height: Count = 0
    bytes: Count = 0


class AgentSleeping(Event, frozen=True, kw_only=True, tag="agent.sleeping"):
    """The budget is spent: the build is checkpointed, its sandbox paused, until ``resets_at``."""

    resets_at: datetime
    checkpoint_seq: StepCount


class AgentResumed(Event, frozen=True, kw_only=True, tag="agent.resumed"):
    """A sleeping or crashed build continues from ``checkpoint_seq``."""

    checkpoint_seq: StepCount
    reason: str = "wake"
