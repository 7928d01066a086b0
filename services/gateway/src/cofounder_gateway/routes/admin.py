"""The admin API: seeding users, projects, idea briefs and interviews without the founder-facing
product (which owns those tables in production), plus a demo data set. The writes are
``admin_repo.py``'s."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.types import DecoratedCallable
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from cofounder_gateway import admin_repo
from cofounder_gateway.auth import mint_token
from cofounder_gateway.deps import EngineDep, SettingsDep, admin_only
from cofounder_gateway.inputs import NO_NUL, Email, JsonObject, ProjectId, Text, Uuid, storable
from cofounder_gateway.problems import ApiError, problem_responses
from cofounder_gateway.settings import GatewaySettings

__all__ = [
    "BAD_TIER",
    "DEMO",
    "NO_USER",
    "WRITE_FOR_USER",
    "admin_routes",
    "require_known_tier",
    "router",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _example(*examples: Any) -> ConfigDict:
    """A strict model's config with these OpenAPI examples."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


_ID = "0195a0e1-1b2c-7d3e-8f4a-5b6c7d8e9f0a"


# Lengths are the columns' (cofounder_db.models) or, for text and JSON columns, a sane bound.
class NewUser(_Strict):
    model_config = _example({"email": "ada@example.com", "tier": "founder"})

    email: Email
    tier: Text = Field(default="bootstrapper", max_length=40)
    # The length inside the type: on the optional field pydantic would word it as "items".
    suspension_reason: (
        Annotated[
            str, StringConstraints(max_length=2_000, pattern=NO_NUL), BeforeValidator(storable)
        ]
        | None
    ) = Field(default=None, description="Set to suspend the user.")


class NewProject(_Strict):
    model_config = _example({"owner_id": _ID, "name": "PlantPal"})

    owner_id: Uuid
    name: Text = Field(min_length=1, max_length=200)
    stage: Text = Field(default="understanding", max_length=40)


class IdeaBrief(_Strict):
    model_config = _example(
        {"content": {"name": "PlantPal", "one_liner": "Never let a houseplant die again."}}
    )

    content: JsonObject


class Question(_Strict):
    id: Text = Field(min_length=1, max_length=100)
    text: Text = Field(min_length=1, max_length=2_000)


class NewSession(_Strict):
    model_config = _example(
        {
            "questions": [{"id": "core", "text": "What is the one thing v1 must do?"}],
            "answers": {"core": "Show which plants need water today"},
        }
    )

    questions: list[Question] = Field(max_length=200)
    answers: dict[Text, Text] = Field(default_factory=dict, description="Answers by question id.")


class Created(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"id": _ID}]})

    id: str


class Seeded(BaseModel):
    """A demo founder: their user id, their project's id and a token (24 hours)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "0195a0e0-4d5e-7f6a-8b7c-9d0e1f2a3b4c",
                    "project_id": _ID,
                    "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOi...",
                }
            ]
        }
    )

    user_id: str
    project_id: str
    token: str


DEMO: dict[str, Any] = {
    "name": "PlantPal",
    "brief": {
        "name": "PlantPal",
        "one_liner": "Never let a houseplant die again.",
        "problem": "Busy renters forget to water their plants.",
        "audience": "Renters aged 25-40 with a few houseplants",
        "features": [
            "add plants with a watering interval",
            "see what needs water today",
            "mark a plant as watered",
        ],
    },
    "questions": [
        {"id": "audience", "text": "Who is the app for?"},
        {"id": "core", "text": "What is the one thing v1 must do?"},
        {"id": "platform", "text": "Web, mobile or both?"},
        {"id": "monetisation", "text": "How will it make money?"},
    ],
    "answers": {
        "audience": "Busy renters with a few houseplants",
        "core": "Show which plants need water today",
        "platform": "A web app that works on phones",
    },
}


def admin_routes() -> APIRouter:
    """A router under ``/admin`` whose every route needs the admin token (this module's
    :data:`router`, and the admin's usage routes in ``usage.py``)."""
    return APIRouter(
        prefix="/admin",
        dependencies=[Depends(admin_only)],
        tags=["admin"],
        responses=problem_responses(401),
    )


def require_known_tier(settings: GatewaySettings, tier: str) -> None:
    """422 ``unknown_tier`` (naming the configured plans) unless ``tier`` is one of them."""
    known = sorted(settings.plans_monthly_allowance_micros)
    if tier not in known:
        raise ApiError(
            422,
            "unknown_tier",
            f"tier must be one of {', '.join(known)}",
            field="tier",
            tiers=known,
            errors=[
                {
                    "field": "tier",
                    "in": "body",
                    "message": f"must be one of {', '.join(known)}",
                    "kind": "unknown_tier",
                }
            ],
        )


_NO_PROJECT = "No such project (type: project_not_found)"
NO_USER = "No such user (type: user_not_found)"
#: The problems of a write about a user (a project) that may not exist.
WRITE_FOR_USER = problem_responses(400, 404, 413, 422, s404=NO_USER)
_WRITE_FOR_PROJECT = problem_responses(400, 404, 413, 422, s404=_NO_PROJECT)
#: The 422 of a route that takes a tier.
BAD_TIER = (
    "Invalid input, every refused field named in errors (type: invalid_request), or a tier "
    "no plan has (type: unknown_tier)"
)

#: Routes under ``/v1/admin``, all behind the admin token.
router = admin_routes()


def _writes(
    path: str, name: str, responses: dict[int | str, dict[str, Any]], *, method: str = "POST"
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """A write answering the row's id (:class:`Created`): ``POST`` creates the row (201),
    ``PUT`` creates or replaces it (200)."""
    status = 201 if method == "POST" else 200
    return router.api_route(
        path,
        methods=[method],
        name=name,
        status_code=status,
        response_model=Created,
        responses=responses,
    )


@_writes(
    "/users",
    "admin_create_user",
    problem_responses(
        400, 409, 413, 422, s409="A user has this email (type: email_taken)", s422=BAD_TIER
    ),
)
async def create_user(body: NewUser, engine: EngineDep, settings: SettingsDep) -> Created:
    require_known_tier(settings, body.tier)
    user_id = await admin_repo.create_user(
        engine, email=body.email, tier=body.tier, suspension_reason=body.suspension_reason
    )
    return Created(id=user_id)


@_writes("/projects", "admin_create_project", WRITE_FOR_USER)
async def create_project(body: NewProject, engine: EngineDep) -> Created:
    project_id = await admin_repo.create_project(
        engine, owner_id=body.owner_id, name=body.name, stage=body.stage
    )
    return Created(id=project_id)


@_writes(
    "/projects/{project_id}/idea-brief", "admin_put_idea_brief", _WRITE_FOR_PROJECT, method="PUT"
)
async def put_idea_brief(project_id: ProjectId, body: IdeaBrief, engine: EngineDep) -> Created:
    artifact_id = await admin_repo.put_idea_brief(
        engine, project_id=project_id, content=body.content
    )
    return Created(id=artifact_id)


@_writes(
    "/projects/{project_id}/understanding-sessions", "admin_create_interview", _WRITE_FOR_PROJECT
)
async def create_session(project_id: ProjectId, body: NewSession, engine: EngineDep) -> Created:
    session_id = await admin_repo.create_session(
        engine,
        project_id=project_id,
        questions=[q.model_dump() for q in body.questions],
        answers=body.answers,
    )
    return Created(id=session_id)


@router.post("/demo", name="admin_seed_demo", status_code=201, response_model=Seeded)
async def seed_demo(engine: EngineDep, settings: SettingsDep) -> Seeded:
    """A demo founder with a project, an idea brief and an interview, and their token."""
    user = await create_user(
        NewUser(email=f"demo-{uuid.uuid4().hex[:8]}@example.com"), engine, settings
    )
    project = await create_project(NewProject(owner_id=user.id, name=DEMO["name"]), engine)
    await put_idea_brief(project.id, IdeaBrief(content=DEMO["brief"]), engine)
    await create_session(
        project.id,
        NewSession(questions=[Question(**q) for q in DEMO["questions"]], answers=DEMO["answers"]),
        engine,
    )
    return Seeded(
        user_id=user.id,
        project_id=project.id,
        token=mint_token(settings.jwt_secret.get_secret_value(), user.id, ttl_s=24 * 3600),
    )
