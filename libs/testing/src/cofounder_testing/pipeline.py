"""The whole pipeline as processes on a Redis of its own: for tests that kill, restart or flush
its parts (the chaos test, the Redis-loss test).

:class:`Stack` starts ``redis-server`` and each service (``cofounder serve``) by *slot* (a
service name, with a digit for a second process: ``agent-runner2``), SIGKILLs and restarts them,
and stops everything (sandboxes included) at the end. :func:`stack_env` is the environment they
share: the test's own Redis and database, the scripted model, fast consumer timings.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis as sync_redis

from cofounder_contracts.streams import ALL_STREAMS
from cofounder_runtime import processes
from cofounder_runtime.localredis import redis_server_binary
from cofounder_scripted_model.process import start as start_model
from cofounder_testing.servers import free_port
from cofounder_testing.services import kill_sandboxes, offline_env, serve_argv
from cofounder_testing.waiting import Watched, wait_started

__all__ = [
    "SLOTS",
    "TIERS",
    "Books",
    "Stack",
    "at_rest",
    "dead_letters",
    "read_books",
    "running_stack",
    "stack_env",
    "wait_for",
]

#: Every service, two agent runners.
SLOTS = ("gateway", "context-assembler", "agent-runner1", "agent-runner2", "budget", "snapshot")
TIERS = ("bootstrapper", "founder", "pro")


def stack_env(
    *, root: Path, redis_port: int, database_url: str, model_url: str, builds: int, **more: str
) -> dict[str, str]:
    """The services' shared environment: everything local, budgets no build reaches, room for
    ``builds`` builds per founder, timings short enough for a test (``more`` on top, any of
    these included: ``LOG_JSON="true"`` for production's log lines)."""
    defaults = {
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "DATABASE_URL": database_url,
        "PORT": str(free_port()),
        "ANTHROPIC_BASE_URL": model_url,
        "SANDBOX": "local",
        "SANDBOX_ROOT": str(root / "sandboxes"),
        "SNAPSHOT_LOCAL_DIR": str(root / "snapshots"),
        "LOG_ARCHIVE_DIR": str(root / "logs-archive"),
        "SCREENSHOTS_DIR": str(root / "screenshots"),
        "LOG_ARCHIVE_SETTLE_S": "0.5",
        "PLANS_MONTHLY_ALLOWANCE_MICROS": json.dumps(dict.fromkeys(TIERS, 10**12)),
        "TIER_MAX_CONCURRENT_BUILDS": json.dumps(dict.fromkeys(TIERS, builds)),
        "CONSUMER_BLOCK_MS": "200",
        "CONSUMER_MIN_IDLE_MS": "4000",
        "CONSUMER_RETRY_MAX_MS": "500",
        "LEASE_TTL_MS": "3000",
        "COUNTERS_CHECK_INTERVAL_S": "1",
        # Seven processes (and their restarts) on one PostgreSQL shared with the rest of the
        # suite: small pools keep them within its max_connections.
        "DATABASE_POOL_SIZE": "4",
        "WRITE_POOL_SIZE": "2",
        "LOG_JSON": "false",
    }  # fmt: skip
    return offline_env(**{**defaults, **more})  # ``more`` wins over a default it names


@dataclass
class Stack:
    """The processes of a test: Redis and each service, by slot; killed and restarted. Each
    slot logs to ``<root>/<slot>.log`` (every life of it to the same file).

    ``redis_persistent``: Redis keeps an AOF (fsync always) and comes back on it after a crash;
    without it, a restarted Redis is empty, as a cache-configured or failed-over one may be."""

    root: Path
    env: dict[str, str]
    redis_port: int
    redis_persistent: bool = True
    names: dict[str, str] = field(default_factory=dict)  # service slot -> its consumer name
    restarts: int = 0
    children: processes.Children = field(init=False)

    def __post_init__(self) -> None:
        self.children = processes.Children(self.root)

    @property
    def procs(self) -> dict[str, subprocess.Popen[Any]]:
        """The latest life of each slot, by slot."""
        return self.children.procs

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.env['PORT']}"

    def start_redis(self) -> None:
        binary = redis_server_binary()
        assert binary is not None
        data = self.root / "redis"
        data.mkdir(exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.redis_persistent
            else ["--appendonly", "no"]
        )
        self.children.start(
            "redis",
            [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             *persistence, "--dir", str(data)],
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
        self.children.start(slot, serve_argv(service), {**self.env, "CONSUMER_NAME": name})

    def start_all(self, slots: Iterable[str] = SLOTS) -> None:
        """Redis, then every slot under the consumer name ``<slot>-0``; waits for the gateway."""
        self.start_redis()
        for slot in slots:
            self.start(slot, f"{slot}-0")
        self.wait_for_gateway()

    def wait_for_gateway(self) -> None:
        ready = f"{self.gateway_url}/v1/readyz"

        def answers() -> bool:
            try:
                return httpx.get(ready, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_started(answers, what="the gateway", watch=self.watched())

    def kill(self, slot: str) -> None:
        self.children[slot].kill()

    def crash(self, slot: str, *, same_name: bool) -> str:
        """SIGKILL a service (or Redis) and start it again: same consumer name or a new one."""
        self.kill(slot)
        self.restarts += 1
        if slot == "redis":
            self.start_redis()
            return "redis restarted" + (" on its AOF" if self.redis_persistent else ", empty")
        name = self.names[slot] if same_name else f"{slot}-{self.restarts}"
        self.start(slot, name)
        return f"{slot} restarted as {'the same' if same_name else 'a new'} consumer {name}"

    def watched(self, slots: Iterable[str] | None = None) -> list[Watched]:
        """The processes of ``slots`` (default: all), for start-up waits."""
        return list(self.children) if slots is None else [self.children[s] for s in slots]

    def alive(self) -> None:
        """AssertionError, with its exit code and log, when a process has exited."""
        try:
            self.children.check()
        except processes.ProcessFailed as exc:
            raise AssertionError(str(exc)) from None

    def log(self, slot: str) -> str:
        return self.children.log_of(slot).read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM the services (SIGKILL after 30 s), end the sandboxes, then kill Redis."""
        self.children.stop_all(30, names=[n.name for n in self.children if n.name != "redis"])
        kill_sandboxes([self.env["SANDBOX_ROOT"]])
        if "redis" in self.children:
            self.children["redis"].kill()


@contextlib.contextmanager
def running_stack(
    root: Path,
    *,
    database_url: str,
    builds: int,
    redis_persistent: bool = True,
    latency_ms: int = 150,
    transcript: str = "demo-webapp",
    **more: str,
) -> Iterator[Stack]:
    """The scripted model (``transcript``, a YAML file or a built-in name, by default the demo,
    at ``latency_ms``), then Redis and every service of :data:`SLOTS` on ``database_url``, all
    stopped afterwards. ``more``: settings on top of :func:`stack_env`'s. Skips the test where
    there is no ``redis-server`` to start."""
    if redis_server_binary() is None:
        pytest.skip("no redis-server to run a Redis of the test's own")
    with start_model(transcript, latency_ms=latency_ms) as model:
        port = free_port()
        env = stack_env(
            root=root,
            redis_port=port,
            database_url=database_url,
            model_url=model.url,
            builds=builds,
            **more,
        )
        stack = Stack(root=root, env=env, redis_port=port, redis_persistent=redis_persistent)
        try:
            stack.start_all()
            yield stack
        finally:
            stack.stop()


def wait_for(what: str, check: Callable[[], bool], stack: Stack, timeout: float) -> None:
    """Poll ``check`` until it holds (a service that exits fails at once)."""
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


@dataclass(frozen=True)
class Books:
    """What PostgreSQL records of a test's builds, for the invariants the pipeline keeps."""

    ends: dict[str, int]  # build -> end checkpoints
    end_events: dict[str, str]  # build -> the event id its (last) end checkpoint recorded
    turns: dict[str, int]  # build -> turn checkpoints (one model call each)
    ledger: dict[str, int]  # build -> ledger rows
    per_day: list[tuple[str, str, int]]  # (user, day, cost micros) from the ledger
    slots: dict[str, int]  # user -> plan slots held
    outbox: int  # rows still to relay, of every build
    last_request: dict[str, str]  # build -> its latest snapshot request id
    answered: frozenset[str]  # event ids the gateway's projection applied

    def counters_match(self, client: sync_redis.Redis) -> bool:
        """Whether each founder-day's budget counter in Redis equals the ledger's sum."""
        return all(
            int(client.get(f"cofounder.budget.spent:{{{user}}}:{day}") or 0) == total
            for user, day, total in self.per_day
        )


async def read_books(url: str, ids: list[str], users: list[str]) -> Books:
    """The :class:`Books` of builds ``ids`` of founders ``users``."""
    conn = await asyncpg.connect(url)

    async def per_build(query: str) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in await conn.fetch(query, ids)}

    try:
        checkpoints = (
            "select build_id, count(*) from agent_checkpoints where kind = '{}'"
            " and build_id = any($1) group by build_id"
        )
        ends = await per_build(checkpoints.format("end"))
        turns = await per_build(checkpoints.format("turn"))
        end_events = await conn.fetch(
            "select build_id, parts::jsonb -> 'event' ->> 'event_id' from agent_checkpoints"
            " where kind = 'end' and build_id = any($1) order by seq",
            ids,
        )
        ledger = await per_build(
            "select build_id, count(*) from budget_ledger where build_id = any($1)"
            " group by build_id"
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
        last_request = await conn.fetch(
            "select distinct on (build_id) build_id, snapshot_request_id"
            " from agent_checkpoints where build_id = any($1)"
            " and snapshot_request_id is not null order by build_id, seq desc",
            ids,
        )
        answered = await conn.fetch(
            "select event_id from processed_events where scope = 'gateway.projection'"
        )
    finally:
        await conn.close()
    return Books(
        ends=ends,
        end_events={r[0]: r[1] for r in end_events},
        turns=turns,
        ledger=ledger,
        per_day=[(r[0], r[1], int(r[2])) for r in per_day],
        slots={r[0]: int(r[1]) for r in slots},
        outbox=int(outbox),
        last_request={r[0]: r[1] for r in last_request},
        answered=frozenset(r[0] for r in answered),
    )


def at_rest(client: sync_redis.Redis) -> bool:
    """Whether every group of every contract stream has nothing pending and nothing unread."""
    for stream in ALL_STREAMS:
        if not client.exists(stream.name):
            continue
        for group in client.xinfo_groups(stream.name):
            if group["pending"] or group.get("lag"):
                return False
    return True


def dead_letters(client: sync_redis.Redis) -> list[tuple[bytes, Any]]:
    """Every non-empty dead-letter stream, with its entries."""
    return [
        (key, client.xrange(key))
        for key in client.scan_iter(match="*.dlq", _type="STREAM")
        if client.xlen(key)
    ]


def why_dead(letters: list[tuple[bytes, Any]]) -> str:
    """What a test prints of :func:`dead_letters` when there should be none: each entry's
    type, the group that gave it up, after how many deliveries, and the error, a line each."""

    def field(fields: dict[bytes, bytes], name: bytes) -> str:
        return fields.get(name, b"").decode(errors="replace")

    return "\n".join(
        f"{field(f, b'type')} given up by {field(f, b'dlq.group')} after "
        f"{field(f, b'dlq.deliveries')} deliveries: {field(f, b'dlq.error')}"
        for _, entries in letters
        for _, f in entries
    )
