"""The events the gateway asks the pipeline with, under ids derived from the build.

A build is requested once and cancelled at most once, so each request's ``event_id`` is a
function of the build id: the reconciler (``reconcile/``) re-publishes a request Redis forgot,
from the build's row alone, under the id the consumers saw (or will see) the first time, and
they absorb the repeat. The build id is a UUIDv7, so these ids sort by the build's creation time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from cofounder_contracts import (
    BuildCancelRequested,
    BuildRequested,
    BuildStatus,
    BuildStatusChanged,
    Envelope,
    derived_event_id,
    envelope,
    follow_up,
)

__all__ = [
    "PRODUCER",
    "build_requested",
    "cancel_requested",
    "cancelled",
    "queued",
    "requested_event_id",
]

PRODUCER: Final = "gateway"
_REQUESTED: Final = "build.requested"
_CANCEL_REQUESTED: Final = "build.cancel_requested"


def requested_event_id(build_id: str) -> str:
    """The id of the build's ``build.requested``."""
    return derived_event_id(build_id, _REQUESTED)


def _envelope(kind: str, *, build_id: str, project_id: str, user_id: str) -> Envelope:
    """The envelope of the gateway's request ``kind`` about the build, its id derived from the
    build id (one such request per build)."""
    return envelope(
        build_id=build_id, project_id=project_id, user_id=user_id, producer=PRODUCER, kind=kind
    )


def build_requested(
    *, build_id: str, project_id: str, user_id: str, goal: str, occurred_at: datetime
) -> BuildRequested:
    """The build's request: what the context assembler starts from."""
    return BuildRequested(
        **_envelope(_REQUESTED, build_id=build_id, project_id=project_id, user_id=user_id),
        goal=goal,
        occurred_at=occurred_at,
    )


def queued(request: BuildRequested) -> BuildStatusChanged:
    """The status a new build starts in, caused by its request."""
    return _status(request, BuildStatus.QUEUED)


def cancelled(request: BuildCancelRequested) -> BuildStatusChanged:
    """The status a cancelled build takes at once, caused by the owner's cancel."""
    return _status(request, BuildStatus.CANCELLED, reason="cancelled by the user")


def _status(
    request: BuildRequested | BuildCancelRequested, status: BuildStatus, reason: str | None = None
) -> BuildStatusChanged:
    # Derived from the build id (one such status per build), caused by the request.
    return BuildStatusChanged(
        **follow_up(
            request, producer=PRODUCER, kind=f"status:{status}", derive_from=request.build_id
        ),
        status=status,
        reason=reason,
        occurred_at=request.occurred_at,
    )


def cancel_requested(
    *, build_id: str, project_id: str, user_id: str, occurred_at: datetime
) -> BuildCancelRequested:
    """The owner's cancel, for the agent runner (the row says cancelled already)."""
    return BuildCancelRequested(
        **_envelope(_CANCEL_REQUESTED, build_id=build_id, project_id=project_id, user_id=user_id),
        requested_by=user_id,
        occurred_at=occurred_at,
    )
