"""The Redis durability check, against redis-servers of these tests' own (started with the
settings under test; the session's shared server is never reconfigured)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
import structlog
from redis.asyncio import Redis

from cofounder_runtime.connections import connect_redis
from cofounder_runtime.durability import check_durability, problems_of
from cofounder_runtime.localredis import redis_server_binary
from cofounder_testing.servers import free_port
from cofounder_testing.waiting import Watched, wait_started

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server"),
]

RUNBOOK = "docs/runbook.md#redis-lost-data"
UNSAFE = ("--appendonly", "no", "--maxmemory-policy", "allkeys-lru")
SAFE = ("--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction")


@contextlib.contextmanager
def _server(folder: Path, *settings: str) -> Iterator[str]:
    """A redis-server of this test's own started with ``settings``; yields its address."""
    port = free_port()
    folder.mkdir()
    log = folder / "redis.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--dir", str(folder), *settings],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def answers() -> bool:
        client = redis_sync.Redis(port=port, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis_sync.ConnectionError:
            return False  # not up yet
        finally:
            client.close()

    try:
        wait_started(answers, what="redis-server", watch=[Watched("redis-server", proc, log)])
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def _client(url: str) -> AsyncIterator[Redis]:
    client = connect_redis(url)
    try:
        yield client
    finally:
        await client.aclose()


async def _checked(url: str) -> tuple[list[str], list[MutableMapping[str, Any]]]:
    """What the check returns for the server at ``url``, and what it logged."""
    async with _client(url) as redis:
        with structlog.testing.capture_logs() as logs:
            found = await check_durability(redis, service="budget")
    return found, logs


async def test_a_redis_without_aof_that_evicts_gets_a_warning_for_each(tmp_path: Path) -> None:
    with _server(tmp_path / "unsafe", *UNSAFE) as address:
        found, logs = await _checked(f"redis://{address}/0")
    assert len(found) == 2, found
    no_aof, evicts = found
    assert no_aof.startswith("Redis has no AOF: a restart loses the last writes")
    assert "maxmemory-policy allkeys-lru" in evicts
    assert all(RUNBOOK in problem for problem in found)
    assert [(e["log_level"], e["event"], e["service"]) for e in logs] == [
        ("warning", problem, "budget") for problem in found
    ]


async def test_a_redis_with_aof_every_second_and_no_eviction_passes(tmp_path: Path) -> None:
    with _server(tmp_path / "safe", *SAFE) as address:
        found, logs = await _checked(f"redis://{address}/0")
        assert (found, logs) == ([], [])
        # AOF on, but fsynced only when the OS decides: a machine's crash loses up to 30 s.
        async with _client(f"redis://{address}/0") as admin:
            await admin.config_set("appendfsync", "no")
        found, logs = await _checked(f"redis://{address}/0")
    assert len(found) == 1
    assert "appendfsync no" in found[0]
    assert [e["log_level"] for e in logs] == ["warning"]


async def test_a_user_without_config_gets_one_info_line_and_no_warning(tmp_path: Path) -> None:
    """As the deploy's ACL users, and managed Redis services, which refuse CONFIG: the settings
    (unsafe here) cannot be known, so nothing is claimed about them."""
    with _server(tmp_path / "acl", *UNSAFE) as address:
        async with _client(f"redis://{address}/0") as admin:
            await admin.acl_setuser(
                "svc",
                enabled=True,
                passwords=["+svc-password"],
                keys=["*"],
                commands=["+@all", "-config"],
            )
        found, logs = await _checked(f"redis://svc:svc-password@{address}/0")
    assert found == []
    [line] = logs
    assert line["log_level"] == "info"
    assert line["event"].startswith("durability settings cannot be checked: ")
    assert "config" in line["event"].lower()
    assert line["service"] == "budget"


async def test_a_redis_that_does_not_answer_does_not_stop_the_service() -> None:
    found, logs = await _checked(f"redis://127.0.0.1:{free_port()}/0")
    assert found == []
    assert [e["log_level"] for e in logs] == ["info"]
    assert logs[0]["event"].startswith("durability settings cannot be checked: ")


def test_what_counts_as_a_problem() -> None:
    safe = {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}
    assert problems_of(safe) == []
    assert problems_of({**safe, "appendfsync": "always"}) == []
    # appendfsync is moot without AOF: one warning, not two.
    assert len(problems_of({**safe, "appendonly": "no", "appendfsync": "no"})) == 1
    for policy in ("allkeys-lru", "volatile-lru", "volatile-ttl", "allkeys-random"):
        [problem] = problems_of({**safe, "maxmemory-policy": policy})
        assert f"maxmemory-policy {policy}" in problem
    # A setting the server does not report is not judged.
    assert problems_of({}) == []
