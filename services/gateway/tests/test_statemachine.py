"""The build status state machine (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cofounder_contracts import BuildStatus as S
from cofounder_gateway.statemachine import next_status

T0 = datetime(2026, 11, 1, tzinfo=UTC)


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
def test_transitions(current: S, incoming: S, expected: S | None) -> None:
    assert next_status(current, incoming, occurred_at=T0, last_applied_at=None) == expected


def test_running_and_sleeping_flip_only_forward_in_time() -> None:
    later, earlier = T0 + timedelta(seconds=5), T0 - timedelta(seconds=5)
    assert next_status(S.RUNNING, S.SLEEPING, occurred_at=later, last_applied_at=T0) == S.SLEEPING
    assert next_status(S.SLEEPING, S.RUNNING, occurred_at=later, last_applied_at=T0) == S.RUNNING
    assert next_status(S.SLEEPING, S.RUNNING, occurred_at=earlier, last_applied_at=T0) is None
