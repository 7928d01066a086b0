"""Budgets through the gateway: a founder's usage and today's budget, a build's usage; admins
read any user's, top users up and change their plan. The reads and writes are ``usage.py``'s."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cofounder_gateway import usage
from cofounder_gateway.deps import CurrentUser, EngineDep, GatewayDep, RelayDep, SettingsDep
from cofounder_gateway.inputs import BuildId, UserId
from cofounder_gateway.problems import problem_responses
from cofounder_gateway.routes.admin import (
    BAD_TIER,
    NO_USER,
    WRITE_FOR_USER,
    admin_routes,
    require_known_tier,
)
from cofounder_gateway.routes.builds import YOUR_BUILD
from cofounder_gateway.usage import BuildUsage, TierChange, TierOut, TopUp, TopUpAccepted, UserUsage

__all__ = ["admin_router", "router"]

_Days = Annotated[int, Query(ge=1, le=92, description="How many days back, today included.")]

#: The founder's routes: ``/usage``, ``/builds/{id}/usage``.
router = APIRouter(tags=["usage"])
#: The admin's, under ``/admin`` behind the admin token.
admin_router = admin_routes()


@router.get(
    "/usage",
    name="get_usage",
    response_model=UserUsage,
    responses=problem_responses(
        401, 404, 422, s404="The token's user does not exist (type: user_not_found)"
    ),
)
async def my_usage(user: CurrentUser, gw: GatewayDep, days: _Days = 7) -> UserUsage:
    """Your spend per day and today's budget."""
    return await usage.user_usage(gw.engine, gw.redis, gw.settings, user, days=days)


@router.get(
    "/builds/{build_id}/usage",
    name="get_build_usage",
    response_model=BuildUsage,
    responses=YOUR_BUILD,
)
async def my_build_usage(build_id: BuildId, user: CurrentUser, engine: EngineDep) -> BuildUsage:
    """What one of your builds spent, by model."""
    return await usage.build_usage(engine, user, build_id)


@admin_router.get(
    "/users/{user_id}/usage",
    name="admin_get_user_usage",
    response_model=UserUsage,
    responses=problem_responses(404, 422, s404=NO_USER),
)
async def usage_of(user_id: UserId, gw: GatewayDep, days: _Days = 7) -> UserUsage:
    """A user's spend per day and today's budget."""
    return await usage.user_usage(gw.engine, gw.redis, gw.settings, user_id, days=days)


@admin_router.get(
    "/users/{user_id}/builds/{build_id}/usage",
    name="admin_get_user_build_usage",
    response_model=BuildUsage,
    responses=problem_responses(
        404, 422, s404="No such build of the user's (type: build_not_found)"
    ),
)
async def build_usage_of(user_id: UserId, build_id: BuildId, engine: EngineDep) -> BuildUsage:
    """What a user's build spent, by model."""
    return await usage.build_usage(engine, user_id, build_id)


@admin_router.post(
    "/users/{user_id}/top-ups",
    name="admin_top_up",
    status_code=202,
    response_model=TopUpAccepted,
    responses=WRITE_FOR_USER,
)
async def top_up(user_id: UserId, body: TopUp, engine: EngineDep, relay: RelayDep) -> TopUpAccepted:
    """Grant extra budget, usable at once; the user's sleeping builds wake."""
    event_id = await usage.grant_top_up(
        engine, user_id, amount_micros=body.amount_micros, note=body.note
    )
    relay.poke()
    return TopUpAccepted(id=event_id, user_id=user_id, amount_micros=body.amount_micros)


@admin_router.put(
    "/users/{user_id}/tier",
    name="admin_change_tier",
    response_model=TierOut,
    responses=problem_responses(400, 404, 413, 422, s404=NO_USER, s422=BAD_TIER),
)
async def change_tier(
    user_id: UserId, body: TierChange, engine: EngineDep, settings: SettingsDep, relay: RelayDep
) -> TierOut:
    """Move a user to another plan; an upgrade wakes their sleeping builds."""
    require_known_tier(settings, body.tier)
    previous = await usage.set_tier(engine, user_id, body.tier)
    if previous != body.tier:
        relay.poke()
    return TierOut(user_id=user_id, tier=body.tier, previous_tier=previous)
