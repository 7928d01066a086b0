"""Waiting for the schema a release needs (``cofounder db wait``, the init containers), and
migrations run by several pods at once (the advisory lock)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import make_url

from cofounder_db.migrate import (
    LOCK_KEY,
    alembic_config,
    schema_state,
    upgrade,
    wait_for_schema,
)
from cofounder_testing.databases import empty_database

pytestmark = pytest.mark.integration


def _revisions(url: str) -> list[str]:
    """This release's revisions, oldest first."""
    script = ScriptDirectory.from_config(alembic_config(url))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


async def _set_version(url: str, revision: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("UPDATE alembic_version SET version_num = $1", revision)
    finally:
        await conn.close()


def test_the_schema_is_ready_at_head_or_past_it_and_not_before(database_url: str) -> None:
    with empty_database(database_url) as url:
        asyncio.run(_ready_at_head_or_past_it(url))


async def _ready_at_head_or_past_it(url: str) -> None:
    empty = await schema_state(url)
    assert (empty.ready, empty.reason) == (False, "the database has no schema yet")
    revisions = _revisions(url)
    await asyncio.to_thread(upgrade, url, revisions[-2])
    behind = await schema_state(url)
    assert not behind.ready
    assert behind.current == (revisions[-2],)
    assert "not migrated yet" in behind.reason
    assert (await schema_state(url, revisions[-2])).ready  # what older code needs
    await asyncio.to_thread(upgrade, url)
    assert (await schema_state(url)).ready
    # A later release migrated further: a revision this code does not know is past head.
    await _set_version(url, "f00dfeedbeef")
    ahead = await schema_state(url)
    assert ahead.ready
    assert "newer than this release's" in ahead.reason
    with pytest.raises(ValueError, match="no revision"):
        await schema_state(url, "0123456789ab")


def test_waiting_ends_once_another_process_migrates(database_url: str) -> None:
    with empty_database(database_url) as url:
        asyncio.run(_waits_for_another_process(url))


async def _waits_for_another_process(url: str) -> None:
    said: list[str] = []
    waiting = asyncio.create_task(
        wait_for_schema(url, timeout_s=120, interval_s=0.1, on_wait=said.append)
    )
    await asyncio.sleep(0.5)
    assert not waiting.done()
    await asyncio.to_thread(upgrade, url)
    state = await asyncio.wait_for(waiting, 60)
    assert state.ready
    # Each reason said once, not per poll (the autocommit blocks of the later migrations may
    # show a revision on the way).
    assert said[0] == "the database has no schema yet"
    assert len(said) == len(set(said)), said
    with pytest.raises(TimeoutError, match="the database does not answer"):
        await wait_for_schema("postgresql://nobody@127.0.0.1:1/none", timeout_s=0.3, interval_s=0.1)


def test_pods_migrating_at_once_take_turns(database_url: str) -> None:
    """Four processes upgrade an empty database at once: without the lock, all but one fail
    creating tables the first made (or wait forever on its concurrent index builds)."""
    with empty_database(database_url) as url:
        program = "import sys; from cofounder_db.migrate import upgrade; upgrade(sys.argv[1])"
        runs = [
            subprocess.Popen(
                [sys.executable, "-c", program, url],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(4)
        ]
        outcomes = [(run.wait(timeout=180), run.communicate()[0]) for run in runs]
        assert all(code == 0 for code, _ in outcomes), outcomes
        assert asyncio.run(schema_state(url)).ready


def _cofounder(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cofounder_cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )


def test_the_cli_waits_and_says_so_in_json_lines(database_url: str) -> None:
    with empty_database(database_url) as url:
        late = _cofounder(
            "db", "wait", "--database-url", url, "--timeout", "1", "--interval", "0.2",
            LOG_JSON="true",
        )  # fmt: skip
        assert late.returncode == 1, late
        lines = [json.loads(line) for line in (late.stdout + late.stderr).splitlines()]
        assert lines[0]["event"] == "waiting for the schema: the database has no schema yet"
        assert lines[-1]["level"] == "error"
        migrated = _cofounder("db", "upgrade", "--database-url", url, LOG_JSON="true")
        assert migrated.returncode == 0, migrated
        said = [json.loads(line) for line in (migrated.stdout + migrated.stderr).splitlines()]
        assert any(r.get("logger") == "alembic.runtime.migration" for r in said), said
        ready = _cofounder("db", "wait", "--database-url", url, LOG_JSON="false")
        assert ready.returncode == 0, ready
        assert ready.stdout.startswith("schema ready: at ")


def test_a_migration_killed_holding_the_lock_does_not_block_the_next(database_url: str) -> None:
    """A pod SIGKILLed while it holds the migration lock (mid-migration): PostgreSQL ends its
    session, the lock goes with it, and the next upgrade takes it and migrates."""
    with empty_database(database_url) as url:
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD_THE_LOCK, dsn],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert holder.stdout is not None
            said = holder.stdout.readline().strip()
            assert said == "holding", said
            # Held: an upgrade now would wait (it tries every half second).
            assert not asyncio.run(_lock_free(dsn))
        finally:
            holder.kill()  # SIGKILL: no unlock, no goodbye to the server
            holder.communicate(timeout=30)
        upgrade(url)  # returns once it got the lock and migrated
        assert asyncio.run(schema_state(url)).ready


#: A child that takes the migration lock as a migrating pod does, says so, and waits forever.
_HOLD_THE_LOCK = """
import asyncio, sys, asyncpg
from cofounder_db.migrate import LOCK_KEY
async def main():
    conn = await asyncpg.connect(sys.argv[1])
    assert await conn.fetchval("select pg_try_advisory_lock($1)", LOCK_KEY)
    print("holding", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def _lock_free(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        free = bool(await conn.fetchval("select pg_try_advisory_lock($1)", LOCK_KEY))
        if free:
            await conn.execute("select pg_advisory_unlock($1)", LOCK_KEY)
        return free
    finally:
        await conn.close()
