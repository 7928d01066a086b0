"""The budget gate's value: written by the budget service, read by the agent runner, one type."""

from __future__ import annotations

from datetime import UTC, datetime

from cofounder_contracts.keys import encode_gate, gate_resets_at

RESET = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)


def test_the_reset_the_budget_writes_is_the_one_the_runner_reads() -> None:
    assert gate_resets_at(encode_gate(RESET)) == RESET


def test_an_unreadable_gate_stays_closed_until_the_next_utc_midnight() -> None:
    late = datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC)
    for value in (b"1", b"{}", b'{"resets_at": "soon"}'):
        assert gate_resets_at(value, now=late) == RESET
