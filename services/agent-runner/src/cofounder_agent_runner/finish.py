"""After the agent finishes: the project's next build version, and the post-build steps whose
failures are logged and not fatal (the "MVP built" project transition)."""

from __future__ import annotations

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_db.models import BuildVersion, Project

__all__ = ["assign_build_version", "mark_mvp_built"]

_ATTEMPTS = 5


async def assign_build_version(engine: AsyncEngine, *, project_id: str, build_id: str) -> int:
    """The version this build gives its project: 1 + the project's highest, once per build
    (asking again returns the same number; two builds racing get different ones)."""
    for _ in range(_ATTEMPTS):
        try:
            async with engine.begin() as conn:
                mine = (
                    await conn.execute(
                        select(BuildVersion.version).where(BuildVersion.build_id == build_id)
                    )
                ).scalar()
                if mine is not None:
                    return int(mine)
                top = (
                    await conn.execute(
                        select(func.max(BuildVersion.version)).where(
                            BuildVersion.project_id == project_id
                        )
                    )
                ).scalar()
                version = int(top or 0) + 1
                await conn.execute(
                    insert(BuildVersion).values(
                        project_id=project_id, version=version, build_id=build_id
                    )
                )
                return version
        except IntegrityError:
            continue  # another build took this number (or this build, concurrently): again
    raise RuntimeError(f"could not assign a build version for project {project_id}")


async def mark_mvp_built(engine: AsyncEngine, *, project_id: str) -> bool:
    """Move the project to ``mvp_built``; False when there is no such project."""
    async with engine.begin() as conn:
        result = await conn.execute(
            update(Project).where(Project.id == project_id).values(stage="mvp_built")
        )
    return bool(result.rowcount)
