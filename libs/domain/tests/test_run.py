"""The agent run's decisions (``cofounder_domain.run``): plain values in, plain values out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cofounder_domain.run import (
    DEFAULT_SUMMARY,
    Cancel,
    Complete,
    Continue,
    Control,
    Fail,
    Nudge,
    RunLimits,
    Sleep,
    Stuck,
    ToolCall,
    after_turn,
    decide,
)

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
RESETS = datetime(2030, 1, 2, tzinfo=UTC)
LIMITS = RunLimits(
    max_tool_calls=150,
    max_wall_s=3600.0,
    stuck_repeats=3,
    snapshot_every=25,
    compact_above_tokens=0.75 * 200_000,
)
OPEN = Control(cancelled=False, closed_until=None)
NUDGE = (
    "You have made the same failing bash call 3 times in a row. Stop repeating it: read the "
    "error, change the approach, or check your assumptions."
)


def _decide(
    control: Control = OPEN,
    *,
    tool_calls: int = 0,
    elapsed_s: float = 0.0,
    prompt_tokens: int = 0,
    limits: RunLimits = LIMITS,
) -> object:
    return decide(
        control,
        tool_calls=tool_calls,
        started_at=T0,
        prompt_tokens=prompt_tokens,
        now=T0 + timedelta(seconds=elapsed_s),
        limits=limits,
    )


def _limits(**changes: Any) -> RunLimits:
    values = {
        "max_tool_calls": LIMITS.max_tool_calls,
        "max_wall_s": LIMITS.max_wall_s,
        "stuck_repeats": LIMITS.stuck_repeats,
        "snapshot_every": LIMITS.snapshot_every,
        "compact_above_tokens": LIMITS.compact_above_tokens,
    }
    return RunLimits(**{**values, **changes})


def _bash(command: str = "npm test", *, error: bool = True) -> ToolCall:
    return ToolCall("bash", {"command": command}, is_error=error)


# -- decide -------------------------------------------------------------------------------


def test_an_open_gate_within_the_limits_goes_on() -> None:
    assert _decide(tool_calls=149, elapsed_s=3600) == Continue(compact=False)


def test_the_cancel_flag_wins_over_everything() -> None:
    control = Control(cancelled=True, closed_until=RESETS)
    assert _decide(control, tool_calls=10_000, elapsed_s=10**6) == Cancel()


def test_a_closed_gate_sleeps_until_the_reset_before_any_limit() -> None:
    control = Control(cancelled=False, closed_until=RESETS)
    assert _decide(control, tool_calls=10_000, elapsed_s=10**6) == Sleep(RESETS)


def test_the_tool_call_limit_fails_the_build_before_the_wall_time() -> None:
    assert _decide(tool_calls=150, elapsed_s=10**6) == Fail(
        "stopped: the build reached its limit of 150 tool calls"
    )


def test_the_wall_time_fails_the_build_once_passed() -> None:
    assert _decide(elapsed_s=3600.001) == Fail("stopped: the build ran longer than 3600 s")
    assert _decide(limits=_limits(max_wall_s=1.5), elapsed_s=2) == Fail(
        "stopped: the build ran longer than 1.5 s"
    )


def test_a_prompt_above_the_threshold_asks_for_a_compaction_first() -> None:
    assert _decide(prompt_tokens=150_000) == Continue(compact=False)
    assert _decide(prompt_tokens=150_001) == Continue(compact=True)
    # A limit or the gate comes first: nothing is compacted for a build that stops.
    assert _decide(tool_calls=150, prompt_tokens=10**6) == Fail(
        "stopped: the build reached its limit of 150 tool calls"
    )


# -- stuck --------------------------------------------------------------------------------


def test_the_same_failing_call_is_nudged_at_n_and_stopped_at_2n() -> None:
    stuck = Stuck()
    verdicts: list[Nudge | Fail | None] = []
    for _ in range(6):
        stuck, verdict = stuck.observe("bash", {"command": "x"}, is_error=True, repeats=3)
        verdicts.append(verdict)
    assert verdicts == [
        None,
        None,
        Nudge(NUDGE),
        None,
        None,
        Fail("stopped: stuck, the same failing bash call was repeated 6 times"),
    ]
    assert stuck == Stuck(key='bash:{"command": "x"}', count=6)


def test_a_success_resets_the_count() -> None:
    stuck = Stuck(key='bash:{"command": "x"}', count=2)
    stuck, verdict = stuck.observe("bash", {"command": "x"}, is_error=False, repeats=3)
    assert (stuck, verdict) == (Stuck(), None)
    stuck, verdict = stuck.observe("bash", {"command": "x"}, is_error=True, repeats=3)
    assert (stuck.count, verdict) == (1, None)


def test_a_different_failing_call_starts_the_count_again() -> None:
    stuck = Stuck(key='bash:{"command": "x"}', count=2)
    stuck, verdict = stuck.observe("bash", {"command": "y"}, is_error=True, repeats=3)
    assert (stuck, verdict) == (Stuck(key='bash:{"command": "y"}', count=1), None)
    # The same input under another tool is another call too; key order does not matter.
    stuck, _ = stuck.observe("grep", {"command": "y"}, is_error=True, repeats=3)
    assert stuck.count == 1
    stuck, _ = stuck.observe("grep", {"command": "y"}, is_error=True, repeats=3)
    stuck, _ = stuck.observe("grep", {"b": 1, "a": 2}, is_error=True, repeats=3)
    stuck, _ = stuck.observe("grep", {"a": 2, "b": 1}, is_error=True, repeats=3)
    assert stuck.count == 2


@pytest.mark.parametrize(
    "stored",
    [
        {},
        None,
        {"key": 'bash:{"command": "x"}', "count": 4},
        {"count": 1, "key": "str_replace_based_edit_tool:null"},
    ],
)
def test_stuck_round_trips_through_the_checkpoint_shape(stored: dict[str, Any] | None) -> None:
    stuck = Stuck.from_parts(stored)
    written = stuck.to_parts()
    assert written == (stored or {})
    # What is written is what the runner has always written: plain JSON, count before key.
    assert json.loads(json.dumps(written)) == written
    assert list(written) in ([], ["count", "key"])
    assert Stuck.from_parts(written) == stuck


def test_a_stored_count_carries_on_after_a_resume() -> None:
    stuck = Stuck.from_parts({"key": 'bash:{"command": "x"}', "count": 5})
    _, verdict = stuck.observe("bash", {"command": "x"}, is_error=True, repeats=3)
    assert verdict == Fail("stopped: stuck, the same failing bash call was repeated 6 times")


# -- after a turn -------------------------------------------------------------------------


def _after(
    calls: list[ToolCall],
    *,
    before: int = 0,
    stuck: Stuck | None = None,
    texts: list[str] | None = None,
    limits: RunLimits = LIMITS,
) -> Any:
    return after_turn(
        calls=calls,
        texts=texts or [],
        tool_calls_before=before,
        stuck=stuck or Stuck(),
        limits=limits,
    )


def test_a_turn_of_tools_continues_and_counts_them() -> None:
    outcome = _after([_bash(error=False), _bash("ls", error=False)], before=3)
    assert (outcome.tool_calls, outcome.end, outcome.nudge) == (5, None, None)
    assert outcome.stuck == Stuck()
    assert not outcome.snapshot_due


def test_the_finish_tool_completes_with_its_summary() -> None:
    calls = [_bash(error=False), ToolCall("finish", {"summary": "Done."}, finished="Done.")]
    outcome = _after(calls, texts=["ignored: tools were called"])
    assert outcome.end == Complete("Done.")
    assert outcome.tool_calls == 2


def test_a_reply_without_tool_use_completes_with_its_text() -> None:
    assert _after([], texts=["", " All done. ", "Enjoy."]).end == Complete("All done.  Enjoy.")
    assert _after([], texts=["", "  "]).end == Complete(DEFAULT_SUMMARY)
    assert _after([]).end == Complete("The agent ended its work.")
    assert _after([], before=7).tool_calls == 7


def test_the_nudge_comes_with_the_third_repeat_and_the_turn_goes_on() -> None:
    stuck = Stuck(key='bash:{"command": "npm test"}', count=1)
    outcome = _after([_bash(), _bash()], stuck=stuck)
    assert outcome.nudge == NUDGE
    assert outcome.end is None
    # A success later in the same turn clears the count, not the nudge already given.
    outcome = _after([_bash(), _bash(), _bash("ls", error=False)], stuck=stuck)
    assert (outcome.nudge, outcome.stuck) == (NUDGE, Stuck())


def test_the_sixth_repeat_fails_the_build_as_stuck() -> None:
    stuck = Stuck(key='bash:{"command": "npm test"}', count=2)
    outcome = _after([_bash(), _bash(), _bash(), _bash()], stuck=stuck)
    assert outcome.end == Fail("stopped: stuck, the same failing bash call was repeated 6 times")
    # The nudge given by the third repeat in this turn is replaced by the stop (the last word).
    assert outcome.nudge is None


def test_finishing_wins_over_being_stuck() -> None:
    stuck = Stuck(key='bash:{"command": "npm test"}', count=5)
    outcome = _after([_bash(), ToolCall("finish", {}, finished="ok")], stuck=stuck)
    assert outcome.end == Complete("ok")


def test_a_periodic_snapshot_when_the_tool_calls_cross_a_multiple() -> None:
    ok = _bash(error=False)
    assert not _after([ok], before=23).snapshot_due  # 24
    assert _after([ok], before=24).snapshot_due  # 25
    assert not _after([ok], before=25).snapshot_due  # 26
    # Several tools in one turn across the boundary: one snapshot.
    assert _after([ok, ok, ok, ok], before=22).snapshot_due  # 22 -> 26
    assert not _after([ok, ok], before=22).snapshot_due  # 22 -> 24
    # More than one multiple in a turn is still one snapshot (a flag, not a count).
    assert _after([ok] * 60, before=0).snapshot_due
    assert not _after([ok], before=24, limits=_limits(snapshot_every=0)).snapshot_due


def test_no_periodic_snapshot_in_the_finishing_turn() -> None:
    calls = [_bash(error=False), ToolCall("finish", {}, finished="ok")]
    outcome = _after(calls, before=24)
    assert outcome.tool_calls == 26
    assert not outcome.snapshot_due
    # Only completing suppresses it: a turn that fails as stuck still asks for it.
    stuck = Stuck(key='bash:{"command": "npm test"}', count=5)
    assert _after([_bash()], before=24, stuck=stuck).snapshot_due
