"""Each user's count of builds that have not ended (``user_active_builds``), which the plan's
limit of concurrent builds is checked against.

A slot is taken in the statement that inserts the build (``builds_pg``), and given back exactly
once, in the transaction that moves the build to a terminal status: the projection's, or the
cancel's (:func:`give_back`). The state machine applies a terminal status once, so a build
returns its slot once.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from cofounder_db.models import UserActiveBuilds

__all__ = ["give_back"]


async def give_back(conn: AsyncConnection | AsyncSession, user_id: str) -> None:
    """One of ``user_id``'s builds ended."""
    await conn.execute(
        update(UserActiveBuilds)
        .where(UserActiveBuilds.user_id == user_id, UserActiveBuilds.active > 0)
        .values(active=UserActiveBuilds.active - 1)
    )
