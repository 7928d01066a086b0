"""The admin API: seeding users, projects, idea briefs and interviews without the founder-facing
product (which owns those tables in production), plus a demo data set."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_db.models import Artifact, Project, UnderstandingSession, User
from cofounder_gateway.auth import mint_token, require_admin
from cofounder_gateway.inputs import NO_NUL, Email, JsonObject, ProjectId, Text, Uuid, storable
from cofounder_gateway.problems import ApiError, problem_responses
from cofounder_gateway.settings import GatewaySettings

__all__ = ["DEMO", "admin_router", "admin_routes", "require_known_tier"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Lengths are the columns' (cofounder_db.models) or, for text and JSON columns, a sane bound.
class NewUser(_Strict):
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
    owner_id: Uuid
    name: Text = Field(min_length=1, max_length=200)
    stage: Text = Field(default="understanding", max_length=40)


class IdeaBrief(_Strict):
    content: JsonObject


class Question(_Strict):
    id: Text = Field(min_length=1, max_length=100)
    text: Text = Field(min_length=1, max_length=2_000)


class NewSession(_Strict):
    questions: list[Question] = Field(max_length=200)
    answers: dict[Text, Text] = Field(default_factory=dict, description="Answers by question id.")


class Created(BaseModel):
    id: str


class Seeded(BaseModel):
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


def _now() -> datetime:
    return datetime.now(UTC)


async def _admin_only(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    token: str = request.app.state.gw.settings.admin_token.get_secret_value()
    require_admin(authorization, token)


def admin_routes() -> APIRouter:
    """A router under ``/admin`` whose every route needs the admin token."""
    return APIRouter(
        prefix="/admin",
        dependencies=[Depends(_admin_only)],
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


_NO_PROJECT = "No such project (project_not_found)"


def admin_router(engine: AsyncEngine, settings: GatewaySettings) -> APIRouter:
    """Routes under ``/v1/admin``, all behind the admin token."""

    router = admin_routes()

    @router.post(
        "/users",
        status_code=201,
        response_model=Created,
        responses=problem_responses(
            400, 409, 413, 422, s409="A user has this email (type: email_taken)"
        ),
    )
    async def create_user(body: NewUser) -> Created:
        require_known_tier(settings, body.tier)
        user_id = str(uuid.uuid4())
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    insert(User).values(
                        id=user_id,
                        email=body.email,
                        tier=body.tier,
                        suspended=body.suspension_reason is not None,
                        suspension_reason=body.suspension_reason,
                        created_at=_now(),
                    )
                )
        except IntegrityError:
            raise ApiError(409, "email_taken", f"a user with email {body.email} exists") from None
        return Created(id=user_id)

    @router.post(
        "/projects",
        status_code=201,
        response_model=Created,
        responses=problem_responses(400, 404, 413, 422, s404="No such user (user_not_found)"),
    )
    async def create_project(body: NewProject) -> Created:
        project_id = str(uuid.uuid4())
        async with engine.begin() as conn:
            if (
                await conn.execute(select(User.id).where(User.id == body.owner_id))
            ).first() is None:
                raise ApiError(404, "user_not_found", f"no user {body.owner_id}")
            await conn.execute(
                insert(Project).values(
                    id=project_id,
                    owner_id=body.owner_id,
                    name=body.name,
                    stage=body.stage,
                    created_at=_now(),
                    updated_at=_now(),
                )
            )
        return Created(id=project_id)

    async def _project_exists(project_id: str) -> None:
        async with engine.connect() as conn:
            if (
                await conn.execute(select(Project.id).where(Project.id == project_id))
            ).first() is None:
                raise ApiError(404, "project_not_found", f"no project {project_id}")

    @router.put(
        "/projects/{project_id}/idea-brief",
        response_model=Created,
        responses=problem_responses(400, 404, 413, 422, s404=_NO_PROJECT),
    )
    async def put_idea_brief(project_id: ProjectId, body: IdeaBrief) -> Created:
        await _project_exists(project_id)
        async with engine.begin() as conn:
            found = (
                await conn.execute(
                    select(Artifact.id).where(
                        Artifact.project_id == project_id, Artifact.artifact_type == "idea_brief"
                    )
                )
            ).first()
            if found is None:
                artifact_id = str(uuid.uuid4())
                await conn.execute(
                    insert(Artifact).values(
                        id=artifact_id,
                        project_id=project_id,
                        artifact_type="idea_brief",
                        current_content=body.content,
                        version=1,
                        updated_at=_now(),
                    )
                )
            else:
                artifact_id = found.id
                await conn.execute(
                    update(Artifact)
                    .where(Artifact.id == artifact_id)
                    .values(
                        current_content=body.content,
                        version=Artifact.version + 1,
                        updated_at=_now(),
                    )
                )
        return Created(id=artifact_id)

    @router.post(
        "/projects/{project_id}/understanding-sessions",
        status_code=201,
        response_model=Created,
        responses=problem_responses(400, 404, 413, 422, s404=_NO_PROJECT),
    )
    async def create_session(project_id: ProjectId, body: NewSession) -> Created:
        await _project_exists(project_id)
        session_id = str(uuid.uuid4())
        async with engine.begin() as conn:
            await conn.execute(
                insert(UnderstandingSession).values(
                    id=session_id,
                    project_id=project_id,
                    questions=[q.model_dump() for q in body.questions],
                    answers=body.answers,
                    created_at=_now(),
                )
            )
        return Created(id=session_id)

    @router.post("/demo", status_code=201, response_model=Seeded)
    async def seed_demo() -> Seeded:
        """A demo founder with a project, an idea brief and an interview, and their token."""
        user = await create_user(NewUser(email=f"demo-{uuid.uuid4().hex[:8]}@example.com"))
        project = await create_project(NewProject(owner_id=user.id, name=DEMO["name"]))
        await put_idea_brief(project.id, IdeaBrief(content=DEMO["brief"]))
        await create_session(
            project.id,
            NewSession(
                questions=[Question(**q) for q in DEMO["questions"]], answers=DEMO["answers"]
            ),
        )
        return Seeded(
            user_id=user.id,
            project_id=project.id,
            token=mint_token(settings.jwt_secret.get_secret_value(), user.id, ttl_s=24 * 3600),
        )

    return router
