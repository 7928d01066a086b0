"""The operator's list of builds across founders (``GET /v1/admin/builds``, admin token): what
the operator view of the build page (``/app/admin``) shows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query
from pydantic import BaseModel

from cofounder_contracts import BuildStatus
from cofounder_gateway import builds
from cofounder_gateway.deps import EngineDep
from cofounder_gateway.inputs import PageCursor
from cofounder_gateway.problems import BAD_CURSOR, problem_responses
from cofounder_gateway.routes.admin import admin_routes
from cofounder_gateway.schemas import BuildOut, build_out

__all__ = ["OperatorBuild", "OperatorBuildList", "router"]

#: Under ``/admin``, behind the admin token.
router = admin_routes()


class OperatorBuild(BuildOut):
    """A build as an operator sees it: its founder too."""

    user_id: str
    status_changed_at: datetime | None


class OperatorBuildList(BaseModel):
    """One page of builds; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[OperatorBuild]
    next_cursor: str | None


@router.get(
    "/builds",
    response_model=OperatorBuildList,
    responses=problem_responses(400, 422, s400=BAD_CURSOR),
)
async def all_builds(
    engine: EngineDep,
    status: Annotated[
        list[BuildStatus] | None,
        Query(description="Only builds in these statuses (repeat the parameter); all if none."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: PageCursor = None,
) -> OperatorBuildList:
    """Every founder's builds, newest first: e.g. ``?status=running&status=sleeping`` for the
    active ones, ``?status=failed`` for the failures."""
    items, next_cursor = await builds.list_all_builds(
        engine, statuses=status or [], limit=limit, cursor=cursor
    )
    return OperatorBuildList(
        items=[
            OperatorBuild(
                **build_out(b).model_dump(),
                user_id=b.user_id,
                status_changed_at=b.status_changed_at,
            )
            for b in items
        ],
        next_cursor=next_cursor,
    )
