"""The whole pipeline under crashes: every service a real process on its own Redis (AOF, fsync
always) and PostgreSQL, the scripted model with latency, builds of several founders submitted
over REST, and, while they run, SIGKILLs of every service (restarted under the same consumer
name or a new one) and of Redis itself (restarted on its data).

Then every build must have completed with exactly one end in its feed, iterations 1..n with no
gap, one ledger row per checkpointed model call, the ledger equal to the Redis counter of each
founder-day, no plan slot held, no dead letter, an empty outbox, every group at pending 0.

Seeded and bounded. The suite runs a quick variant; the full one:

    CHAOS_BUILDS=48 CHAOS_FOUNDERS=8 CHAOS_SEED=7 bin/test tests/test_chaos.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis

from cofounder_contracts.streams import build_feed_key
from cofounder_testing.pipeline import (
    SLOTS,
    Stack,
    at_rest,
    dead_letters,
    read_books,
    running_stack,
    wait_for,
    why_dead,
)

pytestmark = pytest.mark.e2e

BUILDS = int(os.environ.get("CHAOS_BUILDS", "20"))
FOUNDERS = int(os.environ.get("CHAOS_FOUNDERS", "4"))
SEED = int(os.environ.get("CHAOS_SEED", "1"))
ADMIN = {"Authorization": "Bearer dev-admin-token"}
TERMINAL = {"ready", "failed", "cancelled"}


@pytest.fixture
def stack(own_database_url: str, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path, database_url=own_database_url, builds=BUILDS) as stack:
        yield stack


def test_every_build_completes_once_through_crashes_of_every_service_and_redis(
    stack: Stack, own_database_url: str
) -> None:
    rng = random.Random(SEED)
    with (
        httpx.Client(base_url=stack.gateway_url, timeout=30) as http,
        contextlib.closing(sync_redis.Redis(port=stack.redis_port)) as client,
    ):
        _run(stack, rng, http, client, own_database_url)


def _run(
    stack: Stack,
    rng: random.Random,
    http: httpx.Client,
    client: sync_redis.Redis,
    own_database_url: str,
) -> None:
    founders = [http.post("/v1/admin/demo", headers=ADMIN).json() for _ in range(FOUNDERS)]
    builds: dict[str, dict[str, Any]] = {}
    for n in range(BUILDS):
        founder = founders[n % FOUNDERS]
        auth = {"Authorization": f"Bearer {founder['token']}"}
        created = http.post(f"/v1/projects/{founder['project_id']}/builds", json={}, headers=auth)
        assert created.status_code == 202, created.text
        builds[created.json()["id"]] = {"founder": founder, "auth": auth}

    def statuses() -> dict[str, str]:
        return {b: http.get(f"/v1/builds/{b}", headers=v["auth"]).json()["status"]
                for b, v in builds.items()}  # fmt: skip

    # Crashes while the builds run, in a seeded order: each service twice, restarted once under
    # its own consumer name (a container restarting in its pod) and once under a new one (a
    # new pod), and Redis once.
    victims = [(slot, same) for slot in SLOTS for same in (True, False)] + [("redis", False)]
    rng.shuffle(victims)
    log: list[str] = []
    for victim, same in victims:
        time.sleep(rng.uniform(0.5, 2.0))
        log.append(stack.crash(victim, same_name=same))
        if stack.procs["gateway"].poll() is None:
            stack.wait_for_gateway()

    def all_ended() -> bool:
        return set(statuses().values()) <= TERMINAL

    wait_for(f"every build to end (crashes: {log})", all_ended, stack, 360)
    final = statuses()
    assert set(final.values()) == {"ready"}, (final, log)

    wait_for("every group at pending 0 and lag 0", lambda: at_rest(client), stack, 120)

    for build_id in builds:
        feed = client.xrange(build_feed_key(build_id))
        types = [f[b"type"].decode() for _, f in feed]
        assert types.count("build.completed") == 1, (build_id, types)
        assert "build.failed" not in types
        iterations = [
            json.loads(f[b"data"])["iteration"]
            for _, f in feed
            if f[b"type"] == b"agent.iteration_completed"
        ]
        # No gap and none twice. The order may differ: after a projection crash its redelivered
        # entries are appended after later ones (each carries its iteration; SSE ids still
        # resume exactly).
        assert sorted(iterations) == list(range(1, len(iterations) + 1)), (build_id, iterations)
        assert len(iterations) >= 8
    letters = dead_letters(client)
    assert not letters, why_dead(letters)

    ids = list(builds)
    books = asyncio.run(read_books(own_database_url, ids, [f["user_id"] for f in founders]))
    assert books.ledger == books.turns  # one ledger row per checkpointed model call
    assert books.counters_match(client)
    assert not any(books.slots.values()), books.slots
    assert books.outbox == 0
