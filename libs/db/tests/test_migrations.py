"""Migrations: from an empty database to head and back, and the models they make."""

from __future__ import annotations

import asyncio

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from cofounder_db.engine import create_engine
from cofounder_db.migrate import alembic_config, upgrade
from cofounder_db.models import all_metadata
from cofounder_testing.databases import empty_database

pytestmark = pytest.mark.integration

TABLES = {
    "users",
    "projects",
    "artifacts",
    "understanding_sessions",
    "builds",
    "outbox",
    "processed_events",
    "agent_checkpoints",
    "build_versions",
    "budget_ledger",
    "budget_topups",
    "user_active_builds",
    "alembic_version",
}


def _tables_and_drift(url: str) -> tuple[set[str], list[object]]:
    async def go() -> tuple[set[str], list[object]]:
        engine = create_engine(url)

        def check(conn: Connection) -> tuple[set[str], list[object]]:
            tables = set(inspect(conn).get_table_names())
            drift = compare_metadata(MigrationContext.configure(conn), all_metadata())
            return tables, list(drift)

        async with engine.connect() as conn:
            result = await conn.run_sync(check)
        await engine.dispose()
        return result

    return asyncio.run(go())


def test_upgrade_head_from_an_empty_postgres_database_matches_the_models(
    database_url: str,
) -> None:
    with empty_database(database_url) as url:
        upgrade(url)
        tables, drift = _tables_and_drift(url)
        assert tables == TABLES
        assert drift == [], "models and migrations disagree: add a migration"
        command.downgrade(alembic_config(url), "base")
        tables, _ = _tables_and_drift(url)
        assert tables == {"alembic_version"}
