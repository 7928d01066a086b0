"""Redis forgets everything in the middle of 20 builds, and the pipeline converges from
PostgreSQL: every service a real process on a Redis of the test's own (no AOF), the scripted
model, builds of four founders submitted over REST.

Two ways to forget: ``FLUSHALL`` (an operator's mistake), and Redis killed and started again
empty (a cache-configured server, a failover to a replica that had nothing). Then every build
must have completed, with one end in its checkpoints and in its row, every turn in the ledger
and the ledger equal to each founder-day's rebuilt counter, no plan slot held, every build's
last snapshot request answered, no dead letter, and the reconciler's metrics must show what it
repaired.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as sync_redis
from prometheus_client.parser import text_string_to_metric_families

from cofounder_contracts.streams import build_feed_key
from cofounder_gateway.reconcile.decide import snapshot_answer_ids
from cofounder_testing.pipeline import (
    Stack,
    at_rest,
    dead_letters,
    read_books,
    running_stack,
    wait_for,
    why_dead,
)

pytestmark = pytest.mark.e2e

BUILDS = 20
FOUNDERS = 4
ADMIN = {"Authorization": "Bearer dev-admin-token"}
TERMINAL = {"ready", "failed", "cancelled"}


@pytest.fixture
def stack(own_database_url: str, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(
        tmp_path,
        database_url=own_database_url,
        builds=BUILDS,
        redis_persistent=False,  # a restart comes back empty
        RECONCILE_INTERVAL_S="1",
        RECONCILE_GRACE_S="3",
        # A few builds at a time per runner: the loss finds builds at every stage (queued
        # behind the others, assembling, running, ended but not yet projected).
        CONSUMER_CONCURRENCY="4",
        SNAPSHOT_EVERY="3",
    ) as stack:
        yield stack


@pytest.mark.parametrize("loss", ["flushall", "restart-empty"])
def test_every_build_completes_once_after_redis_forgets_everything(
    stack: Stack, own_database_url: str, loss: str
) -> None:
    with (
        httpx.Client(base_url=stack.gateway_url, timeout=30) as http,
        contextlib.closing(sync_redis.Redis(port=stack.redis_port)) as client,
    ):
        founders = [http.post("/v1/admin/demo", headers=ADMIN).json() for _ in range(FOUNDERS)]
        builds: dict[str, dict[str, str]] = {}
        for n in range(BUILDS):
            founder = founders[n % FOUNDERS]
            auth = {"Authorization": f"Bearer {founder['token']}"}
            project = founder["project_id"]
            created = http.post(f"/v1/projects/{project}/builds", json={}, headers=auth)
            assert created.status_code == 202, created.text
            builds[created.json()["id"]] = auth

        def statuses() -> dict[str, str]:
            return {
                b: http.get(f"/v1/builds/{b}", headers=auth).json()["status"]
                for b, auth in builds.items()
            }

        users = [f["user_id"] for f in founders]

        def in_the_middle() -> bool:
            # Runs ended, from the runner's end checkpoints: the projected statuses can lag the
            # runs by many builds on a loaded machine, and a loss after every run ended leaves
            # no work to send again (nothing for the repair asserted below).
            ends = asyncio.run(read_books(own_database_url, list(builds), users)).ends
            ended = sum(1 for build_id in builds if ends.get(build_id))
            return ended >= 2 and BUILDS - ended >= 8

        wait_for("some builds done and most still to do", in_the_middle, stack, 180)
        before = statuses()
        if loss == "flushall":
            client.flushall()  # the test's own server
        else:
            stack.crash("redis", same_name=True)  # no AOF: it comes back empty

        def all_ended() -> bool:
            return set(statuses().values()) <= TERMINAL

        wait_for(f"every build to end (at the loss: {before})", all_ended, stack, 300)
        final = statuses()
        assert set(final.values()) == {"ready"}, final

        wait_for("every group at pending 0 and lag 0", lambda: at_rest(client), stack, 120)
        letters = dead_letters(client)
        assert not letters, why_dead(letters)

        ids = list(builds)
        books = asyncio.run(read_books(own_database_url, ids, [f["user_id"] for f in founders]))
        # One end per build; whatever its feed kept (a feed lost with Redis is made again by
        # later entries) shows that end and no other.
        assert books.ends == dict.fromkeys(ids, 1), books.ends
        for build_id in ids:
            ends = {
                json.loads(fields[b"data"])["event_id"]
                for _, fields in client.xrange(build_feed_key(build_id))
                if fields[b"type"] in (b"build.completed", b"build.failed")
            }
            assert ends <= {books.end_events[build_id]}, (build_id, ends)
        # Every model call that made a turn is in the ledger, once.
        assert books.ledger == books.turns
        # The budget's counters, rebuilt after the loss, equal the ledger per founder-day.
        wait_for(
            "the budget counters to equal the ledger",
            lambda: books.counters_match(client),
            stack,
            60,
        )
        assert not any(books.slots.values()), books.slots
        # Each build's last snapshot request (its final one) was answered.
        assert set(books.last_request) == set(ids)
        for build_id, request_id in books.last_request.items():
            assert set(snapshot_answer_ids(request_id)) & books.answered, build_id

        repairs = _repairs(stack.gateway_url)
        assert sum(repairs.values()) >= 1, repairs
        # Builds were running when Redis forgot their work entries: a runner was sent them again.
        assert repairs.get("context.ready", 0) + repairs.get("build.requested", 0) >= 1, repairs
        assert "reconciler re-published a lost event" in stack.log("gateway")


def _repairs(gateway_url: str) -> dict[str, float]:
    """``cofounder_reconciler_repairs_total`` by kind, scraped from the gateway."""
    with urllib.request.urlopen(f"{gateway_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cofounder_reconciler_repairs_total"
    }
