"""``cofounder serve context-assembler`` as a real process on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert

from cofounder_contracts import ALL_EVENTS, BuildRequested, Codec, ContextReady
from cofounder_contracts.streams import AGENT_WORK, BUILD_REQUESTS
from cofounder_db.engine import create_engine
from cofounder_db.models import Project, User
from cofounder_runtime.connections import connect_redis
from cofounder_runtime.publisher import Publisher
from cofounder_testing.inprocess import entries
from cofounder_testing.services import start_service
from cofounder_testing.waiting import eventually, log_says, until_started

pytestmark = pytest.mark.e2e

#: A Redis logical database of its own, so the real stream names used here touch nothing else.


async def test_the_service_turns_a_request_into_context_and_stops_cleanly(
    own_redis_url: str, migrated_database_url: str, tmp_path: Path
) -> None:
    url = own_redis_url  # the service reads the real stream names
    redis = connect_redis(url)
    engine = create_engine(migrated_database_url)
    user_id, project_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            insert(User).values(
                id=user_id, email=f"{user_id}@x.io", tier="pro", suspended=False, created_at=now
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
    await engine.dispose()
    env = {
        **os.environ,
        "REDIS_URL": url,
        "DATABASE_URL": migrated_database_url,
        "CONSUMER_NAME": f"e2e-{uuid.uuid4().hex[:6]}",
        "CONSUMER_BLOCK_MS": "200",
    }
    log = tmp_path / "context-assembler.log"
    service = start_service("context-assembler", env, log)
    proc = service.process
    try:
        ready_ = log_says(log, '"consumer started"')
        await until_started(ready_, what="the context assembler", watch=[service])
        request = BuildRequested(
            build_id=str(uuid.uuid4()),
            project_id=project_id,
            user_id=user_id,
            producer="test",
            goal="Build it",
        )
        await Publisher(redis).emit(request)
        codec = Codec(ALL_EVENTS)

        async def ready() -> list[ContextReady]:
            found = [codec.decode(f) for _, f in await entries(redis, AGENT_WORK.name)]
            return [
                e for e in found if isinstance(e, ContextReady) and e.build_id == request.build_id
            ]

        async def arrived() -> bool:
            return bool(await ready())

        await eventually(arrived, what="context.ready from the service process", timeout=30)
        [context] = await ready()
        assert (context.tier, context.qna, context.idea_brief) == ("pro", [], {})
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
        output = log.read_text(errors="replace")
        assert code == 0, output
        assert '"consumer stopped"' in output
        pending = await redis.xpending(BUILD_REQUESTS.name, "context-assembler")
        assert pending["pending"] == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await redis.aclose()
