"""The embedded default: the gateway's build operations on SQLite (the portable path)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from cofounder_db.engine import create_engine
from cofounder_db.migrate import upgrade_async
from cofounder_db.models import OutboxRow, Project, User
from cofounder_gateway import builds
from cofounder_gateway.problems import ApiError


async def test_create_list_cancel_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cofounder.db"
    await upgrade_async(url)
    engine = create_engine(url)
    user_id, project_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            insert(User).values(
                id=user_id, email="s@x.io", tier="bootstrapper", suspended=False, created_at=now
            )
        )
        await conn.execute(
            insert(Project).values(
                id=project_id,
                owner_id=user_id,
                name="P",
                stage="understanding",
                created_at=now,
                updated_at=now,
            )
        )
    limits = {"bootstrapper": 1}
    try:
        build, created = await builds.create_build(
            engine,
            user_id=user_id,
            project_id=project_id,
            goal="g",
            idempotency_key="k",
            limits=limits,
        )
        assert (created, build.status, build.tier) == (True, "queued", "bootstrapper")
        again, created = await builds.create_build(
            engine,
            user_id=user_id,
            project_id=project_id,
            goal="g",
            idempotency_key="k",
            limits=limits,
        )
        assert (again.id, created) == (build.id, False)
        with pytest.raises(ApiError) as refused:
            await builds.create_build(
                engine,
                user_id=user_id,
                project_id=project_id,
                goal="g",
                idempotency_key=None,
                limits=limits,
            )
        assert refused.value.status == 429
        with pytest.raises(ApiError) as missing:
            await builds.create_build(
                engine,
                user_id=user_id,
                project_id=str(uuid.uuid4()),
                goal="g",
                idempotency_key=None,
                limits=limits,
            )
        assert missing.value.status == 404
        listed, cursor = await builds.list_builds(
            engine, user_id=user_id, status=None, limit=5, cursor=None
        )
        assert ([b.id for b in listed], cursor) == ([build.id], None)
        cancelled = await builds.cancel_build(engine, user_id=user_id, build_id=build.id)
        assert cancelled.status == "cancelled"
        async with engine.connect() as conn:
            outbox = (await conn.execute(select(func.count()).select_from(OutboxRow))).scalar_one()
        assert outbox == 4  # requested + queued, cancel request + cancelled
    finally:
        await engine.dispose()
