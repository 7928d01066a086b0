"""Events of the agent loop: iterations, tools, sleep and resume."""

from __future__ import annotations

from datetime import datetime

from cofounder_contracts.envelope import Event
from cofounder_contracts.units import Count, NonEmpty

__all__ = [
    "AgentIterationCompleted",
    "AgentResumed",
    "AgentSleeping",
    "ToolCalled",
    "ToolCompleted",
]


class AgentIterationCompleted(Event, frozen=True, kw_only=True, tag="agent.iteration_completed"):
    """One Think-Act-Observe turn ended and its checkpoint is written. Emitted by the runner."""

    iteration: Count
    tool_calls: Count  # total so far in the build
    input_tokens: Count = 0
    output_tokens: Count = 0
    checkpoint_seq: Count = 0


class ToolCalled(Event, frozen=True, kw_only=True, tag="tool.called"):
    """The model asked for a tool. ``input_preview`` is truncated and never holds secrets."""

    iteration: Count
    tool_use_id: NonEmpty
    name: NonEmpty
    input_preview: str


class ToolCompleted(Event, frozen=True, kw_only=True, tag="tool.completed"):
    """A tool returned (``is_error`` when it failed; the loop goes on either way)."""

    iteration: Count
    tool_use_id: NonEmpty
    name: NonEmpty
    is_error: bool
    duration_ms: Count
    output_preview: str


class AgentSleeping(Event, frozen=True, kw_only=True, tag="agent.sleeping"):
    """The budget is spent: the build is checkpointed, its sandbox paused, until ``resets_at``."""

    resets_at: datetime
    checkpoint_seq: Count


class AgentResumed(Event, frozen=True, kw_only=True, tag="agent.resumed"):
    """A sleeping or crashed build continues from ``checkpoint_seq``."""

    checkpoint_seq: Count
    reason: str = "wake"
