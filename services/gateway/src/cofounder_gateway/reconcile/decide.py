"""What a build is missing: a pure function of what PostgreSQL says and what Redis holds.

The rule, per stage (PostgreSQL's view first, then the evidence in Redis that the stage is being
worked on; no evidence for longer than the grace period is a loss):

============================  ==========================================  ===================
PostgreSQL says               Redis shows no                              re-publish
============================  ==========================================  ===================
queued/assembling, no run     request in the outbox or in flight,         ``build.requested``
                              ``context.ready`` in flight, lease
run mid-way (start, turn,     lease, ``context.ready``/wake/cancel in      ``context.ready``
compaction)                   flight
run asleep                    wake-set member, wake or work in flight,    ``agent.sleeping``
                              lease, sleep event in flight to the budget
run ended, row not ended      end event in flight to the gateway          the end event
row cancelled, run going on   cancel flag, cancel in flight               the cancel
latest snapshot request       request in flight, answer in flight to      the request
without an answer             the gateway
turns without a ledger row    their usage in flight to the budget         their usage
============================  ==========================================  ===================

Every event goes out under the id it had the first time (ids are derived; see
``cofounder_gateway.requests`` and the runner's checkpoints), so a consumer that did see it
absorbs the repeat. A view that could not be read whole counts as "in flight": the reconciler
then waits rather than repeat what may only be late.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from cofounder_contracts import BuildStatus, derived_event_id
from cofounder_gateway.reconcile.facts import BuildFacts, RedisView, Repair, RepairKind
from cofounder_gateway.requests import requested_event_id

__all__ = ["decide", "snapshot_answer_ids"]

_MID_RUN: Final = frozenset({"start", "turn", "compaction"})
_CONTEXT_READY: Final = "context.ready"
_WAKE: Final = "budget.wake"
_REQUESTED: Final = "build.requested"


def snapshot_answer_ids(request_id: str) -> tuple[str, str, str]:
    """The ids the snapshot service answers ``request_id`` with (completed, failed, skipped)."""
    return (
        derived_event_id(request_id, "snapshot.completed"),
        derived_event_id(request_id, "snapshot.failed"),
        derived_event_id(request_id, "snapshot.skipped"),
    )


def decide(build: BuildFacts, redis: RedisView, *, now: datetime, grace: timedelta) -> list[Repair]:
    """The events ``build`` is missing (none when everything it needs is in PostgreSQL's outbox
    or in Redis, or when its stage is younger than ``grace``)."""
    settled = now - grace
    repairs: list[Repair] = []
    run = build.run
    bid = build.build_id
    marker = f"{build.status.value}:{run.last_kind if run else '-'}:{run.last_seq if run else 0}"

    def stale(since: datetime) -> bool:
        return since <= settled

    if build.status is BuildStatus.CANCELLED:
        if _cancel_missing(build, redis) and stale(build.finished_at or build.changed_at):
            repairs.append(
                Repair(RepairKind.CANCEL, bid, marker, "cancelled, the runner has no cancel")
            )
    elif not build.status.ended or (run is not None and run.ended is not None):
        repair = _stage_repair(build, redis, marker)
        if repair is not None:
            since = run.last_at if run is not None else build.changed_at
            if stale(since):
                repairs.append(repair)
    snapshot = build.snapshot
    if (
        snapshot is not None
        and not snapshot.answered
        and not redis.snapshots.has_event(snapshot.request_id)
        and not redis.events_to_gateway.has_event(*snapshot_answer_ids(snapshot.request_id))
        and stale(snapshot.requested_at)
    ):
        repairs.append(
            Repair(RepairKind.SNAPSHOT, bid, snapshot.request_id, "snapshot request unanswered")
        )
    unmetered = [
        t for t in build.unmetered if stale(t.at) and not redis.usage.has_event(t.usage_event_id)
    ]
    if unmetered:
        seqs = ",".join(str(t.seq) for t in unmetered)
        repairs.append(Repair(RepairKind.USAGE, bid, seqs, "turns missing from the ledger"))
    return repairs


def _stage_repair(build: BuildFacts, redis: RedisView, marker: str) -> Repair | None:
    """The repair an unfinished build's stage needs, or None (age not checked here)."""
    run = build.run
    kind: RepairKind | None = None
    if run is None:
        if not build.status.ended and not _request_busy(build, redis):
            kind, why = RepairKind.REQUEST, "never started"
    elif run.ended is not None:
        end_id = str(run.ended.get("event_id", ""))
        if not build.status.ended and not redis.events_to_gateway.has_event(end_id):
            kind, why = RepairKind.END, "ended in its checkpoints, not in its row"
    elif run.last_kind == "sleep":
        if not _sleep_busy(build, redis):
            kind, why = RepairKind.SLEEP, "asleep, not in the wake set"
    elif run.last_kind in _MID_RUN and not _run_busy(build, redis):
        kind, why = RepairKind.WORK, "running, nobody drives it"
    return None if kind is None else Repair(kind, build.build_id, marker, why)


def _request_busy(build: BuildFacts, redis: RedisView) -> bool:
    """Its request is on its way (outbox, stream) or its context is (or a runner has it)."""
    bid = build.build_id
    return (
        build.request_in_outbox
        or bid in redis.leased
        or redis.requests.has_event(requested_event_id(bid))
        or redis.requests.has_build(bid, _REQUESTED)
        or redis.work.has_build(bid, _CONTEXT_READY)
        # Refused (the project gone, the plan unknown): its end is on its way.
        or redis.events_to_gateway.has_build(bid, "build.failed")
    )


def _sleep_busy(build: BuildFacts, redis: RedisView) -> bool:
    """Something will wake it: the wake set holds it, a wake or a runner has it, or its sleep
    event has yet to reach the budget service."""
    bid = build.build_id
    sleeping_event = str(((build.run and build.run.sleeping) or {}).get("event_id", ""))
    return (
        redis.sleeping is None
        or bid in redis.sleeping
        or bid in redis.leased
        or redis.signals.has_build(bid, _WAKE)
        or redis.work.has_build(bid, _CONTEXT_READY)
        or (bool(sleeping_event) and redis.events_to_budget.has_event(sleeping_event))
    )


def _run_busy(build: BuildFacts, redis: RedisView) -> bool:
    """A runner drives it, or has work of it pending (a start, a wake, a cancel)."""
    bid = build.build_id
    return (
        bid in redis.leased
        or redis.work.has_build(bid, _CONTEXT_READY)
        or redis.signals.has_build(bid, _WAKE)
        or redis.control.has_build(bid)
    )


def _cancel_missing(build: BuildFacts, redis: RedisView) -> bool:
    """A cancelled build whose run may go on without knowing."""
    run = build.run
    bid = build.build_id
    if run is not None and run.ended is not None:
        return False  # the run ended (cancelled, or otherwise first)
    if run is None and not (
        bid in redis.leased
        or redis.requests.has_build(bid, _REQUESTED)
        or redis.work.has_build(bid, _CONTEXT_READY)
    ):
        return False  # it never started and nothing will start it
    return bid not in redis.cancel_flags and not redis.control.has_build(bid)
