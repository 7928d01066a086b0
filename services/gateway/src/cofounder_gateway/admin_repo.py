"""The admin API's writes: users, projects, idea briefs and interviews, which the founder-facing
product owns in production (``routes/admin.py`` seeds them through these).

Each function takes the engine and plain values, returns the new row's id, and raises
:class:`ApiError` when a row it needs is missing or a unique value is taken, as ``builds.py``
does.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cofounder_db.models import Artifact, Base, Project, UnderstandingSession, User
from cofounder_gateway.problems import ApiError
from cofounder_gateway.rows import one_or_404

__all__ = ["create_project", "create_session", "create_user", "put_idea_brief"]

#: The ``artifact_type`` of a project's idea brief (one per project).
IDEA_BRIEF = "idea_brief"


def _now() -> datetime:
    return datetime.now(UTC)


async def _insert(conn: AsyncConnection, table: type[Base], **values: Any) -> str:
    """Insert a row of ``table`` with these values under a new id; the id."""
    row_id = str(uuid.uuid4())
    await conn.execute(insert(table).values(id=row_id, **values))
    return row_id


async def create_user(
    engine: AsyncEngine, *, email: str, tier: str, suspension_reason: str | None
) -> str:
    """A new user's id; suspended when ``suspension_reason`` is set. 409 ``email_taken``."""
    try:
        async with engine.begin() as conn:
            return await _insert(
                conn,
                User,
                email=email,
                tier=tier,
                suspended=suspension_reason is not None,
                suspension_reason=suspension_reason,
                created_at=_now(),
            )
    except IntegrityError:
        raise ApiError(409, "email_taken", f"a user with email {email} exists") from None


async def create_project(engine: AsyncEngine, *, owner_id: str, name: str, stage: str) -> str:
    """A new project's id. 404 ``user_not_found`` when there is no user ``owner_id``."""
    async with engine.begin() as conn:
        await one_or_404(conn, select(User.id).where(User.id == owner_id), "user", owner_id)
        now = _now()
        return await _insert(
            conn, Project, owner_id=owner_id, name=name, stage=stage, created_at=now, updated_at=now
        )


async def _project_exists(engine: AsyncEngine, project_id: str) -> None:
    async with engine.connect() as conn:
        await one_or_404(
            conn, select(Project.id).where(Project.id == project_id), "project", project_id
        )


async def put_idea_brief(engine: AsyncEngine, *, project_id: str, content: dict[str, Any]) -> str:
    """The id of the project's idea brief, created (version 1) or replaced (next version).
    404 ``project_not_found``."""
    await _project_exists(engine, project_id)
    async with engine.begin() as conn:
        found = (
            await conn.execute(
                select(Artifact.id).where(
                    Artifact.project_id == project_id, Artifact.artifact_type == IDEA_BRIEF
                )
            )
        ).first()
        if found is None:
            return await _insert(
                conn,
                Artifact,
                project_id=project_id,
                artifact_type=IDEA_BRIEF,
                current_content=content,
                version=1,
                updated_at=_now(),
            )
        artifact_id = str(found.id)
        await conn.execute(
            update(Artifact)
            .where(Artifact.id == artifact_id)
            .values(current_content=content, version=Artifact.version + 1, updated_at=_now())
        )
    return artifact_id


async def create_session(
    engine: AsyncEngine,
    *,
    project_id: str,
    questions: Sequence[Mapping[str, str]],
    answers: Mapping[str, str],
) -> str:
    """A new understanding session's id: ``questions`` (each ``{"id", "text"}``) and the
    ``answers`` by question id. 404 ``project_not_found``."""
    await _project_exists(engine, project_id)
    async with engine.begin() as conn:
        return await _insert(
            conn,
            UnderstandingSession,
            project_id=project_id,
            questions=[dict(q) for q in questions],
            answers=dict(answers),
            created_at=_now(),
        )
