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
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis as sync_redis

from cofounder_contracts.streams import ALL_STREAMS, build_feed_key
from cofounder_runtime.localredis import redis_server_binary
from cofounder_scripted_model.process import ScriptedModel, start
from cofounder_testing.servers import free_port
from cofounder_testing.services import offline_env, start_service
from cofounder_testing.waiting import Watched, http_ok, wait_started

pytestmark = pytest.mark.e2e

BUILDS = int(os.environ.get("CHAOS_BUILDS", "20"))
FOUNDERS = int(os.environ.get("CHAOS_FOUNDERS", "4"))
SEED = int(os.environ.get("CHAOS_SEED", "1"))
ADMIN = {"Authorization": "Bearer dev-admin-token"}
TERMINAL = {"ready", "failed", "cancelled"}
TIERS = ("bootstrapper", "founder", "pro")


@dataclass
class Stack:
    """The processes of the test: Redis and each service, by name; killed and restarted."""

    root: Path
    env: dict[str, str]
    redis_port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # service slot -> its consumer name
    restarts: int = 0

    def start_redis(self) -> None:
        binary = redis_server_binary()
        assert binary is not None
        data = self.root / "redis"
        data.mkdir(exist_ok=True)
        with (self.root / "redis.log").open("ab") as log:
            self.procs["redis"] = subprocess.Popen(
                [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "yes", "--appendfsync", "always", "--dir", str(data)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        client = sync_redis.Redis(port=self.redis_port)

        def pings() -> bool:
            try:
                return bool(client.ping())
            except sync_redis.ConnectionError:
                return False  # not up yet (or still loading its AOF)

        try:
            wait_started(pings, what="redis-server", watch=self.watched(["redis"]))
        finally:
            client.close()

    def start(self, slot: str, name: str) -> None:
        service = slot.rstrip("0123456789")
        self.names[slot] = name
        env = {**self.env, "CONSUMER_NAME": name}
        started = start_service(service, env, self.root / f"{slot}.log", name=slot)
        self.procs[slot] = started.process

    def kill(self, slot: str) -> None:
        proc = self.procs[slot]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def crash(self, slot: str, *, same_name: bool) -> str:
        """SIGKILL a service (or Redis) and start it again: same consumer name or a new one."""
        self.kill(slot)
        self.restarts += 1
        if slot == "redis":
            self.start_redis()
            return "redis restarted on its AOF"
        same = same_name
        name = self.names[slot] if same else f"{slot}-{self.restarts}"
        self.start(slot, name)
        return f"{slot} restarted as {'the same' if same else 'a new'} consumer {name}"

    def watched(self, slots: Iterable[str] | None = None) -> list[Watched]:
        """The processes of ``slots`` (default: all), for start-up waits."""
        return [
            Watched(slot, self.procs[slot], self.root / f"{slot}.log")
            for slot in (self.procs if slots is None else slots)
        ]

    def alive(self) -> None:
        for slot, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.root / f"{slot}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{slot} exited ({proc.returncode}):\n{tail}")

    def stop(self) -> None:
        for slot, proc in self.procs.items():
            if slot != "redis" and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for slot, proc in self.procs.items():
            if slot == "redis":
                continue
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sandboxes = self.env["SANDBOX_ROOT"]
        subprocess.run([sys.executable, "-c", _KILL_SANDBOXES, sandboxes], check=False)
        self.procs["redis"].kill()
        self.procs["redis"].wait()


_KILL_SANDBOXES = """
import asyncio, pathlib, sys
from cofounder_sandbox.local import LocalSandboxes
if pathlib.Path(sys.argv[1]).is_dir():
    asyncio.run(LocalSandboxes(sys.argv[1]).kill_all())
"""
SLOTS = ("gateway", "context-assembler", "agent-runner1", "agent-runner2", "budget", "snapshot")


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with start("demo-webapp", latency_ms=150) as server:
        yield server


@pytest.fixture
def stack(own_database_url: str, model: ScriptedModel, tmp_path: Path) -> Iterator[Stack]:
    if redis_server_binary() is None:
        pytest.skip("no redis-server to run a Redis of the test's own")
    port = free_port()
    env = offline_env(
        REDIS_URL=f"redis://127.0.0.1:{port}/0",
        DATABASE_URL=own_database_url,
        PORT=str(free_port()),
        ANTHROPIC_BASE_URL=model.url,
        SANDBOX="local",
        SANDBOX_ROOT=str(tmp_path / "sandboxes"),
        SNAPSHOT_LOCAL_DIR=str(tmp_path / "snapshots"),
        PLANS_MONTHLY_ALLOWANCE_MICROS=json.dumps(dict.fromkeys(TIERS, 10**12)),
        TIER_MAX_CONCURRENT_BUILDS=json.dumps(dict.fromkeys(TIERS, BUILDS)),
        CONSUMER_BLOCK_MS="200",
        CONSUMER_MIN_IDLE_MS="4000",
        CONSUMER_RETRY_MAX_MS="500",
        LEASE_TTL_MS="3000",
        COUNTERS_CHECK_INTERVAL_S="1",
        # Seven processes (and their restarts) on one PostgreSQL shared with the rest of the
        # suite: small pools keep them within its max_connections.
        DATABASE_POOL_SIZE="4",
        WRITE_POOL_SIZE="2",
        LOG_JSON="false",
    )  # fmt: skip
    stack = Stack(root=tmp_path, env=env, redis_port=port)
    stack.start_redis()
    for slot in SLOTS:
        stack.start(slot, f"{slot}-0")
    try:
        yield stack
    finally:
        stack.stop()


def _gateway(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.env['PORT']}"


def _wait(what: str, check: Any, stack: Stack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stack.alive()
        try:
            if check():
                return
        except (httpx.HTTPError, sync_redis.RedisError):
            pass
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.2)


def test_every_build_completes_once_through_crashes_of_every_service_and_redis(
    stack: Stack, own_database_url: str
) -> None:
    rng = random.Random(SEED)
    with (
        httpx.Client(base_url=_gateway(stack), timeout=30) as http,
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
    ready = f"{_gateway(stack)}/v1/readyz"
    wait_started(lambda: http_ok(ready), what="the gateway", watch=stack.watched())
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
            wait_started(lambda: http_ok(ready), what="the gateway", watch=stack.watched())

    def all_ended() -> bool:
        return set(statuses().values()) <= TERMINAL

    _wait(f"every build to end (crashes: {log})", all_ended, stack, 360)
    final = statuses()
    assert set(final.values()) == {"ready"}, (final, log)

    def at_rest() -> bool:
        for stream in ALL_STREAMS:
            if not client.exists(stream.name):
                continue
            for group in client.xinfo_groups(stream.name):
                if group["pending"] or group.get("lag"):
                    return False
        return True

    _wait("every group at pending 0 and lag 0", at_rest, stack, 120)

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
    dead = [k for k in client.scan_iter(match="*.dlq", _type="STREAM") if client.xlen(k)]
    assert not dead, [(k, client.xrange(k)) for k in dead]

    ids = list(builds)
    users = [f["user_id"] for f in founders]
    turns, ledger, per_day, slots, outbox = asyncio.run(_database(own_database_url, ids, users))
    assert ledger == turns  # one ledger row per checkpointed model call
    for user_id, day, total in per_day:
        counter = client.get(f"cofounder.budget.spent:{{{user_id}}}:{day}")
        assert int(counter or 0) == int(total), (user_id, day)
    assert all(active == 0 for _, active in slots), slots
    assert outbox == 0


async def _database(
    url: str, ids: list[str], users: list[str]
) -> tuple[dict[str, int], dict[str, int], list[Any], list[Any], int]:
    conn = await asyncpg.connect(url)
    try:
        turns: dict[str, int] = dict(
            await conn.fetch(
                "select build_id, count(*) from agent_checkpoints where kind = 'turn'"
                " and build_id = any($1) group by build_id",
                ids,
            )
        )
        ledger: dict[str, int] = dict(
            await conn.fetch(
                "select build_id, count(*) from budget_ledger where build_id = any($1)"
                " group by build_id",
                ids,
            )
        )
        per_day = await conn.fetch(
            "select user_id, day, sum(cost_micros) from budget_ledger where build_id = any($1)"
            " group by user_id, day",
            ids,
        )
        slots = await conn.fetch(
            "select user_id, active from user_active_builds where user_id = any($1)", users
        )
        outbox = await conn.fetchval("select count(*) from outbox")
    finally:
        await conn.close()
    return turns, ledger, list(per_day), list(slots), int(outbox)
