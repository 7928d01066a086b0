"""Throwaway databases on the test PostgreSQL server: created empty, migrated, dropped."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

__all__ = ["empty_database", "migrated_database"]


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def empty_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server of ``server_url``; yield its URL; drop it after."""
    name = f"cofounder_test_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(server_url)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield url
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def migrated_database(server_url: str) -> Iterator[str]:
    """:func:`empty_database`, migrated to head: a system of record of the caller's own."""
    from cofounder_db.migrate import upgrade

    with empty_database(server_url) as url:
        upgrade(url)
        yield url
