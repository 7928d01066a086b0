"""The reconciler's decisions, stage by stage: given what PostgreSQL says of a build and what
Redis holds, what is re-published (pure: no server)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cofounder_contracts import BuildStatus
from cofounder_gateway.reconcile.decide import decide, snapshot_answer_ids
from cofounder_gateway.reconcile.facts import (
    BuildFacts,
    InFlight,
    RedisView,
    RepairKind,
    RunFacts,
    SnapshotFacts,
    UnmeteredTurn,
)
from cofounder_gateway.requests import requested_event_id

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=30)
OLD = NOW - timedelta(minutes=5)
FRESH = NOW - timedelta(seconds=5)
BID = "0193a0c0-0000-7000-8000-000000000001"
END_ID = "0193a0c0-0000-7000-8000-0000000000e0"
SLEEP_ID = "0193a0c0-0000-7000-8000-0000000000e1"
SNAP_ID = "0193a0c0-0000-7000-8000-0000000000e2"


def build(status: BuildStatus = BuildStatus.QUEUED, **changes: Any) -> BuildFacts:
    facts = BuildFacts(
        build_id=BID,
        project_id="p",
        user_id="u",
        status=status,
        goal="an app",
        created_at=OLD,
        changed_at=OLD,
    )
    return dataclasses.replace(facts, **changes)


def run(kind: str, *, at: datetime = OLD, seq: int = 3, **changes: Any) -> RunFacts:
    return dataclasses.replace(RunFacts(last_kind=kind, last_seq=seq, last_at=at), **changes)


def flight(*builds: tuple[str, str], events: tuple[str, ...] = ()) -> InFlight:
    return InFlight(builds=frozenset(builds), event_ids=frozenset(events))


UNKNOWN = InFlight(complete=False)


def kinds(facts: BuildFacts, view: RedisView | None = None) -> list[RepairKind]:
    return [r.kind for r in decide(facts, view or RedisView(), now=NOW, grace=GRACE)]


# -- queued and assembling: the request ----------------------------------------------------


@pytest.mark.parametrize("status", [BuildStatus.QUEUED, BuildStatus.ASSEMBLING])
def test_a_build_that_never_started_and_has_nothing_in_flight_gets_its_request_again(
    status: BuildStatus,
) -> None:
    assert kinds(build(status)) == [RepairKind.REQUEST]


@pytest.mark.parametrize(
    ("facts", "view"),
    [
        (build(changed_at=FRESH), RedisView()),  # younger than the grace
        (build(request_in_outbox=True), RedisView()),  # the relay will publish it
        (build(), RedisView(requests=flight(events=(requested_event_id(BID),)))),
        (build(), RedisView(requests=flight(("build.requested", BID)))),
        (build(BuildStatus.ASSEMBLING), RedisView(work=flight(("context.ready", BID)))),
        (build(), RedisView(leased=frozenset({BID}))),
        (build(), RedisView(events_to_gateway=flight(("build.failed", BID)))),  # refused
        (build(), RedisView(requests=UNKNOWN)),  # a backlog cut the scan: wait
    ],
)
def test_a_request_on_its_way_is_left_alone(facts: BuildFacts, view: RedisView) -> None:
    assert kinds(facts, view) == []


# -- running: the work entry -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["start", "turn", "compaction"])
def test_a_run_nobody_drives_gets_its_context_again(kind: str) -> None:
    for status in (BuildStatus.RUNNING, BuildStatus.ASSEMBLING, BuildStatus.QUEUED):
        assert kinds(build(status, run=run(kind))) == [RepairKind.WORK]


@pytest.mark.parametrize(
    "view",
    [
        RedisView(leased=frozenset({BID})),
        RedisView(work=flight(("context.ready", BID))),
        RedisView(signals=flight(("budget.wake", BID))),
        RedisView(control=flight(("build.cancel_requested", BID))),
        RedisView(work=UNKNOWN),
    ],
)
def test_a_run_with_a_lease_or_pending_work_is_left_alone(view: RedisView) -> None:
    assert kinds(build(BuildStatus.RUNNING, run=run("turn")), view) == []


def test_a_run_that_checkpointed_within_the_grace_is_left_alone() -> None:
    assert kinds(build(BuildStatus.RUNNING, run=run("turn", at=FRESH))) == []


def test_a_budget_warning_in_flight_does_not_count_as_work() -> None:
    view = RedisView(signals=flight(("budget.warning", BID)))
    assert kinds(build(BuildStatus.RUNNING, run=run("turn")), view) == [RepairKind.WORK]


# -- sleeping: the wake set ------------------------------------------------------------------


def asleep(**changes: Any) -> BuildFacts:
    sleeping = {"type": "agent.sleeping", "event_id": SLEEP_ID}
    return build(BuildStatus.SLEEPING, run=run("sleep", sleeping=sleeping), **changes)


def test_a_sleeping_build_missing_from_the_wake_set_goes_to_sleep_again() -> None:
    assert kinds(asleep()) == [RepairKind.SLEEP]
    # The row may not say so (its agent.sleeping was lost too): the checkpoints decide.
    assert kinds(dataclasses.replace(asleep(), status=BuildStatus.RUNNING)) == [RepairKind.SLEEP]


@pytest.mark.parametrize(
    "view",
    [
        RedisView(sleeping=frozenset({BID})),
        RedisView(sleeping=None),  # the wake set was too large to read: wait
        RedisView(signals=flight(("budget.wake", BID))),
        RedisView(leased=frozenset({BID})),
        RedisView(events_to_budget=flight(events=(SLEEP_ID,))),
    ],
)
def test_a_sleeping_build_that_will_wake_is_left_alone(view: RedisView) -> None:
    assert kinds(asleep(), view) == []


# -- ending: the end event -------------------------------------------------------------------


def ended(status: BuildStatus = BuildStatus.RUNNING) -> BuildFacts:
    end = {"type": "build.completed", "event_id": END_ID}
    return build(status, run=run("end", ended=end))


def test_an_end_the_projection_never_applied_is_sent_again() -> None:
    assert kinds(ended()) == [RepairKind.END]


@pytest.mark.parametrize(
    ("facts", "view"),
    [
        (ended(BuildStatus.READY), RedisView()),
        (ended(BuildStatus.FAILED), RedisView()),  # another end came first: the row keeps it
        (ended(), RedisView(events_to_gateway=flight(events=(END_ID,)))),
        (ended(), RedisView(events_to_gateway=UNKNOWN)),
    ],
)
def test_an_end_applied_or_on_its_way_is_left_alone(facts: BuildFacts, view: RedisView) -> None:
    assert kinds(facts, view) == []


# -- cancelled: the cancel -------------------------------------------------------------------


def cancelled(facts_run: RunFacts | None = None, **changes: Any) -> BuildFacts:
    return build(BuildStatus.CANCELLED, run=facts_run, **({"finished_at": OLD} | changes))


def test_a_cancel_the_runner_never_had_is_sent_again() -> None:
    assert kinds(cancelled(run("turn"))) == [RepairKind.CANCEL]
    assert kinds(cancelled(run("sleep"))) == [RepairKind.CANCEL]
    # Not started yet, but its context is on its way to a runner.
    view = RedisView(work=flight(("context.ready", BID)))
    assert kinds(cancelled(), view) == [RepairKind.CANCEL]


@pytest.mark.parametrize(
    ("facts", "view"),
    [
        (cancelled(run("turn")), RedisView(cancel_flags=frozenset({BID}))),
        (cancelled(run("turn")), RedisView(control=flight(("build.cancel_requested", BID)))),
        (cancelled(run("end", ended={"event_id": END_ID})), RedisView()),
        (cancelled(), RedisView()),  # never started, and nothing will start it
        (cancelled(run("turn"), finished_at=FRESH), RedisView()),
    ],
)
def test_a_cancel_that_took_or_is_on_its_way_is_left_alone(
    facts: BuildFacts, view: RedisView
) -> None:
    assert kinds(facts, view) == []


# -- snapshots: the latest request -----------------------------------------------------------


def snapshot(answered: bool = False, at: datetime = OLD) -> SnapshotFacts:
    return SnapshotFacts(request_id=SNAP_ID, seq=4, requested_at=at, answered=answered)


def test_an_unanswered_snapshot_request_is_sent_again_even_after_the_build_ended() -> None:
    done = dataclasses.replace(ended(BuildStatus.READY), snapshot=snapshot())
    assert kinds(done) == [RepairKind.SNAPSHOT]
    running = build(BuildStatus.RUNNING, run=run("turn"), snapshot=snapshot())
    view = RedisView(leased=frozenset({BID}))
    assert kinds(running, view) == [RepairKind.SNAPSHOT]


@pytest.mark.parametrize(
    ("snap", "view"),
    [
        (snapshot(answered=True), RedisView()),
        (snapshot(at=FRESH), RedisView()),
        (snapshot(), RedisView(snapshots=flight(events=(SNAP_ID,)))),
        (snapshot(), RedisView(snapshots=UNKNOWN)),
        *[
            (snapshot(), RedisView(events_to_gateway=flight(events=(answer,))))
            for answer in snapshot_answer_ids(SNAP_ID)
        ],
    ],
)
def test_a_snapshot_request_answered_or_on_its_way_is_left_alone(
    snap: SnapshotFacts, view: RedisView
) -> None:
    done = dataclasses.replace(ended(BuildStatus.READY), snapshot=snap)
    assert kinds(done, view) == []


# -- confirmation ----------------------------------------------------------------------------


def test_a_repair_names_the_state_it_was_decided_from() -> None:
    """Two passes confirm a repair only from the same state: a run that moved on between them
    (a new checkpoint) is a new decision."""
    first = decide(
        build(BuildStatus.RUNNING, run=run("turn", seq=3)), RedisView(), now=NOW, grace=GRACE
    )
    again = decide(
        build(BuildStatus.RUNNING, run=run("turn", seq=3)), RedisView(), now=NOW, grace=GRACE
    )
    moved = decide(
        build(BuildStatus.RUNNING, run=run("turn", seq=4)), RedisView(), now=NOW, grace=GRACE
    )
    assert [r.key for r in first] == [r.key for r in again]
    assert [r.key for r in first] != [r.key for r in moved]


def test_finished_builds_need_nothing_but_their_snapshot_and_cancel() -> None:
    for status in (BuildStatus.READY, BuildStatus.FAILED):
        assert kinds(build(status, finished_at=OLD)) == []
        assert kinds(build(status, run=run("turn"), finished_at=OLD)) == []


# -- usage: the ledger -----------------------------------------------------------------------

USAGE_ID = "0193a0c0-0000-7000-8000-0000000000e3"


def test_turns_missing_from_the_ledger_get_their_usage_again_even_after_the_end() -> None:
    turns = (UnmeteredTurn(2, USAGE_ID, OLD), UnmeteredTurn(3, SNAP_ID, OLD))
    done = dataclasses.replace(ended(BuildStatus.READY), unmetered=turns)
    repairs = decide(done, RedisView(), now=NOW, grace=GRACE)
    assert [(r.kind, r.marker) for r in repairs] == [(RepairKind.USAGE, "2,3")]


@pytest.mark.parametrize(
    ("turn", "view"),
    [
        (UnmeteredTurn(2, USAGE_ID, FRESH), RedisView()),  # the budget may not have had it yet
        (UnmeteredTurn(2, USAGE_ID, OLD), RedisView(usage=flight(events=(USAGE_ID,)))),
        (UnmeteredTurn(2, USAGE_ID, OLD), RedisView(usage=UNKNOWN)),
    ],
)
def test_usage_on_its_way_is_left_alone(turn: UnmeteredTurn, view: RedisView) -> None:
    running = build(BuildStatus.RUNNING, run=run("turn"), unmetered=(turn,))
    assert kinds(running, dataclasses.replace(view, leased=frozenset({BID}))) == []
