"""A build's lifecycle: terminal statuses, allowed moves, counters that only grow (no I/O)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from cofounder_contracts import (
    TERMINAL_STATUSES,
    AgentIterationCompleted,
    AgentResumed,
    AgentSleeping,
    BuildCompleted,
    BuildFailed,
    BuildStatusChanged,
    Event,
    ToolCalled,
    ends_build,
)
from cofounder_contracts import BuildStatus as S
from cofounder_contracts.streams import BUILD_EVENTS
from cofounder_domain.lifecycle import (
    COUNTERS,
    MOVES,
    STAGE,
    can_move,
    changes_of,
    grow,
    is_terminal,
    next_status,
    status_of,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
IDS = {"build_id": str(uuid.uuid4()), "project_id": str(uuid.uuid4()), "user_id": "u"}


def test_terminal_is_the_contracts_definition() -> None:
    assert {s for s in S if is_terminal(s)} == TERMINAL_STATUSES == {S.READY, S.FAILED, S.CANCELLED}
    assert all(is_terminal(s) == s.ended for s in S)
    assert set(STAGE) == set(S) - TERMINAL_STATUSES  # every status is staged or an end


def test_the_allowed_moves() -> None:
    forward = [S.QUEUED, S.ASSEMBLING, S.RUNNING, S.FINISHING]
    expected = {
        *((a, b) for i, a in enumerate(forward) for b in forward[i + 1 :]),
        (S.QUEUED, S.SLEEPING),
        (S.ASSEMBLING, S.SLEEPING),
        (S.RUNNING, S.SLEEPING),
        (S.SLEEPING, S.RUNNING),
        (S.SLEEPING, S.FINISHING),
        *((a, end) for a in STAGE for end in TERMINAL_STATUSES),
    }
    assert expected == MOVES
    assert all(can_move(a, b) == ((a, b) in MOVES) for a in S for b in S)
    assert not any(can_move(end, b) for end in TERMINAL_STATUSES for b in S)


@pytest.mark.parametrize(
    ("current", "incoming", "expected"),
    [
        (S.QUEUED, S.ASSEMBLING, S.ASSEMBLING),
        (S.ASSEMBLING, S.RUNNING, S.RUNNING),
        (S.QUEUED, S.RUNNING, S.RUNNING),  # a skipped step is fine: forward is forward
        (S.RUNNING, S.FINISHING, S.FINISHING),
        (S.FINISHING, S.READY, S.READY),
        (S.RUNNING, S.FAILED, S.FAILED),
        (S.QUEUED, S.CANCELLED, S.CANCELLED),
        (S.RUNNING, S.ASSEMBLING, None),  # stale: backwards
        (S.FINISHING, S.RUNNING, None),
        (S.RUNNING, S.RUNNING, None),  # duplicate
        (S.READY, S.FAILED, None),  # terminal stays
        (S.CANCELLED, S.RUNNING, None),
        (S.FAILED, S.READY, None),
    ],
)
def test_next_status(current: S, incoming: S, expected: S | None) -> None:
    assert next_status(current, incoming, occurred_at=T0, last_applied_at=None) == expected


def test_next_status_applies_only_allowed_moves() -> None:
    for a in S:
        for b in S:
            moved = next_status(a, b, occurred_at=T0, last_applied_at=None)
            assert (moved is not None) == can_move(a, b)
            assert moved in (None, b)


def test_running_and_sleeping_flip_only_forward_in_time() -> None:
    later, earlier = T0 + timedelta(seconds=5), T0 - timedelta(seconds=5)
    assert next_status(S.RUNNING, S.SLEEPING, occurred_at=later, last_applied_at=T0) == S.SLEEPING
    assert next_status(S.SLEEPING, S.RUNNING, occurred_at=later, last_applied_at=T0) == S.RUNNING
    assert next_status(S.SLEEPING, S.RUNNING, occurred_at=earlier, last_applied_at=T0) is None
    assert next_status(S.SLEEPING, S.RUNNING, occurred_at=T0, last_applied_at=T0) is None
    # An end or a later stage does not wait for a newer event.
    assert next_status(S.SLEEPING, S.FAILED, occurred_at=earlier, last_applied_at=T0) == S.FAILED
    assert next_status(S.SLEEPING, S.FINISHING, occurred_at=earlier, last_applied_at=T0) == (
        S.FINISHING
    )


def _events() -> list[Event]:
    completed = {"build_version": 1, "preview_url": None, "summary": "ok"}
    return [
        BuildStatusChanged(**IDS, producer="t", status=S.ASSEMBLING),
        BuildStatusChanged(**IDS, producer="t", status=S.CANCELLED, reason="by the user"),
        BuildCompleted(**IDS, producer="t", **completed, iterations=2, tool_calls=3),
        BuildFailed(**IDS, producer="t", reason="no"),
        AgentSleeping(**IDS, producer="t", resets_at=T0, checkpoint_seq=1),
        AgentResumed(**IDS, producer="t", checkpoint_seq=1),
        AgentIterationCompleted(**IDS, producer="t", iteration=1, tool_calls=1),
        ToolCalled(
            **IDS, producer="t", iteration=1, tool_use_id="t1", name="bash", input_preview=""
        ),
    ]


def test_the_status_an_event_reports() -> None:
    statuses = [status_of(e) for e in _events()]
    assert statuses == [
        S.ASSEMBLING,
        S.CANCELLED,
        S.READY,
        S.FAILED,
        S.SLEEPING,
        S.RUNNING,
        None,
        None,
    ]
    # The contracts' "this event ends its build" agrees with the status the event reports.
    for event in _events():
        status = status_of(event)
        assert ends_build(event) == (status is not None and is_terminal(status))
        assert type(event) in BUILD_EVENTS.events


def test_what_an_event_records_of_its_build() -> None:
    assert [changes_of(e) for e in _events()] == [
        {},
        {"error": "by the user"},
        {"build_version": 1, "preview_url": None, "iterations": 2, "tool_calls": 3},
        {"error": "no"},
        {},
        {},
        {"iterations": 1, "tool_calls": 1},
        {},
    ]
    # A reason on a status that does not end the build is not an error.
    paused = BuildStatusChanged(**IDS, producer="t", status=S.SLEEPING, reason="budget")
    assert changes_of(paused) == {}


def test_counters_only_grow() -> None:
    assert COUNTERS == ("iterations", "tool_calls")
    for stored in range(4):
        for incoming in range(4):
            assert grow(stored, incoming) == max(stored, incoming) >= stored
