"""One definition of "the build ended": the feed reads it from an entry's fields exactly as the
contracts define it on events (no decode of the whole entry, no match on JSON bytes)."""

from __future__ import annotations

import pytest

from cofounder_contracts import (
    TERMINAL_STATUSES,
    AgentIterationCompleted,
    BuildCompleted,
    BuildFailed,
    BuildStatus,
    BuildStatusChanged,
    Event,
    encode_fields,
    ends_build,
)
from cofounder_domain.lifecycle import is_terminal
from cofounder_gateway.feed import ends_build as entry_ends_build

ENVELOPE = {
    "build_id": "0193a0c0-0000-7000-8000-000000000001",
    "project_id": "0193a0c0-0000-7000-8000-000000000002",
    "user_id": "0193a0c0-0000-7000-8000-000000000003",
    "producer": "test",
}
EVENTS: list[Event] = [
    *(BuildStatusChanged(**ENVELOPE, status=s, reason="why") for s in BuildStatus),
    BuildCompleted(
        **ENVELOPE, build_version=1, preview_url=None, summary="ok", iterations=1, tool_calls=1
    ),
    BuildFailed(**ENVELOPE, reason="no"),
    AgentIterationCompleted(
        **ENVELOPE, iteration=1, tool_calls=1, input_tokens=1, output_tokens=1, checkpoint_seq=2
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: f"{e.type}:{getattr(e, 'status', '')}")
def test_a_feed_entry_ends_the_build_exactly_when_its_event_does(event: Event) -> None:
    assert entry_ends_build(encode_fields(event)) is ends_build(event)


def test_the_ended_statuses_are_defined_once() -> None:
    assert {s for s in BuildStatus if s.ended} == {"ready", "failed", "cancelled"}
    assert {s for s in BuildStatus if is_terminal(s)} == TERMINAL_STATUSES


def test_a_status_whose_bytes_merely_mention_an_end_does_not_end_the_build() -> None:
    """The old check matched ``"status":"failed"`` anywhere in the entry's data."""
    data = b'{"status":"running","detail":{"status":"failed"}}'
    assert not entry_ends_build({b"type": b"build.status_changed", b"data": data})
    assert not entry_ends_build({b"type": b"build.status_changed", b"data": b"not json"})
