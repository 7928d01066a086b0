"""A founder's builds: start one, read them, cancel one (their events: ``events.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from cofounder_contracts import BuildStatus
from cofounder_gateway import builds
from cofounder_gateway.deps import CurrentUser, EngineDep, GatewayDep, RelayDep
from cofounder_gateway.inputs import BuildId, IdempotencyKey, PageCursor, ProjectId
from cofounder_gateway.problems import BAD_CURSOR, NO_BUILD, ApiError, problem_responses
from cofounder_gateway.schemas import (
    EXAMPLE_BUILD_ID,
    BuildList,
    BuildOut,
    StartBuild,
    build_json,
    build_out,
)

__all__ = ["YOUR_BUILD", "router"]

router = APIRouter(tags=["builds"])
#: The problems of a read of one of the founder's builds (the build, its usage).
YOUR_BUILD = problem_responses(401, 404, 422, s404=NO_BUILD)


@router.post(
    "/projects/{project_id}/builds",
    name="start_build",
    status_code=202,
    response_model=BuildOut,
    responses={
        202: {
            "description": "Queued: the build, with links to follow and cancel it",
            "headers": {
                "Location": {
                    "description": "The build's URL (GET it for its status).",
                    "required": True,
                    "schema": {"type": "string", "example": "/v1/builds/" + EXAMPLE_BUILD_ID},
                }
            },
        },
        **problem_responses(
            400,
            401,
            404,
            409,
            413,
            422,
            429,
            503,
            s404="No such project of yours (type: project_not_found)",
            s409="The Idempotency-Key was used for another request (type: idempotency_key_reused)",
            s429="Too many active builds for the plan (type: too_many_active_builds)",
            s503="Autonomous builds are switched off (type: autonomous_agent_off)",
        ),
    },
)
async def start_build(
    project_id: ProjectId,
    body: StartBuild,
    user: CurrentUser,
    # The whole Gateway, not its four parts: each dependency costs a few microseconds on every
    # request, and this route's throughput is benchmarked (docs/adr/0002, "Performance").
    gw: GatewayDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Queue a build of the project; 202 with its id and links."""
    if not gw.settings.autonomous_agent:
        raise ApiError(
            503, "autonomous_agent_off", "autonomous builds are switched off on this deployment"
        )
    build, created = await builds.create_build(
        gw.engine,
        user_id=user,
        project_id=project_id,
        goal=body.goal,
        idempotency_key=idempotency_key,
        limits=gw.settings.tier_max_concurrent_builds,
        pg_pool=gw.pg_pool,
    )
    if created:
        gw.relay.poke()
    # The BuildOut body, serialised directly (response_model above documents it).
    return Response(
        build_json(build),
        status_code=202,
        media_type="application/json",
        headers={"Location": f"/v1/builds/{build.id}"},
    )


@router.get("/builds/{build_id}", name="get_build", response_model=BuildOut, responses=YOUR_BUILD)
async def get_build(build_id: BuildId, user: CurrentUser, engine: EngineDep) -> BuildOut:
    """One of your builds."""
    return build_out(await builds.get_build(engine, user_id=user, build_id=build_id))


@router.get(
    "/builds",
    name="list_builds",
    response_model=BuildList,
    responses=problem_responses(400, 401, 422, s400=BAD_CURSOR),
)
async def list_builds(
    user: CurrentUser,
    engine: EngineDep,
    status: BuildStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: PageCursor = None,
) -> BuildList:
    """Your builds, newest first."""
    items, next_cursor = await builds.list_builds(
        engine, user_id=user, status=status, limit=limit, cursor=cursor
    )
    return BuildList(items=[build_out(b) for b in items], next_cursor=next_cursor)


@router.post(
    "/builds/{build_id}/cancel",
    name="cancel_build",
    status_code=202,
    response_model=BuildOut,
    responses=problem_responses(
        401, 404, 409, 422, s404=NO_BUILD, s409="The build has ended (type: build_finished)"
    ),
)
async def cancel_build(
    build_id: BuildId, user: CurrentUser, engine: EngineDep, relay: RelayDep
) -> BuildOut:
    """Cancel a build; the agent stops between iterations."""
    build = await builds.cancel_build(engine, user_id=user, build_id=build_id)
    relay.poke()
    return build_out(build)
