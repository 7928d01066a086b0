"""Running the migrations from code (services at start-up in development, the CLI, tests), and
waiting for them.

In Kubernetes the gateway's pods migrate in an init container (``cofounder db upgrade``) and
every other pod waits in one for the schema its code needs (``cofounder db wait``): see
``docs/operations.md``. Services never migrate a shared database from their own process.

Two upgrades at once are safe: each holds a PostgreSQL advisory lock (:data:`LOCK_KEY`) while it
reads the database's revision and migrates (``migrations/env.py``), so the second finds the
first's work done.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

__all__ = [
    "LOCK_KEY",
    "SchemaState",
    "alembic_config",
    "schema_state",
    "upgrade",
    "upgrade_async",
    "wait_for_schema",
]

MIGRATIONS = Path(__file__).parent / "migrations"
#: The advisory lock every migration run holds (a session lock): one run at a time.
LOCK_KEY: Final = int.from_bytes(
    hashlib.sha256(b"cofounder:migrations").digest()[:8], "big", signed=True
)


def alembic_config(url: str) -> Config:
    """An Alembic config for ``url`` with this package's migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (blocking; runs its own event loop)."""
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    """:func:`upgrade` from async code (in a worker thread, since Alembic runs its own loop)."""
    await asyncio.to_thread(upgrade, url, revision)


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where a database's schema is against the revision some code needs.

    ``ready``: at ``needed`` or past it. Past it is a revision this code knows and descends from
    ``needed``, or one it does not know at all: a later release's migration (the schema is
    expanded before code that needs it rolls out, and contracted only once no code in service
    reads what it removes, so a pod of the release before keeps working)."""

    needed: str
    current: tuple[str, ...]
    ready: bool
    reason: str


def _state(script: ScriptDirectory, needed: str, current: tuple[str, ...]) -> SchemaState:
    if not current:
        return SchemaState(needed, current, False, "the database has no schema yet")
    for revision in current:
        try:
            known = script.get_revision(revision)
        except Exception:  # noqa: BLE001 - alembic raises several kinds for an unknown id
            known = None
        if known is None:
            return SchemaState(
                needed, current, True, f"at {revision}, a revision newer than this release's"
            )
        ancestors = {r.revision for r in script.iterate_revisions(revision, "base")}
        if needed in ancestors:
            return SchemaState(needed, current, True, f"at {revision}")
    return SchemaState(
        needed, current, False, f"at {', '.join(current)}, before {needed}: not migrated yet"
    )


async def _current(url: str) -> tuple[str, ...]:
    from cofounder_db.engine import create_engine

    engine = create_engine(url, pool_size=1, statement_timeout_s=None)
    try:
        async with engine.connect() as conn:
            try:
                rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
            except ProgrammingError:  # no alembic_version: never migrated
                return ()
            return tuple(sorted(row[0] for row in rows))
    finally:
        await engine.dispose()


async def schema_state(url: str, revision: str = "head") -> SchemaState:
    """Whether the database at ``url`` has the schema of ``revision`` (``head``: the newest
    this code has) or a later one. Connection errors are raised."""
    script = ScriptDirectory.from_config(alembic_config(url))
    try:
        needed = script.get_revision(revision)
    except Exception:  # noqa: BLE001 - alembic raises several kinds for an unknown id
        needed = None
    if needed is None:
        raise ValueError(f"no revision {revision!r} in this release's migrations")
    return _state(script, needed.revision, await _current(url))


async def wait_for_schema(
    url: str,
    revision: str = "head",
    *,
    timeout_s: float = 600.0,
    interval_s: float = 2.0,
    on_wait: Callable[[str], None] = lambda _: None,
) -> SchemaState:
    """Poll :func:`schema_state` until it is ready, the database unreachable counting as not
    ready (it may be starting); :class:`TimeoutError` after ``timeout_s``. ``on_wait`` is told
    why, each time the reason changes."""
    deadline = time.monotonic() + timeout_s
    said = None
    while True:
        try:
            state = await schema_state(url, revision)
            reason = state.reason
        except (OSError, OperationalError, DBAPIError) as exc:
            state, reason = None, f"the database does not answer ({type(exc).__name__})"
        if state is not None and state.ready:
            return state
        if reason != said:
            on_wait(reason)
            said = reason
        if time.monotonic() >= deadline:
            raise TimeoutError(f"after {timeout_s:.0f} s: {reason}")
        await asyncio.sleep(interval_s)
