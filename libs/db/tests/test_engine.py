"""Engines: PostgreSQL on asyncpg, and nothing else (a SQLite URL is refused, saying so)."""

from __future__ import annotations

import pytest

from cofounder_db.engine import async_url, create_engine

NOT_POSTGRESQL = "DATABASE_URL must be a PostgreSQL URL (postgresql://...)"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@db:5432/x", "postgresql+asyncpg://u:p@db:5432/x"),
        ("postgres://u@db/x", "postgresql+asyncpg://u@db/x"),
        ("postgresql+asyncpg://u@db/x", "postgresql+asyncpg://u@db/x"),
    ],
)
def test_postgresql_urls_get_the_asyncpg_driver(url: str, expected: str) -> None:
    assert async_url(url) == expected


@pytest.mark.parametrize(
    "url", ["sqlite:///.cofounder/cofounder.db", "sqlite+aiosqlite:///x.db", "sqlite://"]
)
def test_a_sqlite_url_is_refused_with_the_reason(url: str) -> None:
    with pytest.raises(ValueError, match="SQLite is no longer supported") as refused:
        create_engine(url)
    assert str(refused.value) == f"{NOT_POSTGRESQL}; SQLite is no longer supported"


@pytest.mark.parametrize(
    "url", ["mysql://u:secret@db/x", "postgresql+psycopg://u:secret@db/x", "u:secret@db/x", ""]
)
def test_other_urls_are_refused_without_showing_them(url: str) -> None:
    with pytest.raises(ValueError, match="must be a PostgreSQL URL") as refused:
        create_engine(url)
    assert str(refused.value) == NOT_POSTGRESQL
    assert "secret" not in str(refused.value)
