"""The agent run's decisions: whether the next iteration may run, and what a turn ended.

The runner's loop (``cofounder_agent_runner.loop``) carries these out: it reads the cancel flag
and the budget gate, calls the model, runs the tools, writes the checkpoints and publishes the
events. What to do about them is decided here, from plain values, so that each rule has a fast
test of its own:

- :func:`decide`, before each model call: go on (compacting the conversation first, or not),
  cancel, sleep until the budget resets, or fail on a limit;
- :func:`after_turn`, once a turn's tools have run: what ended the build (the ``finish`` tool, a
  reply without tool use, a stuck run), the nudge to give a run that repeats a failing call,
  whether a periodic snapshot is due, and the new counters;
- :class:`Stuck`, the count of the same failing call in a row, kept in the checkpoints.

The founder-facing reasons are written here; the loop cuts them to the events' limits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

__all__ = [
    "DEFAULT_SUMMARY",
    "Action",
    "Cancel",
    "Complete",
    "Continue",
    "Control",
    "Fail",
    "Nudge",
    "RunLimits",
    "Sleep",
    "Stuck",
    "ToolCall",
    "TurnEnd",
    "TurnOutcome",
    "after_turn",
    "decide",
]

#: The summary of a build whose agent stopped calling tools without saying anything.
DEFAULT_SUMMARY: Final = "The agent ended its work."


@dataclass(frozen=True, slots=True)
class RunLimits:
    """The bounds of one build's run, from the runner's settings and the build's tier."""

    #: Tool calls the build may make (per tier).
    max_tool_calls: int
    #: Wall time the build may run, from its first checkpoint, in seconds.
    max_wall_s: float
    #: The same failing call this many times in a row: a nudge; twice as many: the build stops.
    stuck_repeats: int
    #: A periodic snapshot each time the tool calls cross a multiple of this (0: none).
    snapshot_every: int
    #: Compact the conversation before a model call when the last prompt held more tokens.
    compact_above_tokens: float


@dataclass(frozen=True, slots=True)
class Control:
    """What the founder and the budget say between iterations (read from Redis by the loop)."""

    cancelled: bool
    #: When the gate is closed: the time the budget resets; None when the gate is open.
    closed_until: datetime | None


# -- before an iteration -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Continue:
    """Make the next model call; compact the conversation first when ``compact``."""

    compact: bool = False


@dataclass(frozen=True, slots=True)
class Cancel:
    """The founder cancelled the build: it ends as cancelled."""


@dataclass(frozen=True, slots=True)
class Sleep:
    """The budget gate is closed: the build sleeps until ``resets_at`` (a wake resumes it)."""

    resets_at: datetime


@dataclass(frozen=True, slots=True)
class Fail:
    """The build ends as failed, for ``reason`` (said to the founder)."""

    reason: str


Action = Continue | Cancel | Sleep | Fail


def decide(
    control: Control,
    *,
    tool_calls: int,
    started_at: datetime,
    prompt_tokens: int,
    now: datetime,
    limits: RunLimits,
) -> Action:
    """What to do before the next model call.

    In order, the first that applies: a cancel (the founder's word beats everything, even a
    closed gate: a cancelled build must not sleep), the gate (a build out of budget sleeps
    rather than fail on a limit it might not have reached), the tool-call limit, the wall time.
    Otherwise the call goes ahead, after a compaction when the last prompt passed the threshold.

    The loop checks two things before asking, which are about the runner rather than the
    build: a shutdown (the build is handed back) and a lost lease.
    """
    if control.cancelled:
        return Cancel()
    if control.closed_until is not None:
        return Sleep(control.closed_until)
    if tool_calls >= limits.max_tool_calls:
        return Fail(f"stopped: the build reached its limit of {limits.max_tool_calls} tool calls")
    if (now - started_at).total_seconds() > limits.max_wall_s:
        return Fail(f"stopped: the build ran longer than {limits.max_wall_s:g} s")
    return Continue(compact=prompt_tokens > limits.compact_above_tokens)


# -- stuck detection -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Nudge:
    """Text appended to the tool results, telling the agent to stop repeating itself."""

    text: str


def _call_key(name: str, tool_input: Any) -> str:
    """What makes two calls "the same": the tool and its input (keys sorted)."""
    return f"{name}:{json.dumps(tool_input, sort_keys=True)}"


@dataclass(frozen=True, slots=True)
class Stuck:
    """The last failing call and how many times in a row it failed (none: ``key`` is None).

    Kept in every ``turn`` checkpoint as ``{"count": n, "key": "name:input"}``, or ``{}`` after
    a success, the shape the runner has always written (:meth:`to_parts`, :meth:`from_parts`).
    """

    key: str | None = None
    count: int = 0

    @classmethod
    def from_parts(cls, parts: Mapping[str, Any] | None) -> Stuck:
        """Read from a checkpoint's ``stuck`` (``{}`` or missing: nothing failing)."""
        if not parts or parts.get("key") is None:
            return cls()
        return cls(key=str(parts["key"]), count=int(parts.get("count", 0)))

    def to_parts(self) -> dict[str, Any]:
        """The checkpoint's ``stuck``: ``{}`` when nothing is failing."""
        if self.key is None:
            return {}
        return {"count": self.count, "key": self.key}

    def observe(
        self, name: str, tool_input: Any, *, is_error: bool, repeats: int
    ) -> tuple[Stuck, Nudge | Fail | None]:
        """One more tool call. A success clears the count; a failure counts one more when it is
        the same call as the last failure, else starts again at one. At ``repeats`` in a row
        the agent is nudged (once); from twice as many the run is stuck: the build fails."""
        if not is_error:
            return Stuck(), None
        key = _call_key(name, tool_input)
        count = self.count + 1 if key == self.key else 1
        after = Stuck(key=key, count=count)
        if count >= 2 * repeats:
            return after, Fail(
                f"stopped: stuck, the same failing {name} call was repeated {count} times"
            )
        if count == repeats:
            return after, Nudge(
                f"You have made the same failing {name} call {repeats} times in a row. Stop "
                "repeating it: read the error, change the approach, or check your assumptions."
            )
        return after, None


# -- after a turn --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call of a turn, once run: what was asked and how it went."""

    name: str
    input: Any
    is_error: bool = False
    #: The summary, when the tool was ``finish``.
    finished: str | None = None


@dataclass(frozen=True, slots=True)
class Complete:
    """The agent ended its work: the build completes with ``summary``."""

    summary: str


TurnEnd = Complete | Fail


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """What a turn decided, for the loop to record and carry out."""

    #: The build's tool calls, this turn's included.
    tool_calls: int
    stuck: Stuck
    #: Appended after the tool results, when the agent repeats a failing call.
    nudge: str | None
    #: How the build ends after this turn (once its checkpoint and events are out), if it does.
    end: TurnEnd | None
    #: A periodic snapshot is asked for with the turn's events.
    snapshot_due: bool


def after_turn(
    *,
    calls: Sequence[ToolCall],
    texts: Sequence[str],
    tool_calls_before: int,
    stuck: Stuck,
    limits: RunLimits,
) -> TurnOutcome:
    """What one assistant turn ended, from its tool calls in order (or its ``texts``, the
    text blocks of a reply that called no tool).

    - A ``finish`` call completes the build with its summary (the last one, if several); a
      reply without tool use completes it with its text, or :data:`DEFAULT_SUMMARY`.
    - Stuck detection looks at every call in order; the turn's last verdict stands (a nudge or
      a stop; a later success does not withdraw it). A stop fails the build, unless the turn
      also finished it: completing wins.
    - A periodic snapshot is due when the tool calls crossed a multiple of ``snapshot_every``
      during the turn (once, however many multiples several calls crossed), except in the turn
      that completes the build, which asks for the final snapshot instead.
    """
    finished: str | None = None
    verdict: Nudge | Fail | None = None
    for call in calls:
        if call.finished is not None:
            finished = call.finished
        stuck, seen = stuck.observe(
            call.name, call.input, is_error=call.is_error, repeats=limits.stuck_repeats
        )
        if seen is not None:
            verdict = seen
    if not calls:
        finished = " ".join(t for t in texts if t).strip() or DEFAULT_SUMMARY
    tool_calls = tool_calls_before + len(calls)
    every = limits.snapshot_every
    end: TurnEnd | None = None
    if finished is not None:
        end = Complete(finished)
    elif isinstance(verdict, Fail):
        end = verdict
    return TurnOutcome(
        tool_calls=tool_calls,
        stuck=stuck,
        nudge=verdict.text if isinstance(verdict, Nudge) else None,
        end=end,
        snapshot_due=every > 0
        and finished is None
        and tool_calls // every > tool_calls_before // every,
    )
