"""Reading the founder's context: the product tables this service reads and never writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from cofounder_db.models import Artifact, Project, UnderstandingSession, User

__all__ = ["FounderContext", "load_context"]

IDEA_BRIEF = "idea_brief"


@dataclass(frozen=True, slots=True)
class FounderContext:
    """What the database knows of a project that the agent needs."""

    tier: str
    suspended: bool
    suspension_reason: str | None
    idea_brief: dict[str, Any]
    questions: list[Any]
    answers: dict[str, Any]


async def load_context(conn: AsyncConnection, project_id: str) -> FounderContext | None:
    """The project's owner plan, idea brief and latest interview; None when the project is gone.

    Two statements: the project with its owner and brief (outer join: no brief is ``{}``), then
    the latest session by ``created_at`` (ties broken by id, so the choice is stable).
    """
    row = (
        await conn.execute(
            select(User.tier, User.suspended, User.suspension_reason, Artifact.current_content)
            .select_from(Project)
            .join(User, User.id == Project.owner_id)
            .outerjoin(
                Artifact,
                (Artifact.project_id == Project.id) & (Artifact.artifact_type == IDEA_BRIEF),
            )
            .where(Project.id == project_id)
        )
    ).first()
    if row is None:
        return None
    session = (
        await conn.execute(
            select(UnderstandingSession.questions, UnderstandingSession.answers)
            .where(UnderstandingSession.project_id == project_id)
            .order_by(UnderstandingSession.created_at.desc(), UnderstandingSession.id.desc())
            .limit(1)
        )
    ).first()
    brief = row.current_content if isinstance(row.current_content, dict) else {}
    return FounderContext(
        tier=row.tier,
        suspended=row.suspended,
        suspension_reason=row.suspension_reason,
        idea_brief=brief,
        questions=list(session.questions or []) if session else [],
        answers=dict(session.answers or {}) if session else {},
    )
