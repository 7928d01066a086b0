"""Migrations: from an empty database to head and back, and the models they make."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, make_url
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
    "checkpoint_fences",
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


def driver_dsn_of(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_the_checkpoint_fences_start_at_each_builds_highest_written_generation(
    database_url: str,
) -> None:
    # 0010: a build driven before the claims existed is fenced at what its parts hold, so a
    # runner of the previous release that wrote generation 3 keeps every older drive out.
    with empty_database(database_url) as url:
        command.upgrade(alembic_config(url), "0009")

        async def seed() -> None:
            conn = await asyncpg.connect(driver_dsn_of(url))
            try:
                await conn.executemany(
                    "insert into agent_checkpoints (build_id, seq, generation, kind, parts, "
                    "iteration, tool_calls, input_tokens, output_tokens, created_at) "
                    "values ($1, $2, $3, 'turn', '{}', 0, 0, 0, 0, now())",
                    [("b-1", 1, 1), ("b-1", 2, 3), ("b-1", 3, 2), ("b-2", 1, 7)],
                )
            finally:
                await conn.close()

        async def fences() -> dict[str, int]:
            conn = await asyncpg.connect(driver_dsn_of(url))
            try:
                rows = await conn.fetch("select build_id, generation from checkpoint_fences")
            finally:
                await conn.close()
            return {row["build_id"]: row["generation"] for row in rows}

        asyncio.run(seed())
        upgrade(url)
        assert asyncio.run(fences()) == {"b-1": 3, "b-2": 7}
