"""Reading the one row a request names: its value, or the 404 problem that it is not there."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from cofounder_gateway.problems import ApiError

__all__ = ["not_found", "one_or_404"]

_T = TypeVar("_T")


def not_found(what: str, key: str) -> ApiError:
    """404 ``{what}_not_found``: there is no ``what`` ``key`` (or none of the caller's)."""
    return ApiError(404, f"{what}_not_found", f"no {what} {key}")


async def one_or_404(
    conn: AsyncConnection | AsyncSession, query: Select[_T], what: str, key: str
) -> _T:
    """The first value ``query`` selects; else :func:`not_found`, also for a row that is not
    the caller's (its existence is not shown)."""
    found: _T | None = (await conn.execute(query)).scalars().first()
    if found is None:
        raise not_found(what, key)
    return found
